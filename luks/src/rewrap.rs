//! Re-wrapping inside the handset: the secret moves to another container
//! or a recovery key without ever being in the clear on this computer.
//! Either key may be RSA or EC (P-256, P-384); the handset opens one
//! wrapping and makes the other (`+CKREWRAP`).

use phonecsp::local::PublicKey;
use phonecsp_protocol::CkRv;
use rsa::RsaPublicKey;

use crate::enrol::container_public_key;
use crate::error::{LuksError, Result};
use crate::holder::key_use_error;
use crate::token::{Target, WrappedKey};
use phonecsp::mechanism::ckm;

/// Where [`rewrap`] moves the secret.
#[derive(Debug, Clone)]
pub enum RewrapTo {
    /// Another container (on the same or another handset).
    Container {
        handset: String,
        container: String,
        key_id: Option<Vec<u8>>,
    },
    /// A recovery public key kept away from the computer.
    PublicKey(RsaPublicKey),
}

/// Re-wraps `from` to `to` inside the handset that holds `from`'s key: the
/// secret never exists in the clear on this computer. The caller's D-Bus
/// connection must be logged in to `from`'s container. The result opens
/// the same keyslots.
pub fn rewrap(
    client: &phonecsp::blocking::Client,
    from: &WrappedKey,
    to: &RewrapTo,
) -> Result<WrappedKey> {
    let source = from.target().ok_or_else(|| {
        LuksError::Usage(
            "this key is wrapped to a recovery key: only its private key can re-wrap it".into(),
        )
    })?;
    let (target, public) = match to {
        RewrapTo::Container {
            handset,
            container,
            key_id,
        } => {
            let (id, key) = container_public_key(client, handset, container, key_id.as_deref())?;
            (
                Some(Target {
                    handset: handset.clone(),
                    container: container.clone(),
                    key_id: id,
                }),
                key,
            )
        }
        RewrapTo::PublicKey(key) => (None, PublicKey::Rsa(key.clone())),
    };
    if target.as_ref() == Some(&source) {
        return Err(LuksError::Usage(
            "the key is already wrapped to that container key".into(),
        ));
    }
    if let PublicKey::Ec(k) = &public
        && k.curve == phonecsp_protocol::Curve::Ed25519
    {
        return Err(LuksError::PublicKey(
            "an Ed25519 key only signs: re-wrap to an RSA, P-256 or P-384 key".into(),
        ));
    }
    let spki = public
        .spki_der()
        .map_err(|rv| LuksError::PublicKey(format!("cannot encode it: {rv}")))?;
    // What the handset opens: an EC wrapping's one-time point, then the
    // sealed secret.
    let input = match from.ephemeral()? {
        Some(e) => [e, from.wrapped()?].concat(),
        None => from.wrapped()?,
    };
    let rewrapped = client
        .rewrap(
            &source.handset,
            &source.container,
            &source.key_id,
            ckm::SHA256,
            &input,
            ckm::SHA256,
            &spki,
        )
        .map_err(|e| match e.rv() {
            CkRv::ENCRYPTED_DATA_INVALID => LuksError::WrongKey {
                handset: source.handset.clone(),
                container: source.container.clone(),
                key_id: source.key_id_hex(),
            },
            _ => key_use_error(e, &source),
        })?;
    let wrapping = match &public {
        PublicKey::Ec(k) => {
            let n = k.curve.point_len().min(rewrapped.len());
            crate::secret::Wrapping {
                algorithm: crate::secret::EC_ALGORITHM,
                ephemeral: Some(rewrapped[..n].to_vec()),
                wrapped: rewrapped[n..].to_vec(),
            }
        }
        PublicKey::Rsa(_) => crate::secret::Wrapping {
            algorithm: crate::secret::RSA_ALGORITHM,
            wrapped: rewrapped,
            ephemeral: None,
        },
    };
    let mut out = WrappedKey::new(target.as_ref(), 0, &public, &wrapping)?;
    out.keyslots = from.keyslots.clone();
    Ok(out)
}
