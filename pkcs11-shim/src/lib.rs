//! `libphonecsp_pkcs11.so`: a PKCS#11 (2.40 and 3.0) module whose tokens
//! are the containers of the handsets the phonecsp daemon serves. It talks
//! to `phonecspd` over D-Bus (`PHONECSP_BUS`, default the system bus)
//! through the blocking client, hashes, verifies and encrypts in the calling
//! process, and sends the handset only digests and ciphertexts.
//!
//! Layout: [`ffi`] is the C boundary (all `unsafe` code); `module` the
//! slots, sessions, logins and operations, run against a `backend` (the
//! daemon over D-Bus, or a fake in the unit tests); `operations` one
//! session's operation state; `registry` the object handles;
//! `slot_id` the slot IDs; `session_objects` the objects kept for the
//! application; `symmetric`
//! the bulk ciphers of session secret keys; `objects` the attributes; `mechanisms` the mechanism table; `error` the module's own
//! failures, whose `CK_RV` mapping defers to the client library's;
//! `journal` why there are no slots, told to the system journal.

mod backend;
mod error;
pub mod ffi;
mod journal;
mod mechanisms;
mod module;
mod objects;
mod operations;
mod registry;
mod session_objects;
mod slot_id;
mod symmetric;
mod token_filter;

pub use error::Error;
