//! The wrapped secret as it is kept: a LUKS2 token of type `phonecsp`
//! (its JSON form) or a file, and the handset key it names.

use std::path::Path;

use crate::error::{LuksError, Result};
use crate::secret::{hex, public_key_sha256, unhex};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::RsaPublicKey;
use serde::{Deserialize, Serialize};

/// The LUKS2 token type.
pub const TOKEN_TYPE: &str = "phonecsp";
/// The only wrapping this version makes and reads.
pub const ALGORITHM: &str = "RSA-OAEP-SHA256";

/// The wrapped secret and what it is wrapped to: the JSON of a LUKS2 token
/// of type `phonecsp`, and of a wrapped-key file.
///
/// A key wrapped to a handset names the handset (as the daemon's
/// configuration calls it), the container and the key's CKA_ID; a key
/// wrapped to a recovery public key names none of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WrappedKey {
    /// Always [`TOKEN_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// The keyslots the secret opens (LUKS2 token convention: strings).
    pub keyslots: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The key's CKA_ID in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Hex SHA-256 of the wrapping key's DER SubjectPublicKeyInfo.
    pub public_key_sha256: String,
    /// The wrapped secret, base64.
    pub wrapped_key: String,
}

/// Where a handset-bound [`WrappedKey`] is to be unwrapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub handset: String,
    pub container: String,
    pub key_id: Vec<u8>,
}

impl Target {
    pub fn key_id_hex(&self) -> String {
        hex(&self.key_id)
    }
}

impl WrappedKey {
    pub fn new(
        target: Option<&Target>,
        keyslot: u32,
        public: &RsaPublicKey,
        wrapped: &[u8],
    ) -> Result<WrappedKey> {
        Ok(WrappedKey {
            kind: TOKEN_TYPE.into(),
            keyslots: vec![keyslot.to_string()],
            handset: target.map(|t| t.handset.clone()),
            container: target.map(|t| t.container.clone()),
            key_id: target.map(Target::key_id_hex),
            algorithm: ALGORITHM.into(),
            public_key_sha256: public_key_sha256(public)?,
            wrapped_key: BASE64.encode(wrapped),
        })
    }

    /// Parses and checks a token or a wrapped-key file.
    pub fn parse(json: &str) -> Result<WrappedKey> {
        let w: WrappedKey =
            serde_json::from_str(json).map_err(|e| LuksError::Format(e.to_string()))?;
        w.check()?;
        Ok(w)
    }

    pub fn check(&self) -> Result<()> {
        if self.kind != TOKEN_TYPE {
            return Err(LuksError::Format(format!(
                "type '{}', not '{TOKEN_TYPE}'",
                self.kind
            )));
        }
        if self.algorithm != ALGORITHM {
            return Err(LuksError::Format(format!(
                "algorithm '{}' (this version knows {ALGORITHM})",
                self.algorithm
            )));
        }
        self.wrapped()?;
        if self.keyslots.iter().any(|k| k.parse::<u32>().is_err()) {
            return Err(LuksError::Format("keyslots must be numbers".into()));
        }
        match (&self.handset, &self.container, &self.key_id) {
            (None, None, None) => Ok(()),
            (Some(h), Some(c), Some(k)) if !h.is_empty() && !c.is_empty() => unhex(k)
                .filter(|k| !k.is_empty())
                .map(|_| ())
                .ok_or_else(|| LuksError::Format("key_id is not hex".into())),
            _ => Err(LuksError::Format(
                "give all of handset, container and key_id, or none (a recovery key)".into(),
            )),
        }
    }

    pub fn to_json(&self) -> String {
        // Serialising plain strings cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The wrapped secret.
    pub fn wrapped(&self) -> Result<Vec<u8>> {
        BASE64
            .decode(self.wrapped_key.trim())
            .map_err(|_| LuksError::Format("wrapped_key is not base64".into()))
    }

    /// The handset container the key is wrapped to; `None` for a recovery key.
    pub fn target(&self) -> Option<Target> {
        Some(Target {
            handset: self.handset.clone()?,
            container: self.container.clone()?,
            key_id: unhex(self.key_id.as_deref()?)?,
        })
    }

    /// What the key is wrapped to, for messages.
    pub fn describe(&self) -> String {
        match self.target() {
            Some(t) => format!("{}/{} key {}", t.handset, t.container, t.key_id_hex()),
            None => format!(
                "a recovery public key (SHA-256 {})",
                self.public_key_sha256.get(..16).unwrap_or("")
            ),
        }
    }

    pub fn keyslot_numbers(&self) -> Vec<u32> {
        self.keyslots
            .iter()
            .filter_map(|k| k.parse().ok())
            .collect()
    }
}

/// Reads a wrapped-key file.
pub fn read_wrapped_file(path: &Path) -> Result<WrappedKey> {
    let text = std::fs::read_to_string(path).map_err(LuksError::io(path.display().to_string()))?;
    WrappedKey::parse(&text).map_err(|e| LuksError::Format(format!("{}: {}", path.display(), e)))
}

/// Writes a wrapped-key file atomically (it holds no secret in the clear,
/// but is still made readable by its owner only).
pub fn write_wrapped_file(path: &Path, w: &WrappedKey) -> Result<()> {
    let mut json = w.to_json();
    json.push('\n');
    phonecsp_host::state::write_private(path, json.as_bytes()).map_err(|e| match e {
        phonecsp_host::state::StateError::Io { path, source } => LuksError::Io {
            what: path.display().to_string(),
            source,
        },
        other => LuksError::Host(other.to_string()),
    })
}
