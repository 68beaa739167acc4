//! An in-memory handset for the unit tests: one token holding one real RSA
//! key pair (so signatures verify and ciphertexts decrypt), a PIN, and
//! switches to make any call fail with a chosen `CK_RV` or the token go
//! away. It records the calls it answers, so tests can check what reached
//! the handset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use phonecsp::input::HandsetSign;
use phonecsp::mechanism::Encryption;
use phonecsp::{ObjectInfo, Result, TokenDetails, TokenEntry};
use phonecsp_protocol::ck::cko;
use phonecsp_protocol::message::token_flags;
use phonecsp_protocol::{CkRv, SignMechanism};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Encrypt, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use zeroize::Zeroizing;

use super::{Backend, DataObject, KeyKind, Secret, TokenName};

pub const HANDSET: &str = "phone";
pub const TOKEN: &str = "ssh";
pub const PIN: &[u8] = b"1234";
pub const PUK: &[u8] = b"12345678";
pub const KEY_ID: &[u8] = &[0x01];
pub const CERT_ID: &[u8] = &[0x02];

/// The daemon's attribute map is keyed by `u32`.
const CKA_LABEL: u32 = cryptoki_sys::CKA_LABEL as u32;
const CKA_LOCAL: u32 = cryptoki_sys::CKA_LOCAL as u32;
const CKA_ID: u32 = cryptoki_sys::CKA_ID as u32;
const CKA_MODULUS: u32 = cryptoki_sys::CKA_MODULUS as u32;
const CKA_MODULUS_BITS: u32 = cryptoki_sys::CKA_MODULUS_BITS as u32;
const CKA_PUBLIC_EXPONENT: u32 = cryptoki_sys::CKA_PUBLIC_EXPONENT as u32;
const CKA_VALUE: u32 = cryptoki_sys::CKA_VALUE as u32;
const CKA_APPLICATION: u32 = cryptoki_sys::CKA_APPLICATION as u32;
const CKA_OBJECT_ID: u32 = cryptoki_sys::CKA_OBJECT_ID as u32;

/// The one key every fake token holds; made once, as RSA generation is slow.
pub fn private_key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).expect("an RSA key for the tests")
    })
}

pub fn public_key() -> RsaPublicKey {
    private_key().to_public_key()
}

/// A data object on the fake: id, label, application, object id, value.
pub type FakeData = (Vec<u8>, String, String, Vec<u8>, Vec<u8>);

#[derive(Default)]
pub struct State {
    pub present: bool,
    pub logged_in: bool,
    /// The PIN is typed on the phone: `C_Login` comes with no PIN.
    pub protected_path: bool,
    /// The PIN set with the PUK (`C_InitPIN`), which replaces [`PIN`].
    pub new_pin: Option<Vec<u8>>,
    /// Wrong PINs so far (five lock), and wrong PUKs (ten lock).
    pub wrong_pins: u32,
    pub wrong_puks: u32,
    /// Key pair ids, and certificates by id, with their labels.
    pub keys: Vec<(Vec<u8>, String)>,
    pub certs: Vec<(Vec<u8>, String, Vec<u8>)>,
    /// Data objects.
    pub data: Vec<FakeData>,
    /// Ids of the key pairs imported (`CKA_LOCAL` false).
    pub imported: Vec<Vec<u8>>,
    /// Calls that fail, by name, until cleared.
    pub failing: HashMap<&'static str, CkRv>,
    /// Every call that reached the fake, in order.
    pub calls: Vec<&'static str>,
}

/// A handle on the fake; clones share one state.
#[derive(Clone)]
pub struct Fake(Arc<Mutex<State>>);

impl Fake {
    /// A present token with the key pair and no certificate.
    pub fn new() -> Fake {
        Fake(Arc::new(Mutex::new(State {
            present: true,
            keys: vec![(KEY_ID.to_vec(), "ssh key".into())],
            ..State::default()
        })))
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `call` fail with `rv` from now on.
    pub fn fail(&self, call: &'static str, rv: CkRv) {
        self.state().failing.insert(call, rv);
    }

    /// How often `call` reached the fake.
    pub fn count(&self, call: &str) -> usize {
        self.state().calls.iter().filter(|c| **c == call).count()
    }

    /// Records the call and answers the failure it is set to have, or
    /// `DEVICE_REMOVED` once the token is gone.
    fn enter(&self, call: &'static str) -> Result<MutexGuard<'_, State>> {
        let mut s = self.state();
        s.calls.push(call);
        if let Some(rv) = s.failing.get(call) {
            return Err((*rv).into());
        }
        if !s.present && call != "list_tokens" {
            return Err(CkRv::DEVICE_REMOVED.into());
        }
        Ok(s)
    }

    fn logged_in(&self, call: &'static str) -> Result<MutexGuard<'_, State>> {
        let s = self.enter(call)?;
        if !s.logged_in {
            return Err(CkRv::USER_NOT_LOGGED_IN.into());
        }
        Ok(s)
    }
}

fn number(v: usize) -> Vec<u8> {
    (v as u64).to_be_bytes().to_vec()
}

fn key_has(s: &State, id: &[u8]) -> Result<()> {
    if s.keys.iter().any(|(k, _)| k == id) {
        Ok(())
    } else {
        Err(CkRv::KEY_HANDLE_INVALID.into())
    }
}

/// A try of a PIN or PUK against its count of wrong tries: refused
/// unlooked-at once `limit` are counted; a right one resets the count, a
/// wrong one adds to it, and the last wrong one locks.
fn counted_try(wrong: &mut u32, limit: u32, right: bool) -> Result<()> {
    if *wrong >= limit {
        return Err(CkRv::PIN_LOCKED.into());
    }
    if right {
        *wrong = 0;
        return Ok(());
    }
    *wrong += 1;
    Err(if *wrong >= limit {
        CkRv::PIN_LOCKED
    } else {
        CkRv::PIN_INCORRECT
    }
    .into())
}

fn failed(_: rsa::Error) -> phonecsp::Error {
    CkRv::FUNCTION_FAILED.into()
}

impl Backend for Fake {
    fn list_tokens(&self) -> Result<Vec<TokenEntry>> {
        let s = self.enter("list_tokens")?;
        // Away, the token is listed as the daemon remembers it.
        let away = if s.present { 0 } else { token_flags::AWAY };
        Ok(vec![TokenEntry {
            handset: HANDSET.into(),
            token: TOKEN.into(),
            flags: token_flags::LOGIN_REQUIRED | away,
        }])
    }

    fn token_info(&self, t: &TokenName) -> Result<TokenDetails> {
        let s = self.enter("token_info")?;
        let mut flags = token_flags::LOGIN_REQUIRED | token_flags::PUK_SET;
        if s.protected_path {
            flags |= token_flags::PROTECTED_PATH;
        }
        for (wrong, max, [low, last, locked]) in [
            (
                s.wrong_pins,
                5,
                [
                    token_flags::PIN_COUNT_LOW,
                    token_flags::PIN_FINAL_TRY,
                    token_flags::PIN_LOCKED,
                ],
            ),
            (
                s.wrong_puks,
                10,
                [
                    token_flags::SO_PIN_COUNT_LOW,
                    token_flags::SO_PIN_FINAL_TRY,
                    token_flags::SO_PIN_LOCKED,
                ],
            ),
        ] {
            if wrong > 0 {
                flags |= low;
            }
            if wrong + 1 == max {
                flags |= last;
            }
            if wrong >= max {
                flags |= locked;
            }
        }
        Ok(TokenDetails {
            handset: t.handset.clone(),
            token: t.token.clone(),
            serial: "0001".into(),
            flags,
            retries_left: 5u32.saturating_sub(s.wrong_pins),
            min_pin: 4,
            max_pin: 64,
            logged_in: s.logged_in,
            puk_retries_left: 10u32.saturating_sub(s.wrong_puks),
        })
    }

    fn login(&self, _: &TokenName, pin: &[u8]) -> Result<()> {
        let mut s = self.enter("login")?;
        let right = s.new_pin.as_deref().unwrap_or(PIN);
        let right = pin == right || s.protected_path && pin.is_empty();
        counted_try(&mut s.wrong_pins, 5, right)?;
        s.logged_in = true;
        Ok(())
    }

    fn logout(&self, _: &TokenName) -> Result<()> {
        let mut s = self.logged_in("logout")?;
        s.logged_in = false;
        Ok(())
    }

    fn change_pin(&self, _: &TokenName, old: &[u8], _new: &[u8]) -> Result<()> {
        let mut s = self.enter("change_pin")?;
        if old != PIN {
            return Err(CkRv::PIN_INCORRECT.into());
        }
        s.logged_in = false;
        Ok(())
    }

    fn check_puk(&self, _: &TokenName, puk: &[u8]) -> Result<()> {
        let mut s = self.enter("check_puk")?;
        counted_try(&mut s.wrong_puks, 10, puk == PUK)?;
        Ok(())
    }

    fn unblock(&self, t: &TokenName, puk: &[u8], new_pin: &[u8]) -> Result<()> {
        self.check_puk(t, puk)?;
        let mut s = self.enter("unblock")?;
        s.new_pin = Some(new_pin.to_vec());
        s.wrong_pins = 0;
        s.logged_in = false;
        Ok(())
    }

    fn change_puk(&self, t: &TokenName, old: &[u8], _new: &[u8]) -> Result<()> {
        self.check_puk(t, old)?;
        self.enter("change_puk").map(|_| ())
    }

    fn list_objects(&self, _: &TokenName) -> Result<Vec<ObjectInfo>> {
        let s = self.enter("list_objects")?;
        let keys = s.keys.iter().flat_map(|(id, label)| {
            [cko::PUBLIC_KEY, cko::PRIVATE_KEY].map(|class| ObjectInfo {
                class,
                id: id.clone(),
                label: label.clone(),
            })
        });
        let certs = s.certs.iter().map(|(id, label, _)| ObjectInfo {
            class: cko::CERTIFICATE,
            id: id.clone(),
            label: label.clone(),
        });
        let data = s.data.iter().map(|(id, label, ..)| ObjectInfo {
            class: cko::DATA,
            id: id.clone(),
            label: label.clone(),
        });
        Ok(keys.chain(certs).chain(data).collect())
    }

    fn attributes(&self, _: &TokenName, class: u32, id: &[u8]) -> Result<HashMap<u32, Vec<u8>>> {
        let s = self.enter("attributes")?;
        let mut a = HashMap::new();
        a.insert(CKA_ID, id.to_vec());
        if class == cko::DATA {
            let (_, label, app, oid, value) = s
                .data
                .iter()
                .find(|(d, ..)| d == id)
                .ok_or(phonecsp::Error::from(CkRv::OBJECT_HANDLE_INVALID))?;
            a.insert(CKA_LABEL, label.as_bytes().to_vec());
            a.insert(CKA_APPLICATION, app.as_bytes().to_vec());
            a.insert(CKA_OBJECT_ID, oid.clone());
            a.insert(CKA_VALUE, value.clone());
            return Ok(a);
        }
        if class == cko::CERTIFICATE {
            let (_, label, der) = s
                .certs
                .iter()
                .find(|(c, ..)| c == id)
                .ok_or(phonecsp::Error::from(CkRv::OBJECT_HANDLE_INVALID))?;
            a.insert(CKA_LABEL, label.as_bytes().to_vec());
            a.insert(CKA_VALUE, der.clone());
            return Ok(a);
        }
        let (_, label) = s
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .ok_or(phonecsp::Error::from(CkRv::OBJECT_HANDLE_INVALID))?;
        let key = public_key();
        a.insert(CKA_LABEL, label.as_bytes().to_vec());
        a.insert(CKA_MODULUS, key.n().to_bytes_be());
        a.insert(CKA_PUBLIC_EXPONENT, key.e().to_bytes_be());
        a.insert(CKA_MODULUS_BITS, number(key.size() * 8));
        a.insert(
            CKA_LOCAL,
            vec![u8::from(!s.imported.iter().any(|i| i == id))],
        );
        Ok(a)
    }

    fn sign(&self, _: &TokenName, key_id: &[u8], input: &HandsetSign) -> Result<Vec<u8>> {
        let s = self.logged_in("sign")?;
        key_has(&s, key_id)?;
        match input.mechanism {
            SignMechanism::Pkcs1 => private_key()
                .sign(Pkcs1v15Sign::new_unprefixed(), &input.data)
                .map_err(failed),
            SignMechanism::Pss { .. } | SignMechanism::Ecdsa | SignMechanism::Eddsa => {
                Err(CkRv::MECHANISM_INVALID.into())
            }
        }
    }

    fn decrypt(&self, _: &TokenName, key_id: &[u8], enc: &Encryption, ct: &[u8]) -> Result<Secret> {
        let s = self.logged_in("decrypt")?;
        key_has(&s, key_id)?;
        match enc {
            Encryption::Pkcs1 => private_key()
                .decrypt(Pkcs1v15Encrypt, ct)
                .map(Zeroizing::new)
                .map_err(|_| CkRv::ENCRYPTED_DATA_INVALID.into()),
            Encryption::Oaep { .. } => Err(CkRv::MECHANISM_INVALID.into()),
        }
    }

    /// Every generated pair is the one RSA key under a new id; the fake
    /// handset holds RSA keys only, as an old handset does.
    fn generate(&self, _: &TokenName, kind: KeyKind, id: &[u8], label: &str) -> Result<Vec<u8>> {
        let mut s = self.logged_in("generate_key_pair")?;
        if let KeyKind::Ec(_) = kind {
            return Err(CkRv::FUNCTION_NOT_SUPPORTED.into());
        }
        let id = if id.is_empty() {
            vec![0x10 + s.keys.len() as u8]
        } else {
            id.to_vec()
        };
        s.keys.push((id.clone(), label.into()));
        Ok(id)
    }

    fn derive(&self, _: &TokenName, _: &[u8], _: &[u8]) -> Result<Secret> {
        drop(self.logged_in("derive")?);
        Err(CkRv::KEY_TYPE_INCONSISTENT.into())
    }

    /// The key must be the fake's one key (whose signatures the tests
    /// check), under a new id.
    fn import_key(&self, t: &TokenName, id: &[u8], label: &str, pkcs8: &[u8]) -> Result<Vec<u8>> {
        use rsa::pkcs8::DecodePrivateKey;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8)
            .map_err(|_| phonecsp::Error::from(CkRv::ATTRIBUTE_VALUE_INVALID))?;
        if key.n() != public_key().n() {
            return Err(CkRv::KEY_TYPE_INCONSISTENT.into());
        }
        let id = self.generate(t, KeyKind::Rsa { bits: 2048 }, id, label)?;
        self.state().imported.push(id.clone());
        Ok(id)
    }

    fn random(&self, _: &str, len: u32) -> Result<Vec<u8>> {
        drop(self.enter("random")?);
        Ok(vec![0x5A; len as usize])
    }

    fn put_certificate(&self, _: &TokenName, id: &[u8], label: &str, der: &[u8]) -> Result<()> {
        let mut s = self.enter("put_certificate")?;
        s.certs.retain(|(c, ..)| c != id);
        s.certs.push((id.to_vec(), label.into(), der.to_vec()));
        Ok(())
    }

    fn put_data(&self, _: &TokenName, d: &DataObject) -> Result<()> {
        let mut s = self.logged_in("put_data")?;
        s.data.retain(|(i, ..)| i != d.id);
        s.data.push((
            d.id.to_vec(),
            d.label.into(),
            d.application.into(),
            d.oid.to_vec(),
            d.value.to_vec(),
        ));
        Ok(())
    }

    fn delete_object(&self, _: &TokenName, class: u32, id: &[u8]) -> Result<()> {
        let mut s = self.enter("delete_object")?;
        if class == cko::DATA {
            s.data.retain(|(d, ..)| d != id);
        } else if class == cko::CERTIFICATE {
            s.certs.retain(|(c, ..)| c != id);
        } else {
            s.keys.retain(|(k, _)| k != id);
        }
        Ok(())
    }
}
