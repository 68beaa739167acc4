//! The seam between the module's PKCS#11 logic and whatever holds the keys:
//! [`Backend`] is every question `module.rs` asks about tokens, objects and
//! private-key operations. [`Dbus`] answers them through the daemon's
//! blocking client; the unit tests answer them with an in-memory fake
//! (`backend/fake.rs`), so that sessions, logins and operations are tested
//! without a bus.

use std::collections::HashMap;
use std::sync::Mutex;

use phonecsp::blocking::Client;
use phonecsp::input::HandsetSign;
use phonecsp::mechanism::Encryption;
use phonecsp::{Bus, ClientOptions, ObjectInfo, Result, TokenDetails, TokenEntry};
use phonecsp_protocol::{CkRv, Curve};
use zeroize::Zeroizing;

#[cfg(test)]
pub mod fake;

/// A plaintext, wiped when dropped.
pub type Secret = Zeroizing<Vec<u8>>;

/// What kind of key pair `C_GenerateKeyPair` asks the phone for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA with e = 65537 (the only exponent the handset generates with).
    Rsa {
        bits: u32,
    },
    Ec(Curve),
}

/// A token as the daemon names it: the handset and the container on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenName {
    pub handset: String,
    pub token: String,
}

/// A data object (`CKO_DATA`) to keep on the phone.
pub struct DataObject<'a> {
    /// The phone's name for it (not a PKCS#11 attribute of data objects).
    pub id: &'a [u8],
    pub label: &'a str,
    pub application: &'a str,
    /// `CKA_OBJECT_ID`, DER.
    pub oid: &'a [u8],
    pub value: &'a [u8],
}

/// What the module needs from the keys' side. Errors carry the `CK_RV`
/// they mean ([`phonecsp::Error::rv`]); the module maps them no further.
pub trait Backend: Send + Sync {
    fn list_tokens(&self) -> Result<Vec<TokenEntry>>;
    fn token_info(&self, t: &TokenName) -> Result<TokenDetails>;
    fn login(&self, t: &TokenName, pin: &[u8]) -> Result<()>;
    fn logout(&self, t: &TokenName) -> Result<()>;
    fn change_pin(&self, t: &TokenName, old: &[u8], new: &[u8]) -> Result<()>;
    /// Checks the PUK (the security officer's `C_Login`); a wrong one
    /// spends a try.
    fn check_puk(&self, t: &TokenName, puk: &[u8]) -> Result<()>;
    /// Sets a new PIN with the PUK (`C_InitPIN`), also on a locked token.
    fn unblock(&self, t: &TokenName, puk: &[u8], new_pin: &[u8]) -> Result<()>;
    fn change_puk(&self, t: &TokenName, old: &[u8], new: &[u8]) -> Result<()>;
    fn list_objects(&self, t: &TokenName) -> Result<Vec<ObjectInfo>>;
    /// Attributes by `CKA_*` type; numbers are 8-byte big-endian.
    fn attributes(&self, t: &TokenName, class: u32, id: &[u8]) -> Result<HashMap<u32, Vec<u8>>>;
    /// Signs an already prepared input (digest or DigestInfo).
    fn sign(&self, t: &TokenName, key_id: &[u8], input: &HandsetSign) -> Result<Vec<u8>>;
    fn decrypt(&self, t: &TokenName, key_id: &[u8], enc: &Encryption, ct: &[u8]) -> Result<Secret>;
    /// A new key pair, answered with the id it has on the phone (the
    /// module reads its public half as attributes, like any other key's).
    /// An empty `id` lets the handset choose one.
    fn generate(&self, t: &TokenName, kind: KeyKind, id: &[u8], label: &str) -> Result<Vec<u8>>;
    /// `CKM_ECDH1_DERIVE`'s private step: Z for the peer's point.
    fn derive(&self, t: &TokenName, key_id: &[u8], peer: &[u8]) -> Result<Secret>;
    /// Moves a private key made elsewhere (unencrypted PKCS#8 DER, RSA or
    /// EC) onto the handset; answered with the id it has there. An empty
    /// `id` lets the handset choose one.
    fn import_key(&self, t: &TokenName, id: &[u8], label: &str, pkcs8: &[u8]) -> Result<Vec<u8>>;
    /// At most `protocol::limits`' largest random request per call.
    fn random(&self, handset: &str, len: u32) -> Result<Vec<u8>>;
    fn put_certificate(&self, t: &TokenName, id: &[u8], label: &str, der: &[u8]) -> Result<()>;
    fn put_data(&self, t: &TokenName, d: &DataObject) -> Result<()>;
    /// `class`: a data object, a certificate, or a private key (which takes
    /// its pair along).
    fn delete_object(&self, t: &TokenName, class: u32, id: &[u8]) -> Result<()>;
}

/// The daemon over D-Bus, connected on first use: `PHONECSP_BUS` (default
/// the system bus) and the daemon user the client library expects.
#[derive(Default)]
pub struct Dbus {
    client: Mutex<Option<Client>>,
}

impl Dbus {
    fn client(&self) -> Result<Client> {
        let mut g = self.client.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let bus = Bus::from_env().map_err(|e| {
            phonecsp::Error::token(CkRv::GENERAL_ERROR, format!("PHONECSP_BUS: {e}"))
        })?;
        let c = Client::connect_with(&bus, ClientOptions::default())?;
        *g = Some(c.clone());
        Ok(c)
    }
}

impl Backend for Dbus {
    fn list_tokens(&self) -> Result<Vec<TokenEntry>> {
        self.client()?.list_tokens()
    }

    fn token_info(&self, t: &TokenName) -> Result<TokenDetails> {
        self.client()?.get_token_info(&t.handset, &t.token)
    }

    fn login(&self, t: &TokenName, pin: &[u8]) -> Result<()> {
        self.client()?.login(&t.handset, &t.token, pin)
    }

    fn logout(&self, t: &TokenName) -> Result<()> {
        self.client()?.logout(&t.handset, &t.token)
    }

    fn change_pin(&self, t: &TokenName, old: &[u8], new: &[u8]) -> Result<()> {
        self.client()?.change_pin(&t.handset, &t.token, old, new)
    }

    fn check_puk(&self, t: &TokenName, puk: &[u8]) -> Result<()> {
        self.client()?.check_puk(&t.handset, &t.token, puk)
    }

    fn unblock(&self, t: &TokenName, puk: &[u8], new_pin: &[u8]) -> Result<()> {
        self.client()?.unblock(&t.handset, &t.token, puk, new_pin)
    }

    fn change_puk(&self, t: &TokenName, old: &[u8], new: &[u8]) -> Result<()> {
        self.client()?.change_puk(&t.handset, &t.token, old, new)
    }

    fn list_objects(&self, t: &TokenName) -> Result<Vec<ObjectInfo>> {
        self.client()?.list_objects(&t.handset, &t.token)
    }

    fn attributes(&self, t: &TokenName, class: u32, id: &[u8]) -> Result<HashMap<u32, Vec<u8>>> {
        self.client()?
            .get_attributes(&t.handset, &t.token, class, id)
    }

    fn sign(&self, t: &TokenName, key_id: &[u8], input: &HandsetSign) -> Result<Vec<u8>> {
        let (m, params) = input.wire();
        self.client()?
            .sign(&t.handset, &t.token, key_id, m, &params, &input.data)
    }

    fn decrypt(&self, t: &TokenName, key_id: &[u8], enc: &Encryption, ct: &[u8]) -> Result<Secret> {
        let (m, params) = enc.wire();
        self.client()?
            .decrypt(&t.handset, &t.token, key_id, m, &params, ct)
    }

    fn generate(&self, t: &TokenName, kind: KeyKind, id: &[u8], label: &str) -> Result<Vec<u8>> {
        let (c, handset, token) = (self.client()?, &t.handset, &t.token);
        Ok(match kind {
            KeyKind::Rsa { bits } => c.generate_key_pair(handset, token, bits, id, label)?.id,
            KeyKind::Ec(curve) => {
                c.generate_ec_key_pair(handset, token, curve.number(), id, label)?
                    .id
            }
        })
    }

    /// An EC key goes by the daemon's ImportEcKey, whose answer is a point.
    fn import_key(&self, t: &TokenName, id: &[u8], label: &str, pkcs8: &[u8]) -> Result<Vec<u8>> {
        let client = self.client()?;
        Ok(match phonecsp::local::pkcs8_curve(pkcs8) {
            Ok(Some(_)) => {
                client
                    .import_ec_key(&t.handset, &t.token, id, label, pkcs8)?
                    .id
            }
            _ => {
                client
                    .import_key(&t.handset, &t.token, id, label, pkcs8)?
                    .id
            }
        })
    }

    fn random(&self, handset: &str, len: u32) -> Result<Vec<u8>> {
        self.client()?.generate_random(handset, len)
    }

    fn derive(&self, t: &TokenName, key_id: &[u8], peer: &[u8]) -> Result<Secret> {
        self.client()?.derive(
            &t.handset,
            &t.token,
            key_id,
            phonecsp_protocol::ck::ckm::ECDH1_DERIVE,
            peer,
        )
    }

    fn put_certificate(&self, t: &TokenName, id: &[u8], label: &str, der: &[u8]) -> Result<()> {
        self.client()?
            .import_certificate(&t.handset, &t.token, id, label, der)
    }

    fn put_data(&self, t: &TokenName, d: &DataObject) -> Result<()> {
        self.client()?.import_data(
            &t.handset,
            &t.token,
            d.id,
            d.label,
            d.application,
            d.oid,
            d.value,
        )
    }

    fn delete_object(&self, t: &TokenName, class: u32, id: &[u8]) -> Result<()> {
        self.client()?
            .delete_object(&t.handset, &t.token, class, id)
    }
}
