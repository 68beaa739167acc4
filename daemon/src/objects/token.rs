//! `org.phonecsp.Token1`: one container on a handset, its PIN's and PUK's
//! state as properties, logging in and out, and unblocking with the PUK. A token stays published while its
//! handset is away, as last seen, with `Present` false.

use super::{handset_path, key_path};
use crate::service::{Call, Inner, NewKey};
use phonecsp::{Error, TokenDetails};
use phonecsp_protocol::message::token_flags as tf;
use std::sync::{Arc, Mutex};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, interface};
use zeroize::Zeroizing;

/// A token's state as the handset last reported it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenSnapshot {
    pub name: String,
    pub serial: String,
    pub flags: u32,
    pub retries_left: u32,
    pub min_pin: u32,
    pub max_pin: u32,
    pub puk_retries_left: u32,
    pub present: bool,
}

impl TokenSnapshot {
    pub fn from_details(d: &TokenDetails, present: bool) -> TokenSnapshot {
        TokenSnapshot {
            name: d.token.clone(),
            serial: d.serial.clone(),
            flags: d.flags,
            retries_left: d.retries_left,
            min_pin: d.min_pin,
            max_pin: d.max_pin,
            puk_retries_left: d.puk_retries_left,
            present,
        }
    }

    /// A token of a handset that is away, known by name only.
    pub fn away(name: &str) -> TokenSnapshot {
        TokenSnapshot {
            name: name.to_owned(),
            ..TokenSnapshot::default()
        }
    }
}

/// The flags `PinFlags` shows: the PIN's and the container's own, not the
/// per-caller login nor the daemon's "away" (which `Present` says).
const PIN_FLAGS: u32 = tf::LOGIN_REQUIRED
    | tf::PIN_LOCKED
    | tf::PIN_COUNT_LOW
    | tf::PIN_FINAL_TRY
    | tf::CONFIRM
    | tf::PROTECTED_PATH
    | tf::PUK_SET
    | tf::SO_PIN_LOCKED
    | tf::SO_PIN_COUNT_LOW
    | tf::SO_PIN_FINAL_TRY;

pub struct TokenObject {
    inner: Arc<Inner>,
    handset: String,
    /// The container's name, which the object's path says: it never
    /// changes for one object.
    name: String,
    now: Mutex<TokenSnapshot>,
}

impl TokenObject {
    pub fn new(inner: Arc<Inner>, handset: &str, now: TokenSnapshot) -> TokenObject {
        TokenObject {
            inner,
            handset: handset.to_owned(),
            name: now.name.clone(),
            now: Mutex::new(now),
        }
    }

    fn now(&self) -> TokenSnapshot {
        crate::lock(&self.now).clone()
    }

    fn token(&self) -> String {
        self.name.clone()
    }

    /// The caller's call on this token (see [`Inner::begin`]).
    async fn begin(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Call<'_>, Error> {
        self.inner.begin(hdr, conn, &self.handset, &self.name).await
    }

    /// Takes the handset's latest word, saying what changed.
    pub async fn update(&self, now: TokenSnapshot, e: &SignalEmitter<'_>) -> zbus::Result<()> {
        let was = crate::replace(&self.now, now.clone());
        if was.serial != now.serial {
            self.serial_changed(e).await?;
        }
        if was.present != now.present {
            self.present_changed(e).await?;
        }
        if was.flags != now.flags {
            self.pin_flags_changed(e).await?;
        }
        if was.retries_left != now.retries_left {
            self.retries_left_changed(e).await?;
        }
        if was.puk_retries_left != now.puk_retries_left {
            self.puk_retries_left_changed(e).await?;
        }
        if (was.min_pin, was.max_pin) != (now.min_pin, now.max_pin) {
            self.min_pin_length_changed(e).await?;
            self.max_pin_length_changed(e).await?;
        }
        Ok(())
    }

    /// After a PIN was tried, its count changed: look again.
    fn pin_tried(&self, result: &Result<(), Error>) {
        if result.is_err() {
            self.inner.resync(&self.handset);
        }
    }
}

#[interface(name = "org.phonecsp.Token1")]
impl TokenObject {
    /// Logs the calling connection in. An empty PIN asks the phone's owner
    /// to type it on the phone, where the token takes it there.
    async fn login(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        pin: Vec<u8>,
    ) -> Result<(), Error> {
        let pin = Zeroizing::new(pin);
        let call = self.begin(&hdr, conn).await?;
        let r = call.login(&pin).await;
        self.pin_tried(&r);
        r
    }

    /// Ends the calling connection's login.
    async fn logout(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        let call = self.begin(&hdr, conn).await?;
        call.logout().await
    }

    /// Changes the PIN; every connection's login to the token ends.
    async fn change_pin(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        old_pin: Vec<u8>,
        new_pin: Vec<u8>,
    ) -> Result<(), Error> {
        let (old_pin, new_pin) = (Zeroizing::new(old_pin), Zeroizing::new(new_pin));
        let call = self.begin(&hdr, conn).await?;
        let r = call.change_pin(&old_pin, &new_pin).await;
        self.pin_tried(&r);
        r
    }

    /// Sets a new PIN with the PUK, also when wrong PINs locked the token:
    /// the PIN gets every try again, and every login made with the old PIN
    /// ends. A wrong PUK spends one of its own tries (RetriesLeft of the
    /// PUK: PukRetriesLeft); a locked PUK is final.
    async fn unblock(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        puk: Vec<u8>,
        new_pin: Vec<u8>,
    ) -> Result<(), Error> {
        let (puk, new_pin) = (Zeroizing::new(puk), Zeroizing::new(new_pin));
        let call = self.begin(&hdr, conn).await?;
        // Both counters may have changed, whatever the answer: the call
        // has the object tree look again.
        call.unblock(&puk, &new_pin).await
    }

    /// Changes the PUK; the old one is the proof.
    async fn change_puk(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        old_puk: Vec<u8>,
        new_puk: Vec<u8>,
    ) -> Result<(), Error> {
        let (old_puk, new_puk) = (Zeroizing::new(old_puk), Zeroizing::new(new_puk));
        let call = self.begin(&hdr, conn).await?;
        call.change_puk(&old_puk, &new_puk).await
    }

    /// Generates a key pair on the phone; the caller must be logged in.
    /// `kind` is "rsa"; options: `bits` (u: 2048, 3072 or 4096; default
    /// 2048), `label` (s), `id` (ay; default: the phone chooses). Returns
    /// the new key's object.
    #[zbus(out_args("key"))]
    async fn generate_key(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        kind: String,
        options: phonecsp::named::Options,
    ) -> Result<OwnedObjectPath, Error> {
        let call = self.begin(&hdr, conn).await?;
        let request = phonecsp::named::key_request(&kind, &options)?;
        let key = call
            .new_key_pair(
                NewKey::Generate { bits: request.bits },
                &request.id,
                &request.label,
            )
            .await?;
        Ok(key_path(&self.handset, &self.name, &key.id))
    }

    /// The handset the token is on.
    #[zbus(property(emits_changed_signal = "const"))]
    fn handset(&self) -> OwnedObjectPath {
        handset_path(&self.handset)
    }

    /// The container's name on the phone.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.token()
    }

    /// The token's label, as PKCS#11 programs show it (its name).
    #[zbus(property(emits_changed_signal = "const"))]
    fn label(&self) -> String {
        self.token()
    }

    /// The container's serial number.
    #[zbus(property)]
    fn serial(&self) -> String {
        self.now().serial
    }

    /// Whether the handset is here; a token of a handset that is away is
    /// shown as last seen.
    #[zbus(property)]
    fn present(&self) -> bool {
        self.now().present
    }

    /// Whether the connection reading this is logged in. Each caller has
    /// its own answer, so no signal carries it.
    #[zbus(property(emits_changed_signal = "false"))]
    async fn logged_in(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &Connection,
    ) -> bool {
        let Some(hdr) = hdr else { return false };
        match self.begin(&hdr, conn).await {
            Ok(call) => call.logged_in(),
            Err(_) => false,
        }
    }

    /// The PIN's state, from this set: "login-required", "pin-locked",
    /// "pin-count-low" (a wrong PIN since the last right one),
    /// "pin-final-try", "confirm-on-phone" (the owner approves each use on
    /// the phone), "pin-on-phone" (the PIN is typed on the phone); and the
    /// PUK's: "puk-set" (it has one, which can unblock it), "puk-locked"
    /// (for good), "puk-count-low", "puk-final-try".
    #[zbus(property)]
    fn pin_flags(&self) -> Vec<String> {
        tf::names(self.now().flags & PIN_FLAGS)
            .into_iter()
            .map(str::to_owned)
            .collect()
    }

    /// Wrong PINs left before the container locks.
    #[zbus(property)]
    fn retries_left(&self) -> u32 {
        self.now().retries_left
    }

    /// Wrong PUKs left before the PUK locks for good; 0 without a PUK.
    #[zbus(property)]
    fn puk_retries_left(&self) -> u32 {
        self.now().puk_retries_left
    }

    /// The shortest PIN the container takes, in bytes.
    #[zbus(property)]
    fn min_pin_length(&self) -> u32 {
        self.now().min_pin
    }

    /// The longest PIN the container takes, in bytes.
    #[zbus(property)]
    fn max_pin_length(&self) -> u32 {
        self.now().max_pin
    }
}
