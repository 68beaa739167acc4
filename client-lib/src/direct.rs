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
use phonecsp_protocol::ck::cka;
use phonecsp_protocol::message::token_flags;
use phonecsp_protocol::{
    CkRv, DecryptMechanism, HashAlg, HostLink, LinkError, ObjectClass, Reply, Request,
};
use rsa::RsaPublicKey;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::time::Instant;
use zeroize::Zeroizing;

use crate::luks::{ContainerStatus, KeyHolder, LuksError};

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

    async fn call(&mut self, request: Request) -> crate::Result<Reply> {
        let what = request.name();
        match tokio::time::timeout(self.timeout, self.link.call(&request)).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(LinkError::Token(rv))) => {
                Err(crate::Error::token(rv, format!("handset refused {what}")))
            }
            Ok(Err(LinkError::Request(e))) => Err(crate::Error::token(CkRv::ARGUMENTS_BAD, e)),
            Ok(Err(e)) => Err(crate::Error::token(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}': link failed during {what}: {e}", self.handset),
            )),
            Err(_) => Err(crate::Error::token(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}': no answer to {what}", self.handset),
            )),
        }
    }

    fn unexpected(what: &str) -> crate::Error {
        crate::Error::token(CkRv::DEVICE_ERROR, format!("unexpected reply to {what}"))
    }

    /// Logs out of `container` (best effort) and ends the session.
    pub async fn close(mut self, container: &str) {
        let _ = self
            .call(Request::Logout {
                container: container.to_owned(),
            })
            .await;
    }
}

impl KeyHolder for DirectHolder {
    async fn status(&mut self, container: &str) -> crate::Result<ContainerStatus> {
        match self
            .call(Request::TokenInfo {
                container: container.to_owned(),
            })
            .await?
        {
            Reply::TokenInfo(i) => Ok(ContainerStatus {
                flags: i.flags,
                retries_left: i.retries_left,
                logged_in: i.flags & token_flags::LOGGED_IN != 0,
            }),
            _ => Err(Self::unexpected("+CKTINFO")),
        }
    }

    async fn public_key(&mut self, container: &str, id: &[u8]) -> crate::Result<RsaPublicKey> {
        let reply = self
            .call(Request::GetAttributes {
                container: container.to_owned(),
                class: ObjectClass::PublicKey,
                id: id.to_vec(),
            })
            .await?;
        let Reply::Attributes(attrs) = reply else {
            return Err(Self::unexpected("+CKATTR"));
        };
        let get = |t| attrs.iter().find(|(a, _)| *a == t).map(|(_, v)| v);
        match (get(cka::MODULUS), get(cka::PUBLIC_EXPONENT)) {
            (Some(n), Some(e)) => Ok(crate::local::public_key(n, e)?),
            _ => Err(crate::Error::token(
                CkRv::KEY_TYPE_INCONSISTENT,
                "not an RSA public key",
            )),
        }
    }

    async fn login(&mut self, container: &str, pin: &[u8]) -> crate::Result<()> {
        self.call(Request::Login {
            container: container.to_owned(),
            pin: Zeroizing::new(pin.to_vec()),
        })
        .await
        .map(drop)
    }

    async fn decrypt(
        &mut self,
        container: &str,
        id: &[u8],
        ciphertext: &[u8],
    ) -> crate::Result<Zeroizing<Vec<u8>>> {
        match self
            .call(Request::Decrypt {
                container: container.to_owned(),
                id: id.to_vec(),
                mechanism: DecryptMechanism::Oaep {
                    hash: HashAlg::Sha256,
                    label: vec![],
                },
                data: ciphertext.to_vec(),
            })
            .await?
        {
            Reply::Plaintext(p) => Ok(p),
            _ => Err(Self::unexpected("+CKDEC")),
        }
    }
}
