//! LUKS disks unlocked by the handset.
//!
//! A disk gets a keyslot of its own whose passphrase is a fresh random
//! secret made on this computer ([`new_secret`]). The secret is wrapped
//! (RSA-OAEP with SHA-256) to the public key of a key pair in one of the
//! handset's containers, and the wrapped secret ([`WrappedKey`]) is kept in
//! the LUKS2 header as a token of type `phonecsp`, or in a file (LUKS1,
//! detached headers). Only the handset can unwrap it, after its PIN; the
//! secret exists in the clear only while the disk is being opened.
//!
//! - [`enroll`] adds the keyslot and the token. Existing keyslots are never
//!   touched; the secret reaches `cryptsetup` through a pipe, never a file.
//! - [`unwrap`] asks a [`KeyHolder`] (the daemon over D-Bus, the direct
//!   link of [`crate::direct`], or the daemon's own link for its key
//!   sockets) to unwrap, checking first that the holder's key is the one
//!   the disk was enrolled with and logging in with a PIN from a
//!   [`PinSource`].
//! - [`rewrap`] moves the secret to another container or a recovery public
//!   key through the handset's re-wrap command: it never exists in the
//!   clear on this computer.
//!
//! The secret is 48 random bytes written as 64 characters of base64, so
//! that it survives every path a passphrase takes (shell variables, pipes,
//! `askpass`), none of which all carry NUL or newline bytes.
//!
//! [`keyscript`] is crypttab's `keyscript=` contract and [`direct`] the
//! handset's serial link opened without the daemon, for an initramfs.

pub mod direct;
pub mod keyscript;

mod cryptsetup;
mod enrol;
mod error;
mod holder;
mod rewrap;
mod secret;
#[cfg(test)]
mod tests;
mod token;

pub use cryptsetup::*;
pub use enrol::*;
pub use error::*;
pub use holder::*;
pub use rewrap::*;
pub use secret::*;
pub use token::*;
