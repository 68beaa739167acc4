//! `phonecsp luks`: enrol a LUKS disk with a key on the handset, move its
//! key to another container or a recovery key, list its phonecsp tokens.
//! The work is done by the `phonecsp-luks` crate.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use phonecsp_luks::{
    self as luks, Cryptsetup, Device, EnrollOptions, ExistingKey, LuksError, RewrapTo, WrappedKey,
};
use serde_json::json;

use crate::args::Yes;
use crate::confirm::{Confirm, confirm};
use crate::failure::Failure;
use crate::id::Id;
use crate::output::{print_json, print_text, render_table, say};
use crate::secret::get_secret;
use crate::session::{Context, ensure_login, handset};

/// The existing passphrase of the device, for `enroll` without --key-file.
const ENV_LUKS_PASSPHRASE: &str = "PHONECSP_LUKS_PASSPHRASE";

#[derive(Subcommand, Debug)]
pub enum LuksCommand {
    /// Add a keyslot to a LUKS disk that the handset unlocks
    #[command(after_help = "\
A fresh random secret is made on this computer, wrapped (RSA-OAEP-SHA256 to an RSA key; \
ECDH-ES with HKDF-SHA256 and AES-256-GCM to a P-256 or P-384 key) to the \
public key of a key pair in the container, and added as a new keyslot with \
cryptsetup (cheap PBKDF2: the secret has 384 bits of entropy). The wrapped secret \
goes into a LUKS2 token of type phonecsp, or with --wrapped-file into a file (LUKS1, \
detached headers). Existing keyslots are never touched. Needs root (cryptsetup) \
and an existing passphrase: --key-file, else PHONECSP_LUKS_PASSPHRASE, else asked \
on the terminal.

Then, in /etc/crypttab:
  NAME  DEVICE  luks-token  luks,keyscript=/usr/lib/phonecsp/phonecsp-keyscript

Examples:
  sudo phonecsp luks enroll /dev/sda3 --token disk
  sudo phonecsp luks enroll /dev/sdb --token disk --key 02 --key-file /root/old.key
  sudo phonecsp luks enroll /dev/sdc --token disk --wrapped-file /etc/phonecsp/sdc.json")]
    Enroll(EnrollArgs),

    /// Move a disk's key to another container or a recovery key, inside the handset
    #[command(after_help = "\
The handset decrypts the wrapped secret with the current container's key and \
encrypts it to the new key itself: the secret never exists in the clear on this \
computer. The new wrapped key opens the same keyslot; it is stored as a new LUKS2 \
token (or with --wrapped-file in a file). --replace removes the old token after. \
Logs in to the current container first (PHONECSP_PIN, else the terminal).

Examples:
  sudo phonecsp luks rewrap /dev/sda3 --to-token disk2
  sudo phonecsp luks rewrap /dev/sda3 --to-handset newphone --to-token disk --replace
  sudo phonecsp luks rewrap /dev/sda3 --to-public-key recovery.pem --wrapped-file recovery.json")]
    Rewrap(RewrapArgs),

    /// Mark a token as holding a disk's key (enroll does), or unmark it
    #[command(after_help = "\
A disk token is flagged `disk` in listings, and the PKCS#11 module does not offer it \
to programs (ssh-agent logs in to every token it is offered with the one PIN it \
asked for, and a wrong PIN spends one of the disk container's tries). A person who \
wants it offered names it in PHONECSP_PKCS11_TOKENS or ~/.config/phonecsp/pkcs11-tokens. \
Root or the daemon's user.

Examples:
  sudo phonecsp luks mark disk
  sudo phonecsp luks mark disk --unmark")]
    Mark {
        /// The container
        #[arg(value_name = "TOKEN")]
        token: String,
        /// Take the mark away
        #[arg(long)]
        unmark: bool,
    },

    /// Show the phonecsp tokens of a LUKS2 disk
    #[command(after_help = "Example:\n  sudo phonecsp luks list /dev/sda3")]
    List {
        /// The LUKS device or image file
        device: PathBuf,
        /// A detached LUKS header
        #[arg(long, value_name = "FILE")]
        header: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct EnrollArgs {
    /// The LUKS device or image file
    device: PathBuf,
    /// The container whose key wraps the disk's secret
    #[arg(long, value_name = "TOKEN")]
    token: String,
    /// The key's CKA_ID in hex [default: the container's only key pair]
    #[arg(long, value_name = "ID_HEX")]
    key: Option<Id>,
    /// A file with an existing passphrase or key of the device
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// A detached LUKS header
    #[arg(long, value_name = "FILE")]
    header: Option<PathBuf>,
    /// Write the wrapped key to this file instead of a LUKS2 token
    #[arg(long, value_name = "PATH")]
    wrapped_file: Option<PathBuf>,
    /// The keyslot to add [default: the first free one]
    #[arg(long, value_name = "N")]
    key_slot: Option<u32>,
}

#[derive(Args, Debug)]
pub struct RewrapArgs {
    /// The LUKS device or image file
    device: PathBuf,
    /// A detached LUKS header
    #[arg(long, value_name = "FILE")]
    header: Option<PathBuf>,
    /// The token to re-wrap [default: the only handset token]
    #[arg(long, value_name = "ID", conflicts_with = "from_file")]
    token_id: Option<u32>,
    /// Re-wrap the key in this wrapped-key file instead of a token
    #[arg(long, value_name = "PATH")]
    from_file: Option<PathBuf>,
    /// The container to move the key to
    #[arg(long, value_name = "TOKEN", required_unless_present = "to_public_key")]
    to_token: Option<String>,
    /// The key in --to-token, CKA_ID in hex [default: its only key pair]
    #[arg(long, value_name = "ID_HEX", requires = "to_token")]
    to_key: Option<Id>,
    /// The handset of --to-token [default: the current key's handset]
    #[arg(long, value_name = "NAME", requires = "to_token")]
    to_handset: Option<String>,
    /// A recovery RSA public key (PEM or DER) to move the key to
    #[arg(long, value_name = "FILE", conflicts_with = "to_token")]
    to_public_key: Option<PathBuf>,
    /// Write the new wrapped key to this file instead of a LUKS2 token
    #[arg(long, value_name = "PATH")]
    wrapped_file: Option<PathBuf>,
    /// Remove the old token once the new one is stored (asks first at a
    /// terminal; elsewhere give --yes)
    #[arg(long, conflicts_with = "from_file")]
    replace: bool,
    #[command(flatten)]
    yes: Yes,
}

impl LuksCommand {
    /// The token (container) the command names, if it names one.
    pub(crate) fn token(&self) -> Option<&str> {
        match self {
            LuksCommand::Enroll(a) => Some(&a.token),
            LuksCommand::Mark { token, .. } => Some(token),
            LuksCommand::Rewrap(_) | LuksCommand::List { .. } => None,
        }
    }
}

fn failure(e: LuksError) -> Failure {
    match e {
        LuksError::Client(e) => Failure::Client(e),
        LuksError::Usage(m) => Failure::Usage(m),
        other => Failure::Failed(other.to_string()),
    }
}

fn device(path: &std::path::Path, header: &Option<PathBuf>) -> Device {
    Device {
        path: path.to_owned(),
        header: header.clone(),
    }
}

fn existing_key(a: &EnrollArgs) -> Result<ExistingKey, Failure> {
    if let Some(f) = &a.key_file {
        return Ok(ExistingKey::File(f.clone()));
    }
    let pass = get_secret(
        ENV_LUKS_PASSPHRASE,
        &format!("An existing passphrase of {}: ", a.device.to_string_lossy()),
    )?;
    Ok(ExistingKey::Passphrase(pass))
}

pub fn run(cx: &Context, cmd: &LuksCommand) -> Result<(), Failure> {
    match cmd {
        LuksCommand::Enroll(a) => enroll(cx, a),
        LuksCommand::Mark { token, unmark } => mark(cx, token, !unmark),
        LuksCommand::Rewrap(a) => rewrap(cx, a),
        LuksCommand::List { device: d, header } => list(cx, &device(d, header)),
    }
}

fn enroll(cx: &Context, a: &EnrollArgs) -> Result<(), Failure> {
    let h = handset(cx)?;
    let dev = device(&a.device, &a.header);
    let opts = EnrollOptions {
        device: dev.clone(),
        handset: h.clone(),
        container: a.token.clone(),
        key_id: a.key.as_ref().map(|k| k.0.clone()),
        existing: existing_key(a)?,
        wrapped_file: a.wrapped_file.clone(),
        keyslot: a.key_slot,
    };
    let done = luks::enroll(&Cryptsetup::from_env(), &cx.client, &opts).map_err(failure)?;
    // The token now holds a disk's key: not offered to ssh-agent and the
    // like from now on. Only an administrator may mark; say so otherwise.
    if let Err(e) = cx.client.mark_disk_token(&h, &a.token, true) {
        eprintln!(
            "phonecsp: note: {h}/{} was not marked as a disk token ({e}); \
             run `sudo phonecsp luks mark {}` so that ssh-agent is not offered it",
            a.token, a.token
        );
    }
    let stored = match (&done.token_id, &a.wrapped_file) {
        (Some(id), _) => format!("LUKS2 token {id}"),
        (None, Some(f)) => f.display().to_string(),
        (None, None) => String::new(),
    };
    if cx.json {
        return print_json(&json!({
            "device": a.device,
            "keyslot": done.keyslot,
            "token_id": done.token_id,
            "wrapped_file": a.wrapped_file,
            "handset": h,
            "token": a.token,
            "key_id": done.wrapped.key_id,
            "public_key_sha256": done.wrapped.public_key_sha256,
        }));
    }
    let key_field = match &a.wrapped_file {
        Some(f) => f.display().to_string(),
        None => "luks-token".into(),
    };
    print_text(&format!(
        "enrolled {}: keyslot {} opens with {}\nthe wrapped key is in {stored}\n\
         crypttab: NAME {} {key_field} luks,keyscript=/usr/lib/phonecsp/phonecsp-keyscript\n",
        a.device.display(),
        done.keyslot,
        done.wrapped.describe(),
        a.device.display(),
    ))
}

/// `phonecsp luks mark`.
fn mark(cx: &Context, token: &str, disk: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.mark_disk_token(&h, token, disk)?;
    let text = match disk {
        true => format!("{h}/{token} is a disk token: the PKCS#11 module does not offer it\n"),
        false => format!("{h}/{token} is no longer a disk token\n"),
    };
    say(
        cx,
        json!({ "handset": h, "token": token, "disk": disk }),
        text,
    )
}

/// The token to re-wrap: the one asked for, else the only handset token.
fn source_token(dev: &Device, id: Option<u32>) -> Result<(u32, WrappedKey), Failure> {
    let tokens = Cryptsetup::from_env().tokens(dev).map_err(failure)?;
    let at = dev.metadata_path().display().to_string();
    if let Some(want) = id {
        return match tokens.into_iter().find(|(i, _)| *i == want) {
            Some((i, Ok(w))) => Ok((i, w)),
            Some((_, Err(e))) => Err(failure(e)),
            None => Err(Failure::Failed(format!("{at}: no phonecsp token {want}"))),
        };
    }
    let usable: Vec<(u32, WrappedKey)> = tokens
        .into_iter()
        .filter_map(|(i, w)| w.ok().filter(|w| w.target().is_some()).map(|w| (i, w)))
        .collect();
    match usable.len() {
        0 => Err(Failure::Failed(format!(
            "{at}: no phonecsp token wrapped to a handset"
        ))),
        1 => Ok(usable.into_iter().next().ok_or(Failure::No)?),
        _ => Err(Failure::Usage(format!(
            "{at} has several phonecsp tokens ({}): choose one with --token-id",
            usable
                .iter()
                .map(|(i, w)| format!("{i}: {}", w.describe()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn rewrap(cx: &Context, a: &RewrapArgs) -> Result<(), Failure> {
    let dev = device(&a.device, &a.header);
    let (old_id, from) = match &a.from_file {
        Some(f) => (None, luks::read_wrapped_file(f).map_err(failure)?),
        None => {
            let (i, w) = source_token(&dev, a.token_id)?;
            (Some(i), w)
        }
    };
    let src = from.target().ok_or_else(|| {
        Failure::Usage(format!(
            "the key is wrapped to {}: only its private key can re-wrap it",
            from.describe()
        ))
    })?;
    let to = match (&a.to_token, &a.to_public_key) {
        (Some(t), _) => RewrapTo::Container {
            handset: a.to_handset.clone().unwrap_or_else(|| src.handset.clone()),
            container: t.clone(),
            key_id: a.to_key.as_ref().map(|k| k.0.clone()),
        },
        (None, Some(f)) => {
            let bytes = std::fs::read(f)
                .map_err(|e| Failure::Failed(format!("reading {}: {e}", f.display())))?;
            RewrapTo::PublicKey(luks::parse_public_key(&bytes).map_err(failure)?)
        }
        (None, None) => {
            return Err(Failure::Usage("give --to-token or --to-public-key".into()));
        }
    };
    if a.replace
        && let Some(old) = old_id
    {
        // Asked before anything is done, so that a "no" changes nothing.
        confirm(
            &format!(
                "remove the token {old} of {} (the key wrapped to {}) once its key is re-wrapped",
                a.device.display(),
                from.describe()
            ),
            Confirm::YesNo,
            a.yes.yes,
        )?;
    }
    ensure_login(cx, &src.handset, &src.container)?;
    let new = luks::rewrap(&cx.client, &from, &to).map_err(failure)?;
    let cs = Cryptsetup::from_env();
    let (stored, new_id) = match &a.wrapped_file {
        Some(f) => {
            luks::write_wrapped_file(f, &new).map_err(failure)?;
            (f.display().to_string(), None)
        }
        None => {
            let id = cs.import_token(&dev, &new).map_err(failure)?;
            (format!("LUKS2 token {id}"), Some(id))
        }
    };
    let mut removed = None;
    if a.replace
        && let Some(old) = old_id
    {
        cs.remove_token(&dev, old).map_err(failure)?;
        removed = Some(old);
    }
    if cx.json {
        return print_json(&json!({
            "device": a.device,
            "keyslots": new.keyslots,
            "from": from.describe(),
            "to": new.describe(),
            "token_id": new_id,
            "wrapped_file": a.wrapped_file,
            "removed_token_id": removed,
            "public_key_sha256": new.public_key_sha256,
        }));
    }
    let mut text = format!(
        "re-wrapped the key of keyslot {} from {} to {} inside the handset\nthe new wrapped key is in {stored}\n",
        new.keyslots.join(","),
        from.describe(),
        new.describe(),
    );
    if let Some(old) = removed {
        text.push_str(&format!("removed the old token {old}\n"));
    }
    print_text(&text)
}

fn list(cx: &Context, dev: &Device) -> Result<(), Failure> {
    let tokens = Cryptsetup::from_env().tokens(dev).map_err(failure)?;
    if cx.json {
        let v: Vec<serde_json::Value> = tokens
            .iter()
            .map(|(id, w)| match w {
                Ok(w) => json!({
                    "token_id": id,
                    "keyslots": w.keyslots,
                    "handset": w.handset,
                    "container": w.container,
                    "key_id": w.key_id,
                    "public_key_sha256": w.public_key_sha256,
                }),
                Err(e) => json!({ "token_id": id, "error": e.to_string() }),
            })
            .collect();
        return print_json(&serde_json::Value::Array(v));
    }
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|(id, w)| match w {
            Ok(w) => vec![
                id.to_string(),
                w.keyslots.join(","),
                w.describe(),
                w.public_key_sha256.get(..16).unwrap_or("").to_owned(),
            ],
            Err(e) => vec![
                id.to_string(),
                String::new(),
                format!("unreadable: {e}"),
                String::new(),
            ],
        })
        .collect();
    print_text(&render_table(
        &["TOKEN", "KEYSLOTS", "WRAPPED-TO", "KEY-SHA256"],
        &rows,
    ))
}
