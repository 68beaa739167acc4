//! The handset's link opened by this process itself, without the daemon:
//! what the disk keyscript does in an initramfs, where there is no D-Bus.
//!
//! It uses the daemon's configuration (the handset's serial line) and its
//! state (its Noise key and the handset's pinned key), read-only, so the
//! handset sees the same computer it was paired with. Only serial lines
//! are possible here: Bluetooth needs `bluetoothd`, which needs D-Bus.

use std::path::Path;
use std::time::Duration;

use phonecsp_host::config::{Config, Transport};
use phonecsp_host::serial::SerialStream;
use phonecsp_host::state::State;
use phonecsp_protocol::{CkRv, HostLink, LinkError, Reply, Request};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::LuksError;
use phonecsp::handset::{Handset, HandsetLink};

type Link = HostLink<ReadHalf<SerialStream>, WriteHalf<SerialStream>>;

/// How often a missing serial device is looked for again.
const POLL: Duration = Duration::from_millis(250);

/// Loads the daemon's configuration for direct use.
pub fn load_config(path: &Path) -> Result<Config, LuksError> {
    Config::load(path).map_err(|e| LuksError::Host(e.to_string()))
}

/// A session with one handset over its serial line.
pub struct DirectHolder {
    link: Link,
    handset: String,
    timeout: Duration,
}

fn away(handset: &str, reason: impl std::fmt::Display) -> LuksError {
    LuksError::HandsetAway {
        handset: handset.to_owned(),
        reason: reason.to_string(),
    }
}

impl DirectHolder {
    /// Opens the handset's serial line (waiting until `deadline` for the
    /// device to appear and answer) and the Noise session with its pinned
    /// key.
    pub async fn connect(
        config: &Config,
        handset: &str,
        deadline: Instant,
    ) -> Result<DirectHolder, LuksError> {
        let hc = config
            .handsets
            .iter()
            .find(|h| h.name == handset)
            .ok_or_else(|| LuksError::HandsetNotConfigured(handset.to_owned()))?;
        let (path, baud) = match hc.transport().map_err(LuksError::Host)? {
            Transport::Serial { path, baud } => (path, baud),
            Transport::Bluetooth { .. } => {
                return Err(away(
                    handset,
                    "it is configured for Bluetooth, and without D-Bus (and so bluetoothd) only a serial line can be used",
                ));
            }
        };
        let state = State::open_existing(&config.daemon.state_dir)
            .map_err(|e| LuksError::Host(e.to_string()))?;
        let pinned = state
            .pinned(handset)
            .map_err(|e| LuksError::Host(e.to_string()))?
            .ok_or_else(|| {
                LuksError::Host(format!(
                    "handset '{handset}' is not paired with this computer (no key in {})",
                    state.dir().join("handsets").display()
                ))
            })?;
        let timeout = config.daemon.request_timeout();
        let mut said_waiting = false;
        let mut link = loop {
            let attempt = async {
                let port = phonecsp_host::serial::open(&path, baud)?;
                phonecsp_host::serial::discard_input(&port);
                let (r, w) = tokio::io::split(port);
                match tokio::time::timeout(timeout, HostLink::open(r, w)).await {
                    Ok(Ok(link)) => Ok(link),
                    Ok(Err(e)) => Err(std::io::Error::other(e.to_string())),
                    Err(_) => Err(std::io::Error::other("no answer to ATE0/+CKVER")),
                }
            };
            match attempt.await {
                Ok(link) => break link,
                Err(e) => {
                    if Instant::now() + POLL >= deadline {
                        let busy = if e.to_string().contains("lock") {
                            " (is phonecspd using it?)"
                        } else {
                            ""
                        };
                        return Err(away(handset, format!("{}: {e}{busy}", path.display())));
                    }
                    if !said_waiting {
                        eprintln!(
                            "phonecsp: waiting for handset '{handset}' on {} ({e})",
                            path.display()
                        );
                        said_waiting = true;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        let identity = state.identity().clone();
        match tokio::time::timeout(timeout, link.connect(&identity, &pinned)).await {
            Ok(Ok(())) => {}
            Ok(Err(LinkError::Cme(_))) => {
                return Err(away(
                    handset,
                    "the handset refused this computer's key (unpaired or revoked on the phone)",
                ));
            }
            Ok(Err(e)) => return Err(away(handset, e)),
            Err(_) => return Err(away(handset, "no answer to the handshake")),
        }
        Ok(DirectHolder {
            link,
            handset: handset.to_owned(),
            timeout,
        })
    }

    /// Logs out of `container` (best effort) and ends the session.
    pub async fn close(mut self, container: &str) {
        let _ = self.logout(container).await;
    }
}

impl HandsetLink for DirectHolder {
    async fn call(&mut self, request: Request) -> phonecsp::Result<Reply> {
        let what = request.name();
        match tokio::time::timeout(self.timeout, self.link.call(&request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(LinkError::Token(rv))) => Err(phonecsp::Error::token(
                rv,
                format!("handset refused {what}"),
            )),
            Ok(Err(LinkError::Request(e))) => Err(phonecsp::Error::token(CkRv::ARGUMENTS_BAD, e)),
            Ok(Err(e @ LinkError::Unsupported(_))) => Err(phonecsp::Error::token(
                CkRv::FUNCTION_NOT_SUPPORTED,
                e.to_string(),
            )),
            Ok(Err(e)) => Err(phonecsp::Error::token(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}': link failed during {what}: {e}", self.handset),
            )),
            Err(_) => Err(phonecsp::Error::token(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}': no answer to {what}", self.handset),
            )),
        }
    }
}
