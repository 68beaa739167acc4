//! LUKS disks unlocked by the handset.
//!
//! A disk gets a keyslot of its own whose passphrase is a fresh random
//! secret made on this computer ([`new_secret`]). The secret is wrapped
//! (RSA-OAEP with SHA-256) to the public key of a key pair in one of the
//! handset's containers, and the wrapped secret ([`WrappedKey`]) is kept in
//! the LUKS2 header as a token of type `phonecsp`, or in a file (LUKS1,
//! detached headers). Only the handset can unwrap it, after its PIN; the
//! secret exists in the clear only while the disk is being opened.
//!
//! - [`enroll`] adds the keyslot and the token. Existing keyslots are never
//!   touched; the secret reaches `cryptsetup` through a pipe, never a file.
//! - [`unwrap`] asks a [`KeyHolder`] (the daemon over D-Bus, the direct
//!   link of [`crate::direct`], or the daemon's own link for its key
//!   sockets) to unwrap, checking first that the holder's key is the one
//!   the disk was enrolled with and logging in with a PIN from a
//!   [`PinSource`].
//! - [`rewrap`] moves the secret to another container or a recovery public
//!   key through the handset's re-wrap command: it never exists in the
//!   clear on this computer.
//!
//! The secret is 48 random bytes written as 64 characters of base64, so
//! that it survives every path a passphrase takes (shell variables, pipes,
//! `askpass`), none of which all carry NUL or newline bytes.
//!
//! [`keyscript`] is crypttab's `keyscript=` contract and [`direct`] the
//! handset's serial link opened without the daemon, for an initramfs.

pub mod direct;
pub mod keyscript;

use std::ffi::OsStr;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use phonecsp_protocol::message::token_flags;
use phonecsp_protocol::{CkRv, HashAlg};
use rand::RngCore;
use rsa::RsaPublicKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use phonecsp::MechanismParams;
use phonecsp::handset::{Handset, HandsetLink};
use phonecsp::mechanism::{Encryption, ckm};
use phonecsp_protocol::ck::cko;

/// The LUKS2 token type.
pub const TOKEN_TYPE: &str = "phonecsp";
/// The only wrapping this version makes and reads.
pub const ALGORITHM: &str = "RSA-OAEP-SHA256";
/// Random bytes in a disk secret (384 bits), before base64.
pub const SECRET_RANDOM_BYTES: usize = 48;
/// The `cryptsetup` program; `PHONECSP_CRYPTSETUP` overrides it.
pub const ENV_CRYPTSETUP: &str = "PHONECSP_CRYPTSETUP";
/// Iterations of PBKDF2 for the new keyslot: the secret has 384 bits of
/// entropy, so a slow KDF would add nothing but boot time.
pub const KEYSLOT_PBKDF2_ITERATIONS: u32 = 1000;

/// Why a LUKS operation failed. Messages never contain a PIN or a secret.
#[derive(Debug, thiserror::Error)]
pub enum LuksError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("cryptsetup {action} failed ({status}): {stderr}")]
    Cryptsetup {
        action: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{device}: not a LUKS device ({detail})")]
    NotLuks { device: PathBuf, detail: String },
    #[error("{device}: not a LUKS2 device (a LUKS1 or detached-header disk needs --wrapped-file)")]
    NotLuks2 { device: PathBuf },
    #[error("{0}: has no phonecsp token")]
    NoToken(PathBuf),
    #[error("{device}: no phonecsp token with id {id}")]
    NoSuchToken { device: PathBuf, id: u32 },
    #[error("not a phonecsp wrapped key: {0}")]
    Format(String),
    #[error("{0}")]
    Usage(String),
    /// The daemon or the handset refused, or could not be reached.
    #[error("{0}")]
    Client(#[from] phonecsp::Error),
    #[error(
        "handset '{handset}' does not offer container '{container}' to this computer: it is not authorised there, was revoked on the phone, or does not exist"
    )]
    ContainerAbsent { handset: String, container: String },
    #[error("handset '{handset}' is not reachable: {reason}")]
    HandsetAway { handset: String, reason: String },
    #[error("{handset}/{container} has no key with id {key_id}")]
    NoKey {
        handset: String,
        container: String,
        key_id: String,
    },
    #[error(
        "{handset}/{container} key {key_id} is not the key this disk was enrolled with (its public key differs): wrong container or key, or the key was replaced; re-enrol"
    )]
    WrongKey {
        handset: String,
        container: String,
        key_id: String,
    },
    #[error("wrong PIN for {handset}/{container} ({retries_left} tries left before it locks)")]
    WrongPin {
        handset: String,
        container: String,
        retries_left: u32,
    },
    #[error("{handset}/{container} is locked after too many wrong PINs: unlock it on the phone")]
    PinLocked { handset: String, container: String },
    #[error("no PIN: {0}")]
    NoPin(String),
    #[error("handset '{0}' is not in the configuration")]
    HandsetNotConfigured(String),
    /// The configuration or state files (direct mode).
    #[error("{0}")]
    Host(String),
    #[error("the public key: {0}")]
    PublicKey(String),
}

impl LuksError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LuksError {
        let what = what.into();
        move |source| LuksError::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, LuksError>;

// ---- the secret and its wrapping ---------------------------------------------

/// A fresh disk secret: [`SECRET_RANDOM_BYTES`] from the OS's generator,
/// as base64 text (64 bytes of passphrase).
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    let mut raw = Zeroizing::new([0u8; SECRET_RANDOM_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    let mut text = Zeroizing::new(vec![0u8; SECRET_RANDOM_BYTES * 4 / 3]);
    // The buffer is exactly the encoded length, so this never fails.
    let n = BASE64
        .encode_slice(&raw[..], &mut text[..])
        .unwrap_or_default();
    text.truncate(n);
    text
}

/// The mechanism parameters of the wrapping: OAEP, SHA-256, MGF1-SHA-256,
/// no label.
pub fn oaep_params() -> MechanismParams {
    disk_oaep().wire().1
}

/// The disk secret's wrapping: RSA-OAEP with SHA-256 and no label.
pub fn disk_oaep() -> Encryption {
    Encryption::Oaep {
        hash: HashAlg::Sha256,
        label: Vec::new(),
    }
}

/// Wraps `secret` to `key` with RSA-OAEP-SHA256.
pub fn wrap(key: &RsaPublicKey, secret: &[u8]) -> Result<Vec<u8>> {
    phonecsp::local::encrypt(key, &disk_oaep(), secret)
        .map_err(|rv| LuksError::PublicKey(format!("cannot wrap to it: {rv}")))
}

/// Hex SHA-256 of the key's DER SubjectPublicKeyInfo.
pub fn public_key_sha256(key: &RsaPublicKey) -> Result<String> {
    let der = phonecsp::local::spki_der(key)
        .map_err(|rv| LuksError::PublicKey(format!("cannot encode it: {rv}")))?;
    Ok(hex(&Sha256::digest(der)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An RSA public key from a PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or
/// `CERTIFICATE`-less SPKI) or DER file's bytes.
pub fn parse_public_key(bytes: &[u8]) -> Result<RsaPublicKey> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    if let Ok(text) = std::str::from_utf8(bytes)
        && text.contains("-----BEGIN")
    {
        return RsaPublicKey::from_public_key_pem(text.trim())
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(text.trim()))
            .map_err(|_| {
                LuksError::PublicKey(
                    "not an RSA public key in PEM (PUBLIC KEY or RSA PUBLIC KEY)".into(),
                )
            });
    }
    RsaPublicKey::from_public_key_der(bytes)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(bytes))
        .map_err(|_| LuksError::PublicKey("not an RSA public key (PEM or DER)".into()))
}

// ---- the token ---------------------------------------------------------------

/// The wrapped secret and what it is wrapped to: the JSON of a LUKS2 token
/// of type `phonecsp`, and of a wrapped-key file.
///
/// A key wrapped to a handset names the handset (as the daemon's
/// configuration calls it), the container and the key's CKA_ID; a key
/// wrapped to a recovery public key names none of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Always [`TOKEN_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The keyslots the secret opens (LUKS2 token convention: strings).
    pub keyslots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The key's CKA_ID in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Hex SHA-256 of the wrapping key's DER SubjectPublicKeyInfo.
    pub public_key_sha256: String,
    /// The wrapped secret, base64.
    pub wrapped_key: String,
}

/// Where a handset-bound [`WrappedKey`] is to be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub handset: String,
    pub container: String,
    pub key_id: Vec<u8>,
}

impl Target {
    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id)
    }
}

impl WrappedKey {
    pub fn new(
        target: Option<&Target>,
        keyslot: u32,
        public: &RsaPublicKey,
        wrapped: &[u8],
    ) -> Result<WrappedKey> {
        Ok(WrappedKey {
            kind: TOKEN_TYPE.into(),
            keyslots: vec![keyslot.to_string()],
            handset: target.map(|t| t.handset.clone()),
            container: target.map(|t| t.container.clone()),
            key_id: target.map(Target::key_id_hex),
            algorithm: ALGORITHM.into(),
            public_key_sha256: public_key_sha256(public)?,
            wrapped_key: BASE64.encode(wrapped),
        })
    }

    /// Parses and checks a token or a wrapped-key file.
    pub fn parse(json: &str) -> Result<WrappedKey> {
        let w: WrappedKey =
            serde_json::from_str(json).map_err(|e| LuksError::Format(e.to_string()))?;
        w.check()?;
        Ok(w)
    }

    pub fn check(&self) -> Result<()> {
        if self.kind != TOKEN_TYPE {
            return Err(LuksError::Format(format!(
                "type '{}', not '{TOKEN_TYPE}'",
                self.kind
            )));
        }
        if self.algorithm != ALGORITHM {
            return Err(LuksError::Format(format!(
                "algorithm '{}' (this version knows {ALGORITHM})",
                self.algorithm
            )));
        }
        self.wrapped()?;
        if self.keyslots.iter().any(|k| k.parse::<u32>().is_err()) {
            return Err(LuksError::Format("keyslots must be numbers".into()));
        }
        match (&self.handset, &self.container, &self.key_id) {
            (None, None, None) => Ok(()),
            (Some(h), Some(c), Some(k)) if !h.is_empty() && !c.is_empty() => unhex(k)
                .filter(|k| !k.is_empty())
                .map(|_| ())
                .ok_or_else(|| LuksError::Format("key_id is not hex".into())),
            _ => Err(LuksError::Format(
                "give all of handset, container and key_id, or none (a recovery key)".into(),
            )),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The wrapped secret.
    pub fn wrapped(&self) -> Result<Vec<u8>> {
        BASE64
            .decode(self.wrapped_key.trim())
            .map_err(|_| LuksError::Format("wrapped_key is not base64".into()))
    }

    /// The handset container the key is wrapped to; `None` for a recovery key.
    pub fn target(&self) -> Option<Target> {
        Some(Target {
            handset: self.handset.clone()?,
            container: self.container.clone()?,
            key_id: unhex(self.key_id.as_deref()?)?,
        })
    }

    /// What the key is wrapped to, for messages.
    pub fn describe(&self) -> String {
        match self.target() {
            Some(t) => format!("{}/{} key {}", t.handset, t.container, t.key_id_hex()),
            None => format!(
                "a recovery public key (SHA-256 {})",
                self.public_key_sha256.get(..16).unwrap_or("")
            ),
        }
    }

    pub fn keyslot_numbers(&self) -> Vec<u32> {
        self.keyslots
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect()
    }
}

/// Reads a wrapped-key file.
pub fn read_wrapped_file(path: &Path) -> Result<WrappedKey> {
    let text = std::fs::read_to_string(path).map_err(LuksError::io(path.display().to_string()))?;
    WrappedKey::parse(&text).map_err(|e| LuksError::Format(format!("{}: {}", path.display(), e)))
}

/// Writes a wrapped-key file atomically (it holds no secret in the clear,
/// but is still made readable by its owner only).
pub fn write_wrapped_file(path: &Path, w: &WrappedKey) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let what = || path.display().to_string();
    let name = path
        .file_name()
        .ok_or_else(|| LuksError::Usage(format!("{}: not a file name", what())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(LuksError::io(tmp.display().to_string()))?;
    let mut json = w.to_json();
    json.push('\n');
    f.write_all(json.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(LuksError::io(tmp.display().to_string()))?;
    std::fs::rename(&tmp, path).map_err(LuksError::io(what()))
}

// ---- cryptsetup --------------------------------------------------------------

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

// ---- enrolment -----------------------------------------------------------------

/// What [`enroll`] is to do.
#[derive(Debug)]
pub struct EnrollOptions {
    pub device: Device,
    pub handset: String,
    pub container: String,
    /// The key's CKA_ID; `None`: the container's only key pair.
    pub key_id: Option<Vec<u8>>,
    /// An existing passphrase or key of the device.
    pub existing: ExistingKey,
    /// Write the wrapped key here instead of a LUKS2 token.
    pub wrapped_file: Option<PathBuf>,
    /// The keyslot to use; `None`: the first free one.
    pub keyslot: Option<u32>,
}

/// What [`enroll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub keyslot: u32,
    /// The LUKS2 token's id, unless a file was written.
    pub token_id: Option<u32>,
    pub wrapped: WrappedKey,
}

/// The public key of `key_id` in the container (or of its only key pair)
/// as the daemon reports it; returns the key's CKA_ID too.
pub fn container_public_key(
    client: &phonecsp::blocking::Client,
    handset: &str,
    container: &str,
    key_id: Option<&[u8]>,
) -> Result<(Vec<u8>, RsaPublicKey)> {
    let id = match key_id {
        Some(id) => id.to_vec(),
        None => {
            let keys: Vec<Vec<u8>> = client
                .list_objects(handset, container)?
                .into_iter()
                .filter(|o| o.class == cko::PUBLIC_KEY)
                .map(|o| o.id)
                .collect();
            match keys.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(LuksError::Usage(format!(
                        "{handset}/{container} has no key pair: make one with `phonecsp keygen {container}`"
                    )));
                }
                many => {
                    return Err(LuksError::Usage(format!(
                        "{handset}/{container} has several key pairs ({}): choose one with --key",
                        many.iter().map(|k| hex(k)).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    };
    let attrs = client
        .get_attributes(handset, container, cko::PUBLIC_KEY, &id)
        .map_err(|e| match e.rv() {
            CkRv::OBJECT_HANDLE_INVALID | CkRv::KEY_HANDLE_INVALID => LuksError::NoKey {
                handset: handset.into(),
                container: container.into(),
                key_id: hex(&id),
            },
            _ => LuksError::Client(e),
        })?;
    let key = phonecsp::local::public_key_from_attributes(&attrs).map_err(|rv| {
        LuksError::PublicKey(format!(
            "{handset}/{container} key {} is not a usable RSA key: {rv}",
            hex(&id)
        ))
    })?;
    Ok((id, key))
}

/// Enrols the device: a fresh secret, wrapped to the container's key, a
/// new keyslot for it, and the wrapped secret in a token (or a file). If
/// storing the wrapped secret fails, the new keyslot is removed again.
pub fn enroll(
    cryptsetup: &Cryptsetup,
    client: &phonecsp::blocking::Client,
    opts: &EnrollOptions,
) -> Result<Enrolled> {
    let dev = &opts.device;
    // Check what can be checked before the header changes.
    if opts.wrapped_file.is_none() {
        cryptsetup.metadata(dev)?;
    } else if !cryptsetup.is_luks(dev) {
        return Err(LuksError::NotLuks {
            device: dev.metadata_path().to_owned(),
            detail: "cryptsetup isLuks says no".into(),
        });
    }
    let (key_id, public) = container_public_key(
        client,
        &opts.handset,
        &opts.container,
        opts.key_id.as_deref(),
    )?;
    if public.size() < 256 {
        return Err(LuksError::PublicKey(
            "RSA keys below 2048 bits are not used for disks".into(),
        ));
    }
    let target = Target {
        handset: opts.handset.clone(),
        container: opts.container.clone(),
        key_id,
    };
    let secret = new_secret();
    let wrapped = wrap(&public, &secret)?;
    let slot = cryptsetup.add_keyslot(dev, &opts.existing, &secret, opts.keyslot)?;
    let token = WrappedKey::new(Some(&target), slot, &public, &wrapped)?;
    let stored = match &opts.wrapped_file {
        Some(path) => write_wrapped_file(path, &token).map(|()| None),
        None => cryptsetup.import_token(dev, &token).map(Some),
    };
    match stored {
        Ok(token_id) => Ok(Enrolled {
            keyslot: slot,
            token_id,
            wrapped: token,
        }),
        Err(e) => {
            // Leave no keyslot nobody can open.
            if let Err(k) = cryptsetup.kill_keyslot(dev, slot, &secret) {
                return Err(LuksError::Usage(format!(
                    "{e}; and removing the new keyslot {slot} failed too: {k}"
                )));
            }
            Err(e)
        }
    }
}

// ---- unwrapping ------------------------------------------------------------------

/// What a container says about itself before a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerStatus {
    /// `phonecsp_protocol::message::token_flags`.
    pub flags: u32,
    pub retries_left: u32,
    /// This session (or D-Bus connection) is already logged in.
    pub logged_in: bool,
}

/// What the PIN is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPrompt {
    pub handset: String,
    pub container: String,
    pub retries_left: u32,
    /// Set when one more wrong PIN locks the container.
    pub final_try: bool,
}

/// A handset's containers as the unlock needs them, reached over D-Bus,
/// over a direct link, or through the daemon's own link. Errors carry the
/// CK_RV the handset or daemon answered.
pub trait KeyHolder {
    fn status(
        &mut self,
        container: &str,
    ) -> impl Future<Output = phonecsp::Result<ContainerStatus>> + Send;
    fn public_key(
        &mut self,
        container: &str,
        id: &[u8],
    ) -> impl Future<Output = phonecsp::Result<RsaPublicKey>> + Send;
    fn login(
        &mut self,
        container: &str,
        pin: &[u8],
    ) -> impl Future<Output = phonecsp::Result<()>> + Send;
    /// RSA-OAEP-SHA256 decryption with the key.
    fn decrypt(
        &mut self,
        container: &str,
        id: &[u8],
        ciphertext: &[u8],
    ) -> impl Future<Output = phonecsp::Result<Zeroizing<Vec<u8>>>> + Send;
}

/// Where a PIN comes from.
pub trait PinSource {
    fn pin(
        &mut self,
        prompt: &PinPrompt,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>>> + Send;
}

fn holder_error(e: phonecsp::Error, t: &Target) -> LuksError {
    match e.rv() {
        CkRv::TOKEN_NOT_PRESENT => LuksError::ContainerAbsent {
            handset: t.handset.clone(),
            container: t.container.clone(),
        },
        CkRv::DEVICE_REMOVED => LuksError::HandsetAway {
            handset: t.handset.clone(),
            reason: e.to_string(),
        },
        CkRv::PIN_LOCKED => LuksError::PinLocked {
            handset: t.handset.clone(),
            container: t.container.clone(),
        },
        CkRv::OBJECT_HANDLE_INVALID | CkRv::KEY_HANDLE_INVALID => LuksError::NoKey {
            handset: t.handset.clone(),
            container: t.container.clone(),
            key_id: t.key_id_hex(),
        },
        _ => LuksError::Client(e),
    }
}

/// Unwraps the disk secret with the handset: checks that the holder's key
/// is the one the secret was wrapped to (so a wrong container costs no PIN
/// try), logs in if the container needs it, and decrypts.
pub async fn unwrap<H: KeyHolder, P: PinSource>(
    holder: &mut H,
    wrapped: &WrappedKey,
    pins: &mut P,
) -> Result<Zeroizing<Vec<u8>>> {
    let t = wrapped.target().ok_or_else(|| {
        LuksError::Usage(format!(
            "the key is wrapped to {}, not to a handset: open it with the recovery private key",
            wrapped.describe()
        ))
    })?;
    let ciphertext = wrapped.wrapped()?;
    let status = holder
        .status(&t.container)
        .await
        .map_err(|e| holder_error(e, &t))?;
    let public = holder
        .public_key(&t.container, &t.key_id)
        .await
        .map_err(|e| holder_error(e, &t))?;
    if public_key_sha256(&public)? != wrapped.public_key_sha256.to_ascii_lowercase() {
        return Err(LuksError::WrongKey {
            handset: t.handset.clone(),
            container: t.container.clone(),
            key_id: t.key_id_hex(),
        });
    }
    if status.flags & token_flags::PIN_LOCKED != 0 {
        return Err(LuksError::PinLocked {
            handset: t.handset.clone(),
            container: t.container.clone(),
        });
    }
    if status.flags & token_flags::LOGIN_REQUIRED != 0 && !status.logged_in {
        let pin = if status.flags & token_flags::PROTECTED_PATH != 0 {
            Zeroizing::new(Vec::new())
        } else {
            pins.pin(&PinPrompt {
                handset: t.handset.clone(),
                container: t.container.clone(),
                retries_left: status.retries_left,
                final_try: status.flags & token_flags::PIN_FINAL_TRY != 0,
            })
            .await?
        };
        if let Err(e) = holder.login(&t.container, &pin).await {
            return Err(match e.rv() {
                CkRv::PIN_INCORRECT => {
                    let retries_left = holder
                        .status(&t.container)
                        .await
                        .map(|s| s.retries_left)
                        .unwrap_or(0);
                    LuksError::WrongPin {
                        handset: t.handset.clone(),
                        container: t.container.clone(),
                        retries_left,
                    }
                }
                _ => holder_error(e, &t),
            });
        }
    }
    holder
        .decrypt(&t.container, &t.key_id, &ciphertext)
        .await
        .map_err(|e| match e.rv() {
            CkRv::ENCRYPTED_DATA_INVALID | CkRv::ENCRYPTED_DATA_LEN_RANGE => LuksError::WrongKey {
                handset: t.handset.clone(),
                container: t.container.clone(),
                key_id: t.key_id_hex(),
            },
            _ => holder_error(e, &t),
        })
}

/// [`KeyHolder`] on the handset itself, over any link that carries its
/// requests: the direct serial link of the keyscript, or the daemon's own
/// link for systemd-cryptsetup's key sockets.
impl<L: HandsetLink + Send> KeyHolder for L {
    async fn status(&mut self, container: &str) -> phonecsp::Result<ContainerStatus> {
        let i = Handset::token_info(self, container).await?;
        Ok(ContainerStatus {
            flags: i.flags,
            retries_left: i.retries_left,
            logged_in: i.flags & token_flags::LOGGED_IN != 0,
        })
    }

    async fn public_key(&mut self, container: &str, id: &[u8]) -> phonecsp::Result<RsaPublicKey> {
        Handset::public_key(self, container, id).await
    }

    async fn login(&mut self, container: &str, pin: &[u8]) -> phonecsp::Result<()> {
        Handset::login(self, container, pin).await
    }

    async fn decrypt(
        &mut self,
        container: &str,
        id: &[u8],
        ciphertext: &[u8],
    ) -> phonecsp::Result<Zeroizing<Vec<u8>>> {
        Handset::decrypt(self, container, id, disk_oaep().for_handset(), ciphertext).await
    }
}

/// [`KeyHolder`] over D-Bus: the daemon, on a connection of its own (so
/// the login ends with it).
pub struct DaemonHolder {
    pub client: phonecsp::Client,
    pub handset: String,
}

impl KeyHolder for DaemonHolder {
    async fn status(&mut self, container: &str) -> phonecsp::Result<ContainerStatus> {
        let d = self.client.get_token_info(&self.handset, container).await?;
        Ok(ContainerStatus {
            flags: d.flags,
            retries_left: d.retries_left,
            logged_in: d.logged_in,
        })
    }

    async fn public_key(&mut self, container: &str, id: &[u8]) -> phonecsp::Result<RsaPublicKey> {
        let a = self
            .client
            .get_attributes(&self.handset, container, cko::PUBLIC_KEY, id)
            .await?;
        phonecsp::local::public_key_from_attributes(&a)
            .map_err(|rv| phonecsp::Error::token(rv, "not an RSA public key"))
    }

    async fn login(&mut self, container: &str, pin: &[u8]) -> phonecsp::Result<()> {
        self.client.login(&self.handset, container, pin).await
    }

    async fn decrypt(
        &mut self,
        container: &str,
        id: &[u8],
        ciphertext: &[u8],
    ) -> phonecsp::Result<Zeroizing<Vec<u8>>> {
        self.client
            .decrypt(
                &self.handset,
                container,
                id,
                ckm::RSA_PKCS_OAEP,
                &oaep_params(),
                ciphertext,
            )
            .await
    }
}

// ---- re-wrapping -------------------------------------------------------------------

/// Where [`rewrap`] moves the secret.
#[derive(Debug, Clone)]
pub enum RewrapTo {
    /// Another container (on the same or another handset).
    Container {
        handset: String,
        container: String,
        key_id: Option<Vec<u8>>,
    },
    /// A recovery public key kept away from the computer.
    PublicKey(RsaPublicKey),
}

/// Re-wraps `from` to `to` inside the handset that holds `from`'s key: the
/// secret never exists in the clear on this computer. The caller's D-Bus
/// connection must be logged in to `from`'s container. The result opens
/// the same keyslots.
pub fn rewrap(
    client: &phonecsp::blocking::Client,
    from: &WrappedKey,
    to: &RewrapTo,
) -> Result<WrappedKey> {
    let source = from.target().ok_or_else(|| {
        LuksError::Usage(
            "this key is wrapped to a recovery key: only its private key can re-wrap it".into(),
        )
    })?;
    let (target, public) = match to {
        RewrapTo::Container {
            handset,
            container,
            key_id,
        } => {
            let (id, key) = container_public_key(client, handset, container, key_id.as_deref())?;
            (
                Some(Target {
                    handset: handset.clone(),
                    container: container.clone(),
                    key_id: id,
                }),
                key,
            )
        }
        RewrapTo::PublicKey(key) => (None, key.clone()),
    };
    if target.as_ref() == Some(&source) {
        return Err(LuksError::Usage(
            "the key is already wrapped to that container key".into(),
        ));
    }
    let spki = phonecsp::local::spki_der(&public)
        .map_err(|rv| LuksError::PublicKey(format!("cannot encode it: {rv}")))?;
    let rewrapped = client
        .rewrap(
            &source.handset,
            &source.container,
            &source.key_id,
            ckm::SHA256,
            &from.wrapped()?,
            ckm::SHA256,
            &spki,
        )
        .map_err(|e| match e.rv() {
            CkRv::ENCRYPTED_DATA_INVALID => LuksError::WrongKey {
                handset: source.handset.clone(),
                container: source.container.clone(),
                key_id: source.key_id_hex(),
            },
            _ => holder_error(e, &source),
        })?;
    let mut out = WrappedKey::new(target.as_ref(), 0, &public, &rewrapped)?;
    out.keyslots = from.keyslots.clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::{Oaep, RsaPrivateKey};

    #[test]
    fn secrets_are_fresh_printable_and_long() {
        let a = new_secret();
        let b = new_secret();
        assert_eq!(a.len(), 64);
        assert_ne!(*a, *b);
        assert!(a.iter().all(|c| c.is_ascii_graphic()));
        assert_eq!(BASE64.decode(&a[..]).unwrap().len(), SECRET_RANDOM_BYTES);
    }

    #[test]
    fn wrapped_keys_roundtrip_and_unwrap_with_the_private_key() {
        let sk = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pk = sk.to_public_key();
        let secret = new_secret();
        let ct = wrap(&pk, &secret).unwrap();
        let t = Target {
            handset: "phone".into(),
            container: "disk".into(),
            key_id: vec![2],
        };
        let w = WrappedKey::new(Some(&t), 1, &pk, &ct).unwrap();
        let json = w.to_json();
        assert!(json.contains("\"type\": \"phonecsp\""), "{json}");
        assert!(json.contains("\"keyslots\": [\n    \"1\"\n  ]"), "{json}");
        let back = WrappedKey::parse(&json).unwrap();
        assert_eq!(back, w);
        assert_eq!(back.target(), Some(t));
        assert_eq!(back.keyslot_numbers(), vec![1]);
        assert_eq!(
            sk.decrypt(Oaep::new::<Sha256>(), &back.wrapped().unwrap())
                .unwrap(),
            secret.to_vec()
        );
        // Recovery keys name no handset.
        let r = WrappedKey::new(None, 1, &pk, &ct).unwrap();
        assert_eq!(WrappedKey::parse(&r.to_json()).unwrap().target(), None);
        assert!(r.describe().starts_with("a recovery public key"));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let ok = r#"{"type":"phonecsp","keyslots":["1"],"handset":"p","container":"c","key_id":"01","algorithm":"RSA-OAEP-SHA256","public_key_sha256":"00","wrapped_key":"AAAA"}"#;
        assert!(WrappedKey::parse(ok).is_ok());
        for bad in [
            ok.replace("\"phonecsp\"", "\"systemd-pkcs11\""),
            ok.replace("RSA-OAEP-SHA256", "RSA-PKCS"),
            ok.replace("\"AAAA\"", "\"!!\""),
            ok.replace("\"01\"", "\"0x\""),
            ok.replace("\"1\"", "\"one\""),
            ok.replace(",\"container\":\"c\"", ""),
            ok.replace("}", ",\"extra\":1}"),
            "{".into(),
            "[]".into(),
        ] {
            assert!(WrappedKey::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_found_in_metadata() {
        let ok = serde_json::json!({"type":"phonecsp","keyslots":["1"],"handset":"p","container":"c","key_id":"01","algorithm":"RSA-OAEP-SHA256","public_key_sha256":"00","wrapped_key":"AAAA"});
        let meta = serde_json::json!({"tokens": {
            "3": ok,
            "0": {"type": "systemd-tpm2", "keyslots": ["2"]},
            "1": {"type": "phonecsp", "keyslots": ["1"]},
        }});
        let t = phonecsp_tokens(&meta);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].0, 1);
        assert!(t[0].1.is_err());
        assert_eq!(t[1].0, 3);
        assert!(t[1].1.is_ok());
    }

    #[test]
    fn public_keys_parse_from_pem_and_der() {
        use rsa::pkcs1::EncodeRsaPublicKey;
        use rsa::pkcs8::{EncodePublicKey, LineEnding};
        let sk = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pk = sk.to_public_key();
        let pem = pk.to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(parse_public_key(pem.as_bytes()).unwrap(), pk);
        let der = pk.to_public_key_der().unwrap();
        assert_eq!(parse_public_key(der.as_bytes()).unwrap(), pk);
        let pkcs1 = pk.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert_eq!(parse_public_key(pkcs1.as_bytes()).unwrap(), pk);
        assert!(parse_public_key(b"nonsense").is_err());
        assert_eq!(unhex("0a1B"), Some(vec![0x0a, 0x1b]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
