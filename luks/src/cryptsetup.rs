//! `cryptsetup`, run as a program: the LUKS2 metadata and its tokens,
//! keyslots added, tested and removed. Keys reach it through pipes,
//! never files.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{LuksError, Result};
use crate::token::{TOKEN_TYPE, WrappedKey};
use zeroize::Zeroizing;

/// The `cryptsetup` program; `PHONECSP_CRYPTSETUP` overrides it.
pub const ENV_CRYPTSETUP: &str = "PHONECSP_CRYPTSETUP";
/// Iterations of PBKDF2 for the new keyslot: the secret has 384 bits of
/// entropy, so a slow KDF would add nothing but boot time.
pub const KEYSLOT_PBKDF2_ITERATIONS: u32 = 1000;

/// A device (or image file) and, for a detached header, its header file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub path: PathBuf,
    pub header: Option<PathBuf>,
}

impl Device {
    pub fn new(path: impl Into<PathBuf>) -> Device {
        Device {
            path: path.into(),
            header: None,
        }
    }

    /// What holds the metadata: the header file, or the device itself.
    pub fn metadata_path(&self) -> &Path {
        self.header.as_deref().unwrap_or(&self.path)
    }
}

/// Runs `cryptsetup`. Secrets are given through pipes only.
#[derive(Debug, Clone)]
pub struct Cryptsetup {
    program: PathBuf,
}

impl Default for Cryptsetup {
    fn default() -> Self {
        Cryptsetup::from_env()
    }
}

/// What a key is fed to `cryptsetup` from.
enum Feed<'a> {
    Nothing,
    Stdin(&'a [u8]),
}

impl Cryptsetup {
    /// `$PHONECSP_CRYPTSETUP`, else `cryptsetup` on the `PATH`, else `/sbin/cryptsetup`.
    pub fn from_env() -> Cryptsetup {
        if let Some(p) = std::env::var_os(ENV_CRYPTSETUP).filter(|p| !p.is_empty()) {
            return Cryptsetup { program: p.into() };
        }
        let on_path = std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("cryptsetup"))
                .find(|p| p.is_file())
        });
        Cryptsetup {
            program: on_path.unwrap_or_else(|| "/sbin/cryptsetup".into()),
        }
    }

    pub fn with_program(program: impl Into<PathBuf>) -> Cryptsetup {
        Cryptsetup {
            program: program.into(),
        }
    }

    fn run(
        &self,
        action: &'static str,
        args: &[&OsStr],
        feed: Feed<'_>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut cmd = Command::new(&self.program);
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(match feed {
                Feed::Nothing => Stdio::null(),
                Feed::Stdin(_) => Stdio::piped(),
            })
            // Messages we parse are in English.
            .env("LC_ALL", "C");
        let mut child = cmd
            .spawn()
            .map_err(LuksError::io(format!("running {}", self.program.display())))?;
        if let (Feed::Stdin(bytes), Some(mut stdin)) = (feed, child.stdin.take()) {
            // A key is far smaller than a pipe's buffer: this never blocks
            // on cryptsetup reading its output first.
            let _ = stdin.write_all(bytes);
        }
        let mut out = Zeroizing::new(Vec::new());
        let mut err = Vec::new();
        if let Some(mut o) = child.stdout.take() {
            let _ = o.read_to_end(&mut out);
        }
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_end(&mut err);
        }
        let status = child.wait().map_err(LuksError::io(format!(
            "waiting for {}",
            self.program.display()
        )))?;
        if status.success() {
            Ok(out)
        } else {
            Err(LuksError::Cryptsetup {
                action,
                status: status.to_string(),
                stderr: String::from_utf8_lossy(&err).trim().to_owned(),
            })
        }
    }

    /// Runs `cryptsetup OPTIONS [--header H] DEVICE TRAILING`: every
    /// action on a device names its detached header the same way.
    fn on_device(
        &self,
        action: &'static str,
        options: &[&OsStr],
        device: &Device,
        trailing: &[&OsStr],
        feed: Feed<'_>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut args = options.to_vec();
        if let Some(h) = &device.header {
            args.push("--header".as_ref());
            args.push(h.as_os_str());
        }
        args.push(device.path.as_os_str());
        args.extend_from_slice(trailing);
        self.run(action, &args, feed)
    }

    /// Whether the device is LUKS (1 or 2).
    pub fn is_luks(&self, device: &Device) -> bool {
        self.run(
            "isLuks",
            &["isLuks".as_ref(), device.metadata_path().as_os_str()],
            Feed::Nothing,
        )
        .is_ok()
    }

    /// The LUKS2 JSON metadata; [`LuksError::NotLuks2`] for anything else.
    pub fn metadata(&self, device: &Device) -> Result<serde_json::Value> {
        let args = [
            "luksDump".as_ref(),
            "--dump-json-metadata".as_ref(),
            device.metadata_path().as_os_str(),
        ];
        let out = self
            .run("luksDump", &args, Feed::Nothing)
            .map_err(|e| match e {
                LuksError::Cryptsetup { stderr, .. } => {
                    let device = device.metadata_path().to_owned();
                    if self.is_luks(&Device::new(&device)) {
                        LuksError::NotLuks2 { device }
                    } else {
                        LuksError::NotLuks {
                            device,
                            detail: stderr,
                        }
                    }
                }
                other => other,
            })?;
        serde_json::from_slice(&out).map_err(|_| LuksError::NotLuks2 {
            device: device.metadata_path().to_owned(),
        })
    }

    /// The `phonecsp` tokens in the LUKS2 header, by token id. Tokens of
    /// this type that do not parse are reported as errors in place.
    pub fn tokens(&self, device: &Device) -> Result<Vec<(u32, Result<WrappedKey>)>> {
        let meta = self.metadata(device)?;
        Ok(phonecsp_tokens(&meta))
    }

    /// Adds a keyslot for `new_key`, opened with the existing key in
    /// `existing_key_file`; returns the slot number. PBKDF2 with
    /// [`KEYSLOT_PBKDF2_ITERATIONS`]: the new key is high-entropy.
    pub fn add_keyslot(
        &self,
        device: &Device,
        existing: &ExistingKey,
        new_key: &[u8],
        slot: Option<u32>,
    ) -> Result<u32> {
        // A typed passphrase goes through a pipe the child inherits, read
        // as a key file: never a file on disk, and stdin stays free for
        // the new key. The pipe stays open (`_pipe`) until cryptsetup ends.
        let (existing_path, _pipe) = match existing {
            ExistingKey::File(p) => (p.clone(), None),
            ExistingKey::Passphrase(pass) => {
                let r = inheritable_pipe_with(pass)?;
                use std::os::fd::AsRawFd;
                (PathBuf::from(format!("/dev/fd/{}", r.as_raw_fd())), Some(r))
            }
        };
        let iterations = KEYSLOT_PBKDF2_ITERATIONS.to_string();
        let mut options: Vec<&OsStr> = vec![
            "luksAddKey".as_ref(),
            "--batch-mode".as_ref(),
            "--key-file".as_ref(),
            existing_path.as_os_str(),
            "--pbkdf".as_ref(),
            "pbkdf2".as_ref(),
            "--pbkdf-force-iterations".as_ref(),
            iterations.as_ref(),
        ];
        let slot_arg = slot.map(|s| s.to_string());
        if let Some(s) = &slot_arg {
            options.push("--key-slot".as_ref());
            options.push(s.as_ref());
        }
        // The new key: standard input.
        let stdin: &OsStr = "-".as_ref();
        self.on_device(
            "luksAddKey",
            &options,
            device,
            &[stdin],
            Feed::Stdin(new_key),
        )?;
        self.slot_of(device, new_key)
    }

    /// The keyslot `key` opens (and so a check that it opens one).
    pub fn slot_of(&self, device: &Device, key: &[u8]) -> Result<u32> {
        let options: [&OsStr; 4] = [
            "open".as_ref(),
            "--test-passphrase".as_ref(),
            "--verbose".as_ref(),
            "--key-file=-".as_ref(),
        ];
        let out = self.on_device(
            "open --test-passphrase",
            &options,
            device,
            &[],
            Feed::Stdin(key),
        )?;
        let text = String::from_utf8_lossy(&out);
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Key slot ")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| LuksError::Cryptsetup {
                action: "open --test-passphrase",
                status: "ok".into(),
                stderr: "did not say which keyslot opened".into(),
            })
    }

    /// Removes a keyslot, proving the right to with that slot's own key.
    pub fn kill_keyslot(&self, device: &Device, slot: u32, key: &[u8]) -> Result<()> {
        let slot = slot.to_string();
        let options: [&OsStr; 3] = [
            "luksKillSlot".as_ref(),
            "--batch-mode".as_ref(),
            "--key-file=-".as_ref(),
        ];
        self.on_device(
            "luksKillSlot",
            &options,
            device,
            &[slot.as_ref()],
            Feed::Stdin(key),
        )
        .map(drop)
    }

    /// Imports a token; returns its id.
    pub fn import_token(&self, device: &Device, token: &WrappedKey) -> Result<u32> {
        let meta = self.metadata(device)?;
        let id = (0..32u32)
            .find(|i| meta["tokens"].get(i.to_string()).is_none())
            .ok_or_else(|| LuksError::Usage("the LUKS2 header has no free token slot".into()))?;
        let id_arg = id.to_string();
        let options: [&OsStr; 5] = [
            "token".as_ref(),
            "import".as_ref(),
            "--json-file=-".as_ref(),
            "--token-id".as_ref(),
            id_arg.as_ref(),
        ];
        let json = token.to_json();
        self.on_device(
            "token import",
            &options,
            device,
            &[],
            Feed::Stdin(json.as_bytes()),
        )?;
        Ok(id)
    }

    pub fn remove_token(&self, device: &Device, id: u32) -> Result<()> {
        let id = id.to_string();
        let options: [&OsStr; 4] = [
            "token".as_ref(),
            "remove".as_ref(),
            "--token-id".as_ref(),
            id.as_ref(),
        ];
        self.on_device("token remove", &options, device, &[], Feed::Nothing)
            .map(drop)
    }
}

/// An existing passphrase or key of the device, which `cryptsetup` needs
/// to add a keyslot.
pub enum ExistingKey {
    /// A key file (`cryptsetup --key-file`).
    File(PathBuf),
    /// A passphrase, typed by a person.
    Passphrase(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for ExistingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExistingKey::File(p) => f.debug_tuple("File").field(p).finish(),
            ExistingKey::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

/// A pipe holding `bytes`, whose read end a child process inherits (the
/// write end is closed, so the reader sees the end of the bytes).
fn inheritable_pipe_with(bytes: &[u8]) -> Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    use std::os::fd::AsRawFd;
    // Far below any pipe's capacity: the write cannot block.
    if bytes.len() > 4096 {
        return Err(LuksError::Usage("the passphrase is too long".into()));
    }
    let io = |e: nix::Error| LuksError::Io {
        what: "making a pipe for the passphrase".into(),
        source: e.into(),
    };
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io)?;
    std::fs::File::from(w)
        .write_all(bytes)
        .map_err(LuksError::io("writing the passphrase to a pipe"))?;
    fcntl(r.as_raw_fd(), FcntlArg::F_SETFD(FdFlag::empty())).map_err(io)?;
    Ok(r)
}

/// The `phonecsp` tokens in LUKS2 metadata, by id.
pub fn phonecsp_tokens(meta: &serde_json::Value) -> Vec<(u32, Result<WrappedKey>)> {
    let mut out: Vec<(u32, Result<WrappedKey>)> = meta["tokens"]
        .as_object()
        .map(|tokens| {
            tokens
                .iter()
                .filter(|(_, t)| t["type"] == TOKEN_TYPE)
                .filter_map(|(id, t)| {
                    let id = id.parse::<u32>().ok()?;
                    let w = serde_json::from_value::<WrappedKey>(t.clone())
                        .map_err(|e| LuksError::Format(format!("token {id}: {e}")))
                        .and_then(|w| w.check().map(|()| w));
                    Some((id, w))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_by_key(|(id, _)| *id);
    out
}
