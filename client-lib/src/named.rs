//! Mechanisms by name, as the object API's `org.phonecsp.Key1` methods
//! take them: `"rsa-pss-sha256"` with an options dictionary
//! (`{"salt-length": <uint32 32>}`) instead of a `CKM_*` number and a
//! parameter structure. The names are built from the hash list, so a new
//! hash is a new name in every family at once; the result is the same
//! [`Signing`] or [`Encryption`] the PKCS#11 numbers resolve to, so both
//! interfaces share every check after this one.

use crate::error::{Error, Result};
use crate::mechanism::{Encryption, Signing};
use phonecsp_protocol::limits::MAX_DATA_LEN;
use phonecsp_protocol::{CkRv, HashAlg};
use std::collections::HashMap;
use zbus::{OwnedVariant, Variant};

/// A mechanism's options (`a{sv}`).
pub type Options = HashMap<String, OwnedVariant>;

/// The option names, with the D-Bus type each takes.
pub const SALT_LENGTH: &str = "salt-length";
pub const HASH: &str = "hash";
pub const LABEL: &str = "label";

/// Largest PSS salt accepted (as for the PKCS#11 parameters).
const MAX_SALT: u32 = 512;

/// Every signature mechanism's name, in a stable order.
pub fn signing_names() -> Vec<String> {
    let hashed = |family: &str| HashAlg::ALL.map(|h| format!("{family}-{}", h.name()));
    let mut names = vec!["rsa-pkcs1".to_owned()];
    names.extend(hashed("rsa-pkcs1"));
    names.push("rsa-pss".to_owned());
    names.extend(hashed("rsa-pss"));
    names.push("ecdsa".to_owned());
    names.extend(hashed("ecdsa"));
    names.push("eddsa".to_owned());
    names
}

/// Every encryption (and decryption) mechanism's name.
pub fn encryption_names() -> Vec<String> {
    let mut names = vec!["rsa-pkcs1".to_owned()];
    names.extend(HashAlg::ALL.map(|h| format!("rsa-oaep-{}", h.name())));
    names
}

fn refuse(rv: CkRv, detail: String) -> Error {
    Error::token(rv, detail)
}

/// `name` split as `family-hash`, where the hash is one of ours.
fn family_and_hash(name: &str) -> (&str, Option<HashAlg>) {
    match name.rsplit_once('-') {
        Some((family, h)) => match HashAlg::from_name(h) {
            Some(hash) if h == hash.name() => (family, Some(hash)),
            _ => (name, None),
        },
        None => (name, None),
    }
}

/// The options a caller gave, read once each; what is left over at the
/// end was not understood and is refused.
struct Reader<'a> {
    mechanism: &'a str,
    options: HashMap<&'a str, &'a OwnedVariant>,
}

impl<'a> Reader<'a> {
    fn new(mechanism: &'a str, options: &'a Options) -> Reader<'a> {
        Reader {
            mechanism,
            options: options.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }

    fn wrong_type(&self, key: &str, want: &str) -> Error {
        refuse(
            CkRv::MECHANISM_PARAM_INVALID,
            format!("option '{key}' of {} must be {want}", self.mechanism),
        )
    }

    fn u32(&mut self, key: &str) -> Result<Option<u32>> {
        match self.options.remove(key).map(|v| &**v) {
            None => Ok(None),
            Some(Variant::U32(v)) => Ok(Some(*v)),
            Some(_) => Err(self.wrong_type(key, "a uint32 (u)")),
        }
    }

    fn string(&mut self, key: &str) -> Result<Option<String>> {
        match self.options.remove(key).map(|v| &**v) {
            None => Ok(None),
            Some(Variant::Str(s)) => Ok(Some(s.to_string())),
            Some(_) => Err(self.wrong_type(key, "a string (s)")),
        }
    }

    fn bytes(&mut self, key: &str) -> Result<Option<Vec<u8>>> {
        let Some(v) = self.options.remove(key) else {
            return Ok(None);
        };
        match Vec::<u8>::try_from(
            v.try_clone()
                .map_err(|e| refuse(CkRv::GENERAL_ERROR, e.to_string()))?,
        ) {
            Ok(b) => Ok(Some(b)),
            Err(_) => Err(self.wrong_type(key, "bytes (ay)")),
        }
    }

    /// Refuses any option not read.
    fn done(self) -> Result<()> {
        let mut left: Vec<_> = self.options.keys().copied().collect();
        left.sort_unstable();
        match left.first() {
            None => Ok(()),
            Some(k) => Err(refuse(
                CkRv::MECHANISM_PARAM_INVALID,
                format!("{} takes no option '{k}'", self.mechanism),
            )),
        }
    }
}

fn unknown(name: &str, what: &str, names: Vec<String>) -> Error {
    refuse(
        CkRv::MECHANISM_INVALID,
        format!(
            "no {what} mechanism '{name}'; there are: {}",
            names.join(", ")
        ),
    )
}

/// A signature mechanism by name. `rsa-pkcs1` signs the bytes given (a
/// DigestInfo); `rsa-pkcs1-HASH` and `rsa-pss-HASH` hash the data on the
/// computer first; `rsa-pss` takes a digest made with the `hash` option.
/// PSS takes `salt-length` (default: the hash's length).
pub fn signing(name: &str, options: &Options) -> Result<Signing> {
    let mut o = Reader::new(name, options);
    let pss = |o: &mut Reader, hash: HashAlg| -> Result<u32> {
        let salt = o.u32(SALT_LENGTH)?.unwrap_or(hash.output_len() as u32);
        if salt > MAX_SALT {
            return Err(refuse(
                CkRv::MECHANISM_PARAM_INVALID,
                format!("salt-length is at most {MAX_SALT}"),
            ));
        }
        Ok(salt)
    };
    let signing = match family_and_hash(name) {
        ("rsa-pkcs1", None) => Signing::Raw,
        ("rsa-pkcs1", Some(hash)) => Signing::Pkcs1(hash),
        ("rsa-pss", Some(hash)) => Signing::Pss {
            hash,
            salt_len: pss(&mut o, hash)?,
        },
        ("rsa-pss", None) => {
            let hash = o.string(HASH)?.ok_or_else(|| {
                refuse(
                    CkRv::MECHANISM_PARAM_INVALID,
                    "rsa-pss signs a digest: say which with the 'hash' option".into(),
                )
            })?;
            let hash = HashAlg::ALL
                .into_iter()
                .find(|h| h.name() == hash)
                .ok_or_else(|| {
                    refuse(
                        CkRv::MECHANISM_PARAM_INVALID,
                        format!("unknown hash '{hash}'"),
                    )
                })?;
            Signing::PssDigest {
                hash,
                salt_len: pss(&mut o, hash)?,
            }
        }
        // EC keys: `ecdsa` signs a digest given, `ecdsa-HASH` hashes on the
        // computer, `eddsa` signs the message (pure Ed25519).
        ("ecdsa", None) => Signing::EcdsaDigest,
        ("ecdsa", Some(hash)) => Signing::Ecdsa(hash),
        ("eddsa", None) => Signing::Eddsa,
        _ => return Err(unknown(name, "signature", signing_names())),
    };
    o.done()?;
    Ok(signing)
}

/// An encryption mechanism by name: `rsa-pkcs1` (PKCS#1 v1.5) or
/// `rsa-oaep-HASH` (MGF1 with the same hash), which takes a `label`.
pub fn encryption(name: &str, options: &Options) -> Result<Encryption> {
    let mut o = Reader::new(name, options);
    let encryption = match family_and_hash(name) {
        ("rsa-pkcs1", None) => Encryption::Pkcs1,
        ("rsa-oaep", Some(hash)) => {
            let label = o.bytes(LABEL)?.unwrap_or_default();
            if label.len() > MAX_DATA_LEN {
                return Err(refuse(
                    CkRv::MECHANISM_PARAM_INVALID,
                    format!("an OAEP label is at most {MAX_DATA_LEN} bytes"),
                ));
            }
            Encryption::Oaep { hash, label }
        }
        _ => return Err(unknown(name, "encryption", encryption_names())),
    };
    o.done()?;
    Ok(encryption)
}

/// A key to generate, as `org.phonecsp.Token1.GenerateKey` asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRequest {
    pub bits: u32,
    /// Empty: the phone chooses.
    pub id: Vec<u8>,
    pub label: String,
}

/// Key types by name: "rsa" takes `bits` (u, default 2048), `label` (s)
/// and `id` (ay).
pub fn key_request(kind: &str, options: &Options) -> Result<KeyRequest> {
    let mut o = Reader::new(kind, options);
    if kind != "rsa" {
        return Err(refuse(
            CkRv::MECHANISM_INVALID,
            format!("no key type '{kind}'; there is: rsa"),
        ));
    }
    let request = KeyRequest {
        bits: o.u32("bits")?.unwrap_or(2048),
        id: o.bytes("id")?.unwrap_or_default(),
        label: o.string("label")?.unwrap_or_default(),
    };
    o.done()?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, Variant<'_>)]) -> Options {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.try_to_owned().unwrap()))
            .collect()
    }

    #[test]
    fn every_listed_name_resolves_and_nothing_else_does() {
        for n in signing_names() {
            let o = match n.as_str() {
                "rsa-pss" => options(&[(HASH, Variant::from("sha256"))]),
                _ => Options::new(),
            };
            signing(&n, &o).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        for n in encryption_names() {
            encryption(&n, &Options::new()).unwrap_or_else(|e| panic!("{n}: {e}"));
        }
        for bad in [
            "rsa-pkcs1-md5",
            "rsa-oaep",
            "ecdsa-md5",
            "eddsa-sha512",
            "RSA-PKCS1-SHA256",
            "",
        ] {
            assert_eq!(
                signing(bad, &Options::new()).unwrap_err().rv(),
                CkRv::MECHANISM_INVALID,
                "{bad}"
            );
        }
        assert_eq!(
            encryption("rsa-pss-sha256", &Options::new())
                .unwrap_err()
                .rv(),
            CkRv::MECHANISM_INVALID
        );
    }

    #[test]
    fn names_mean_what_the_pkcs11_numbers_mean() {
        assert_eq!(
            signing("rsa-pkcs1-sha384", &Options::new()).unwrap(),
            Signing::Pkcs1(HashAlg::Sha384)
        );
        assert_eq!(
            signing("rsa-pss-sha256", &Options::new()).unwrap(),
            Signing::Pss {
                hash: HashAlg::Sha256,
                salt_len: 32
            }
        );
        let o = options(&[
            (SALT_LENGTH, Variant::U32(0)),
            (HASH, Variant::from("sha512")),
        ]);
        assert_eq!(
            signing("rsa-pss", &o).unwrap(),
            Signing::PssDigest {
                hash: HashAlg::Sha512,
                salt_len: 0
            }
        );
        let o = options(&[(LABEL, Variant::from(&b"disk"[..]))]);
        assert_eq!(
            encryption("rsa-oaep-sha256", &o).unwrap(),
            Encryption::Oaep {
                hash: HashAlg::Sha256,
                label: b"disk".to_vec()
            }
        );
    }

    #[test]
    fn options_of_the_wrong_type_or_unknown_are_refused_by_name() {
        let cases = [
            (
                "rsa-pss-sha256",
                options(&[(SALT_LENGTH, Variant::from("32"))]),
                "must be a uint32",
            ),
            (
                "rsa-pss-sha256",
                options(&[(SALT_LENGTH, Variant::U32(513))]),
                "at most 512",
            ),
            (
                "rsa-pkcs1-sha256",
                options(&[(SALT_LENGTH, Variant::U32(1))]),
                "no option 'salt-length'",
            ),
            ("rsa-pss", Options::new(), "'hash' option"),
            (
                "rsa-pss",
                options(&[(HASH, Variant::from("md5"))]),
                "unknown hash 'md5'",
            ),
            (
                "rsa-oaep-sha1",
                options(&[(LABEL, Variant::from("x"))]),
                "must be bytes",
            ),
        ];
        for (name, o, says) in cases {
            let e = match name.starts_with("rsa-oaep") {
                true => encryption(name, &o).unwrap_err(),
                false => signing(name, &o).unwrap_err(),
            };
            assert_eq!(e.rv(), CkRv::MECHANISM_PARAM_INVALID, "{name}");
            assert!(e.to_string().contains(says), "{name}: {e}");
        }
    }
}
