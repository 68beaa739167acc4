//! The owner's audit log: one line of JSON per private-key operation,
//! login, PIN change, pairing, revocation and policy change, with its time,
//! computer, program, container, key and result, appended to `audit.log`
//! in the state directory (mode 0600) and rotated by size into
//! `audit.log.1`. It holds names and outcomes, never a PIN, a key or data
//! that was signed or decrypted. `phonecsp-handset log` reads it.
//!
//! A failure to write the log is logged and does not stop the operation:
//! the log is the owner's record, not a gate (docs/store.md).

use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Size past which the log is rotated.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;
const FILE: &str = "audit.log";
const ROTATED: &str = "audit.log.1";
/// Longest text kept in a field: names from the computer are shown, not
/// trusted.
const MAX_FIELD: usize = 128;

/// One event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Seconds since the Unix epoch, UTC.
    pub time: u64,
    /// What happened: `sign`, `decrypt`, `login`, `pair`, `revoke`, ...
    pub event: String,
    /// The computer's name as paired, if a computer asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The computer's key fingerprint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The program on the computer, as the computer named it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The key's label, else its id in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `ok`, or what refused it (a CK_RV name, or the owner's words).
    pub result: String,
}

impl Entry {
    /// An event of `event` with `result`, now.
    pub fn new(event: &str, result: &str) -> Entry {
        Entry {
            time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            event: event.to_owned(),
            result: result.to_owned(),
            ..Entry::default()
        }
    }

    /// One line for a person: `2026-11-30 10:02:03 UTC  sign  ...`.
    pub fn display(&self) -> String {
        let mut s = format!("{}  {}", utc(self.time), self.event);
        if let Some(h) = &self.host {
            s.push_str(&format!("  computer '{h}'"));
        }
        if let Some(f) = &self.fingerprint {
            s.push_str(&format!(" ({f})"));
        }
        if let Some(p) = &self.program {
            s.push_str(&format!("  for {p}"));
        }
        if let Some(c) = &self.container {
            s.push_str(&format!("  container '{c}'"));
        }
        if let Some(k) = &self.key {
            s.push_str(&format!("  key '{k}'"));
        }
        s.push_str(&format!("  {}", self.result));
        s
    }

    fn cleaned(mut self) -> Entry {
        let clean = |s: &mut Option<String>| {
            if let Some(v) = s {
                *v = v
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_FIELD)
                    .collect();
            }
        };
        clean(&mut self.host);
        clean(&mut self.program);
        clean(&mut self.container);
        clean(&mut self.key);
        self
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for seconds since the epoch.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The log in one state directory.
#[derive(Debug, Clone)]
pub struct AuditLog {
    dir: PathBuf,
    max_bytes: u64,
}

impl AuditLog {
    pub fn new(dir: &Path) -> AuditLog {
        AuditLog::with_limit(dir, DEFAULT_MAX_BYTES)
    }

    /// A log rotated once it reaches `max_bytes`.
    pub fn with_limit(dir: &Path, max_bytes: u64) -> AuditLog {
        AuditLog {
            dir: dir.to_owned(),
            max_bytes,
        }
    }

    /// Appends `entry`; a failure is logged, not returned (see the module
    /// comment).
    pub fn record(&self, entry: Entry) {
        if let Err(e) = self.append(&entry.cleaned()) {
            log::warn!("the audit log could not be written: {e}");
        }
    }

    fn append(&self, entry: &Entry) -> std::io::Result<()> {
        let path = self.dir.join(FILE);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() >= self.max_bytes) {
            std::fs::rename(&path, self.dir.join(ROTATED))?;
        }
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        // One write of the whole line: O_APPEND keeps concurrent writers'
        // lines apart.
        f.write_all(&line)
    }

    /// Every entry, oldest first (the rotated file, then the current one),
    /// and how many lines could not be read.
    pub fn read(&self) -> std::io::Result<(Vec<Entry>, usize)> {
        let mut entries = Vec::new();
        let mut unreadable = 0;
        for name in [ROTATED, FILE] {
            let f = match File::open(self.dir.join(name)) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for line in BufReader::new(f).split(b'\n') {
                match serde_json::from_slice::<Entry>(&line?) {
                    Ok(e) => entries.push(e),
                    Err(_) => unreadable += 1,
                }
            }
        }
        Ok((entries, unreadable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_append_rotate_and_read_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::with_limit(dir.path(), 300);
        for i in 0..10 {
            let mut e = Entry::new("sign", "ok");
            e.key = Some(format!("key {i}"));
            e.host = Some("lap\u{1b}[31mtop".into());
            log.record(e);
        }
        let (entries, unreadable) = log.read().unwrap();
        assert_eq!(unreadable, 0);
        // Rotated once the file passed 300 bytes: the oldest are gone,
        // the newest kept, in order.
        assert!(
            entries.len() < 10 && entries.len() >= 2,
            "{}",
            entries.len()
        );
        assert_eq!(entries.last().unwrap().key.as_deref(), Some("key 9"));
        assert!(dir.path().join(ROTATED).exists());
        assert_eq!(entries[0].host.as_deref(), Some("lap[31mtop"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_line_is_counted_and_the_rest_read() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::new(dir.path());
        log.record(Entry::new("login", "ok"));
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"time\": 1, \"ev\n").unwrap();
        log.record(Entry::new("logout", "ok"));
        let (entries, unreadable) = log.read().unwrap();
        assert_eq!(unreadable, 1);
        let events: Vec<&str> = entries.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(events, ["login", "logout"]);
    }

    #[test]
    fn times_are_shown_in_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_795_996_800 + 3661), "2026-11-30 01:01:01 UTC");
    }
}
