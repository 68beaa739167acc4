//! The async client of `org.phonecsp.CryptoProvider1`.
//!
//! Every D-Bus method has a method here with Rust types (the list is in
//! `calls.rs`, shared with the blocking client). Before a PIN
//! ([`Client::login`], [`Client::change_pin`]) or a pairing code
//! ([`Client::pair`]) is sent, the client asks the bus which unix user owns
//! [`BUS_NAME`] and refuses ([`Error::Untrusted`]) unless it is the
//! configured daemon user (a process of another user could have taken the
//! name, see docs/threat-model.md); the secret then goes to the unique name that was checked, not to the well-known name, so that the
//! name cannot change hands in between.
//!
//! A connection runs on the Tokio runtime current when [`Client::connect`]
//! is called; programs without one use [`crate::blocking::Client`].

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use zbus::fdo::DBusProxy;
use zbus::names::{BusName, OwnedUniqueName, WellKnownName};
use zbus::proxy::CacheProperties;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::proxy::CryptoProviderProxy;
use crate::types::BUS_NAME;
use crate::types::{
    EcKeyPairInfo, HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo,
    TokenDetails, TokenEntry,
};

/// Environment variable choosing the bus: `system`, `session` or a D-Bus address.
pub const ENV_BUS: &str = "PHONECSP_BUS";
/// Environment variable naming the daemon's user (a name or a uid).
pub const ENV_DAEMON_USER: &str = "PHONECSP_DAEMON_USER";
/// The daemon's user when [`ENV_DAEMON_USER`] is not set, if it exists (else root).
pub const DEFAULT_DAEMON_USER: &str = "phonecsp";

/// Which bus the daemon is on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Bus {
    #[default]
    System,
    Session,
    /// A D-Bus address such as `unix:path=/run/phonecsp-test/bus`.
    Address(String),
}

/// A `PHONECSP_BUS` or `--bus` value that is none of `system`, `session`
/// or a D-Bus address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{0}' is not a bus: give system, session or a D-Bus address such as unix:path=/run/dbus/system_bus_socket"
)]
pub struct ParseBusError(pub String);

impl FromStr for Bus {
    type Err = ParseBusError;

    fn from_str(s: &str) -> std::result::Result<Bus, ParseBusError> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("system") {
            Ok(Bus::System)
        } else if t.eq_ignore_ascii_case("session") || t.eq_ignore_ascii_case("user") {
            Ok(Bus::Session)
        } else if looks_like_address(t) {
            Ok(Bus::Address(t.to_owned()))
        } else {
            Err(ParseBusError(s.to_owned()))
        }
    }
}

/// `transport:key=value,...[;...]`: a transport name, a colon, and either
/// nothing or key=value pairs.
fn looks_like_address(s: &str) -> bool {
    !s.is_empty()
        && s.split(';').filter(|p| !p.is_empty()).all(|part| {
            let Some((transport, rest)) = part.split_once(':') else {
                return false;
            };
            !transport.is_empty()
                && transport
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && (rest.is_empty() || rest.split(',').all(|kv| kv.contains('=')))
        })
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bus::System => f.write_str("system"),
            Bus::Session => f.write_str("session"),
            Bus::Address(a) => f.write_str(a),
        }
    }
}

impl Bus {
    /// From `PHONECSP_BUS`; the system bus when it is unset or empty.
    pub fn from_env() -> std::result::Result<Bus, ParseBusError> {
        match std::env::var(ENV_BUS) {
            Ok(v) if !v.trim().is_empty() => v.parse(),
            Ok(_) => Ok(Bus::System),
            Err(std::env::VarError::NotPresent) => Ok(Bus::System),
            Err(std::env::VarError::NotUnicode(v)) => {
                Err(ParseBusError(v.to_string_lossy().into_owned()))
            }
        }
    }
}

/// How a [`Client`] connects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// The uid that must own [`BUS_NAME`] before a PIN or pairing code is
    /// sent. `None`: from `PHONECSP_DAEMON_USER` (a user name or a uid),
    /// else the user `phonecsp` if it exists, else 0 (root).
    pub expected_daemon_uid: Option<u32>,
}

impl ClientOptions {
    /// The uid the daemon must run as, with the defaults applied.
    pub fn resolve_expected_uid(&self) -> Result<u32> {
        match self.expected_daemon_uid {
            Some(uid) => Ok(uid),
            None => default_daemon_uid()
                .map_err(|msg| Error::token(phonecsp_protocol::CkRv::GENERAL_ERROR, msg)),
        }
    }
}

/// The daemon's uid from the environment and the user database:
/// `PHONECSP_DAEMON_USER` (a uid or a user name), else the user `phonecsp`
/// if it exists, else 0. `Err` (a message) when the variable names no user.
pub fn default_daemon_uid() -> std::result::Result<u32, String> {
    let spec = match std::env::var(ENV_DAEMON_USER) {
        Ok(v) => Some(v),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(format!("{ENV_DAEMON_USER} is not valid UTF-8"));
        }
    };
    resolve_daemon_uid(spec.as_deref(), lookup_user)
}

fn lookup_user(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// The rule of [`default_daemon_uid`], with the user lookup given.
pub fn resolve_daemon_uid(
    spec: Option<&str>,
    lookup: impl Fn(&str) -> Option<u32>,
) -> std::result::Result<u32, String> {
    match spec.map(str::trim) {
        Some(s) if !s.is_empty() => {
            if let Ok(uid) = s.parse::<u32>() {
                return Ok(uid);
            }
            lookup(s).ok_or_else(|| {
                format!("{ENV_DAEMON_USER}={s}: no such user (give a user name or a numeric uid)")
            })
        }
        _ => Ok(lookup(DEFAULT_DAEMON_USER).unwrap_or(0)),
    }
}

/// A signal of the daemon, for [`Client::receive_events`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    HandsetConnected(String),
    HandsetDisconnected(String),
    TokensChanged(String),
    /// A call waits for the phone's owner (see `ApprovalPending` in
    /// dbus/org.phonecsp.CryptoProvider1.xml).
    ApprovalPending {
        handset: String,
        token: String,
        operation: String,
        /// The waiting connection's unique name.
        caller: String,
    },
}

impl Event {
    /// The handset the event is about.
    pub fn handset(&self) -> &str {
        match self {
            Event::HandsetConnected(h)
            | Event::HandsetDisconnected(h)
            | Event::TokensChanged(h)
            | Event::ApprovalPending { handset: h, .. } => h,
        }
    }
}

/// A stream of handset names from one signal.
pub type HandsetStream = BoxStream<'static, String>;
/// A stream of every signal of the daemon.
pub type EventStream = BoxStream<'static, Event>;

/// A connection to the daemon. Cheap to clone; clones share the connection
/// (and so the login state, which the daemon keeps per connection).
#[derive(Clone, Debug)]
pub struct Client {
    conn: zbus::Connection,
    proxy: CryptoProviderProxy<'static>,
    dbus: DBusProxy<'static>,
    expected_uid: u32,
}

impl Client {
    /// Connects with the default [`ClientOptions`].
    pub async fn connect(bus: &Bus) -> Result<Client> {
        Client::connect_with(bus, ClientOptions::default()).await
    }

    pub async fn connect_with(bus: &Bus, options: ClientOptions) -> Result<Client> {
        let expected_uid = options.resolve_expected_uid()?;
        let builder = match bus {
            Bus::System => zbus::connection::Builder::system(),
            Bus::Session => zbus::connection::Builder::session(),
            Bus::Address(a) => zbus::connection::Builder::address(a.as_str()),
        };
        let conn = builder.build().await?;
        Client::from_connection(conn, expected_uid).await
    }

    /// A client on an existing connection.
    pub async fn from_connection(
        conn: zbus::Connection,
        expected_daemon_uid: u32,
    ) -> Result<Client> {
        let proxy = CryptoProviderProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        let dbus = DBusProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(Client {
            conn,
            proxy,
            dbus,
            expected_uid: expected_daemon_uid,
        })
    }

    pub fn connection(&self) -> &zbus::Connection {
        &self.conn
    }

    /// The generated proxy, for what this type does not wrap.
    pub fn proxy(&self) -> &CryptoProviderProxy<'static> {
        &self.proxy
    }

    /// The uid [`BUS_NAME`] must be owned by before a secret is sent.
    pub fn expected_daemon_uid(&self) -> u32 {
        self.expected_uid
    }

    /// Checks that [`BUS_NAME`] is owned by the expected daemon user, starting
    /// the service by activation if nobody owns it, and returns the unique
    /// name that was checked.
    pub async fn check_daemon(&self) -> Result<OwnedUniqueName> {
        let name = WellKnownName::from_static_str(BUS_NAME)?;
        let owner = match self.dbus.get_name_owner(BusName::from(name.clone())).await {
            Ok(owner) => owner,
            Err(zbus::fdo::Error::NameHasNoOwner(_)) => {
                // Bus activation (the unit is Type=dbus); a failure shows in
                // the second GetNameOwner.
                let _ = self.dbus.start_service_by_name(name.clone(), 0).await;
                self.dbus.get_name_owner(BusName::from(name)).await?
            }
            Err(e) => return Err(e.into()),
        };
        let actual = self
            .dbus
            .get_connection_unix_user(BusName::from(owner.inner().clone()))
            .await?;
        if actual != self.expected_uid {
            return Err(Error::Untrusted {
                name: BUS_NAME.to_owned(),
                actual,
                expected: self.expected_uid,
            });
        }
        Ok(owner)
    }

    /// A proxy addressed to the checked owner of [`BUS_NAME`].
    async fn trusted(&self) -> Result<CryptoProviderProxy<'static>> {
        let owner = self.check_daemon().await?;
        Ok(CryptoProviderProxy::builder(&self.conn)
            .destination(owner)
            .cache_properties(CacheProperties::No)
            .build()
            .await?)
    }

    /// The proxy to the well-known name, for the calls that carry no secret.
    async fn plain(&self) -> Result<CryptoProviderProxy<'static>> {
        Ok(self.proxy.clone())
    }

    async fn handsets_of<S, T>(signals: S) -> HandsetStream
    where
        S: futures_util::Stream<Item = T> + Send + 'static,
        T: HandsetSignal,
    {
        signals
            .filter_map(|sig| std::future::ready(sig.handset()))
            .boxed()
    }

    pub async fn receive_handset_connected(&self) -> Result<HandsetStream> {
        let s = self.proxy.receive_handset_connected().await?;
        Ok(Client::handsets_of(s).await)
    }

    pub async fn receive_handset_disconnected(&self) -> Result<HandsetStream> {
        let s = self.proxy.receive_handset_disconnected().await?;
        Ok(Client::handsets_of(s).await)
    }

    pub async fn receive_tokens_changed(&self) -> Result<HandsetStream> {
        let s = self.proxy.receive_tokens_changed().await?;
        Ok(Client::handsets_of(s).await)
    }

    /// The signals in one stream, in the order they arrive.
    pub async fn receive_events(&self) -> Result<EventStream> {
        let connected = self
            .receive_handset_connected()
            .await?
            .map(Event::HandsetConnected);
        let removed = self
            .receive_handset_disconnected()
            .await?
            .map(Event::HandsetDisconnected);
        let changed = self
            .receive_tokens_changed()
            .await?
            .map(Event::TokensChanged);
        let pending = self
            .proxy
            .receive_approval_pending()
            .await?
            .filter_map(|sig| {
                let event = sig.args().ok().map(|a| Event::ApprovalPending {
                    handset: a.handset,
                    token: a.token,
                    operation: a.operation,
                    caller: a.caller,
                });
                std::future::ready(event)
            });
        let handsets = futures_util::stream::select(connected, removed);
        let all = futures_util::stream::select(handsets, changed);
        Ok(futures_util::stream::select(all, pending).boxed())
    }
}

/// The three signals of the daemon, each naming a handset.
trait HandsetSignal {
    fn handset(&self) -> Option<String>;
}

macro_rules! handset_signal {
    ($($signal:ident),*) => {$(
        impl HandsetSignal for crate::proxy::$signal {
            fn handset(&self) -> Option<String> {
                self.args().ok().map(|a| a.handset)
            }
        }
    )*};
}
handset_signal!(HandsetConnected, HandsetDisconnected, TokensChanged);

/// Every method of the daemon: its proxy call (checked first for the ones
/// that carry a secret), with the reply in the client's type.
macro_rules! async_calls {
    ($({ [$(#[$doc:meta])*] $via:ident $name:ident($($arg:ident: $ty:ty),*) [$wire:ty] [$ret:ty] [$($emits:literal)?] })*) => {
        impl Client {$(
            $(#[$doc])*
            #[allow(clippy::too_many_arguments, clippy::useless_conversion)]
            pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret> {
                self.$via().await?.$name($($arg),*).await.map(Into::into)
            }
        )*}
    };
}
crate::calls::for_each_call!(async_calls);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_from_str() {
        assert_eq!("system".parse::<Bus>(), Ok(Bus::System));
        assert_eq!("SESSION".parse::<Bus>(), Ok(Bus::Session));
        assert_eq!(" session ".parse::<Bus>(), Ok(Bus::Session));
        assert_eq!(
            "unix:path=/tmp/bus".parse::<Bus>(),
            Ok(Bus::Address("unix:path=/tmp/bus".into()))
        );
        assert_eq!(
            "unix:abstract=/tmp/dbus-x,guid=0123;tcp:host=localhost,port=1234".parse::<Bus>(),
            Ok(Bus::Address(
                "unix:abstract=/tmp/dbus-x,guid=0123;tcp:host=localhost,port=1234".into()
            ))
        );
        assert!("".parse::<Bus>().is_err());
        assert!("systen".parse::<Bus>().is_err());
        assert!("/run/dbus/system_bus_socket".parse::<Bus>().is_err());
        assert!("unix:path".parse::<Bus>().is_err());
        for b in [
            Bus::System,
            Bus::Session,
            Bus::Address("unix:path=/x".into()),
        ] {
            assert_eq!(b.to_string().parse::<Bus>(), Ok(b));
        }
    }

    #[test]
    fn expected_uid_resolution() {
        let users = |name: &str| match name {
            "phonecsp" => Some(990),
            "alice" => Some(1000),
            _ => None,
        };
        let no_users = |_: &str| None;
        assert_eq!(resolve_daemon_uid(None, users), Ok(990));
        assert_eq!(resolve_daemon_uid(Some(""), users), Ok(990));
        assert_eq!(resolve_daemon_uid(None, no_users), Ok(0));
        assert_eq!(resolve_daemon_uid(Some("alice"), users), Ok(1000));
        assert_eq!(resolve_daemon_uid(Some(" 123 "), no_users), Ok(123));
        assert_eq!(resolve_daemon_uid(Some("0"), users), Ok(0));
        // A name that resolves to nothing is an error, never a fallback.
        assert!(resolve_daemon_uid(Some("mallory"), users).is_err());
        assert!(resolve_daemon_uid(Some("-1"), users).is_err());
        // Explicit options win over the environment.
        let o = ClientOptions {
            expected_daemon_uid: Some(4242),
        };
        assert_eq!(o.resolve_expected_uid().ok(), Some(4242));
        // The real user database: root always resolves.
        assert_eq!(lookup_user("root"), Some(0));
    }
}
