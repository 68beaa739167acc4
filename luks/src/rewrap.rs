//! Re-wrapping inside the handset: the secret moves to another container
//! or a recovery key without ever being in the clear on this computer.

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
    // The handset's re-wrap is RSA-OAEP in and out (+CKREWRAP): a secret
    // wrapped to an EC key, or going to one, cannot pass through it.
    let PublicKey::Rsa(public) = public else {
        return Err(LuksError::Usage(
            "re-wrapping to an EC key is not supported: enrol the disk to that key instead \
             (phonecsp luks enroll), then remove the old keyslot"
                .into(),
        ));
    };
    if from.ephemeral()?.is_some() {
        return Err(LuksError::Usage(
            "this key is wrapped to an EC key, which the handset cannot re-wrap: enrol the \
             disk to the new key instead (phonecsp luks enroll), then remove the old keyslot"
                .into(),
        ));
    }
    if target.as_ref() == Some(&source) {
        return Err(LuksError::Usage(
            "the key is already wrapped to that container key".into(),
        ));
    }
    let spki = phonecsp::local::spki_der(&public)
        .map_err(|rv| LuksError::PublicKey(format!("cannot encode it: {rv}")))?;
    let rewrapped = client
        .rewrap(
            &source.handset,
            &source.container,
            &source.key_id,
            ckm::SHA256,
            &from.wrapped()?,
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
    let wrapping = crate::secret::Wrapping {
        algorithm: crate::secret::RSA_ALGORITHM,
        wrapped: rewrapped,
        ephemeral: None,
    };
    let mut out = WrappedKey::new(target.as_ref(), 0, &PublicKey::Rsa(public), &wrapping)?;
    out.keyslots = from.keyslots.clone();
    Ok(out)
}
