//! The handset's persistent state, all under one directory:
//!
//! - `identity.json`: the handset's name and Noise static private key;
//! - `hosts.json`: the paired computers, the containers each may use, and a
//!   pairing code on offer;
//! - `containers/<name>.json`: one container: PIN retry counter, policy,
//!   its RSA keys (PKCS#8 DER sealed with XChaCha20-Poly1305 under a key
//!   derived from the PIN with Argon2id) and certificates.
//!
//! A container's PIN settings, and each of its keys, carry an HMAC-SHA256
//! under a key derived from the handset's identity key, checked at every
//! load: damaged settings make the container fail to load before any PIN
//! is tried; a damaged key is marked ([`KeyHealth`]) and refused by name
//! ([`StoreError::KeyDamaged`]) while the container's other keys work.
//! docs/store.md describes the format and what each check covers.
//!
//! Every write is atomic (temporary file, fsync, rename, fsync of the
//! directory), so a crash leaves either the old or the new file. A file
//! that fails to load (truncated, not JSON, inconsistent) is reported as
//! [`StoreError::Corrupt`] and never written: a [`Container`] can only be
//! saved after it was created or loaded successfully.
//!
//! The retry counter is decremented and saved before a PIN is checked and
//! restored after a right one, so stopping the process mid-check still costs
//! the try. It protects against guessing through the handset; someone who can
//! write these files can reset it, and is then held back by Argon2id alone.
//! Neither PINs nor keys ever appear in an error message or a log.

use crate::crypto;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use phonecsp_protocol::{CkRv, StaticKeypair};
use rand::RngCore;
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use crypto::RsaPrivateKey;

/// Wrong PINs after which a container locks for good.
pub const MAX_PIN_TRIES: u32 = 5;
pub use phonecsp_protocol::limits::{
    MAX_CONTAINER_NAME_LEN as MAX_CONTAINER_NAME, MAX_DATA_OBJECT_LEN, MAX_DATA_OBJECTS,
    MAX_DER_LEN as MAX_CERT_LEN, MAX_ID_LEN, MAX_LABEL_LEN, MAX_NAME_LEN as MAX_NAME_CHARS,
    MAX_OBJECT_ID_LEN, MAX_PIN_LEN, MIN_PIN_LEN,
};
/// Largest store file read.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

const FILE_VERSION: u32 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const PIN_CHECK: &[u8] = b"phonecsp pin check";
const KEY_AAD_PREFIX: &[u8] = b"phonecsp key v1\0";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt or truncated store file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    Exists(String),
    #[error("invalid: {0}")]
    Invalid(String),
    /// PIN incorrect or locked, and other answers for the token.
    #[error("{0}")]
    Token(CkRv),
    /// One key of a container is damaged; the container and its other keys
    /// are not. Names the key by its id and label, which are public.
    #[error("container '{container}': key {id} ('{label}') is damaged: {damage}")]
    KeyDamaged {
        container: String,
        /// The key's CKA_ID in hex.
        id: String,
        /// The key's label, control characters escaped.
        label: String,
        damage: Damage,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// A description of a JSON error that does not repeat the file's content
/// (a misplaced value could be a secret).
fn json_reason(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.contains("invalid type")
        || msg.contains("invalid value")
        || msg.contains("unknown variant")
    {
        format!(
            "unexpected value at line {} column {}",
            e.line(),
            e.column()
        )
    } else {
        msg
    }
}

// ---------------------------------------------------------------- base64

mod b64 {
    use super::B64;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};
    use zeroize::Zeroizing;

    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(v.as_ref()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        B64.decode(s.as_bytes())
            .map_err(|_| D::Error::custom("malformed base64"))
    }

    pub mod array32 {
        use super::*;

        pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
            super::serialize(v, s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
            super::deserialize(d)?
                .try_into()
                .map_err(|_| D::Error::custom("expected 32 bytes"))
        }
    }

    /// A 32-byte secret; the decoded text is wiped too.
    pub mod secret32 {
        use super::*;

        pub fn serialize<S: Serializer>(v: &Zeroizing<[u8; 32]>, s: S) -> Result<S::Ok, S::Error> {
            let text = Zeroizing::new(B64.encode(v.as_ref()));
            s.serialize_str(&text)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Zeroizing<[u8; 32]>, D::Error> {
            let s = Zeroizing::new(String::deserialize(d)?);
            let bytes = Zeroizing::new(
                B64.decode(s.as_bytes())
                    .map_err(|_| D::Error::custom("malformed base64"))?,
            );
            let mut out = Zeroizing::new([0u8; 32]);
            if bytes.len() != 32 {
                return Err(D::Error::custom("expected 32 bytes"));
            }
            out.copy_from_slice(&bytes);
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------- files

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` atomically, mode 0600.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = tmp_path(path);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&tmp)(e)),
    }
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(&tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads a whole store file; `None` if it does not exist.
fn read_file(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut buf = Zeroizing::new(Vec::new());
    (&mut f)
        .take(MAX_FILE_LEN + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() as u64 > MAX_FILE_LEN {
        return Err(corrupt(path, "file too large"));
    }
    Ok(Some(buf))
}

/// What `stat` says of a store file, to tell whether it changed since it
/// was last read: every write is a rename of a new file, so its inode and
/// change time change with it, and its size and modification time most
/// likely too. Two of our writes that give the same device, inode, size
/// and nanosecond mtime and ctime are not a case worth a read per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// The stamp of `path`; `None` if it does not exist.
pub fn file_stamp(path: &Path) -> Result<Option<FileStamp>, StoreError> {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => Ok(Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// A container's version for the session announcement (docs/protocol.md
/// section 5.7): the first 8 bytes of BLAKE2s-256 over a label and the
/// container file as stored. Anything a host can read of the container
/// (objects, labels, certificates, PIN settings, retry counter, policy)
/// is in that file, so any change to it is a change of version; a
/// container deleted and made again under its name has a fresh serial
/// and salt, and so another version too.
fn container_version(bytes: &[u8]) -> u64 {
    use blake2::{Blake2s256, Digest};
    let mut h = Blake2s256::new();
    h.update(b"phonecsp container version v1");
    h.update(bytes);
    let d = h.finalize();
    let mut v = [0u8; 8];
    v.copy_from_slice(&d[..8]);
    u64::from_be_bytes(v)
}

fn parse<T: for<'de> Deserialize<'de>>(path: &Path, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| corrupt(path, json_reason(&e)))
}

fn to_json<T: Serialize>(v: &T) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    serde_json::to_vec_pretty(v)
        .map(Zeroizing::new)
        .map_err(|e| StoreError::Invalid(format!("cannot encode: {e}")))
}

// ---------------------------------------------------------------- names

/// Whether `name` is a valid container name: 1 to 32 of `[a-z0-9_-]`.
pub fn valid_container_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CONTAINER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_container_name(name: &str) -> Result<(), StoreError> {
    if valid_container_name(name) {
        Ok(())
    } else {
        Err(StoreError::Invalid(
            "a container name is 1 to 32 characters of a-z, 0-9, '_' and '-'".into(),
        ))
    }
}

fn valid_display_name(name: &str) -> bool {
    let n = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&n) && !name.chars().any(char::is_control)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- hosts

/// The paired computers and a pairing code on offer.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Hosts {
    pub hosts: Vec<HostEntry>,
    pub pairing: Option<PendingPairing>,
}

/// A paired computer: its pinned Noise static key and the containers it
/// may use.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct HostEntry {
    pub name: String,
    #[serde(with = "b64::array32")]
    pub public: [u8; 32],
    pub containers: Vec<String>,
}

/// A pairing code on offer: the PSK derived from it, the containers the
/// computer that uses it will be authorised for, and failed attempts.
#[derive(Clone, Serialize, Deserialize)]
pub struct PendingPairing {
    #[serde(with = "b64::secret32")]
    pub psk: Zeroizing<[u8; 32]>,
    pub authorise: Vec<String>,
    pub failures: u32,
}

impl std::fmt::Debug for PendingPairing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingPairing")
            .field("authorise", &self.authorise)
            .field("failures", &self.failures)
            .finish_non_exhaustive()
    }
}

impl PartialEq for PendingPairing {
    fn eq(&self, other: &Self) -> bool {
        bool::from(self.psk.ct_eq(&*other.psk))
            && self.authorise == other.authorise
            && self.failures == other.failures
    }
}

impl Hosts {
    /// Parses the contents of a hosts file (`path` only names it in
    /// errors): what [`Store::load_hosts`] does once it has read the file.
    /// Public for the `handset_store` fuzz target.
    pub fn parse_file(path: &Path, bytes: &[u8]) -> Result<Hosts, StoreError> {
        let file: HostsFile = parse(path, bytes)?;
        if file.version != FILE_VERSION {
            return Err(corrupt(path, format!("unknown version {}", file.version)));
        }
        file.hosts.validate().map_err(|r| corrupt(path, r))?;
        Ok(file.hosts)
    }

    /// The contents [`Store::save_hosts`] writes. Public for the
    /// `handset_store` fuzz target's round trip.
    pub fn to_file(&self) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        self.validate().map_err(StoreError::Invalid)?;
        to_json(&HostsFileRef {
            version: FILE_VERSION,
            hosts: self,
        })
    }

    /// The host with this static public key.
    pub fn find(&self, public: &[u8; 32]) -> Option<&HostEntry> {
        self.hosts.iter().find(|h| &h.public == public)
    }

    /// The index of the host named `s`, or else whose key fingerprint is
    /// `s` (as [`phonecsp_protocol::noise::fingerprint`] prints it; case and
    /// colons do not matter).
    pub fn find_by_name_or_fingerprint(&self, s: &str) -> Option<usize> {
        if let Some(i) = self.hosts.iter().position(|h| h.name == s) {
            return Some(i);
        }
        let want: String = s
            .chars()
            .filter(|c| *c != ':')
            .collect::<String>()
            .to_ascii_lowercase();
        if want.is_empty() {
            return None;
        }
        self.hosts
            .iter()
            .position(|h| phonecsp_protocol::noise::fingerprint(&h.public).replace(':', "") == want)
    }

    fn validate(&self) -> Result<(), String> {
        for (i, h) in self.hosts.iter().enumerate() {
            if !valid_display_name(&h.name) {
                return Err(format!("host {i}: invalid name"));
            }
            if self.hosts[..i].iter().any(|o| o.public == h.public) {
                return Err(format!("host {i}: key listed twice"));
            }
            if let Some(c) = h.containers.iter().find(|c| !valid_container_name(c)) {
                return Err(format!("host {i}: invalid container name {c:?}"));
            }
        }
        let mut pairing_names = self.pairing.iter().flat_map(|p| &p.authorise);
        if pairing_names.any(|c| !valid_container_name(c)) {
            return Err("pairing: invalid container name".into());
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct HostsFile {
    version: u32,
    #[serde(flatten)]
    hosts: Hosts,
}

#[derive(Serialize)]
struct HostsFileRef<'a> {
    version: u32,
    #[serde(flatten)]
    hosts: &'a Hosts,
}

// ---------------------------------------------------------------- identity

#[derive(Serialize, Deserialize)]
struct IdentityFile {
    version: u32,
    name: String,
    #[serde(with = "b64::secret32")]
    noise_private: Zeroizing<[u8; 32]>,
}

// ---------------------------------------------------------------- store

/// The handset's state directory.
pub struct Store {
    dir: PathBuf,
    name: String,
    identity: StaticKeypair,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn make_dir(path: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io_err(path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).map_err(io_err(path))
}

impl Store {
    const IDENTITY: &'static str = "identity.json";
    const HOSTS: &'static str = "hosts.json";
    const HOSTS_LOCK: &'static str = "hosts.lock";
    const CONTAINERS: &'static str = "containers";

    /// Creates a store in `dir` (made, mode 0700, if need be) with a fresh
    /// Noise identity and no hosts. `Exists` if it already has an identity.
    pub fn init(dir: &Path, name: &str) -> Result<Store, StoreError> {
        if !valid_display_name(name) {
            return Err(StoreError::Invalid(format!(
                "a handset name is 1 to {MAX_NAME_CHARS} characters, no control characters"
            )));
        }
        let identity_path = dir.join(Self::IDENTITY);
        if identity_path.exists() {
            return Err(StoreError::Exists(format!(
                "handset identity {}",
                identity_path.display()
            )));
        }
        make_dir(dir)?;
        make_dir(&dir.join(Self::CONTAINERS))?;
        let hosts_path = dir.join(Self::HOSTS);
        if !hosts_path.exists() {
            let empty = Hosts::default();
            write_atomic(
                &hosts_path,
                &to_json(&HostsFileRef {
                    version: FILE_VERSION,
                    hosts: &empty,
                })?,
            )?;
        }
        let identity = StaticKeypair::generate();
        let file = IdentityFile {
            version: FILE_VERSION,
            name: name.to_owned(),
            noise_private: Zeroizing::new(*identity.private()),
        };
        // Written last: a store without it is not initialised yet.
        write_atomic(&identity_path, &to_json(&file)?)?;
        Ok(Store {
            dir: dir.to_owned(),
            name: name.to_owned(),
            identity,
        })
    }

    /// Opens the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(Self::IDENTITY);
        let bytes = read_file(&path)?.ok_or_else(|| {
            StoreError::NotFound(format!(
                "handset identity {} (run `phonecsp-handset init` to create one)",
                path.display()
            ))
        })?;
        Self::from_identity_file(dir, &bytes)
    }

    /// The store in `dir` whose `identity.json` holds `bytes`: what
    /// [`Store::open`] does once it has read the file. Public for the
    /// `handset_store` fuzz target, which feeds it arbitrary bytes.
    pub fn from_identity_file(dir: &Path, bytes: &[u8]) -> Result<Store, StoreError> {
        let path = dir.join(Self::IDENTITY);
        let file: IdentityFile = parse(&path, bytes)?;
        if file.version != FILE_VERSION {
            return Err(corrupt(&path, format!("unknown version {}", file.version)));
        }
        if !valid_display_name(&file.name) {
            return Err(corrupt(&path, "invalid handset name"));
        }
        Ok(Store {
            dir: dir.to_owned(),
            name: file.name,
            identity: StaticKeypair::from_private(&file.noise_private),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The handset's name, shown to computers.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The handset's Noise static key pair.
    pub fn identity(&self) -> &StaticKeypair {
        &self.identity
    }

    fn hosts_path(&self) -> PathBuf {
        self.dir.join(Self::HOSTS)
    }

    fn containers_dir(&self) -> PathBuf {
        self.dir.join(Self::CONTAINERS)
    }

    fn container_path(&self, name: &str) -> PathBuf {
        self.containers_dir().join(format!("{name}.json"))
    }

    /// The paired hosts (none if `hosts.json` is missing).
    pub fn load_hosts(&self) -> Result<Hosts, StoreError> {
        let path = self.hosts_path();
        let Some(bytes) = read_file(&path)? else {
            return Ok(Hosts::default());
        };
        Hosts::parse_file(&path, &bytes)
    }

    pub fn save_hosts(&self, hosts: &Hosts) -> Result<(), StoreError> {
        write_atomic(&self.hosts_path(), &hosts.to_file()?)
    }

    /// Changes `hosts.json` as one step among every process that does so
    /// through here (`serve` pinning a host, the command line authorising
    /// or revoking one): reads it, lets `change` change it, and writes it
    /// back, all under an exclusive `flock(2)` on `hosts.lock`, so that two
    /// writers never both read the old file and the last one's write wins.
    /// Nothing is written if `change` fails.
    pub fn update_hosts<R>(
        &self,
        change: impl FnOnce(&mut Hosts) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let path = self.dir.join(Self::HOSTS_LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        lock.lock().map_err(io_err(&path))?;
        let mut hosts = self.load_hosts()?;
        let r = change(&mut hosts)?;
        self.save_hosts(&hosts)?;
        // Unlocked when `lock` is closed, after the rename.
        drop(lock);
        Ok(r)
    }

    /// The stamp of `hosts.json`, to tell whether it changed.
    pub fn hosts_stamp(&self) -> Result<Option<FileStamp>, StoreError> {
        file_stamp(&self.hosts_path())
    }

    /// The stamp of container `name`'s file, to tell whether it changed.
    pub fn container_stamp(&self, name: &str) -> Result<Option<FileStamp>, StoreError> {
        check_container_name(name)?;
        file_stamp(&self.container_path(name))
    }

    /// The containers' names, sorted (from the directory listing; none is
    /// loaded).
    pub fn container_names(&self) -> Result<Vec<String>, StoreError> {
        let dir = self.containers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err(&dir))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            match file_name.strip_suffix(".json") {
                Some(stem) if valid_container_name(stem) => names.push(stem.to_owned()),
                _ => {}
            }
        }
        names.sort();
        Ok(names)
    }

    /// Creates and saves an empty container protected by `pin`.
    pub fn create_container(
        &self,
        name: &str,
        pin: &[u8],
        policy: Policy,
        kdf: KdfParams,
    ) -> Result<Container, StoreError> {
        check_container_name(name)?;
        check_pin_len(pin)?;
        kdf.validate().map_err(StoreError::Invalid)?;
        let path = self.container_path(name);
        if path.exists() {
            return Err(StoreError::Exists(format!("container '{name}'")));
        }
        make_dir(&self.containers_dir())?;
        let mut serial = [0u8; 8];
        OsRng.fill_bytes(&mut serial);
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let kek = derive_kek(pin, &salt, &kdf)?;
        let pin_check = Sealed::seal(&kek, PIN_CHECK, name.as_bytes())?;
        let c = Container {
            version: FILE_VERSION,
            name: name.to_owned(),
            serial: hex(&serial),
            policy,
            retries_left: MAX_PIN_TRIES,
            kdf,
            salt,
            pin_check,
            pin_entry: PinEntry::Host,
            keys: Vec::new(),
            certs: Vec::new(),
            data: Vec::new(),
            integrity: None,
        };
        self.save_container(&c)?;
        Ok(c)
    }

    /// Loads a container. A file that does not load is `Corrupt`.
    pub fn load_container(&self, name: &str) -> Result<Container, StoreError> {
        self.load_container_versioned(name).map(|(c, _)| c)
    }

    /// Loads a container with its version (see [`container_version`]).
    pub fn load_container_versioned(&self, name: &str) -> Result<(Container, u64), StoreError> {
        check_container_name(name)?;
        let path = self.container_path(name);
        let bytes =
            read_file(&path)?.ok_or_else(|| StoreError::NotFound(format!("container '{name}'")))?;
        let c = self.parse_container_file(name, &bytes)?;
        Ok((c, container_version(&bytes)))
    }

    /// Parses the contents of container `name`'s file: what
    /// [`Store::load_container`] does once it has read it. Public for the
    /// `handset_store` fuzz target, which feeds it arbitrary bytes.
    pub fn parse_container_file(&self, name: &str, bytes: &[u8]) -> Result<Container, StoreError> {
        check_container_name(name)?;
        let path = self.container_path(name);
        let mut c: Container = parse(&path, bytes)?;
        c.validate(name).map_err(|r| corrupt(&path, r))?;
        let key = self.integrity_key()?;
        // Checked before any PIN is: a damaged salt or KDF setting would
        // otherwise make the right PIN read as wrong and spend a try.
        if let Some(mac) = &c.integrity
            && !macs_match(mac, &c.settings_mac(&key)?)
        {
            return Err(corrupt(
                &path,
                format!(
                    "container '{name}' is damaged: its PIN settings (KDF, salt, PIN check, \
                     retry counter) fail their integrity check; no PIN was tried"
                ),
            ));
        }
        // Each key on its own: a damaged one is marked, and the container
        // and its other keys load. A key without a check is not damaged for
        // that; it is checked at the next right PIN (Container::unlock).
        for k in &mut c.keys {
            k.health = match (&k.damaged, &k.integrity) {
                (Some(d), _) => KeyHealth::Damaged(*d),
                (None, None) => KeyHealth::Unchecked,
                (None, Some(mac)) if macs_match(mac, &k.mac(name, &key)?) => KeyHealth::Sound,
                (None, Some(_)) => KeyHealth::Damaged(Damage::Integrity),
            };
            if k.health != KeyHealth::Damaged(Damage::Integrity) && k.wrapped.decode().is_none() {
                k.health = KeyHealth::Damaged(Damage::Malformed);
            }
        }
        Ok(c)
    }

    /// Saves a container (atomically), with its integrity checks: one over
    /// the PIN settings, and one over each key this handset sealed or
    /// opened, or found whole. A key not checked yet is written without
    /// one, and a damaged key as it was read.
    pub fn save_container(&self, c: &Container) -> Result<(), StoreError> {
        write_atomic(&self.container_path(&c.name), &self.container_file(c)?)
    }

    /// The contents [`Store::save_container`] writes, with the integrity
    /// check. Public for the `handset_store` fuzz target's round trip.
    pub fn container_file(&self, c: &Container) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        check_container_name(&c.name)?;
        let key = self.integrity_key()?;
        let mut sealed = c.clone();
        sealed.integrity = Some(c.settings_mac(&key)?);
        for k in &mut sealed.keys {
            match k.health {
                KeyHealth::Sound => {
                    k.integrity = Some(k.mac(&c.name, &key)?);
                    k.damaged = None;
                }
                KeyHealth::Unchecked
                | KeyHealth::Damaged(Damage::Integrity | Damage::Malformed) => {}
                KeyHealth::Damaged(d @ (Damage::Unwrap | Damage::Mismatch)) => k.damaged = Some(d),
            }
        }
        to_json(&sealed)
    }

    /// The key of the containers' integrity checks, derived from the
    /// handset's private identity key: a file copied from elsewhere, or
    /// damaged, does not pass.
    fn integrity_key(&self) -> Result<Zeroizing<[u8; 32]>, StoreError> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.identity.private())
            .map_err(|_| StoreError::Invalid("integrity key".into()))?;
        mac.update(b"phonecsp container integrity v1");
        Ok(Zeroizing::new(mac.finalize().into_bytes().into()))
    }

    /// Deletes a container and every host's authorisation for it. The
    /// authorisations go first: a crash in between leaves a container no
    /// host may use, never an authorisation for a later container of the
    /// same name.
    pub fn delete_container(&self, name: &str) -> Result<(), StoreError> {
        check_container_name(name)?;
        let path = self.container_path(name);
        if !path.exists() {
            return Err(StoreError::NotFound(format!("container '{name}'")));
        }
        let mut hosts = self.load_hosts()?;
        let before = hosts.clone();
        for h in &mut hosts.hosts {
            h.containers.retain(|c| c != name);
        }
        if let Some(p) = &mut hosts.pairing {
            p.authorise.retain(|c| c != name);
        }
        if hosts != before {
            self.save_hosts(&hosts)?;
        }
        fs::remove_file(&path).map_err(io_err(&path))?;
        sync_dir(&self.containers_dir())
    }
}

// ---------------------------------------------------------------- containers

/// Whether a container's key operations need a person's approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Auto,
    Confirm,
}

/// Where the container's PIN is typed: on the computer (it crosses the
/// link inside the session), or on the phone itself (a protected
/// authentication path: the computer logs in with an empty PIN and the
/// owner types it here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinEntry {
    #[default]
    Host,
    Handset,
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
pub struct KdfParams {
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl KdfParams {
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 65536,
        t: 3,
        p: 1,
    };
    /// Cheap parameters for tests only.
    pub const FAST_FOR_TESTS: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };
    /// Most memory a store may ask for (4 GiB).
    pub const MAX_M_KIB: u32 = 4 * 1024 * 1024;
    pub const MAX_T: u32 = 1000;
    pub const MAX_P: u32 = 64;

    fn validate(&self) -> Result<(), String> {
        if !(1..=Self::MAX_P).contains(&self.p) {
            return Err(format!("KDF lanes must be 1 to {}", Self::MAX_P));
        }
        if !(1..=Self::MAX_T).contains(&self.t) {
            return Err(format!("KDF passes must be 1 to {}", Self::MAX_T));
        }
        if self.m_kib < 8 * self.p || self.m_kib > Self::MAX_M_KIB {
            return Err(format!(
                "KDF memory must be 8 KiB per lane to {} KiB",
                Self::MAX_M_KIB
            ));
        }
        Ok(())
    }
}

fn check_pin_len(pin: &[u8]) -> Result<(), StoreError> {
    if (MIN_PIN_LEN..=MAX_PIN_LEN).contains(&pin.len()) {
        Ok(())
    } else {
        Err(StoreError::Token(CkRv::PIN_LEN_RANGE))
    }
}

/// A container's key-encrypting key, derived from its PIN. Wiped on drop.
pub struct Kek(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

fn derive_kek(pin: &[u8], salt: &[u8], kdf: &KdfParams) -> Result<Kek, StoreError> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|_| StoreError::Token(CkRv::DEVICE_ERROR))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pin, salt, out.as_mut())
        .map_err(|_| StoreError::Token(CkRv::DEVICE_ERROR))?;
    Ok(Kek(out))
}

/// An XChaCha20-Poly1305 ciphertext and its nonce.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Sealed {
    #[serde(with = "b64")]
    nonce: Vec<u8>,
    #[serde(with = "b64")]
    ct: Vec<u8>,
}

impl Sealed {
    fn seal(kek: &Kek, msg: &[u8], aad: &[u8]) -> Result<Sealed, StoreError> {
        let mut nonce = vec![0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(kek.0.as_ref().into());
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
            .map_err(|_| StoreError::Token(CkRv::DEVICE_ERROR))?;
        Ok(Sealed { nonce, ct })
    }

    /// The plaintext, or `None` if the key or the data is wrong.
    fn open(&self, kek: &Kek, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if self.nonce.len() != NONCE_LEN {
            return None;
        }
        let cipher = XChaCha20Poly1305::new(kek.0.as_ref().into());
        cipher
            .decrypt(
                XNonce::from_slice(&self.nonce),
                Payload { msg: &self.ct, aad },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// A wrapped private key as the file holds it: the base64 text of its
/// nonce and ciphertext, kept as read. Decoded when used, so that a
/// damaged one makes that key damaged, not the whole container unreadable,
/// and is written back unchanged.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredSealed {
    nonce: String,
    ct: String,
}

impl StoredSealed {
    fn new(s: &Sealed) -> StoredSealed {
        use base64::Engine as _;
        StoredSealed {
            nonce: B64.encode(&s.nonce),
            ct: B64.encode(&s.ct),
        }
    }

    /// The nonce and ciphertext, if they decode and have the lengths a
    /// wrapped key has.
    fn decode(&self) -> Option<Sealed> {
        use base64::Engine as _;
        let nonce = B64.decode(self.nonce.as_bytes()).ok()?;
        let ct = B64.decode(self.ct.as_bytes()).ok()?;
        (nonce.len() == NONCE_LEN && ct.len() > TAG_LEN).then_some(Sealed { nonce, ct })
    }
}

/// What is wrong with a damaged key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Damage {
    /// Its entry fails its integrity check (found without the PIN).
    Integrity,
    /// Its wrapped private key is not base64 of a nonce and a ciphertext
    /// (found without the PIN).
    Malformed,
    /// Its wrapped private key fails its AEAD check under the right PIN.
    Unwrap,
    /// Unwrapped, it is not an RSA private key, or not the one whose
    /// public key is stored with it.
    Mismatch,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Damage::Integrity => {
                "its stored entry (public key, label or wrapped private key) fails its integrity check"
            }
            Damage::Malformed => "its wrapped private key is malformed in the store file",
            Damage::Unwrap => {
                "its wrapped private key fails its authentication check under the right PIN"
            }
            Damage::Mismatch => {
                "its unwrapped private key does not match the public key stored with it"
            }
        })
    }
}

/// What this handset knows of a key's stored form.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyHealth {
    /// Its integrity check passed, or this handset sealed or opened it.
    Sound,
    /// Written before keys had integrity checks: it gets one at the next
    /// right PIN, once its wrapped private key has opened.
    #[default]
    Unchecked,
    Damaged(Damage),
}

/// An RSA key pair in a container: public parts in the clear, the private
/// key sealed under the container's key-encrypting key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyEntry {
    #[serde(with = "b64")]
    pub id: Vec<u8>,
    pub label: String,
    pub bits: u32,
    #[serde(with = "b64")]
    pub modulus: Vec<u8>,
    #[serde(with = "b64")]
    pub exponent: Vec<u8>,
    wrapped: StoredSealed,
    /// HMAC-SHA256 of the entry ([`KeyEntry::mac`]) under the handset's
    /// integrity key. Absent in files written before it existed, and for a
    /// key not yet opened with the right PIN since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    integrity: Option<String>,
    /// Set when the right PIN found the key damaged (it had no integrity
    /// check then), so that it is still reported without the PIN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    damaged: Option<Damage>,
    #[serde(skip)]
    health: KeyHealth,
}

impl KeyEntry {
    pub fn health(&self) -> KeyHealth {
        self.health
    }

    /// HMAC-SHA256 (hex) of everything the file holds of this key, as the
    /// file holds it, bound to its container's name. The tuple starts with
    /// a string, [`Container::settings_mac`]'s with a number: the two never
    /// cover the same bytes.
    fn mac(&self, container: &str, key: &[u8; 32]) -> Result<String, StoreError> {
        let covered = (
            "phonecsp key integrity v1",
            container,
            hex(&self.id),
            &self.label,
            self.bits,
            hex(&self.modulus),
            hex(&self.exponent),
            &self.wrapped,
        );
        hmac_hex(key, &covered)
    }

    /// Opens the wrapped private key and checks it against the public parts.
    fn open(&self, container: &str, kek: &Kek) -> Result<RsaPrivateKey, Damage> {
        let sealed = self.wrapped.decode().ok_or(Damage::Malformed)?;
        let der = sealed
            .open(kek, &key_aad(container, &self.id))
            .ok_or(Damage::Unwrap)?;
        let key = crypto::from_pkcs8_der(&der).map_err(|_| Damage::Mismatch)?;
        // The public parts are stored in the clear: they must be this key's.
        if key.n().to_bytes_be() != self.modulus || key.e().to_bytes_be() != self.exponent {
            return Err(Damage::Mismatch);
        }
        Ok(key)
    }

    fn damaged(&self, container: &str, damage: Damage) -> StoreError {
        StoreError::KeyDamaged {
            container: container.to_owned(),
            id: hex(&self.id),
            label: self.label.escape_debug().to_string(),
            damage,
        }
    }
}

/// HMAC-SHA256, in hex, of `covered` encoded as JSON.
fn hmac_hex<T: Serialize>(key: &[u8; 32], covered: &T) -> Result<String, StoreError> {
    use hmac::{Hmac, Mac};
    let bytes = serde_json::to_vec(covered)
        .map_err(|e| StoreError::Invalid(format!("cannot encode: {e}")))?;
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key)
        .map_err(|_| StoreError::Invalid("integrity key".into()))?;
    mac.update(&bytes);
    Ok(hex(&mac.finalize().into_bytes()))
}

fn macs_match(stored: &str, computed: &str) -> bool {
    bool::from(stored.as_bytes().ct_eq(computed.as_bytes()))
}

/// An X.509 certificate in a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CertEntry {
    #[serde(with = "b64")]
    pub id: Vec<u8>,
    pub label: String,
    #[serde(with = "b64")]
    pub der: Vec<u8>,
}

/// A data object (`CKO_DATA`) in a container: an application's bytes,
/// public like a certificate (readable without the PIN).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DataEntry {
    #[serde(with = "b64")]
    pub id: Vec<u8>,
    pub label: String,
    pub application: String,
    #[serde(with = "b64")]
    pub oid: Vec<u8>,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
}

impl From<phonecsp_protocol::message::DataObject> for DataEntry {
    fn from(o: phonecsp_protocol::message::DataObject) -> DataEntry {
        let phonecsp_protocol::message::DataObject {
            id,
            label,
            application,
            oid,
            value,
        } = o;
        DataEntry {
            id,
            label,
            application,
            oid,
            value,
        }
    }
}

/// A container: what one PIN protects.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Container {
    version: u32,
    name: String,
    serial: String,
    policy: Policy,
    retries_left: u32,
    kdf: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
    pin_check: Sealed,
    /// Absent in files written before it existed: the PIN came from the host.
    #[serde(default)]
    pin_entry: PinEntry,
    keys: Vec<KeyEntry>,
    certs: Vec<CertEntry>,
    /// Absent in files written before data objects existed.
    #[serde(default)]
    data: Vec<DataEntry>,
    /// HMAC-SHA256 of the fields that decide how a PIN is checked
    /// ([`Container::settings_mac`]), under a key only this handset has.
    /// Absent in files written before it existed; set at the next save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    integrity: Option<String>,
}

impl Container {
    /// HMAC-SHA256 (hex) of everything that decides how a PIN is checked:
    /// the name, the KDF and its salt, the PIN check, the retry counter,
    /// the policy and where the PIN is entered. Keys are not covered: each
    /// has its own ([`KeyEntry::mac`]), so that a damaged key leaves the
    /// container and its other keys usable.
    fn settings_mac(&self, key: &[u8; 32]) -> Result<String, StoreError> {
        let covered = (
            self.version,
            &self.name,
            &self.serial,
            &self.policy,
            self.retries_left,
            &self.kdf,
            hex(&self.salt),
            &self.pin_check,
            &self.pin_entry,
        );
        hmac_hex(key, &covered)
    }
}

fn key_aad(container: &str, id: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(KEY_AAD_PREFIX.len() + container.len() + 1 + id.len());
    aad.extend_from_slice(KEY_AAD_PREFIX);
    aad.extend_from_slice(container.as_bytes());
    aad.push(0);
    aad.extend_from_slice(id);
    aad
}

fn check_id_label(id: &[u8], label: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(StoreError::Invalid(format!(
            "an object id is 1 to {MAX_ID_LEN} bytes"
        )));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(StoreError::Invalid(format!(
            "a label is at most {MAX_LABEL_LEN} bytes"
        )));
    }
    Ok(())
}

impl Container {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// 16 hex digits chosen at creation (`CK_TOKEN_INFO.serialNumber`).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Changes the policy (in memory; save the container).
    pub fn set_policy(&mut self, p: Policy) {
        self.policy = p;
    }

    pub fn pin_entry(&self) -> PinEntry {
        self.pin_entry
    }

    /// Changes where the PIN is typed (in memory; save the container).
    pub fn set_pin_entry(&mut self, p: PinEntry) {
        self.pin_entry = p;
    }

    pub fn kdf(&self) -> KdfParams {
        self.kdf
    }

    pub fn retries_left(&self) -> u32 {
        self.retries_left
    }

    pub fn is_locked(&self) -> bool {
        self.retries_left == 0
    }

    pub fn keys(&self) -> &[KeyEntry] {
        &self.keys
    }

    pub fn certs(&self) -> &[CertEntry] {
        &self.certs
    }

    pub fn data(&self) -> &[DataEntry] {
        &self.data
    }

    pub fn key(&self, id: &[u8]) -> Option<&KeyEntry> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn cert(&self, id: &[u8]) -> Option<&CertEntry> {
        self.certs.iter().find(|c| c.id == id)
    }

    fn validate(&self, file_name: &str) -> Result<(), String> {
        if self.version != FILE_VERSION {
            return Err(format!("unknown version {}", self.version));
        }
        if self.name != file_name {
            return Err("container name does not match the file name".into());
        }
        if self.serial.len() != 16 || !self.serial.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("invalid serial".into());
        }
        if self.retries_left > MAX_PIN_TRIES {
            return Err("invalid PIN retry counter".into());
        }
        self.kdf.validate()?;
        if self.salt.len() != SALT_LEN {
            return Err("invalid salt".into());
        }
        if self.pin_check.nonce.len() != NONCE_LEN
            || self.pin_check.ct.len() != PIN_CHECK.len() + TAG_LEN
        {
            return Err("invalid PIN check".into());
        }
        for (i, k) in self.keys.iter().enumerate() {
            if k.id.is_empty() || k.id.len() > MAX_ID_LEN {
                return Err(format!("key {i}: invalid id"));
            }
            if self.keys[..i].iter().any(|o| o.id == k.id) {
                return Err(format!("key {i}: id used twice"));
            }
            let bits = rsa::BigUint::from_bytes_be(&k.modulus).bits();
            if k.modulus.first() == Some(&0)
                || bits != k.bits as usize
                || !(crypto::MIN_KEY_BITS..=crypto::MAX_KEY_BITS).contains(&bits)
            {
                return Err(format!("key {i}: invalid modulus"));
            }
            if k.exponent.is_empty() || k.exponent.len() > 8 {
                return Err(format!("key {i}: invalid exponent"));
            }
        }
        for (i, c) in self.certs.iter().enumerate() {
            if c.id.is_empty() || c.id.len() > MAX_ID_LEN {
                return Err(format!("certificate {i}: invalid id"));
            }
            if self.certs[..i].iter().any(|o| o.id == c.id) {
                return Err(format!("certificate {i}: id used twice"));
            }
            if c.der.is_empty() || c.der.len() > MAX_CERT_LEN {
                return Err(format!("certificate {i}: invalid length"));
            }
        }
        if self.data.len() > MAX_DATA_OBJECTS {
            return Err("too many data objects".into());
        }
        for (i, d) in self.data.iter().enumerate() {
            if d.id.is_empty() || d.id.len() > MAX_ID_LEN {
                return Err(format!("data object {i}: invalid id"));
            }
            if self.data[..i].iter().any(|o| o.id == d.id) {
                return Err(format!("data object {i}: id used twice"));
            }
            if d.value.len() > MAX_DATA_OBJECT_LEN
                || d.oid.len() > MAX_OBJECT_ID_LEN
                || d.application.len() > MAX_LABEL_LEN
            {
                return Err(format!("data object {i}: invalid length"));
            }
        }
        Ok(())
    }

    /// Whether `kek` is this container's current key-encrypting key.
    fn kek_matches(&self, kek: &Kek) -> bool {
        self.pin_check
            .open(kek, self.name.as_bytes())
            .is_some_and(|p| bool::from(p.as_slice().ct_eq(PIN_CHECK)))
    }

    /// Checks the PIN and returns the key-encrypting key.
    ///
    /// The retry counter is decremented and saved before the check, and
    /// reset to [`MAX_PIN_TRIES`] (and saved) after a right PIN. A wrong PIN
    /// gives `Token(PIN_INCORRECT)`, or `Token(PIN_LOCKED)` once no try is
    /// left; a locked container answers `PIN_LOCKED` without a check.
    pub fn unlock(&mut self, store: &Store, pin: &[u8]) -> Result<Kek, StoreError> {
        if self.retries_left == 0 {
            return Err(StoreError::Token(CkRv::PIN_LOCKED));
        }
        let before = self.retries_left;
        self.retries_left = before - 1;
        if let Err(e) = store.save_container(self) {
            self.retries_left = before;
            return Err(e);
        }
        let kek = derive_kek(pin, &self.salt, &self.kdf)?;
        if self.kek_matches(&kek) {
            self.check_unchecked_keys(&kek);
            self.retries_left = MAX_PIN_TRIES;
            store.save_container(self)?;
            Ok(kek)
        } else if self.retries_left == 0 {
            log::warn!("container '{}': wrong PIN; now locked", self.name);
            Err(StoreError::Token(CkRv::PIN_LOCKED))
        } else {
            log::info!(
                "container '{}': wrong PIN; {} tries left",
                self.name,
                self.retries_left
            );
            Err(StoreError::Token(CkRv::PIN_INCORRECT))
        }
    }

    /// Opens, with the right PIN's key, each key written before keys had
    /// integrity checks: one that opens is sound (and gets its check at
    /// the next save), one that does not is damaged (and is saved so). The
    /// PIN was right either way.
    fn check_unchecked_keys(&mut self, kek: &Kek) {
        let mut checked = 0;
        for k in &mut self.keys {
            if k.health != KeyHealth::Unchecked {
                continue;
            }
            match k.open(&self.name, kek) {
                Ok(_) => {
                    k.health = KeyHealth::Sound;
                    checked += 1;
                }
                Err(d) => {
                    k.health = KeyHealth::Damaged(d);
                    log::error!("{}", k.damaged(&self.name, d));
                }
            }
        }
        if checked > 0 {
            log::info!(
                "container '{}': {checked} key(s) written before integrity checks opened with \
                 the right PIN and now carry one",
                self.name
            );
        }
    }

    /// Changes the PIN: every key is re-wrapped under a key derived from
    /// the new PIN with a new salt, and the container saved in one atomic
    /// write. A wrong old PIN counts as a try, as in [`Container::unlock`].
    /// A damaged key is kept as it is (it stays damaged, and reported).
    pub fn change_pin(&mut self, store: &Store, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        check_pin_len(new)?;
        let old_kek = self.unlock(store, old)?;
        let mut next = self.clone();
        OsRng.fill_bytes(&mut next.salt);
        let new_kek = derive_kek(new, &next.salt, &next.kdf)?;
        next.pin_check = Sealed::seal(&new_kek, PIN_CHECK, next.name.as_bytes())?;
        for k in &mut next.keys {
            if let KeyHealth::Damaged(d) = k.health {
                log::warn!(
                    "{}; it is kept as it is under the new PIN",
                    k.damaged(&self.name, d)
                );
                continue;
            }
            let aad = key_aad(&self.name, &k.id);
            let Some(der) = k.wrapped.decode().and_then(|s| s.open(&old_kek, &aad)) else {
                k.health = KeyHealth::Damaged(Damage::Unwrap);
                log::error!("{}", k.damaged(&self.name, Damage::Unwrap));
                continue;
            };
            k.wrapped = StoredSealed::new(&Sealed::seal(&new_kek, &der, &aad)?);
            k.health = KeyHealth::Sound;
        }
        next.retries_left = MAX_PIN_TRIES;
        store.save_container(&next)?;
        *self = next;
        Ok(())
    }

    /// Adds a key pair, its private key sealed under `kek` (in memory;
    /// save the container). `Exists` if a key has this id.
    pub fn add_key(
        &mut self,
        kek: &Kek,
        id: Vec<u8>,
        label: String,
        key: &RsaPrivateKey,
    ) -> Result<(), StoreError> {
        check_id_label(&id, &label)?;
        if self.key(&id).is_some() {
            return Err(StoreError::Exists(format!("key {}", hex(&id))));
        }
        // A stale key (the PIN changed since) would seal a key no PIN opens.
        if !self.kek_matches(kek) {
            return Err(StoreError::Token(CkRv::USER_NOT_LOGGED_IN));
        }
        let (modulus, exponent, bits) = crypto::public_parts(key);
        if !(crypto::MIN_KEY_BITS..=crypto::MAX_KEY_BITS).contains(&(bits as usize)) {
            return Err(StoreError::Token(CkRv::KEY_SIZE_RANGE));
        }
        let der = crypto::to_pkcs8_der(key).map_err(StoreError::Token)?;
        let wrapped = Sealed::seal(kek, &der, &key_aad(&self.name, &id))?;
        self.keys.push(KeyEntry {
            id,
            label,
            bits,
            modulus,
            exponent,
            wrapped: StoredSealed::new(&wrapped),
            integrity: None,
            damaged: None,
            health: KeyHealth::Sound,
        });
        Ok(())
    }

    /// `KeyDamaged` if the key with this id is known to be damaged without
    /// a PIN (its entry failed its integrity check at load, or an earlier
    /// right PIN found it damaged); `Ok` for any other id.
    pub fn check_key(&self, id: &[u8]) -> Result<(), StoreError> {
        match self.key(id) {
            Some(k) => match k.health {
                KeyHealth::Damaged(d) => Err(k.damaged(&self.name, d)),
                KeyHealth::Sound | KeyHealth::Unchecked => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Unseals the private key with this id. A stale `kek` is
    /// `USER_NOT_LOGGED_IN`; a key that is damaged, or that does not open
    /// under the right key, is `KeyDamaged`, naming it.
    pub fn private_key(&self, kek: &Kek, id: &[u8]) -> Result<RsaPrivateKey, StoreError> {
        let entry = self
            .key(id)
            .ok_or_else(|| StoreError::NotFound(format!("key {}", hex(id))))?;
        if !self.kek_matches(kek) {
            return Err(StoreError::Token(CkRv::USER_NOT_LOGGED_IN));
        }
        self.check_key(id)?;
        entry
            .open(&self.name, kek)
            .map_err(|d| entry.damaged(&self.name, d))
    }

    /// Removes a key pair (in memory; save the container).
    pub fn remove_key(&mut self, id: &[u8]) -> Result<(), StoreError> {
        remove_by_id(&mut self.keys, id, "key", |k| &k.id)
    }

    /// Stores a certificate, replacing one with the same id (in memory; save
    /// the container). The DER must parse as X.509.
    pub fn put_cert(&mut self, id: Vec<u8>, label: String, der: Vec<u8>) -> Result<(), StoreError> {
        check_id_label(&id, &label)?;
        if der.len() > MAX_CERT_LEN {
            return Err(StoreError::Invalid(format!(
                "a certificate is at most {MAX_CERT_LEN} bytes"
            )));
        }
        crypto::cert_fields(&der).map_err(StoreError::Token)?;
        let entry = CertEntry { id, label, der };
        match self.certs.iter_mut().find(|c| c.id == entry.id) {
            Some(c) => *c = entry,
            None => self.certs.push(entry),
        }
        Ok(())
    }

    /// Removes a certificate (in memory; save the container).
    pub fn remove_cert(&mut self, id: &[u8]) -> Result<(), StoreError> {
        remove_by_id(&mut self.certs, id, "certificate", |c| &c.id)
    }

    /// Stores a data object, replacing one with the same id (in memory;
    /// save the container), within the limits `protocol::limits` sets.
    pub fn put_data(&mut self, entry: DataEntry) -> Result<(), StoreError> {
        check_id_label(&entry.id, &entry.label)?;
        if entry.application.len() > MAX_LABEL_LEN
            || entry.oid.len() > MAX_OBJECT_ID_LEN
            || entry.value.len() > MAX_DATA_OBJECT_LEN
        {
            return Err(StoreError::Invalid(format!(
                "a data object's value is at most {MAX_DATA_OBJECT_LEN} bytes"
            )));
        }
        let full = self.data.len() >= MAX_DATA_OBJECTS;
        match self.data.iter_mut().find(|d| d.id == entry.id) {
            Some(d) => *d = entry,
            None if full => {
                return Err(StoreError::Invalid(format!(
                    "a container holds at most {MAX_DATA_OBJECTS} data objects"
                )));
            }
            None => self.data.push(entry),
        }
        Ok(())
    }

    /// Removes a data object (in memory; save the container).
    pub fn remove_data(&mut self, id: &[u8]) -> Result<(), StoreError> {
        remove_by_id(&mut self.data, id, "data object", |d| &d.id)
    }
}

fn remove_by_id<T>(
    list: &mut Vec<T>,
    id: &[u8],
    what: &str,
    id_of: impl Fn(&T) -> &Vec<u8>,
) -> Result<(), StoreError> {
    let i = list
        .iter()
        .position(|x| id_of(x) == id)
        .ok_or_else(|| StoreError::NotFound(format!("{what} {}", hex(id))))?;
    list.remove(i);
    Ok(())
}

/// Containers for tests: `ssh` with keys 01 ("ssh key") and 02
/// ("other"), and `web` with key 01, both saved; `ssh` gets `ssh_policy`.
#[cfg(test)]
pub(crate) fn test_containers(store: &Store, pin: &[u8], ssh_policy: Policy) {
    for (name, ids) in [("ssh", &[1u8, 2][..]), ("web", &[1u8][..])] {
        let mut c = store
            .create_container(name, pin, Policy::Auto, KdfParams::FAST_FOR_TESTS)
            .unwrap();
        let kek = c.unlock(store, pin).unwrap();
        for id in ids {
            let label = if *id == 1 { "ssh key" } else { "other" };
            c.add_key(&kek, vec![*id], label.into(), crate::crypto::test_key())
                .unwrap();
        }
        if name == "ssh" {
            c.set_policy(ssh_policy);
        }
        store.save_container(&c).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::test_key;
    use base64::Engine as _;
    use rsa::traits::PrivateKeyParts;

    const PIN: &[u8] = b"1234";
    const FAST: KdfParams = KdfParams::FAST_FOR_TESTS;

    fn new_store() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("handset");
        let store = Store::init(&dir, "test phone").unwrap();
        (tmp, store)
    }

    fn token(e: StoreError) -> CkRv {
        match e {
            StoreError::Token(rv) => rv,
            other => panic!("expected a token error, got {other}"),
        }
    }

    /// The CK_RV a refused store operation gives.
    fn refused<T: std::fmt::Debug>(r: Result<T, StoreError>) -> CkRv {
        token(r.unwrap_err())
    }

    /// A new store with one container `name` (PIN [`PIN`], auto policy).
    fn store_with(name: &str) -> (tempfile::TempDir, Store, Container) {
        let (tmp, store) = new_store();
        let c = store
            .create_container(name, PIN, Policy::Auto, FAST)
            .unwrap();
        (tmp, store, c)
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_then_open() {
        let (_tmp, store) = new_store();
        assert_eq!(mode(store.dir()), 0o700);
        assert_eq!(mode(&store.dir().join("identity.json")), 0o600);
        let again = Store::open(store.dir()).unwrap();
        assert_eq!(again.name(), "test phone");
        assert_eq!(again.identity().public(), store.identity().public());
        assert_eq!(again.load_hosts().unwrap(), Hosts::default());
        assert!(matches!(
            Store::init(store.dir(), "other"),
            Err(StoreError::Exists(_))
        ));
        let missing = tempfile::tempdir().unwrap();
        match Store::open(missing.path()) {
            Err(StoreError::NotFound(m)) => assert!(m.contains("init"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            Store::init(&missing.path().join("x"), ""),
            Err(StoreError::Invalid(_))
        ));
    }

    #[test]
    fn create_add_key_and_unwrap() {
        let (_tmp, store) = new_store();
        let mut c = store
            .create_container("ssh", PIN, Policy::Confirm, FAST)
            .unwrap();
        assert_eq!(c.serial().len(), 16);
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        assert!(matches!(
            store.create_container("ssh", PIN, Policy::Auto, FAST),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(
            refused(store.create_container("short", b"123", Policy::Auto, FAST)),
            CkRv::PIN_LEN_RANGE
        );
        assert!(matches!(
            store.create_container("Bad/Name", PIN, Policy::Auto, FAST),
            Err(StoreError::Invalid(_))
        ));
        let kek = c.unlock(&store, PIN).unwrap();
        c.add_key(&kek, b"k1".to_vec(), "my key".into(), test_key())
            .unwrap();
        assert!(matches!(
            c.add_key(&kek, b"k1".to_vec(), "dup".into(), test_key()),
            Err(StoreError::Exists(_))
        ));
        store.save_container(&c).unwrap();
        assert_eq!(mode(&store.dir().join("containers/ssh.json")), 0o600);

        let store = Store::open(store.dir()).unwrap();
        assert_eq!(store.container_names().unwrap(), vec!["ssh".to_string()]);
        let mut c = store.load_container("ssh").unwrap();
        assert_eq!(c.policy(), Policy::Confirm);
        assert_eq!(c.keys().len(), 1);
        assert_eq!(c.keys()[0].bits, 2048);
        assert_eq!(c.keys()[0].label, "my key");
        let kek = c.unlock(&store, PIN).unwrap();
        let key = c.private_key(&kek, b"k1").unwrap();
        assert_eq!(key.n(), test_key().n());
        assert!(matches!(
            c.private_key(&kek, b"nope"),
            Err(StoreError::NotFound(_))
        ));
        // The file holds no private key material in the clear.
        let text = fs::read_to_string(store.dir().join("containers/ssh.json")).unwrap();
        let der = crypto::to_pkcs8_der(test_key()).unwrap();
        assert!(!text.contains(&B64.encode(&der[..])));
        c.remove_key(b"k1").unwrap();
        assert!(c.keys().is_empty());
        assert!(matches!(c.remove_key(b"k1"), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn key_sealed_under_another_container_does_not_open() {
        let (_tmp, store) = new_store();
        let mut a = store
            .create_container("a", PIN, Policy::Auto, FAST)
            .unwrap();
        let mut b = store
            .create_container("b", PIN, Policy::Auto, FAST)
            .unwrap();
        let kek_a = a.unlock(&store, PIN).unwrap();
        let kek_b = b.unlock(&store, PIN).unwrap();
        a.add_key(&kek_a, b"k".to_vec(), String::new(), test_key())
            .unwrap();
        assert_eq!(
            refused(a.private_key(&kek_b, b"k")),
            CkRv::USER_NOT_LOGGED_IN
        );
        assert_eq!(
            refused(b.add_key(&kek_a, b"k".to_vec(), String::new(), test_key())),
            CkRv::USER_NOT_LOGGED_IN
        );
        // Moving the sealed key to another id breaks its AAD.
        a.keys[0].id = b"other".to_vec();
        assert!(matches!(
            a.private_key(&kek_a, b"other"),
            Err(StoreError::KeyDamaged {
                damage: Damage::Unwrap,
                ..
            })
        ));
    }

    /// A damaged salt made the right PIN read as wrong and spent a try
    /// each time (issue 18). The PIN settings are checked first now: the
    /// container is reported damaged, and no try is spent.
    #[test]
    fn damaged_pin_settings_are_reported_and_spend_no_try() {
        let (_tmp, store, c) = store_with("disk");
        store.save_container(&c).unwrap();
        let path = store.dir().join("containers").join("disk.json");
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            f(&mut v);
            fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        };
        let salt = |v: &serde_json::Value| B64.decode(v["salt"].as_str().unwrap()).unwrap();
        let sealed = fs::read(&path).unwrap();
        edit(&|v| {
            let mut flipped = salt(v);
            flipped[0] ^= 1;
            v["salt"] = B64.encode(flipped).into();
        });
        for _ in 0..MAX_PIN_TRIES + 1 {
            let e = store.load_container("disk").unwrap_err();
            assert!(e.to_string().contains("is damaged"), "{e}");
        }
        // Put back, the file is whole, and not one try was spent.
        fs::write(&path, &sealed).unwrap();
        let mut c = store.load_container("disk").unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        c.unlock(&store, PIN).unwrap();
        // A file written before the check existed loads, and gets the check
        // at its next save.
        edit(&|v| {
            v.as_object_mut().unwrap().remove("integrity");
        });
        let c = store.load_container("disk").unwrap();
        store.save_container(&c).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert!(written["integrity"].is_string());
    }

    #[test]
    fn wrong_pin_is_counted_and_persisted() {
        let (_tmp, store, mut c) = store_with("disk");
        assert_eq!(refused(c.unlock(&store, b"0000")), CkRv::PIN_INCORRECT);
        assert_eq!(c.retries_left(), MAX_PIN_TRIES - 1);

        let store = Store::open(store.dir()).unwrap();
        let mut c = store.load_container("disk").unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES - 1);
        assert_eq!(refused(c.unlock(&store, b"9999")), CkRv::PIN_INCORRECT);
        let c2 = store.load_container("disk").unwrap();
        assert_eq!(c2.retries_left(), MAX_PIN_TRIES - 2);
        // A right PIN resets the counter, on disk too.
        c.unlock(&store, PIN).unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        assert_eq!(
            store.load_container("disk").unwrap().retries_left(),
            MAX_PIN_TRIES
        );
    }

    #[test]
    fn five_wrong_pins_lock_for_good() {
        let (_tmp, store, mut c) = store_with("web");
        for i in 1..MAX_PIN_TRIES {
            assert_eq!(
                refused(c.unlock(&store, b"wrong")),
                CkRv::PIN_INCORRECT,
                "try {i}"
            );
        }
        assert_eq!(refused(c.unlock(&store, b"wrong")), CkRv::PIN_LOCKED);
        assert!(c.is_locked());
        assert_eq!(refused(c.unlock(&store, PIN)), CkRv::PIN_LOCKED);

        let store = Store::open(store.dir()).unwrap();
        let mut c = store.load_container("web").unwrap();
        assert!(c.is_locked());
        assert_eq!(refused(c.unlock(&store, PIN)), CkRv::PIN_LOCKED);
        assert_eq!(
            refused(c.change_pin(&store, PIN, b"5678")),
            CkRv::PIN_LOCKED
        );
    }

    #[test]
    fn change_pin_rewraps() {
        let (_tmp, store, mut c) = store_with("ssh");
        let kek = c.unlock(&store, PIN).unwrap();
        c.add_key(&kek, vec![1], "k".into(), test_key()).unwrap();
        store.save_container(&c).unwrap();
        let salt_before = c.salt.clone();

        assert_eq!(
            refused(c.change_pin(&store, PIN, b"12")),
            CkRv::PIN_LEN_RANGE
        );
        assert_eq!(
            refused(c.change_pin(&store, b"bad!", b"5678")),
            CkRv::PIN_INCORRECT
        );
        assert_eq!(
            store.load_container("ssh").unwrap().retries_left(),
            MAX_PIN_TRIES - 1
        );
        c.change_pin(&store, PIN, b"new pin").unwrap();
        assert_ne!(c.salt, salt_before);
        // The old key-encrypting key is stale now.
        assert_eq!(refused(c.private_key(&kek, &[1])), CkRv::USER_NOT_LOGGED_IN);

        let store = Store::open(store.dir()).unwrap();
        let mut c = store.load_container("ssh").unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        assert_eq!(refused(c.unlock(&store, PIN)), CkRv::PIN_INCORRECT);
        let kek = c.unlock(&store, b"new pin").unwrap();
        assert_eq!(c.private_key(&kek, &[1]).unwrap().d(), test_key().d());
    }

    #[test]
    fn corrupt_files_are_reported_and_left_alone() {
        let (_tmp, store, mut c) = store_with("ssh");
        let kek = c.unlock(&store, PIN).unwrap();
        c.add_key(&kek, vec![1], "k".into(), test_key()).unwrap();
        store.save_container(&c).unwrap();
        let path = store.dir().join("containers/ssh.json");
        let full = fs::read(&path).unwrap();

        // Truncated to half.
        fs::write(&path, &full[..full.len() / 2]).unwrap();
        let before = fs::read(&path).unwrap();
        match store.load_container("ssh") {
            Err(StoreError::Corrupt { path: p, .. }) => assert_eq!(p, path),
            other => panic!("{other:?}"),
        }
        let msg = store.load_container("ssh").unwrap_err().to_string();
        assert!(msg.contains("containers/ssh.json"), "{msg}");
        assert_eq!(fs::read(&path).unwrap(), before);
        // Other operations do not touch it either.
        assert!(matches!(
            store.create_container("ssh", PIN, Policy::Auto, FAST),
            Err(StoreError::Exists(_))
        ));
        assert_eq!(fs::read(&path).unwrap(), before);

        // Garbage.
        fs::write(&path, b"\x00\x01not json at all").unwrap();
        assert!(matches!(
            store.load_container("ssh"),
            Err(StoreError::Corrupt { .. })
        ));
        // Valid JSON that fails validation.
        let mut v: serde_json::Value = serde_json::from_slice(&full).unwrap();
        v["retries_left"] = serde_json::json!(99);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            store.load_container("ssh"),
            Err(StoreError::Corrupt { .. })
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&full).unwrap();
        v["kdf"]["m_kib"] = serde_json::json!(4);
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            store.load_container("ssh"),
            Err(StoreError::Corrupt { .. })
        ));
        let mut v: serde_json::Value = serde_json::from_slice(&full).unwrap();
        v["name"] = serde_json::json!("other");
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(matches!(
            store.load_container("ssh"),
            Err(StoreError::Corrupt { .. })
        ));

        // Corrupt identity and hosts files too.
        let hosts = store.dir().join("hosts.json");
        fs::write(&hosts, b"{\"version\":1,\"hosts\":[").unwrap();
        assert!(matches!(
            store.load_hosts(),
            Err(StoreError::Corrupt { .. })
        ));
        let id = store.dir().join("identity.json");
        let id_bytes = fs::read(&id).unwrap();
        fs::write(&id, &id_bytes[..id_bytes.len() / 2]).unwrap();
        assert!(matches!(
            Store::open(store.dir()),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn atomic_writes_leave_no_temporary_files() {
        let (_tmp, store, mut c) = store_with("ssh");
        let _ = c.unlock(&store, b"nope");
        c.set_policy(Policy::Confirm);
        store.save_container(&c).unwrap();
        store.save_hosts(&Hosts::default()).unwrap();
        // A stale temporary file from a crash is replaced, not appended to.
        fs::write(store.dir().join("hosts.json.tmp"), b"junk").unwrap();
        store.save_hosts(&Hosts::default()).unwrap();
        for dir in [store.dir().to_owned(), store.dir().join("containers")] {
            for entry in fs::read_dir(&dir).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                assert!(!name.ends_with(".tmp"), "{name} left behind");
            }
        }
        assert_eq!(
            store.load_container("ssh").unwrap().policy(),
            Policy::Confirm
        );
    }

    #[test]
    fn hosts_round_trip_and_delete_removes_authorisations() {
        let (_tmp, store) = new_store();
        store
            .create_container("ssh", PIN, Policy::Auto, FAST)
            .unwrap();
        store
            .create_container("disk", PIN, Policy::Auto, FAST)
            .unwrap();
        let laptop = StaticKeypair::generate();
        let desktop = StaticKeypair::generate();
        let hosts = Hosts {
            hosts: vec![
                HostEntry {
                    name: "laptop".into(),
                    public: *laptop.public(),
                    containers: vec!["ssh".into(), "disk".into()],
                },
                HostEntry {
                    name: "desktop".into(),
                    public: *desktop.public(),
                    containers: vec!["disk".into()],
                },
            ],
            pairing: Some(PendingPairing {
                psk: Zeroizing::new([0xa7u8; 32]),
                authorise: vec!["disk".into(), "ssh".into()],
                failures: 1,
            }),
        };
        store.save_hosts(&hosts).unwrap();
        assert_eq!(mode(&store.dir().join("hosts.json")), 0o600);
        let loaded = store.load_hosts().unwrap();
        assert_eq!(loaded, hosts);
        assert_eq!(loaded.find(desktop.public()).unwrap().name, "desktop");
        assert_eq!(loaded.find_by_name_or_fingerprint("desktop"), Some(1));
        let fp = phonecsp_protocol::noise::fingerprint(laptop.public());
        assert_eq!(loaded.find_by_name_or_fingerprint(&fp), Some(0));
        assert_eq!(
            loaded.find_by_name_or_fingerprint(&fp.replace(':', "").to_uppercase()),
            Some(0)
        );
        assert_eq!(loaded.find_by_name_or_fingerprint("nobody"), None);
        // The PSK is not printed.
        let debug = format!("{loaded:?}");
        assert!(!debug.contains("psk") && !debug.contains("167, 167, 167, 167"));

        assert_eq!(
            store.container_names().unwrap(),
            vec!["disk".to_string(), "ssh".to_string()]
        );
        store.delete_container("disk").unwrap();
        assert!(matches!(
            store.delete_container("disk"),
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(store.container_names().unwrap(), vec!["ssh".to_string()]);
        let after = store.load_hosts().unwrap();
        assert_eq!(after.hosts[0].containers, vec!["ssh".to_string()]);
        assert!(after.hosts[1].containers.is_empty());
        assert_eq!(
            after.pairing.as_ref().unwrap().authorise,
            vec!["ssh".to_string()]
        );
        assert!(matches!(
            store.load_container("disk"),
            Err(StoreError::NotFound(_))
        ));
    }

    #[test]
    fn certificates_are_validated_and_replaced() {
        let (_tmp, store, mut c) = store_with("web");
        assert_eq!(
            refused(c.put_cert(vec![1], "c".into(), b"not a cert".to_vec())),
            CkRv::ATTRIBUTE_VALUE_INVALID
        );
        let der = crypto::tests_support::self_signed(test_key());
        c.put_cert(vec![1], "first".into(), der.clone()).unwrap();
        c.put_cert(vec![1], "second".into(), der.clone()).unwrap();
        assert_eq!(c.certs().len(), 1);
        assert_eq!(c.certs()[0].label, "second");
        store.save_container(&c).unwrap();
        let mut c = store.load_container("web").unwrap();
        assert_eq!(c.cert(&[1]).unwrap().der, der);
        c.remove_cert(&[1]).unwrap();
        assert!(matches!(c.remove_cert(&[1]), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn data_objects_are_kept_within_the_limits() {
        let (_tmp, store, mut c) = store_with("web");
        let entry = |id: u8, value: Vec<u8>| DataEntry {
            id: vec![id],
            label: "prefs".into(),
            application: "mail".into(),
            oid: vec![6, 1, 1],
            value,
        };
        assert!(matches!(
            c.put_data(entry(1, vec![0; MAX_DATA_OBJECT_LEN + 1])),
            Err(StoreError::Invalid(_))
        ));
        c.put_data(entry(1, b"first".to_vec())).unwrap();
        c.put_data(entry(1, b"second".to_vec())).unwrap();
        assert_eq!(c.data().len(), 1);
        for id in 2..=MAX_DATA_OBJECTS as u8 {
            c.put_data(entry(id, vec![])).unwrap();
        }
        assert!(matches!(
            c.put_data(entry(200, vec![])),
            Err(StoreError::Invalid(_))
        ));
        store.save_container(&c).unwrap();
        let mut c = store.load_container("web").unwrap();
        assert_eq!(c.data()[0].value, b"second");
        assert_eq!(c.data().len(), MAX_DATA_OBJECTS);
        c.remove_data(&[1]).unwrap();
        assert!(matches!(c.remove_data(&[1]), Err(StoreError::NotFound(_))));
    }

    /// A container `ssh` with keys 01 ("ssh key") and 02 ("other"), saved,
    /// and a container `web` with key 01, saved.
    fn two_keys() -> (tempfile::TempDir, Store) {
        let (tmp, store) = new_store();
        super::test_containers(&store, PIN, Policy::Auto);
        (tmp, store)
    }

    /// Edits the JSON of container `name`'s file.
    fn edit(store: &Store, name: &str, f: impl FnOnce(&mut serde_json::Value)) {
        let path = store.dir().join("containers").join(format!("{name}.json"));
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        f(&mut v);
        fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    }

    /// Flips one bit of the decoded `field` ("ct" or "nonce") of the first
    /// key's wrapped private key.
    fn flip_wrapped(v: &mut serde_json::Value, field: &str) {
        let text = v["keys"][0]["wrapped"][field].as_str().unwrap();
        let mut bytes = B64.decode(text).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x10;
        v["keys"][0]["wrapped"][field] = B64.encode(bytes).into();
    }

    fn damage_of(r: Result<impl std::fmt::Debug, StoreError>) -> (Damage, String) {
        match r {
            Err(e @ StoreError::KeyDamaged { damage, .. }) => (damage, e.to_string()),
            other => panic!("expected a damaged key, got {other:?}"),
        }
    }

    /// Issue 18, item 1: a flipped byte in a wrapped key (ciphertext, nonce,
    /// or the file's text of it) is found without the PIN, by its integrity
    /// check, and reported naming the key; the right PIN still counts as
    /// right, and the other key and the other container work.
    #[test]
    fn a_damaged_wrapped_key_is_found_without_the_pin_and_named() {
        for how in ["ct", "nonce", "text"] {
            let (_tmp, store) = two_keys();
            let path = store.dir().join("containers/ssh.json");
            edit(&store, "ssh", |v| match how {
                "text" => {
                    let ct = v["keys"][0]["wrapped"]["ct"].as_str().unwrap();
                    v["keys"][0]["wrapped"]["ct"] = format!("!{}", &ct[1..]).into();
                }
                field => flip_wrapped(v, field),
            });
            let damaged = fs::read(&path).unwrap();
            let mut c = store.load_container("ssh").unwrap();
            // The check covers the file's text, so all three are found by it.
            let want = Damage::Integrity;
            assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(want), "{how}");
            assert_eq!(c.keys()[1].health(), KeyHealth::Sound, "{how}");
            let (_, msg) = damage_of(c.check_key(&[1]));
            assert!(
                msg.starts_with("container 'ssh': key 01 ('ssh key') is damaged: "),
                "{msg}"
            );
            assert!(msg.contains("integrity check"), "{msg}");
            c.check_key(&[2]).unwrap();
            c.check_key(&[9]).unwrap();

            // The right PIN is right, and spends no try.
            let kek = c.unlock(&store, PIN).unwrap();
            assert_eq!(c.retries_left(), MAX_PIN_TRIES);
            assert_eq!(damage_of(c.private_key(&kek, &[1])).0, Damage::Integrity);
            assert_eq!(c.private_key(&kek, &[2]).unwrap().d(), test_key().d());
            let mut web = store.load_container("web").unwrap();
            let kek = web.unlock(&store, PIN).unwrap();
            web.private_key(&kek, &[1]).unwrap();

            // Saved again (the login saved it), the damaged key is written
            // back as it was read, and still found.
            let after: serde_json::Value =
                serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
            let before: serde_json::Value = serde_json::from_slice(&damaged).unwrap();
            assert_eq!(after["keys"][0], before["keys"][0], "{how}");
            let c = store.load_container("ssh").unwrap();
            assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(want));
        }
    }

    /// Without its integrity check (as a file from before it existed), a
    /// wrapped key whose text no longer decodes is damaged, and the
    /// container still loads.
    #[test]
    fn a_malformed_wrapped_key_damages_that_key_only() {
        let (_tmp, store) = two_keys();
        edit(&store, "ssh", |v| {
            let k = v["keys"][0].as_object_mut().unwrap();
            k.remove("integrity");
            let ct = k["wrapped"]["ct"].as_str().unwrap().to_owned();
            k["wrapped"]["ct"] = format!("!{}", &ct[1..]).into();
            v["keys"][1]["wrapped"]["nonce"] = "AAAA".into();
            v["keys"][1].as_object_mut().unwrap().remove("integrity");
        });
        let c = store.load_container("ssh").unwrap();
        assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(Damage::Malformed));
        assert_eq!(c.keys()[1].health(), KeyHealth::Damaged(Damage::Malformed));
        let (_, msg) = damage_of(c.check_key(&[1]));
        assert!(
            msg.contains("key 01 ('ssh key') is damaged: its wrapped private key is malformed"),
            "{msg}"
        );
    }

    /// A key written before keys had integrity checks is not damaged for
    /// lacking one. With the right PIN its unwrapping is what tells: a
    /// damaged one fails its AEAD check and is reported naming it, with
    /// the PIN counted as right; a whole one gets its check. A wrong PIN
    /// checks nothing and writes no check.
    #[test]
    fn keys_from_before_integrity_checks_are_checked_at_the_right_pin() {
        let (_tmp, store) = two_keys();
        let path = store.dir().join("containers/ssh.json");
        edit(&store, "ssh", |v| {
            v.as_object_mut().unwrap().remove("integrity");
            for k in v["keys"].as_array_mut().unwrap() {
                k.as_object_mut().unwrap().remove("integrity");
            }
            flip_wrapped(v, "ct");
        });
        let stored = |i: usize| -> serde_json::Value {
            serde_json::from_slice::<serde_json::Value>(&fs::read(&path).unwrap()).unwrap()["keys"]
                [i]
                .clone()
        };
        let c = store.load_container("ssh").unwrap();
        for k in c.keys() {
            assert_eq!(k.health(), KeyHealth::Unchecked);
        }
        c.check_key(&[1]).unwrap();

        // A session that logged in before the damage: the AEAD check fails
        // under the right key, and names the key.
        let mut other = store.load_container("ssh").unwrap();
        assert_eq!(refused(other.unlock(&store, b"9999")), CkRv::PIN_INCORRECT);
        assert!(stored(1).get("integrity").is_none());
        assert_eq!(
            store.load_container("ssh").unwrap().keys()[1].health(),
            KeyHealth::Unchecked
        );
        let kek = other.unlock(&store, PIN).unwrap();
        let (damage, msg) = damage_of(c.private_key(&kek, &[1]));
        assert_eq!(damage, Damage::Unwrap);
        assert_eq!(
            msg,
            "container 'ssh': key 01 ('ssh key') is damaged: its wrapped private key fails its \
             authentication check under the right PIN"
        );
        c.private_key(&kek, &[2]).unwrap();

        // The right PIN counted as right, found the damage and kept it; the
        // whole key got its check.
        assert_eq!(other.retries_left(), MAX_PIN_TRIES);
        assert_eq!(other.keys()[0].health(), KeyHealth::Damaged(Damage::Unwrap));
        assert_eq!(other.keys()[1].health(), KeyHealth::Sound);
        assert_eq!(stored(0)["damaged"], "unwrap");
        assert!(stored(0).get("integrity").is_none());
        assert!(stored(1)["integrity"].is_string());
        let c = store.load_container("ssh").unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(Damage::Unwrap));
        assert_eq!(c.keys()[1].health(), KeyHealth::Sound);
        assert_eq!(damage_of(c.check_key(&[1])).0, Damage::Unwrap);
    }

    /// Changing the PIN re-wraps the whole keys and keeps a damaged one as
    /// it is, still reported.
    #[test]
    fn change_pin_keeps_a_damaged_key_damaged_and_rewraps_the_others() {
        let (_tmp, store) = two_keys();
        edit(&store, "ssh", |v| flip_wrapped(v, "ct"));
        let mut c = store.load_container("ssh").unwrap();
        c.change_pin(&store, PIN, b"new pin").unwrap();
        let mut c = store.load_container("ssh").unwrap();
        assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(Damage::Integrity));
        let kek = c.unlock(&store, b"new pin").unwrap();
        assert_eq!(damage_of(c.private_key(&kek, &[1])).0, Damage::Integrity);
        c.private_key(&kek, &[2]).unwrap();
    }

    /// The checks are under a key only this handset has: an entry copied
    /// from another handset's store, whole, is damaged here.
    #[test]
    fn a_key_entry_from_another_handset_fails_its_check() {
        let (_tmp, store) = two_keys();
        let (_tmp2, elsewhere) = two_keys();
        let theirs: serde_json::Value =
            serde_json::from_slice(&fs::read(elsewhere.dir().join("containers/ssh.json")).unwrap())
                .unwrap();
        edit(&store, "ssh", |v| v["keys"][1] = theirs["keys"][1].clone());
        let c = store.load_container("ssh").unwrap();
        assert_eq!(c.keys()[0].health(), KeyHealth::Sound);
        assert_eq!(c.keys()[1].health(), KeyHealth::Damaged(Damage::Integrity));
    }
}
