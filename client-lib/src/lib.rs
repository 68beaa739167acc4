//! Client library of the phonecsp D-Bus CryptoProvider: the shared error
//! type and wire structures, mechanism resolution and the computer-side
//! crypto, and async and blocking clients; LUKS disk unlock ([`luks`],
//! [`keyscript`], [`direct`]).

pub mod error;
pub mod handset;
pub mod hash;
pub mod input;
pub mod local;
pub mod mechanism;
pub mod types;

pub use error::{Error, Result};
pub use types::*;

/// Well-known bus name, object path and interface.
pub const BUS_NAME: &str = "org.phonecsp.CryptoProvider1";
pub const OBJECT_PATH: &str = "/org/phonecsp/CryptoProvider1";
pub const INTERFACE: &str = "org.phonecsp.CryptoProvider1";

pub mod blocking;
pub mod client;
pub mod direct;
pub mod keyscript;
pub mod luks;
pub mod proxy;
pub mod selfsign;

pub use client::{Bus, Client, ClientOptions};
