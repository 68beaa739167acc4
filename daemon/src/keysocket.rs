//! Disk keys for `systemd-cryptsetup`, on AF_UNIX sockets.
//!
//! For a volume opened after boot with no key in `/etc/crypttab`,
//! `systemd-cryptsetup` looks for `/run/cryptsetup-keys.d/<volume>.key`;
//! when that is a socket it binds its end to the abstract address
//! `\0<random>/cryptsetup/<volume>`, connects, and reads the key until EOF.
//! For each configured `[[volume]]` the daemon listens there. A peer gets
//! the key only if its address names that volume and its uid (from
//! `SO_PEERCRED`) is 0, as `systemd-cryptsetup`'s is; any other peer is
//! closed without a byte. The key is then unwrapped by the handset through
//! the daemon's own link, with the container's PIN from the volume's
//! `pin_file` (unattended machines) or asked with `systemd-ask-password`.

use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use phonecsp_luks::{
    self as luks, Cryptsetup, Device, LuksError, PinPrompt, PinSource, WrappedKey,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::caller_link::CallerLink;
use crate::config::VolumeConfig;
use crate::link::LinkState;
use crate::service::Inner;

/// The program that asks for a PIN when a volume has no `pin_file`.
pub const ASK_PASSWORD: &str = "systemd-ask-password";

/// Why a peer gets nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    NotRoot(u32),
    NoAbstractAddress,
    WrongVolume(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotRoot(uid) => write!(f, "its uid is {uid}, not 0"),
            Refusal::NoAbstractAddress => {
                f.write_str("it is not bound to an abstract address as systemd-cryptsetup is")
            }
            Refusal::WrongVolume(a) => write!(f, "its address '{a}' names another volume"),
        }
    }
}

/// Whether a peer may have `volume`'s key: root, bound to
/// `\0<random>/cryptsetup/<volume>`.
pub fn check_peer(uid: u32, abstract_name: Option<&[u8]>, volume: &str) -> Result<(), Refusal> {
    if uid != 0 {
        return Err(Refusal::NotRoot(uid));
    }
    let name = abstract_name.ok_or(Refusal::NoAbstractAddress)?;
    let shown = || String::from_utf8_lossy(name).into_owned();
    let slash = name
        .iter()
        .position(|b| *b == b'/')
        .ok_or_else(|| Refusal::WrongVolume(shown()))?;
    let (random, rest) = name.split_at(slash);
    let expected = format!("/cryptsetup/{volume}");
    if random.is_empty() || rest != expected.as_bytes() {
        return Err(Refusal::WrongVolume(shown()));
    }
    Ok(())
}

fn peer_abstract_name(stream: &UnixStream) -> Option<Vec<u8>> {
    let addr: nix::sys::socket::UnixAddr =
        nix::sys::socket::getpeername(stream.as_raw_fd()).ok()?;
    addr.as_abstract().map(<[u8]>::to_vec)
}

/// Binds one socket per volume and serves them until `shutdown`; removes
/// the sockets it made on the way out.
pub async fn serve(inner: Arc<Inner>, mut shutdown: watch::Receiver<bool>) {
    let volumes = inner.config().volumes.clone();
    if volumes.is_empty() {
        return;
    }
    let dir = inner.config().daemon.key_socket_dir.clone();
    if let Err(e) = std::fs::create_dir_all(&dir) {
        log::error!("key sockets: {}: {e}", dir.display());
        return;
    }
    let mut made = Vec::new();
    let mut tasks = Vec::new();
    for v in volumes {
        let path = dir.join(format!("{}.key", v.name));
        match bind(&path) {
            Ok(listener) => {
                log::info!(
                    "serving the key of volume '{}' on {}",
                    v.name,
                    path.display()
                );
                made.push(path);
                tasks.push(tokio::spawn(accept_loop(inner.clone(), v, listener)));
            }
            Err(e) => log::error!("volume '{}': {}: {e}", v.name, path.display()),
        }
    }
    let _ = shutdown.wait_for(|s| *s).await;
    for t in tasks {
        t.abort();
    }
    for p in made {
        let _ = std::fs::remove_file(p);
    }
}

/// A socket at `path`, replacing a stale socket but never any other file
/// (an administrator's key file stays where it is).
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::other(
                "exists and is not a socket; leaving it alone",
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

async fn accept_loop(inner: Arc<Inner>, volume: VolumeConfig, listener: UnixListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                log::warn!("volume '{}': accept: {e}", volume.name);
                continue;
            }
        };
        let inner = inner.clone();
        let volume = volume.clone();
        tokio::spawn(async move { handle(inner, &volume, stream).await });
    }
}

async fn handle(inner: Arc<Inner>, volume: &VolumeConfig, mut stream: UnixStream) {
    let uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            log::warn!("volume '{}': no peer credentials: {e}", volume.name);
            return;
        }
    };
    let name = peer_abstract_name(&stream);
    if let Err(r) = check_peer(uid, name.as_deref(), &volume.name) {
        log::warn!("volume '{}': refused a peer: {r}", volume.name);
        return;
    }
    match key_for(&inner, volume).await {
        Ok(key) => {
            let r = async {
                stream.write_all(&key).await?;
                stream.shutdown().await
            };
            match r.await {
                Ok(()) => log::info!(
                    "volume '{}': served the key unwrapped by the handset",
                    volume.name
                ),
                Err(e) => log::warn!("volume '{}': sending the key: {e}", volume.name),
            }
        }
        Err(e) => log::warn!("volume '{}': no key: {e}", volume.name),
    }
}

/// The volume's wrapped key, from its file or its LUKS2 header.
async fn wrapped_key(volume: &VolumeConfig) -> Result<WrappedKey, LuksError> {
    if let Some(f) = &volume.wrapped {
        return luks::read_wrapped_file(f);
    }
    let device = Device {
        path: volume.device.clone().unwrap_or_default(),
        header: volume.header.clone(),
    };
    let at = device.metadata_path().to_owned();
    let want = volume.token_id;
    let tokens = tokio::task::spawn_blocking(move || Cryptsetup::from_env().tokens(&device))
        .await
        .map_err(|e| LuksError::Usage(e.to_string()))??;
    tokens
        .into_iter()
        .filter(|(id, _)| want.is_none_or(|w| w == *id))
        .find_map(|(_, w)| w.ok().filter(|w| w.target().is_some()))
        .ok_or(match want {
            Some(id) => LuksError::NoSuchToken { device: at, id },
            None => LuksError::NoToken(at),
        })
}

async fn key_for(inner: &Inner, volume: &VolumeConfig) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let w = wrapped_key(volume).await?;
    let t = w
        .target()
        .ok_or_else(|| LuksError::Usage("the key is wrapped to a recovery key".into()))?;
    let link = inner
        .links()
        .get(&t.handset)
        .ok_or_else(|| LuksError::HandsetNotConfigured(t.handset.clone()))?;
    let generation = match link.state() {
        LinkState::Connected { generation } => generation,
        other => {
            return Err(LuksError::HandsetAway {
                handset: t.handset.clone(),
                reason: format!("{other:?}"),
            });
        }
    };
    let caller = format!("keysocket:{}", volume.name);
    let logins = inner.logins();
    let mut holder = CallerLink::new(link.clone(), &caller, Some(&t.container), logins.clone());
    let mut pins = VolumePin {
        volume: volume.name.clone(),
        file: volume.pin_file.clone(),
    };
    // The unwrap may use a login a D-Bus caller made: hold the container
    // so that nobody's logout ends it half-way.
    let hold = logins.hold(&t.handset, &t.container);
    let r = luks::unwrap(&mut holder, &w, &mut pins).await;
    logins.remove(&caller, &t.handset, &t.container);
    drop(hold);
    // Log out unless a D-Bus caller is logged in to the container too.
    inner
        .logout_if_unused(&t.handset, &t.container, generation)
        .await;
    r
}

/// A volume's PIN: its `pin_file`, else `systemd-ask-password`.
struct VolumePin {
    volume: String,
    file: Option<PathBuf>,
}

/// Reads a PIN file that only its owner (root or the daemon's user) can
/// read; anything looser is refused rather than used.
pub fn read_pin_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, LuksError> {
    let shown = path.display().to_string();
    let m = std::fs::metadata(path).map_err(|source| LuksError::Io {
        what: shown.clone(),
        source,
    })?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.is_file() || m.mode() & 0o077 != 0 || (m.uid() != 0 && m.uid() != me) {
        return Err(LuksError::NoPin(format!(
            "{shown} must be a file owned by root or the daemon's user, readable by nobody else (chmod 600)"
        )));
    }
    let mut pin = Zeroizing::new(std::fs::read(path).map_err(|source| LuksError::Io {
        what: shown.clone(),
        source,
    })?);
    while matches!(pin.last(), Some(b'\n' | b'\r')) {
        pin.pop();
    }
    if pin.is_empty() {
        return Err(LuksError::NoPin(format!("{shown} is empty")));
    }
    Ok(pin)
}

impl PinSource for VolumePin {
    async fn pin(&mut self, p: &PinPrompt) -> Result<Zeroizing<Vec<u8>>, LuksError> {
        if let Some(f) = &self.file {
            return read_pin_file(f);
        }
        let prompt = format!(
            "Please enter the PIN of {}/{} to unlock {} ({} tries left):",
            p.handset, p.container, self.volume, p.retries_left
        );
        let out = tokio::process::Command::new(ASK_PASSWORD)
            .arg("--no-tty")
            .arg(format!("--id=phonecsp:{}", self.volume))
            .arg("--timeout=120")
            .arg(prompt)
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| LuksError::NoPin(format!("{ASK_PASSWORD}: {e}")))?;
        if !out.status.success() {
            return Err(LuksError::NoPin(format!("{ASK_PASSWORD} {}", out.status)));
        }
        let mut pin = Zeroizing::new(out.stdout);
        while matches!(pin.last(), Some(b'\n' | b'\r')) {
            pin.pop();
        }
        Ok(pin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_bound_to_the_volume_gets_the_key() {
        let ok = b"3f2a9c01d4e5b6a7/cryptsetup/data";
        assert_eq!(check_peer(0, Some(ok), "data"), Ok(()));
        assert_eq!(
            check_peer(1000, Some(ok), "data"),
            Err(Refusal::NotRoot(1000))
        );
        assert_eq!(check_peer(0, None, "data"), Err(Refusal::NoAbstractAddress));
        for bad in [
            &b"3f2a/cryptsetup/other"[..],
            b"3f2a/cryptsetup/data/x",
            b"/cryptsetup/data",
            b"3f2a/cryptsetup/dat",
            b"3f2a/cryptsetupx/data",
            b"nothing",
        ] {
            assert!(
                matches!(
                    check_peer(0, Some(bad), "data"),
                    Err(Refusal::WrongVolume(_))
                ),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pin_files_must_be_private() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pin");
        std::fs::write(&p, b"123456\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_pin_file(&p), Err(LuksError::NoPin(_))));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_pin_file(&p).unwrap().as_slice(), b"123456");
        assert!(read_pin_file(&d.path().join("missing")).is_err());
    }
}
