//! A blocking client, for callers without an async runtime: the PKCS#11
//! module (called from arbitrary C threads), the keyscript.
//!
//! zbus 6 has no blocking API of its own, so the client owns a private
//! multi-thread Tokio runtime with one worker that runs the connection.
//! Each call is spawned onto that runtime and the calling thread waits for
//! its result on a plain channel, so it may be called from any number of
//! threads at once, and even from inside some other async runtime (where
//! `Runtime::block_on` would panic), though it then blocks that runtime's
//! thread for the duration of the call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::names::OwnedUniqueName;
use zeroize::Zeroizing;

use crate::client::{self, Bus, ClientOptions, Event};
use crate::types::{
    HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo, TokenDetails,
    TokenEntry,
};
use crate::{Error, Result};

struct Inner {
    // Both are `Some` until `drop`.
    runtime: Option<tokio::runtime::Runtime>,
    client: Option<client::Client>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            {
                // The connection's own drop may spawn work: give it the runtime.
                let _guard = rt.enter();
                self.client.take();
            }
            // Unlike dropping the runtime, this never blocks nor panics, even
            // when the last clone goes away inside another runtime.
            rt.shutdown_background();
        }
    }
}

/// The blocking client. `Send + Sync` and cheap to clone; clones share the
/// connection, its runtime and so the daemon's per-connection login state.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("blocking::Client")
            .field("client", &self.inner.client)
            .finish()
    }
}

fn runtime_gone() -> Error {
    Error::Bus(zbus::Error::Failure(
        "the phonecsp client's runtime stopped before the call completed".into(),
    ))
}

/// Runs `fut` on `rt` and waits for it on the calling thread.
fn run_on<T, F>(rt: &tokio::runtime::Runtime, fut: F) -> Result<T>
where
    F: Future<Output = Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    rt.spawn(async move {
        // The receiver only goes away if the caller's thread died.
        let _ = tx.send(fut.await);
    });
    rx.recv().unwrap_or_else(|_| Err(runtime_gone()))
}

impl Client {
    /// Connects with the default [`ClientOptions`].
    pub fn connect(bus: &Bus) -> Result<Client> {
        Client::connect_with(bus, ClientOptions::default())
    }

    pub fn connect_with(bus: &Bus, options: ClientOptions) -> Result<Client> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("phonecsp-dbus")
            .enable_all()
            .build()
            .map_err(|e| Error::Bus(zbus::Error::InputOutput(Arc::new(e))))?;
        let bus = bus.clone();
        let client = run_on(&runtime, async move {
            client::Client::connect_with(&bus, options).await
        });
        match client {
            Ok(client) => Ok(Client {
                inner: Arc::new(Inner {
                    runtime: Some(runtime),
                    client: Some(client),
                }),
            }),
            Err(e) => {
                runtime.shutdown_background();
                Err(e)
            }
        }
    }

    fn run<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: FnOnce(client::Client) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        match (&self.inner.runtime, &self.inner.client) {
            (Some(rt), Some(c)) => run_on(rt, f(c.clone())),
            _ => Err(runtime_gone()),
        }
    }

    /// The async client this one drives.
    pub fn as_async(&self) -> Option<&client::Client> {
        self.inner.client.as_ref()
    }

    /// The uid [`crate::BUS_NAME`] must be owned by before a secret is sent.
    pub fn expected_daemon_uid(&self) -> u32 {
        self.inner
            .client
            .as_ref()
            .map(client::Client::expected_daemon_uid)
            .unwrap_or(0)
    }

    /// See [`client::Client::check_daemon`].
    pub fn check_daemon(&self) -> Result<OwnedUniqueName> {
        self.run(|c| async move { c.check_daemon().await })
    }

    pub fn list_handsets(&self) -> Result<Vec<HandsetStatus>> {
        self.run(|c| async move { c.list_handsets().await })
    }

    pub fn list_tokens(&self) -> Result<Vec<TokenEntry>> {
        self.run(|c| async move { c.list_tokens().await })
    }

    pub fn get_token_info(&self, handset: &str, token: &str) -> Result<TokenDetails> {
        let (h, t) = (handset.to_owned(), token.to_owned());
        self.run(|c| async move { c.get_token_info(&h, &t).await })
    }

    /// Checks the daemon's identity, then logs this connection in.
    pub fn login(&self, handset: &str, token: &str, pin: &[u8]) -> Result<()> {
        let (h, t) = (handset.to_owned(), token.to_owned());
        let pin = Zeroizing::new(pin.to_vec());
        self.run(|c| async move { c.login(&h, &t, &pin).await })
    }

    pub fn logout(&self, handset: &str, token: &str) -> Result<()> {
        let (h, t) = (handset.to_owned(), token.to_owned());
        self.run(|c| async move { c.logout(&h, &t).await })
    }

    /// Checks the daemon's identity, then changes the PIN.
    pub fn change_pin(
        &self,
        handset: &str,
        token: &str,
        old_pin: &[u8],
        new_pin: &[u8],
    ) -> Result<()> {
        let (h, t) = (handset.to_owned(), token.to_owned());
        let old_pin = Zeroizing::new(old_pin.to_vec());
        let new_pin = Zeroizing::new(new_pin.to_vec());
        self.run(|c| async move { c.change_pin(&h, &t, &old_pin, &new_pin).await })
    }

    pub fn list_objects(&self, handset: &str, token: &str) -> Result<Vec<ObjectInfo>> {
        let (h, t) = (handset.to_owned(), token.to_owned());
        self.run(|c| async move { c.list_objects(&h, &t).await })
    }

    /// Attributes by `CKA_*` type; numbers are 8-byte big-endian.
    pub fn get_attributes(
        &self,
        handset: &str,
        token: &str,
        class: u32,
        id: &[u8],
    ) -> Result<HashMap<u32, Vec<u8>>> {
        let (h, t, id) = (handset.to_owned(), token.to_owned(), id.to_vec());
        self.run(|c| async move { c.get_attributes(&h, &t, class, &id).await })
    }

    pub fn sign(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        data: &[u8],
    ) -> Result<Vec<u8>> {
        let (h, t, k) = (handset.to_owned(), token.to_owned(), key_id.to_vec());
        let (p, d) = (params.clone(), data.to_vec());
        self.run(|c| async move { c.sign(&h, &t, &k, mechanism, &p, &d).await })
    }

    /// `Ok(false)`: the signature does not verify.
    #[allow(clippy::too_many_arguments)]
    pub fn verify(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        let (h, t, k) = (handset.to_owned(), token.to_owned(), key_id.to_vec());
        let (p, d, s) = (params.clone(), data.to_vec(), signature.to_vec());
        self.run(|c| async move { c.verify(&h, &t, &k, mechanism, &p, &d, &s).await })
    }

    /// The plaintext, zeroized when dropped.
    pub fn decrypt(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let (h, t, k) = (handset.to_owned(), token.to_owned(), key_id.to_vec());
        let (p, d) = (params.clone(), ciphertext.to_vec());
        self.run(|c| async move { c.decrypt(&h, &t, &k, mechanism, &p, &d).await })
    }

    pub fn encrypt(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let (h, t, k) = (handset.to_owned(), token.to_owned(), key_id.to_vec());
        let (p, d) = (params.clone(), Zeroizing::new(plaintext.to_vec()));
        self.run(|c| async move { c.encrypt(&h, &t, &k, mechanism, &p, &d).await })
    }

    pub fn digest(&self, mechanism: u32, data: &[u8]) -> Result<Vec<u8>> {
        let d = data.to_vec();
        self.run(|c| async move { c.digest(mechanism, &d).await })
    }

    /// An empty `id` lets the handset choose the CKA_ID.
    pub fn generate_key_pair(
        &self,
        handset: &str,
        token: &str,
        bits: u32,
        id: &[u8],
        label: &str,
    ) -> Result<KeyPairInfo> {
        let (h, t, id, l) = (
            handset.to_owned(),
            token.to_owned(),
            id.to_vec(),
            label.to_owned(),
        );
        self.run(|c| async move { c.generate_key_pair(&h, &t, bits, &id, &l).await })
    }

    pub fn generate_random(&self, handset: &str, length: u32) -> Result<Vec<u8>> {
        let h = handset.to_owned();
        self.run(|c| async move { c.generate_random(&h, length).await })
    }

    /// `certificate` is DER.
    pub fn import_certificate(
        &self,
        handset: &str,
        token: &str,
        id: &[u8],
        label: &str,
        certificate: &[u8],
    ) -> Result<()> {
        let (h, t, id, l) = (
            handset.to_owned(),
            token.to_owned(),
            id.to_vec(),
            label.to_owned(),
        );
        let cert = certificate.to_vec();
        self.run(|c| async move { c.import_certificate(&h, &t, &id, &l, &cert).await })
    }

    /// `class`: `CKO_CERTIFICATE` (1) or `CKO_PRIVATE_KEY` (3, the key pair).
    pub fn delete_object(&self, handset: &str, token: &str, class: u32, id: &[u8]) -> Result<()> {
        let (h, t, id) = (handset.to_owned(), token.to_owned(), id.to_vec());
        self.run(|c| async move { c.delete_object(&h, &t, class, &id).await })
    }

    /// `public_key` is a DER SubjectPublicKeyInfo; hashes are `CKM_SHA*`.
    #[allow(clippy::too_many_arguments)]
    pub fn rewrap(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        in_hash: u32,
        ciphertext: &[u8],
        out_hash: u32,
        public_key: &[u8],
    ) -> Result<Vec<u8>> {
        let (h, t, k) = (handset.to_owned(), token.to_owned(), key_id.to_vec());
        let (ct, pk) = (ciphertext.to_vec(), public_key.to_vec());
        self.run(|c| async move { c.rewrap(&h, &t, &k, in_hash, &ct, out_hash, &pk).await })
    }

    /// Root only. Checks the daemon's identity, then pairs; returns the
    /// handset key's fingerprint.
    pub fn pair(&self, handset: &str, code: &str) -> Result<String> {
        let h = handset.to_owned();
        let code = Zeroizing::new(code.to_owned());
        self.run(|c| async move { c.pair(&h, &code).await })
    }

    /// Root only.
    pub fn unpair(&self, handset: &str) -> Result<()> {
        let h = handset.to_owned();
        self.run(|c| async move { c.unpair(&h).await })
    }

    pub fn statistics(&self) -> Result<HashMap<String, LinkStatistics>> {
        self.run(|c| async move { c.statistics().await })
    }

    pub fn version(&self) -> Result<String> {
        self.run(|c| async move { c.version().await })
    }

    /// The daemon's signals, received from now on until the [`Events`] is
    /// dropped.
    pub fn receive_events(&self) -> Result<Events> {
        let stream = self.run(|c| async move { c.receive_events().await })?;
        let (tx, rx) = mpsc::channel();
        let task = match &self.inner.runtime {
            Some(rt) => rt.spawn(async move {
                let mut stream = stream;
                while let Some(event) = stream.next().await {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            }),
            None => return Err(runtime_gone()),
        };
        Ok(Events {
            rx,
            task,
            _client: self.clone(),
        })
    }
}

/// The daemon's signals, as a blocking iterator. The iterator ends only if
/// the connection does.
pub struct Events {
    rx: mpsc::Receiver<Event>,
    task: tokio::task::JoinHandle<()>,
    // Keeps the runtime that feeds `rx` alive.
    _client: Client,
}

impl Events {
    /// The next event, waiting at most `timeout`; `None` on timeout or when
    /// the connection is gone.
    pub fn next_timeout(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// The next event if one is waiting.
    pub fn try_next(&self) -> Option<Event> {
        self.rx.try_recv().ok()
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        self.rx.recv().ok()
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}

    #[test]
    fn is_send_and_sync() {
        assert_send_sync::<Client>();
        assert_send_sync::<client::Client>();
        fn assert_send<T: Send>() {}
        assert_send::<Events>();
    }

    #[test]
    fn an_unreachable_bus_is_a_bus_error_from_any_context() {
        let bus = Bus::Address("unix:path=/nonexistent/phonecsp-test-bus".into());
        let options = ClientOptions {
            expected_daemon_uid: Some(0),
        };
        assert!(matches!(
            Client::connect_with(&bus, options.clone()),
            Err(Error::Bus(_))
        ));
        // From inside another runtime too: no "runtime within a runtime" panic.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert!(matches!(
                Client::connect_with(&bus, options),
                Err(Error::Bus(_))
            ));
        });
    }
}
