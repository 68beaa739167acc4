//! The computer's public-key half of the cryptography: public keys from
//! their attributes, signature verification and encryption, done in the
//! calling process. None of it needs the handset (docs/architecture.md,
//! "The division of labour").

use crate::input::{HandsetSign, SignInput};
use crate::mechanism::{Encryption, Signing};
use phonecsp_protocol::ck::cka;
use phonecsp_protocol::{CkRv, HashAlg};
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};

/// An RSA public key from its modulus and exponent (big-endian).
pub fn public_key(modulus: &[u8], exponent: &[u8]) -> Result<RsaPublicKey, CkRv> {
    RsaPublicKey::new(
        BigUint::from_bytes_be(modulus),
        BigUint::from_bytes_be(exponent),
    )
    .map_err(|_| CkRv::KEY_TYPE_INCONSISTENT)
}

/// An RSA public key from the handset's attributes of a public key
/// (`CKA_MODULUS`, `CKA_PUBLIC_EXPONENT`), in whatever order they come.
pub fn public_key_from_attributes<'a>(
    attrs: impl IntoIterator<Item = (&'a u32, &'a Vec<u8>)>,
) -> Result<RsaPublicKey, CkRv> {
    let (mut n, mut e) = (None, None);
    for (t, v) in attrs {
        match *t {
            cka::MODULUS => n = Some(v),
            cka::PUBLIC_EXPONENT => e = Some(v),
            _ => {}
        }
    }
    match (n, e) {
        (Some(n), Some(e)) => public_key(n, e),
        _ => Err(CkRv::KEY_TYPE_INCONSISTENT),
    }
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
    let input = SignInput::once(*signing, key.size(), data)?;
    Ok(verify_prepared(key, &input, sig))
}

/// Checks a signature over input already prepared as for the handset.
pub fn verify_prepared(key: &RsaPublicKey, input: &HandsetSign, sig: &[u8]) -> bool {
    if sig.len() != key.size() {
        return false;
    }
    match input.mechanism {
        phonecsp_protocol::SignMechanism::Pkcs1 => key
            .verify(Pkcs1v15Sign::new_unprefixed(), &input.data, sig)
            .is_ok(),
        phonecsp_protocol::SignMechanism::Pss { hash, salt_len } => {
            pss_verify(key, hash, salt_len, &input.data, sig)
        }
    }
}

/// Encrypts to the public key.
pub fn encrypt(key: &RsaPublicKey, enc: &Encryption, data: &[u8]) -> Result<Vec<u8>, CkRv> {
    enc.check_plaintext(data.len(), key.size())?;
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
    use sha2::Digest;

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
        let attrs = [
            (cka::PUBLIC_EXPONENT, pk.e().to_bytes_be()),
            (cka::MODULUS, pk.n().to_bytes_be()),
        ];
        assert_eq!(
            public_key_from_attributes(attrs.iter().map(|(t, v)| (t, v))).unwrap(),
            pk
        );
        assert_eq!(
            public_key_from_attributes(attrs[..1].iter().map(|(t, v)| (t, v))),
            Err(CkRv::KEY_TYPE_INCONSISTENT)
        );
    }
}
