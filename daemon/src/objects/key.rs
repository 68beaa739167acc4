//! `org.phonecsp.Key1`: one key pair on a token, its public half as
//! properties, and the operations with named mechanisms. Sign and Decrypt
//! need the caller logged in; if it is not, the caller's PIN agent is
//! asked ([`crate::agent`]).

use super::{key_path, token_path};
use crate::agent;
use crate::interface::interface_table;
use crate::service::{Call, Inner};
use phonecsp::Error;
use phonecsp::local::PublicKey;
use phonecsp::named::{self, Options};
use phonecsp::objects::KeyInfo;
use phonecsp_protocol::ObjectClass;
use rsa::traits::PublicKeyParts;
use std::sync::{Arc, Mutex};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath};
use zeroize::Zeroizing;

/// A key as the handset last listed it: what the object shows, in the
/// form the client library reads it back in.
pub type KeySnapshot = KeyInfo;

/// The key `id` of `handset`/`token`, with its public half and its
/// certificate (DER; empty if none).
pub fn snapshot(
    (handset, token): (&str, &str),
    id: &[u8],
    label: String,
    public: &PublicKey,
    certificate: Vec<u8>,
) -> KeySnapshot {
    let (kind, bits) = match public {
        PublicKey::Rsa(k) => ("rsa", (k.size() * 8) as u32),
        PublicKey::Ec(k) => (k.curve.name(), k.curve.bits()),
    };
    KeyInfo {
        path: key_path(handset, token, id),
        handset: handset.to_owned(),
        token_name: token.to_owned(),
        token: token_path(handset, token),
        id: id.to_vec(),
        label,
        kind: kind.to_owned(),
        bits,
        public_key: public.spki_der().unwrap_or_default(),
        certificate,
    }
}

pub struct KeyObject {
    inner: Arc<Inner>,
    handset: String,
    token: String,
    now: Mutex<KeySnapshot>,
}

impl KeyObject {
    pub fn new(inner: Arc<Inner>, handset: &str, token: &str, now: KeySnapshot) -> KeyObject {
        KeyObject {
            inner,
            handset: handset.to_owned(),
            token: token.to_owned(),
            now: Mutex::new(now),
        }
    }

    fn now(&self) -> KeySnapshot {
        crate::lock(&self.now).clone()
    }

    /// The caller's call on this key's token (see [`Inner::begin`]).
    async fn begin(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Call<'_>, Error> {
        self.inner
            .begin(hdr, conn, &self.handset, &self.token)
            .await
    }

    /// Asks the caller's PIN agent for a login `call` lacks, before the
    /// private key's `operation`.
    async fn log_in(
        &self,
        call: &Call<'_>,
        conn: &Connection,
        operation: &str,
    ) -> Result<(), Error> {
        agent::log_in_if_needed(&self.inner, call, conn, operation, &self.now().label).await
    }

    pub async fn update(&self, now: KeySnapshot, e: &SignalEmitter<'_>) -> zbus::Result<()> {
        let was = crate::replace(&self.now, now.clone());
        // Rare (a certificate stored, a label changed on the phone): both
        // are said when either changed.
        if (&was.label, &was.certificate) == (&now.label, &now.certificate) {
            return Ok(());
        }
        self.label_changed(e).await?;
        self.certificate_changed(e).await
    }
}

// Every method opens with the caller's call on the key's token; the
// properties but one read the key as last listed.
interface_table! {
    #[interface(name = "org.phonecsp.Key1")] impl KeyObject;
    methods (self, hdr, conn) {
        let call = self.begin(&hdr, conn).await?;
    } {
        /// Signs `data` with a named mechanism ("rsa-pkcs1-sha256",
        /// "rsa-pss-sha256", ...; see the interface description). Only a
        /// digest crosses the link.
        #[zbus(out_args("signature"))]
        fn sign(mechanism: String, options: Options, data: Vec<u8>) -> Vec<u8> {
            let signing = named::signing(&mechanism, &options)?;
            self.log_in(&call, conn, "sign").await?;
            call.sign(&self.now().id, signing, data).await
        }

        /// Whether `signature` is the key's signature of `data`; checked on
        /// the computer.
        #[zbus(out_args("valid"))]
        fn verify(mechanism: String, options: Options, data: Vec<u8>, signature: Vec<u8>)
            -> bool
        {
            let signing = named::signing(&mechanism, &options)?;
            call.verify(&self.now().id, signing, data, signature).await
        }

        /// Decrypts on the phone ("rsa-pkcs1", "rsa-oaep-sha256", ...).
        #[zbus(out_args("plaintext"))]
        fn decrypt(mechanism: String, options: Options, ciphertext: Vec<u8>) -> Vec<u8> {
            let enc = named::encryption(&mechanism, &options)?;
            self.log_in(&call, conn, "decrypt").await?;
            let plaintext = call.decrypt(&self.now().id, &enc, &ciphertext).await?;
            // zbus needs an owned Vec to send; it is the caller's plaintext.
            Ok(plaintext.to_vec())
        }

        /// Encrypts to the key on the computer.
        #[zbus(out_args("ciphertext"))]
        fn encrypt(mechanism: String, options: Options, plaintext: Vec<u8> as Zeroizing)
            -> Vec<u8>
        {
            let enc = named::encryption(&mechanism, &options)?;
            call.encrypt(&self.now().id, &enc, &plaintext).await
        }

        /// Deletes the key pair (and its certificate) from the phone; the
        /// caller must be logged in.
        fn delete() {
            call.delete(ObjectClass::PrivateKey, &self.now().id).await
        }
    }

    snapshot now {
        /// The token the key is on.
        #[zbus(property(emits_changed_signal = "const"))]
        token: OwnedObjectPath = token;

        /// The key's CKA_ID.
        #[zbus(property(emits_changed_signal = "const"))]
        id: Vec<u8> = id;

        /// The key's label.
        #[zbus(property)]
        label: String = label;

        /// "rsa", "p256", "p384" or "ed25519".
        #[zbus(property(emits_changed_signal = "const"), name = "Type")]
        key_type: String = kind;

        /// The key's size in bits: an RSA modulus's; 256, 384, or 255 for
        /// Ed25519.
        #[zbus(property(emits_changed_signal = "const"))]
        bits: u32 = bits;

        /// DER SubjectPublicKeyInfo.
        #[zbus(property(emits_changed_signal = "const"))]
        public_key: Vec<u8> = public_key;

        /// The DER X.509 certificate stored with the key's id; empty if none.
        #[zbus(property)]
        certificate: Vec<u8> = certificate;
    }

    others {
        /// What the key may do: an RSA key on the phone signs and decrypts
        /// there, its public half verifies and encrypts here; an EC key signs
        /// (and, P-256 and P-384, derives) there and verifies here.
        #[zbus(property(emits_changed_signal = "const"))]
        fn usages(&self) -> Vec<String> {
            let usages: &[&str] = match self.now().kind.as_str() {
                "rsa" => &["sign", "decrypt", "verify", "encrypt"],
                "ed25519" => &["sign", "verify"],
                _ => &["sign", "verify", "derive"],
            };
            usages.iter().map(|u| u.to_string()).collect()
        }
    }
}
