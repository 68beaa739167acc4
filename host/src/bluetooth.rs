//! Dialling a handset over Bluetooth with the kernel's own sockets: its
//! RFCOMM channel (configured, or found by [`crate::sdp`]) and the RFCOMM
//! connect. No D-Bus is involved, so the daemon (which finds its adapter's
//! address through bluetoothd) and the disk keyscript in an initramfs
//! (which has no daemon, and finds the adapter from BlueZ's pairing data)
//! share it.
//!
//! The link key that encrypts the connection is the kernel's business: it
//! asks bluetoothd's management socket for none, since bluetoothd loaded
//! every stored key into the kernel when it powered the adapter. So a
//! bluetoothd must have run (and loaded the phone's key) on this adapter,
//! or the connect fails authentication.

use std::io;
use std::path::Path;
use std::time::Duration;

pub use bluer::Address;

use crate::sdp;

/// The Serial Port Profile UUID (0x1101).
pub const SPP_UUID: bluer::Uuid = bluer::Uuid::from_u128(0x00001101_0000_1000_8000_00805f9b34fb);

/// Each SDP round trip; the whole connect is bounded by the caller.
pub const SDP_TIMEOUT: Duration = Duration::from_secs(10);

/// Where bluetoothd keeps its adapters' pairing data:
/// `<adapter address>/<device address>/info`.
pub const BLUEZ_STORAGE: &str = "/var/lib/bluetooth";

/// What a failed Bluetooth authentication usually means, and what to do.
fn auth_failed(detail: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "Bluetooth authentication failed ({detail}): the phone or this computer may have \
             forgotten their Bluetooth pairing; pair them again in the Bluetooth settings"
        ),
    )
}

/// An RFCOMM connect refused with EACCES: the kernel's answer when the
/// link key one side still holds no longer works for the other.
pub fn rfcomm_connect_error(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::PermissionDenied {
        auth_failed("Permission denied")
    } else {
        e
    }
}

/// Connects from adapter address `local` ([`Address::any`]: the kernel
/// chooses the adapter) to the handset's RFCOMM `channel`, or, with none,
/// to the channel its Serial Port Profile SDP record names.
pub async fn connect(
    local: Address,
    remote: Address,
    channel: Option<u8>,
) -> io::Result<bluer::rfcomm::Stream> {
    let ch = match channel {
        Some(ch) => ch,
        // Our own SDP query, not BlueZ's ConnectProfile: that needs the
        // SPP UUID to ourselves in bluetoothd (any other SPP user on this
        // computer takes it) and the device known to BlueZ.
        None => sdp::rfcomm_channel(local, remote, SPP_UUID, SDP_TIMEOUT).await?,
    };
    let socket = bluer::rfcomm::Socket::new()?;
    socket.bind(bluer::rfcomm::SocketAddr::new(local, 0))?;
    socket
        .connect(bluer::rfcomm::SocketAddr::new(remote, ch))
        .await
        .map_err(rfcomm_connect_error)
}

/// The adapter that is paired with `phone`, from bluetoothd's storage
/// (`storage/<adapter>/<phone>/info` with a `[LinkKey]`), for a caller
/// without D-Bus: the link key is what makes a connection work, so that
/// is the adapter to dial from. `None` when no adapter, or more than one,
/// holds a key for it (the caller lets the kernel choose then).
pub fn paired_adapter(storage: &Path, phone: Address) -> Option<Address> {
    let phone_dir = phone.to_string(); // upper case, as bluetoothd names it
    let mut found = None;
    for entry in std::fs::read_dir(storage).ok()?.flatten() {
        let Some(adapter) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<Address>().ok())
        else {
            continue;
        };
        let info = entry.path().join(&phone_dir).join("info");
        let Ok(text) = std::fs::read_to_string(&info) else {
            continue;
        };
        if !text.lines().any(|l| l.trim() == "[LinkKey]") {
            continue;
        }
        if found.replace(adapter).is_some() {
            return None;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use io::{Error, ErrorKind};

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

    const PC: &str = "00:AA:01:00:00:00";
    const PHONE: &str = "00:AA:01:01:00:01";

    fn info(storage: &Path, adapter: &str, device: &str, text: &str) {
        let dir = storage.join(adapter).join(device);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("info"), text).unwrap();
    }

    const WITH_KEY: &str = "[General]\nName=phone\n\n[LinkKey]\nKey=00112233445566778899AABBCCDDEEFF\nType=4\nPINLength=0\n";

    #[test]
    fn the_adapter_with_the_phones_link_key_is_found() {
        let d = tempfile::tempdir().unwrap();
        info(d.path(), PC, PHONE, WITH_KEY);
        // Another adapter that only saw the phone (no key), and a stray file.
        info(
            d.path(),
            "00:AA:01:02:00:02",
            PHONE,
            "[General]\nName=phone\n",
        );
        std::fs::write(d.path().join("cache"), "").unwrap();
        assert_eq!(
            paired_adapter(d.path(), PHONE.parse().unwrap()),
            Some(PC.parse().unwrap())
        );
    }

    #[test]
    fn no_pairing_or_two_pairings_leave_the_choice_to_the_kernel() {
        let d = tempfile::tempdir().unwrap();
        let phone: Address = PHONE.parse().unwrap();
        assert_eq!(paired_adapter(&d.path().join("missing"), phone), None);
        assert_eq!(paired_adapter(d.path(), phone), None);
        info(d.path(), PC, PHONE, WITH_KEY);
        info(d.path(), "00:AA:01:02:00:02", PHONE, WITH_KEY);
        assert_eq!(paired_adapter(d.path(), phone), None);
    }

    #[test]
    fn another_devices_key_is_not_the_phones() {
        let d = tempfile::tempdir().unwrap();
        info(d.path(), PC, "11:22:33:44:55:66", WITH_KEY);
        assert_eq!(paired_adapter(d.path(), PHONE.parse().unwrap()), None);
    }
}
