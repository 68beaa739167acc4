//! Runs the handset on a transport: a serial device, a fresh pty (for
//! tests and the demo), stdin/stdout, or a Bluetooth RFCOMM Serial Port
//! Profile registered with BlueZ. Every transport is a byte stream driven
//! by the same [`Responder`]; one host is served at a time.

use crate::manager::Manager;
use nix::sys::termios::{self, BaudRate, SetArg};
use phonecsp_protocol::Responder;
use phonecsp_protocol::at::DEFAULT_MAX_LINE;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The Serial Port Profile UUID (0x1101).
pub const SPP_UUID: bluer::Uuid = bluer::Uuid::from_u128(0x00001101_0000_1000_8000_00805f9b34fb);
/// The RFCOMM channel the handset listens on unless told otherwise.
pub const DEFAULT_RFCOMM_CHANNEL: u16 = 3;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("{path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("terminal setup: {0}")]
    Termios(#[from] nix::Error),
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("Bluetooth: {0}")]
    Bluetooth(#[from] bluer::Error),
    #[error("unsupported baud rate {0}")]
    Baud(u32),
}

pub fn implementation() -> String {
    format!("phonecsp-handset/{}", env!("CARGO_PKG_VERSION"))
}

/// How long the line may be silent in the middle of a binary frame.
const FRAME_SILENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one byte stream until it closes. The session (and its logins)
/// ends with it.
pub async fn serve_stream<S>(
    manager: &mut Manager,
    stream: S,
    max_line: usize,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    serve_stream_watched(manager, stream, max_line, |_| {}).await
}

/// [`serve_stream`], calling `after` with the manager after each piece of
/// input is answered (RFCOMM watches there for a pairing that used the
/// offer, while the computer keeps the link open).
pub async fn serve_stream_watched<S, F>(
    manager: &mut Manager,
    stream: S,
    max_line: usize,
    mut after: F,
) -> Result<(), ServeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnMut(&Manager),
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut responder = Responder::new(max_line, &implementation());
    let mut buf = vec![0u8; 4096];
    let result = loop {
        let read = rd.read(&mut buf);
        let read = if responder.frame_pending() {
            // A binary frame cut short is dropped after a silence
            // (docs/protocol.md section 6.7).
            match tokio::time::timeout(FRAME_SILENCE, read).await {
                Ok(r) => r,
                Err(_) => {
                    responder.quiet(manager);
                    continue;
                }
            }
        } else {
            read.await
        };
        let n = match read {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            // A pty master reads EIO once every slave has closed.
            Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        let out = responder.receive(manager, &buf[..n]);
        after(manager);
        if !out.is_empty() {
            if let Err(e) = wr.write_all(&out).await {
                break Err(e.into());
            }
            if let Err(e) = wr.flush().await {
                break Err(e.into());
            }
        }
    };
    responder.disconnected(manager);
    result
}

/// Puts a terminal in raw mode (no echo, no line discipline), at `baud` if given.
pub fn make_raw<Fd: AsFd>(fd: Fd, baud: Option<u32>) -> Result<(), ServeError> {
    let mut t = termios::tcgetattr(&fd)?;
    termios::cfmakeraw(&mut t);
    if let Some(b) = baud {
        termios::cfsetspeed(&mut t, baud_rate(b)?)?;
    }
    termios::tcsetattr(&fd, SetArg::TCSANOW, &t)?;
    Ok(())
}

pub fn baud_rate(b: u32) -> Result<BaudRate, ServeError> {
    Ok(match b {
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        other => return Err(ServeError::Baud(other)),
    })
}

/// A pty pair whose slave a host can open as if it were a serial line.
pub struct Pty {
    pub master: OwnedFd,
    /// Kept open so the master does not see EOF between host connections.
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

/// Opens a raw pty pair.
pub fn open_pty() -> Result<Pty, ServeError> {
    let pair = nix::pty::openpty(None, None)?;
    make_raw(&pair.master, None)?;
    make_raw(&pair.slave, None)?;
    let slave_path = nix::unistd::ttyname(&pair.slave)?;
    Ok(Pty {
        master: pair.master,
        slave: pair.slave,
        slave_path,
    })
}

/// Serves a pty master forever: a host may close the slave and come back.
pub async fn serve_pty(
    manager: &mut Manager,
    pty: &Pty,
    max_line: usize,
) -> Result<(), ServeError> {
    loop {
        let fd = pty.master.try_clone()?;
        let file = tokio::fs::File::from_std(std::fs::File::from(fd));
        serve_stream(manager, file, max_line).await?;
        // EIO: no slave open besides ours; poll until a host opens it again.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Serves a serial device (raw mode at `baud`) until it fails.
pub async fn serve_serial(
    manager: &mut Manager,
    path: &Path,
    baud: u32,
    max_line: usize,
) -> Result<(), ServeError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| ServeError::Open {
            path: path.to_owned(),
            source,
        })?;
    make_raw(&file, Some(baud))?;
    serve_stream(manager, tokio::fs::File::from_std(file), max_line).await
}

/// Serves stdin/stdout once.
pub async fn serve_stdio(manager: &mut Manager, max_line: usize) -> Result<(), ServeError> {
    let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    serve_stream(manager, stream, max_line).await
}

/// The profile the handset registers: SPP on a fixed channel, so the
/// computer can connect by channel or find it by SDP.
pub fn rfcomm_profile(channel: u16) -> bluer::rfcomm::Profile {
    bluer::rfcomm::Profile {
        uuid: SPP_UUID,
        name: Some("phonecsp handset".into()),
        role: Some(bluer::rfcomm::Role::Server),
        channel: Some(channel),
        // Bluetooth pairing is not relied on: Noise authenticates both ends.
        require_authentication: Some(false),
        require_authorization: Some(false),
        ..Default::default()
    }
}

/// How long the adapter stays discoverable and pairable for a pairing
/// offer unless told otherwise: BlueZ itself ends both after it.
pub const DEFAULT_DISCOVERABLE_SECS: u32 = 180;

/// Whether a pairing code is on offer in the handset's store.
fn pairing_on_offer(manager: &Manager) -> bool {
    match manager.store().load_hosts() {
        Ok(hosts) => hosts.pairing.is_some(),
        Err(e) => {
            log::warn!("could not read the paired hosts: {e}");
            false
        }
    }
}

/// Makes the adapter discoverable and pairable (for `secs`, after which
/// BlueZ turns both off) while a pairing code is on offer, and neither
/// once it is not: a phone is visible to the computers around it only
/// while its owner is pairing one.
async fn offer_visibility(adapter: &bluer::Adapter, offer: bool, secs: u32) -> bluer::Result<()> {
    if offer {
        adapter.set_pairable_timeout(secs).await?;
        adapter.set_pairable(true).await?;
        adapter.set_discoverable_timeout(secs).await?;
        adapter.set_discoverable(true).await?;
        log::info!("pairing on offer: discoverable and pairable for {secs} s");
    } else if adapter.is_discoverable().await? || adapter.is_pairable().await? {
        adapter.set_discoverable(false).await?;
        adapter.set_pairable(false).await?;
        log::info!("no pairing on offer: not discoverable, not pairable");
    }
    Ok(())
}

/// Registers the SPP profile with BlueZ on `adapter` (or the default one),
/// powers it (BlueZ then keeps it connectable), makes it discoverable and
/// pairable for `discoverable_secs` while a pairing code is on offer, and
/// serves each incoming RFCOMM connection in turn, turning discoverable off
/// once a connection has used the offer.
pub async fn serve_rfcomm(
    manager: &mut Manager,
    adapter: Option<&str>,
    channel: u16,
    max_line: usize,
    discoverable_secs: u32,
) -> Result<(), ServeError> {
    use futures_util::StreamExt;
    let session = bluer::Session::new().await?;
    let adapter = match adapter {
        Some(name) => session.adapter(name)?,
        None => session.default_adapter().await?,
    };
    adapter.set_powered(true).await?;
    let mut handle = session.register_profile(rfcomm_profile(channel)).await?;
    log::info!(
        "serving RFCOMM channel {channel} (SPP) on {} ({})",
        adapter.name(),
        adapter.address().await?
    );
    // The adapter's visibility follows the offer; its D-Bus calls are made
    // by a task of their own, so that they never wait on the link.
    let offer = pairing_on_offer(manager);
    offer_visibility(&adapter, offer, discoverable_secs).await?;
    let (offered, mut changes) = tokio::sync::watch::channel(offer);
    let visibility = adapter.clone();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let offer = *changes.borrow_and_update();
            if let Err(e) = offer_visibility(&visibility, offer, discoverable_secs).await {
                log::warn!("could not change the adapter's visibility: {e}");
            }
        }
    });
    // While an offer is on, each answered command may have used it.
    let mut watch = |m: &Manager| {
        if *offered.borrow() && !pairing_on_offer(m) {
            offered.send_replace(false);
        }
    };
    while let Some(req) = handle.next().await {
        let peer = req.device();
        match req.accept() {
            Ok(stream) => {
                log::info!("RFCOMM connection from {peer}");
                if let Err(e) = serve_stream_watched(manager, stream, max_line, &mut watch).await {
                    log::warn!("connection from {peer} ended: {e}");
                }
            }
            Err(e) => log::warn!("could not accept {peer}: {e}"),
        }
        // The owner may have made a new offer meanwhile.
        let now = pairing_on_offer(manager);
        offered.send_if_modified(|o| std::mem::replace(o, now) != now);
    }
    Ok(())
}

pub const DEFAULT_LINE: usize = DEFAULT_MAX_LINE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spp_profile_is_a_server_on_the_channel() {
        let p = rfcomm_profile(7);
        assert_eq!(p.uuid.to_string(), "00001101-0000-1000-8000-00805f9b34fb");
        assert_eq!(p.channel, Some(7));
        assert_eq!(p.role, Some(bluer::rfcomm::Role::Server));
        assert_eq!(p.require_authentication, Some(false));
    }

    #[test]
    fn baud_rates() {
        assert!(baud_rate(115200).is_ok());
        assert!(baud_rate(12345).is_err());
    }

    #[test]
    fn pty_is_raw_and_has_a_path() {
        let pty = open_pty().unwrap();
        assert!(pty.slave_path.starts_with("/dev/pts"));
        let t = termios::tcgetattr(&pty.slave).unwrap();
        assert!(!t.local_flags.contains(termios::LocalFlags::ECHO));
        assert!(!t.local_flags.contains(termios::LocalFlags::ICANON));
    }
}
