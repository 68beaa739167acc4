//! `org.phonecsp.Handset1`: one configured handset, whether it is paired
//! and connected, and pairing and unpairing it (the administration
//! actions, which [`Inner::admin`] authorises).

use crate::service::Inner;
use phonecsp::{Error, LinkStatistics};
use std::sync::Arc;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, interface};
use zeroize::Zeroizing;

pub struct HandsetObject {
    inner: Arc<Inner>,
    name: String,
}

impl HandsetObject {
    pub fn new(inner: Arc<Inner>, name: String) -> HandsetObject {
        HandsetObject { inner, name }
    }

    /// `value` if the caller of a property read administers the daemon,
    /// else empty; reads made for signals (no caller) get it empty.
    async fn for_admin(
        &self,
        hdr: Option<Header<'_>>,
        conn: &Connection,
        value: impl FnOnce(&Inner, &str) -> String,
    ) -> String {
        match hdr {
            Some(h) if self.inner.is_admin_caller(&h, conn).await => value(&self.inner, &self.name),
            _ => String::new(),
        }
    }
}

#[interface(name = "org.phonecsp.Handset1")]
impl HandsetObject {
    /// Pairs with the one-time code the phone shows and pins the phone's
    /// key; returns the key's fingerprint.
    #[zbus(out_args("fingerprint"))]
    async fn pair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        code: String,
    ) -> Result<String, Error> {
        let code = Zeroizing::new(code);
        let fingerprint = self.inner.pair(&hdr, conn, &self.name, &code).await?;
        self.inner.link_changed(&self.name);
        Ok(fingerprint)
    }

    /// Forgets the phone's pinned key.
    async fn unpair(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<(), Error> {
        self.inner.unpair(&hdr, conn, &self.name).await?;
        self.inner.link_changed(&self.name);
        Ok(())
    }

    /// The handset's name in the daemon's configuration.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }

    /// Where the phone is reached (`serial:/dev/ttyACM0@115200`,
    /// `bluetooth:AA:BB:..#3`); empty unless the caller administers the
    /// daemon.
    #[zbus(property(emits_changed_signal = "const"))]
    async fn transport(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &Connection,
    ) -> String {
        self.for_admin(hdr, conn, Inner::transport_of).await
    }

    /// The pinned key's fingerprint; empty before pairing, and unless the
    /// caller administers the daemon.
    #[zbus(property(emits_changed_signal = "invalidates"))]
    async fn fingerprint(
        &self,
        #[zbus(header)] hdr: Option<Header<'_>>,
        #[zbus(connection)] conn: &Connection,
    ) -> String {
        self.for_admin(hdr, conn, Inner::fingerprint_of).await
    }

    /// Whether a secure session with the phone is up.
    #[zbus(property)]
    fn connected(&self) -> bool {
        self.inner.is_connected(&self.name)
    }

    /// Whether the phone's key is pinned.
    #[zbus(property)]
    fn paired(&self) -> bool {
        self.inner.is_paired(&self.name)
    }

    /// Requests sent, bytes sent to the phone and bytes received from it;
    /// read afresh on every call.
    #[zbus(property(emits_changed_signal = "false"))]
    fn statistics(&self) -> LinkStatistics {
        self.inner.statistics_of(&self.name)
    }
}

impl HandsetObject {
    /// Says that Fingerprint changed (it is only read by administrators,
    /// so the signal carries no value).
    pub async fn paired_changed_all(&self, emitter: &SignalEmitter<'_>) -> zbus::Result<()> {
        self.paired_changed(emitter).await?;
        self.fingerprint_invalidate(emitter).await
    }
}
