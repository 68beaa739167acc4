//! Debian's crypttab `keyscript=` contract, for `phonecsp-keyscript`.
//!
//! The argument is the crypttab key field: `luks-token` (or `none`, or
//! empty) reads the `phonecsp` tokens from the LUKS2 header of
//! `CRYPTTAB_SOURCE` (or of `CRYPTTAB_OPTION_header`), `luks-token:N` only
//! token N; anything else is the path of a wrapped-key file. The key is
//! unwrapped by the handset, through the daemon over D-Bus when the bus
//! and the daemon are there, else over the handset's serial line opened
//! here (an initramfs has no D-Bus). A PIN is asked with
//! `/lib/cryptsetup/askpass` (or `PHONECSP_ASKPASS`). When the handset
//! stays away past `PHONECSP_WAIT_SECS`, the same askpass asks for the
//! passphrase of the disk's other keyslots (`PHONECSP_FALLBACK`), since
//! Debian's cryptroot never asks for one when a keyscript is set. The caller prints
//! the key on stdout; everything said here goes to stderr.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::direct::DirectHolder;
use crate::{Cryptsetup, DaemonHolder, Device, LuksError, PinPrompt, PinSource, WrappedKey};
use phonecsp::client::{Bus, ClientOptions};

/// The daemon's configuration file, for direct mode.
pub const ENV_CONFIG: &str = "PHONECSP_CONFIG";
/// The program that asks for a PIN (Debian's contract: the prompt is its
/// argument, the answer its standard output).
pub const ENV_ASKPASS: &str = "PHONECSP_ASKPASS";
pub const DEFAULT_ASKPASS: &str = "/lib/cryptsetup/askpass";
/// How long to wait for the handset to appear, in seconds.
pub const ENV_WAIT: &str = "PHONECSP_WAIT_SECS";
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// What to do when the phone stays away: `passphrase` (the default) asks
/// for one of the disk's other keyslots, `none` fails.
pub const ENV_FALLBACK: &str = "PHONECSP_FALLBACK";

/// What the keyscript was asked for, from its argument and environment.
#[derive(Debug, Clone)]
pub struct Request {
    /// The crypttab key field.
    pub key_field: String,
    /// `CRYPTTAB_NAME`: the mapping's name, for messages and prompts.
    pub name: String,
    /// `CRYPTTAB_SOURCE`: the device.
    pub source: Option<PathBuf>,
    /// `CRYPTTAB_OPTION_header`: a detached header.
    pub header: Option<PathBuf>,
    /// `CRYPTTAB_TRIED`: how many tries failed before this one.
    pub tried: u32,
    pub config: PathBuf,
    pub askpass: PathBuf,
    pub bus: Bus,
    pub wait: Duration,
    /// Ask for the disk's passphrase when the phone is away.
    pub fallback: bool,
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Request {
    /// From the argument (else `CRYPTTAB_KEY`) and the environment.
    pub fn from_env(arg: Option<String>) -> Result<Request, LuksError> {
        let key_field = arg
            .or_else(|| env_nonempty("CRYPTTAB_KEY"))
            .unwrap_or_default();
        let bus = Bus::from_env().map_err(|e| LuksError::Usage(e.to_string()))?;
        let wait = match env_nonempty(ENV_WAIT) {
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|_| LuksError::Usage(format!("{ENV_WAIT}={v}: not a number")))?,
            None => Duration::from_secs(DEFAULT_WAIT_SECS),
        };
        Ok(Request {
            key_field,
            name: env_nonempty("CRYPTTAB_NAME").unwrap_or_else(|| "disk".into()),
            source: env_nonempty("CRYPTTAB_SOURCE").map(|s| resolve_source(&s)),
            header: env_nonempty("CRYPTTAB_OPTION_header").map(PathBuf::from),
            tried: env_nonempty("CRYPTTAB_TRIED")
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0),
            config: env_nonempty(ENV_CONFIG)
                .unwrap_or_else(|| phonecsp_host::config::DEFAULT_CONFIG.into())
                .into(),
            askpass: env_nonempty(ENV_ASKPASS)
                .unwrap_or_else(|| DEFAULT_ASKPASS.into())
                .into(),
            bus,
            wait,
            fallback: match env_nonempty(ENV_FALLBACK).as_deref() {
                None | Some("passphrase") => true,
                Some("none") => false,
                Some(v) => {
                    return Err(LuksError::Usage(format!(
                        "{ENV_FALLBACK}={v}: give passphrase or none"
                    )));
                }
            },
        })
    }
}

/// `UUID=...` and friends as the `/dev/disk/by-*` link; paths unchanged.
pub fn resolve_source(s: &str) -> PathBuf {
    for (prefix, dir) in [
        ("UUID=", "by-uuid"),
        ("PARTUUID=", "by-partuuid"),
        ("LABEL=", "by-label"),
        ("PARTLABEL=", "by-partlabel"),
    ] {
        if let Some(v) = s.strip_prefix(prefix) {
            return Path::new("/dev/disk").join(dir).join(v);
        }
    }
    PathBuf::from(s)
}

/// The wrapped keys to try, with where each came from.
pub fn candidates(req: &Request) -> Result<Vec<(String, WrappedKey)>, LuksError> {
    let field = req.key_field.trim();
    let token_id = match field {
        "" | "none" | "luks-token" => Some(None),
        f => f
            .strip_prefix("luks-token:")
            .map(|id| {
                id.parse::<u32>()
                    .map(Some)
                    .map_err(|_| LuksError::Usage(format!("'{f}': give luks-token:<token id>")))
            })
            .transpose()?,
    };
    let Some(token_id) = token_id else {
        let w = crate::read_wrapped_file(Path::new(field))?;
        return Ok(vec![(field.to_owned(), w)]);
    };
    let source = req.source.clone().ok_or_else(|| {
        LuksError::Usage("CRYPTTAB_SOURCE is not set: which device's header?".into())
    })?;
    let device = Device {
        path: source,
        header: req.header.clone(),
    };
    let at = device.metadata_path().to_owned();
    let tokens = Cryptsetup::from_env().tokens(&device)?;
    let mut out = Vec::new();
    for (id, w) in tokens {
        if token_id.is_some_and(|want| want != id) {
            continue;
        }
        match w {
            Ok(w) if w.target().is_some() => out.push((format!("token {id}"), w)),
            Ok(_) => {}
            Err(e) => eprintln!("phonecsp: {}: {e}", at.display()),
        }
    }
    if out.is_empty() {
        return Err(match token_id {
            Some(id) => LuksError::NoSuchToken { device: at, id },
            None => LuksError::NoToken(at),
        });
    }
    Ok(out)
}

/// Asks with Debian's `askpass` (or a program with its contract).
pub struct Askpass {
    pub program: PathBuf,
    pub name: String,
    pub tried: u32,
}

impl Askpass {
    pub fn prompt_text(&self, p: &PinPrompt) -> String {
        let mut s = format!(
            "Please enter the PIN of {}/{} to unlock {}",
            p.handset, p.container, self.name
        );
        if p.final_try {
            s.push_str(" (LAST TRY: a wrong PIN locks it)");
        } else if self.tried > 0 || p.retries_left < 5 {
            s.push_str(&format!(" ({} tries left)", p.retries_left));
        }
        s.push_str(": ");
        s
    }
}

impl Askpass {
    /// The phone stayed away: the disk's passphrase (another keyslot),
    /// which the caller prints as the key for cryptsetup to try. Debian's
    /// cryptroot never asks for one itself when a keyscript is set, so
    /// without this an absent phone would leave the disk shut even to its
    /// owner's passphrase.
    async fn passphrase(&self, why: &LuksError) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        eprintln!("phonecsp: {why}");
        let prompt = format!(
            "The phone is not reachable: please enter the passphrase of {}: ",
            self.name
        );
        self.ask(prompt).await
    }

    async fn ask(&self, prompt: String) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        // askpass prints its prompt on stderr and reads the answer from
        // stdin, both the console the boot scripts gave the keyscript; only
        // the answer (stdout) is ours. Not `output()`: tokio's captures
        // stderr whatever was configured, and the prompt went into a pipe
        // nobody read, so the boot waited with nothing on the screen (found
        // by the boot tier, tests/system/boot). A stdin other than the
        // console's tty would make askpass reopen /dev/console for stdout
        // too, and its answer would go to the screen instead of here.
        let err = |e: std::io::Error| LuksError::NoPin(format!("{}: {e}", self.program.display()));
        let child = tokio::process::Command::new(&self.program)
            .arg(prompt)
            .stdin(std::process::Stdio::inherit())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .map_err(err)?;
        let out = child.wait_with_output().await.map_err(err)?;
        let mut answer = Zeroizing::new(out.stdout);
        if !out.status.success() {
            return Err(LuksError::NoPin(format!(
                "{} {}",
                self.program.display(),
                out.status
            )));
        }
        while matches!(answer.last(), Some(b'\n' | b'\r')) {
            answer.pop();
        }
        if answer.is_empty() {
            return Err(LuksError::NoPin("an empty answer was given".into()));
        }
        Ok(answer)
    }
}

impl PinSource for Askpass {
    async fn pin(&mut self, p: &PinPrompt) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        self.ask(self.prompt_text(p)).await
    }
}

/// Whether another wrapped key may succeed where this one failed: the
/// handset or container is not there. A wrong PIN is final.
pub(crate) fn try_next(e: &LuksError) -> bool {
    matches!(
        e,
        LuksError::HandsetAway { .. }
            | LuksError::ContainerAbsent { .. }
            | LuksError::HandsetNotConfigured(_)
            | LuksError::WrongKey { .. }
            | LuksError::Undecryptable { .. }
            | LuksError::HandsetKeyDamaged { .. }
            | LuksError::NoKey { .. }
    )
}

async fn wait_connected(
    client: &phonecsp::Client,
    handset: &str,
    deadline: Instant,
) -> Result<(), LuksError> {
    let mut said = false;
    loop {
        let list = client.list_handsets().await?;
        let Some(h) = list.iter().find(|h| h.name == handset) else {
            return Err(LuksError::HandsetNotConfigured(handset.to_owned()));
        };
        if h.connected {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(LuksError::HandsetAway {
                handset: handset.to_owned(),
                reason: if h.fingerprint.is_empty() {
                    "not paired with this computer".into()
                } else {
                    format!("the daemon cannot reach it ({})", h.transport)
                },
            });
        }
        if !said {
            eprintln!("phonecsp: waiting for handset '{handset}'");
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The handset key a wrapped key names (a recovery key names none).
fn handset_target(w: &WrappedKey) -> Result<crate::Target, LuksError> {
    w.target()
        .ok_or_else(|| LuksError::Usage("not a handset key".into()))
}

async fn unwrap_over_dbus(
    client: &phonecsp::Client,
    w: &WrappedKey,
    pins: &mut Askpass,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let t = handset_target(w)?;
    wait_connected(client, &t.handset, deadline).await?;
    let mut holder = DaemonHolder {
        client: client.clone(),
        handset: t.handset.clone(),
    };
    let r = crate::unwrap(&mut holder, w, pins).await;
    let _ = client.logout(&t.handset, &t.container).await;
    r
}

async fn unwrap_direct(
    config: &phonecsp_host::config::Config,
    w: &WrappedKey,
    pins: &mut Askpass,
    deadline: Instant,
) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let t = handset_target(w)?;
    let mut holder = DirectHolder::connect(config, &t.handset, deadline).await?;
    let r = crate::unwrap(&mut holder, w, pins).await;
    holder.close(&t.container).await;
    r
}

/// Connects to the daemon if the bus is up and the daemon (checked to run
/// as its configured user) is on it; `None` means direct mode.
async fn daemon(bus: &Bus) -> Result<Option<phonecsp::Client>, LuksError> {
    let options = ClientOptions::default();
    let client = match phonecsp::Client::connect_with(bus, options).await {
        Ok(c) => c,
        Err(phonecsp::Error::Bus(e)) => {
            eprintln!("phonecsp: no D-Bus ({e}): opening the handset's link directly");
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    match client.check_daemon().await {
        Ok(_) => Ok(Some(client)),
        Err(phonecsp::Error::Bus(e)) => {
            eprintln!(
                "phonecsp: phonecspd is not on the bus ({e}): opening the handset's link directly"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Gets the disk key. Messages go to stderr; the key is returned for the
/// caller to print.
pub async fn run(req: &Request) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let candidates = candidates(req)?;
    let deadline = Instant::now() + req.wait;
    let mut pins = Askpass {
        program: req.askpass.clone(),
        name: req.name.clone(),
        tried: req.tried,
    };
    let client = daemon(&req.bus).await?;
    let config = match client {
        Some(_) => None,
        None => Some(crate::direct::load_config(&req.config)?),
    };
    let mut last = None;
    let n = candidates.len();
    for (i, (origin, w)) in candidates.iter().enumerate() {
        let r = match (&client, &config) {
            (Some(c), _) => unwrap_over_dbus(c, w, &mut pins, deadline).await,
            (None, Some(cfg)) => unwrap_direct(cfg, w, &mut pins, deadline).await,
            (None, None) => return Err(LuksError::Usage("no way to reach the handset".into())),
        };
        match r {
            Ok(key) => return Ok(key),
            Err(e) if i + 1 < n && try_next(&e) => {
                eprintln!(
                    "phonecsp: {origin} ({}): {e}; trying the next",
                    w.describe()
                );
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| LuksError::Usage("no wrapped key to try".into())))
}

/// Gets the disk key from the phone, or, when the phone stays away and
/// the fallback is on, the passphrase of another keyslot from the person
/// at the console.
/// The flag says whether the key came from the phone.
pub async fn run_with_fallback(req: &Request) -> Result<(Zeroizing<Vec<u8>>, bool), LuksError> {
    match run(req).await {
        Ok(key) => Ok((key, true)),
        Err(e @ LuksError::HandsetAway { .. }) if req.fallback => {
            let pins = Askpass {
                program: req.askpass.clone(),
                name: req.name.clone(),
                tried: req.tried,
            };
            Ok((pins.passphrase(&e).await?, false))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve() {
        assert_eq!(
            resolve_source("UUID=1234-abcd"),
            PathBuf::from("/dev/disk/by-uuid/1234-abcd")
        );
        assert_eq!(resolve_source("/dev/sda2"), PathBuf::from("/dev/sda2"));
    }

    #[test]
    fn prompts_say_what_and_how_many_tries() {
        let a = Askpass {
            program: "/bin/false".into(),
            name: "cryptroot".into(),
            tried: 0,
        };
        let mut p = PinPrompt {
            handset: "phone".into(),
            container: "disk".into(),
            retries_left: 5,
            final_try: false,
        };
        assert_eq!(
            a.prompt_text(&p),
            "Please enter the PIN of phone/disk to unlock cryptroot: "
        );
        p.retries_left = 3;
        assert!(a.prompt_text(&p).contains("(3 tries left)"));
        p.final_try = true;
        assert!(a.prompt_text(&p).contains("LAST TRY"));
    }

    #[test]
    fn key_fields() {
        let req = |field: &str| Request {
            key_field: field.into(),
            name: "x".into(),
            source: None,
            header: None,
            tried: 0,
            config: "/nonexistent".into(),
            askpass: "/bin/false".into(),
            bus: Bus::System,
            wait: Duration::from_secs(1),
            fallback: false,
        };
        // A token without a source is a usage error, not a file lookup.
        assert!(matches!(
            candidates(&req("luks-token")),
            Err(LuksError::Usage(_))
        ));
        assert!(matches!(candidates(&req("none")), Err(LuksError::Usage(_))));
        assert!(matches!(
            candidates(&req("luks-token:x")),
            Err(LuksError::Usage(_))
        ));
        assert!(matches!(
            candidates(&req("/nonexistent/wrapped.json")),
            Err(LuksError::Io { .. })
        ));
    }
}
