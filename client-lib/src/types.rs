//! The structures that cross the bus, with the signatures
//! `dbus/org.phonecsp.CryptoProvider1.xml` gives them.

use serde::{Deserialize, Serialize};
use zbus::Type;

/// Well-known bus name, object path and interface.
pub const BUS_NAME: &str = "org.phonecsp.CryptoProvider1";
pub const OBJECT_PATH: &str = "/org/phonecsp/CryptoProvider1";
pub const INTERFACE: &str = "org.phonecsp.CryptoProvider1";

/// `(sssb)`: a configured handset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct HandsetStatus {
    pub name: String,
    /// `serial:/dev/ttyACM0@115200` or `bluetooth:AA:BB:..#3`.
    pub transport: String,
    /// Fingerprint of the pinned key; empty before pairing.
    pub fingerprint: String,
    pub connected: bool,
}

/// `(ssu)`: a token the caller may use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TokenEntry {
    pub handset: String,
    pub token: String,
    /// `phonecsp_protocol::message::token_flags`.
    pub flags: u32,
}

/// `(sssuuuubu)`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct TokenDetails {
    pub handset: String,
    pub token: String,
    pub serial: String,
    pub flags: u32,
    pub retries_left: u32,
    pub min_pin: u32,
    pub max_pin: u32,
    /// Whether this caller is logged in.
    pub logged_in: bool,
    /// Wrong PUKs left before the PUK locks for good; 0 without a PUK
    /// (`token_flags::PUK_SET` clear).
    pub puk_retries_left: u32,
}

/// `(uays)`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct ObjectInfo {
    /// `CKO_CERTIFICATE` 1, `CKO_PUBLIC_KEY` 2, `CKO_PRIVATE_KEY` 3.
    pub class: u32,
    pub id: Vec<u8>,
    pub label: String,
}

/// `(uuay)`: mechanism parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct MechanismParams {
    /// `CKM_SHA*` for PSS and OAEP; 0 for the mechanism's default.
    pub hash: u32,
    /// PSS salt length in bytes.
    pub salt_len: u32,
    /// OAEP label.
    pub label: Vec<u8>,
}

/// `(ayayay)`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct KeyPairInfo {
    pub id: Vec<u8>,
    pub modulus: Vec<u8>,
    pub exponent: Vec<u8>,
}

/// `(ayay)`: a freshly generated EC key pair: its id and public point
/// (SEC1 uncompressed; Ed25519's 32 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct EcKeyPairInfo {
    pub id: Vec<u8>,
    pub point: Vec<u8>,
}

/// `(ttt)`: traffic on one handset link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, Type)]
pub struct LinkStatistics {
    pub requests: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}
