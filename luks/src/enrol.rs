//! Enrolment: a new keyslot whose secret is wrapped to a key on the
//! handset, the wrapped secret stored next to the disk.

use std::path::PathBuf;

use phonecsp::local::PublicKey;
use phonecsp_protocol::CkRv;
use rsa::traits::PublicKeyParts;

use crate::cryptsetup::{Cryptsetup, Device, ExistingKey};
use crate::error::{LuksError, Result};
use crate::secret::{hex, new_secret, wrap};
use crate::token::{Target, WrappedKey, write_wrapped_file};
use phonecsp_protocol::ck::cko;

/// What [`enroll`] is to do.
#[derive(Debug)]
pub struct EnrollOptions {
    pub device: Device,
    pub handset: String,
    pub container: String,
    /// The key's CKA_ID; `None`: the container's only key pair.
    pub key_id: Option<Vec<u8>>,
    /// An existing passphrase or key of the device.
    pub existing: ExistingKey,
    /// Write the wrapped key here instead of a LUKS2 token.
    pub wrapped_file: Option<PathBuf>,
    /// The keyslot to use; `None`: the first free one.
    pub keyslot: Option<u32>,
}

/// What [`enroll`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub keyslot: u32,
    /// The LUKS2 token's id, unless a file was written.
    pub token_id: Option<u32>,
    pub wrapped: WrappedKey,
}

/// The public key of `key_id` in the container (or of its only key pair)
/// as the daemon reports it; returns the key's CKA_ID too.
pub fn container_public_key(
    client: &phonecsp::blocking::Client,
    handset: &str,
    container: &str,
    key_id: Option<&[u8]>,
) -> Result<(Vec<u8>, PublicKey)> {
    let id = match key_id {
        Some(id) => id.to_vec(),
        None => {
            let keys: Vec<Vec<u8>> = client
                .list_objects(handset, container)?
                .into_iter()
                .filter(|o| o.class == cko::PUBLIC_KEY)
                .map(|o| o.id)
                .collect();
            match keys.as_slice() {
                [only] => only.clone(),
                [] => {
                    return Err(LuksError::Usage(format!(
                        "{handset}/{container} has no key pair: make one with `phonecsp keygen {container}`"
                    )));
                }
                many => {
                    return Err(LuksError::Usage(format!(
                        "{handset}/{container} has several key pairs ({}): choose one with --key",
                        many.iter().map(|k| hex(k)).collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }
    };
    let attrs = client
        .get_attributes(handset, container, cko::PUBLIC_KEY, &id)
        .map_err(|e| match e.rv() {
            CkRv::OBJECT_HANDLE_INVALID | CkRv::KEY_HANDLE_INVALID => LuksError::NoKey {
                handset: handset.into(),
                container: container.into(),
                key_id: hex(&id),
            },
            _ => LuksError::Client(e),
        })?;
    let key = phonecsp::local::any_public_key_from_attributes(&attrs).map_err(|rv| {
        LuksError::PublicKey(format!(
            "{handset}/{container} key {} is not a usable public key: {rv}",
            hex(&id)
        ))
    })?;
    Ok((id, key))
}

/// Enrols the device: a fresh secret, wrapped to the container's key, a
/// new keyslot for it, and the wrapped secret in a token (or a file). If
/// storing the wrapped secret fails, the new keyslot is removed again.
pub fn enroll(
    cryptsetup: &Cryptsetup,
    client: &phonecsp::blocking::Client,
    opts: &EnrollOptions,
) -> Result<Enrolled> {
    let dev = &opts.device;
    // Check what can be checked before the header changes.
    if opts.wrapped_file.is_none() {
        cryptsetup.metadata(dev)?;
    } else if !cryptsetup.is_luks(dev) {
        return Err(LuksError::NotLuks {
            device: dev.metadata_path().to_owned(),
            detail: "cryptsetup isLuks says no".into(),
        });
    }
    let (key_id, public) = container_public_key(
        client,
        &opts.handset,
        &opts.container,
        opts.key_id.as_deref(),
    )?;
    if matches!(&public, PublicKey::Rsa(k) if k.size() < 256) {
        return Err(LuksError::PublicKey(
            "RSA keys below 2048 bits are not used for disks".into(),
        ));
    }
    let target = Target {
        handset: opts.handset.clone(),
        container: opts.container.clone(),
        key_id,
    };
    let secret = new_secret();
    let wrapped = wrap(&public, &secret)?;
    let slot = cryptsetup.add_keyslot(dev, &opts.existing, &secret, opts.keyslot)?;
    let token = WrappedKey::new(Some(&target), slot, &public, &wrapped)?;
    let stored = match &opts.wrapped_file {
        Some(path) => write_wrapped_file(path, &token).map(|()| None),
        None => cryptsetup.import_token(dev, &token).map(Some),
    };
    match stored {
        Ok(token_id) => Ok(Enrolled {
            keyslot: slot,
            token_id,
            wrapped: token,
        }),
        Err(e) => {
            // Leave no keyslot nobody can open.
            if let Err(k) = cryptsetup.kill_keyslot(dev, slot, &secret) {
                return Err(LuksError::Usage(format!(
                    "{e}; and removing the new keyslot {slot} failed too: {k}"
                )));
            }
            Err(e)
        }
    }
}
