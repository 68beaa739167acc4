//! The public part of each token, kept across link sessions and daemon
//! restarts: token information (flags, retry counter, PIN lengths,
//! serial), the object list (classes, ids, labels) and the attributes of
//! public keys, private keys (their public half) and certificates. Data
//! objects and anything secret are never kept.
//!
//! A handset announces each container's **version** when a session opens
//! (docs/protocol.md section 5.9). What was kept under that version, for
//! that handset's key and that container, is served without asking the
//! phone; anything else is read from the phone and kept anew. A file is
//! trusted only if it is of this format, names the handset's pinned key,
//! the container and the announced version, and holds only well-formed
//! values: a truncated, damaged, foreign or future file is ignored, and
//! rewritten once the phone has been asked.
//!
//! Files: `cache/<handset>/<container in hex>.json` under the state
//! directory, mode 0600. The container's name is written in hex because
//! it comes from the phone and may hold `/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use phonecsp::ObjectInfo;
use phonecsp_protocol::at::check_text;
use phonecsp_protocol::limits::{MAX_DER_LEN, MAX_ID_LEN, MAX_LABEL_LEN};
use serde::{Deserialize, Serialize};

use crate::state::write_private;

/// The file format this code writes and trusts.
pub const FORMAT: u32 = 1;
/// A cache file longer than this is not read.
const MAX_FILE: u64 = 4 << 20;
/// More objects than a handset's container would ever hold.
const MAX_OBJECTS: usize = 4096;
/// Attributes of one object.
const MAX_ATTRIBUTES: usize = 64;
/// The longest serial a file may give (CK_TOKEN_INFO has room for 16).
const MAX_SERIAL: usize = 64;

/// `+CKTINFO` as kept: the name is the file's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub flags: u32,
    pub retries_left: u32,
    pub min_pin: u32,
    pub max_pin: u32,
    pub serial: String,
    /// The PUK's tries left (0: no PUK).
    #[serde(default)]
    pub so_retries_left: u32,
}

/// An object's attributes as the phone answered `+CKATTR`.
pub type Attributes = Vec<(u32, Vec<u8>)>;

/// What is known of one token's public part; each piece once read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Public {
    pub info: Option<Info>,
    pub objects: Option<Vec<ObjectInfo>>,
    /// (class, id) to attributes, for the classes [`keeps`] allows.
    pub attributes: BTreeMap<(u32, Vec<u8>), Attributes>,
}

/// Whether attributes of objects of `class` may be kept: keys (the phone
/// answers only their public half) and certificates, never data objects,
/// which may be private.
pub fn keeps(class: u32) -> bool {
    matches!(class, 1..=3)
}

/// Why a cache file was not trusted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CacheFileError {
    #[error("not a cache file (truncated or damaged): {0}")]
    Damaged(String),
    #[error("of format {0}, which this daemon does not know")]
    Format(u32),
    #[error("of another handset's key")]
    OtherHandset,
    #[error("of another container")]
    OtherContainer,
    #[error("of another version of the container")]
    OtherVersion,
    #[error("holds a value out of range: {0}")]
    Invalid(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Head {
    format: u32,
}

#[derive(Serialize, Deserialize)]
struct FileObject {
    class: u32,
    id: String,
    label: String,
}

#[derive(Serialize, Deserialize)]
struct FileAttributes {
    class: u32,
    id: String,
    values: Vec<(u32, String)>,
}

#[derive(Serialize, Deserialize)]
struct File {
    format: u32,
    /// The handset's pinned Noise key, base64.
    handset: String,
    container: String,
    version: u64,
    info: Option<Info>,
    objects: Option<Vec<FileObject>>,
    attributes: Vec<FileAttributes>,
}

fn unb64(s: &str, max: usize, what: &'static str) -> Result<Vec<u8>, CacheFileError> {
    let v = B64.decode(s).map_err(|_| CacheFileError::Invalid(what))?;
    if v.len() > max {
        return Err(CacheFileError::Invalid(what));
    }
    Ok(v)
}

fn check_label(label: &str) -> Result<(), CacheFileError> {
    if label.len() > MAX_LABEL_LEN || check_text(label).is_err() {
        return Err(CacheFileError::Invalid("label"));
    }
    Ok(())
}

/// The text of a cache file.
pub fn encode(handset: &[u8; 32], container: &str, version: u64, p: &Public) -> Vec<u8> {
    let file = File {
        format: FORMAT,
        handset: B64.encode(handset),
        container: container.to_owned(),
        version,
        info: p.info.clone(),
        objects: p.objects.as_ref().map(|list| {
            list.iter()
                .map(|o| FileObject {
                    class: o.class,
                    id: B64.encode(&o.id),
                    label: o.label.clone(),
                })
                .collect()
        }),
        attributes: p
            .attributes
            .iter()
            .map(|((class, id), values)| FileAttributes {
                class: *class,
                id: B64.encode(id),
                values: values.iter().map(|(t, v)| (*t, B64.encode(v))).collect(),
            })
            .collect(),
    };
    // A struct of strings, numbers and lists always serialises.
    serde_json::to_vec(&file).unwrap_or_default()
}

/// Reads a cache file's text, trusting it only for `handset`'s key,
/// `container` and `version`. Public for the tests and fuzzing.
pub fn parse(
    bytes: &[u8],
    handset: &[u8; 32],
    container: &str,
    version: u64,
) -> Result<Public, CacheFileError> {
    let damaged = |e: serde_json::Error| CacheFileError::Damaged(e.to_string());
    let head: Head = serde_json::from_slice(bytes).map_err(damaged)?;
    if head.format != FORMAT {
        return Err(CacheFileError::Format(head.format));
    }
    let file: File = serde_json::from_slice(bytes).map_err(damaged)?;
    if unb64(&file.handset, 32, "handset key")? != handset {
        return Err(CacheFileError::OtherHandset);
    }
    if file.container != container {
        return Err(CacheFileError::OtherContainer);
    }
    if file.version != version {
        return Err(CacheFileError::OtherVersion);
    }
    if let Some(i) = &file.info
        && (i.serial.len() > MAX_SERIAL || check_text(&i.serial).is_err() || i.min_pin > i.max_pin)
    {
        return Err(CacheFileError::Invalid("token information"));
    }
    let objects = match file.objects {
        None => None,
        Some(list) => {
            if list.len() > MAX_OBJECTS {
                return Err(CacheFileError::Invalid("object count"));
            }
            let mut out = Vec::with_capacity(list.len());
            for o in list {
                if !(0..=3).contains(&o.class) {
                    return Err(CacheFileError::Invalid("object class"));
                }
                check_label(&o.label)?;
                out.push(ObjectInfo {
                    class: o.class,
                    id: unb64(&o.id, MAX_ID_LEN, "object id")?,
                    label: o.label,
                });
            }
            Some(out)
        }
    };
    if file.attributes.len() > MAX_OBJECTS {
        return Err(CacheFileError::Invalid("attribute sets"));
    }
    let mut attributes = BTreeMap::new();
    for a in file.attributes {
        if !keeps(a.class) {
            return Err(CacheFileError::Invalid("attributes of a class never kept"));
        }
        if a.values.len() > MAX_ATTRIBUTES {
            return Err(CacheFileError::Invalid("attribute count"));
        }
        let id = unb64(&a.id, MAX_ID_LEN, "object id")?;
        let mut values = Vec::with_capacity(a.values.len());
        for (t, v) in a.values {
            values.push((t, unb64(&v, MAX_DER_LEN, "attribute value")?));
        }
        attributes.insert((a.class, id), values);
    }
    Ok(Public {
        info: file.info,
        objects,
        attributes,
    })
}

/// The cache files under a state directory.
pub struct PublicStore {
    dir: PathBuf,
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

impl PublicStore {
    pub fn new(state_dir: &Path) -> PublicStore {
        PublicStore {
            dir: state_dir.join("cache"),
        }
    }

    fn handset_dir(&self, handset: &str) -> PathBuf {
        self.dir.join(handset)
    }

    pub fn path(&self, handset: &str, container: &str) -> PathBuf {
        self.handset_dir(handset)
            .join(format!("{}.json", hex(container)))
    }

    /// What was kept of `container` under `version` for the handset named
    /// `handset` with the pinned key `key`; `None` (and a line in the log
    /// saying why) for a file that is missing or not to be trusted.
    pub fn load(
        &self,
        handset: &str,
        key: &[u8; 32],
        container: &str,
        version: u64,
    ) -> Option<Public> {
        use std::io::Read as _;
        let path = self.path(handset, container);
        let mut bytes = Vec::new();
        let read =
            std::fs::File::open(&path).and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut bytes));
        match read {
            Ok(_) if bytes.len() as u64 > MAX_FILE => {
                log::info!("{}: too long; not used", path.display());
                None
            }
            Ok(_) => match parse(&bytes, key, container, version) {
                Ok(p) => Some(p),
                Err(CacheFileError::OtherVersion) => {
                    log::debug!("{}: the phone's '{container}' changed", path.display());
                    None
                }
                Err(e) => {
                    log::info!(
                        "{}: {e}; not used, and read again from the phone",
                        path.display()
                    );
                    None
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                log::info!("{}: {e}; not used", path.display());
                None
            }
        }
    }

    /// Keeps `p` for `container` at `version`. A failed write is logged:
    /// the cache saves round trips, nothing depends on it.
    pub fn save(&self, handset: &str, key: &[u8; 32], container: &str, version: u64, p: &Public) {
        let dir = self.handset_dir(handset);
        let made = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        let path = self.path(handset, container);
        let written = made.map_err(|e| e.to_string()).and_then(|()| {
            write_private(&path, &encode(key, container, version, p)).map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            log::warn!("keeping the public data of '{handset}'/'{container}': {e}");
        }
    }

    /// Drops what was kept of `container`.
    pub fn remove(&self, handset: &str, container: &str) {
        let _ = std::fs::remove_file(self.path(handset, container));
    }

    /// Drops everything kept of `handset` (unpaired).
    pub fn forget(&self, handset: &str) {
        let _ = std::fs::remove_dir_all(self.handset_dir(handset));
    }
}

use std::os::unix::fs::DirBuilderExt as _;

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn sample() -> Public {
        let mut attributes = BTreeMap::new();
        attributes.insert(
            (2, vec![1]),
            vec![(0x120, vec![1, 2, 3]), (0x122, vec![1, 0, 1])],
        );
        Public {
            info: Some(Info {
                flags: 1,
                retries_left: 3,
                min_pin: 4,
                max_pin: 64,
                serial: "9f3a61c2e0d4b857".into(),
                so_retries_left: 0,
            }),
            objects: Some(vec![ObjectInfo {
                class: 2,
                id: vec![1],
                label: "ssh key".into(),
            }]),
            attributes,
        }
    }

    #[test]
    fn round_trips_for_its_own_handset_container_and_version() {
        let bytes = encode(&KEY, "ssh", 42, &sample());
        assert_eq!(parse(&bytes, &KEY, "ssh", 42), Ok(sample()));
        assert_eq!(
            parse(&bytes, &[8; 32], "ssh", 42),
            Err(CacheFileError::OtherHandset)
        );
        assert_eq!(
            parse(&bytes, &KEY, "disk", 42),
            Err(CacheFileError::OtherContainer)
        );
        assert_eq!(
            parse(&bytes, &KEY, "ssh", 43),
            Err(CacheFileError::OtherVersion)
        );
    }

    /// An EC key's public half (its type, curve and point) is kept as an
    /// RSA key's is, and comes back the same.
    #[test]
    fn ec_public_keys_are_kept() {
        use phonecsp_protocol::ck::{Curve, cka, ckk};
        let mut p = sample();
        let point = [4u8; 97];
        let ec = vec![
            (cka::KEY_TYPE, u64::from(ckk::EC).to_be_bytes().to_vec()),
            (cka::EC_PARAMS, Curve::P384.ec_params().to_vec()),
            (cka::EC_POINT, Curve::ec_point_der(&point)),
        ];
        p.attributes.insert((2, vec![6]), ec.clone());
        p.attributes.insert((3, vec![6]), ec);
        let bytes = encode(&KEY, "ssh", 42, &p);
        assert_eq!(parse(&bytes, &KEY, "ssh", 42), Ok(p));
    }

    #[test]
    fn truncated_damaged_and_future_files_are_refused() {
        let bytes = encode(&KEY, "ssh", 42, &sample());
        for n in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(
                matches!(
                    parse(&bytes[..n], &KEY, "ssh", 42),
                    Err(CacheFileError::Damaged(_))
                ),
                "{n}"
            );
        }
        let text = String::from_utf8(bytes).unwrap();
        let future = text.replace("\"format\":1", "\"format\":2");
        assert_eq!(
            parse(future.as_bytes(), &KEY, "ssh", 42),
            Err(CacheFileError::Format(2))
        );
        // A data object's attributes are never kept, so a file with them
        // was not written here.
        let data = text.replace(
            "\"attributes\":[{\"class\":2",
            "\"attributes\":[{\"class\":0",
        );
        assert!(matches!(
            parse(data.as_bytes(), &KEY, "ssh", 42),
            Err(CacheFileError::Invalid(_))
        ));
        let label = text.replace("ssh key", "ssh\\u0007key");
        assert!(matches!(
            parse(label.as_bytes(), &KEY, "ssh", 42),
            Err(CacheFileError::Invalid(_))
        ));
    }

    #[test]
    fn files_are_per_handset_and_a_name_from_the_phone_stays_in_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = PublicStore::new(dir.path());
        store.save("phone", &KEY, "../../x", 1, &sample());
        let path = store.path("phone", "../../x");
        assert!(path.starts_with(dir.path().join("cache").join("phone")));
        assert_eq!(store.load("phone", &KEY, "../../x", 1), Some(sample()));
        assert_eq!(store.load("phone", &KEY, "../../x", 2), None);
        assert_eq!(store.load("other", &KEY, "../../x", 1), None);
        std::fs::write(&path, b"{\"format\":1,").unwrap();
        assert_eq!(store.load("phone", &KEY, "../../x", 1), None);
        store.save("phone", &KEY, "../../x", 1, &sample());
        store.forget("phone");
        assert_eq!(store.load("phone", &KEY, "../../x", 1), None);
    }
}
