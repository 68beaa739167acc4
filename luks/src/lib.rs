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

mod cryptsetup;
mod enrol;
mod holder;
mod rewrap;
mod secret;
#[cfg(test)]
mod tests;
mod token;

pub use cryptsetup::*;
pub use enrol::*;
pub use holder::*;
pub use rewrap::*;
pub use secret::*;
pub use token::*;

use std::path::PathBuf;

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
