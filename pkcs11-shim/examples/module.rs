//! The module again, as an example: `cargo test` builds examples but never
//! a library's cdylib, so this is how plain `cargo test --workspace` gets
//! a fresh `libphonecsp_pkcs11.so` (in target/<profile>/examples/) for the
//! end-to-end tests to load. Its exports are the library's: a cdylib
//! exports the `#[no_mangle]` functions of the crates it links.

pub use phonecsp_pkcs11::ffi;
