//! phonecspd: owns each handset link ([`link`], over a [`transport`]),
//! keeps its own key and the pinned handset keys ([`state`]), reads its
//! [`config`], and serves the `org.phonecsp.CryptoProvider1` D-Bus API
//! ([`service`]), and serves disk keys to `systemd-cryptsetup` on AF_UNIX
//! sockets ([`keysocket`]). [`run`] puts it together for the binary and
//! the tests.

pub mod keysocket;
pub mod link;
pub mod run;
pub mod sdp;
pub mod service;
pub mod transport;

// The configuration and state files are shared with the disk keyscript,
// which opens the link itself in an initramfs: see `phonecsp-host`.
pub use phonecsp_host::{config, state};
