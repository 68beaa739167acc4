//! The disk secret and its wrapping: a fresh random passphrase, RSA-OAEP
//! (SHA-256) to a handset key's public half, and the public keys that
//! name a target.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use phonecsp_protocol::HashAlg;
use rand::RngCore;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{LuksError, Result};
use phonecsp::mechanism::Encryption;

/// Random bytes in a disk secret (384 bits), before base64.
pub const SECRET_RANDOM_BYTES: usize = 48;

/// A fresh disk secret: [`SECRET_RANDOM_BYTES`] from the OS's generator,
/// as base64 text (64 bytes of passphrase).
pub fn new_secret() -> Zeroizing<Vec<u8>> {
    let mut raw = Zeroizing::new([0u8; SECRET_RANDOM_BYTES]);
    rand::rngs::OsRng.fill_bytes(&mut raw[..]);
    let mut text = Zeroizing::new(vec![0u8; SECRET_RANDOM_BYTES * 4 / 3]);
    // The buffer is exactly the encoded length, so this never fails.
    let n = BASE64
        .encode_slice(&raw[..], &mut text[..])
        .unwrap_or_default();
    text.truncate(n);
    text
}

/// The disk secret's wrapping: RSA-OAEP with SHA-256 and no label.
pub fn disk_oaep() -> Encryption {
    Encryption::Oaep {
        hash: HashAlg::Sha256,
        label: Vec::new(),
    }
}

/// Wraps `secret` to `key` with RSA-OAEP-SHA256.
pub fn wrap(key: &RsaPublicKey, secret: &[u8]) -> Result<Vec<u8>> {
    phonecsp::local::encrypt(key, &disk_oaep(), secret)
        .map_err(|rv| LuksError::PublicKey(format!("cannot wrap to it: {rv}")))
}

/// Hex SHA-256 of the key's DER SubjectPublicKeyInfo.
pub fn public_key_sha256(key: &RsaPublicKey) -> Result<String> {
    let der = phonecsp::local::spki_der(key)
        .map_err(|rv| LuksError::PublicKey(format!("cannot encode it: {rv}")))?;
    Ok(hex(&Sha256::digest(der)))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An RSA public key from a PEM (`PUBLIC KEY`, `RSA PUBLIC KEY` or
/// `CERTIFICATE`-less SPKI) or DER file's bytes.
pub fn parse_public_key(bytes: &[u8]) -> Result<RsaPublicKey> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    use rsa::pkcs8::DecodePublicKey;
    if let Ok(text) = std::str::from_utf8(bytes)
        && text.contains("-----BEGIN")
    {
        return RsaPublicKey::from_public_key_pem(text.trim())
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(text.trim()))
            .map_err(|_| {
                LuksError::PublicKey(
                    "not an RSA public key in PEM (PUBLIC KEY or RSA PUBLIC KEY)".into(),
                )
            });
    }
    RsaPublicKey::from_public_key_der(bytes)
        .or_else(|_| RsaPublicKey::from_pkcs1_der(bytes))
        .map_err(|_| LuksError::PublicKey("not an RSA public key (PEM or DER)".into()))
}
