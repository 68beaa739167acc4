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

use crate::calls::{Carry, Lend};
use crate::client::{self, Bus, ClientOptions, Event};
use crate::error::{Error, Result};
use crate::types::{
    EcKeyPairInfo, HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo,
    TokenDetails, TokenEntry,
};

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

    /// The public half of key `id`, of any type the handset holds, and
    /// the key's label.
    pub fn public_key(
        &self,
        handset: &str,
        token: &str,
        id: &[u8],
    ) -> Result<(crate::local::PublicKey, String)> {
        let attrs =
            self.get_attributes(handset, token, phonecsp_protocol::ck::cko::PUBLIC_KEY, id)?;
        let key = crate::local::any_public_key_from_attributes(&attrs).map_err(|rv| {
            Error::token(
                rv,
                "the handset reported no public key of a known type for that id",
            )
        })?;
        let label = attrs
            .get(&phonecsp_protocol::ck::cka::LABEL)
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .unwrap_or_default();
        Ok((key, label))
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

    /// Every configured handset, from the object tree
    /// ([`crate::objects::handsets`]).
    pub fn handset_objects(&self) -> Result<Vec<crate::objects::HandsetInfo>> {
        self.run(|c| async move { crate::objects::handsets(c.connection()).await })
    }

    /// Every key on the phones that are here, from the object tree
    /// ([`crate::objects::keys`]).
    pub fn keys(&self) -> Result<Vec<crate::objects::KeyInfo>> {
        self.run(|c| async move { crate::objects::keys(c.connection()).await })
    }

    /// See [`client::Client::check_daemon`].
    pub fn check_daemon(&self) -> Result<OwnedUniqueName> {
        self.run(|c| async move { c.check_daemon().await })
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

/// Every method of the daemon, as the async client's: the arguments are
/// taken over to the runtime's thread, the call waited for.
macro_rules! blocking_calls {
    ($({ [$(#[$doc:meta])*] $via:ident $name:ident($($arg:ident: $ty:ty),*) [$wire:ty] [$ret:ty] [$($emits:literal)?] })*) => {
        impl Client {$(
            $(#[$doc])*
            #[allow(clippy::too_many_arguments)]
            pub fn $name(&self, $($arg: $ty),*) -> Result<$ret> {
                $(let $arg = Carry::carry($arg);)*
                self.run(move |c| async move { c.$name($($arg.lend()),*).await })
            }
        )*}
    };
}
crate::calls::for_each_call!(blocking_calls);

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
