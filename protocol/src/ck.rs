//! The PKCS#11 numbers that cross the link: return values, object classes,
//! attribute types and mechanisms, with their standard values so that the
//! computer sees exactly the error the handset's module produced.

/// A PKCS#11 return value (`CK_RV`). All defined values fit in 32 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CkRv(pub u32);

impl CkRv {
    pub const OK: CkRv = CkRv(0x000);
    pub const HOST_MEMORY: CkRv = CkRv(0x002);
    pub const GENERAL_ERROR: CkRv = CkRv(0x005);
    pub const FUNCTION_FAILED: CkRv = CkRv(0x006);
    pub const ARGUMENTS_BAD: CkRv = CkRv(0x007);
    pub const ATTRIBUTE_SENSITIVE: CkRv = CkRv(0x011);
    pub const ATTRIBUTE_TYPE_INVALID: CkRv = CkRv(0x012);
    pub const ATTRIBUTE_VALUE_INVALID: CkRv = CkRv(0x013);
    pub const DATA_INVALID: CkRv = CkRv(0x020);
    pub const DATA_LEN_RANGE: CkRv = CkRv(0x021);
    pub const DEVICE_ERROR: CkRv = CkRv(0x030);
    pub const DEVICE_MEMORY: CkRv = CkRv(0x031);
    pub const DEVICE_REMOVED: CkRv = CkRv(0x032);
    pub const ENCRYPTED_DATA_INVALID: CkRv = CkRv(0x040);
    pub const ENCRYPTED_DATA_LEN_RANGE: CkRv = CkRv(0x041);
    pub const FUNCTION_CANCELED: CkRv = CkRv(0x050);
    pub const FUNCTION_NOT_SUPPORTED: CkRv = CkRv(0x054);
    pub const KEY_HANDLE_INVALID: CkRv = CkRv(0x060);
    pub const KEY_SIZE_RANGE: CkRv = CkRv(0x062);
    pub const KEY_TYPE_INCONSISTENT: CkRv = CkRv(0x063);
    pub const KEY_FUNCTION_NOT_PERMITTED: CkRv = CkRv(0x068);
    pub const MECHANISM_INVALID: CkRv = CkRv(0x070);
    pub const MECHANISM_PARAM_INVALID: CkRv = CkRv(0x071);
    pub const OBJECT_HANDLE_INVALID: CkRv = CkRv(0x082);
    pub const OPERATION_NOT_INITIALIZED: CkRv = CkRv(0x091);
    pub const PIN_INCORRECT: CkRv = CkRv(0x0A0);
    pub const PIN_INVALID: CkRv = CkRv(0x0A1);
    pub const PIN_LEN_RANGE: CkRv = CkRv(0x0A2);
    pub const PIN_LOCKED: CkRv = CkRv(0x0A4);
    pub const SESSION_HANDLE_INVALID: CkRv = CkRv(0x0B3);
    pub const TEMPLATE_INCONSISTENT: CkRv = CkRv(0x0D1);
    pub const TOKEN_NOT_PRESENT: CkRv = CkRv(0x0E0);
    pub const TOKEN_NOT_RECOGNIZED: CkRv = CkRv(0x0E1);
    pub const USER_ALREADY_LOGGED_IN: CkRv = CkRv(0x100);
    pub const USER_NOT_LOGGED_IN: CkRv = CkRv(0x101);
    pub const USER_TYPE_INVALID: CkRv = CkRv(0x103);
    pub const RANDOM_NO_RNG: CkRv = CkRv(0x121);
    pub const BUFFER_TOO_SMALL: CkRv = CkRv(0x150);
    pub const CRYPTOKI_NOT_INITIALIZED: CkRv = CkRv(0x190);
    pub const FUNCTION_REJECTED: CkRv = CkRv(0x200);
    pub const SIGNATURE_INVALID: CkRv = CkRv(0x0C0);
    pub const SIGNATURE_LEN_RANGE: CkRv = CkRv(0x0C1);
    pub const CURVE_NOT_SUPPORTED: CkRv = CkRv(0x140);

    /// Every value [`CkRv::name`] knows, for mapping names back to values.
    pub const KNOWN: [CkRv; 43] = [
        CkRv::OK,
        CkRv::HOST_MEMORY,
        CkRv::GENERAL_ERROR,
        CkRv::FUNCTION_FAILED,
        CkRv::ARGUMENTS_BAD,
        CkRv::ATTRIBUTE_SENSITIVE,
        CkRv::ATTRIBUTE_TYPE_INVALID,
        CkRv::ATTRIBUTE_VALUE_INVALID,
        CkRv::DATA_INVALID,
        CkRv::DATA_LEN_RANGE,
        CkRv::DEVICE_ERROR,
        CkRv::DEVICE_MEMORY,
        CkRv::DEVICE_REMOVED,
        CkRv::ENCRYPTED_DATA_INVALID,
        CkRv::ENCRYPTED_DATA_LEN_RANGE,
        CkRv::FUNCTION_CANCELED,
        CkRv::FUNCTION_NOT_SUPPORTED,
        CkRv::KEY_HANDLE_INVALID,
        CkRv::KEY_SIZE_RANGE,
        CkRv::KEY_TYPE_INCONSISTENT,
        CkRv::KEY_FUNCTION_NOT_PERMITTED,
        CkRv::MECHANISM_INVALID,
        CkRv::MECHANISM_PARAM_INVALID,
        CkRv::OBJECT_HANDLE_INVALID,
        CkRv::OPERATION_NOT_INITIALIZED,
        CkRv::PIN_INCORRECT,
        CkRv::PIN_INVALID,
        CkRv::PIN_LEN_RANGE,
        CkRv::PIN_LOCKED,
        CkRv::SESSION_HANDLE_INVALID,
        CkRv::TEMPLATE_INCONSISTENT,
        CkRv::TOKEN_NOT_PRESENT,
        CkRv::TOKEN_NOT_RECOGNIZED,
        CkRv::USER_ALREADY_LOGGED_IN,
        CkRv::USER_NOT_LOGGED_IN,
        CkRv::USER_TYPE_INVALID,
        CkRv::RANDOM_NO_RNG,
        CkRv::BUFFER_TOO_SMALL,
        CkRv::CRYPTOKI_NOT_INITIALIZED,
        CkRv::FUNCTION_REJECTED,
        CkRv::SIGNATURE_INVALID,
        CkRv::SIGNATURE_LEN_RANGE,
        CkRv::CURVE_NOT_SUPPORTED,
    ];

    /// The PKCS#11 name, for messages people read.
    pub fn name(self) -> &'static str {
        match self {
            CkRv::OK => "CKR_OK",
            CkRv::HOST_MEMORY => "CKR_HOST_MEMORY",
            CkRv::GENERAL_ERROR => "CKR_GENERAL_ERROR",
            CkRv::FUNCTION_FAILED => "CKR_FUNCTION_FAILED",
            CkRv::ARGUMENTS_BAD => "CKR_ARGUMENTS_BAD",
            CkRv::ATTRIBUTE_SENSITIVE => "CKR_ATTRIBUTE_SENSITIVE",
            CkRv::ATTRIBUTE_TYPE_INVALID => "CKR_ATTRIBUTE_TYPE_INVALID",
            CkRv::ATTRIBUTE_VALUE_INVALID => "CKR_ATTRIBUTE_VALUE_INVALID",
            CkRv::DATA_INVALID => "CKR_DATA_INVALID",
            CkRv::DATA_LEN_RANGE => "CKR_DATA_LEN_RANGE",
            CkRv::DEVICE_ERROR => "CKR_DEVICE_ERROR",
            CkRv::DEVICE_MEMORY => "CKR_DEVICE_MEMORY",
            CkRv::DEVICE_REMOVED => "CKR_DEVICE_REMOVED",
            CkRv::ENCRYPTED_DATA_INVALID => "CKR_ENCRYPTED_DATA_INVALID",
            CkRv::ENCRYPTED_DATA_LEN_RANGE => "CKR_ENCRYPTED_DATA_LEN_RANGE",
            CkRv::FUNCTION_CANCELED => "CKR_FUNCTION_CANCELED",
            CkRv::FUNCTION_NOT_SUPPORTED => "CKR_FUNCTION_NOT_SUPPORTED",
            CkRv::KEY_HANDLE_INVALID => "CKR_KEY_HANDLE_INVALID",
            CkRv::KEY_SIZE_RANGE => "CKR_KEY_SIZE_RANGE",
            CkRv::KEY_TYPE_INCONSISTENT => "CKR_KEY_TYPE_INCONSISTENT",
            CkRv::KEY_FUNCTION_NOT_PERMITTED => "CKR_KEY_FUNCTION_NOT_PERMITTED",
            CkRv::MECHANISM_INVALID => "CKR_MECHANISM_INVALID",
            CkRv::MECHANISM_PARAM_INVALID => "CKR_MECHANISM_PARAM_INVALID",
            CkRv::OBJECT_HANDLE_INVALID => "CKR_OBJECT_HANDLE_INVALID",
            CkRv::OPERATION_NOT_INITIALIZED => "CKR_OPERATION_NOT_INITIALIZED",
            CkRv::PIN_INCORRECT => "CKR_PIN_INCORRECT",
            CkRv::PIN_INVALID => "CKR_PIN_INVALID",
            CkRv::PIN_LEN_RANGE => "CKR_PIN_LEN_RANGE",
            CkRv::PIN_LOCKED => "CKR_PIN_LOCKED",
            CkRv::SESSION_HANDLE_INVALID => "CKR_SESSION_HANDLE_INVALID",
            CkRv::TEMPLATE_INCONSISTENT => "CKR_TEMPLATE_INCONSISTENT",
            CkRv::TOKEN_NOT_PRESENT => "CKR_TOKEN_NOT_PRESENT",
            CkRv::TOKEN_NOT_RECOGNIZED => "CKR_TOKEN_NOT_RECOGNIZED",
            CkRv::USER_ALREADY_LOGGED_IN => "CKR_USER_ALREADY_LOGGED_IN",
            CkRv::USER_NOT_LOGGED_IN => "CKR_USER_NOT_LOGGED_IN",
            CkRv::USER_TYPE_INVALID => "CKR_USER_TYPE_INVALID",
            CkRv::RANDOM_NO_RNG => "CKR_RANDOM_NO_RNG",
            CkRv::BUFFER_TOO_SMALL => "CKR_BUFFER_TOO_SMALL",
            CkRv::CRYPTOKI_NOT_INITIALIZED => "CKR_CRYPTOKI_NOT_INITIALIZED",
            CkRv::FUNCTION_REJECTED => "CKR_FUNCTION_REJECTED",
            CkRv::SIGNATURE_INVALID => "CKR_SIGNATURE_INVALID",
            CkRv::SIGNATURE_LEN_RANGE => "CKR_SIGNATURE_LEN_RANGE",
            CkRv::CURVE_NOT_SUPPORTED => "CKR_CURVE_NOT_SUPPORTED",
            _ => "CKR_VENDOR_OR_UNKNOWN",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_value_has_a_distinct_name() {
        let mut names: Vec<_> = CkRv::KNOWN.iter().map(|r| r.name()).collect();
        assert!(!names.contains(&"CKR_VENDOR_OR_UNKNOWN"));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), CkRv::KNOWN.len());
    }
}

impl std::fmt::Display for CkRv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (0x{:08X})", self.name(), self.0)
    }
}

/// Object classes (`CKO_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectClass {
    Certificate,
    PublicKey,
    PrivateKey,
    /// `CKO_DATA`: an application's bytes, kept in the container.
    Data,
}

/// Object classes (`CKO_*`) the handset holds.
pub mod cko {
    pub const DATA: u32 = 0x000;
    pub const CERTIFICATE: u32 = 0x001;
    pub const PUBLIC_KEY: u32 = 0x002;
    pub const PRIVATE_KEY: u32 = 0x003;
}

impl ObjectClass {
    pub const fn value(self) -> u64 {
        (match self {
            ObjectClass::Certificate => cko::CERTIFICATE,
            ObjectClass::PublicKey => cko::PUBLIC_KEY,
            ObjectClass::PrivateKey => cko::PRIVATE_KEY,
            ObjectClass::Data => cko::DATA,
        }) as u64
    }

    pub fn from_value(v: u64) -> Option<ObjectClass> {
        match u32::try_from(v).ok()? {
            cko::CERTIFICATE => Some(ObjectClass::Certificate),
            cko::PUBLIC_KEY => Some(ObjectClass::PublicKey),
            cko::PRIVATE_KEY => Some(ObjectClass::PrivateKey),
            cko::DATA => Some(ObjectClass::Data),
            _ => None,
        }
    }
}

/// Attribute types (`CKA_*`) the handset reports.
pub mod cka {
    pub const CLASS: u32 = 0x000;
    pub const LABEL: u32 = 0x003;
    pub const APPLICATION: u32 = 0x010;
    pub const VALUE: u32 = 0x011;
    pub const OBJECT_ID: u32 = 0x012;
    pub const CERTIFICATE_TYPE: u32 = 0x080;
    pub const ISSUER: u32 = 0x081;
    pub const SERIAL_NUMBER: u32 = 0x082;
    pub const KEY_TYPE: u32 = 0x100;
    pub const SUBJECT: u32 = 0x101;
    pub const ID: u32 = 0x102;
    pub const MODULUS: u32 = 0x120;
    pub const MODULUS_BITS: u32 = 0x121;
    pub const PUBLIC_EXPONENT: u32 = 0x122;
    /// `CKA_EC_PARAMS` (`CKA_ECDSA_PARAMS`): the curve, DER.
    pub const EC_PARAMS: u32 = 0x180;
    /// `CKA_EC_POINT`: the public point, as a DER OCTET STRING.
    pub const EC_POINT: u32 = 0x181;
    /// Booleans of a key pair (one byte, 0 or 1): whether it was generated
    /// on the handset, and so never outside it (section 7.26).
    pub const LOCAL: u32 = 0x163;
    pub const NEVER_EXTRACTABLE: u32 = 0x164;
    pub const ALWAYS_SENSITIVE: u32 = 0x165;
}

/// Key types (`CKK_*`).
pub mod ckk {
    pub const RSA: u32 = 0x000;
    pub const EC: u32 = 0x003;
    pub const EC_EDWARDS: u32 = 0x040;
}

/// The elliptic curves a handset may hold keys on, numbered as `+CKGENEC`
/// names them (docs/protocol.md section 7.24).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// NIST P-256 (secp256r1, prime256v1): ECDSA and ECDH.
    P256,
    /// NIST P-384 (secp384r1): ECDSA and ECDH.
    P384,
    /// Ed25519 (RFC 8032): EdDSA only.
    Ed25519,
}

/// `CKA_EC_PARAMS` of P-256: the DER OID 1.2.840.10045.3.1.7.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
/// `CKA_EC_PARAMS` of P-384: the DER OID 1.3.132.0.34.
const P384_PARAMS: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
/// `CKA_EC_PARAMS` of Ed25519: the DER OID 1.3.101.112 (RFC 8410), one of
/// the two forms PKCS#11 3.0 section 2.3.10 allows.
const ED25519_PARAMS: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// The other form: the PrintableString "edwards25519" (what OpenSC's
/// pkcs11-tool sends); accepted, never produced.
const ED25519_PARAMS_NAME: &[u8] = b"\x13\x0cedwards25519";

impl Curve {
    pub const ALL: [Curve; 3] = [Curve::P256, Curve::P384, Curve::Ed25519];

    /// The number `+CKGENEC` carries.
    pub const fn number(self) -> u32 {
        match self {
            Curve::P256 => 1,
            Curve::P384 => 2,
            Curve::Ed25519 => 3,
        }
    }

    pub fn from_number(n: u64) -> Option<Curve> {
        Curve::ALL.into_iter().find(|c| u64::from(c.number()) == n)
    }

    /// The name people type and read.
    pub const fn name(self) -> &'static str {
        match self {
            Curve::P256 => "p256",
            Curve::P384 => "p384",
            Curve::Ed25519 => "ed25519",
        }
    }

    pub fn from_name(s: &str) -> Option<Curve> {
        let s = s.to_ascii_lowercase().replace('-', "");
        match s.as_str() {
            "p256" | "prime256v1" | "secp256r1" | "nistp256" => Some(Curve::P256),
            "p384" | "secp384r1" | "nistp384" => Some(Curve::P384),
            "ed25519" | "edwards25519" => Some(Curve::Ed25519),
            _ => None,
        }
    }

    /// `CKK_EC` or `CKK_EC_EDWARDS`.
    pub const fn key_type(self) -> u32 {
        match self {
            Curve::P256 | Curve::P384 => ckk::EC,
            Curve::Ed25519 => ckk::EC_EDWARDS,
        }
    }

    /// `CKA_EC_PARAMS`, DER.
    pub const fn ec_params(self) -> &'static [u8] {
        match self {
            Curve::P256 => P256_PARAMS,
            Curve::P384 => P384_PARAMS,
            Curve::Ed25519 => ED25519_PARAMS,
        }
    }

    /// The curve `CKA_EC_PARAMS` names, in either form the standard allows
    /// for Ed25519; `None` for any other curve or malformed DER.
    pub fn from_ec_params(der: &[u8]) -> Option<Curve> {
        if der == ED25519_PARAMS_NAME {
            return Some(Curve::Ed25519);
        }
        Curve::ALL.into_iter().find(|c| c.ec_params() == der)
    }

    /// The size in bits PKCS#11 gives the key (`CK_MECHANISM_INFO`): the
    /// order's length for the NIST curves, 255 for Ed25519.
    pub const fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::Ed25519 => 255,
        }
    }

    /// Bytes of a field element, and of a private scalar or seed.
    pub const fn field_len(self) -> usize {
        match self {
            Curve::P256 | Curve::Ed25519 => 32,
            Curve::P384 => 48,
        }
    }

    /// Bytes of the public key as the link carries it: SEC1 uncompressed
    /// `04 || X || Y`, or the 32-byte RFC 8032 encoding.
    pub const fn point_len(self) -> usize {
        match self {
            Curve::P256 | Curve::P384 => 1 + 2 * self.field_len(),
            Curve::Ed25519 => 32,
        }
    }

    /// Bytes of a signature: `r || s`, or Ed25519's `R || S`.
    pub const fn signature_len(self) -> usize {
        2 * self.field_len()
    }

    /// `CKA_EC_POINT`: the point as a DER OCTET STRING (all points are
    /// shorter than 128 bytes, so the length is one byte).
    pub fn ec_point_der(point: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + point.len());
        out.push(0x04);
        out.push(point.len() as u8);
        out.extend_from_slice(point);
        out
    }

    /// The point inside a `CKA_EC_POINT` OCTET STRING; also accepts the raw
    /// point, which some programs pass (PKCS#11 2.40 was read both ways).
    pub fn point_from_der(self, v: &[u8]) -> Option<&[u8]> {
        match v {
            [0x04, len, rest @ ..]
                if usize::from(*len) == rest.len() && rest.len() == self.point_len() =>
            {
                Some(rest)
            }
            _ if v.len() == self.point_len() => Some(v),
            _ => None,
        }
    }
}

/// The digests of the SHA-1/SHA-2 family, named by their `CKM_*` value on
/// the wire; MGF1 uses the same hash (`CKG_MGF1_*` is implied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashAlg {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    pub const ALL: [HashAlg; 5] = [
        HashAlg::Sha1,
        HashAlg::Sha224,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    /// `CKM_SHA*` value.
    pub const fn mechanism(self) -> u64 {
        (match self {
            HashAlg::Sha1 => ckm::SHA_1,
            HashAlg::Sha224 => ckm::SHA224,
            HashAlg::Sha256 => ckm::SHA256,
            HashAlg::Sha384 => ckm::SHA384,
            HashAlg::Sha512 => ckm::SHA512,
        }) as u64
    }

    pub fn from_mechanism(v: u64) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|h| h.mechanism() == v)
    }

    pub const fn output_len(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha224 => 28,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha224 => "sha224",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
        }
    }

    pub fn from_name(s: &str) -> Option<HashAlg> {
        HashAlg::ALL.into_iter().find(|h| {
            h.name().eq_ignore_ascii_case(s)
                || h.name().replace("sha", "sha-").eq_ignore_ascii_case(s)
        })
    }

    /// The DER prefix of a DigestInfo for this hash (RFC 8017 section 9.2).
    pub const fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            HashAlg::Sha1 => &[
                0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04,
                0x14,
            ],
            HashAlg::Sha224 => &SHA224_DIGEST_INFO,
            HashAlg::Sha256 => &SHA256_DIGEST_INFO,
            HashAlg::Sha384 => &SHA384_DIGEST_INFO,
            HashAlg::Sha512 => &SHA512_DIGEST_INFO,
        }
    }
}

/// The DigestInfo prefix of a SHA-2 hash: SEQUENCE { SEQUENCE { OID
/// 2.16.840.1.101.3.4.2.`n`, NULL }, OCTET STRING of `len` bytes }.
const fn sha2_digest_info(n: u8, len: u8) -> [u8; 19] {
    [
        0x30,
        0x11 + len,
        0x30,
        0x0d,
        0x06,
        0x09,
        0x60,
        0x86,
        0x48,
        0x01,
        0x65,
        0x03,
        0x04,
        0x02,
        n,
        0x05,
        0x00,
        0x04,
        len,
    ]
}
const SHA224_DIGEST_INFO: [u8; 19] = sha2_digest_info(4, 28);
const SHA256_DIGEST_INFO: [u8; 19] = sha2_digest_info(1, 32);
const SHA384_DIGEST_INFO: [u8; 19] = sha2_digest_info(2, 48);
const SHA512_DIGEST_INFO: [u8; 19] = sha2_digest_info(3, 64);

/// Mechanism types (`CKM_*`) phonecsp speaks of, on the link, on D-Bus and
/// in the PKCS#11 module.
pub mod ckm {
    pub const RSA_PKCS_KEY_PAIR_GEN: u32 = 0x0000;
    pub const RSA_PKCS: u32 = 0x0001;
    pub const SHA1_RSA_PKCS: u32 = 0x0006;
    pub const RSA_PKCS_OAEP: u32 = 0x0009;
    pub const RSA_PKCS_PSS: u32 = 0x000D;
    pub const SHA1_RSA_PKCS_PSS: u32 = 0x000E;
    pub const SHA256_RSA_PKCS: u32 = 0x0040;
    pub const SHA384_RSA_PKCS: u32 = 0x0041;
    pub const SHA512_RSA_PKCS: u32 = 0x0042;
    pub const SHA256_RSA_PKCS_PSS: u32 = 0x0043;
    pub const SHA384_RSA_PKCS_PSS: u32 = 0x0044;
    pub const SHA512_RSA_PKCS_PSS: u32 = 0x0045;
    pub const SHA224_RSA_PKCS: u32 = 0x0046;
    pub const SHA224_RSA_PKCS_PSS: u32 = 0x0047;
    pub const SHA_1: u32 = 0x0220;
    pub const SHA256: u32 = 0x0250;
    pub const SHA224: u32 = 0x0255;
    pub const SHA384: u32 = 0x0260;
    pub const SHA512: u32 = 0x0270;
    pub const EC_KEY_PAIR_GEN: u32 = 0x1040;
    pub const ECDSA: u32 = 0x1041;
    pub const ECDSA_SHA1: u32 = 0x1042;
    pub const ECDSA_SHA224: u32 = 0x1043;
    pub const ECDSA_SHA256: u32 = 0x1044;
    pub const ECDSA_SHA384: u32 = 0x1045;
    pub const ECDSA_SHA512: u32 = 0x1046;
    pub const ECDH1_DERIVE: u32 = 0x1050;
    pub const EC_EDWARDS_KEY_PAIR_GEN: u32 = 0x1055;
    pub const EDDSA: u32 = 0x1057;
}

/// A private-key signature as the handset performs it: over bytes the
/// computer already hashed and, for PKCS#1 v1.5, wrapped in a DigestInfo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_RSA_PKCS`: EMSA-PKCS1-v1_5 padding over the given bytes.
    Pkcs1,
    /// `CKM_RSA_PKCS_PSS` over a digest of `hash`, MGF1 with the same hash.
    Pss { hash: HashAlg, salt_len: u32 },
    /// `CKM_ECDSA` over a digest the computer made; the signature is
    /// `r || s`, each the curve's field length.
    Ecdsa,
    /// `CKM_EDDSA` (pure Ed25519) over the message itself.
    Eddsa,
}

/// A private-key decryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecryptMechanism {
    /// `CKM_RSA_PKCS` (RSAES-PKCS1-v1_5), answered with implicit rejection.
    Pkcs1,
    /// `CKM_RSA_PKCS_OAEP`, MGF1 with the same hash, optional label.
    Oaep { hash: HashAlg, label: Vec<u8> },
}

pub use crate::limits::RSA_KEY_BITS;

#[cfg(test)]
mod digest_info_tests {
    use super::*;

    /// The prefixes as RFC 8017 section 9.2 (note 1) writes them.
    #[test]
    fn digest_info_prefixes_are_the_rfcs() {
        let hex = |h: HashAlg| -> String {
            h.digest_info_prefix()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        let rfc = [
            (HashAlg::Sha1, "3021300906052b0e03021a05000414"),
            (HashAlg::Sha224, "302d300d06096086480165030402040500041c"),
            (HashAlg::Sha256, "3031300d060960864801650304020105000420"),
            (HashAlg::Sha384, "3041300d060960864801650304020205000430"),
            (HashAlg::Sha512, "3051300d060960864801650304020305000440"),
        ];
        for (h, prefix) in rfc {
            assert_eq!(hex(h), prefix, "{h:?}");
        }
    }
}

#[cfg(test)]
mod curve_tests {
    use super::*;

    #[test]
    fn ec_params_name_each_curve_and_nothing_else() {
        for c in Curve::ALL {
            assert_eq!(Curve::from_ec_params(c.ec_params()), Some(c));
            assert_eq!(Curve::from_number(u64::from(c.number())), Some(c));
            assert_eq!(Curve::from_name(c.name()), Some(c));
        }
        // PKCS#11 3.0's other form for Ed25519, as OpenSC sends it.
        assert_eq!(
            Curve::from_ec_params(b"\x13\x0cedwards25519"),
            Some(Curve::Ed25519)
        );
        // secp256k1 (1.3.132.0.10) and a truncated OID.
        assert_eq!(
            Curve::from_ec_params(&[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x0a]),
            None
        );
        assert_eq!(Curve::from_ec_params(&[0x06, 0x08, 0x2a, 0x86]), None);
        assert_eq!(Curve::from_number(0), None);
    }

    #[test]
    fn ec_point_is_an_octet_string() {
        let point = [4u8; 65];
        let der = Curve::ec_point_der(&point);
        assert_eq!(&der[..2], &[0x04, 65]);
        assert_eq!(Curve::P256.point_from_der(&der), Some(&point[..]));
        assert_eq!(Curve::P256.point_from_der(&point), Some(&point[..]));
        assert_eq!(Curve::P384.point_from_der(&der), None);
        assert_eq!(Curve::P256.point_from_der(&der[..60]), None);
    }
}
