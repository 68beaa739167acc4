//! `+CKREWRAP` with any key (docs/protocol.md section 7.16): a secret
//! wrapped to one of the container's keys is opened here and wrapped to
//! another public key, without ever reaching the computer in the clear.
//! An RSA key's secret is RSA-OAEP; an EC key's (P-256, P-384) is the
//! one-time point of its ECDH, then the secret sealed as
//! `phonecsp_protocol::disk_wrap` says. The target may be either kind.

use phonecsp_protocol::ck::Curve;
use phonecsp_protocol::{CkRv, HashAlg, disk_wrap};
use rsa::pkcs8::der::{Decode, Encode};
use rsa::pkcs8::spki::SubjectPublicKeyInfoRef;
use zeroize::Zeroizing;

use crate::crypto;
use crate::ec::EcPrivateKey;
use crate::store::PrivateKey;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Where the secret goes.
enum Target {
    Rsa(rsa::RsaPublicKey),
    /// A one-time key pair's point and the shared secret with the target
    /// point, made before the source is opened.
    Ec {
        point: Vec<u8>,
        ephemeral: Vec<u8>,
        z: Zeroizing<Vec<u8>>,
    },
}

impl Target {
    /// The target key of `spki`, checked before any private operation: an
    /// RSA key of a usable size, or a P-256/P-384 point on its curve
    /// (`CKR_KEY_TYPE_INCONSISTENT` for any other key; the EC scheme's
    /// KDF is SHA-256, so another `hash` is `CKR_MECHANISM_PARAM_INVALID`).
    fn from_spki(spki: &[u8], hash: HashAlg) -> Result<Target, CkRv> {
        let parsed =
            SubjectPublicKeyInfoRef::from_der(spki).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
        if parsed.algorithm.oid != EC_PUBLIC_KEY_OID {
            return crypto::rewrap_target_rsa(spki).map(Target::Rsa);
        }
        let params = parsed
            .algorithm
            .parameters
            .and_then(|p| p.to_der().ok())
            .ok_or(CkRv::ATTRIBUTE_VALUE_INVALID)?;
        let curve = match Curve::from_ec_params(&params) {
            Some(c @ (Curve::P256 | Curve::P384)) => c,
            _ => return Err(CkRv::KEY_TYPE_INCONSISTENT),
        };
        if hash != HashAlg::Sha256 {
            return Err(CkRv::MECHANISM_PARAM_INVALID);
        }
        let point = parsed.subject_public_key.raw_bytes().to_vec();
        let one_time = EcPrivateKey::generate(curve);
        // A point off the curve (or of the wrong length) is refused here.
        let z = one_time
            .derive(&point)
            .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
        Ok(Target::Ec {
            ephemeral: one_time.public_point(),
            point,
            z,
        })
    }

    fn seal(&self, hash: HashAlg, secret: &[u8]) -> Result<Vec<u8>, CkRv> {
        match self {
            Target::Rsa(k) => crypto::oaep_seal(k, hash, secret),
            Target::Ec {
                point,
                ephemeral,
                z,
            } => Ok([
                ephemeral.clone(),
                disk_wrap::seal(z, ephemeral, point, secret),
            ]
            .concat()),
        }
    }
}

/// Opens `data` with `key` and wraps the secret to `spki`'s key.
pub fn rewrap(
    key: &PrivateKey,
    in_hash: HashAlg,
    data: &[u8],
    out_hash: HashAlg,
    spki: &[u8],
) -> Result<Vec<u8>, CkRv> {
    let target = Target::from_spki(spki, out_hash)?;
    let secret = open(key, in_hash, data)?;
    target.seal(out_hash, &secret)
}

/// The secret wrapped to `key`: for an EC key, `data` is the one-time
/// point (uncompressed, on the key's curve) then the sealed secret, and
/// anything that does not open is `CKR_ENCRYPTED_DATA_INVALID`.
fn open(key: &PrivateKey, hash: HashAlg, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    let k = match key {
        PrivateKey::Rsa(k) => return crypto::oaep_open(k, hash, data),
        PrivateKey::Ec(k) => k,
    };
    let curve = k.curve();
    if curve == Curve::Ed25519 {
        return Err(CkRv::KEY_TYPE_INCONSISTENT);
    }
    if hash != HashAlg::Sha256 {
        return Err(CkRv::MECHANISM_PARAM_INVALID);
    }
    if data.len() < curve.point_len() + disk_wrap::OVERHEAD {
        return Err(CkRv::ENCRYPTED_DATA_LEN_RANGE);
    }
    let (ephemeral, sealed) = data.split_at(curve.point_len());
    let z = k
        .derive(ephemeral)
        .map_err(|_| CkRv::ENCRYPTED_DATA_INVALID)?;
    disk_wrap::open(&z, ephemeral, &k.public_point(), sealed).ok_or(CkRv::ENCRYPTED_DATA_INVALID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey;

    /// DER SEQUENCE (or another short tag) around `body`.
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        assert!(body.len() < 128);
        [&[tag, body.len() as u8][..], body].concat()
    }

    fn spki_of(algorithm: &[u8], point: &[u8]) -> Vec<u8> {
        let bits = [&[0u8][..], point].concat();
        tlv(0x30, &[tlv(0x30, algorithm), tlv(0x03, &bits)].concat())
    }

    /// id-ecPublicKey with the curve's OID, and the point.
    fn ec_spki(k: &EcPrivateKey) -> Vec<u8> {
        let oid = [0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        spki_of(
            &[&oid[..], k.curve().ec_params()].concat(),
            &k.public_point(),
        )
    }

    /// What the computer makes at enrolment: the one-time point, then the
    /// sealed secret.
    fn wrapped_to(k: &EcPrivateKey, secret: &[u8]) -> Vec<u8> {
        let one_time = EcPrivateKey::generate(k.curve());
        let e = one_time.public_point();
        let z = one_time.derive(&k.public_point()).unwrap();
        [
            e.clone(),
            disk_wrap::seal(&z, &e, &k.public_point(), secret),
        ]
        .concat()
    }

    #[test]
    fn a_secret_moves_between_ec_and_rsa_keys_every_way() {
        let secret = b"a disk secret of some length".to_vec();
        let rsa = crypto::generate(2048).unwrap();
        let rsa_spki = rsa.to_public_key().to_public_key_der().unwrap().into_vec();
        let p256 = EcPrivateKey::generate(Curve::P256);
        let p384 = EcPrivateKey::generate(Curve::P384);
        let sha = HashAlg::Sha256;

        // EC to EC (another curve), then back to RSA, then RSA to EC.
        let to_p384 = rewrap(
            &PrivateKey::Ec(p256_clone(&p256)),
            sha,
            &wrapped_to(&p256, &secret),
            sha,
            &ec_spki(&p384),
        )
        .unwrap();
        assert_eq!(to_p384.len(), 97 + disk_wrap::OVERHEAD + secret.len());
        let to_rsa = rewrap(&PrivateKey::Ec(p384), sha, &to_p384, sha, &rsa_spki).unwrap();
        let opened = crypto::oaep_open(&rsa, sha, &to_rsa).unwrap();
        assert_eq!(&opened[..], &secret[..]);
        let to_p256 = rewrap(&PrivateKey::Rsa(rsa), sha, &to_rsa, sha, &ec_spki(&p256)).unwrap();
        let back = open(&PrivateKey::Ec(p256), sha, &to_p256).unwrap();
        assert_eq!(&back[..], &secret[..]);
    }

    fn p256_clone(k: &EcPrivateKey) -> EcPrivateKey {
        EcPrivateKey::from_bytes(k.curve(), &k.to_bytes()).unwrap()
    }

    #[test]
    fn bad_sources_and_targets_are_refused_before_anything_is_made() {
        let secret = b"s".to_vec();
        let k = EcPrivateKey::generate(Curve::P256);
        let good = wrapped_to(&k, &secret);
        let spki = ec_spki(&EcPrivateKey::generate(Curve::P256));
        let key = PrivateKey::Ec(p256_clone(&k));
        let sha = HashAlg::Sha256;
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(
            rewrap(&key, sha, &flipped, sha, &spki),
            Err(CkRv::ENCRYPTED_DATA_INVALID)
        );
        let mut off_curve = good.clone();
        off_curve[10] ^= 1;
        assert_eq!(
            rewrap(&key, sha, &off_curve, sha, &spki),
            Err(CkRv::ENCRYPTED_DATA_INVALID)
        );
        assert_eq!(
            rewrap(&key, sha, &good[..80], sha, &spki),
            Err(CkRv::ENCRYPTED_DATA_LEN_RANGE)
        );
        assert_eq!(
            rewrap(&key, HashAlg::Sha1, &good, sha, &spki),
            Err(CkRv::MECHANISM_PARAM_INVALID)
        );
        assert_eq!(
            rewrap(&key, sha, &good, HashAlg::Sha384, &spki),
            Err(CkRv::MECHANISM_PARAM_INVALID)
        );
        // A target point off its curve; an Ed25519 target or source.
        let mut bad_spki = spki.clone();
        let n = bad_spki.len();
        bad_spki[n - 5] ^= 1;
        assert_eq!(
            rewrap(&key, sha, &good, sha, &bad_spki),
            Err(CkRv::ATTRIBUTE_VALUE_INVALID)
        );
        let ed = EcPrivateKey::generate(Curve::Ed25519);
        // id-Ed25519 (RFC 8410).
        let ed_spki = spki_of(&[0x06, 0x03, 0x2b, 0x65, 0x70], &ed.public_point());
        assert_eq!(
            rewrap(&key, sha, &good, sha, &ed_spki),
            Err(CkRv::KEY_TYPE_INCONSISTENT)
        );
        assert_eq!(
            rewrap(&PrivateKey::Ec(ed), sha, &good, sha, &spki),
            Err(CkRv::KEY_TYPE_INCONSISTENT)
        );
        // The good one still opens.
        assert!(rewrap(&key, sha, &good, sha, &spki).is_ok());
    }
}
