//! The disk unlock's unit tests, across its modules.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Sha256;

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
    let ct = wrap(&pk, &secret).unwrap();
    let t = Target {
        handset: "phone".into(),
        container: "disk".into(),
        key_id: vec![2],
    };
    let w = WrappedKey::new(Some(&t), 1, &pk, &ct).unwrap();
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
    let r = WrappedKey::new(None, 1, &pk, &ct).unwrap();
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
        use phonecsp_protocol::message::TokenInfo;
        use phonecsp_protocol::{Reply, Request};
        use rsa::traits::PublicKeyParts;
        match request {
            Request::TokenInfo { container } => Ok(Reply::TokenInfo(TokenInfo {
                name: container,
                flags: self.flags,
                retries_left: 5,
                min_pin: 4,
                max_pin: 64,
                serial: "0".repeat(16),
                so_retries_left: 10,
            })),
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
    let w = WrappedKey::new(Some(&t), 1, &pk, &wrap(&pk, &new_secret()).unwrap()).unwrap();
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
