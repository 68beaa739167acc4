//! The wrapped secret as it is kept: a LUKS2 token of type `phonecsp`
//! (its JSON form) or a file, and the handset key it names.

use std::path::Path;

use crate::error::{LuksError, Result};
use crate::secret::{EC_ALGORITHM, RSA_ALGORITHM, Wrapping, hex, public_key_sha256, unhex};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use phonecsp::local::PublicKey;
use serde::{Deserialize, Serialize};

/// The LUKS2 token type.
pub const TOKEN_TYPE: &str = "phonecsp";

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
    /// [`RSA_ALGORITHM`] or [`EC_ALGORITHM`].
    pub algorithm: String,
    /// Hex SHA-256 of the wrapping key's DER SubjectPublicKeyInfo.
    pub public_key_sha256: String,
    /// The wrapped secret, base64: RSA's OAEP ciphertext; EC's 12-byte
    /// AES-GCM nonce, then the ciphertext and its tag.
    pub wrapped_key: String,
    /// EC only: the ephemeral public point (SEC1 uncompressed), base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ephemeral_public_key: Option<String>,
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
        public: &PublicKey,
        wrapping: &Wrapping,
    ) -> Result<WrappedKey> {
        Ok(WrappedKey {
            kind: TOKEN_TYPE.into(),
            keyslots: vec![keyslot.to_string()],
            handset: target.map(|t| t.handset.clone()),
            container: target.map(|t| t.container.clone()),
            key_id: target.map(Target::key_id_hex),
            algorithm: wrapping.algorithm.into(),
            public_key_sha256: public_key_sha256(public)?,
            wrapped_key: BASE64.encode(&wrapping.wrapped),
            ephemeral_public_key: wrapping.ephemeral.as_ref().map(|e| BASE64.encode(e)),
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
        match (self.algorithm.as_str(), &self.ephemeral_public_key) {
            (RSA_ALGORITHM, None) => {}
            (EC_ALGORITHM, Some(_)) => {
                self.ephemeral()?;
            }
            (RSA_ALGORITHM, Some(_)) => {
                return Err(LuksError::Format(format!(
                    "{RSA_ALGORITHM} takes no ephemeral_public_key"
                )));
            }
            (EC_ALGORITHM, None) => {
                return Err(LuksError::Format(format!(
                    "{EC_ALGORITHM} needs its ephemeral_public_key"
                )));
            }
            (other, _) => {
                return Err(LuksError::Format(format!(
                    "algorithm '{other}' (this version knows {RSA_ALGORITHM} and {EC_ALGORITHM})"
                )));
            }
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

    /// EC's ephemeral public point; `None` for an RSA wrapping.
    pub fn ephemeral(&self) -> Result<Option<Vec<u8>>> {
        self.ephemeral_public_key
            .as_deref()
            .map(|e| {
                BASE64
                    .decode(e.trim())
                    .map_err(|_| LuksError::Format("ephemeral_public_key is not base64".into()))
            })
            .transpose()
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
