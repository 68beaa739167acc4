//! Client library of the phonecsp D-Bus CryptoProvider: the D-Bus proxy,
//! async and blocking clients, the shared error type and bus structures,
//! mechanism resolution, the one "prepare the input" step and the
//! computer-side crypto, and the typed call layer to a handset link.
//!
//! Everything that links this crate (the PKCS#11 module above all) gets
//! only that: the command line and the LUKS disk unlock are crates of
//! their own (`phonecsp-cli`, `phonecsp-luks`).

pub mod error;
pub mod handset;
pub mod hash;
pub mod input;
pub mod local;
pub mod mechanism;
pub mod named;
pub mod objects;
pub mod types;

pub use error::{Error, Result};
pub use types::*;

pub use types::{BUS_NAME, INTERFACE, OBJECT_PATH};

mod calls;

pub mod blocking;
pub mod client;
pub mod proxy;

pub use client::{Bus, Client, ClientOptions};
