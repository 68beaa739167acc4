//! The zbus proxy of `org.phonecsp.CryptoProvider1`, one method per
//! element of `dbus/org.phonecsp.CryptoProvider1.xml` (the API's source of
//! truth). Most programs want [`crate::Client`] or
//! [`crate::blocking::Client`] instead, which add the daemon-identity check
//! before a PIN is sent.
//!
//! Methods return [`crate::Result`]: an `org.phonecsp.Error.*` reply comes
//! back as [`crate::Error::Token`] with its CK_RV.

use std::collections::HashMap;

use crate::Result;
use crate::types::{
    HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo, TokenDetails,
    TokenEntry,
};

#[zbus::proxy(
    interface = "org.phonecsp.CryptoProvider1",
    default_service = "org.phonecsp.CryptoProvider1",
    default_path = "/org/phonecsp/CryptoProvider1"
)]
pub trait CryptoProvider {
    /// Configured handsets: (name, transport, pinned key fingerprint, connected).
    fn list_handsets(&self) -> Result<Vec<HandsetStatus>>;

    /// Tokens the caller may use on connected handsets.
    fn list_tokens(&self) -> Result<Vec<TokenEntry>>;

    fn get_token_info(&self, handset: &str, token: &str) -> Result<TokenDetails>;

    fn login(&self, handset: &str, token: &str, pin: &[u8]) -> Result<()>;

    fn logout(&self, handset: &str, token: &str) -> Result<()>;

    fn change_pin(&self, handset: &str, token: &str, old_pin: &[u8], new_pin: &[u8]) -> Result<()>;

    /// Objects: (CKO_* class, CKA_ID, CKA_LABEL).
    fn list_objects(&self, handset: &str, token: &str) -> Result<Vec<ObjectInfo>>;

    /// Attributes by CKA_* type; numbers are 8-byte big-endian.
    fn get_attributes(
        &self,
        handset: &str,
        token: &str,
        class: u32,
        id: &[u8],
    ) -> Result<HashMap<u32, Vec<u8>>>;

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        data: &[u8],
    ) -> Result<Vec<u8>>;

    #[allow(clippy::too_many_arguments)]
    fn verify(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool>;

    #[allow(clippy::too_many_arguments)]
    fn decrypt(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        ciphertext: &[u8],
    ) -> Result<Vec<u8>>;

    #[allow(clippy::too_many_arguments)]
    fn encrypt(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        mechanism: u32,
        params: &MechanismParams,
        plaintext: &[u8],
    ) -> Result<Vec<u8>>;

    fn digest(&self, mechanism: u32, data: &[u8]) -> Result<Vec<u8>>;

    fn generate_key_pair(
        &self,
        handset: &str,
        token: &str,
        bits: u32,
        id: &[u8],
        label: &str,
    ) -> Result<KeyPairInfo>;

    fn generate_random(&self, handset: &str, length: u32) -> Result<Vec<u8>>;

    fn import_certificate(
        &self,
        handset: &str,
        token: &str,
        id: &[u8],
        label: &str,
        certificate: &[u8],
    ) -> Result<()>;

    fn delete_object(&self, handset: &str, token: &str, class: u32, id: &[u8]) -> Result<()>;

    #[allow(clippy::too_many_arguments)]
    fn rewrap(
        &self,
        handset: &str,
        token: &str,
        key_id: &[u8],
        in_hash: u32,
        ciphertext: &[u8],
        out_hash: u32,
        public_key: &[u8],
    ) -> Result<Vec<u8>>;

    /// Root only.
    fn pair(&self, handset: &str, code: &str) -> Result<String>;

    /// Root only.
    fn unpair(&self, handset: &str) -> Result<()>;

    #[zbus(signal)]
    fn handset_connected(&self, handset: String) -> zbus::Result<()>;

    #[zbus(signal)]
    fn handset_removed(&self, handset: String) -> zbus::Result<()>;

    #[zbus(signal)]
    fn tokens_changed(&self, handset: String) -> zbus::Result<()>;

    /// Per handset: (requests, bytes sent to it, bytes received from it).
    /// Read afresh on every call: the counters change all the time.
    #[zbus(property(emits_changed_signal = "false"))]
    fn statistics(&self) -> Result<HashMap<String, LinkStatistics>>;

    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> Result<String>;
}
