//! phonecspd: owns each handset link ([`link`], over a [`transport`]),
//! keeps its own key and the pinned handset keys ([`state`]), reads its
//! [`config`], and serves the `org.phonecsp.CryptoProvider1` D-Bus API
//! ([`service`]) to the callers its allow lists admit ([`access`]) and,
//! for pairing, to those polkit allows ([`polkit`]),
//! sending typed requests as each caller ([`caller_link`]) and keeping
//! who is logged in to which token ([`logins`]) and which containers each
//! handset was last seen with ([`known`]); and it serves disk keys to
//! `systemd-cryptsetup` on AF_UNIX sockets ([`keysocket`]). [`run`] puts it together for the binary and
//! the tests.

pub mod access;
pub mod agent;
pub mod caller_link;
pub mod disk_tokens;
mod interface;
pub mod keysocket;
pub mod known;
pub mod link;
pub mod logins;
pub mod objects;
pub mod polkit;
pub mod public;
pub mod run;
/// The SDP client lives in phonecsp-host, which the keyscript shares.
pub use phonecsp_host::sdp;
pub mod service;
#[cfg(test)]
mod testing;
pub mod transport;

// The configuration and state files are shared with the disk keyscript,
// which opens the link itself in an initramfs: see `phonecsp-host`.
pub use phonecsp_host::{config, state};

/// Locks `m`, poisoned or not. The daemon's tables are changed by single
/// inserts and removes, which a panic cannot leave half done, so a
/// poisoned lock is still consistent and the daemon goes on serving.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Puts `now` in `m`; returns what was there.
pub(crate) fn replace<T>(m: &std::sync::Mutex<T>, now: T) -> T {
    std::mem::replace(&mut *lock(m), now)
}
