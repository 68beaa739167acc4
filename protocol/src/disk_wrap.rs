//! The sealing of a disk secret to an EC key, after ECDH: what the
//! computer makes at enrolment and opens at unlock, and what the handset
//! opens and makes when it re-wraps (`+CKREWRAP`, docs/protocol.md section
//! 7.16). Both ends use this one implementation; ECDH itself is theirs.
//!
//! Scheme `ECDH-ES-HKDF-SHA256-A256GCM`: the AES-256-GCM key is
//! HKDF-SHA256 (no salt) of the shared secret Z, its info
//! `phonecsp disk secret v1`, a zero byte, the one-time (ephemeral) point
//! and the recipient's point, so that the key belongs to this one
//! exchange; the sealed form is a 12-byte random nonce, then the
//! ciphertext and its tag, with the scheme's name as associated data.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The scheme's name, as the disk token records it.
pub const SCHEME: &str = "ECDH-ES-HKDF-SHA256-A256GCM";
const KDF_INFO: &[u8] = b"phonecsp disk secret v1\0";
/// AES-GCM's nonce length.
pub const NONCE_LEN: usize = 12;
/// What sealing adds to the secret: the nonce and the tag.
pub const OVERHEAD: usize = NONCE_LEN + 16;

fn cipher(z: &[u8], ephemeral: &[u8], recipient: &[u8]) -> Aes256Gcm {
    let info = [KDF_INFO, ephemeral, recipient].concat();
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit (255 * 32): never fails.
    let _ = hkdf::Hkdf::<Sha256>::new(None, z).expand(&info, &mut key[..]);
    Aes256Gcm::new(aes_gcm::Key::<Aes256Gcm>::from_slice(&key[..]))
}

/// Seals `secret` under the key from `z`, the ECDH secret of `ephemeral`
/// and `recipient` (points as sent and stored: SEC1 uncompressed).
pub fn seal(z: &[u8], ephemeral: &[u8], recipient: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let payload = Payload {
        msg: secret,
        aad: SCHEME.as_bytes(),
    };
    // AES-GCM refuses only inputs of 64 GiB and more.
    let ct = cipher(z, ephemeral, recipient)
        .encrypt(Nonce::from_slice(&nonce), payload)
        .unwrap_or_default();
    [&nonce[..], &ct].concat()
}

/// Opens what [`seal`] made: `None` if it does not open (damaged, or a `z`
/// or point of another exchange).
pub fn open(
    z: &[u8],
    ephemeral: &[u8],
    recipient: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let payload = Payload {
        msg: ct,
        aad: SCHEME.as_bytes(),
    };
    cipher(z, ephemeral, recipient)
        .decrypt(Nonce::from_slice(nonce), payload)
        .ok()
        .map(Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_opens_only_with_its_own_secret_and_points() {
        let (z, e, r) = ([1u8; 32], [2u8; 65], [3u8; 65]);
        let sealed = seal(&z, &e, &r, b"the disk secret");
        assert_eq!(sealed.len(), 15 + OVERHEAD);
        assert_ne!(seal(&z, &e, &r, b"the disk secret"), sealed);
        assert_eq!(
            open(&z, &e, &r, &sealed).as_deref().map(Vec::as_slice),
            Some(&b"the disk secret"[..])
        );
        assert!(open(&[9; 32], &e, &r, &sealed).is_none());
        assert!(open(&z, &r, &e, &sealed).is_none());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x80;
            assert!(open(&z, &e, &r, &bad).is_none(), "byte {i}");
        }
        assert!(open(&z, &e, &r, &sealed[..OVERHEAD - 1]).is_none());
    }

    /// A known answer, so that the scheme cannot drift: HKDF-SHA256 of
    /// Z = 32 bytes of 0x01 with info "phonecsp disk secret v1\0" || E || R
    /// (E = 65 bytes of 0x02, R = 65 of 0x03), then AES-256-GCM with nonce
    /// 00..0b and the scheme's name as associated data, made with Python's
    /// `cryptography` (HKDF, AESGCM) from those inputs.
    #[test]
    fn opens_a_sealing_made_by_another_implementation() {
        let sealed = hex(KAT);
        let got = open(&[1; 32], &[2; 65], &[3; 65], &sealed).expect("opens");
        assert_eq!(&got[..], b"the disk secret");
    }

    const KAT: &str =
        "000102030405060708090a0b977e8e1e616a7062927154c5acdf8dc52a54d5c6c36c18c459a2c7a1505562";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
