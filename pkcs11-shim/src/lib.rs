//! The PKCS#11 module `libphonecsp_pkcs11.so`. Built out in the PKCS#11
//! module issue; this crate holds its place in the workspace until then and
//! exports no symbols yet.
