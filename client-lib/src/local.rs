//! The computer's public-key half of the cryptography: public keys from
//! their attributes, signature verification and encryption, done in the
//! calling process. None of it needs the handset (docs/architecture.md,
//! "The division of labour").

use crate::input::{HandsetSign, SignInput};
use crate::mechanism::{Encryption, Signing};
use phonecsp_protocol::ck::{Curve, cka, ckk};
use phonecsp_protocol::{CkRv, HashAlg, SignMechanism};
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha1::Sha1;
use sha2::{Sha224, Sha256, Sha384, Sha512};
use zeroize::Zeroizing;

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

/// A public key of any type the handset holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    Rsa(RsaPublicKey),
    Ec(EcPublicKey),
}

/// An EC public key: its curve and its point (SEC1 uncompressed for the
/// NIST curves, checked to be on the curve; Ed25519's 32 bytes, checked to
/// decode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcPublicKey {
    pub curve: Curve,
    pub point: Vec<u8>,
}

impl EcPublicKey {
    /// The key, if `point` is a valid public key on `curve`: right length,
    /// on the curve, not the identity. `CKR_DATA_INVALID` otherwise (a
    /// point from the phone or a peer is never trusted unchecked).
    pub fn new(curve: Curve, point: &[u8]) -> Result<EcPublicKey, CkRv> {
        let valid = match curve {
            _ if point.len() != curve.point_len() => false,
            Curve::P256 => point[0] == 4 && p256::PublicKey::from_sec1_bytes(point).is_ok(),
            Curve::P384 => point[0] == 4 && p384::PublicKey::from_sec1_bytes(point).is_ok(),
            Curve::Ed25519 => <[u8; 32]>::try_from(point)
                .ok()
                .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                .is_some(),
        };
        if !valid {
            return Err(CkRv::DATA_INVALID);
        }
        Ok(EcPublicKey {
            curve,
            point: point.to_vec(),
        })
    }

    /// Checks `r || s` (or Ed25519's `R || S`) over what the handset was
    /// asked to sign: a digest for ECDSA (as the handset reads it, left-
    /// padded when shorter than the field), the message for EdDSA.
    pub fn verify(&self, input: &HandsetSign, sig: &[u8]) -> bool {
        use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
        if sig.len() != self.curve.signature_len() {
            return false;
        }
        let field = self.curve.field_len();
        let padded = || {
            let mut d = vec![0u8; field.saturating_sub(input.data.len())];
            d.extend_from_slice(&input.data);
            d
        };
        // The same steps on either NIST curve, with that curve's types.
        macro_rules! verify_ecdsa {
            ($curve:ident) => {{
                let (Ok(k), Ok(s)) = (
                    $curve::ecdsa::VerifyingKey::from_sec1_bytes(&self.point),
                    $curve::ecdsa::Signature::from_slice(sig),
                ) else {
                    return false;
                };
                k.verify_prehash(&padded(), &s).is_ok()
            }};
        }
        match (self.curve, input.mechanism) {
            (Curve::P256, SignMechanism::Ecdsa) => verify_ecdsa!(p256),
            (Curve::P384, SignMechanism::Ecdsa) => verify_ecdsa!(p384),
            (Curve::Ed25519, SignMechanism::Eddsa) => {
                let Some(k) = <[u8; 32]>::try_from(self.point.as_slice())
                    .ok()
                    .and_then(|b| ed25519_dalek::VerifyingKey::from_bytes(&b).ok())
                else {
                    return false;
                };
                let Ok(s) = ed25519_dalek::Signature::from_slice(sig) else {
                    return false;
                };
                k.verify_strict(&input.data, &s).is_ok()
            }
            _ => false,
        }
    }
}

impl PublicKey {
    /// The length of its signatures: an RSA modulus's, an EC key's
    /// `r || s`. What [`SignInput`] is given as the key length.
    pub fn signature_len(&self) -> usize {
        match self {
            PublicKey::Rsa(k) => k.size(),
            PublicKey::Ec(k) => k.curve.signature_len(),
        }
    }

    /// `CKK_RSA`, `CKK_EC` or `CKK_EC_EDWARDS`.
    pub fn key_type(&self) -> u32 {
        match self {
            PublicKey::Rsa(_) => ckk::RSA,
            PublicKey::Ec(k) => k.curve.key_type(),
        }
    }

    /// The RSA key, for the operations only RSA has (encryption).
    pub fn rsa(&self) -> Result<&RsaPublicKey, CkRv> {
        match self {
            PublicKey::Rsa(k) => Ok(k),
            PublicKey::Ec(_) => Err(CkRv::KEY_TYPE_INCONSISTENT),
        }
    }

    /// `CKR_KEY_TYPE_INCONSISTENT` unless `signing` is one of this key's
    /// mechanisms.
    pub fn check_signing(&self, signing: &Signing) -> Result<(), CkRv> {
        if signing.key_type() != self.key_type() {
            return Err(CkRv::KEY_TYPE_INCONSISTENT);
        }
        Ok(())
    }

    /// DER SubjectPublicKeyInfo (RFC 5480 for ECDSA keys, RFC 8410 for
    /// Ed25519).
    pub fn spki_der(&self) -> Result<Vec<u8>, CkRv> {
        match self {
            PublicKey::Rsa(k) => spki_der(k),
            PublicKey::Ec(k) => Ok(ec_spki_der(k)),
        }
    }
}

impl PublicKey {
    /// The key as one line of an OpenSSH `authorized_keys` file (RFC 4253
    /// `ssh-rsa`, RFC 5656 `ecdsa-sha2-nistp256`/`nistp384`, RFC 8709
    /// `ssh-ed25519`), with `comment` after it if not empty.
    pub fn openssh(&self, comment: &str) -> String {
        use base64::Engine as _;
        fn string(out: &mut Vec<u8>, b: &[u8]) {
            out.extend((b.len() as u32).to_be_bytes());
            out.extend(b);
        }
        fn mpint(out: &mut Vec<u8>, b: &[u8]) {
            let b = &b[b.iter().position(|x| *x != 0).unwrap_or(b.len())..];
            if b.first().is_some_and(|x| x & 0x80 != 0) {
                string(out, &[&[0], b].concat());
            } else {
                string(out, b);
            }
        }
        let mut blob = Vec::new();
        let name = match self {
            PublicKey::Rsa(k) => {
                string(&mut blob, b"ssh-rsa");
                mpint(&mut blob, &k.e().to_bytes_be());
                mpint(&mut blob, &k.n().to_bytes_be());
                "ssh-rsa"
            }
            PublicKey::Ec(k) => {
                let (name, ident): (&str, &[u8]) = match k.curve {
                    Curve::P256 => ("ecdsa-sha2-nistp256", b"nistp256"),
                    Curve::P384 => ("ecdsa-sha2-nistp384", b"nistp384"),
                    Curve::Ed25519 => ("ssh-ed25519", b""),
                };
                string(&mut blob, name.as_bytes());
                if !ident.is_empty() {
                    string(&mut blob, ident);
                }
                string(&mut blob, &k.point);
                name
            }
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
        if comment.is_empty() {
            format!("{name} {b64}")
        } else {
            format!("{name} {b64} {comment}")
        }
    }

    /// The SPKI as PEM (`-----BEGIN PUBLIC KEY-----`).
    pub fn pem(&self) -> Result<String, CkRv> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.spki_der()?);
        let mut out = String::from("-----BEGIN PUBLIC KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).map_err(|_| CkRv::GENERAL_ERROR)?);
            out.push('\n');
        }
        out.push_str("-----END PUBLIC KEY-----\n");
        Ok(out)
    }
}

/// PKCS#8 DER of the EC private key whose PKCS#11 `CKA_VALUE` is `value`:
/// for P-256 and P-384 the scalar d, big-endian (a shorter one is its
/// value, left-padded), in [1, n-1]; for Ed25519 the 32-byte private key
/// of RFC 8032 (the seed). Anything else is `ATTRIBUTE_VALUE_INVALID`.
/// Written as the curve crates write it, with the public key.
pub fn ec_private_key_pkcs8(curve: Curve, value: &[u8]) -> Result<Zeroizing<Vec<u8>>, CkRv> {
    use p256::pkcs8::EncodePrivateKey as _;
    let n = curve.field_len();
    if value.is_empty() || value.len() > n {
        return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
    }
    if curve == Curve::Ed25519 && value.len() != n {
        return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
    }
    let mut padded = Zeroizing::new(vec![0u8; n]);
    padded[n - value.len()..].copy_from_slice(value);
    let invalid = |_| CkRv::ATTRIBUTE_VALUE_INVALID;
    let doc = match curve {
        Curve::P256 => p256::SecretKey::from_slice(&padded)
            .map_err(invalid)?
            .to_pkcs8_der(),
        Curve::P384 => p384::SecretKey::from_slice(&padded)
            .map_err(invalid)?
            .to_pkcs8_der(),
        Curve::Ed25519 => {
            let seed = Zeroizing::new(
                <[u8; 32]>::try_from(padded.as_slice())
                    .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?,
            );
            ed25519_dalek::SigningKey::from_bytes(&seed).to_pkcs8_der()
        }
    }
    .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    Ok(doc.to_bytes())
}

/// The curve of an EC private key in PKCS#8 DER (`id-ecPublicKey` with a
/// named curve, or RFC 8410's Ed25519): `Ok(None)` for a key of another
/// algorithm (RSA), `KEY_TYPE_INCONSISTENT` for an EC key on a curve the
/// phone does not hold (P-521, ...), `ATTRIBUTE_VALUE_INVALID` for DER that
/// is no PKCS#8. Only the algorithm is read; the phone checks the key.
pub fn pkcs8_curve(der: &[u8]) -> Result<Option<Curve>, CkRv> {
    use rsa::pkcs8::der::{Decode, Encode};
    const EC_PUBLIC_KEY: rsa::pkcs8::ObjectIdentifier =
        rsa::pkcs8::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    const ED25519: rsa::pkcs8::ObjectIdentifier =
        rsa::pkcs8::ObjectIdentifier::new_unwrap("1.3.101.112");
    let info =
        rsa::pkcs8::PrivateKeyInfo::from_der(der).map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    if info.algorithm.oid == ED25519 {
        return Ok(Some(Curve::Ed25519));
    }
    if info.algorithm.oid != EC_PUBLIC_KEY {
        return Ok(None);
    }
    let params = info
        .algorithm
        .parameters
        .ok_or(CkRv::ATTRIBUTE_VALUE_INVALID)?
        .to_der()
        .map_err(|_| CkRv::ATTRIBUTE_VALUE_INVALID)?;
    Curve::from_ec_params(&params)
        .filter(|c| *c != Curve::Ed25519)
        .map(Some)
        .ok_or(CkRv::KEY_TYPE_INCONSISTENT)
}

/// An ECDSA signature as PKCS#11 gives it (`r || s`, each half of it) in
/// DER (`Ecdsa-Sig-Value`, RFC 5480), as X.509 and openssl carry it. Every
/// length here is below 128, so each DER length is one byte.
pub fn ecdsa_rs_to_der(rs: &[u8]) -> Result<Vec<u8>, CkRv> {
    if !matches!(rs.len(), 64 | 96) {
        return Err(CkRv::SIGNATURE_LEN_RANGE);
    }
    let mut body = Vec::new();
    for half in rs.chunks(rs.len() / 2) {
        let v = &half[half.iter().position(|b| *b != 0).unwrap_or(half.len() - 1)..];
        let pad = v[0] & 0x80 != 0;
        body.push(0x02);
        body.push((v.len() + usize::from(pad)) as u8);
        if pad {
            body.push(0);
        }
        body.extend_from_slice(v);
    }
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    Ok(out)
}

/// A DER ECDSA signature back to `r || s` for a key of `curve`;
/// `CKR_SIGNATURE_INVALID` for anything that is not one (or not in DER's
/// one form).
pub fn ecdsa_der_to_rs(der: &[u8], curve: Curve) -> Result<Vec<u8>, CkRv> {
    let bad = CkRv::SIGNATURE_INVALID;
    if curve == Curve::Ed25519 {
        return Err(CkRv::KEY_TYPE_INCONSISTENT);
    }
    let field = curve.field_len();
    let body = match der {
        [0x30, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest,
        _ => return Err(bad),
    };
    let mut out = Vec::with_capacity(2 * field);
    let mut rest = body;
    for _ in 0..2 {
        let (v, tail) = match rest {
            [0x02, len, tail @ ..] if usize::from(*len) <= tail.len() && *len > 0 => {
                tail.split_at(usize::from(*len))
            }
            _ => return Err(bad),
        };
        // Positive, and minimal: a leading zero only before a high bit.
        if v[0] & 0x80 != 0 || (v.len() > 1 && v[0] == 0 && v[1] & 0x80 == 0) {
            return Err(bad);
        }
        let v = if v[0] == 0 && v.len() > 1 { &v[1..] } else { v };
        if v.len() > field {
            return Err(bad);
        }
        out.extend(std::iter::repeat_n(0, field - v.len()));
        out.extend_from_slice(v);
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad);
    }
    Ok(out)
}

/// SubjectPublicKeyInfo of an EC key, assembled by hand: every part has a
/// fixed short length, so the DER is a few constant bytes around the point.
fn ec_spki_der(k: &EcPublicKey) -> Vec<u8> {
    // AlgorithmIdentifier: id-ecPublicKey with the curve's OID, or
    // id-Ed25519 alone.
    const EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    let mut alg = match k.curve {
        Curve::Ed25519 => k.curve.ec_params().to_vec(),
        _ => [EC_PUBLIC_KEY, k.curve.ec_params()].concat(),
    };
    alg.splice(0..0, [0x30, alg.len() as u8]);
    let mut bits = vec![0x03, (k.point.len() + 1) as u8, 0x00];
    bits.extend_from_slice(&k.point);
    let body = [alg, bits].concat();
    let mut out = vec![0x30];
    if body.len() < 128 {
        out.push(body.len() as u8);
    } else {
        out.extend([0x81, body.len() as u8]);
    }
    out.extend(body);
    out
}

/// A public key of any type from the handset's attributes of a public key:
/// RSA's modulus and exponent, or `CKA_EC_PARAMS` and `CKA_EC_POINT`.
pub fn any_public_key_from_attributes<'a>(
    attrs: impl IntoIterator<Item = (&'a u32, &'a Vec<u8>)>,
) -> Result<PublicKey, CkRv> {
    let attrs: Vec<_> = attrs.into_iter().collect();
    let find = |t: u32| attrs.iter().find(|(a, _)| **a == t).map(|(_, v)| *v);
    if let (Some(params), Some(point)) = (find(cka::EC_PARAMS), find(cka::EC_POINT)) {
        let curve = Curve::from_ec_params(params).ok_or(CkRv::CURVE_NOT_SUPPORTED)?;
        let point = curve
            .point_from_der(point)
            .ok_or(CkRv::KEY_TYPE_INCONSISTENT)?;
        return EcPublicKey::new(curve, point)
            .map(PublicKey::Ec)
            .map_err(|_| CkRv::KEY_TYPE_INCONSISTENT);
    }
    public_key_from_attributes(attrs).map(PublicKey::Rsa)
}

/// Checks a signature with a public key of any type.
pub fn verify_any(
    key: &PublicKey,
    signing: &Signing,
    data: &[u8],
    sig: &[u8],
) -> Result<bool, CkRv> {
    key.check_signing(signing)?;
    let input = SignInput::once(*signing, key.signature_len(), data)?;
    Ok(verify_prepared_any(key, &input, sig))
}

/// Checks a signature over input already prepared as for the handset.
pub fn verify_prepared_any(key: &PublicKey, input: &HandsetSign, sig: &[u8]) -> bool {
    match key {
        PublicKey::Rsa(k) => verify_prepared(k, input, sig),
        PublicKey::Ec(k) => k.verify(input, sig),
    }
}

/// The key-derivation functions `CKM_ECDH1_DERIVE` names (`CKD_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EcdhKdf {
    /// `CKD_NULL`: the key is Z itself (or its leading bytes).
    Null,
    /// `CKD_SHA*_KDF`: ANSI X9.63's KDF with that hash.
    Sha(HashAlg),
}

impl EcdhKdf {
    /// From its `CKD_*` value.
    pub fn from_ckd(v: u64) -> Option<EcdhKdf> {
        Some(match v {
            0x1 => EcdhKdf::Null,
            0x2 => EcdhKdf::Sha(HashAlg::Sha1),
            0x5 => EcdhKdf::Sha(HashAlg::Sha224),
            0x6 => EcdhKdf::Sha(HashAlg::Sha256),
            0x7 => EcdhKdf::Sha(HashAlg::Sha384),
            0x8 => EcdhKdf::Sha(HashAlg::Sha512),
            _ => return None,
        })
    }
}

/// The derived key's `len` bytes from the shared secret Z, as PKCS#11
/// 2.40 section 2.3.18 says: `CKD_NULL` takes Z's leading bytes (as
/// OpenSC and SoftHSM2 do; the whole of Z when no length is asked for),
/// `CKD_SHA*_KDF` is ANSI X9.63 (`Hash(Z || counter || shared data)`,
/// counter from 1, 32-bit big-endian).
pub fn ecdh_kdf(
    kdf: EcdhKdf,
    z: &[u8],
    shared: &[u8],
    len: usize,
) -> Result<zeroize::Zeroizing<Vec<u8>>, CkRv> {
    match kdf {
        EcdhKdf::Null => {
            if !shared.is_empty() {
                return Err(CkRv::MECHANISM_PARAM_INVALID);
            }
            if len > z.len() {
                return Err(CkRv::KEY_SIZE_RANGE);
            }
            let len = if len == 0 { z.len() } else { len };
            Ok(zeroize::Zeroizing::new(z[..len].to_vec()))
        }
        EcdhKdf::Sha(h) => {
            if len == 0 || len > 255 * h.output_len() {
                return Err(CkRv::KEY_SIZE_RANGE);
            }
            let mut out = zeroize::Zeroizing::new(Vec::with_capacity(len));
            let mut counter = 1u32;
            while out.len() < len {
                let parts = [z, &counter.to_be_bytes()[..], shared];
                let block = match h {
                    HashAlg::Sha1 => hash_parts::<Sha1>(&parts),
                    HashAlg::Sha224 => hash_parts::<Sha224>(&parts),
                    HashAlg::Sha256 => hash_parts::<Sha256>(&parts),
                    HashAlg::Sha384 => hash_parts::<Sha384>(&parts),
                    HashAlg::Sha512 => hash_parts::<Sha512>(&parts),
                };
                let take = (len - out.len()).min(block.len());
                out.extend_from_slice(&block[..take]);
                counter += 1;
            }
            fn hash_parts<D: sha2::Digest>(parts: &[&[u8]]) -> zeroize::Zeroizing<Vec<u8>> {
                let mut d = D::new();
                for p in parts {
                    d.update(p);
                }
                zeroize::Zeroizing::new(d.finalize().to_vec())
            }
            Ok(out)
        }
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
        // EC mechanisms never verify with an RSA key.
        phonecsp_protocol::SignMechanism::Ecdsa | phonecsp_protocol::SignMechanism::Eddsa => false,
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

#[cfg(test)]
mod ec_tests {
    use super::*;

    #[test]
    fn ecdsa_signatures_convert_to_der_and_back() {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let sk = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
        for i in 0..20u8 {
            let sig: p256::ecdsa::Signature = sk.sign_prehash(&[i; 32]).unwrap();
            let rs = sig.to_bytes().to_vec();
            let der = ecdsa_rs_to_der(&rs).unwrap();
            assert_eq!(ecdsa_der_to_rs(&der, Curve::P256).unwrap(), rs);
        }
        // Small and high halves: minimal DER either way.
        let mut rs = vec![0u8; 64];
        rs[31] = 1;
        rs[32] = 0x80;
        let der = ecdsa_rs_to_der(&rs).unwrap();
        assert_eq!(&der[..5], &[0x30, 0x26, 0x02, 0x01, 0x01]);
        assert_eq!(ecdsa_der_to_rs(&der, Curve::P256).unwrap(), rs);
        assert_eq!(ecdsa_rs_to_der(&rs[..63]), Err(CkRv::SIGNATURE_LEN_RANGE));
        assert!(ecdsa_der_to_rs(&der[..der.len() - 1], Curve::P256).is_err());
        assert!(
            ecdsa_der_to_rs(
                &[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01],
                Curve::P256
            )
            .is_err()
        );
    }

    #[test]
    fn ec_public_keys_check_their_points_and_verify() {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let point = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
        let key = EcPublicKey::new(Curve::P256, &point).unwrap();
        let mut off = point.clone();
        off[64] ^= 1;
        assert_eq!(EcPublicKey::new(Curve::P256, &off), Err(CkRv::DATA_INVALID));
        assert_eq!(
            EcPublicKey::new(Curve::P384, &point),
            Err(CkRv::DATA_INVALID)
        );
        let attrs: Vec<(u32, Vec<u8>)> = vec![
            (cka::EC_PARAMS, Curve::P256.ec_params().to_vec()),
            (cka::EC_POINT, Curve::ec_point_der(&point)),
        ];
        let public = any_public_key_from_attributes(attrs.iter().map(|(t, v)| (t, v))).unwrap();
        assert_eq!(public, PublicKey::Ec(key));
        // A signature made here verifies through the shared input step.
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let digest = <Sha256 as sha2::Digest>::digest(b"m").to_vec();
        let sig: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(&sk)
            .sign_prehash(&digest)
            .unwrap();
        let signing = Signing::Ecdsa(HashAlg::Sha256);
        assert!(verify_any(&public, &signing, b"m", &sig.to_bytes()).unwrap());
        assert!(!verify_any(&public, &signing, b"n", &sig.to_bytes()).unwrap());
        assert_eq!(
            verify_any(&public, &Signing::Pkcs1(HashAlg::Sha256), b"m", &[0; 64]),
            Err(CkRv::KEY_TYPE_INCONSISTENT)
        );
        // What openssl and ssh-keygen make of the same point.
        let spki = public.spki_der().unwrap();
        assert_eq!(spki.len(), 91);
        assert_eq!(&spki[..4], &[0x30, 0x59, 0x30, 0x13]);
        assert!(
            public
                .openssh("c")
                .starts_with("ecdsa-sha2-nistp256 AAAAE2VjZHNh")
        );
    }

    #[test]
    fn the_x963_kdf_and_ckd_null() {
        let z = [7u8; 32];
        assert_eq!(&ecdh_kdf(EcdhKdf::Null, &z, &[], 0).unwrap()[..], &z[..]);
        assert_eq!(ecdh_kdf(EcdhKdf::Null, &z, &[], 16).unwrap().len(), 16);
        assert_eq!(
            ecdh_kdf(EcdhKdf::Null, &z, &[], 33),
            Err(CkRv::KEY_SIZE_RANGE)
        );
        assert_eq!(
            ecdh_kdf(EcdhKdf::Null, &z, b"x", 0),
            Err(CkRv::MECHANISM_PARAM_INVALID)
        );
        let k = ecdh_kdf(EcdhKdf::Sha(HashAlg::Sha256), &z, b"info", 40).unwrap();
        let block =
            |c: u32| <Sha256 as sha2::Digest>::digest([&z[..], &c.to_be_bytes(), b"info"].concat());
        assert_eq!(&k[..32], &block(1)[..]);
        assert_eq!(&k[32..], &block(2)[..8]);
    }
}
