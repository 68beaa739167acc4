//! Asking the owner for a PIN through a pinentry program (GnuPG's, or any
//! that speaks its Assuan protocol: `pinentry-gnome3`, `pinentry-qt`,
//! `pinentry-tty`, `pinentry-curses`), as phones and desktops already have
//! them. The PIN comes back in a `Zeroizing` buffer and goes nowhere else;
//! it is never logged.
//!
//! The exchange (one per PIN): the program greets with `OK`; we send
//! `OPTION ttyname=`/`ttytype=` for a terminal pinentry, `SETTIMEOUT`,
//! `SETTITLE`, `SETDESC`, `SETPROMPT`, then `GETPIN`, which is answered by
//! `D <pin>` and `OK`, or `ERR <code> <text>` (cancelled, timed out).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;
use thiserror::Error;
use zeroize::Zeroizing;

/// libgpg-error's GPG_ERR_CANCELED (99) from the pinentry source (5 << 24).
const CANCELED: u32 = 83_886_179;
/// GPG_ERR_TIMEOUT (62) from the pinentry source.
const TIMEOUT: u32 = 83_886_142;
/// Longest line we read from the program: a PIN of 64 bytes, escaped, fits
/// many times over.
const MAX_LINE: usize = 4096;

#[derive(Debug, Error)]
pub enum PinentryError {
    #[error("the pinentry program {0} could not be started: {1}")]
    Start(PathBuf, std::io::Error),
    #[error("the pinentry program: {0}")]
    Io(#[from] std::io::Error),
    #[error("the pinentry program answered {0}")]
    Refused(String),
    #[error("the pinentry program broke the protocol: {0}")]
    Protocol(&'static str),
    /// Closed before its greeting (reported as [`PinentryError::Start`]).
    #[error("the pinentry program ended before its greeting")]
    NoGreeting,
}

/// What to show.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub title: &'a str,
    pub description: &'a str,
    pub prompt: &'a str,
    /// How long the person has.
    pub timeout: Duration,
    /// The terminal a terminal pinentry uses (`OPTION ttyname`).
    pub tty: Option<&'a str>,
}

/// The PIN typed, or `None` if the person cancelled or let it time out.
pub fn get_pin(
    program: &Path,
    req: &Request<'_>,
) -> Result<Option<Zeroizing<Vec<u8>>>, PinentryError> {
    let mut child = Command::new(program)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| PinentryError::Start(program.to_owned(), e))?;
    let result = converse(&mut child, req);
    let _ = child.kill();
    let status = child.wait();
    match result {
        // Ended before it said anything: it did not start (an emulator's
        // exec reports a missing program this way, not as a spawn error).
        Err(PinentryError::NoGreeting) => Err(PinentryError::Start(
            program.to_owned(),
            std::io::Error::other(match status {
                Ok(s) => format!("it ended before its greeting ({s})"),
                Err(e) => format!("it ended before its greeting ({e})"),
            }),
        )),
        other => other,
    }
}

fn converse(
    child: &mut Child,
    req: &Request<'_>,
) -> Result<Option<Zeroizing<Vec<u8>>>, PinentryError> {
    let (Some(input), Some(output)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(PinentryError::Protocol("no pipes"));
    };
    let mut s = Session {
        input,
        output: BufReader::new(output),
    };
    s.expect_ok().map_err(|e| match e {
        PinentryError::Protocol(_) => PinentryError::NoGreeting,
        e => e,
    })?;
    if let Some(tty) = req.tty {
        s.command(&format!("OPTION ttyname={}", escape(tty)))?;
        let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".into());
        s.command(&format!("OPTION ttytype={}", escape(&term)))?;
    }
    let secs = req.timeout.as_secs().max(1);
    s.command(&format!("SETTIMEOUT {secs}"))?;
    s.command(&format!("SETTITLE {}", escape(req.title)))?;
    s.command(&format!("SETDESC {}", escape(req.description)))?;
    s.command(&format!("SETPROMPT {}", escape(req.prompt)))?;
    s.send("GETPIN")?;
    let mut pin = Zeroizing::new(Vec::new());
    loop {
        let line = s.line()?;
        match Reply::of(&line) {
            Reply::Data(d) => unescape_into(d, &mut pin)?,
            Reply::Ok => break,
            Reply::Err(CANCELED | TIMEOUT) => return Ok(None),
            Reply::Err(_) => {
                return Err(PinentryError::Refused(
                    String::from_utf8_lossy(&line).into_owned(),
                ));
            }
            Reply::Other => {}
        }
    }
    let _ = s.send("BYE");
    Ok(Some(pin))
}

struct Session {
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

enum Reply<'a> {
    Ok,
    Err(u32),
    Data(&'a [u8]),
    /// Status lines (`S`), comments (`#`), anything else.
    Other,
}

impl Reply<'_> {
    fn of(line: &[u8]) -> Reply<'_> {
        if line == b"OK" || line.starts_with(b"OK ") {
            Reply::Ok
        } else if let Some(rest) = line.strip_prefix(b"ERR ") {
            let code = rest
                .split(|b| *b == b' ')
                .next()
                .and_then(|c| std::str::from_utf8(c).ok())
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            Reply::Err(code)
        } else if let Some(d) = line.strip_prefix(b"D ") {
            Reply::Data(d)
        } else {
            Reply::Other
        }
    }
}

impl Session {
    fn send(&mut self, line: &str) -> Result<(), PinentryError> {
        self.input.write_all(line.as_bytes())?;
        self.input.write_all(b"\n")?;
        self.input.flush()?;
        Ok(())
    }

    /// One line, without its LF; kept in a buffer that is wiped, since a
    /// `D` line holds the PIN.
    fn line(&mut self) -> Result<Zeroizing<Vec<u8>>, PinentryError> {
        let mut line = Zeroizing::new(Vec::new());
        let n = Read::by_ref(&mut self.output)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(PinentryError::Protocol("it closed the connection"));
        }
        if line.last() != Some(&b'\n') {
            return Err(PinentryError::Protocol("a line too long"));
        }
        line.pop();
        Ok(line)
    }

    fn expect_ok(&mut self) -> Result<(), PinentryError> {
        loop {
            let line = self.line()?;
            match Reply::of(&line) {
                Reply::Ok => return Ok(()),
                Reply::Err(_) => {
                    return Err(PinentryError::Refused(
                        String::from_utf8_lossy(&line).into_owned(),
                    ));
                }
                Reply::Data(_) | Reply::Other => {}
            }
        }
    }

    fn command(&mut self, line: &str) -> Result<(), PinentryError> {
        self.send(line)?;
        self.expect_ok()
    }
}

/// Assuan's escaping of a parameter: `%`, CR and LF as `%XX`.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            c => out.push(c),
        }
    }
    out
}

/// Appends a `D` line's data to `out`, undoing `%XX` escapes.
fn unescape_into(d: &[u8], out: &mut Zeroizing<Vec<u8>>) -> Result<(), PinentryError> {
    let mut i = 0;
    while i < d.len() {
        if d[i] == b'%' {
            let hex = d
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(PinentryError::Protocol("a bad %-escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(d[i]);
            i += 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_both_ways() {
        assert_eq!(escape("50% off\r\nnow"), "50%25 off%0D%0Anow");
        let mut out = Zeroizing::new(Vec::new());
        unescape_into(b"a%25b%0Ac", &mut out).unwrap();
        assert_eq!(&out[..], b"a%b\nc");
        assert!(unescape_into(b"%4", &mut Zeroizing::new(Vec::new())).is_err());
        assert!(unescape_into(b"%zz", &mut Zeroizing::new(Vec::new())).is_err());
    }

    /// A scripted pinentry: answers as the protocol says, then gives `pin`
    /// or an error. Each its own file: a script rewritten in place while
    /// an earlier one is still being read would race.
    fn fake(dir: &Path, answer: &str) -> PathBuf {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = dir.join(format!("pinentry-{}", N.fetch_add(1, Ordering::Relaxed)));
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho 'OK hello'\nwhile read cmd rest; do\n  case \"$cmd\" in\n    \
                 GETPIN) printf '%b\\n' '{answer}'; exit 0 ;;\n    BYE) echo OK; exit 0 ;;\n    *) echo OK ;;\n  \
                 esac\ndone\n"
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn ask(program: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, PinentryError> {
        get_pin(
            program,
            &Request {
                title: "t",
                description: "d",
                prompt: "PIN:",
                timeout: Duration::from_secs(5),
                tty: None,
            },
        )
    }

    #[test]
    fn answers_cancellations_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let pin = ask(&fake(dir.path(), "S PASSWORD_FROM_CACHE\\nD 12%2534\\nOK")).unwrap();
        assert_eq!(pin.as_deref().map(|p| &p[..]), Some(&b"12%34"[..]));
        let cancelled = ask(&fake(dir.path(), "ERR 83886179 Operation cancelled")).unwrap();
        assert!(cancelled.is_none());
        let err = ask(&fake(dir.path(), "ERR 1 General error")).unwrap_err();
        assert!(matches!(err, PinentryError::Refused(_)), "{err}");
        let err = ask(&fake(dir.path(), "D 1234")).unwrap_err();
        assert!(matches!(err, PinentryError::Protocol(_)), "{err}");
        let err = ask(Path::new("/nonexistent/pinentry")).unwrap_err();
        assert!(matches!(err, PinentryError::Start(..)), "{err}");
    }
}
