//! The handset's software crypto module: RSA key generation and import, and
//! the private-key operations (PKCS#1 v1.5 and PSS signatures, PKCS#1 v1.5
//! and OAEP decryption, OAEP re-wrap), plus the little X.509 parsing the
//! token needs.
//!
//! Every private-key operation is blinded with a fresh random factor.
//! PKCS#1 v1.5 decryption never reports a padding error: a bad ciphertext
//! yields a deterministic pseudo-random message (implicit rejection, as in
//! OpenSSL 3.2+). Errors are the [`CkRv`] values that cross the link.
//! `docs/rsa-timing.md` describes the residual timing risk.

use hmac::{Hmac, Mac};
use phonecsp_protocol::ck::RSA_KEY_BITS;
use phonecsp_protocol::{CkRv, DecryptMechanism, HashAlg, SignMechanism};
use rand::rngs::OsRng;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::der::{Decode, Encode};
use rsa::pkcs8::spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, PrivateKeyInfo};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, Oaep, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};
use zeroize::{Zeroize, Zeroizing};

pub use rsa::RsaPrivateKey;

/// Smallest modulus the handset holds or wraps to.
pub const MIN_KEY_BITS: usize = phonecsp_protocol::limits::MIN_RSA_BITS as usize;
/// Largest modulus the handset holds.
pub const MAX_KEY_BITS: usize = phonecsp_protocol::limits::MAX_RSA_BITS as usize;
/// Largest modulus a re-wrap target may have.
pub const MAX_WRAP_TARGET_BITS: usize = 16384;

/// `rsaEncryption` (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION_OID: rsa::pkcs8::ObjectIdentifier = rsa::pkcs1::ALGORITHM_OID;

/// Generates an RSA key of `bits` (2048, 3072 or 4096) with e = 65537.
pub fn generate(bits: u32) -> Result<RsaPrivateKey, CkRv> {
    if !RSA_KEY_BITS.contains(&bits) {
        return Err(CkRv::KEY_SIZE_RANGE);
    }
    RsaPrivateKey::new(&mut OsRng, bits as usize).map_err(|_| CkRv::FUNCTION_FAILED)
}

fn check_private_key(key: RsaPrivateKey) -> Result<RsaPrivateKey, CkRv> {
    let bits = key.n().bits();
    if !(MIN_KEY_BITS..=MAX_KEY_BITS).contains(&bits) {
        return Err(CkRv::KEY_SIZE_RANGE);
    }
    key.validate().map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    Ok(key)
}

/// Imports an unencrypted RSA private key in PEM: PKCS#8 (`PRIVATE KEY`) or
/// PKCS#1 (`RSA PRIVATE KEY`). Text around the PEM block is ignored.
pub fn import_pkcs8_pem(pem: &str) -> Result<RsaPrivateKey, CkRv> {
    let start = pem
        .find("-----BEGIN ")
        .ok_or(CkRv::ATTRIBUTE_VALUE_INVALID)?;
    let block = &pem[start..];
    let label_end = block[11..]
        .find("-----")
        .ok_or(CkRv::ATTRIBUTE_VALUE_INVALID)?
        + 11;
    let label = &block[11..label_end];
    let end_marker = format!("-----END {label}-----");
    let end = block
        .find(&end_marker)
        .ok_or(CkRv::ATTRIBUTE_VALUE_INVALID)?
        + end_marker.len();
    let block = &block[..end];
    match label {
        "PRIVATE KEY" => {
            let (_, doc) = rsa::pkcs8::SecretDocument::from_pem(block)
                .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
            from_pkcs8_der(doc.as_bytes())
        }
        "RSA PRIVATE KEY" => {
            let key =
                RsaPrivateKey::from_pkcs1_pem(block).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
            check_private_key(key)
        }
        // Encrypted PKCS#8, EC keys, certificates, ...
        _ => Err(CkRv::TEMPLATE_INCONSISTENT),
    }
}

/// The key as unencrypted PKCS#8 DER (for wrapping under a PIN).
pub fn to_pkcs8_der(key: &RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    key.to_pkcs8_der()
        .map(|doc| doc.to_bytes())
        .map_err(|_| CkRv::FUNCTION_FAILED)
}

/// Parses an unencrypted PKCS#8 DER RSA private key.
pub fn from_pkcs8_der(der: &[u8]) -> Result<RsaPrivateKey, CkRv> {
    let info = PrivateKeyInfo::from_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    if info.algorithm.oid != RSA_ENCRYPTION_OID {
        return Err(CkRv::TEMPLATE_INCONSISTENT);
    }
    let key = RsaPrivateKey::from_pkcs8_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    check_private_key(key)
}

/// A private key given to the handset (`+CKIMPORT`), parsed: one variant
/// per kind of key the handset holds, so that a new kind is a new variant
/// and a new arm of [`parse_pkcs8`].
pub enum ImportedKey {
    Rsa(RsaPrivateKey),
    /// P-256, P-384 or Ed25519, stored as a generated EC key is.
    Ec(crate::ec::EcPrivateKey),
}

/// Parses an unencrypted PKCS#8 DER private key (`PrivateKeyInfo`, RFC
/// 5208) of a kind the handset holds, and checks it. Not PKCS#8, trailing
/// bytes, or an encrypted PKCS#8 (an `EncryptedPrivateKeyInfo`, which has
/// no algorithm to read): `ATTRIBUTE_VALUE_INVALID`; a kind of key the
/// handset does not hold (an EC key on another curve among them):
/// `KEY_TYPE_INCONSISTENT`; an RSA key of a size it does not hold:
/// `KEY_SIZE_RANGE`.
///
/// An EC key (`id-ecPublicKey` with the named curve P-256 or P-384, an RFC
/// 5915 `ECPrivateKey` inside) must have a scalar in [1, n-1], and the
/// public key, where the key carries one (in the `ECPrivateKey` or as
/// PKCS#8 v2's `publicKey`), must be that scalar's; an Ed25519 key (RFC
/// 8410, OID 1.3.101.112) is a 32-byte seed, and its public key, if given,
/// must be the seed's. Anything else is `ATTRIBUTE_VALUE_INVALID`.
pub fn parse_pkcs8(der: &[u8]) -> Result<ImportedKey, CkRv> {
    use crate::ec::EcPrivateKey;
    use p256::pkcs8::DecodePrivateKey as _;
    let info = PrivateKeyInfo::from_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    let invalid = |_| CkRv::ATTRIBUTE_VALUE_INVALID;
    if info.algorithm.oid == EC_PUBLIC_KEY_OID {
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
        // The curve crates check the curve named, the scalar's range and
        // the ECPrivateKey's own public key against the scalar.
        let key = if curve == P256_OID {
            EcPrivateKey::P256(p256::SecretKey::from_pkcs8_der(der).map_err(invalid)?)
        } else if curve == P384_OID {
            EcPrivateKey::P384(p384::SecretKey::from_pkcs8_der(der).map_err(invalid)?)
        } else {
            return Err(CkRv::KEY_TYPE_INCONSISTENT);
        };
        // PKCS#8 v2 may carry the public key outside the ECPrivateKey too
        // (uncompressed or compressed SEC1): it must be this key's as well.
        if let Some(public) = info.public_key
            && !ec_point_matches(&key, public)
        {
            return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
        }
        return Ok(ImportedKey::Ec(key));
    }
    if info.algorithm.oid == ED25519_OID {
        // RFC 8410: no parameters; dalek checks a v2 public key.
        if info.algorithm.parameters.is_some() {
            return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
        }
        let key = ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(invalid)?;
        return Ok(ImportedKey::Ec(EcPrivateKey::Ed25519(key)));
    }
    if info.algorithm.oid == RSA_ENCRYPTION_OID {
        let key = RsaPrivateKey::from_pkcs8_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
        // Exactly the sizes the handset generates: a key it holds is one
        // every host's checks accept.
        if !RSA_KEY_BITS.contains(&(key.n().bits() as u32)) {
            return Err(CkRv::KEY_SIZE_RANGE);
        }
        return check_private_key(key).map(ImportedKey::Rsa);
    }
    Err(CkRv::KEY_TYPE_INCONSISTENT)
}

/// `id-ecPublicKey` (RFC 5480), and the named curves the handset holds.
const EC_PUBLIC_KEY_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// `id-Ed25519` (RFC 8410).
const ED25519_OID: rsa::pkcs8::ObjectIdentifier =
    rsa::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");

/// Whether `public` (SEC1, either form) is the public key of `key`.
fn ec_point_matches(key: &crate::ec::EcPrivateKey, public: &[u8]) -> bool {
    use crate::ec::EcPrivateKey;
    use p256::elliptic_curve::sec1::ToEncodedPoint as _;
    let compressed = public.first().is_some_and(|b| *b == 0x02 || *b == 0x03);
    let ours = match key {
        EcPrivateKey::P256(k) => k
            .public_key()
            .to_encoded_point(compressed)
            .as_bytes()
            .to_vec(),
        EcPrivateKey::P384(k) => k
            .public_key()
            .to_encoded_point(compressed)
            .as_bytes()
            .to_vec(),
        EcPrivateKey::Ed25519(_) => key.public_point(),
    };
    bool::from(ours.as_slice().ct_eq(public))
}

/// Modulus and public exponent (big-endian, no leading zeros) and the
/// modulus size in bits.
pub fn public_parts(key: &RsaPrivateKey) -> (Vec<u8>, Vec<u8>, u32) {
    (
        key.n().to_bytes_be(),
        key.e().to_bytes_be(),
        key.n().bits() as u32,
    )
}

/// The DER `SubjectPublicKeyInfo` of an EC public key (RFC 5480; RFC 8410
/// for Ed25519), as an attestation statement binds it: the algorithm and
/// curve, then the point as stored (SEC1 uncompressed, or Ed25519's 32
/// bytes). A point of the wrong length is `ATTRIBUTE_VALUE_INVALID`.
pub fn ec_spki_der(curve: phonecsp_protocol::ck::Curve, point: &[u8]) -> Result<Vec<u8>, CkRv> {
    use phonecsp_protocol::ck::Curve;
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let (algorithm, len): (Vec<u8>, usize) = match curve {
        Curve::P256 => ([EC_PUBLIC_KEY, curve.ec_params()].concat(), 65),
        Curve::P384 => ([EC_PUBLIC_KEY, curve.ec_params()].concat(), 97),
        Curve::Ed25519 => (curve.ec_params().to_vec(), 32),
    };
    if point.len() != len {
        return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
    }
    // Every length here is below 128: short-form DER lengths.
    let mut bits = vec![0x03, (point.len() + 1) as u8, 0x00];
    bits.extend(point);
    let mut alg = vec![0x30, algorithm.len() as u8];
    alg.extend(algorithm);
    let mut out = vec![0x30, (alg.len() + bits.len()) as u8];
    out.extend(alg);
    out.extend(bits);
    Ok(out)
}

/// The DER `SubjectPublicKeyInfo` of the RSA public key (`modulus`,
/// `exponent`), as `CKA_PUBLIC_KEY_INFO` and certificates carry it.
pub fn spki_der(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, CkRv> {
    let key = RsaPublicKey::new_with_max_size(
        BigUint::from_bytes_be(modulus),
        BigUint::from_bytes_be(exponent),
        MAX_WRAP_TARGET_BITS,
    )
    .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    key.to_public_key_der()
        .map(|doc| doc.into_vec())
        .map_err(|_| CkRv::FUNCTION_FAILED)
}

fn map_rsa_error(e: rsa::Error) -> CkRv {
    match e {
        rsa::Error::MessageTooLong | rsa::Error::InputNotHashed => CkRv::DATA_LEN_RANGE,
        rsa::Error::Decryption => CkRv::ENCRYPTED_DATA_INVALID,
        // Includes the check that recomputes the signature's inverse: a
        // fault in the private operation must not leave the module.
        _ => CkRv::DEVICE_ERROR,
    }
}

// rsa's `Pss::new_blinded*` are the schemes that pass the random generator
// on to the private operation (base blinding); the signatures are ordinary
// RSASSA-PSS. `Pss::new_with_salt` would sign unblinded.
fn pss_scheme(hash: HashAlg, salt_len: usize) -> Pss {
    match hash {
        HashAlg::Sha1 => Pss::new_blinded_with_salt::<Sha1>(salt_len),
        HashAlg::Sha224 => Pss::new_blinded_with_salt::<Sha224>(salt_len),
        HashAlg::Sha256 => Pss::new_blinded_with_salt::<Sha256>(salt_len),
        HashAlg::Sha384 => Pss::new_blinded_with_salt::<Sha384>(salt_len),
        HashAlg::Sha512 => Pss::new_blinded_with_salt::<Sha512>(salt_len),
    }
}

fn oaep_scheme(hash: HashAlg) -> Oaep {
    match hash {
        HashAlg::Sha1 => Oaep::new::<Sha1>(),
        HashAlg::Sha224 => Oaep::new::<Sha224>(),
        HashAlg::Sha256 => Oaep::new::<Sha256>(),
        HashAlg::Sha384 => Oaep::new::<Sha384>(),
        HashAlg::Sha512 => Oaep::new::<Sha512>(),
    }
}

fn hash_with<D: Digest>(parts: &[&[u8]]) -> Vec<u8> {
    let mut h = D::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().to_vec()
}

/// The hash of the concatenation of `parts`.
fn hash(alg: HashAlg, parts: &[&[u8]]) -> Vec<u8> {
    match alg {
        HashAlg::Sha1 => hash_with::<Sha1>(parts),
        HashAlg::Sha224 => hash_with::<Sha224>(parts),
        HashAlg::Sha256 => hash_with::<Sha256>(parts),
        HashAlg::Sha384 => hash_with::<Sha384>(parts),
        HashAlg::Sha512 => hash_with::<Sha512>(parts),
    }
}

/// `out ^= MGF1(seed)` (RFC 8017 B.2.1).
fn mgf1_xor(alg: HashAlg, seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in out.chunks_mut(alg.output_len()).enumerate() {
        let c = (counter as u32).to_be_bytes();
        let block = Zeroizing::new(hash(alg, &[seed, &c]));
        for (o, m) in chunk.iter_mut().zip(block.iter()) {
            *o ^= m;
        }
    }
}

/// Signs `data` with the private key.
///
/// `Pkcs1`: EMSA-PKCS1-v1_5 over `data` as given (normally a DigestInfo).
/// `Pss`: `data` is the digest; MGF1 uses the same hash.
pub fn sign(key: &RsaPrivateKey, mech: &SignMechanism, data: &[u8]) -> Result<Vec<u8>, CkRv> {
    let k = key.size();
    match *mech {
        SignMechanism::Pkcs1 => {
            if data.len() + 11 > k {
                return Err(CkRv::DATA_LEN_RANGE);
            }
            key.sign_with_rng(&mut OsRng, Pkcs1v15Sign::new_unprefixed(), data)
                .map_err(map_rsa_error)
        }
        SignMechanism::Pss { hash, salt_len } => {
            let h_len = hash.output_len();
            if data.len() != h_len {
                return Err(CkRv::DATA_LEN_RANGE);
            }
            // RFC 8017 9.1.1 step 3: emLen >= hLen + sLen + 2, with
            // emLen = ceil((modBits - 1) / 8).
            let em_len = (key.n().bits() - 1).div_ceil(8);
            let salt_len = salt_len as usize;
            if em_len < h_len + salt_len + 2 {
                return Err(CkRv::MECHANISM_PARAM_INVALID);
            }
            key.sign_with_rng(&mut OsRng, pss_scheme(hash, salt_len), data)
                .map_err(map_rsa_error)
        }
        // EC mechanisms with an RSA key.
        SignMechanism::Ecdsa | SignMechanism::Eddsa => Err(CkRv::KEY_TYPE_INCONSISTENT),
    }
}

/// The raw, blinded private-key operation on a ciphertext of exactly the
/// modulus length, with the result left-padded to that length.
fn private_op(key: &RsaPrivateKey, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    let k = key.size();
    if data.len() != k {
        return Err(CkRv::ENCRYPTED_DATA_LEN_RANGE);
    }
    let c = BigUint::from_bytes_be(data);
    // Public: the ciphertext and the modulus.
    if &c >= key.n() {
        return Err(CkRv::ENCRYPTED_DATA_INVALID);
    }
    let mut m = rsa::hazmat::rsa_decrypt_and_check(key, Some(&mut OsRng), &c)
        .map_err(|_| CkRv::DEVICE_ERROR)?;
    let bytes = Zeroizing::new(m.to_bytes_be());
    m.zeroize();
    if bytes.len() > k {
        return Err(CkRv::DEVICE_ERROR);
    }
    let mut em = Zeroizing::new(vec![0u8; k]);
    em[k - bytes.len()..].copy_from_slice(&bytes);
    Ok(em)
}

type HmacSha256 = Hmac<Sha256>;

fn hmac_sha256(key: &[u8]) -> Result<HmacSha256, CkRv> {
    <HmacSha256 as Mac>::new_from_slice(key).map_err(|_| CkRv::FUNCTION_FAILED)
}

/// The key-derivation key of implicit rejection:
/// `HMAC-SHA256(SHA256(d padded to k), ciphertext padded to k)`.
fn implicit_rejection_kdk(
    key: &RsaPrivateKey,
    ciphertext: &[u8],
) -> Result<Zeroizing<[u8; 32]>, CkRv> {
    let k = key.size();
    let d = Zeroizing::new(key.d().to_bytes_be());
    if d.len() > k || ciphertext.len() > k {
        return Err(CkRv::DEVICE_ERROR);
    }
    let mut padded = Zeroizing::new(vec![0u8; k]);
    padded[k - d.len()..].copy_from_slice(&d);
    let mut d_hash = Zeroizing::new([0u8; 32]);
    d_hash.copy_from_slice(&Sha256::digest(padded.as_slice()));
    let mut mac = hmac_sha256(d_hash.as_slice())?;
    mac.update(&vec![0u8; k - ciphertext.len()]);
    mac.update(ciphertext);
    let mut kdk = Zeroizing::new([0u8; 32]);
    kdk.copy_from_slice(&mac.finalize().into_bytes());
    Ok(kdk)
}

/// The implicit-rejection PRF: `out_len` bytes of
/// `HMAC-SHA256(kdk, i as u16 BE || label || bits as u16 BE)` for i = 0, 1, ...
fn implicit_rejection_prf(
    kdk: &[u8; 32],
    label: &[u8],
    out_len: usize,
) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    let bits = u16::try_from(out_len * 8).map_err(|_| CkRv::DEVICE_ERROR)?;
    let mut out = Zeroizing::new(vec![0u8; out_len]);
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut mac = hmac_sha256(kdk)?;
        mac.update(&(i as u16).to_be_bytes());
        mac.update(label);
        mac.update(&bits.to_be_bytes());
        let mut block = Zeroizing::new([0u8; 32]);
        block.copy_from_slice(&mac.finalize().into_bytes());
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(out)
}

/// Candidate lengths drawn for the synthetic message.
const LENGTH_CANDIDATES: usize = 128;

/// RSAES-PKCS1-v1_5 decryption with implicit rejection
/// (draft-irtf-cfrg-rsa-implicit-rejection; OpenSSL 3.2+ behaves the same).
fn decrypt_pkcs1(key: &RsaPrivateKey, data: &[u8]) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    let k = key.size();
    if k < 11 + 2 || k * 8 > usize::from(u16::MAX) {
        return Err(CkRv::KEY_SIZE_RANGE);
    }
    let em = private_op(key, data)?;

    // The alternative message, fixed by the key and the ciphertext.
    let kdk = implicit_rejection_kdk(key, data)?;
    let synthetic = implicit_rejection_prf(&kdk, b"message", k)?;
    let candidates = implicit_rejection_prf(&kdk, b"length", LENGTH_CANDIDATES * 2)?;
    // Longest message: k less 0x00 0x02 and at least 8 bytes of padding.
    let max_sep_offset = (k - 2 - 8) as u16;
    let mut len_mask = max_sep_offset;
    len_mask |= len_mask >> 1;
    len_mask |= len_mask >> 2;
    len_mask |= len_mask >> 4;
    len_mask |= len_mask >> 8;
    let mut synthetic_len = 0u16;
    for pair in candidates.chunks_exact(2) {
        let candidate = u16::from_be_bytes([pair[0], pair[1]]) & len_mask;
        synthetic_len =
            u16::conditional_select(&synthetic_len, &candidate, candidate.ct_lt(&max_sep_offset));
    }
    let synthetic_index = (k as u32) - u32::from(synthetic_len);

    // Check the real padding without branching on it.
    let mut good: Choice = em[0].ct_eq(&0) & em[1].ct_eq(&2);
    let mut found_zero = Choice::from(0);
    let mut zero_index = 0u32;
    for (i, b) in em.iter().enumerate().skip(2) {
        let is_zero = b.ct_eq(&0);
        zero_index = u32::conditional_select(&zero_index, &(i as u32), !found_zero & is_zero);
        found_zero |= is_zero;
    }
    // At least 8 bytes of padding; zero_index stays 0 (and fails this) when
    // no separator was found.
    good &= !zero_index.ct_lt(&(2 + 8));
    let msg_index = u32::conditional_select(&synthetic_index, &(zero_index + 1), good);

    let mut selected = Zeroizing::new(vec![0u8; k]);
    for ((out, real), synth) in selected.iter_mut().zip(em.iter()).zip(synthetic.iter()) {
        *out = u8::conditional_select(synth, real, good);
    }
    // From here on only the length of the answer shows, which the
    // computer sees anyway and which does not tell real from synthetic.
    Ok(Zeroizing::new(selected[msg_index as usize..].to_vec()))
}

/// RSAES-OAEP decoding (RFC 8017 7.1.2) of a decrypted block, in constant
/// time up to the final accept/reject.
fn oaep_decode(em: &[u8], alg: HashAlg, label: &[u8]) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    let k = em.len();
    let h_len = alg.output_len();
    if k < 2 * h_len + 2 {
        return Err(CkRv::ENCRYPTED_DATA_INVALID);
    }
    let l_hash = hash(alg, &[label]);
    let mut em = Zeroizing::new(em.to_vec());
    let (y, rest) = em.split_at_mut(1);
    let (seed, db) = rest.split_at_mut(h_len);
    mgf1_xor(alg, db, seed);
    mgf1_xor(alg, seed, db);

    let mut good = y[0].ct_eq(&0) & db[..h_len].ct_eq(&l_hash[..]);
    // DB = lHash' || PS (zeros) || 0x01 || M
    let mut looking = Choice::from(1);
    let mut index = 0u32;
    let mut bad_ps = Choice::from(0);
    for (i, b) in db.iter().enumerate().skip(h_len) {
        let is_zero = b.ct_eq(&0);
        let is_one = b.ct_eq(&1);
        index = u32::conditional_select(&index, &(i as u32), looking & is_one);
        bad_ps |= looking & !is_zero & !is_one;
        looking &= !is_one;
    }
    good &= !bad_ps & !looking;
    if bool::from(good) {
        Ok(Zeroizing::new(db[index as usize + 1..].to_vec()))
    } else {
        Err(CkRv::ENCRYPTED_DATA_INVALID)
    }
}

/// Decrypts `data` (exactly the modulus length) with the private key.
///
/// `Pkcs1` never fails on bad padding: see the module documentation.
pub fn decrypt(
    key: &RsaPrivateKey,
    mech: &DecryptMechanism,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    match mech {
        DecryptMechanism::Pkcs1 => decrypt_pkcs1(key, data),
        DecryptMechanism::Oaep { hash, label } => {
            let em = private_op(key, data)?;
            oaep_decode(&em, *hash, label)
        }
    }
}

/// Parses a DER SubjectPublicKeyInfo holding an RSA key.
fn rsa_public_from_spki(der: &[u8]) -> Result<RsaPublicKey, CkRv> {
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    rsa_public_from_spki_parts(&spki.algorithm, spki.subject_public_key.raw_bytes())
}

fn rsa_public_from_spki_parts(
    algorithm: &AlgorithmIdentifierRef<'_>,
    key_bits: &[u8],
) -> Result<RsaPublicKey, CkRv> {
    if algorithm.oid != RSA_ENCRYPTION_OID {
        return Err(CkRv::KEY_TYPE_INCONSISTENT);
    }
    let pk =
        rsa::pkcs1::RsaPublicKey::from_der(key_bits).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    let n = BigUint::from_bytes_be(pk.modulus.as_bytes());
    let bits = n.bits();
    if !(MIN_KEY_BITS..=MAX_WRAP_TARGET_BITS).contains(&bits) {
        return Err(CkRv::KEY_SIZE_RANGE);
    }
    let e = BigUint::from_bytes_be(pk.public_exponent.as_bytes());
    RsaPublicKey::new_with_max_size(n, e, MAX_WRAP_TARGET_BITS)
        .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)
}

/// Re-wrap: OAEP-decrypts `data` (MGF1 and label hash `in_hash`, empty
/// label) and OAEP-encrypts the plaintext (`out_hash`, empty label) to the
/// RSA key in `spki_der`. The plaintext never leaves this function.
pub fn rewrap(
    key: &RsaPrivateKey,
    in_hash: HashAlg,
    data: &[u8],
    out_hash: HashAlg,
    spki_der: &[u8],
) -> Result<Vec<u8>, CkRv> {
    // Check the target first, so a bad one costs no private operation.
    let target = rsa_public_from_spki(spki_der)?;
    let plaintext = oaep_open(key, in_hash, data)?;
    oaep_seal(&target, out_hash, &plaintext)
}

/// RSA-OAEP decryption with `hash`, MGF1 with the same hash, no label: a
/// re-wrap's input.
pub fn oaep_open(
    key: &RsaPrivateKey,
    hash: HashAlg,
    data: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    decrypt(
        key,
        &DecryptMechanism::Oaep {
            hash,
            label: Vec::new(),
        },
        data,
    )
}

/// RSA-OAEP encryption to `target`: a re-wrap's output.
pub fn oaep_seal(target: &RsaPublicKey, hash: HashAlg, secret: &[u8]) -> Result<Vec<u8>, CkRv> {
    target
        .encrypt(&mut OsRng, oaep_scheme(hash), secret)
        .map_err(map_rsa_error)
}

/// The RSA key of a DER SubjectPublicKeyInfo that a secret may be
/// re-wrapped to (its size checked); `CKR_KEY_TYPE_INCONSISTENT` for
/// another algorithm.
pub fn rewrap_target_rsa(spki_der: &[u8]) -> Result<RsaPublicKey, CkRv> {
    rsa_public_from_spki(spki_der)
}

/// The parts of a certificate PKCS#11 exposes as attributes, each the DER
/// encoding of the field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertFields {
    /// `CKA_SUBJECT`: the subject Name.
    pub subject: Vec<u8>,
    /// `CKA_ISSUER`: the issuer Name.
    pub issuer: Vec<u8>,
    /// `CKA_SERIAL_NUMBER`: the DER INTEGER.
    pub serial: Vec<u8>,
}

fn parse_cert(der: &[u8]) -> Result<x509_cert::Certificate, CkRv> {
    x509_cert::Certificate::from_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)
}

/// Parses an X.509 certificate (DER) for its subject, issuer and serial.
pub fn cert_fields(der: &[u8]) -> Result<CertFields, CkRv> {
    let cert = parse_cert(der)?;
    let tbs = &cert.tbs_certificate;
    let enc =
        |r: Result<Vec<u8>, rsa::pkcs8::der::Error>| r.map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID);
    Ok(CertFields {
        subject: enc(tbs.subject.to_der())?,
        issuer: enc(tbs.issuer.to_der())?,
        serial: enc(tbs.serial_number.to_der())?,
    })
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// Whether the certificate's subject public key is the RSA key
/// (`modulus`, `exponent`). Malformed certificates match nothing.
pub fn cert_matches_key(der: &[u8], modulus: &[u8], exponent: &[u8]) -> bool {
    let Ok(cert) = parse_cert(der) else {
        return false;
    };
    let spki = &cert.tbs_certificate.subject_public_key_info;
    if spki.algorithm.oid != RSA_ENCRYPTION_OID {
        return false;
    }
    let Ok(pk) = rsa::pkcs1::RsaPublicKey::from_der(spki.subject_public_key.raw_bytes()) else {
        return false;
    };
    strip_leading_zeros(pk.modulus.as_bytes()) == strip_leading_zeros(modulus)
        && strip_leading_zeros(pk.public_exponent.as_bytes()) == strip_leading_zeros(exponent)
}

/// A 2048-bit key shared by the tests of this crate (generated once).
#[cfg(test)]
pub(crate) fn test_key() -> &'static RsaPrivateKey {
    static KEY: std::sync::OnceLock<RsaPrivateKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| generate(2048).expect("generate a test key"))
}

/// Certificates for the tests of this crate.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn build_cert(key: &RsaPrivateKey, serial: u32, subject: &str) -> Vec<u8> {
        use std::str::FromStr;
        use std::time::Duration;
        use x509_cert::builder::{Builder, CertificateBuilder, Profile};
        use x509_cert::name::Name;
        use x509_cert::serial_number::SerialNumber;
        use x509_cert::spki::SubjectPublicKeyInfoOwned;
        use x509_cert::time::Validity;

        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key.clone());
        let spki_doc = key.to_public_key().to_public_key_der().unwrap();
        let spki = SubjectPublicKeyInfoOwned::from_der(spki_doc.as_bytes()).unwrap();
        let builder = CertificateBuilder::new(
            Profile::Root,
            SerialNumber::from(serial),
            Validity::from_now(Duration::from_secs(3600)).unwrap(),
            Name::from_str(subject).unwrap(),
            spki,
            &signer,
        )
        .unwrap();
        let cert = builder.build::<rsa::pkcs1v15::Signature>().unwrap();
        cert.to_der().unwrap()
    }

    /// A self-signed certificate for `key`.
    pub(crate) fn self_signed(key: &RsaPrivateKey) -> Vec<u8> {
        build_cert(key, 1, "CN=phonecsp test")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::LineEnding;
    use rsa::traits::PublicKeyParts;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn pubkey() -> RsaPublicKey {
        test_key().to_public_key()
    }

    #[test]
    fn generate_rejects_odd_sizes() {
        assert_eq!(generate(1024).err(), Some(CkRv::KEY_SIZE_RANGE));
        assert_eq!(generate(2047).err(), Some(CkRv::KEY_SIZE_RANGE));
        assert_eq!(generate(8192).err(), Some(CkRv::KEY_SIZE_RANGE));
        let (_, e, bits) = public_parts(test_key());
        assert_eq!(e, vec![1, 0, 1]);
        assert_eq!(bits, 2048);
    }

    #[test]
    fn pkcs1_sign_of_digest_info_verifies() {
        let digest = Sha256::digest(b"hello");
        let mut info = HashAlg::Sha256.digest_info_prefix().to_vec();
        info.extend_from_slice(&digest);
        let sig = sign(test_key(), &SignMechanism::Pkcs1, &info).unwrap();
        assert_eq!(sig.len(), 256);
        pubkey()
            .verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
            .unwrap();
    }

    #[test]
    fn pkcs1_sign_too_long_is_data_len_range() {
        assert_eq!(
            sign(test_key(), &SignMechanism::Pkcs1, &[0u8; 246]).err(),
            Some(CkRv::DATA_LEN_RANGE)
        );
        assert!(sign(test_key(), &SignMechanism::Pkcs1, &[0u8; 245]).is_ok());
    }

    #[test]
    fn pss_sign_verifies() {
        for (alg, salt) in [
            (HashAlg::Sha256, 32u32),
            (HashAlg::Sha384, 0),
            (HashAlg::Sha1, 20),
        ] {
            let digest = hash(alg, &[b"message"]);
            let mech = SignMechanism::Pss {
                hash: alg,
                salt_len: salt,
            };
            let sig = sign(test_key(), &mech, &digest).unwrap();
            let scheme = match alg {
                HashAlg::Sha256 => Pss::new_with_salt::<Sha256>(salt as usize),
                HashAlg::Sha384 => Pss::new_with_salt::<Sha384>(salt as usize),
                _ => Pss::new_with_salt::<Sha1>(salt as usize),
            };
            pubkey().verify(scheme, &digest, &sig).unwrap();
        }
    }

    #[test]
    fn pss_checks_lengths() {
        let pss = |salt_len| SignMechanism::Pss {
            hash: HashAlg::Sha256,
            salt_len,
        };
        // The digest has the hash's length.
        let short_digest = sign(test_key(), &pss(32), &[0u8; 31]).err();
        assert_eq!(short_digest, Some(CkRv::DATA_LEN_RANGE));
        // emLen 256: hLen 32 + salt + 2 must fit.
        assert!(sign(test_key(), &pss(222), &[1u8; 32]).is_ok());
        let too_big = sign(test_key(), &pss(223), &[1u8; 32]).err();
        assert_eq!(too_big, Some(CkRv::MECHANISM_PARAM_INVALID));
    }

    #[test]
    fn oaep_round_trip() {
        let msg = b"a disk key, 32 bytes long......!";
        for alg in HashAlg::ALL {
            let ct = pubkey().encrypt(&mut OsRng, oaep_scheme(alg), msg).unwrap();
            let mech = DecryptMechanism::Oaep {
                hash: alg,
                label: Vec::new(),
            };
            assert_eq!(decrypt(test_key(), &mech, &ct).unwrap().as_slice(), msg);
        }
        // With a label.
        let ct = pubkey()
            .encrypt(&mut OsRng, Oaep::new_with_label::<Sha256, _>("lbl"), msg)
            .unwrap();
        let oaep = |hash, label: &[u8]| DecryptMechanism::Oaep {
            hash,
            label: label.to_vec(),
        };
        let right = oaep(HashAlg::Sha256, b"lbl");
        assert_eq!(decrypt(test_key(), &right, &ct).unwrap().as_slice(), msg);
        let mut altered = ct.clone();
        altered[100] ^= 1;
        // (mechanism, ciphertext, what the handset answers)
        let refused = [
            (
                oaep(HashAlg::Sha256, b"other"),
                &ct[..],
                CkRv::ENCRYPTED_DATA_INVALID,
            ),
            (
                oaep(HashAlg::Sha1, b"lbl"),
                &ct[..],
                CkRv::ENCRYPTED_DATA_INVALID,
            ),
            (right.clone(), &altered[..], CkRv::ENCRYPTED_DATA_INVALID),
            (right, &ct[1..], CkRv::ENCRYPTED_DATA_LEN_RANGE),
        ];
        for (mech, ct, rv) in refused {
            assert_eq!(decrypt(test_key(), &mech, ct).err(), Some(rv), "{mech:?}");
        }
    }

    #[test]
    fn pkcs1_decrypt_round_trip() {
        for msg in [&b""[..], b"x", b"secret session key", &[7u8; 245]] {
            let ct = pubkey()
                .encrypt(&mut OsRng, rsa::Pkcs1v15Encrypt, msg)
                .unwrap();
            let pt = decrypt(test_key(), &DecryptMechanism::Pkcs1, &ct).unwrap();
            assert_eq!(pt.as_slice(), msg);
        }
    }

    #[test]
    fn pkcs1_decrypt_bad_padding_is_implicitly_rejected() {
        let key = test_key();
        // A block with type 1 (signature) padding: wrong for decryption.
        let mut em = vec![0u8; 256];
        em[1] = 1;
        em[2..200].fill(0xff);
        em[200] = 0;
        em[201..].fill(0x42);
        let ct = rsa::hazmat::rsa_encrypt(&key.to_public_key(), &BigUint::from_bytes_be(&em))
            .unwrap()
            .to_bytes_be();
        let mut ct_padded = vec![0u8; 256 - ct.len()];
        ct_padded.extend_from_slice(&ct);
        let a = decrypt(key, &DecryptMechanism::Pkcs1, &ct_padded).unwrap();
        let b = decrypt(key, &DecryptMechanism::Pkcs1, &ct_padded).unwrap();
        assert_eq!(a, b, "synthetic message must be deterministic");
        assert_ne!(a.as_slice(), &em[201..]);
        assert!(a.len() <= 256 - 11);
        // A different ciphertext gives a different synthetic message.
        let mut other = ct_padded.clone();
        other[255] ^= 1;
        if let Ok(c) = decrypt(key, &DecryptMechanism::Pkcs1, &other) {
            assert_ne!(c, a);
        }
        // Only the length is checked up front.
        assert_eq!(
            decrypt(key, &DecryptMechanism::Pkcs1, &ct_padded[1..]).err(),
            Some(CkRv::ENCRYPTED_DATA_LEN_RANGE)
        );
        // c >= n is publicly invalid.
        assert_eq!(
            decrypt(key, &DecryptMechanism::Pkcs1, &[0xff; 256]).err(),
            Some(CkRv::ENCRYPTED_DATA_INVALID)
        );
    }

    /// The 2048-bit key and vectors of draft-irtf-cfrg-rsa-implicit-rejection
    /// appendix B.1.
    const IR_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDIzIOXFAmNpWyq
I2QPk9yJl8FjcpaPwbDG31ETwclOiyHkitIpfmVBkBG05tj15zsbeLJXQAMh0e9r
YC1OyM6NFByUkF60rTBmOaSSBlNLbn8mB0I+l9/9EzyI1yE5ne+8fpbM3L1/Oq4f
6JJxK/tJKYF9URZmRAofrLeiCPXqFlkQrdij8tSXICNgzLYyAk8NBxacGRjzFveU
sUOu9U7IdSKkwCl4+WiZgL/79knDB+gYGb/4hAljjUi9lL4VK1n/ZJ+gvWKdD/oY
E8Or9LVr08LqVGXf+hRYkpKp2KJK0mvn7gUQdBtjgtQ8g9W/pApGYT0GK+RFUX28
rwy04adpAgMBAAECggEAFFUBDg8tWHZjpmam/xzNu/Dt2BAGRtAqAjkikImSxK05
5VZZKXJu9lCMOnEVjvC2/3UdOdB1gLstLwYyEEQtBgP/UNu9ezX+LJuxmkehr4Wk
wkkB4CyotYt5GbIO3zKqz79RrbS8S2G5t+loyqTVcPcO8Y2AYyKIk+R9Q578p5Ml
m88s0Qij2GiM3weOeseZlp8jOdLB9SK5aWhGKakzuq7CaBYl6rhPTlb0RH6diPua
GZz3ECPg4lexREGzPITTvGfKgDHSYSYYEDp6CkCEQmL3XYiQzWFuUfkDVIj9bgmd
6P9tZaT/EYJUgHyfWNL7uouhUdyMaL40nJd6IE4EwQKBgQD49a1rqCiTG+pFm4o/
bcBB0jSCQJwlcelj8x90hgKiVjcbOIPtRZ7PlwUmRZ7dFuBVIvWkXZR1Gy7C2vJy
x/iBalLADRgIAXFjTaiZ15cyIvUbk3YwVIaWqffYwkpZSXwe/NRVz7l+6G0rbTSX
KzMv2jA/BJmbTra1zAuzPndh3QKBgQDOei47SakLljMKEtxoK9+9+66N1twDthR6
771XV0Pw9tpNhiNQYbca/ZytLTQCXlashrD3dD6zXhrLyiN4lUJEZbcG7SIXXlcY
yMcLZwPqj2tRD5Rb5I5aNrs8PJFzK1id/AXXLYCQMZRFK9ohNIZH7HKUPxGoRuYv
rr6OtTaw/QKBgHb+FfGK4jnN8d9rRFykvGu5aNeIwhkzpPXc0oADPWcSBizAim3y
BMH70L5GMHRD5t1KZFY3VCnU4DjKJW+vHJvekcaxe3b4GZX5HEjLvrx78ONJTAg1
nk6M1qWH17ltYiH9fg+1xVdfCC7ld2l5gHGyu7SjIjgVG0cxS7ZUeQMRAoGBAJmI
SLBVSZoQCcvH0pSzax/98gIObnNkBT6U3hoADck0BYf34nJ29ozfYI11O2M3ewO2
9AhNLAJ8SziWCmIzup7Zc4t28Q6nW+RWB4v3AfZ8xrPz/cGG5kM2x2s3LoCRDsgL
CtzCPQL7muEEhqKCSAdbTqflbd/POILkUVYUcaKRAoGAZDv3RkKffYNmegZTAhNH
77/AXmNR+CGp3rtg4OzN5QBa2ensMeVY9+ksKTKOdFadfO98dMq8KzVe1AGhoJFL
Tjy7BkhOWBlgURae0UyqLvpuoETgVNJhRMwWKcVQEFWKBOEz9Et8JE2sJb+RPFe4
kO5J9UglnNY0BP72hZ3Pl1o=
-----END PRIVATE KEY-----
";

    /// (title, ciphertext, expected plaintext) from appendix B.1.
    const IR_VECTORS: &[(&str, &str, &str)] = &[
        (
            "valid",
            "8bfe264e85d3bdeaa6b8851b8e3b956ee3d226fd3f69063a86880173a273d9f283b2eebdd1ed35f7e02d91c571981b6737d5320bd8396b0f3ad5b019daec1b0aab3cbbc026395f4fd14f13673f2dfc81f9b660ec26ac381e6db3299b4e460b43fab9955df2b3cfaa20e900e19c856238fd371899c2bf2ce8c868b76754e5db3b036533fd603746be13c10d4e3e6022ebc905d20c2a7f32b215a4cd53b3f44ca1c327d2c2b651145821c08396c89071f665349c25e44d2733cd9305985ceef6430c3cf57af5fa224089221218fa34737c79c446d28a94c41c96e4e92ac53fbcf384dea8419ea089f8784445a492c812eb0d409467f75afd7d4d1078886205a066",
            "6c6f72656d20697073756d20646f6c6f722073697420616d6574",
        ),
        (
            "valid empty",
            "443ad9c5f00a1f4e9601717d274aacc93a824cb4d99b3c6a42e2b017e52e018443bd77d34a80703cd9b6acf523cd3b2cd1fea31940a68fba828836f1c3ed2fef071e95e0922ff0f47d0e81dacc13ecdeda3db6476f41e5b3f9ccfcfdf91558007b68ffbbe5e93bb088f1e4f0bb39bc7d8600b38930ecd00a341d8cc76955837efff0f0797c4b46fb1b375bba49bcdc877f39aaadb045c56b836072383eec6627ae280ad4f9a45d6e5b4cc7cf61d42b194ff0b9c9167c621e5380d8333e3b7f20c8d564c9ec6c2805f77c0146adea2f688a943b67ce8889f4a6353e6396d551c36a6dbf19359a825d14b69ccc4fd747cf14a1ca8578d7f0a67dc14b37f5e17ca3",
            "",
        ),
        (
            "invalid decrypting to empty",
            "20aaa8adbbc593a924ba1c5c7990b5c2242ae4b99d0fe636a19a4cf754edbcee774e472fe028160ed42634f8864900cb514006da642cae6ae8c7d087caebcfa6dad1551301e130344989a1d462d4164505f6393933450c67bc6d39d8f5160907cabc251b737925a1cf21e5c6aa5781b7769f6a2a583d97cce008c0f8b6add5f0b2bd80bee60237aa39bb20719fe75749f4bc4e42466ef5a861ae3a92395c7d858d430bfe38040f445ea93fa2958b503539800ffa5ce5f8cf51fa8171a91f36cb4f4575e8de6b4d3f096ee140b938fd2f50ee13f0d050222e2a72b0a3069ff3a6738e82c87090caa5aed4fcbe882c49646aa250b98f12f83c8d528113614a29e7",
            "",
        ),
        (
            "invalid decrypting to max size",
            "48cceab10f39a4db32f60074feea473cbcdb7accf92e150417f76b44756b190e843e79ec12aa85083a21f5437e7bad0a60482e601198f9d86923239c8786ee728285afd0937f7dde12717f28389843d7375912b07b991f4fdb0190fced8ba665314367e8c5f9d2981d0f5128feeb46cb50fc237e64438a86df198dd0209364ae3a842d77532b66b7ef263b83b1541ed671b120dfd660462e2107a4ee7b964e734a7bd68d90dda61770658a3c242948532da32648687e0318286473f675b412d6468f013f14d760a358dfcad3cda2afeec5e268a37d250c37f722f468a70dfd92d7294c3c1ee1e7f8843b7d16f9f37ef35748c3ae93aa155cdcdfeb4e78567303",
            "22d850137b9eebe092b24f602dc5bb7918c16bd89ddbf20467b119d205f9c2e4bd7d2592cf1e532106e0f33557565923c73a02d4f09c0c22bea89148183e60317f7028b3aa1f261f91c979393101d7e15f4067e63979b32751658ef769610fe97cf9cef3278b3117d384051c3b1d82c251c2305418c8f6840530e631aad63e70e20e025bcd8efb54c92ec6d3b106a2f8e64eeff7d38495b0fc50c97138af4b1c0a67a1c4e27b077b8439332edfa8608dfeae653cd6a628ac550395f7e74390e42c11682234870925eeaa1fa71b76cf1f2ee3bda69f6717033ff8b7c95c9799e7a3bea5e7e4a1c359772fb6b1c6e6c516661dfe30c3",
        ),
        (
            "invalid with null padded ciphertext",
            "006f89db685c0a132700c6a17f88a37a6635d0ab89de4c45dc09736c891ca5bf3401ce34c6e5d51e94ed2f518857ddc12d9f9f9e68e01cdc30d86ae5dd83988c0c46a8e39daa1b328a23def551d67fa1964fb15242c83ddd7dd5b1aec720a391d0b86cb16cf4d3c466850c3df88a3ed85993900d1287a0c90c4b04d34ba29e59967661f3f10e0c998f64e14e777e8e81371eca5318b4e0b53414292130c821477c51e2bff844836ab10dff293d82e4f40d345968ef268c92ed0bc238f31d50f4d3f759c23964923e135d15527556410fbd2c451d6a2aa852dc88b01139c6fdd826736d8cd3780601b2977b09c080bd8c0fa471606ad59f053ad33d9eeb905f20",
            "2b5dd72df3cae37f1aef",
        ),
        (
            "invalid with second to last length",
            "1439e08c3f84c1a7fec74ce07614b20e01f6fa4e8c2a6cffdc3520d8889e5d9a950c6425798f85d4be38d300ea5695f13ecd4cb389d1ff5b82484b494d6280ab7fa78e645933981cb934cce8bfcd114cc0e6811eefa47aae20af638a1cd163d2d3366186d0a07df0c81f6c9f3171cf3561472e98a6006bf75ddb457bed036dcce199369de7d94ef2c68e8467ee0604eea2b3009479162a7891ba5c40cab17f49e1c438cb6eaea4f76ce23cce0e483ff0e96fa790ea15be67671814342d0a23f4a20262b6182e72f3a67cd289711503c85516a9ed225422f98b116f1ab080a80abd6f0216df88d8cfd67c139243be8dd78502a7aaf6bc99d7da71bcdf627e7354",
            "0f9b",
        ),
        (
            "invalid first byte of padding",
            "9b2ec9c0c917c98f1ad3d0119aec6be51ae3106e9af1914d48600ab6a2c0c0c8ae02a2dc3039906ff3aac904af32ec798fd65f3ad1afa2e69400e7c1de81f5728f3b3291f38263bc7a90a0563e43ce7a0d4ee9c0d8a716621ca5d3d081188769ce1b131af7d35b13dea99153579c86db31fe07d5a2c14d621b77854e48a8df41b5798563af489a291e417b6a334c63222627376118c02c53b6e86310f728734ffc86ef9d7c8bf56c0c841b24b82b59f51aee4526ba1c4268506d301e4ebc498c6aebb6fd5258c876bf900bac8ca4d309dd522f6a6343599a8bc3760f422c10c72d0ad527ce4af1874124ace3d99bb74db8d69d2528db22c3a37644640f95c05f",
            "a1f8c9255c35cfba403ccc",
        ),
        (
            "invalid with padding separator missing",
            "3d1b97e7aa34eaf1f4fc171ceb11dcfffd9a46a5b6961205b10b302818c1fcc9f4ec78bf18ea0cee7e9fa5b16fb4c611463b368b3312ac11cf9c06b7cf72b54e284848a508d3f02328c62c2999d0fb60929f81783c7a256891bc2ff4d91df2af96a24fc5701a1823af939ce6dbdc510608e3d41eec172ad2d51b9fc61b4217c923cadcf5bac321355ef8be5e5f090cdc2bd0c697d9058247db3ad613fdce87d2955a6d1c948a5160f93da21f731d74137f5d1f53a1923adb513d2e6e1589d44cc079f4c6ddd471d38ac82d20d8b1d21f8d65f3b6907086809f4123e08d86fb38729585de026a485d8f0e703fd4772f6668febf67df947b82195fa3867e3a3065",
            "6f09a0b62699337c497b0b",
        ),
    ];

    #[test]
    fn implicit_rejection_matches_draft_vectors() {
        let key = import_pkcs8_pem(IR_KEY).unwrap();
        for (title, ct, expected) in IR_VECTORS {
            let pt = decrypt(&key, &DecryptMechanism::Pkcs1, &hex(ct))
                .unwrap_or_else(|e| panic!("{title}: {e}"));
            assert_eq!(pt.as_slice(), hex(expected).as_slice(), "{title}");
        }
    }

    #[test]
    fn rewrap_reencrypts_to_the_target() {
        let target = generate(2048).unwrap();
        let (n, e, _) = public_parts(&target);
        let spki = spki_der(&n, &e).unwrap();
        let secret = [0x5au8; 64];
        let ct = pubkey()
            .encrypt(&mut OsRng, Oaep::new::<Sha256>(), &secret)
            .unwrap();
        let out = rewrap(test_key(), HashAlg::Sha256, &ct, HashAlg::Sha384, &spki).unwrap();
        let mech = DecryptMechanism::Oaep {
            hash: HashAlg::Sha384,
            label: Vec::new(),
        };
        assert_eq!(decrypt(&target, &mech, &out).unwrap().as_slice(), &secret);
        // A bad ciphertext, a wrong hash and bad targets are refused.
        assert_eq!(
            rewrap(test_key(), HashAlg::Sha1, &ct, HashAlg::Sha256, &spki).err(),
            Some(CkRv::ENCRYPTED_DATA_INVALID)
        );
        assert_eq!(
            rewrap(test_key(), HashAlg::Sha256, &ct, HashAlg::Sha256, b"junk").err(),
            Some(CkRv::ATTRIBUTE_VALUE_INVALID)
        );
        // A 1024-bit target.
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let small_spki = small.to_public_key().to_public_key_der().unwrap();
        assert_eq!(
            rewrap(
                test_key(),
                HashAlg::Sha256,
                &ct,
                HashAlg::Sha256,
                small_spki.as_bytes()
            )
            .err(),
            Some(CkRv::KEY_SIZE_RANGE)
        );
        // Not an RSA key: an Ed25519 SubjectPublicKeyInfo.
        let mut ed = hex("302a300506032b6570032100");
        ed.extend_from_slice(&[7u8; 32]);
        assert_eq!(
            rewrap(test_key(), HashAlg::Sha256, &ct, HashAlg::Sha256, &ed).err(),
            Some(CkRv::KEY_TYPE_INCONSISTENT)
        );
    }

    #[test]
    fn pkcs8_import_and_der_round_trip() {
        let pem = test_key().to_pkcs8_pem(LineEnding::LF).unwrap();
        let framed = format!("some text before\n{}\nafter", pem.as_str());
        let key = import_pkcs8_pem(&framed).unwrap();
        assert_eq!(key.n(), test_key().n());
        let pkcs1 =
            rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_pem(test_key(), LineEnding::LF).unwrap();
        assert_eq!(import_pkcs8_pem(&pkcs1).unwrap().d(), test_key().d());
        let der = to_pkcs8_der(test_key()).unwrap();
        assert_eq!(from_pkcs8_der(&der).unwrap().n(), test_key().n());
    }

    #[test]
    fn bad_keys_are_errors_not_panics() {
        for bad in [
            "",
            "garbage",
            "-----BEGIN ",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nMAA=\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nno end",
        ] {
            assert!(import_pkcs8_pem(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            import_pkcs8_pem("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
                .err(),
            Some(CkRv::TEMPLATE_INCONSISTENT)
        );
        let der = to_pkcs8_der(test_key()).unwrap();
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert!(from_pkcs8_der(&der[..cut]).is_err(), "cut at {cut}");
        }
        let small = RsaPrivateKey::new(&mut OsRng, 1024).unwrap();
        let pem = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert_eq!(import_pkcs8_pem(&pem).err(), Some(CkRv::KEY_SIZE_RANGE));
    }

    /// PKCS#8 of each curve's key, as the curve crates write it (with the
    /// public key).
    fn ec_pkcs8(curve: phonecsp_protocol::ck::Curve) -> (crate::ec::EcPrivateKey, Vec<u8>) {
        use crate::ec::EcPrivateKey;
        use p256::pkcs8::EncodePrivateKey as _;
        let key = EcPrivateKey::generate(curve);
        let der = match &key {
            EcPrivateKey::P256(k) => k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
            EcPrivateKey::P384(k) => k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
            EcPrivateKey::Ed25519(k) => k.to_pkcs8_der().unwrap().as_bytes().to_vec(),
        };
        (key, der)
    }

    /// Issue 15, item 3: P-256, P-384 and Ed25519 PKCS#8 import as the key
    /// they hold; a public key that is not the scalar's, a scalar out of
    /// range, a curve the handset does not hold and damaged DER are refused.
    #[test]
    fn ec_pkcs8_imports_are_checked() {
        use phonecsp_protocol::ck::Curve;
        for curve in Curve::ALL {
            let (key, der) = ec_pkcs8(curve);
            let Ok(ImportedKey::Ec(got)) = parse_pkcs8(&der) else {
                panic!("{curve:?} did not parse as EC");
            };
            assert_eq!(got.curve(), curve);
            assert_eq!(got.public_point(), key.public_point());
            // The public key at the end replaced by another key's.
            let (other, other_der) = ec_pkcs8(curve);
            assert_ne!(other.public_point(), key.public_point());
            let n = curve.point_len();
            let mut mixed = der.clone();
            let at = mixed.len() - n;
            mixed[at..].copy_from_slice(&other_der[other_der.len() - n..]);
            assert_eq!(
                parse_pkcs8(&mixed).err(),
                Some(CkRv::ATTRIBUTE_VALUE_INVALID),
                "{curve:?} with another key's public key"
            );
            for cut in [1, 10, der.len() / 2] {
                assert_eq!(
                    parse_pkcs8(&der[..der.len() - cut]).err(),
                    Some(CkRv::ATTRIBUTE_VALUE_INVALID),
                    "{curve:?} cut by {cut}"
                );
            }
        }
        // P-521 (1.3.132.0.35): the P-384 key with its curve renamed.
        let (_, der) = ec_pkcs8(Curve::P384);
        let p384 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
        let at = der.windows(7).position(|w| w == p384).unwrap();
        let mut p521 = der.clone();
        p521[at + 6] = 0x23;
        assert_eq!(parse_pkcs8(&p521).err(), Some(CkRv::KEY_TYPE_INCONSISTENT));
        // A P-256 scalar of all ones is above the order.
        let (_, der) = ec_pkcs8(Curve::P256);
        let scalar = [0x04, 0x20];
        let at = der.windows(2).position(|w| w == scalar).unwrap() + 2;
        let mut big = der[..at].to_vec();
        big.extend_from_slice(&[0xff; 32]);
        big.extend_from_slice(&der[at + 32..]);
        assert_eq!(parse_pkcs8(&big).err(), Some(CkRv::ATTRIBUTE_VALUE_INVALID));
    }

    #[test]
    fn ec_spki_der_is_what_the_curve_crates_write() {
        use phonecsp_protocol::ck::Curve;
        // RFC 8410's example Ed25519 public key.
        let ed = [0x19u8; 32];
        let der = ec_spki_der(Curve::Ed25519, &ed).unwrap();
        assert_eq!(
            der[..12],
            [
                0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00
            ]
        );
        assert_eq!(&der[12..], &ed);
        let p256 = p256::SecretKey::random(&mut OsRng).public_key();
        let point = p256.to_sec1_bytes();
        let der = ec_spki_der(Curve::P256, &point).unwrap();
        assert_eq!(der.len(), 91);
        assert_eq!(der[0..2], [0x30, 0x59]);
        assert!(ec_spki_der(Curve::P384, &point).is_err());
    }

    #[test]
    fn spki_der_round_trips() {
        let (n, e, _) = public_parts(test_key());
        let der = spki_der(&n, &e).unwrap();
        assert_eq!(
            der,
            test_key()
                .to_public_key()
                .to_public_key_der()
                .unwrap()
                .as_bytes()
        );
        assert!(spki_der(&[], &e).is_err());
    }

    #[test]
    fn cert_fields_and_key_match() {
        let der = tests_support::build_cert(test_key(), 4242, "CN=phonecsp test,O=Example");
        let f = cert_fields(&der).unwrap();
        let name = x509_cert::name::Name::from_der(&f.subject).unwrap();
        assert_eq!(name.to_string(), "CN=phonecsp test,O=Example");
        assert_eq!(f.issuer, f.subject, "self-signed");
        assert_eq!(f.serial, vec![0x02, 0x02, 0x10, 0x92]);
        let (n, e, _) = public_parts(test_key());
        assert!(cert_matches_key(&der, &n, &e));
        let mut n_padded = vec![0u8];
        n_padded.extend_from_slice(&n);
        assert!(cert_matches_key(&der, &n_padded, &e));
        let mut other = n.clone();
        other[10] ^= 1;
        assert!(!cert_matches_key(&der, &other, &e));
        assert!(!cert_matches_key(&der, &n, &[3]));
        // Malformed input.
        assert_eq!(
            cert_fields(&der[..der.len() / 2]).err(),
            Some(CkRv::ATTRIBUTE_VALUE_INVALID)
        );
        assert_eq!(cert_fields(b"").err(), Some(CkRv::ATTRIBUTE_VALUE_INVALID));
        assert!(!cert_matches_key(&der[..100], &n, &e));
    }
}
