//! PKCS#11 mechanisms as phonecsp understands them, and how each splits
//! between the computer and the handset: the computer hashes and does the
//! public-key work, the handset only ever sees a digest or a ciphertext.

use crate::types::MechanismParams;
use phonecsp_protocol::{CkRv, HashAlg};

pub use phonecsp_protocol::ck::ckm;

/// Names people type (`phonecsp sign --mechanism SHA256-RSA-PKCS`).
pub const NAMES: [(&str, u32); 29] = [
    ("RSA-PKCS", ckm::RSA_PKCS),
    ("SHA1-RSA-PKCS", ckm::SHA1_RSA_PKCS),
    ("SHA224-RSA-PKCS", ckm::SHA224_RSA_PKCS),
    ("SHA256-RSA-PKCS", ckm::SHA256_RSA_PKCS),
    ("SHA384-RSA-PKCS", ckm::SHA384_RSA_PKCS),
    ("SHA512-RSA-PKCS", ckm::SHA512_RSA_PKCS),
    ("RSA-PKCS-PSS", ckm::RSA_PKCS_PSS),
    ("SHA1-RSA-PKCS-PSS", ckm::SHA1_RSA_PKCS_PSS),
    ("SHA224-RSA-PKCS-PSS", ckm::SHA224_RSA_PKCS_PSS),
    ("SHA256-RSA-PKCS-PSS", ckm::SHA256_RSA_PKCS_PSS),
    ("SHA384-RSA-PKCS-PSS", ckm::SHA384_RSA_PKCS_PSS),
    ("SHA512-RSA-PKCS-PSS", ckm::SHA512_RSA_PKCS_PSS),
    ("RSA-PKCS-OAEP", ckm::RSA_PKCS_OAEP),
    ("RSA-PKCS-KEY-PAIR-GEN", ckm::RSA_PKCS_KEY_PAIR_GEN),
    ("SHA-1", ckm::SHA_1),
    ("SHA224", ckm::SHA224),
    ("SHA256", ckm::SHA256),
    ("SHA384", ckm::SHA384),
    ("SHA512", ckm::SHA512),
    ("ECDSA", ckm::ECDSA),
    ("ECDSA-SHA1", ckm::ECDSA_SHA1),
    ("ECDSA-SHA224", ckm::ECDSA_SHA224),
    ("ECDSA-SHA256", ckm::ECDSA_SHA256),
    ("ECDSA-SHA384", ckm::ECDSA_SHA384),
    ("ECDSA-SHA512", ckm::ECDSA_SHA512),
    ("EDDSA", ckm::EDDSA),
    ("ECDH1-DERIVE", ckm::ECDH1_DERIVE),
    ("EC-KEY-PAIR-GEN", ckm::EC_KEY_PAIR_GEN),
    ("EC-EDWARDS-KEY-PAIR-GEN", ckm::EC_EDWARDS_KEY_PAIR_GEN),
];

pub fn by_name(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .find(|(n, _)| {
            n.eq_ignore_ascii_case(name) || n.replace('-', "_").eq_ignore_ascii_case(name)
        })
        .map(|(_, v)| *v)
}

pub fn name_of(mech: u32) -> Option<&'static str> {
    NAMES.iter().find(|(_, v)| *v == mech).map(|(n, _)| *n)
}

/// A digest mechanism (`CKM_SHA256`, ...).
pub fn digest_alg(mech: u32) -> Option<HashAlg> {
    HashAlg::from_mechanism(u64::from(mech))
}

fn hash_param(p: &MechanismParams, default: Option<HashAlg>) -> Result<HashAlg, CkRv> {
    match (p.hash, default) {
        (0, Some(h)) => Ok(h),
        (0, None) => Err(CkRv::MECHANISM_PARAM_INVALID),
        (v, d) => {
            let h = digest_alg(v).ok_or(CkRv::MECHANISM_PARAM_INVALID)?;
            // CKM_SHA256_RSA_PKCS_PSS with a SHA-1 parameter is inconsistent.
            if d.is_some_and(|d| d != h) {
                return Err(CkRv::MECHANISM_PARAM_INVALID);
            }
            Ok(h)
        }
    }
}

/// A signature mechanism, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signing {
    /// `CKM_RSA_PKCS`: the caller gives the DigestInfo (or other short data).
    Raw,
    /// `CKM_SHA*_RSA_PKCS`: hash here, wrap in a DigestInfo.
    Pkcs1(HashAlg),
    /// `CKM_RSA_PKCS_PSS`: the caller gives the digest.
    PssDigest { hash: HashAlg, salt_len: u32 },
    /// `CKM_SHA*_RSA_PKCS_PSS`: hash here.
    Pss { hash: HashAlg, salt_len: u32 },
    /// `CKM_ECDSA`: the caller gives the digest.
    EcdsaDigest,
    /// `CKM_ECDSA_SHA*`: hash here.
    Ecdsa(HashAlg),
    /// `CKM_EDDSA`: pure Ed25519; the handset signs the message itself.
    Eddsa,
}

impl Signing {
    pub fn from_ckm(mech: u32, params: &MechanismParams) -> Result<Signing, CkRv> {
        let hashed = |h| Ok(Signing::Pkcs1(h));
        let pss = |h: Option<HashAlg>, digest_given: bool| -> Result<Signing, CkRv> {
            let hash = hash_param(params, h)?;
            if params.salt_len > 512 {
                return Err(CkRv::MECHANISM_PARAM_INVALID);
            }
            Ok(if digest_given {
                Signing::PssDigest {
                    hash,
                    salt_len: params.salt_len,
                }
            } else {
                Signing::Pss {
                    hash,
                    salt_len: params.salt_len,
                }
            })
        };
        match mech {
            ckm::RSA_PKCS => Ok(Signing::Raw),
            ckm::SHA1_RSA_PKCS => hashed(HashAlg::Sha1),
            ckm::SHA224_RSA_PKCS => hashed(HashAlg::Sha224),
            ckm::SHA256_RSA_PKCS => hashed(HashAlg::Sha256),
            ckm::SHA384_RSA_PKCS => hashed(HashAlg::Sha384),
            ckm::SHA512_RSA_PKCS => hashed(HashAlg::Sha512),
            ckm::RSA_PKCS_PSS => pss(None, true),
            ckm::SHA1_RSA_PKCS_PSS => pss(Some(HashAlg::Sha1), false),
            ckm::SHA224_RSA_PKCS_PSS => pss(Some(HashAlg::Sha224), false),
            ckm::SHA256_RSA_PKCS_PSS => pss(Some(HashAlg::Sha256), false),
            ckm::SHA384_RSA_PKCS_PSS => pss(Some(HashAlg::Sha384), false),
            ckm::SHA512_RSA_PKCS_PSS => pss(Some(HashAlg::Sha512), false),
            ckm::ECDSA => Ok(Signing::EcdsaDigest),
            ckm::ECDSA_SHA1 => Ok(Signing::Ecdsa(HashAlg::Sha1)),
            ckm::ECDSA_SHA224 => Ok(Signing::Ecdsa(HashAlg::Sha224)),
            ckm::ECDSA_SHA256 => Ok(Signing::Ecdsa(HashAlg::Sha256)),
            ckm::ECDSA_SHA384 => Ok(Signing::Ecdsa(HashAlg::Sha384)),
            ckm::ECDSA_SHA512 => Ok(Signing::Ecdsa(HashAlg::Sha512)),
            // CKM_EDDSA's optional CK_EDDSA_PARAMS (Ed25519ctx/ph) are not
            // offered: pure Ed25519 only, which is what it is without them.
            ckm::EDDSA => Ok(Signing::Eddsa),
            _ => Err(CkRv::MECHANISM_INVALID),
        }
    }

    /// Whether the mechanism is one of an EC key's (`CKK_EC` for ECDSA,
    /// `CKK_EC_EDWARDS` for EdDSA) rather than an RSA key's.
    pub fn key_type(&self) -> u32 {
        use phonecsp_protocol::ck::ckk;
        match self {
            Signing::EcdsaDigest | Signing::Ecdsa(_) => ckk::EC,
            Signing::Eddsa => ckk::EC_EDWARDS,
            _ => ckk::RSA,
        }
    }
}

/// An encryption mechanism, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encryption {
    Pkcs1,
    Oaep { hash: HashAlg, label: Vec<u8> },
}

impl Encryption {
    pub fn from_ckm(mech: u32, params: &MechanismParams) -> Result<Encryption, CkRv> {
        match mech {
            ckm::RSA_PKCS => Ok(Encryption::Pkcs1),
            ckm::RSA_PKCS_OAEP => {
                if params.label.len() > phonecsp_protocol::message::MAX_DATA_LEN {
                    return Err(CkRv::MECHANISM_PARAM_INVALID);
                }
                Ok(Encryption::Oaep {
                    hash: hash_param(params, Some(HashAlg::Sha1))
                        .or_else(|_| hash_param(params, None))?,
                    label: params.label.clone(),
                })
            }
            _ => Err(CkRv::MECHANISM_INVALID),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_mechanisms() {
        let params = |hash, salt_len| MechanismParams {
            hash,
            salt_len,
            label: vec![],
        };
        let pss_sha256 = Signing::Pss {
            hash: HashAlg::Sha256,
            salt_len: 32,
        };
        // (mechanism, parameters, what it resolves to)
        let cases = [
            (
                ckm::SHA256_RSA_PKCS,
                params(0, 0),
                Ok(Signing::Pkcs1(HashAlg::Sha256)),
            ),
            // PSS over a given digest has no default hash.
            (
                ckm::RSA_PKCS_PSS,
                params(0, 0),
                Err(CkRv::MECHANISM_PARAM_INVALID),
            ),
            (
                ckm::SHA256_RSA_PKCS_PSS,
                params(ckm::SHA256, 32),
                Ok(pss_sha256),
            ),
            // SHA-256 PSS with a SHA-1 parameter is inconsistent.
            (
                ckm::SHA256_RSA_PKCS_PSS,
                params(ckm::SHA_1, 20),
                Err(CkRv::MECHANISM_PARAM_INVALID),
            ),
            (0x1234, params(0, 0), Err(CkRv::MECHANISM_INVALID)),
        ];
        for (mech, p, want) in cases {
            assert_eq!(Signing::from_ckm(mech, &p), want, "{mech:#x}");
        }
        let oaep = Encryption::Oaep {
            hash: HashAlg::Sha256,
            label: vec![],
        };
        assert_eq!(
            Encryption::from_ckm(ckm::RSA_PKCS_OAEP, &params(ckm::SHA256, 0)),
            Ok(oaep)
        );
        assert_eq!(by_name("sha256-rsa-pkcs"), Some(ckm::SHA256_RSA_PKCS));
        assert_eq!(name_of(ckm::RSA_PKCS_OAEP), Some("RSA-PKCS-OAEP"));
    }
}
