//! The disk unlock's unit tests, across its modules.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Sha256;

use phonecsp::local::{EcPublicKey, PublicKey};
use phonecsp_protocol::{CkRv, Curve};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};

// The tests use the crate as its callers do, through its flat re-exports.
use crate::*;

#[test]
fn secrets_are_fresh_printable_and_long() {
    let a = new_secret();
    let b = new_secret();
    assert_eq!(a.len(), 64);
    assert_ne!(*a, *b);
    assert!(a.iter().all(|c| c.is_ascii_graphic()));
    assert_eq!(BASE64.decode(&a[..]).unwrap().len(), SECRET_RANDOM_BYTES);
}

#[test]
fn wrapped_keys_roundtrip_and_unwrap_with_the_private_key() {
    let sk = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pk = sk.to_public_key();
    let secret = new_secret();
    let ct = wrap(&PublicKey::Rsa(pk.clone()), &secret).unwrap();
    let t = Target {
        handset: "phone".into(),
        container: "disk".into(),
        key_id: vec![2],
    };
    let w = WrappedKey::new(Some(&t), 1, &PublicKey::Rsa(pk.clone()), &ct).unwrap();
    let json = w.to_json();
    assert!(json.contains("\"type\": \"phonecsp\""), "{json}");
    assert!(json.contains("\"keyslots\": [\n    \"1\"\n  ]"), "{json}");
    let back = WrappedKey::parse(&json).unwrap();
    assert_eq!(back, w);
    assert_eq!(back.target(), Some(t));
    assert_eq!(back.keyslot_numbers(), vec![1]);
    assert_eq!(
        sk.decrypt(Oaep::new::<Sha256>(), &back.wrapped().unwrap())
            .unwrap(),
        secret.to_vec()
    );
    // Recovery keys name no handset.
    let r = WrappedKey::new(None, 1, &PublicKey::Rsa(pk.clone()), &ct).unwrap();
    assert_eq!(WrappedKey::parse(&r.to_json()).unwrap().target(), None);
    assert!(r.describe().starts_with("a recovery public key"));
}

#[test]
fn malformed_tokens_are_refused() {
    let ok = r#"{"type":"phonecsp","keyslots":["1"],"handset":"p","container":"c","key_id":"01","algorithm":"RSA-OAEP-SHA256","public_key_sha256":"00","wrapped_key":"AAAA"}"#;
    assert!(WrappedKey::parse(ok).is_ok());
    for bad in [
        ok.replace("\"phonecsp\"", "\"systemd-pkcs11\""),
        ok.replace("RSA-OAEP-SHA256", "RSA-PKCS"),
        ok.replace("\"AAAA\"", "\"!!\""),
        ok.replace("\"01\"", "\"0x\""),
        ok.replace("\"1\"", "\"one\""),
        ok.replace(",\"container\":\"c\"", ""),
        ok.replace("}", ",\"extra\":1}"),
        "{".into(),
        "[]".into(),
    ] {
        assert!(WrappedKey::parse(&bad).is_err(), "{bad}");
    }
}

#[test]
fn tokens_are_found_in_metadata() {
    let ok = serde_json::json!({"type":"phonecsp","keyslots":["1"],"handset":"p","container":"c","key_id":"01","algorithm":"RSA-OAEP-SHA256","public_key_sha256":"00","wrapped_key":"AAAA"});
    let meta = serde_json::json!({"tokens": {
        "3": ok,
        "0": {"type": "systemd-tpm2", "keyslots": ["2"]},
        "1": {"type": "phonecsp", "keyslots": ["1"]},
    }});
    let t = phonecsp_tokens(&meta);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].0, 1);
    assert!(t[0].1.is_err());
    assert_eq!(t[1].0, 3);
    assert!(t[1].1.is_ok());
}

#[test]
fn public_keys_parse_from_pem_and_der() {
    use rsa::pkcs1::EncodeRsaPublicKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    let sk = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pk = sk.to_public_key();
    let pem = pk.to_public_key_pem(LineEnding::LF).unwrap();
    assert_eq!(parse_public_key(pem.as_bytes()).unwrap(), pk);
    let der = pk.to_public_key_der().unwrap();
    assert_eq!(parse_public_key(der.as_bytes()).unwrap(), pk);
    let pkcs1 = pk.to_pkcs1_pem(LineEnding::LF).unwrap();
    assert_eq!(parse_public_key(pkcs1.as_bytes()).unwrap(), pk);
    assert!(parse_public_key(b"nonsense").is_err());
    assert_eq!(unhex("0a1B"), Some(vec![0x0a, 0x1b]));
    assert_eq!(unhex("0"), None);
    assert_eq!(unhex("zz"), None);
}

/// What the test handsets say of their container `name`: a fresh one
/// (every try left) with `flags`.
fn disk_token_info(name: String, flags: u32) -> phonecsp_protocol::Reply {
    phonecsp_protocol::Reply::TokenInfo(phonecsp_protocol::message::TokenInfo {
        name,
        flags,
        retries_left: 5,
        min_pin: 4,
        max_pin: 64,
        serial: "0".repeat(16),
        so_retries_left: 10,
    })
}

/// A handset for [`unwrap`]: a container "disk" that needs no login and
/// holds `key`, and a decryption that answers `decrypt`.
struct Scripted {
    key: rsa::RsaPublicKey,
    decrypt: phonecsp_protocol::CkRv,
    /// The container's flags (`token_flags`).
    flags: u32,
}

impl phonecsp::handset::HandsetLink for Scripted {
    async fn call(
        &mut self,
        request: phonecsp_protocol::Request,
    ) -> phonecsp::Result<phonecsp_protocol::Reply> {
        use phonecsp_protocol::ck::cka;
        use phonecsp_protocol::{Reply, Request};
        use rsa::traits::PublicKeyParts;
        match request {
            Request::TokenInfo { container } => Ok(disk_token_info(container, self.flags)),
            Request::GetAttributes { .. } => Ok(Reply::Attributes(vec![
                (cka::MODULUS, self.key.n().to_bytes_be()),
                (cka::PUBLIC_EXPONENT, self.key.e().to_bytes_be()),
            ])),
            Request::Decrypt { .. } => Err(phonecsp::Error::from(self.decrypt)),
            other => panic!("unexpected {}", other.name()),
        }
    }
}

struct NoPin;

impl PinSource for NoPin {
    async fn pin(&mut self, _: &PinPrompt) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        Err(LuksError::NoPin("not asked in this test".into()))
    }
}

/// Keeps what the unlock told the person.
#[derive(Default)]
struct Told(Vec<String>);

impl PinSource for Told {
    async fn pin(&mut self, _: &PinPrompt) -> Result<zeroize::Zeroizing<Vec<u8>>> {
        Err(LuksError::NoPin("not asked in this test".into()))
    }

    fn tell(&mut self, message: &str) {
        self.0.push(message.to_owned());
    }
}

/// On a container whose owner approves each use, the unlock says so
/// before it waits (the keyscript's stderr is the boot console).
#[test]
fn an_unlock_that_waits_for_the_owner_says_so() {
    let (pk, w) = wrapped_to_disk();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut handset = Scripted {
        key: pk,
        decrypt: phonecsp_protocol::CkRv::FUNCTION_REJECTED,
        flags: phonecsp_protocol::message::token_flags::CONFIRM,
    };
    let mut told = Told::default();
    let e = rt
        .block_on(unwrap(&mut handset, &w, &mut told))
        .unwrap_err();
    assert_eq!(
        told.0,
        ["confirm on your phone 'phone': unlock the disk with a key of 'disk'..."]
    );
    assert!(!matches!(e, LuksError::WrongKey { .. }), "{e}");
}

/// A secret wrapped to a fresh key of phone/disk (id 02), and that key.
fn wrapped_to_disk() -> (RsaPublicKey, WrappedKey) {
    let sk = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pk = sk.to_public_key();
    let t = Target {
        handset: "phone".into(),
        container: "disk".into(),
        key_id: vec![2],
    };
    let public = PublicKey::Rsa(pk.clone());
    let w = WrappedKey::new(Some(&t), 1, &public, &wrap(&public, &new_secret()).unwrap()).unwrap();
    (pk, w)
}

/// Unwrapping `w` with a handset whose key is `key` and whose decryption
/// answers `rv`: the error.
fn unwrap_failing(key: RsaPublicKey, rv: phonecsp_protocol::CkRv, w: &WrappedKey) -> LuksError {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut handset = Scripted {
        key,
        decrypt: rv,
        flags: 0,
    };
    rt.block_on(unwrap(&mut handset, w, &mut NoPin))
        .unwrap_err()
}

/// The handset refuses to decrypt with the key the secret was wrapped to:
/// the wrapped secret is damaged, and the error says so, not that the key
/// differs (which it does not). Another key is still "not the key".
#[test]
fn a_damaged_secret_is_told_apart_from_a_wrong_key() {
    let (pk, w) = wrapped_to_disk();
    let invalid = phonecsp_protocol::CkRv::ENCRYPTED_DATA_INVALID;
    let e = unwrap_failing(pk, invalid, &w);
    assert!(matches!(e, LuksError::Undecryptable { .. }), "{e}");
    assert!(e.to_string().contains("damaged"), "{e}");
    let other = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let e = unwrap_failing(other.to_public_key(), invalid, &w);
    assert!(matches!(e, LuksError::WrongKey { .. }), "{e}");
}

/// The handset answers CKR_DEVICE_ERROR for the key the secret was
/// wrapped to, after the login: its copy of the key is damaged (issue 18).
/// The error says so and names the key; it is neither "the key differs,
/// re-enrol" nor "the wrapped secret is damaged", and the keyscript goes
/// on to the disk's next token.
#[test]
fn a_key_damaged_on_the_handset_is_told_apart() {
    let (pk, w) = wrapped_to_disk();
    let e = unwrap_failing(pk, phonecsp_protocol::CkRv::DEVICE_ERROR, &w);
    assert!(matches!(e, LuksError::HandsetKeyDamaged { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("phone/disk key 02 could not be used on the handset (CKR_DEVICE_ERROR"),
        "{msg}"
    );
    assert!(msg.contains("copy of that key is damaged"), "{msg}");
    assert!(!msg.contains("differs"), "{msg}");
    assert!(crate::keyscript::try_next(&e));
}

/// A handset with one EC key in "disk" (id 02) that does its half of
/// ECDH as the real one does, and counts the requests for it.
struct EcHandset {
    key: EcSecret,
    derived: usize,
}

enum EcSecret {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
}

impl EcHandset {
    fn new(curve: Curve) -> EcHandset {
        let mut rng = rand::rngs::OsRng;
        let key = match curve {
            Curve::P256 => EcSecret::P256(p256::SecretKey::random(&mut rng)),
            Curve::P384 => EcSecret::P384(p384::SecretKey::random(&mut rng)),
            Curve::Ed25519 => unreachable!("no ECDH"),
        };
        EcHandset { key, derived: 0 }
    }

    fn public(&self) -> EcPublicKey {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        match &self.key {
            EcSecret::P256(k) => EcPublicKey::new(
                Curve::P256,
                k.public_key().to_encoded_point(false).as_bytes(),
            ),
            EcSecret::P384(k) => EcPublicKey::new(
                Curve::P384,
                k.public_key().to_encoded_point(false).as_bytes(),
            ),
        }
        .unwrap()
    }

    /// Z for `peer`, or CKR_DATA_INVALID for a point not on the curve, as
    /// the handset answers.
    fn z(&self, peer: &[u8]) -> std::result::Result<Vec<u8>, CkRv> {
        match &self.key {
            EcSecret::P256(k) => {
                let p = p256::PublicKey::from_sec1_bytes(peer).map_err(|_| CkRv::DATA_INVALID)?;
                let z = p256::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine());
                Ok(z.raw_secret_bytes().to_vec())
            }
            EcSecret::P384(k) => {
                let p = p384::PublicKey::from_sec1_bytes(peer).map_err(|_| CkRv::DATA_INVALID)?;
                let z = p384::ecdh::diffie_hellman(k.to_nonzero_scalar(), p.as_affine());
                Ok(z.raw_secret_bytes().to_vec())
            }
        }
    }
}

impl phonecsp::handset::HandsetLink for EcHandset {
    async fn call(
        &mut self,
        request: phonecsp_protocol::Request,
    ) -> phonecsp::Result<phonecsp_protocol::Reply> {
        use phonecsp_protocol::ck::cka;
        use phonecsp_protocol::{Reply, Request};
        match request {
            Request::TokenInfo { container } => Ok(disk_token_info(container, 0)),
            Request::GetAttributes { .. } => {
                let k = self.public();
                let mut point = vec![0x04, k.point.len() as u8];
                point.extend_from_slice(&k.point);
                Ok(Reply::Attributes(vec![
                    (cka::EC_PARAMS, k.curve.ec_params().to_vec()),
                    (cka::EC_POINT, point),
                ]))
            }
            Request::Derive { peer, .. } => {
                self.derived += 1;
                self.z(&peer)
                    .map(|z| Reply::Derived(zeroize::Zeroizing::new(z)))
                    .map_err(phonecsp::Error::from)
            }
            other => panic!("unexpected {}", other.name()),
        }
    }
}

fn disk_target() -> Target {
    Target {
        handset: "phone".into(),
        container: "disk".into(),
        key_id: vec![2],
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

/// A secret wrapped to a P-256 or P-384 key comes back through the
/// handset's ECDH, the token surviving its JSON; the handset sees only the
/// ephemeral point, and the wrapping differs each time.
#[test]
fn a_secret_wrapped_to_an_ec_key_unwraps_through_the_handsets_ecdh() {
    for curve in [Curve::P256, Curve::P384] {
        let mut handset = EcHandset::new(curve);
        let public = PublicKey::Ec(handset.public());
        let secret = new_secret();
        let wrapping = wrap(&public, &secret).unwrap();
        assert_eq!(wrapping.algorithm, EC_ALGORITHM);
        assert_eq!(
            wrapping.ephemeral.as_ref().unwrap().len(),
            curve.point_len()
        );
        // Nonce (12), the 64-byte secret, the tag (16).
        assert_eq!(wrapping.wrapped.len(), 12 + 64 + 16);
        assert_ne!(wrap(&public, &secret).unwrap(), wrapping);
        let w = WrappedKey::new(Some(&disk_target()), 1, &public, &wrapping).unwrap();
        let json = w.to_json();
        assert!(
            json.contains("\"algorithm\": \"ECDH-ES-HKDF-SHA256-A256GCM\""),
            "{json}"
        );
        let w = WrappedKey::parse(&json).unwrap();
        let got = block_on(unwrap(&mut handset, &w, &mut NoPin)).unwrap();
        assert_eq!(*got, *secret, "{curve:?}");
        assert_eq!(handset.derived, 1);
    }
}

/// A damaged EC wrapping (its ciphertext, or its ephemeral point changed
/// for another valid point or for bytes off the curve) is reported as a
/// damaged secret, never as another key or a wrong PIN; another handset
/// key is "not the key" before the handset is asked anything.
#[test]
fn a_damaged_ec_wrapping_is_told_apart_from_a_wrong_key() {
    let mut handset = EcHandset::new(Curve::P256);
    let public = PublicKey::Ec(handset.public());
    let w = WrappedKey::new(
        Some(&disk_target()),
        1,
        &public,
        &wrap(&public, &new_secret()).unwrap(),
    )
    .unwrap();
    let mut flipped = w.wrapped().unwrap();
    flipped[20] ^= 1;
    let mut ct = w.clone();
    ct.wrapped_key = BASE64.encode(&flipped);
    let other_point = EcHandset::new(Curve::P256).public().point;
    let mut eph = w.clone();
    eph.ephemeral_public_key = Some(BASE64.encode(&other_point));
    let mut off = other_point.clone();
    off[40] ^= 1;
    let mut off_curve = w.clone();
    off_curve.ephemeral_public_key = Some(BASE64.encode(&off));
    for bad in [ct, eph, off_curve] {
        let e = block_on(unwrap(&mut handset, &bad, &mut NoPin)).unwrap_err();
        assert!(matches!(e, LuksError::Undecryptable { .. }), "{e}");
    }
    let mut another = EcHandset::new(Curve::P256);
    let e = block_on(unwrap(&mut another, &w, &mut NoPin)).unwrap_err();
    assert!(matches!(e, LuksError::WrongKey { .. }), "{e}");
    assert_eq!(another.derived, 0);
}

#[test]
fn an_ed25519_key_cannot_take_a_disk_secret() {
    let k = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let public =
        PublicKey::Ec(EcPublicKey::new(Curve::Ed25519, k.verifying_key().as_bytes()).unwrap());
    let e = wrap(&public, &new_secret()).unwrap_err();
    assert!(e.to_string().contains("Ed25519 key only signs"), "{e}");
}

#[test]
fn ec_tokens_need_their_ephemeral_key_and_rsa_ones_refuse_it() {
    let rsa = r#"{"type":"phonecsp","keyslots":["1"],"handset":"p","container":"c","key_id":"01","algorithm":"RSA-OAEP-SHA256","public_key_sha256":"00","wrapped_key":"AAAA"}"#;
    let ec = rsa.replace("RSA-OAEP-SHA256", EC_ALGORITHM).replace(
        "\"wrapped_key\":\"AAAA\"",
        "\"wrapped_key\":\"AAAA\",\"ephemeral_public_key\":\"BAAA\"",
    );
    assert!(WrappedKey::parse(&ec).is_ok());
    for bad in [
        rsa.replace("RSA-OAEP-SHA256", EC_ALGORITHM),
        ec.replace(EC_ALGORITHM, "RSA-OAEP-SHA256"),
        ec.replace("\"BAAA\"", "\"!!\""),
    ] {
        assert!(WrappedKey::parse(&bad).is_err(), "{bad}");
    }
}
