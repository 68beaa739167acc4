//! The handset's persistent state, all under one directory:
//!
//! - `identity.json`: the handset's name and Noise static private key;
//! - `hosts.json`: the paired computers, the containers each may use, and a
//!   pairing code on offer;
//! - `containers/<name>.json`: one container: PIN retry counter, policy,
//!   its RSA keys (PKCS#8 DER sealed with XChaCha20-Poly1305 under a random
//!   container key, itself sealed under a key derived from the PIN with
//!   Argon2id and, separately, under one derived from the PUK) and
//!   certificates. A file of version 1 (keys sealed under the PIN's key
//!   itself) loads, and is moved to the container key at the next right PIN.
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
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub use crate::ec::EcPrivateKey;
pub use crypto::RsaPrivateKey;
use phonecsp_protocol::ck::Curve;

/// A key pair's private half, unsealed for one operation.
#[derive(Debug)]
pub enum PrivateKey {
    Rsa(RsaPrivateKey),
    Ec(EcPrivateKey),
}

/// The public half of an EC key, as the store file keeps it beside the
/// sealed private key: the curve by name and the public point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcPublic {
    /// `p256`, `p384` or `ed25519`.
    pub curve: String,
    /// SEC1 uncompressed (`04 || X || Y`), or Ed25519's 32 bytes.
    #[serde(with = "b64")]
    pub point: Vec<u8>,
}

impl EcPublic {
    pub fn curve(&self) -> Option<Curve> {
        Curve::from_name(&self.curve).filter(|c| c.name() == self.curve)
    }
}

/// Wrong PINs after which a container locks (until its PUK unblocks it).
pub const MAX_PIN_TRIES: u32 = 5;
/// Wrong PUKs after which a container's PUK locks, for good.
pub const MAX_PUK_TRIES: u32 = 10;
/// The shortest PUK: it is all that stands between a stolen phone's
/// locked container and its keys once the PIN's tries are spent.
pub const MIN_PUK_LEN: usize = 8;
/// Digits in a PUK the handset makes up.
const GENERATED_PUK_LEN: usize = 12;
/// How long a computer's login to a container outlives its link, unless
/// the owner sets otherwise (`container set-grace`; docs/store.md).
pub const DEFAULT_GRACE_SECS: u32 = 300;
/// The longest grace period the owner may set: a day.
pub const MAX_GRACE_SECS: u32 = 24 * 60 * 60;
pub use phonecsp_protocol::limits::{
    MAX_CONTAINER_NAME_LEN as MAX_CONTAINER_NAME, MAX_DATA_OBJECT_LEN, MAX_DATA_OBJECTS,
    MAX_DER_LEN as MAX_CERT_LEN, MAX_ID_LEN, MAX_LABEL_LEN, MAX_NAME_LEN as MAX_NAME_CHARS,
    MAX_OBJECT_ID_LEN, MAX_PIN_LEN, MIN_PIN_LEN,
};
/// Largest store file read.
const MAX_FILE_LEN: u64 = 16 * 1024 * 1024;

const FILE_VERSION: u32 = 1;
/// A container whose keys are sealed under a container key (version 1:
/// under the PIN's key itself).
const CONTAINER_VERSION: u32 = 2;
const CONTAINER_KEY_AAD_PREFIX: &[u8] = b"phonecsp container key v2\0";
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
/// section 5.9): the first 8 bytes of BLAKE2s-256 over a label and the
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
    /// The digits of a short code on offer too (docs/protocol.md section
    /// 5.8): kept as they are, since the PAKE needs them; the file is the
    /// owner's alone (0600) and the offer is used up by the pairing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_code: Option<ShortDigits>,
}

/// A short code's digits, wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct ShortDigits(pub Zeroizing<String>);

impl Serialize for ShortDigits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ShortDigits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ShortDigits, D::Error> {
        Ok(ShortDigits(Zeroizing::new(String::deserialize(d)?)))
    }
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
            && self.short_code == other.short_code
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
        let short = self.pairing.as_ref().and_then(|p| p.short_code.as_ref());
        if short.is_some_and(|d| phonecsp_protocol::pake::ShortCode::parse(&d.0).is_err()) {
            return Err("pairing: a short code is eight digits".into());
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

/// Each object's id among its `kind` is 1 to `MAX_ID_LEN` bytes and
/// used once: the computer names an object by its kind and id.
fn check_ids<'a>(kind: &str, ids: impl Iterator<Item = &'a Vec<u8>>) -> Result<(), String> {
    let ids: Vec<&Vec<u8>> = ids.collect();
    for (i, id) in ids.iter().enumerate() {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(format!("{kind} {i}: invalid id"));
        }
        if ids[..i].contains(id) {
            return Err(format!("{kind} {i}: id used twice"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- store

/// The handset's state directory. Its identity shows only its public
/// key's fingerprint when printed.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    name: String,
    identity: StaticKeypair,
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

    /// Creates and saves an empty container protected by `pin`, without a
    /// PUK (see [`Store::create_container_with_puk`]).
    pub fn create_container(
        &self,
        name: &str,
        pin: &[u8],
        policy: Policy,
        kdf: KdfParams,
    ) -> Result<Container, StoreError> {
        self.create_container_with_puk(name, pin, None, policy, kdf)
    }

    /// Creates and saves an empty container: a fresh random container key,
    /// sealed under the key derived from `pin` and, if given, under the one
    /// derived from `puk` (both with the container's Argon2id cost).
    pub fn create_container_with_puk(
        &self,
        name: &str,
        pin: &[u8],
        puk: Option<&[u8]>,
        policy: Policy,
        kdf: KdfParams,
    ) -> Result<Container, StoreError> {
        check_container_name(name)?;
        check_pin_len(pin)?;
        if let Some(puk) = puk {
            check_puk(puk)?;
        }
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
        let pin_kek = derive_kek(pin, &salt, &kdf)?;
        let ck = Key32::random();
        let wrapped_key = Sealed::seal(&pin_kek, ck.bytes(), &container_key_aad("pin", name))?;
        let mut c = Container {
            version: CONTAINER_VERSION,
            name: name.to_owned(),
            serial: hex(&serial),
            policy,
            retries_left: MAX_PIN_TRIES,
            kdf,
            salt,
            pin_check: None,
            wrapped_key: Some(wrapped_key),
            puk: None,
            pin_entry: PinEntry::Host,
            keys: Vec::new(),
            certs: Vec::new(),
            data: Vec::new(),
            grace_secs: None,
            integrity: None,
        };
        if let Some(puk) = puk {
            c.puk = Some(PukSettings::seal(&c.name, &c.kdf, &ck, puk)?);
        }
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

    /// The handset's Ed25519 attestation key (docs/attestation.md), derived
    /// from its private identity key as the integrity key is: nothing new
    /// to keep, the same key after every restart, and a new one with a new
    /// identity (`init` again), which computers must pair with anew anyway.
    pub fn attestation_key(&self) -> Result<ed25519_dalek::SigningKey, StoreError> {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.identity.private())
            .map_err(|_| StoreError::Invalid("attestation key".into()))?;
        mac.update(b"phonecsp attestation key v1");
        let seed = Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()));
        Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
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
        self.update_hosts(|hosts| {
            for h in &mut hosts.hosts {
                h.containers.retain(|c| c != name);
            }
            if let Some(p) = &mut hosts.pairing {
                p.authorise.retain(|c| c != name);
            }
            Ok(())
        })?;
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

/// Whether `puk` can be a PUK: digits only (`PIN_INVALID` otherwise), at
/// least [`MIN_PUK_LEN`] and at most [`MAX_PIN_LEN`] of them
/// (`PIN_LEN_RANGE`). Checked before a try is spent.
pub fn check_puk(puk: &[u8]) -> Result<(), StoreError> {
    if !(MIN_PUK_LEN..=MAX_PIN_LEN).contains(&puk.len()) {
        return Err(StoreError::Token(CkRv::PIN_LEN_RANGE));
    }
    if !puk.iter().all(u8::is_ascii_digit) {
        return Err(StoreError::Token(CkRv::PIN_INVALID));
    }
    Ok(())
}

/// A fresh PUK of [`GENERATED_PUK_LEN`] random digits (about 40 bits:
/// with Argon2id and ten tries, far out of a thief's reach).
pub fn generate_puk() -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(GENERATED_PUK_LEN));
    while out.len() < GENERATED_PUK_LEN {
        let mut b = Zeroizing::new([0u8; 1]);
        OsRng.fill_bytes(b.as_mut());
        // 250 is a multiple of 10: no digit is likelier than another.
        if b[0] < 250 {
            out.push(b'0' + b[0] % 10);
        }
    }
    out
}

/// A 32-byte symmetric key (a PIN's or PUK's derived key, or a container
/// key). Wiped on drop.
#[derive(Clone)]
struct Key32(Zeroizing<[u8; 32]>);

impl Key32 {
    fn random() -> Key32 {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(k.as_mut());
        Key32(k)
    }

    fn from_slice(b: &[u8]) -> Option<Key32> {
        let mut k = Zeroizing::new([0u8; 32]);
        (b.len() == 32).then(|| {
            k.copy_from_slice(b);
            Key32(k)
        })
    }

    fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Which secret opened a session's container key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The PIN: the user, who uses the keys.
    User,
    /// The PUK: the security officer, who may set a new PIN or PUK.
    So,
}

/// What a login holds: the container's key, opened with the PIN (a user's
/// login) or the PUK (a security officer's), and the nonce of the sealed
/// copy it was opened from, so that a new PIN or PUK (sealed afresh, with a
/// new nonce) makes the logins made before it stale. Wiped on drop.
#[derive(Clone)]
pub struct Kek {
    key: Key32,
    from: [u8; NONCE_LEN],
    role: Role,
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kek(..)")
    }
}

impl Kek {
    fn opened(key: Key32, from: &Sealed, role: Role) -> Option<Kek> {
        Some(Kek {
            key,
            from: from.nonce.as_slice().try_into().ok()?,
            role,
        })
    }

    /// Whether this is a security officer's login (opened with the PUK).
    pub fn is_so(&self) -> bool {
        self.role == Role::So
    }
}

fn derive_kek(pin: &[u8], salt: &[u8], kdf: &KdfParams) -> Result<Key32, StoreError> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|_| StoreError::Token(CkRv::DEVICE_ERROR))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(pin, salt, out.as_mut())
        .map_err(|_| StoreError::Token(CkRv::DEVICE_ERROR))?;
    Ok(Key32(out))
}

/// The associated data of the container key sealed under `what` ("pin" or
/// "puk"): neither copy can stand in for the other, nor for another
/// container's.
fn container_key_aad(what: &str, container: &str) -> Vec<u8> {
    let mut aad = CONTAINER_KEY_AAD_PREFIX.to_vec();
    aad.extend_from_slice(what.as_bytes());
    aad.push(0);
    aad.extend_from_slice(container.as_bytes());
    aad
}

/// A container's PUK: its own retry counter and salt, and the container
/// key sealed under the key Argon2id derives from the PUK.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PukSettings {
    retries_left: u32,
    kdf: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
    wrapped_key: Sealed,
}

impl PukSettings {
    /// `ck` sealed under `puk`'s key, with a fresh salt and every try left.
    fn seal(container: &str, kdf: &KdfParams, ck: &Key32, puk: &[u8]) -> Result<Self, StoreError> {
        check_puk(puk)?;
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let kek = derive_kek(puk, &salt, kdf)?;
        Ok(PukSettings {
            retries_left: MAX_PUK_TRIES,
            kdf: *kdf,
            wrapped_key: Sealed::seal(&kek, ck.bytes(), &container_key_aad("puk", container))?,
            salt,
        })
    }

    fn validate(&self) -> Result<(), String> {
        if self.retries_left > MAX_PUK_TRIES {
            return Err("invalid PUK retry counter".into());
        }
        self.kdf.validate()?;
        if self.salt.len() != SALT_LEN {
            return Err("invalid PUK salt".into());
        }
        if !self.wrapped_key.is_sealed_key() {
            return Err("invalid PUK-sealed container key".into());
        }
        Ok(())
    }
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
    fn seal(kek: &Key32, msg: &[u8], aad: &[u8]) -> Result<Sealed, StoreError> {
        let mut nonce = vec![0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(kek.0.as_ref().into());
        let ct = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
            .map_err(|_| StoreError::Token(CkRv::DEVICE_ERROR))?;
        Ok(Sealed { nonce, ct })
    }

    /// The plaintext, or `None` if the key or the data is wrong.
    fn open(&self, kek: &Key32, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
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

    /// Whether this has the lengths of a sealed 32-byte key.
    fn is_sealed_key(&self) -> bool {
        self.nonce.len() == NONCE_LEN && self.ct.len() == 32 + TAG_LEN
    }

    /// Opens a sealed 32-byte key.
    fn open_key(&self, kek: &Key32, aad: &[u8]) -> Option<Key32> {
        Key32::from_slice(&self.open(kek, aad)?)
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
    /// Unwrapped, it is not a private key of its type (RSA, or its EC
    /// curve), or not the one whose public key is stored with it.
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

/// A private key to add to a container, of either kind.
#[derive(Clone, Copy)]
enum PrivateKeyRef<'a> {
    Rsa(&'a RsaPrivateKey),
    Ec(&'a EcPrivateKey),
}

/// A key pair in a container: public parts in the clear, the private key
/// sealed under the container's key-encrypting key. An RSA key has its
/// modulus and exponent; an EC key has `ec` instead (and an empty modulus
/// and exponent, `bits` its curve's size), and its sealed private key is
/// the raw scalar or Ed25519 seed rather than PKCS#8.
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
    /// The curve and public point of an EC key; absent for RSA (and in
    /// every file written before EC keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ec: Option<EcPublic>,
    wrapped: StoredSealed,
    /// Whether the key was generated on this handset (`CKA_LOCAL`); false
    /// for a key imported from elsewhere, which was once outside it. Only
    /// `false` is written, so files of before imports read as generated.
    #[serde(default = "generated", skip_serializing_if = "is_generated")]
    local: bool,
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

fn generated() -> bool {
    true
}

fn is_generated(local: &bool) -> bool {
    *local
}

impl KeyEntry {
    pub fn health(&self) -> KeyHealth {
        self.health
    }

    /// Whether the key was generated on this handset (`CKA_LOCAL`), rather
    /// than imported.
    pub fn local(&self) -> bool {
        self.local
    }

    /// HMAC-SHA256 (hex) of everything the file holds of this key, as the
    /// file holds it, bound to its container's name. The tuple starts with
    /// a string, [`Container::settings_mac`]'s with a number: the two never
    /// cover the same bytes.
    fn mac(&self, container: &str, key: &[u8; 32]) -> Result<String, StoreError> {
        // An EC key's check covers its curve and point too, under a name of
        // its own; an RSA key's stays what it was, so old files still pass.
        if let Some(ec) = &self.ec {
            let covered = (
                "phonecsp EC key integrity v1",
                container,
                hex(&self.id),
                &self.label,
                self.bits,
                &ec.curve,
                hex(&ec.point),
                &self.wrapped,
            );
            // As below: an imported key's check covers that it was.
            return if self.local {
                hmac_hex(key, &covered)
            } else {
                hmac_hex(key, &(covered, "imported"))
            };
        }
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
        // An imported key's check covers that it was imported, so that
        // editing the file cannot make it pass for one made here; a
        // generated key's is as it was before imports existed.
        if self.local {
            hmac_hex(key, &covered)
        } else {
            hmac_hex(key, &(covered, "imported"))
        }
    }

    /// Opens the wrapped private key and checks it against the public parts.
    fn open(&self, container: &str, kek: &Key32) -> Result<PrivateKey, Damage> {
        let sealed = self.wrapped.decode().ok_or(Damage::Malformed)?;
        let der = sealed
            .open(kek, &key_aad(container, &self.id))
            .ok_or(Damage::Unwrap)?;
        if let Some(ec) = &self.ec {
            let curve = ec.curve().ok_or(Damage::Mismatch)?;
            let key = EcPrivateKey::from_bytes(curve, &der).ok_or(Damage::Mismatch)?;
            if key.public_point() != ec.point {
                return Err(Damage::Mismatch);
            }
            return Ok(PrivateKey::Ec(key));
        }
        let key = crypto::from_pkcs8_der(&der).map_err(|_| Damage::Mismatch)?;
        // The public parts are stored in the clear: they must be this key's.
        if key.n().to_bytes_be() != self.modulus || key.e().to_bytes_be() != self.exponent {
            return Err(Damage::Mismatch);
        }
        Ok(PrivateKey::Rsa(key))
    }

    /// The curve of an EC key; `None` for RSA.
    pub fn curve(&self) -> Option<Curve> {
        self.ec.as_ref().and_then(EcPublic::curve)
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
    /// Version 1 only: a known text sealed under the PIN's key, which
    /// sealed the keys itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pin_check: Option<Sealed>,
    /// Version 2: the container key, sealed under the PIN's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wrapped_key: Option<Sealed>,
    /// Version 2: the PUK, if the container has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    puk: Option<PukSettings>,
    /// Absent in files written before it existed: the PIN came from the host.
    #[serde(default)]
    pin_entry: PinEntry,
    keys: Vec<KeyEntry>,
    certs: Vec<CertEntry>,
    /// Absent in files written before data objects existed.
    #[serde(default)]
    data: Vec<DataEntry>,
    /// Seconds a computer's login outlives its link (0: not at all);
    /// absent until the owner sets it, for [`DEFAULT_GRACE_SECS`]. Covered
    /// by the settings check when present, so a file without it keeps its
    /// old check and one with it cannot lose it unnoticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grace_secs: Option<u32>,
    /// HMAC-SHA256 of the fields that decide how a PIN is checked
    /// ([`Container::settings_mac`]), under a key only this handset has.
    /// Absent in files written before it existed; set at the next save.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    integrity: Option<String>,
}

impl Container {
    /// HMAC-SHA256 (hex) of everything that decides how a PIN or PUK is
    /// checked: the name, the KDF and its salt, the PIN check (version 1) or
    /// the sealed container key (version 2), the retry counter, the policy,
    /// where the PIN is entered, and (version 2) the PUK's counter, KDF,
    /// salt and sealed container key. A version 1 file's check covers what
    /// it covered when it was written, so that such files keep loading.
    /// Keys are not covered: each has its own ([`KeyEntry::mac`]), so that
    /// a damaged key leaves the container and its other keys usable.
    fn settings_mac(&self, key: &[u8; 32]) -> Result<String, StoreError> {
        if self.version == FILE_VERSION {
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
            // A grace period set before the file moved to version 2 is
            // covered too (as in version 2, only where the file has it).
            return match self.grace_secs {
                None => hmac_hex(key, &covered),
                Some(grace) => hmac_hex(key, &(covered, grace)),
            };
        }
        let covered = (
            self.version,
            &self.name,
            &self.serial,
            &self.policy,
            self.retries_left,
            &self.kdf,
            hex(&self.salt),
            &self.wrapped_key,
            &self.pin_entry,
            &self.puk,
        );
        match self.grace_secs {
            None => hmac_hex(key, &covered),
            Some(grace) => hmac_hex(key, &(covered, grace)),
        }
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

    /// How long a computer's login outlives its link: the phone keeps it,
    /// in memory only, for that long after it last heard from the
    /// computer, and gives it back to the same computer's next session.
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.grace_secs.unwrap_or(DEFAULT_GRACE_SECS)))
    }

    /// Sets the grace period in seconds, 0 for none (in memory; save the
    /// container).
    pub fn set_grace(&mut self, secs: u32) -> Result<(), StoreError> {
        if secs > MAX_GRACE_SECS {
            return Err(StoreError::Invalid(format!(
                "a grace period is at most {MAX_GRACE_SECS} seconds"
            )));
        }
        self.grace_secs = Some(secs);
        Ok(())
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
        match (self.version, &self.pin_check, &self.wrapped_key, &self.puk) {
            (FILE_VERSION, Some(check), None, None) => {
                if check.nonce.len() != NONCE_LEN || check.ct.len() != PIN_CHECK.len() + TAG_LEN {
                    return Err("invalid PIN check".into());
                }
            }
            (CONTAINER_VERSION, None, Some(wrapped), puk) => {
                if !wrapped.is_sealed_key() {
                    return Err("invalid PIN-sealed container key".into());
                }
                if let Some(puk) = puk {
                    puk.validate()?;
                }
            }
            (FILE_VERSION | CONTAINER_VERSION, ..) => {
                return Err("PIN check or sealed container key missing or misplaced".into());
            }
            (v, ..) => return Err(format!("unknown version {v}")),
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
        if self.grace_secs.is_some_and(|g| g > MAX_GRACE_SECS) {
            return Err("invalid grace period".into());
        }
        self.kdf.validate()?;
        if self.salt.len() != SALT_LEN {
            return Err("invalid salt".into());
        }
        if self.data.len() > MAX_DATA_OBJECTS {
            return Err("too many data objects".into());
        }
        check_ids("key", self.keys.iter().map(|k| &k.id))?;
        check_ids("certificate", self.certs.iter().map(|c| &c.id))?;
        check_ids("data object", self.data.iter().map(|d| &d.id))?;
        for (i, k) in self.keys.iter().enumerate() {
            if let Some(ec) = &k.ec {
                let Some(curve) = ec.curve() else {
                    return Err(format!("key {i}: unknown curve"));
                };
                if ec.point.len() != curve.point_len()
                    || k.bits != curve.bits()
                    || !k.modulus.is_empty()
                    || !k.exponent.is_empty()
                {
                    return Err(format!("key {i}: invalid EC public key"));
                }
                continue;
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
            if c.der.is_empty() || c.der.len() > MAX_CERT_LEN {
                return Err(format!("certificate {i}: invalid length"));
            }
        }
        for (i, d) in self.data.iter().enumerate() {
            if d.value.len() > MAX_DATA_OBJECT_LEN
                || d.oid.len() > MAX_OBJECT_ID_LEN
                || d.application.len() > MAX_LABEL_LEN
            {
                return Err(format!("data object {i}: invalid length"));
            }
        }
        Ok(())
    }

    /// Whether `kek` is a user's login to this container under its
    /// current PIN: it was opened from the container key's PIN-sealed copy
    /// as it is now (a new PIN seals it afresh).
    pub(crate) fn kek_matches(&self, kek: &Kek) -> bool {
        kek.role == Role::User
            && self
                .wrapped_key
                .as_ref()
                .is_some_and(|w| bool::from(w.nonce.as_slice().ct_eq(&kek.from)))
    }

    /// Whether `kek` is a security officer's login to this container under
    /// its current PUK.
    fn so_kek_matches(&self, kek: &Kek) -> bool {
        kek.role == Role::So
            && self
                .puk
                .as_ref()
                .is_some_and(|p| bool::from(p.wrapped_key.nonce.as_slice().ct_eq(&kek.from)))
    }

    /// Whether the container has a PUK.
    pub fn has_puk(&self) -> bool {
        self.puk.is_some()
    }

    /// Wrong PUKs left, 0 (locked for good) to [`MAX_PUK_TRIES`]; `None`
    /// without a PUK.
    pub fn puk_retries_left(&self) -> Option<u32> {
        self.puk.as_ref().map(|p| p.retries_left)
    }

    /// Checks the PIN and returns the user's login: the container key.
    ///
    /// The retry counter is decremented and saved before the check, and
    /// reset to [`MAX_PIN_TRIES`] (and saved) after a right PIN. A wrong PIN
    /// gives `Token(PIN_INCORRECT)`, or `Token(PIN_LOCKED)` once no try is
    /// left; a locked container answers `PIN_LOCKED` without a check.
    ///
    /// A version 1 container (keys sealed under the PIN's key itself) is
    /// moved to a container key by the right PIN, in the same save that
    /// resets the counter; it has no PUK until the owner sets one
    /// ([`Container::set_puk`]).
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
        let pin_kek = derive_kek(pin, &self.salt, &self.kdf)?;
        let opened = match (&self.pin_check, &self.wrapped_key) {
            (Some(check), _) => {
                let right = check
                    .open(&pin_kek, self.name.as_bytes())
                    .is_some_and(|p| bool::from(p.as_slice().ct_eq(PIN_CHECK)));
                if right {
                    Some(self.migrate(&pin_kek)?)
                } else {
                    None
                }
            }
            (None, Some(wrapped)) => wrapped
                .open_key(&pin_kek, &container_key_aad("pin", &self.name))
                .inspect(|ck| self.check_unchecked_keys(ck)),
            // validate() allows no other shape.
            (None, None) => return Err(StoreError::Token(CkRv::DEVICE_ERROR)),
        };
        match opened {
            Some(ck) => {
                self.retries_left = MAX_PIN_TRIES;
                store.save_container(self)?;
                self.user_login(ck)
            }
            None if self.retries_left == 0 => {
                log::warn!(
                    "container '{}': wrong PIN; now locked{}",
                    self.name,
                    if self.has_puk() {
                        " (its PUK can unblock it)"
                    } else {
                        ""
                    }
                );
                Err(StoreError::Token(CkRv::PIN_LOCKED))
            }
            None => {
                log::info!(
                    "container '{}': wrong PIN; {} tries left",
                    self.name,
                    self.retries_left
                );
                Err(StoreError::Token(CkRv::PIN_INCORRECT))
            }
        }
    }

    fn user_login(&self, ck: Key32) -> Result<Kek, StoreError> {
        self.wrapped_key
            .as_ref()
            .and_then(|w| Kek::opened(ck, w, Role::User))
            .ok_or(StoreError::Token(CkRv::DEVICE_ERROR))
    }

    /// Moves a version 1 container, whose right PIN's key is `pin_kek`, to
    /// a fresh container key (in memory; the caller saves): each key is
    /// opened under the PIN's key and sealed under the container key, one
    /// at a time, in memory only; a damaged one is kept as it is. Returns
    /// the container key.
    fn migrate(&mut self, pin_kek: &Key32) -> Result<Key32, StoreError> {
        self.check_unchecked_keys(pin_kek);
        let ck = Key32::random();
        let mut next = self.clone();
        for k in &mut next.keys {
            if let KeyHealth::Damaged(d) = k.health {
                log::warn!(
                    "{}; it is kept as it is under the container key",
                    k.damaged(&self.name, d)
                );
                continue;
            }
            let aad = key_aad(&self.name, &k.id);
            let Some(der) = k.wrapped.decode().and_then(|s| s.open(pin_kek, &aad)) else {
                k.health = KeyHealth::Damaged(Damage::Unwrap);
                log::error!("{}", k.damaged(&self.name, Damage::Unwrap));
                continue;
            };
            k.wrapped = StoredSealed::new(&Sealed::seal(&ck, &der, &aad)?);
            k.health = KeyHealth::Sound;
        }
        next.version = CONTAINER_VERSION;
        next.pin_check = None;
        next.wrapped_key = Some(Sealed::seal(
            pin_kek,
            ck.bytes(),
            &container_key_aad("pin", &self.name),
        )?);
        next.puk = None;
        *self = next;
        log::info!(
            "container '{}': moved to a container key sealed under the PIN; it has no PUK \
             until one is set (`phonecsp-handset container set-puk {}`)",
            self.name,
            self.name
        );
        Ok(ck)
    }

    /// Opens, with the right PIN's key, each key written before keys had
    /// integrity checks: one that opens is sound (and gets its check at
    /// the next save), one that does not is damaged (and is saved so). The
    /// PIN was right either way.
    fn check_unchecked_keys(&mut self, kek: &Key32) {
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

    /// Seals the container key (from `login`) under a key derived from
    /// `pin` with a new salt, and gives the PIN every try (in memory; the
    /// caller saves). The keys stay sealed under the container key.
    fn seal_pin(&mut self, ck: &Key32, pin: &[u8]) -> Result<(), StoreError> {
        check_pin_len(pin)?;
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let kek = derive_kek(pin, &salt, &self.kdf)?;
        self.wrapped_key = Some(Sealed::seal(
            &kek,
            ck.bytes(),
            &container_key_aad("pin", &self.name),
        )?);
        self.salt = salt;
        self.retries_left = MAX_PIN_TRIES;
        Ok(())
    }

    /// Changes the PIN: the container key is sealed under a key derived
    /// from the new PIN with a new salt, and the container saved in one
    /// atomic write; the keys, sealed under the container key, are not
    /// touched. A wrong old PIN counts as a try, as in [`Container::unlock`]
    /// (which also moves a version 1 container to a container key first).
    /// Every login made under the old PIN is stale afterwards.
    pub fn change_pin(&mut self, store: &Store, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        check_pin_len(new)?;
        let login = self.unlock(store, old)?;
        let mut next = self.clone();
        next.seal_pin(&login.key, new)?;
        store.save_container(&next)?;
        *self = next;
        Ok(())
    }

    /// Checks the PUK and returns the security officer's login: the
    /// container key, which lets [`Container::init_pin`] and
    /// [`Container::change_puk`] seal it afresh, and opens no key for use.
    ///
    /// The PUK's own counter works as the PIN's in [`Container::unlock`],
    /// from [`MAX_PUK_TRIES`]: a wrong PUK is `PIN_INCORRECT`, the last one
    /// `PIN_LOCKED`, and a locked PUK answers `PIN_LOCKED` for good. A PUK
    /// that cannot be one (length, non-digits) is refused before a try is
    /// spent. A container without a PUK answers `USER_TYPE_INVALID`: it has
    /// no security officer.
    pub fn so_unlock(&mut self, store: &Store, puk: &[u8]) -> Result<Kek, StoreError> {
        let Some(settings) = self.puk.as_ref() else {
            return Err(StoreError::Token(CkRv::USER_TYPE_INVALID));
        };
        if settings.retries_left == 0 {
            return Err(StoreError::Token(CkRv::PIN_LOCKED));
        }
        check_puk(puk)?;
        let (before, kdf, salt, wrapped) = (
            settings.retries_left,
            settings.kdf,
            settings.salt.clone(),
            settings.wrapped_key.clone(),
        );
        self.set_puk_retries(before - 1);
        if let Err(e) = store.save_container(self) {
            self.set_puk_retries(before);
            return Err(e);
        }
        let kek = derive_kek(puk, &salt, &kdf)?;
        match wrapped.open_key(&kek, &container_key_aad("puk", &self.name)) {
            Some(ck) => {
                self.set_puk_retries(MAX_PUK_TRIES);
                store.save_container(self)?;
                Kek::opened(ck, &wrapped, Role::So).ok_or(StoreError::Token(CkRv::DEVICE_ERROR))
            }
            None if before == 1 => {
                log::warn!(
                    "container '{}': wrong PUK; the PUK is now locked for good",
                    self.name
                );
                Err(StoreError::Token(CkRv::PIN_LOCKED))
            }
            None => {
                log::info!(
                    "container '{}': wrong PUK; {} tries left",
                    self.name,
                    before - 1
                );
                Err(StoreError::Token(CkRv::PIN_INCORRECT))
            }
        }
    }

    fn set_puk_retries(&mut self, n: u32) {
        if let Some(p) = &mut self.puk {
            p.retries_left = n;
        }
    }

    /// In a security officer's login, sets a new PIN: the container key is
    /// sealed under it, the PIN gets every try (a locked container is
    /// unlocked), and the container is saved. The keys stay sealed under
    /// the container key; every user login made before is stale.
    pub fn init_pin(&mut self, store: &Store, so: &Kek, new_pin: &[u8]) -> Result<(), StoreError> {
        if !self.so_kek_matches(so) {
            return Err(StoreError::Token(CkRv::USER_NOT_LOGGED_IN));
        }
        let mut next = self.clone();
        next.seal_pin(&so.key, new_pin)?;
        store.save_container(&next)?;
        *self = next;
        log::info!("container '{}': a new PIN was set with the PUK", self.name);
        Ok(())
    }

    /// Unblocks with the PUK: [`Container::so_unlock`], then
    /// [`Container::init_pin`]. A new PIN of the wrong length is refused
    /// before the PUK is tried.
    pub fn unblock(&mut self, store: &Store, puk: &[u8], new_pin: &[u8]) -> Result<(), StoreError> {
        check_pin_len(new_pin)?;
        let so = self.so_unlock(store, puk)?;
        self.init_pin(store, &so, new_pin)
    }

    /// Changes the PUK: the old one is checked as in
    /// [`Container::so_unlock`], and the container key sealed under the new
    /// one, with a new salt and every try.
    pub fn change_puk(&mut self, store: &Store, old: &[u8], new: &[u8]) -> Result<(), StoreError> {
        check_puk(new)?;
        let so = self.so_unlock(store, old)?;
        let mut next = self.clone();
        next.puk = Some(PukSettings::seal(&self.name, &self.kdf, &so.key, new)?);
        store.save_container(&next)?;
        *self = next;
        Ok(())
    }

    /// The owner sets (or replaces) the PUK with the PIN, on the phone:
    /// how a container from before PUKs, or one made without one, gets
    /// one. The PIN is checked as in [`Container::unlock`].
    pub fn set_puk(&mut self, store: &Store, pin: &[u8], puk: &[u8]) -> Result<(), StoreError> {
        check_puk(puk)?;
        let login = self.unlock(store, pin)?;
        let mut next = self.clone();
        next.puk = Some(PukSettings::seal(&self.name, &self.kdf, &login.key, puk)?);
        store.save_container(&next)?;
        *self = next;
        Ok(())
    }

    /// Adds a key pair generated on this handset, its private key sealed
    /// under `kek` (in memory; save the container). `Exists` if a key has
    /// this id.
    pub fn add_key(
        &mut self,
        kek: &Kek,
        id: Vec<u8>,
        label: String,
        key: &RsaPrivateKey,
    ) -> Result<(), StoreError> {
        self.add_key_entry(kek, id, label, PrivateKeyRef::Rsa(key), true)
    }

    /// Adds a key pair made elsewhere, recorded as imported (`CKA_LOCAL`
    /// false), as [`Container::add_key`] adds a generated one.
    pub fn import_key(
        &mut self,
        kek: &Kek,
        id: Vec<u8>,
        label: String,
        key: &crypto::ImportedKey,
    ) -> Result<(), StoreError> {
        let key = match key {
            crypto::ImportedKey::Rsa(key) => PrivateKeyRef::Rsa(key),
            crypto::ImportedKey::Ec(key) => PrivateKeyRef::Ec(key),
        };
        self.add_key_entry(kek, id, label, key, false)
    }

    /// Seals `key` under `kek` and adds it, generated here (`local`) or
    /// imported.
    fn add_key_entry(
        &mut self,
        kek: &Kek,
        id: Vec<u8>,
        label: String,
        key: PrivateKeyRef<'_>,
        local: bool,
    ) -> Result<(), StoreError> {
        check_id_label(&id, &label)?;
        if self.key(&id).is_some() {
            return Err(StoreError::Exists(format!("key {}", hex(&id))));
        }
        // A stale key (the PIN changed since) would seal a key no PIN opens.
        if !self.kek_matches(kek) {
            return Err(StoreError::Token(CkRv::USER_NOT_LOGGED_IN));
        }
        let (bits, modulus, exponent, ec, secret) = match key {
            PrivateKeyRef::Rsa(key) => {
                let (modulus, exponent, bits) = crypto::public_parts(key);
                if !(crypto::MIN_KEY_BITS..=crypto::MAX_KEY_BITS).contains(&(bits as usize)) {
                    return Err(StoreError::Token(CkRv::KEY_SIZE_RANGE));
                }
                let der = crypto::to_pkcs8_der(key).map_err(StoreError::Token)?;
                (bits, modulus, exponent, None, der)
            }
            PrivateKeyRef::Ec(key) => {
                let curve = key.curve();
                let ec = EcPublic {
                    curve: curve.name().to_owned(),
                    point: key.public_point(),
                };
                (
                    curve.bits(),
                    Vec::new(),
                    Vec::new(),
                    Some(ec),
                    key.to_bytes(),
                )
            }
        };
        let wrapped = Sealed::seal(&kek.key, &secret, &key_aad(&self.name, &id))?;
        self.keys.push(KeyEntry {
            id,
            label,
            bits,
            modulus,
            exponent,
            ec,
            wrapped: StoredSealed::new(&wrapped),
            local,
            integrity: None,
            damaged: None,
            health: KeyHealth::Sound,
        });
        Ok(())
    }

    /// Adds an EC key pair generated on this handset, as
    /// [`Container::add_key`] does an RSA one.
    pub fn add_ec_key(
        &mut self,
        kek: &Kek,
        id: Vec<u8>,
        label: String,
        key: &EcPrivateKey,
    ) -> Result<(), StoreError> {
        self.add_key_entry(kek, id, label, PrivateKeyRef::Ec(key), true)
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
        match self.any_private_key(kek, id)? {
            PrivateKey::Rsa(k) => Ok(k),
            PrivateKey::Ec(_) => Err(StoreError::Token(CkRv::KEY_TYPE_INCONSISTENT)),
        }
    }

    /// Unseals the private key with this id, of any type; errors as
    /// [`Container::private_key`].
    pub fn any_private_key(&self, kek: &Kek, id: &[u8]) -> Result<PrivateKey, StoreError> {
        let entry = self
            .key(id)
            .ok_or_else(|| StoreError::NotFound(format!("key {}", hex(id))))?;
        if !self.kek_matches(kek) {
            return Err(StoreError::Token(CkRv::USER_NOT_LOGGED_IN));
        }
        self.check_key(id)?;
        entry
            .open(&self.name, &kek.key)
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

    /// Issue 15, item 3: an imported key is recorded as not made here, the
    /// fact survives a reload, and the file cannot be edited to make it
    /// pass for a generated key: its integrity check covers it.
    #[test]
    fn an_imported_key_is_recorded_as_imported_and_the_record_is_checked() {
        let (_tmp, store, mut c) = store_with("ssh");
        let kek = c.unlock(&store, PIN).unwrap();
        let der = crypto::to_pkcs8_der(test_key()).unwrap();
        let key = crypto::parse_pkcs8(&der).unwrap();
        c.import_key(&kek, vec![9], "old key".into(), &key).unwrap();
        c.add_key(&kek, vec![1], "made here".into(), test_key())
            .unwrap();
        assert!(matches!(
            c.import_key(&kek, vec![9], "again".into(), &key),
            Err(StoreError::Exists(_))
        ));
        store.save_container(&c).unwrap();
        let v = file_json(&store, "ssh");
        assert_eq!(v["keys"][0]["local"], serde_json::Value::Bool(false));
        assert!(v["keys"][1].get("local").is_none(), "{}", v["keys"][1]);
        let mut c = store.load_container("ssh").unwrap();
        assert!(!c.key(&[9]).unwrap().local());
        assert!(c.key(&[1]).unwrap().local());
        let kek = c.unlock(&store, PIN).unwrap();
        assert_eq!(c.private_key(&kek, &[9]).unwrap().n(), test_key().n());
        // Dropping the field would make it read as generated: the check
        // finds it.
        let c = without_local(&store, 9);
        assert_eq!(c.key(&[1]).unwrap().health(), KeyHealth::Sound);
    }

    /// Issue 15, item 3: an imported EC key is kept as a generated one is,
    /// but recorded as imported, and the record is covered by its check.
    #[test]
    fn an_imported_ec_key_is_recorded_as_imported() {
        use p256::pkcs8::EncodePrivateKey as _;
        let (_tmp, store, mut c) = store_with("ssh");
        let kek = c.unlock(&store, PIN).unwrap();
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let key = crypto::parse_pkcs8(sk.to_pkcs8_der().unwrap().as_bytes()).unwrap();
        c.import_key(&kek, vec![7], "old ec".into(), &key).unwrap();
        store.save_container(&c).unwrap();
        let v = file_json(&store, "ssh");
        assert_eq!(v["keys"][0]["local"], serde_json::Value::Bool(false));
        assert_eq!(v["keys"][0]["ec"]["curve"], "p256");
        let mut c = store.load_container("ssh").unwrap();
        assert!(!c.key(&[7]).unwrap().local());
        let kek = c.unlock(&store, PIN).unwrap();
        let PrivateKey::Ec(opened) = c.any_private_key(&kek, &[7]).unwrap() else {
            panic!("not an EC key");
        };
        assert_eq!(opened.to_bytes().as_slice(), sk.to_bytes().as_slice());
        without_local(&store, 7);
    }

    /// The container `ssh` reloaded after its first key, the imported key
    /// `id`, lost its `local` field: that key fails its check.
    fn without_local(store: &Store, id: u8) -> Container {
        edit(store, "ssh", |v| {
            v["keys"][0].as_object_mut().unwrap().remove("local");
        });
        let c = store.load_container("ssh").unwrap();
        assert_eq!(
            c.key(&[id]).unwrap().health(),
            KeyHealth::Damaged(Damage::Integrity)
        );
        c
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

    /// Issue 13, item 4: the grace period is the default in a file that
    /// has none (old files load as they are), is kept once set, and is
    /// covered by the settings check: changed or removed, the container is
    /// reported damaged.
    #[test]
    fn the_grace_period_is_kept_and_checked() {
        let (_tmp, store, mut c) = store_with("ssh");
        assert_eq!(c.grace().as_secs(), u64::from(DEFAULT_GRACE_SECS));
        store.save_container(&c).unwrap();
        let path = store.dir().join("containers").join("ssh.json");
        let read =
            || -> serde_json::Value { serde_json::from_slice(&fs::read(&path).unwrap()).unwrap() };
        assert!(
            read().get("grace_secs").is_none(),
            "an unset grace is not written"
        );
        assert!(c.set_grace(MAX_GRACE_SECS + 1).is_err());
        c.set_grace(0).unwrap();
        store.save_container(&c).unwrap();
        assert_eq!(store.load_container("ssh").unwrap().grace().as_secs(), 0);
        let sealed = fs::read(&path).unwrap();
        for edit in [
            &(|v: &mut serde_json::Value| v["grace_secs"] = 3600.into())
                as &dyn Fn(&mut serde_json::Value),
            &|v: &mut serde_json::Value| {
                v.as_object_mut().unwrap().remove("grace_secs");
            },
        ] {
            let mut v = read();
            edit(&mut v);
            fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
            let e = store.load_container("ssh").unwrap_err();
            assert!(e.to_string().contains("is damaged"), "{e}");
            fs::write(&path, &sealed).unwrap();
        }
        store.load_container("ssh").unwrap();
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
                short_code: Some(ShortDigits(Zeroizing::new("12345678".into()))),
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

    const PUK: &[u8] = b"12345678";

    /// A store with container `ssh` (PIN [`PIN`], PUK [`PUK`]) holding key 01.
    fn with_puk() -> (tempfile::TempDir, Store, Container) {
        let (tmp, store) = new_store();
        let mut c = store
            .create_container_with_puk("ssh", PIN, Some(PUK), Policy::Auto, FAST)
            .unwrap();
        let kek = c.unlock(&store, PIN).unwrap();
        c.add_key(&kek, vec![1], "ssh key".into(), test_key())
            .unwrap();
        store.save_container(&c).unwrap();
        (tmp, store, c)
    }

    fn file_json(store: &Store, name: &str) -> serde_json::Value {
        let path = store.dir().join("containers").join(format!("{name}.json"));
        serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
    }

    /// Issue 13: the keys are sealed under a container key, which is sealed
    /// under the PIN's key and the PUK's; the PUK's login opens no key for
    /// use, and nothing in the file is a key in the clear.
    #[test]
    fn keys_are_sealed_under_a_container_key_that_pin_and_puk_both_open() {
        let (_tmp, store, _) = with_puk();
        let mut c = store.load_container("ssh").unwrap();
        assert!(c.has_puk());
        assert_eq!(c.puk_retries_left(), Some(MAX_PUK_TRIES));
        let v = file_json(&store, "ssh");
        assert_eq!(v["version"], 2);
        assert!(v.get("pin_check").is_none());
        assert!(v["wrapped_key"]["ct"].is_string());
        assert_eq!(v["puk"]["retries_left"], MAX_PUK_TRIES);
        let user = c.unlock(&store, PIN).unwrap();
        assert_eq!(c.private_key(&user, &[1]).unwrap().d(), test_key().d());
        let so = c.so_unlock(&store, PUK).unwrap();
        assert!(so.is_so());
        // The security officer uses no key, and a user sets no PIN.
        assert_eq!(refused(c.private_key(&so, &[1])), CkRv::USER_NOT_LOGGED_IN);
        assert_eq!(
            refused(c.add_key(&so, vec![2], String::new(), test_key())),
            CkRv::USER_NOT_LOGGED_IN
        );
        assert_eq!(
            refused(c.init_pin(&store, &user, b"9999")),
            CkRv::USER_NOT_LOGGED_IN
        );
        // No PUK of the wrong form spends a try.
        assert_eq!(
            refused(c.so_unlock(&store, b"1234567")),
            CkRv::PIN_LEN_RANGE
        );
        assert_eq!(refused(c.so_unlock(&store, b"1234567x")), CkRv::PIN_INVALID);
        assert_eq!(c.puk_retries_left(), Some(MAX_PUK_TRIES));
        assert_eq!(
            refused(store.create_container_with_puk("x", PIN, Some(b"1234"), Policy::Auto, FAST)),
            CkRv::PIN_LEN_RANGE
        );
        let generated = generate_puk();
        assert_eq!(generated.len(), 12);
        check_puk(&generated).unwrap();
        // A container without a PUK has no security officer.
        let mut bare = store
            .create_container("bare", PIN, Policy::Auto, FAST)
            .unwrap();
        assert!(!bare.has_puk());
        assert_eq!(
            refused(bare.so_unlock(&store, PUK)),
            CkRv::USER_TYPE_INVALID
        );
    }

    /// Issue 13: five wrong PINs lock; the PUK sets a new PIN, which opens
    /// the same keys, sealed as they were: only the container key's
    /// PIN-sealed copy changed. Logins made under the old PIN are stale.
    #[test]
    fn the_puk_unblocks_by_sealing_the_container_key_under_a_new_pin() {
        let (_tmp, store, mut c) = with_puk();
        let before = file_json(&store, "ssh");
        let old_login = c.unlock(&store, PIN).unwrap();
        for _ in 0..MAX_PIN_TRIES {
            let _ = c.unlock(&store, b"0000");
        }
        assert!(c.is_locked());
        assert_eq!(refused(c.unblock(&store, PUK, b"12")), CkRv::PIN_LEN_RANGE);
        assert_eq!(c.puk_retries_left(), Some(MAX_PUK_TRIES));
        c.unblock(&store, PUK, b"4321").unwrap();
        let mut c = store.load_container("ssh").unwrap();
        assert!(!c.is_locked());
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        assert_eq!(refused(c.unlock(&store, PIN)), CkRv::PIN_INCORRECT);
        let login = c.unlock(&store, b"4321").unwrap();
        assert_eq!(c.private_key(&login, &[1]).unwrap().d(), test_key().d());
        assert_eq!(
            refused(c.private_key(&old_login, &[1])),
            CkRv::USER_NOT_LOGGED_IN
        );
        let after = file_json(&store, "ssh");
        assert_eq!(after["keys"], before["keys"]);
        assert_ne!(after["wrapped_key"], before["wrapped_key"]);
        assert_ne!(after["salt"], before["salt"]);
        assert_eq!(after["puk"]["wrapped_key"], before["puk"]["wrapped_key"]);
        // A changed PIN seals the container key afresh, too.
        c.change_pin(&store, b"4321", b"5555").unwrap();
        assert_eq!(
            refused(c.private_key(&login, &[1])),
            CkRv::USER_NOT_LOGGED_IN
        );
        assert_eq!(file_json(&store, "ssh")["keys"], before["keys"]);
        // Changing the PUK needs the old one; the new one then unblocks.
        assert_eq!(
            refused(c.change_puk(&store, b"99999999", b"87654321")),
            CkRv::PIN_INCORRECT
        );
        c.change_puk(&store, PUK, b"87654321").unwrap();
        assert_eq!(c.puk_retries_left(), Some(MAX_PUK_TRIES));
        assert_eq!(refused(c.so_unlock(&store, PUK)), CkRv::PIN_INCORRECT);
        c.unblock(&store, b"87654321", PIN).unwrap();
        let login = c.unlock(&store, PIN).unwrap();
        c.private_key(&login, &[1]).unwrap();
    }

    /// Issue 13: the PUK has its own counter, saved before the check and
    /// reset by a right PUK; ten wrong lock it for good, the right one
    /// included, and the PIN's counter is not touched.
    #[test]
    fn the_puk_counts_its_own_tries_and_ten_wrong_lock_it_for_good() {
        let (_tmp, store, mut c) = with_puk();
        assert_eq!(
            refused(c.so_unlock(&store, b"00000000")),
            CkRv::PIN_INCORRECT
        );
        assert_eq!(
            store.load_container("ssh").unwrap().puk_retries_left(),
            Some(MAX_PUK_TRIES - 1)
        );
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        c.so_unlock(&store, PUK).unwrap();
        assert_eq!(
            store.load_container("ssh").unwrap().puk_retries_left(),
            Some(MAX_PUK_TRIES)
        );
        for i in 1..MAX_PUK_TRIES {
            assert_eq!(
                refused(c.so_unlock(&store, b"00000000")),
                CkRv::PIN_INCORRECT,
                "try {i}"
            );
        }
        assert_eq!(c.puk_retries_left(), Some(1));
        assert_eq!(refused(c.so_unlock(&store, b"00000000")), CkRv::PIN_LOCKED);
        let mut c = store.load_container("ssh").unwrap();
        assert_eq!(c.puk_retries_left(), Some(0));
        assert_eq!(refused(c.so_unlock(&store, PUK)), CkRv::PIN_LOCKED);
        assert_eq!(refused(c.unblock(&store, PUK, b"4321")), CkRv::PIN_LOCKED);
        assert_eq!(
            refused(c.change_puk(&store, PUK, b"87654321")),
            CkRv::PIN_LOCKED
        );
        // The PIN still works while it is not locked itself.
        let login = c.unlock(&store, PIN).unwrap();
        c.private_key(&login, &[1]).unwrap();
    }

    /// Issue 13: the PUK's counter, salt, cost and sealed container key
    /// are covered by the settings' check: a change to any is found at
    /// load, before any PIN or PUK is tried.
    #[test]
    fn tampered_puk_fields_are_found_at_load() {
        let (_tmp, store, _) = with_puk();
        let path = store.dir().join("containers/ssh.json");
        let whole = fs::read(&path).unwrap();
        type Edit = fn(&mut serde_json::Value);
        let edits: [(&str, Edit); 5] = [
            ("retries", |v| v["puk"]["retries_left"] = 9.into()),
            ("salt", |v| {
                let mut b = B64.decode(v["puk"]["salt"].as_str().unwrap()).unwrap();
                b[0] ^= 1;
                v["puk"]["salt"] = B64.encode(b).into();
            }),
            ("kdf", |v| v["puk"]["kdf"]["t"] = 2.into()),
            ("wrapped", |v| {
                let mut b = B64
                    .decode(v["puk"]["wrapped_key"]["ct"].as_str().unwrap())
                    .unwrap();
                b[3] ^= 1;
                v["puk"]["wrapped_key"]["ct"] = B64.encode(b).into();
            }),
            ("removed", |v| {
                v.as_object_mut().unwrap().remove("puk");
            }),
        ];
        for (what, f) in edits {
            fs::write(&path, &whole).unwrap();
            edit(&store, "ssh", f);
            let e = store.load_container("ssh").unwrap_err();
            assert!(e.to_string().contains("is damaged"), "{what}: {e}");
        }
        fs::write(&path, &whole).unwrap();
        store.load_container("ssh").unwrap();
    }

    /// A container as the handset wrote it before container keys (version
    /// 1): keys sealed under the PIN's key, a PIN check, the settings'
    /// check over version 1's fields.
    fn version_1_container(store: &Store) {
        let mut salt = vec![0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let pin_kek = derive_kek(PIN, &salt, &FAST).unwrap();
        let der = crypto::to_pkcs8_der(test_key()).unwrap();
        let keys = [1u8, 2]
            .iter()
            .map(|id| {
                let (modulus, exponent, bits) = crypto::public_parts(test_key());
                KeyEntry {
                    id: vec![*id],
                    label: "old key".into(),
                    bits,
                    modulus,
                    exponent,
                    ec: None,
                    wrapped: StoredSealed::new(
                        &Sealed::seal(&pin_kek, &der, &key_aad("old", &[*id])).unwrap(),
                    ),
                    local: true,
                    integrity: None,
                    damaged: None,
                    health: KeyHealth::Sound,
                }
            })
            .collect();
        let c = Container {
            version: 1,
            name: "old".into(),
            serial: "0011223344556677".into(),
            policy: Policy::Auto,
            retries_left: MAX_PIN_TRIES - 1,
            kdf: FAST,
            pin_check: Some(Sealed::seal(&pin_kek, PIN_CHECK, b"old").unwrap()),
            salt,
            wrapped_key: None,
            puk: None,
            pin_entry: PinEntry::Host,
            grace_secs: None,
            keys,
            certs: Vec::new(),
            data: Vec::new(),
            integrity: None,
        };
        store.save_container(&c).unwrap();
    }

    /// Issue 13: a version 1 file loads (its check as written), works with
    /// a wrong PIN as before (and stays version 1), and the next right PIN
    /// moves it to a container key: the same keys open, and the file holds
    /// no PIN check and no PUK until the owner sets one with the PIN.
    #[test]
    fn a_version_1_container_moves_to_a_container_key_at_the_right_pin() {
        let (_tmp, store) = new_store();
        version_1_container(&store);
        let v = file_json(&store, "old");
        assert_eq!(v["version"], 1);
        assert!(v["pin_check"]["ct"].is_string());
        assert!(v.get("wrapped_key").is_none());
        let mut c = store.load_container("old").unwrap();
        assert!(!c.has_puk());
        assert_eq!(refused(c.unlock(&store, b"0000")), CkRv::PIN_INCORRECT);
        assert_eq!(file_json(&store, "old")["version"], 1);
        let mut c = store.load_container("old").unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES - 2);
        let old_keys = file_json(&store, "old")["keys"].clone();

        let login = c.unlock(&store, PIN).unwrap();
        assert_eq!(c.private_key(&login, &[1]).unwrap().d(), test_key().d());
        let v = file_json(&store, "old");
        assert_eq!(v["version"], 2);
        assert!(v.get("pin_check").is_none());
        assert!(v.get("puk").is_none());
        assert_eq!(v["retries_left"], MAX_PIN_TRIES);
        assert_ne!(v["keys"][0]["wrapped"], old_keys[0]["wrapped"]);
        assert!(v["keys"][0]["integrity"].is_string());
        let mut c = store.load_container("old").unwrap();
        let login = c.unlock(&store, PIN).unwrap();
        c.private_key(&login, &[2]).unwrap();
        assert_eq!(refused(c.so_unlock(&store, PUK)), CkRv::USER_TYPE_INVALID);
        // The owner gives it a PUK with the PIN; then it unblocks.
        assert_eq!(
            refused(c.set_puk(&store, b"0000", PUK)),
            CkRv::PIN_INCORRECT
        );
        c.set_puk(&store, PIN, PUK).unwrap();
        for _ in 0..MAX_PIN_TRIES {
            let _ = c.unlock(&store, b"0000");
        }
        c.unblock(&store, PUK, b"2468").unwrap();
        let login = c.unlock(&store, b"2468").unwrap();
        c.private_key(&login, &[1]).unwrap();
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

    /// EC keys of each curve are sealed like RSA keys, come back whole from
    /// the file, and answer only to a login; an RSA request of one is
    /// refused by type.
    #[test]
    fn ec_keys_are_sealed_saved_and_opened() {
        let (_tmp, store, mut c) = store_with("ec");
        let kek = c.unlock(&store, PIN).unwrap();
        for (i, curve) in Curve::ALL.into_iter().enumerate() {
            let key = EcPrivateKey::generate(curve);
            c.add_ec_key(&kek, vec![i as u8 + 1], curve.name().into(), &key)
                .unwrap();
        }
        store.save_container(&c).unwrap();
        let mut c = store.load_container("ec").unwrap();
        let kek = c.unlock(&store, PIN).unwrap();
        for (i, curve) in Curve::ALL.into_iter().enumerate() {
            let id = [i as u8 + 1];
            assert_eq!(c.key(&id).unwrap().health(), KeyHealth::Sound);
            assert_eq!(c.key(&id).unwrap().curve(), Some(curve));
            let PrivateKey::Ec(k) = c.any_private_key(&kek, &id).unwrap() else {
                panic!("not EC")
            };
            assert_eq!(
                k.public_point(),
                c.key(&id).unwrap().ec.as_ref().unwrap().point
            );
            assert!(matches!(
                c.private_key(&kek, &id),
                Err(StoreError::Token(CkRv::KEY_TYPE_INCONSISTENT))
            ));
        }
    }

    /// A changed public point (another key's, say) is found by the key's
    /// integrity check without the PIN, reported as damage, and the right
    /// PIN stays right.
    #[test]
    fn a_damaged_ec_key_is_damaged_not_a_wrong_pin() {
        let (_tmp, store, mut c) = store_with("ec");
        let kek = c.unlock(&store, PIN).unwrap();
        let key = EcPrivateKey::generate(Curve::P256);
        c.add_ec_key(&kek, vec![1], "k".into(), &key).unwrap();
        store.save_container(&c).unwrap();
        let path = store.dir().join("containers/ec.json");
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let other = EcPrivateKey::generate(Curve::P256).public_point();
        v["keys"][0]["ec"]["point"] = B64.encode(other).into();
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let mut c = store.load_container("ec").unwrap();
        assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(Damage::Integrity));
        let kek = c.unlock(&store, PIN).unwrap();
        assert_eq!(c.retries_left(), MAX_PIN_TRIES);
        assert!(matches!(
            c.any_private_key(&kek, &[1]),
            Err(StoreError::KeyDamaged {
                damage: Damage::Integrity,
                ..
            })
        ));
        // Without its check (as if never checked), the mismatch is found
        // when it is opened.
        let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v["keys"][0].as_object_mut().unwrap().remove("integrity");
        fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
        let mut c = store.load_container("ec").unwrap();
        c.unlock(&store, PIN).unwrap();
        assert_eq!(c.keys()[0].health(), KeyHealth::Damaged(Damage::Mismatch));
    }

    /// An EC entry with an unknown curve or a point of the wrong length
    /// makes the file invalid, as a bad modulus does.
    #[test]
    fn an_ec_entry_of_an_unknown_curve_is_refused() {
        let (_tmp, store, mut c) = store_with("ec");
        let kek = c.unlock(&store, PIN).unwrap();
        c.add_ec_key(
            &kek,
            vec![1],
            "k".into(),
            &EcPrivateKey::generate(Curve::P384),
        )
        .unwrap();
        let file = store.container_file(&c).unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&file).unwrap();
        v["keys"][0]["ec"]["curve"] = "secp256k1".into();
        let bytes = serde_json::to_vec(&v).unwrap();
        assert!(store.parse_container_file("ec", &bytes).is_err());
    }
}
