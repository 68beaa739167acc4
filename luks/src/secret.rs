//! The disk secret and its wrapping: a fresh random passphrase, wrapped
//! to a handset key's public half (RSA-OAEP with SHA-256 to an RSA key;
//! ECDH-ES with HKDF-SHA256 and AES-256-GCM to a P-256 or P-384 key), and
//! the public keys that name a target.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use phonecsp::local::{EcPublicKey, PublicKey};
use phonecsp_protocol::Curve;
use phonecsp_protocol::HashAlg;
use rand::RngCore;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{LuksError, Result};
use phonecsp::mechanism::Encryption;

/// The wrapping to an RSA key.
pub const RSA_ALGORITHM: &str = "RSA-OAEP-SHA256";
/// The wrapping to a P-256 or P-384 key: an ephemeral key pair made on the
/// computer, ECDH with the handset key (the handset does its half), the
/// secret sealed as [`phonecsp_protocol::disk_wrap`] says.
pub const EC_ALGORITHM: &str = phonecsp_protocol::disk_wrap::SCHEME;

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

/// A wrapped secret: the algorithm, what it is (RSA: the OAEP ciphertext;
/// EC: the GCM nonce then ciphertext and tag), and for EC the ephemeral
/// public point the handset needs for its half of ECDH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapping {
    pub algorithm: &'static str,
    pub wrapped: Vec<u8>,
    pub ephemeral: Option<Vec<u8>>,
}

/// Wraps `secret` to `key`: RSA-OAEP-SHA256, or ECDH-ES to a P-256 or
/// P-384 key. An Ed25519 key only signs, and cannot take a secret.
pub fn wrap(key: &PublicKey, secret: &[u8]) -> Result<Wrapping> {
    match key {
        PublicKey::Rsa(k) => Ok(Wrapping {
            algorithm: RSA_ALGORITHM,
            wrapped: phonecsp::local::encrypt(k, &disk_oaep(), secret)
                .map_err(|rv| LuksError::PublicKey(format!("cannot wrap to it: {rv}")))?,
            ephemeral: None,
        }),
        PublicKey::Ec(k) => ec_wrap(k, secret),
    }
}

fn ec_wrap(key: &EcPublicKey, secret: &[u8]) -> Result<Wrapping> {
    let mut rng = rand::rngs::OsRng;
    // The same steps on either NIST curve, with that curve's types.
    macro_rules! ephemeral_ecdh {
        ($curve:ident, $not_a_point:literal) => {{
            let peer = $curve::PublicKey::from_sec1_bytes(&key.point)
                .map_err(|_| LuksError::PublicKey($not_a_point.into()))?;
            let e = $curve::ecdh::EphemeralSecret::random(&mut rng);
            let point = $curve::EncodedPoint::from(e.public_key())
                .as_bytes()
                .to_vec();
            let z = Zeroizing::new(e.diffie_hellman(&peer).raw_secret_bytes().to_vec());
            (point, z)
        }};
    }
    let (ephemeral, z) = match key.curve {
        Curve::P256 => ephemeral_ecdh!(p256, "not a P-256 point"),
        Curve::P384 => ephemeral_ecdh!(p384, "not a P-384 point"),
        Curve::Ed25519 => {
            return Err(LuksError::PublicKey(
                "an Ed25519 key only signs: wrap the disk secret to an RSA, P-256 or P-384 key"
                    .into(),
            ));
        }
    };
    Ok(Wrapping {
        algorithm: EC_ALGORITHM,
        wrapped: phonecsp_protocol::disk_wrap::seal(&z, &ephemeral, &key.point, secret),
        ephemeral: Some(ephemeral),
    })
}

/// Opens an ECDH-ES wrapping with `z`, the shared secret the handset gave
/// for `ephemeral`: `None` if it does not open (a damaged wrapping, or a
/// `z` of another key).
pub fn ec_unwrap(
    z: &[u8],
    ephemeral: &[u8],
    recipient: &[u8],
    wrapped: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    phonecsp_protocol::disk_wrap::open(z, ephemeral, recipient, wrapped)
}

/// Hex SHA-256 of the key's DER SubjectPublicKeyInfo.
pub fn public_key_sha256(key: &PublicKey) -> Result<String> {
    let der = key
        .spki_der()
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
