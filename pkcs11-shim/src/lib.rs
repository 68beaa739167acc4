//! `libphonecsp_pkcs11.so`: a PKCS#11 (2.40 and 3.0) module whose tokens
//! are the containers of the handsets the phonecsp daemon serves. It talks
//! to `phonecspd` over D-Bus (`PHONECSP_BUS`, default the system bus)
//! through the blocking client, hashes, verifies and encrypts in the calling
//! process, and sends the handset only digests and ciphertexts.
//!
//! Layout: [`ffi`] is the C boundary (all `unsafe` code), `module` the
//! state and operations, `objects` the attributes, `mechanisms` the
//! mechanism table, `error` the one error type and its `CK_RV` mapping.

mod error;
pub mod ffi;
mod mechanisms;
mod module;
mod objects;

pub use error::Error;
