//! The one error type of disk unlock and enrolment. Messages never hold a
//! PIN or a secret.

use std::path::PathBuf;

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
    #[error(
        "the wrapped disk secret does not decrypt with {handset}/{container} key {key_id}, though that is the key it was wrapped to: the LUKS token or wrapped-key file is damaged; open the disk with another keyslot and re-enrol"
    )]
    Undecryptable {
        handset: String,
        container: String,
        key_id: String,
    },
    /// The handset could not use the key the secret was wrapped to (it
    /// answered CKR_DEVICE_ERROR once logged in): its copy of the key is
    /// damaged (the phone's log names it) or its store failed. The disk's
    /// own token is not at fault, and the key did not change.
    #[error(
        "{handset}/{container} key {key_id} could not be used on the handset ({detail}): the handset's copy of that key is damaged, or its store failed; `phonecsp-handset container list` on the phone names damaged keys. Open the disk with another keyslot, and re-enrol with a sound key"
    )]
    HandsetKeyDamaged {
        handset: String,
        container: String,
        key_id: String,
        detail: String,
    },
    #[error("wrong PIN for {handset}/{container} ({retries_left} tries left before it locks)")]
    WrongPin {
        handset: String,
        container: String,
        retries_left: u32,
    },
    #[error(
        "{handset}/{container} is locked after too many wrong PINs: set a new PIN with its PUK \
         (`phonecsp unblock {container}`, or on the phone `phonecsp-handset container unblock \
         {container}`); the disk's other keyslots (its passphrase or recovery key) open it meanwhile"
    )]
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
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LuksError {
        let what = what.into();
        move |source| LuksError::Io { what, source }
    }
}

pub type Result<T> = std::result::Result<T, LuksError>;
