//! The daemon's persistent state under `/var/lib/phonecsp`: its own Noise
//! static key (`host.key`, mode 0600) and each paired handset's pinned
//! public key (`handsets/<name>.pub`), and its attestation key once the
//! first statement brought it (`handsets/<name>.attest`, docs/attestation.md).
//! Writes are atomic.

use phonecsp_protocol::StaticKeypair;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt key file ({reason}); remove it to start over")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error(
        "{path} does not exist: this computer has no phonecsp identity yet (start phonecspd and pair first)"
    )]
    NoIdentity { path: PathBuf },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

pub struct State {
    dir: PathBuf,
    identity: StaticKeypair,
}

/// Writes `bytes` to `path` readable by its owner only, atomically: a
/// temporary file beside it, fsync, rename, fsync of the directory, so a
/// crash leaves the old file or the new one. The error names the file
/// that failed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let name = path.file_name().ok_or_else(|| StateError::Io {
        path: path.to_owned(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name"),
    })?;
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
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(parent) = path.parent()
        && let Ok(d) = std::fs::File::open(parent)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The key in a key file's contents (`host.key`, `handsets/<name>.pub`):
/// exactly 32 bytes; `path` only names the file in the error. Public for
/// the `daemon_state` fuzz target.
pub fn parse_key(path: &Path, bytes: &[u8]) -> Result<[u8; 32], StateError> {
    bytes.try_into().map_err(|_| StateError::Corrupt {
        path: path.to_owned(),
        reason: "not 32 bytes",
    })
}

fn read_key(path: &Path) -> Result<Option<[u8; 32]>, StateError> {
    match std::fs::read(path) {
        Ok(b) => parse_key(path, &b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// The keys of a handset kept here, each in a file of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinnedKey {
    /// Its Noise static key, pinned at pairing.
    Identity,
    /// Its Ed25519 attestation key, pinned at its first statement.
    Attestation,
}

impl State {
    /// Opens the state directory, creating it and the host key if needed.
    pub fn open(dir: &Path) -> Result<State, StateError> {
        std::fs::create_dir_all(dir.join("handsets")).map_err(io(dir))?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
        let key_path = dir.join("host.key");
        let identity = match read_key(&key_path)? {
            Some(k) => StaticKeypair::from_private(&k),
            None => {
                let k = StaticKeypair::generate();
                write_private(&key_path, k.private())?;
                log::info!("created the daemon's Noise key in {}", key_path.display());
                k
            }
        };
        Ok(State {
            dir: dir.to_owned(),
            identity,
        })
    }

    /// Opens an existing state directory without creating or changing
    /// anything (the keyscript, possibly on a read-only root or in an
    /// initramfs): a missing host key is [`StateError::NoIdentity`].
    pub fn open_existing(dir: &Path) -> Result<State, StateError> {
        let key_path = dir.join("host.key");
        match read_key(&key_path)? {
            Some(k) => Ok(State {
                dir: dir.to_owned(),
                identity: StaticKeypair::from_private(&k),
            }),
            None => Err(StateError::NoIdentity { path: key_path }),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn identity(&self) -> &StaticKeypair {
        &self.identity
    }

    fn key_path(&self, handset: &str, which: PinnedKey) -> PathBuf {
        let extension = match which {
            PinnedKey::Identity => "pub",
            PinnedKey::Attestation => "attest",
        };
        self.dir
            .join("handsets")
            .join(format!("{handset}.{extension}"))
    }

    /// The handset's key `which`, if pinned.
    pub fn pinned_key(
        &self,
        handset: &str,
        which: PinnedKey,
    ) -> Result<Option<[u8; 32]>, StateError> {
        read_key(&self.key_path(handset, which))
    }

    /// Pins the handset's key `which`.
    pub fn pin_key(
        &self,
        handset: &str,
        which: PinnedKey,
        key: &[u8; 32],
    ) -> Result<(), StateError> {
        write_private(&self.key_path(handset, which), key)
    }

    /// The handset's identity ([`PinnedKey::Identity`]), if paired.
    pub fn pinned(&self, handset: &str) -> Result<Option<[u8; 32]>, StateError> {
        self.pinned_key(handset, PinnedKey::Identity)
    }

    pub fn pin(&self, handset: &str, key: &[u8; 32]) -> Result<(), StateError> {
        self.pin_key(handset, PinnedKey::Identity, key)
    }

    /// The handset's attestation key ([`PinnedKey::Attestation`]).
    pub fn attestation_pinned(&self, handset: &str) -> Result<Option<[u8; 32]>, StateError> {
        self.pinned_key(handset, PinnedKey::Attestation)
    }

    pub fn pin_attestation(&self, handset: &str, key: &[u8; 32]) -> Result<(), StateError> {
        self.pin_key(handset, PinnedKey::Attestation, key)
    }

    /// Forgets the handset's keys: its identity and its attestation key.
    pub fn unpin(&self, handset: &str) -> Result<(), StateError> {
        // The attestation key first: an identity left behind still says
        // the handset is paired.
        let keys = [PinnedKey::Attestation, PinnedKey::Identity];
        for p in keys.map(|which| self.key_path(handset, which)) {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(&p)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_and_pins_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let a = State::open(d.path()).unwrap();
        let b = State::open(d.path()).unwrap();
        assert_eq!(a.identity().public(), b.identity().public());
        let mode = std::fs::metadata(d.path().join("host.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(a.pinned("phone").unwrap(), None);
        a.pin("phone", &[7; 32]).unwrap();
        assert_eq!(b.pinned("phone").unwrap(), Some([7; 32]));
        assert_eq!(a.attestation_pinned("phone").unwrap(), None);
        a.pin_attestation("phone", &[8; 32]).unwrap();
        assert_eq!(b.attestation_pinned("phone").unwrap(), Some([8; 32]));
        a.unpin("phone").unwrap();
        assert_eq!(a.pinned("phone").unwrap(), None);
        assert_eq!(a.attestation_pinned("phone").unwrap(), None);
        std::fs::write(d.path().join("handsets/x.pub"), b"short").unwrap();
        assert!(matches!(a.pinned("x"), Err(StateError::Corrupt { .. })));
    }

    #[test]
    fn open_existing_creates_nothing() {
        let d = tempfile::tempdir().unwrap();
        let empty = d.path().join("empty");
        assert!(matches!(
            State::open_existing(&empty),
            Err(StateError::NoIdentity { .. })
        ));
        assert!(!empty.exists());
        let a = State::open(d.path()).unwrap();
        a.pin("phone", &[9; 32]).unwrap();
        let b = State::open_existing(d.path()).unwrap();
        assert_eq!(a.identity().public(), b.identity().public());
        assert_eq!(b.pinned("phone").unwrap(), Some([9; 32]));
    }
}
