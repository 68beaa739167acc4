//! Every size limit of phonecsp, defined once: what the link carries is
//! what the handset lets a person create, so an object made on the phone
//! can always be named, listed and used from the computer. The handset's
//! store, the link's decoders, the daemon and the PKCS#11 module all check
//! against these.

/// Longest container name, object label, or host/handset name on the link.
pub const MAX_NAME_LEN: usize = 64;
/// Longest container name the handset creates (a file name on the phone).
pub const MAX_CONTAINER_NAME_LEN: usize = 32;
/// Longest program description a host attaches to a request the phone's
/// owner may be asked to approve (docs/protocol.md section 7.23), in bytes.
pub const MAX_PROGRAM_LEN: usize = 64;
/// Longest object label (`CKA_LABEL`), in bytes.
pub const MAX_LABEL_LEN: usize = MAX_NAME_LEN;
/// Longest object id (`CKA_ID`), in bytes.
pub const MAX_ID_LEN: usize = 64;
/// Shortest PIN, in bytes.
pub const MIN_PIN_LEN: usize = 4;
/// Longest PIN, in bytes.
pub const MAX_PIN_LEN: usize = 64;
/// Longest data given to sign, decrypt or re-wrap (RSA-4096 is 512 bytes).
pub const MAX_DATA_LEN: usize = 512;
/// Longest certificate or SubjectPublicKeyInfo, DER.
pub const MAX_DER_LEN: usize = 16 * 1024;
/// Longest private key `+CKIMPORT` carries, PKCS#8 DER: an RSA-4096 key
/// with its CRT values is about 2.4 KiB; EC keys are far smaller.
pub const MAX_PRIVATE_KEY_LEN: usize = 4 * 1024;
/// Shortest and longest freshness nonce of `+CKATTEST`, in bytes.
pub const MIN_NONCE_LEN: usize = 16;
pub const MAX_NONCE_LEN: usize = 64;
/// Longest value of a data object (`CKO_DATA`) kept on the handset.
pub const MAX_DATA_OBJECT_LEN: usize = 4 * 1024;
/// Longest `CKA_OBJECT_ID` of a data object (a DER object identifier).
pub const MAX_OBJECT_ID_LEN: usize = 64;
/// Most data objects one container holds.
pub const MAX_DATA_OBJECTS: usize = 32;
/// Largest random request the handset serves in one call.
pub const MAX_RANDOM_LEN: u32 = 1024;
/// RSA modulus sizes the handset generates and accepts.
pub const RSA_KEY_BITS: [u32; 3] = [2048, 3072, 4096];
/// Smallest RSA modulus, in bits.
pub const MIN_RSA_BITS: u32 = RSA_KEY_BITS[0];
/// Largest RSA modulus, in bits.
pub const MAX_RSA_BITS: u32 = RSA_KEY_BITS[2];
/// PKCS#1 v1.5 padding takes at least this many bytes of the modulus, so
/// the signed or encrypted data is at most `k - PKCS1_OVERHEAD` bytes.
pub const PKCS1_OVERHEAD: usize = 11;
