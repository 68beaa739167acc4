//! The mechanisms every token offers, with honest `CK_MECHANISM_INFO`:
//! `CKF_HW` marks the mechanisms whose private-key step runs on the
//! handset; hashing, verifying and encrypting run here, in the calling
//! process, and digests and the secret-key ciphers are plain software.
//! RSA key sizes are in bits, AES and DES3 key sizes in bytes, as the
//! standard has them. Also the conversion of a
//! caller's mechanism parameters into the client library's terms.

use cryptoki_sys::*;
use phonecsp::MechanismParams;
use phonecsp::mechanism::{Encryption, Signing};
use phonecsp_protocol::limits::{MAX_RSA_BITS, MIN_RSA_BITS};

use crate::error::{Result, fail};

/// RSA modulus sizes in bits the handset generates and uses.
pub const MIN_BITS: CK_ULONG = MIN_RSA_BITS as CK_ULONG;
pub const MAX_BITS: CK_ULONG = MAX_RSA_BITS as CK_ULONG;

const SIGN: CK_FLAGS = CKF_HW | CKF_SIGN | CKF_VERIFY;
/// RSA encryption's flags: unwrapping is the phone's decryption, wrapping
/// encryption here.
const CRYPT: CK_FLAGS = CKF_HW | CKF_ENCRYPT | CKF_DECRYPT | CKF_WRAP | CKF_UNWRAP;
const CIPHER: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT;
/// The EC capability flags (PKCS#11 3.0 section 2.3.2): prime-field
/// curves named by OID, uncompressed points.
const EC_CAPS: CK_FLAGS = CKF_EC_F_P | CKF_EC_OID | CKF_EC_UNCOMPRESS;
/// EC key sizes in bits, as the standard has them for EC mechanisms (the
/// length of the order): P-256 to P-384; Ed25519 is 255.
pub const EC_MIN_BITS: CK_ULONG = 256;
pub const EC_MAX_BITS: CK_ULONG = 384;
pub const ED25519_BITS: CK_ULONG = 255;

/// The mechanisms by what they share: `(flags, min key size, max key
/// size, mechanisms)`, in the order `C_GetMechanismList` gives them.
const GROUPS: &[(CK_FLAGS, CK_ULONG, CK_ULONG, &[CK_MECHANISM_TYPE])] = &[
    (
        CKF_HW | CKF_GENERATE_KEY_PAIR,
        MIN_BITS,
        MAX_BITS,
        &[CKM_RSA_PKCS_KEY_PAIR_GEN],
    ),
    (SIGN | CRYPT, MIN_BITS, MAX_BITS, &[CKM_RSA_PKCS]),
    (
        SIGN,
        MIN_BITS,
        MAX_BITS,
        &[
            CKM_SHA1_RSA_PKCS,
            CKM_SHA224_RSA_PKCS,
            CKM_SHA256_RSA_PKCS,
            CKM_SHA384_RSA_PKCS,
            CKM_SHA512_RSA_PKCS,
            CKM_RSA_PKCS_PSS,
            CKM_SHA1_RSA_PKCS_PSS,
            CKM_SHA224_RSA_PKCS_PSS,
            CKM_SHA256_RSA_PKCS_PSS,
            CKM_SHA384_RSA_PKCS_PSS,
            CKM_SHA512_RSA_PKCS_PSS,
        ],
    ),
    (CRYPT, MIN_BITS, MAX_BITS, &[CKM_RSA_PKCS_OAEP]),
    (
        CKF_HW | CKF_GENERATE_KEY_PAIR | EC_CAPS,
        EC_MIN_BITS,
        EC_MAX_BITS,
        &[CKM_EC_KEY_PAIR_GEN],
    ),
    (
        SIGN | EC_CAPS,
        EC_MIN_BITS,
        EC_MAX_BITS,
        &[
            CKM_ECDSA,
            CKM_ECDSA_SHA1,
            CKM_ECDSA_SHA224,
            CKM_ECDSA_SHA256,
            CKM_ECDSA_SHA384,
            CKM_ECDSA_SHA512,
        ],
    ),
    (
        CKF_HW | CKF_DERIVE | EC_CAPS,
        EC_MIN_BITS,
        EC_MAX_BITS,
        &[CKM_ECDH1_DERIVE],
    ),
    (
        CKF_HW | CKF_GENERATE_KEY_PAIR | EC_CAPS,
        ED25519_BITS,
        ED25519_BITS,
        &[CKM_EC_EDWARDS_KEY_PAIR_GEN],
    ),
    (SIGN | EC_CAPS, ED25519_BITS, ED25519_BITS, &[CKM_EDDSA]),
    (
        CKF_DIGEST,
        0,
        0,
        &[CKM_SHA_1, CKM_SHA224, CKM_SHA256, CKM_SHA384, CKM_SHA512],
    ),
    (CKF_GENERATE, 16, 32, &[CKM_AES_KEY_GEN]),
    (CIPHER, 16, 32, &[CKM_AES_CBC, CKM_AES_GCM]),
    // Also unwraps a private key onto the phone (Module::unwrap_private_key).
    (CIPHER | CKF_UNWRAP, 16, 32, &[CKM_AES_CBC_PAD]),
    // Only unwraps, a private key onto the phone (RFC 5649).
    (
        CKF_UNWRAP,
        16,
        32,
        &[CKM_AES_KEY_WRAP_PAD, CKM_AES_KEY_WRAP_KWP],
    ),
    (CIPHER, 24, 24, &[CKM_DES3_CBC, CKM_DES3_CBC_PAD]),
];

/// Every mechanism as `(mechanism, min key size, max key size, flags)`.
pub fn all() -> impl Iterator<Item = (CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS)> {
    GROUPS
        .iter()
        .flat_map(|&(flags, min, max, ms)| ms.iter().map(move |&m| (m, min, max, flags)))
}

/// The mechanisms, in table order.
pub fn list() -> Vec<CK_MECHANISM_TYPE> {
    all().map(|(m, ..)| m).collect()
}

pub fn info(mech: CK_MECHANISM_TYPE) -> Result<CK_MECHANISM_INFO> {
    match all().find(|(m, ..)| *m == mech) {
        Some((_, min, max, flags)) => Ok(CK_MECHANISM_INFO {
            ulMinKeySize: min,
            ulMaxKeySize: max,
            flags,
        }),
        None => fail(CKR_MECHANISM_INVALID),
    }
}

/// A mechanism's parameter, as read from the caller's `CK_MECHANISM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    None,
    Pss {
        hash: CK_MECHANISM_TYPE,
        mgf: CK_ULONG,
        salt_len: CK_ULONG,
    },
    Oaep {
        hash: CK_MECHANISM_TYPE,
        mgf: CK_ULONG,
        label: Vec<u8>,
    },
    /// An initialisation vector (the CBC mechanisms).
    Iv(Vec<u8>),
    /// `CK_ECDH1_DERIVE_PARAMS`: the KDF (`CKD_*`), its shared data, and
    /// the peer's public point.
    Ecdh {
        kdf: CK_ULONG,
        shared: Vec<u8>,
        public: Vec<u8>,
    },
    Gcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
        tag_bits: CK_ULONG,
    },
    /// A parameter given to a mechanism that takes none.
    Other,
}

/// A caller's mechanism.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub mechanism: CK_MECHANISM_TYPE,
    pub param: Param,
}

/// `CKG_MGF1_*` for a `CKM_SHA*`.
fn mgf_for(hash: CK_MECHANISM_TYPE) -> Option<CK_ULONG> {
    Some(match hash {
        CKM_SHA_1 => CKG_MGF1_SHA1,
        CKM_SHA224 => CKG_MGF1_SHA224,
        CKM_SHA256 => CKG_MGF1_SHA256,
        CKM_SHA384 => CKG_MGF1_SHA384,
        CKM_SHA512 => CKG_MGF1_SHA512,
        _ => return None,
    })
}

fn small(v: CK_ULONG) -> Result<u32> {
    u32::try_from(v).or_else(|_| fail(CKR_MECHANISM_PARAM_INVALID))
}

/// A signature mechanism, resolved. The handset uses MGF1 with the
/// message hash, so any other MGF is refused.
pub fn signing(m: &Mechanism) -> Result<Signing> {
    let params = match (&m.param, m.mechanism) {
        (Param::None, CKM_RSA_PKCS | CKM_SHA1_RSA_PKCS | CKM_SHA224_RSA_PKCS)
        | (Param::None, CKM_SHA256_RSA_PKCS | CKM_SHA384_RSA_PKCS | CKM_SHA512_RSA_PKCS)
        | (Param::None, CKM_ECDSA | CKM_ECDSA_SHA1 | CKM_ECDSA_SHA224 | CKM_ECDSA_SHA256)
        | (Param::None, CKM_ECDSA_SHA384 | CKM_ECDSA_SHA512 | CKM_EDDSA) => {
            MechanismParams::default()
        }
        (
            Param::Pss {
                hash,
                mgf,
                salt_len,
            },
            _,
        ) if is_pss(m.mechanism) => {
            if mgf_for(*hash) != Some(*mgf) {
                return fail(CKR_MECHANISM_PARAM_INVALID);
            }
            MechanismParams {
                hash: small(*hash)?,
                salt_len: small(*salt_len)?,
                label: Vec::new(),
            }
        }
        _ if is_pss(m.mechanism) || is_sign(m.mechanism) => {
            return fail(CKR_MECHANISM_PARAM_INVALID);
        }
        _ => return fail(CKR_MECHANISM_INVALID),
    };
    Ok(Signing::from_ckm(small(m.mechanism)?, &params)?)
}

/// The parameter structure a mechanism takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    Nothing,
    Pss,
    Oaep,
    /// An IV of this many bytes.
    Iv(usize),
    Gcm,
    Ecdh,
}

/// Which parameter `m` takes: decided by the mechanism, so that a
/// parameter's size never decides what it is.
pub fn takes(m: CK_MECHANISM_TYPE) -> Takes {
    if is_pss(m) {
        Takes::Pss
    } else if m == CKM_RSA_PKCS_OAEP {
        Takes::Oaep
    } else if matches!(m, CKM_AES_CBC | CKM_AES_CBC_PAD) {
        Takes::Iv(16)
    } else if matches!(m, CKM_DES3_CBC | CKM_DES3_CBC_PAD) {
        Takes::Iv(8)
    } else if m == CKM_AES_GCM {
        Takes::Gcm
    } else if m == CKM_ECDH1_DERIVE {
        Takes::Ecdh
    } else {
        Takes::Nothing
    }
}

fn is_pss(m: CK_MECHANISM_TYPE) -> bool {
    matches!(
        m,
        CKM_RSA_PKCS_PSS
            | CKM_SHA1_RSA_PKCS_PSS
            | CKM_SHA224_RSA_PKCS_PSS
            | CKM_SHA256_RSA_PKCS_PSS
            | CKM_SHA384_RSA_PKCS_PSS
            | CKM_SHA512_RSA_PKCS_PSS
    )
}

/// Whether `m` is one of the mechanisms the module lists.
pub fn is_known(m: CK_MECHANISM_TYPE) -> bool {
    all().any(|(x, ..)| x == m)
}

fn is_sign(m: CK_MECHANISM_TYPE) -> bool {
    all().any(|(x, _, _, f)| x == m && f & CKF_SIGN != 0)
}

/// An encryption mechanism, resolved: PKCS#1 v1.5 or OAEP with MGF1 of the
/// same hash, the label given as `CKZ_DATA_SPECIFIED`.
pub fn encryption(m: &Mechanism) -> Result<Encryption> {
    let params = match (&m.param, m.mechanism) {
        (Param::None, CKM_RSA_PKCS) => MechanismParams::default(),
        (Param::Oaep { hash, mgf, label }, CKM_RSA_PKCS_OAEP) => {
            if mgf_for(*hash) != Some(*mgf) {
                return fail(CKR_MECHANISM_PARAM_INVALID);
            }
            MechanismParams {
                hash: small(*hash)?,
                salt_len: 0,
                label: label.clone(),
            }
        }
        (_, CKM_RSA_PKCS | CKM_RSA_PKCS_OAEP) => return fail(CKR_MECHANISM_PARAM_INVALID),
        _ => return fail(CKR_MECHANISM_INVALID),
    };
    Ok(Encryption::from_ckm(small(m.mechanism)?, &params)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonecsp_protocol::HashAlg;

    #[test]
    fn every_listed_mechanism_has_info() {
        let l = list();
        assert_eq!(l.len(), 37);
        for m in l {
            let i = info(m).unwrap();
            assert!(i.flags != 0);
        }
        assert_eq!(info(0x1234).unwrap_err().rv(), CKR_MECHANISM_INVALID);
        assert_eq!(info(CKM_SHA256).unwrap().flags & CKF_HW, 0);
        assert_ne!(info(CKM_RSA_PKCS).unwrap().flags & CKF_HW, 0);
    }

    #[test]
    fn resolves_parameters() {
        let pss = Mechanism {
            mechanism: CKM_SHA256_RSA_PKCS_PSS,
            param: Param::Pss {
                hash: CKM_SHA256,
                mgf: CKG_MGF1_SHA256,
                salt_len: 32,
            },
        };
        assert_eq!(
            signing(&pss).unwrap(),
            Signing::Pss {
                hash: HashAlg::Sha256,
                salt_len: 32
            }
        );
        let bad_mgf = Mechanism {
            param: Param::Pss {
                hash: CKM_SHA256,
                mgf: CKG_MGF1_SHA1,
                salt_len: 32,
            },
            ..pss.clone()
        };
        assert_eq!(
            signing(&bad_mgf).unwrap_err().rv(),
            CKR_MECHANISM_PARAM_INVALID
        );
        let no_param = Mechanism {
            param: Param::None,
            ..pss
        };
        assert_eq!(
            signing(&no_param).unwrap_err().rv(),
            CKR_MECHANISM_PARAM_INVALID
        );
        let digest = Mechanism {
            mechanism: CKM_SHA256,
            param: Param::None,
        };
        assert_eq!(signing(&digest).unwrap_err().rv(), CKR_MECHANISM_INVALID);
        let oaep = Mechanism {
            mechanism: CKM_RSA_PKCS_OAEP,
            param: Param::Oaep {
                hash: CKM_SHA256,
                mgf: CKG_MGF1_SHA256,
                label: vec![],
            },
        };
        assert_eq!(
            encryption(&oaep).unwrap(),
            Encryption::Oaep {
                hash: HashAlg::Sha256,
                label: vec![]
            }
        );
        assert_eq!(
            encryption(&oaep).unwrap().wire().0,
            CKM_RSA_PKCS_OAEP as u32
        );
    }
}
