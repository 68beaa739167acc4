//! Opening a handset's transport: a serial line (tokio-serial; also a pty
//! or `/dev/rfcommN`) or a Bluetooth RFCOMM socket (bluer), dialled by
//! channel or found through the Serial Port Profile's SDP record.

use crate::config::Transport;
use crate::link::{BoxStream, Connector};
use crate::sdp;
use std::sync::Arc;
use std::time::Duration;

/// The Serial Port Profile UUID (0x1101).
pub const SPP_UUID: bluer::Uuid = bluer::Uuid::from_u128(0x00001101_0000_1000_8000_00805f9b34fb);

/// Each SDP round trip; the whole connect is bounded by the link's timeout.
const SDP_TIMEOUT: Duration = Duration::from_secs(10);

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// What a failed Bluetooth authentication usually means, and what to do.
fn auth_failed(detail: &str) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!(
            "Bluetooth authentication failed ({detail}): the phone or this computer may have \
             forgotten their Bluetooth pairing; pair them again in the Bluetooth settings"
        ),
    )
}

/// An RFCOMM connect refused with EACCES: the kernel's answer when the
/// link key one side still holds no longer works for the other.
fn rfcomm_connect_error(e: std::io::Error) -> std::io::Error {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        auth_failed("Permission denied")
    } else {
        e
    }
}

pub fn connector(t: &Transport) -> Connector {
    let t = t.clone();
    Arc::new(move || {
        let t = t.clone();
        Box::pin(async move { open(&t).await })
    })
}

pub async fn open(t: &Transport) -> std::io::Result<BoxStream> {
    match t {
        Transport::Serial { path, baud } => Ok(Box::new(phonecsp_host::serial::open(path, *baud)?)),
        Transport::Bluetooth {
            address,
            channel,
            adapter,
        } => {
            let session = bluer::Session::new().await.map_err(io_err)?;
            let adapter = match adapter {
                Some(a) => session.adapter(a).map_err(io_err)?,
                None => session.default_adapter().await.map_err(io_err)?,
            };
            let local = adapter.address().await.map_err(io_err)?;
            let ch = match channel {
                Some(ch) => *ch,
                // Our own SDP query, not BlueZ's ConnectProfile: that needs
                // the SPP UUID to ourselves in bluetoothd (any other SPP user
                // on this computer takes it) and the device known to BlueZ.
                None => sdp::rfcomm_channel(local, *address, SPP_UUID, SDP_TIMEOUT).await?,
            };
            let socket = bluer::rfcomm::Socket::new()?;
            socket.bind(bluer::rfcomm::SocketAddr::new(local, 0))?;
            let stream = socket
                .connect(bluer::rfcomm::SocketAddr::new(*address, ch))
                .await
                .map_err(rfcomm_connect_error)?;
            Ok(Box::new(stream))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn a_refused_authentication_says_to_pair_again() {
        let e = rfcomm_connect_error(Error::from_raw_os_error(nix::libc::EACCES));
        assert_eq!(e.kind(), ErrorKind::PermissionDenied);
        let text = e.to_string();
        assert!(
            text.starts_with("Bluetooth authentication failed (Permission denied)"),
            "{text}"
        );
        assert!(text.contains("pair them again"), "{text}");
    }

    #[test]
    fn other_connect_errors_are_left_alone() {
        let e = rfcomm_connect_error(Error::from_raw_os_error(nix::libc::EHOSTDOWN));
        assert_eq!(e.raw_os_error(), Some(nix::libc::EHOSTDOWN));
        assert!(!e.to_string().contains("pair"));
    }
}
