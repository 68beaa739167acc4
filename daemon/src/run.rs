//! Putting the daemon together: state, one link task per configured
//! handset, the D-Bus service, and the watchers that turn bus and link
//! events into dropped logins and signals, and the disk key sockets. Ends
//! cleanly on SIGTERM/SIGINT.

use crate::config::Config;
use crate::link::{self, LinkSettings, LinkState};
use crate::service::{Inner, Provider, ProviderSignals};
use crate::state::State;
use crate::transport;
use futures_util::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Which bus to serve on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusChoice {
    System,
    Session,
    Address(String),
}

impl std::str::FromStr for BusChoice {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "system" => BusChoice::System,
            "session" => BusChoice::Session,
            a => BusChoice::Address(a.to_owned()),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    State(#[from] crate::state::StateError),
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs until `stop` turns true (or SIGTERM/SIGINT when `signals`).
pub async fn run(
    config: Config,
    bus: BusChoice,
    mut stop: watch::Receiver<bool>,
    signals: bool,
) -> Result<(), RunError> {
    let state = Arc::new(State::open(&config.daemon.state_dir)?);
    log::info!(
        "host key {}",
        phonecsp_protocol::noise::fingerprint(state.identity().public())
    );
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut links = BTreeMap::new();
    let mut threads = Vec::new();
    for h in &config.handsets {
        let Ok(t) = h.transport() else { continue };
        let settings = LinkSettings {
            name: h.name.clone(),
            host_name: config.host_name(),
            request_timeout: config.daemon.request_timeout(),
            health_interval: Duration::from_secs(config.daemon.health_interval_secs.max(1)),
            max_backoff: Duration::from_secs(config.daemon.max_backoff_secs.max(1)),
        };
        let (handle, thread) = link::spawn(
            settings,
            transport::connector(&t),
            state.clone(),
            shutdown_rx.clone(),
        )?;
        links.insert(h.name.clone(), handle);
        threads.push(thread);
    }
    let inner = Arc::new(Inner::new(config, links.clone(), state));
    // Disk keys for systemd-cryptsetup, if volumes are configured.
    let key_sockets = tokio::spawn(crate::keysocket::serve(inner.clone(), shutdown_rx.clone()));
    let builder = match &bus {
        BusChoice::System => zbus::connection::Builder::system(),
        BusChoice::Session => zbus::connection::Builder::session(),
        BusChoice::Address(a) => zbus::connection::Builder::address(a.as_str()),
    };
    let conn = builder
        .serve_at(phonecsp::OBJECT_PATH, Provider::new(inner.clone()))
        .name(phonecsp::BUS_NAME)
        .build()
        .await?;
    log::info!("serving {} on the {bus:?} bus", phonecsp::BUS_NAME);
    inner.set_connection(conn.clone());
    // The object API: one object per handset, token and key.
    crate::objects::Tree::start(&conn, inner.clone()).await?;

    // Callers that leave the bus lose their logins.
    let dbus = zbus::fdo::DBusProxy::new(&conn).await?;
    let mut owners = dbus.receive_name_owner_changed().await?;
    let left = {
        let inner = inner.clone();
        tokio::spawn(async move {
            while let Some(sig) = owners.next().await {
                let Ok(args) = sig.args() else { continue };
                if args.new_owner().is_none() && args.name().starts_with(':') {
                    inner.caller_left(args.name()).await;
                }
            }
        })
    };

    // Link state changes become signals, and the object tree follows them.
    let iface = conn
        .object_server()
        .interface::<_, Provider>(phonecsp::OBJECT_PATH)
        .await?;
    let mut watchers = Vec::new();
    for (name, handle) in links {
        let iface = iface.clone();
        let inner = inner.clone();
        let mut rx = handle.subscribe();
        watchers.push(tokio::spawn(async move {
            let mut was_connected = false;
            loop {
                let now = matches!(*rx.borrow_and_update(), LinkState::Connected { .. });
                if now != was_connected {
                    let r = if now {
                        iface.handset_connected(&name).await
                    } else {
                        iface.handset_disconnected(&name).await
                    };
                    if let Err(e) = r {
                        log::debug!("signal: {e}");
                    }
                    inner.link_changed(&name);
                    was_connected = now;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        }));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv(), if signals => log::info!("SIGTERM: stopping"),
        _ = int.recv(), if signals => log::info!("SIGINT: stopping"),
        _ = stop.wait_for(|s| *s) => log::info!("stopping"),
    }
    // Stop taking calls, let the one in flight on each link finish, close links.
    let _ = conn.release_name(phonecsp::BUS_NAME).await;
    let _ = shutdown_tx.send(true);
    // One grace period for all links together; a link thread stuck in the
    // kernel is left behind rather than keeping the daemon from exiting.
    let grace = inner
        .config()
        .daemon
        .request_timeout()
        .saturating_add(Duration::from_secs(1));
    let start = tokio::time::Instant::now();
    for mut t in threads {
        let left = grace.saturating_sub(start.elapsed());
        if !t.finish(left).await {
            log::warn!(
                "handset '{}': its link did not stop within {grace:?}; leaving it",
                t.name()
            );
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), key_sockets).await;
    left.abort();
    for w in watchers {
        w.abort();
    }
    Ok(())
}
