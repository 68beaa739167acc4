//! Opening a handset's transport: a serial line (tokio-serial; also a pty
//! or `/dev/rfcommN`) or a Bluetooth RFCOMM socket (bluer), dialled by
//! channel or found through the Serial Port Profile's SDP record.

use crate::config::Transport;
use crate::link::{BoxStream, Connector};
use std::sync::Arc;

/// The Serial Port Profile UUID (0x1101).
pub const SPP_UUID: bluer::Uuid = bluer::Uuid::from_u128(0x00001101_0000_1000_8000_00805f9b34fb);

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

/// The same for BlueZ's profile connection.
fn profile_connect_error(e: bluer::Error) -> std::io::Error {
    use bluer::ErrorKind as K;
    match e.kind {
        K::AuthenticationFailed | K::AuthenticationRejected => auth_failed(&e.to_string()),
        _ => io_err(e),
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
            match channel {
                Some(ch) => {
                    let local = adapter.address().await.map_err(io_err)?;
                    let socket = bluer::rfcomm::Socket::new()?;
                    socket.bind(bluer::rfcomm::SocketAddr::new(local, 0))?;
                    let stream = socket
                        .connect(bluer::rfcomm::SocketAddr::new(*address, *ch))
                        .await
                        .map_err(rfcomm_connect_error)?;
                    Ok(Box::new(stream))
                }
                None => connect_spp(&session, &adapter, *address).await,
            }
        }
    }
}

/// Lets BlueZ find the handset's SPP channel by SDP and hand us the socket.
async fn connect_spp(
    session: &bluer::Session,
    adapter: &bluer::Adapter,
    address: bluer::Address,
) -> std::io::Result<BoxStream> {
    use futures_util::StreamExt;
    let profile = bluer::rfcomm::Profile {
        uuid: SPP_UUID,
        role: Some(bluer::rfcomm::Role::Client),
        require_authentication: Some(false),
        require_authorization: Some(false),
        auto_connect: Some(false),
        ..Default::default()
    };
    let mut handle = session.register_profile(profile).await.map_err(io_err)?;
    let device = adapter.device(address).map_err(io_err)?;
    let connect = device.connect_profile(&SPP_UUID);
    let accept = async {
        while let Some(req) = handle.next().await {
            if req.device() == address {
                return req.accept().map_err(io_err);
            }
            req.reject(bluer::rfcomm::ReqError::Rejected);
        }
        Err(io_err("BlueZ closed the profile"))
    };
    let (c, stream) = tokio::join!(connect, accept);
    c.map_err(profile_connect_error)?;
    Ok(Box::new(stream?))
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

        let e = profile_connect_error(bluer::Error {
            kind: bluer::ErrorKind::AuthenticationFailed,
            message: "Authentication Failed".into(),
        });
        assert!(e.to_string().contains("pair them again"), "{e}");
    }

    #[test]
    fn other_connect_errors_are_left_alone() {
        let e = rfcomm_connect_error(Error::from_raw_os_error(nix::libc::EHOSTDOWN));
        assert_eq!(e.raw_os_error(), Some(nix::libc::EHOSTDOWN));
        assert!(!e.to_string().contains("pair"));
        let e = profile_connect_error(bluer::Error {
            kind: bluer::ErrorKind::ConnectionAttemptFailed,
            message: "Page Timeout".into(),
        });
        assert!(!e.to_string().contains("pair"), "{e}");
    }
}
