//! Unwrapping: whoever holds the key ([`KeyHolder`]: the daemon over
//! D-Bus or a link to the handset) checks it is the key the disk was
//! enrolled with, logs in with a PIN from a [`PinSource`], and decrypts
//! (RSA) or does its half of ECDH (EC), after which the secret is opened
//! here.

use std::future::Future;

use phonecsp::local::PublicKey;
use phonecsp_protocol::message::token_flags;
use phonecsp_protocol::{CkRv, ObjectClass};
use zeroize::Zeroizing;

use crate::error::{LuksError, Result};
use crate::secret::{disk_oaep, ec_unwrap, public_key_sha256};
use crate::token::{Target, WrappedKey};
use phonecsp::handset::{Handset, HandsetLink};
use phonecsp::mechanism::ckm;
use phonecsp_protocol::ck::cko;

/// What a container says about itself before a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerStatus {
    /// `phonecsp_protocol::message::token_flags`.
    pub flags: u32,
    pub retries_left: u32,
    /// This session (or D-Bus connection) is already logged in.
    pub logged_in: bool,
}

/// What the PIN is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinPrompt {
    pub handset: String,
    pub container: String,
    pub retries_left: u32,
    /// Set when one more wrong PIN locks the container.
    pub final_try: bool,
}

/// A handset's containers as the unlock needs them, reached over D-Bus,
/// over a direct link, or through the daemon's own link. Errors carry the
/// CK_RV the handset or daemon answered.
pub trait KeyHolder {
    fn status(
        &mut self,
        container: &str,
    ) -> impl Future<Output = phonecsp::Result<ContainerStatus>> + Send;
    /// The public half of the key `key` names.
    fn public_key(
        &mut self,
        key: &Target,
    ) -> impl Future<Output = phonecsp::Result<PublicKey>> + Send;
    fn login(
        &mut self,
        container: &str,
        pin: &[u8],
    ) -> impl Future<Output = phonecsp::Result<()>> + Send;
    /// The private `step` of the key `key` names.
    fn private_step(
        &mut self,
        key: &Target,
        step: KeyStep<'_>,
    ) -> impl Future<Output = phonecsp::Result<Secret>> + Send;
}

/// What a private step gives back: the disk secret (RSA) or the ECDH
/// shared secret it is opened with.
pub type Secret = Zeroizing<Vec<u8>>;

/// The private key's part in opening a disk secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStep<'a> {
    /// RSA-OAEP-SHA256 decryption of this ciphertext.
    Decrypt(&'a [u8]),
    /// ECDH's private half (`CKM_ECDH1_DERIVE`): the shared secret Z for
    /// this peer, an uncompressed point.
    Derive(&'a [u8]),
}

impl KeyStep<'_> {
    /// Whether `rv` is the handset refusing the step's input (rather
    /// than the key, the login or the link failing).
    fn input_refused(&self, rv: CkRv) -> bool {
        match self {
            KeyStep::Decrypt(_) => matches!(
                rv,
                CkRv::ENCRYPTED_DATA_INVALID | CkRv::ENCRYPTED_DATA_LEN_RANGE
            ),
            KeyStep::Derive(_) => matches!(rv, CkRv::DATA_INVALID | CkRv::DATA_LEN_RANGE),
        }
    }
}

/// Where a PIN comes from.
pub trait PinSource {
    fn pin(
        &mut self,
        prompt: &PinPrompt,
    ) -> impl Future<Output = Result<Zeroizing<Vec<u8>>>> + Send;

    /// Tells the person something while the unlock waits for them (on the
    /// keyscript's stderr, which the boot console shows).
    fn tell(&mut self, message: &str) {
        eprintln!("phonecsp: {message}");
    }
}

pub(crate) fn holder_error(e: phonecsp::Error, t: &Target) -> LuksError {
    match e.rv() {
        CkRv::TOKEN_NOT_PRESENT => LuksError::ContainerAbsent {
            handset: t.handset.clone(),
            container: t.container.clone(),
        },
        CkRv::DEVICE_REMOVED => LuksError::HandsetAway {
            handset: t.handset.clone(),
            reason: e.to_string(),
        },
        CkRv::PIN_LOCKED => LuksError::PinLocked {
            handset: t.handset.clone(),
            container: t.container.clone(),
        },
        CkRv::OBJECT_HANDLE_INVALID | CkRv::KEY_HANDLE_INVALID => LuksError::NoKey {
            handset: t.handset.clone(),
            container: t.container.clone(),
            key_id: t.key_id_hex(),
        },
        _ => LuksError::Client(e),
    }
}

/// A failure of the private-key operation itself, once logged in to the
/// container and with the key checked to be the one the secret was
/// wrapped to: the handset's device error there is its report of a
/// damaged key (its store names the key in its log), told apart from a
/// different key and from a damaged disk token.
pub(crate) fn key_use_error(e: phonecsp::Error, t: &Target) -> LuksError {
    match e {
        phonecsp::Error::Token {
            rv: CkRv::DEVICE_ERROR,
            ..
        } => LuksError::HandsetKeyDamaged {
            handset: t.handset.clone(),
            container: t.container.clone(),
            key_id: t.key_id_hex(),
            detail: e.to_string(),
        },
        e => holder_error(e, t),
    }
}

/// Unwraps the disk secret with the handset: checks that the holder's key
/// is the one the secret was wrapped to (so a wrong container costs no PIN
/// try), logs in if the container needs it, and decrypts.
pub async fn unwrap<H: KeyHolder, P: PinSource>(
    holder: &mut H,
    wrapped: &WrappedKey,
    pins: &mut P,
) -> Result<Zeroizing<Vec<u8>>> {
    let t = wrapped.target().ok_or_else(|| {
        LuksError::Usage(format!(
            "the key is wrapped to {}, not to a handset: open it with the recovery private key",
            wrapped.describe()
        ))
    })?;
    let ciphertext = wrapped.wrapped()?;
    let status = holder
        .status(&t.container)
        .await
        .map_err(|e| holder_error(e, &t))?;
    let public = holder
        .public_key(&t)
        .await
        .map_err(|e| holder_error(e, &t))?;
    if public_key_sha256(&public)? != wrapped.public_key_sha256.to_ascii_lowercase() {
        return Err(LuksError::WrongKey {
            handset: t.handset.clone(),
            container: t.container.clone(),
            key_id: t.key_id_hex(),
        });
    }
    if status.flags & token_flags::PIN_LOCKED != 0 {
        return Err(LuksError::PinLocked {
            handset: t.handset.clone(),
            container: t.container.clone(),
        });
    }
    if status.flags & token_flags::LOGIN_REQUIRED != 0 && !status.logged_in {
        let pin = if status.flags & token_flags::PROTECTED_PATH != 0 {
            pins.tell(&format!(
                "type the PIN of '{}' on your phone '{}'",
                t.container, t.handset
            ));
            Zeroizing::new(Vec::new())
        } else {
            pins.pin(&PinPrompt {
                handset: t.handset.clone(),
                container: t.container.clone(),
                retries_left: status.retries_left,
                final_try: status.flags & token_flags::PIN_FINAL_TRY != 0,
            })
            .await?
        };
        if let Err(e) = holder.login(&t.container, &pin).await {
            return Err(match e.rv() {
                CkRv::PIN_INCORRECT => {
                    let retries_left = holder
                        .status(&t.container)
                        .await
                        .map(|s| s.retries_left)
                        .unwrap_or(0);
                    LuksError::WrongPin {
                        handset: t.handset.clone(),
                        container: t.container.clone(),
                        retries_left,
                    }
                }
                _ => holder_error(e, &t),
            });
        }
    }
    if status.flags & token_flags::CONFIRM != 0 {
        pins.tell(&format!(
            "confirm on your phone '{}': unlock the disk with a key of '{}'...",
            t.handset, t.container
        ));
    }
    let undecryptable = || LuksError::Undecryptable {
        handset: t.handset.clone(),
        container: t.container.clone(),
        key_id: t.key_id_hex(),
    };
    let ephemeral = wrapped.ephemeral()?;
    let step = match (&public, &ephemeral) {
        (PublicKey::Ec(_), Some(point)) => KeyStep::Derive(point),
        (PublicKey::Rsa(_), None) => KeyStep::Decrypt(&ciphertext),
        // The key's hash matched the token's, so the token's algorithm
        // does not fit the key it names: it was damaged or made by hand.
        _ => {
            return Err(LuksError::Format(format!(
                "the token's algorithm {} does not fit {}",
                wrapped.algorithm,
                wrapped.describe()
            )));
        }
    };
    let out =
        holder
            .private_step(&t, step)
            .await
            .map_err(|e| match step.input_refused(e.rv()) {
                // The key was checked to be the one the secret was wrapped to
                // (above), so an input it refuses was damaged (enrolment made
                // a valid one).
                true => undecryptable(),
                false => key_use_error(e, &t),
            })?;
    match (&public, &ephemeral) {
        (PublicKey::Ec(k), Some(point)) => {
            ec_unwrap(&out, point, &k.point, &ciphertext).ok_or_else(undecryptable)
        }
        _ => Ok(out),
    }
}

/// [`KeyHolder`] on the handset itself, over any link that carries its
/// requests: the direct serial link of the keyscript, or the daemon's own
/// link for systemd-cryptsetup's key sockets.
impl<L: HandsetLink + Send> KeyHolder for L {
    async fn status(&mut self, container: &str) -> phonecsp::Result<ContainerStatus> {
        let i = Handset::token_info(self, container).await?;
        Ok(ContainerStatus {
            flags: i.flags,
            retries_left: i.retries_left,
            logged_in: i.flags & token_flags::LOGGED_IN != 0,
        })
    }

    async fn public_key(&mut self, key: &Target) -> phonecsp::Result<PublicKey> {
        let (container, id) = (&key.container, &key.key_id);
        let a = Handset::attributes(self, container, ObjectClass::PublicKey, id).await?;
        phonecsp::local::any_public_key_from_attributes(a.iter().map(|(t, v)| (t, v)))
            .map_err(|rv| phonecsp::Error::token(rv, "not a public key this version can use"))
    }

    async fn login(&mut self, container: &str, pin: &[u8]) -> phonecsp::Result<()> {
        Handset::login(self, container, pin).await
    }

    async fn private_step(&mut self, key: &Target, step: KeyStep<'_>) -> phonecsp::Result<Secret> {
        let (container, id) = (&key.container, &key.key_id);
        match step {
            KeyStep::Decrypt(wrapped) => {
                Handset::decrypt(self, container, id, disk_oaep().for_handset(), wrapped).await
            }
            KeyStep::Derive(peer) => Handset::derive(self, container, id, peer).await,
        }
    }
}

/// [`KeyHolder`] over D-Bus: the daemon, on a connection of its own (so
/// the login ends with it).
pub struct DaemonHolder {
    pub client: phonecsp::Client,
    pub handset: String,
}

impl KeyHolder for DaemonHolder {
    async fn status(&mut self, container: &str) -> phonecsp::Result<ContainerStatus> {
        let d = self.client.get_token_info(&self.handset, container).await?;
        Ok(ContainerStatus {
            flags: d.flags,
            retries_left: d.retries_left,
            logged_in: d.logged_in,
        })
    }

    async fn public_key(&mut self, key: &Target) -> phonecsp::Result<PublicKey> {
        let (container, id) = (&key.container, &key.key_id);
        let a = self
            .client
            .get_attributes(&self.handset, container, cko::PUBLIC_KEY, id)
            .await?;
        phonecsp::local::any_public_key_from_attributes(&a)
            .map_err(|rv| phonecsp::Error::token(rv, "not a public key this version can use"))
    }

    async fn login(&mut self, container: &str, pin: &[u8]) -> phonecsp::Result<()> {
        self.client.login(&self.handset, container, pin).await
    }

    async fn private_step(&mut self, key: &Target, step: KeyStep<'_>) -> phonecsp::Result<Secret> {
        let (client, handset) = (&self.client, &self.handset);
        let (container, id) = (&key.container, &key.key_id);
        match step {
            KeyStep::Decrypt(wrapped) => {
                let (mechanism, params) = disk_oaep().wire();
                client
                    .decrypt(handset, container, id, mechanism, &params, wrapped)
                    .await
            }
            KeyStep::Derive(peer) => {
                client
                    .derive(handset, container, id, ckm::ECDH1_DERIVE, peer)
                    .await
            }
        }
    }
}
