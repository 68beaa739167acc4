//! The computer's half of the cryptography (seed 001, claim 42): hashing,
//! DigestInfo, signature verification and public-key encryption, done in
//! the calling process from the public key. None of it needs the handset.

use crate::mechanism::{Encryption, Signing};
use phonecsp_protocol::{CkRv, HashAlg};
use rsa::pkcs8::EncodePublicKey;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

pub fn digest(hash: HashAlg, data: &[u8]) -> Vec<u8> {
    match hash {
        HashAlg::Sha1 => Sha1::digest(data).to_vec(),
        HashAlg::Sha224 => Sha224::digest(data).to_vec(),
        HashAlg::Sha256 => Sha256::digest(data).to_vec(),
        HashAlg::Sha384 => Sha384::digest(data).to_vec(),
        HashAlg::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// An incremental hash, for multi-part operations.
#[derive(Clone)]
pub enum Hasher {
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(hash: HashAlg) -> Hasher {
        match hash {
            HashAlg::Sha1 => Hasher::Sha1(Sha1::new()),
            HashAlg::Sha224 => Hasher::Sha224(Sha224::new()),
            HashAlg::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// DER DigestInfo for PKCS#1 v1.5 signatures.
pub fn digest_info(hash: HashAlg, digest: &[u8]) -> Vec<u8> {
    let mut v = hash.digest_info_prefix().to_vec();
    v.extend_from_slice(digest);
    v
}

/// An RSA public key from its modulus and exponent (big-endian).
pub fn public_key(modulus: &[u8], exponent: &[u8]) -> Result<RsaPublicKey, CkRv> {
    RsaPublicKey::new(
        BigUint::from_bytes_be(modulus),
        BigUint::from_bytes_be(exponent),
    )
    .map_err(|_| CkRv::KEY_TYPE_INCONSISTENT)
}

/// DER SubjectPublicKeyInfo.
pub fn spki_der(key: &RsaPublicKey) -> Result<Vec<u8>, CkRv> {
    key.to_public_key_der()
        .map(|d| d.as_bytes().to_vec())
        .map_err(|_| CkRv::GENERAL_ERROR)
}

fn pss_verify(key: &RsaPublicKey, hash: HashAlg, salt: u32, digest: &[u8], sig: &[u8]) -> bool {
    let salt = salt as usize;
    let r = match hash {
        HashAlg::Sha1 => key.verify(Pss::new_with_salt::<Sha1>(salt), digest, sig),
        HashAlg::Sha224 => key.verify(Pss::new_with_salt::<Sha224>(salt), digest, sig),
        HashAlg::Sha256 => key.verify(Pss::new_with_salt::<Sha256>(salt), digest, sig),
        HashAlg::Sha384 => key.verify(Pss::new_with_salt::<Sha384>(salt), digest, sig),
        HashAlg::Sha512 => key.verify(Pss::new_with_salt::<Sha512>(salt), digest, sig),
    };
    r.is_ok()
}

/// Checks a signature with the public key. `Ok(false)` is a signature that
/// does not verify; errors are bad arguments.
pub fn verify(
    key: &RsaPublicKey,
    signing: &Signing,
    data: &[u8],
    sig: &[u8],
) -> Result<bool, CkRv> {
    use rsa::traits::PublicKeyParts;
    if sig.len() != key.size() {
        return Ok(false);
    }
    let (mech, input) = signing.handset_input(data)?;
    Ok(match mech {
        phonecsp_protocol::SignMechanism::Pkcs1 => key
            .verify(Pkcs1v15Sign::new_unprefixed(), &input, sig)
            .is_ok(),
        phonecsp_protocol::SignMechanism::Pss { hash, salt_len } => {
            pss_verify(key, hash, salt_len, &input, sig)
        }
    })
}

/// Encrypts to the public key.
pub fn encrypt(key: &RsaPublicKey, enc: &Encryption, data: &[u8]) -> Result<Vec<u8>, CkRv> {
    let mut rng = rand::rngs::OsRng;
    let r = match enc {
        Encryption::Pkcs1 => key.encrypt(&mut rng, Pkcs1v15Encrypt, data),
        Encryption::Oaep { hash, label } => {
            let label = if label.is_empty() {
                None
            } else {
                Some(String::from_utf8(label.clone()).map_err(|_| CkRv::MECHANISM_PARAM_INVALID)?)
            };
            let pad = match (hash, label) {
                (HashAlg::Sha1, None) => Oaep::new::<Sha1>(),
                (HashAlg::Sha224, None) => Oaep::new::<Sha224>(),
                (HashAlg::Sha256, None) => Oaep::new::<Sha256>(),
                (HashAlg::Sha384, None) => Oaep::new::<Sha384>(),
                (HashAlg::Sha512, None) => Oaep::new::<Sha512>(),
                (HashAlg::Sha1, Some(l)) => Oaep::new_with_label::<Sha1, _>(l),
                (HashAlg::Sha224, Some(l)) => Oaep::new_with_label::<Sha224, _>(l),
                (HashAlg::Sha256, Some(l)) => Oaep::new_with_label::<Sha256, _>(l),
                (HashAlg::Sha384, Some(l)) => Oaep::new_with_label::<Sha384, _>(l),
                (HashAlg::Sha512, Some(l)) => Oaep::new_with_label::<Sha512, _>(l),
            };
            key.encrypt(&mut rng, pad, data)
        }
    };
    r.map_err(|_| CkRv::DATA_LEN_RANGE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::RsaPrivateKey;

    #[test]
    fn verify_and_encrypt_against_a_private_key() {
        let sk = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let pk = sk.to_public_key();
        let msg = b"hello";
        let sig = sk
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg))
            .unwrap();
        assert!(verify(&pk, &Signing::Pkcs1(HashAlg::Sha256), msg, &sig).unwrap());
        assert!(!verify(&pk, &Signing::Pkcs1(HashAlg::Sha256), b"other", &sig).unwrap());
        assert!(!verify(&pk, &Signing::Pkcs1(HashAlg::Sha256), msg, &sig[1..]).unwrap());
        let ct = encrypt(
            &pk,
            &Encryption::Oaep {
                hash: HashAlg::Sha256,
                label: vec![],
            },
            msg,
        )
        .unwrap();
        assert_eq!(sk.decrypt(Oaep::new::<Sha256>(), &ct).unwrap(), msg);
        let mut h = Hasher::new(HashAlg::Sha384);
        h.update(b"hel");
        h.update(b"lo");
        assert_eq!(h.finish(), digest(HashAlg::Sha384, msg));
    }
}
