//! The handset's EC keys: P-256 and P-384 (ECDSA, ECDH) with RustCrypto's
//! constant-time `p256`/`p384`, and Ed25519 (pure EdDSA) with
//! `ed25519-dalek`. The computer hashes; the handset signs the digest it
//! is given, signs an Ed25519 message whole, and does ECDH's private step,
//! returning the shared x-coordinate Z for the computer's KDF.
//!
//! Private keys are kept, sealed, as their raw scalar (NIST curves) or
//! 32-byte seed (Ed25519); every type here zeroizes them when dropped.

use ed25519_dalek::Signer as _;
use p256::ecdsa::signature::hazmat::PrehashSigner as _;
use phonecsp_protocol::{CkRv, ck::Curve};
use zeroize::Zeroizing;

/// The longest digest `CKM_ECDSA` takes: SHA-512's. PKCS#11 puts no bound
/// on it; anything longer is no digest phonecsp's computer side makes.
pub const MAX_DIGEST_LEN: usize = 64;

/// An EC private key; zeroized when dropped (each inner type does so).
pub enum EcPrivateKey {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl std::fmt::Debug for EcPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcPrivateKey({:?})", self.curve())
    }
}

impl EcPrivateKey {
    /// A fresh key from the system's random source.
    pub fn generate(curve: Curve) -> EcPrivateKey {
        let mut rng = rand::rngs::OsRng;
        match curve {
            Curve::P256 => EcPrivateKey::P256(p256::SecretKey::random(&mut rng)),
            Curve::P384 => EcPrivateKey::P384(p384::SecretKey::random(&mut rng)),
            Curve::Ed25519 => {
                // The seed straight from the random source (RFC 8032 5.1.5).
                let mut seed = Zeroizing::new([0u8; 32]);
                rand::RngCore::fill_bytes(&mut rng, seed.as_mut());
                EcPrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed))
            }
        }
    }

    /// The key from its stored bytes; `None` for bytes that are no key of
    /// this curve (wrong length, zero or out-of-range scalar).
    pub fn from_bytes(curve: Curve, bytes: &[u8]) -> Option<EcPrivateKey> {
        if bytes.len() != curve.field_len() {
            return None;
        }
        Some(match curve {
            Curve::P256 => EcPrivateKey::P256(p256::SecretKey::from_slice(bytes).ok()?),
            Curve::P384 => EcPrivateKey::P384(p384::SecretKey::from_slice(bytes).ok()?),
            Curve::Ed25519 => {
                let seed: &[u8; 32] = bytes.try_into().ok()?;
                EcPrivateKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(seed))
            }
        })
    }

    /// The bytes that are sealed in the store.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(match self {
            EcPrivateKey::P256(k) => k.to_bytes().to_vec(),
            EcPrivateKey::P384(k) => k.to_bytes().to_vec(),
            EcPrivateKey::Ed25519(k) => k.to_bytes().to_vec(),
        })
    }

    pub fn curve(&self) -> Curve {
        match self {
            EcPrivateKey::P256(_) => Curve::P256,
            EcPrivateKey::P384(_) => Curve::P384,
            EcPrivateKey::Ed25519(_) => Curve::Ed25519,
        }
    }

    /// The public key as the link carries it: SEC1 uncompressed, or the
    /// RFC 8032 encoding.
    pub fn public_point(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        match self {
            EcPrivateKey::P256(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            EcPrivateKey::P384(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            EcPrivateKey::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
        }
    }

    /// `CKM_ECDSA` over `digest`: `r || s`, fixed length. A digest shorter
    /// than the curve's field is its integer value (left-padded, as
    /// FIPS 186-4 reads a short hash); a longer one is cut to its leftmost
    /// bits by the `ecdsa` crate. Nonces are RFC 6979's.
    pub fn sign_digest(&self, digest: &[u8]) -> Result<Vec<u8>, CkRv> {
        if digest.is_empty() || digest.len() > MAX_DIGEST_LEN {
            return Err(CkRv::DATA_LEN_RANGE);
        }
        let field = self.curve().field_len();
        let mut padded = vec![0u8; field.saturating_sub(digest.len())];
        padded.extend_from_slice(digest);
        match self {
            EcPrivateKey::P256(k) => {
                let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                    .sign_prehash(&padded)
                    .map_err(|_| CkRv::FUNCTION_FAILED)?;
                Ok(sig.to_bytes().to_vec())
            }
            EcPrivateKey::P384(k) => {
                let sig: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                    .sign_prehash(&padded)
                    .map_err(|_| CkRv::FUNCTION_FAILED)?;
                Ok(sig.to_bytes().to_vec())
            }
            // Ed25519 takes the message (CKM_EDDSA), never a digest.
            EcPrivateKey::Ed25519(_) => Err(CkRv::KEY_TYPE_INCONSISTENT),
        }
    }

    /// `CKM_EDDSA`: pure Ed25519 over the message.
    pub fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, CkRv> {
        match self {
            EcPrivateKey::Ed25519(k) => Ok(k.sign(message).to_bytes().to_vec()),
            _ => Err(CkRv::KEY_TYPE_INCONSISTENT),
        }
    }

    /// ECDH's private step (`CKM_ECDH1_DERIVE`): Z, the x-coordinate of
    /// the shared point. The peer's point must be an uncompressed SEC1
    /// point on this key's curve (not the identity): anything else is
    /// `CKR_DATA_INVALID`, and no secret is made from it.
    pub fn derive(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, CkRv> {
        let curve = self.curve();
        if peer.len() != curve.point_len() || peer.first() != Some(&0x04) {
            return Err(CkRv::DATA_INVALID);
        }
        match self {
            EcPrivateKey::P256(k) => {
                let pk = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| CkRv::DATA_INVALID)?;
                let z = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
            }
            EcPrivateKey::P384(k) => {
                let pk = p384::PublicKey::from_sec1_bytes(peer).map_err(|_| CkRv::DATA_INVALID)?;
                let z = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), pk.as_affine());
                Ok(Zeroizing::new(z.raw_secret_bytes().to_vec()))
            }
            EcPrivateKey::Ed25519(_) => Err(CkRv::KEY_TYPE_INCONSISTENT),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;

    #[test]
    fn keys_round_trip_through_their_stored_bytes() {
        for curve in Curve::ALL {
            let k = EcPrivateKey::generate(curve);
            assert_eq!(k.public_point().len(), curve.point_len());
            let again = EcPrivateKey::from_bytes(curve, &k.to_bytes()).unwrap();
            assert_eq!(again.public_point(), k.public_point());
            assert!(EcPrivateKey::from_bytes(curve, &k.to_bytes()[1..]).is_none());
        }
        // Zero is no NIST scalar.
        assert!(EcPrivateKey::from_bytes(Curve::P256, &[0; 32]).is_none());
        assert!(EcPrivateKey::from_bytes(Curve::P384, &[0xff; 48]).is_none());
    }

    #[test]
    fn ecdsa_signatures_verify_for_every_digest_length() {
        let k = EcPrivateKey::generate(Curve::P256);
        let EcPrivateKey::P256(sk) = &k else { panic!() };
        let vk = p256::ecdsa::VerifyingKey::from(&p256::ecdsa::SigningKey::from(sk));
        for len in [1, 20, 31, 32, 33, 48, 64] {
            let digest: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7) | 1).collect();
            let sig = k.sign_digest(&digest).unwrap();
            assert_eq!(sig.len(), 64);
            let sig = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            let mut padded = vec![0u8; 32usize.saturating_sub(len)];
            padded.extend_from_slice(&digest);
            vk.verify_prehash(&padded, &sig).unwrap();
        }
        assert_eq!(k.sign_digest(&[]), Err(CkRv::DATA_LEN_RANGE));
        assert_eq!(k.sign_digest(&[1; 65]), Err(CkRv::DATA_LEN_RANGE));
        assert_eq!(k.sign_message(b"m"), Err(CkRv::KEY_TYPE_INCONSISTENT));
    }

    #[test]
    fn p384_signs_a_sha1_digest() {
        let k = EcPrivateKey::generate(Curve::P384);
        assert_eq!(k.sign_digest(&[5; 20]).unwrap().len(), 96);
    }

    #[test]
    fn ed25519_signs_messages_only() {
        let k = EcPrivateKey::generate(Curve::Ed25519);
        let sig = k.sign_message(b"hello").unwrap();
        let vk =
            ed25519_dalek::VerifyingKey::from_bytes(&k.public_point().try_into().unwrap()).unwrap();
        vk.verify_strict(
            b"hello",
            &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
        )
        .unwrap();
        assert_eq!(k.sign_digest(&[1; 32]), Err(CkRv::KEY_TYPE_INCONSISTENT));
        assert_eq!(k.derive(&[4; 32]), Err(CkRv::KEY_TYPE_INCONSISTENT));
    }

    #[test]
    fn ecdh_agrees_and_refuses_bad_points() {
        let a = EcPrivateKey::generate(Curve::P256);
        let b = EcPrivateKey::generate(Curve::P256);
        let z1 = a.derive(&b.public_point()).unwrap();
        let z2 = b.derive(&a.public_point()).unwrap();
        assert_eq!(*z1, *z2);
        assert_eq!(z1.len(), 32);
        // Not on the curve: the point with y changed.
        let mut off = b.public_point();
        off[64] ^= 1;
        assert_eq!(a.derive(&off), Err(CkRv::DATA_INVALID));
        // Wrong length, compressed, identity, a P-384 point.
        assert_eq!(a.derive(&off[..33]), Err(CkRv::DATA_INVALID));
        let mut compressed = b.public_point()[..33].to_vec();
        compressed[0] = 0x02;
        assert_eq!(a.derive(&compressed), Err(CkRv::DATA_INVALID));
        assert_eq!(a.derive(&[0]), Err(CkRv::DATA_INVALID));
        let mut zero = vec![0u8; 65];
        zero[0] = 4;
        assert_eq!(a.derive(&zero), Err(CkRv::DATA_INVALID));
        let other = EcPrivateKey::generate(Curve::P384);
        assert_eq!(a.derive(&other.public_point()), Err(CkRv::DATA_INVALID));
    }
}
