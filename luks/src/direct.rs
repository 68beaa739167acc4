//! The handset's link opened by this process itself, without the daemon:
//! what the disk keyscript does in an initramfs, where there is no D-Bus.
//!
//! It uses the daemon's configuration (the handset's serial line or
//! Bluetooth address) and its state (its Noise key and the handset's
//! pinned key), read-only, so the handset sees the same computer it was
//! paired with.
//!
//! Bluetooth works here through the kernel's RFCOMM socket, which needs
//! no D-Bus; but the phone's link key must be in the kernel, which only
//! bluetoothd puts there (when it powers the adapter). The initramfs hook
//! (`bluetooth = yes` in /etc/phonecsp/initramfs.conf) starts a bluetoothd
//! on a minimal bus for that; the keyscript never talks to it. The adapter
//! is the one BlueZ's storage pairs with the phone (the configuration's
//! `adapter` is a name, `hci0`, whose address only bluetoothd could tell).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use phonecsp_host::bluetooth::{Address, BLUEZ_STORAGE, paired_adapter};
use phonecsp_host::config::{Config, Transport};
use phonecsp_host::state::State;
use phonecsp_protocol::{CkRv, HostLink, LinkError, Reply, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::Instant;

use crate::LuksError;
use phonecsp::handset::{Handset, HandsetLink};

/// A serial line or an RFCOMM socket.
trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}
type Link = HostLink<ReadHalf<Box<dyn ByteStream>>, WriteHalf<Box<dyn ByteStream>>>;

/// What the keyscript dials for a handset, from its configured transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Serial {
        path: PathBuf,
        baud: u32,
    },
    Bluetooth {
        /// The adapter paired with the phone, or [`Address::any`] for the
        /// kernel's choice.
        local: Address,
        remote: Address,
        /// `None`: found in the phone's SDP record.
        channel: Option<u8>,
    },
}

impl Endpoint {
    /// The endpoint for `transport`; a Bluetooth phone is dialled from
    /// the adapter that BlueZ's `storage` holds its link key for.
    pub fn new(transport: Transport, storage: &Path) -> Endpoint {
        match transport {
            Transport::Serial { path, baud } => Endpoint::Serial { path, baud },
            Transport::Bluetooth {
                address, channel, ..
            } => Endpoint::Bluetooth {
                local: paired_adapter(storage, address).unwrap_or(Address::any()),
                remote: address,
                channel,
            },
        }
    }

    async fn open(&self) -> std::io::Result<Box<dyn ByteStream>> {
        match self {
            Endpoint::Serial { path, baud } => {
                let port = phonecsp_host::serial::open(path, *baud)?;
                phonecsp_host::serial::discard_input(&port);
                Ok(Box::new(port))
            }
            Endpoint::Bluetooth {
                local,
                remote,
                channel,
            } => Ok(Box::new(
                phonecsp_host::bluetooth::connect(*local, *remote, *channel).await?,
            )),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Serial { path, .. } => write!(f, "{}", path.display()),
            Endpoint::Bluetooth {
                local,
                remote,
                channel,
            } => {
                write!(f, "Bluetooth {remote}")?;
                match channel {
                    Some(c) => write!(f, " RFCOMM channel {c}")?,
                    None => write!(f, " (Serial Port Profile, channel by SDP)")?,
                }
                if *local == Address::any() {
                    write!(f, " from any adapter")
                } else {
                    write!(f, " from adapter {local}")
                }
            }
        }
    }
}

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
        let endpoint = Endpoint::new(
            hc.transport().map_err(LuksError::Host)?,
            Path::new(BLUEZ_STORAGE),
        );
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
                // Bounded: a Bluetooth page or an SDP query can take long.
                let stream = tokio::time::timeout(timeout, endpoint.open())
                    .await
                    .map_err(|_| std::io::Error::other("no connection"))??;
                let (r, w) = tokio::io::split(stream);
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
                        return Err(away(handset, format!("{endpoint}: {e}{busy}")));
                    }
                    if !said_waiting {
                        eprintln!("phonecsp: waiting for handset '{handset}' on {endpoint} ({e})");
                        said_waiting = true;
                    }
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        eprintln!("phonecsp: handset '{handset}' answered on {endpoint}");
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

#[cfg(test)]
mod tests {
    use super::*;

    const PC: &str = "00:AA:01:00:00:00";
    const PHONE: &str = "00:AA:01:01:00:01";

    fn bluetooth(channel: Option<u8>) -> Transport {
        Transport::Bluetooth {
            address: PHONE.parse().unwrap(),
            channel,
            adapter: Some("hci0".into()),
        }
    }

    #[test]
    fn a_bluetooth_phone_is_dialled_from_the_adapter_paired_with_it() {
        let storage = tempfile::tempdir().unwrap();
        let dir = storage.path().join(PC).join(PHONE);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("info"),
            "[LinkKey]\nKey=00112233445566778899AABBCCDDEEFF\n",
        )
        .unwrap();
        let e = Endpoint::new(bluetooth(Some(3)), storage.path());
        assert_eq!(
            e,
            Endpoint::Bluetooth {
                local: PC.parse().unwrap(),
                remote: PHONE.parse().unwrap(),
                channel: Some(3),
            }
        );
        assert_eq!(
            e.to_string(),
            format!("Bluetooth {PHONE} RFCOMM channel 3 from adapter {PC}")
        );
    }

    #[test]
    fn without_a_pairing_or_a_channel_the_kernel_and_sdp_choose() {
        let storage = tempfile::tempdir().unwrap();
        let e = Endpoint::new(bluetooth(None), storage.path());
        assert_eq!(
            e,
            Endpoint::Bluetooth {
                local: Address::any(),
                remote: PHONE.parse().unwrap(),
                channel: None,
            }
        );
        assert_eq!(
            e.to_string(),
            format!("Bluetooth {PHONE} (Serial Port Profile, channel by SDP) from any adapter")
        );
    }

    #[test]
    fn a_serial_line_stays_a_serial_line() {
        let t = Transport::Serial {
            path: "/dev/ttyUSB0".into(),
            baud: 115200,
        };
        let e = Endpoint::new(t, Path::new("/nonexistent"));
        assert_eq!(e.to_string(), "/dev/ttyUSB0");
    }

    /// A Bluetooth handset is dialled, not refused for want of D-Bus:
    /// with no phone in reach the connect fails as "away", naming the
    /// Bluetooth endpoint (whatever this machine's kernel lacks: the
    /// Bluetooth family, an adapter, or the phone).
    #[test]
    fn a_bluetooth_handset_out_of_reach_is_away_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("state");
        let state = State::open(&state_dir).unwrap();
        state.pin("phone", &[7; 32]).unwrap();
        let text = format!(
            "[daemon]\nstate_dir = \"{}\"\nrequest_timeout_secs = 2\n\n[[handset]]\nname = \"phone\"\nbluetooth = \"{PHONE}\"\nchannel = 3\n",
            state_dir.display()
        );
        let config = Config::parse(&text, Path::new("test.toml")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let r = rt.block_on(DirectHolder::connect(&config, "phone", Instant::now()));
        match r {
            Err(LuksError::HandsetAway { handset, reason }) => {
                assert_eq!(handset, "phone");
                assert!(
                    reason.starts_with(&format!("Bluetooth {PHONE} RFCOMM channel 3")),
                    "{reason}"
                );
            }
            Err(e) => panic!("expected the phone away, got {e}"),
            Ok(_) => panic!("a phone answered at {PHONE}"),
        }
    }
}
