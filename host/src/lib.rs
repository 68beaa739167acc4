//! What the computer side of phonecsp keeps on disk, shared by the daemon
//! (`phonecspd`) and the disk keyscript (`phonecsp-keyscript`), which in
//! an initramfs opens the handset's link itself with the daemon's identity:
//! the [`config`] file `/etc/phonecsp/phonecspd.toml`, the [`state`]
//! directory `/var/lib/phonecsp` (the Noise key and pinned handset keys),
//! and opening a [`serial`] line or a [`bluetooth`] RFCOMM link (with the
//! [`sdp`] client that finds its channel).
//!
//! A crate of its own because the keyscript lives in the client library's
//! package, which the daemon depends on: the daemon's own library cannot be
//! a dependency of the client library without a cycle.

pub mod bluetooth;
pub mod config;
pub mod sdp;
pub mod serial;
pub mod state;
