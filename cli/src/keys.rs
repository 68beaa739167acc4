//! `phonecsp keys`, `keygen` and `pubkey`: the keys on the phones, as the
//! daemon's object tree shows them, a new key pair (RSA or EC) made on the
//! handset, and a key's public half written out for other programs.

use serde_json::json;

use phonecsp::{EcKeyPairInfo, Error, KeyPairInfo, local};
use phonecsp_protocol::ck::Curve;

use crate::args::{KeyType, PubkeyArgs};
use crate::failure::Failure;
use crate::id::Id;
use crate::output::{emit_bytes, hex, say, say_list};
use crate::session::{Context, ensure_login, handset};

pub(crate) fn keygen(
    cx: &Context,
    token: &str,
    key_type: KeyType,
    id: Option<Id>,
    label: &str,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    let id = id.map(|i| i.0).unwrap_or_default();
    match key_type {
        KeyType::Rsa(bits) => {
            let key = cx.client.generate_key_pair(&h, token, bits, &id, label)?;
            say_new_key(cx, &h, token, label, NewKey::Rsa(&key), false)
        }
        KeyType::Ec(curve) => {
            let key = cx
                .client
                .generate_ec_key_pair(&h, token, curve.number(), &id, label)?;
            say_new_key(cx, &h, token, label, NewKey::Ec(curve, &key), false)
        }
    }
}

/// A key pair now on the phone, as the handset answered it.
pub(crate) enum NewKey<'a> {
    Rsa(&'a KeyPairInfo),
    Ec(Curve, &'a EcKeyPairInfo),
}

/// What `keygen` and `import` say of the key pair they put on the phone;
/// `imported` says it was made elsewhere (`CKA_LOCAL` false).
pub(crate) fn say_new_key(
    cx: &Context,
    h: &str,
    token: &str,
    label: &str,
    key: NewKey<'_>,
    imported: bool,
) -> Result<(), Failure> {
    let (made, whence) = if imported {
        ("imported", " (it was made elsewhere)")
    } else {
        ("generated", "")
    };
    let (text, json) = match key {
        NewKey::Rsa(key) => {
            let bits = key.modulus.len() * 8;
            let text = format!(
                "{made} an RSA-{bits} key pair in {h}/{token}{whence}\nid:       {}\nexponent: {}\n",
                hex(&key.id),
                hex(&key.exponent)
            );
            let json = json!({
                "handset": h,
                "token": token,
                "id": hex(&key.id),
                "bits": bits,
                "label": label,
                "local": !imported,
                "modulus": hex(&key.modulus),
                "exponent": hex(&key.exponent),
            });
            (text, json)
        }
        NewKey::Ec(curve, key) => {
            let public = local::EcPublicKey::new(curve, &key.point)
                .map(local::PublicKey::Ec)
                .map_err(|rv| Error::token(rv, "the handset answered a point not on the curve"))?;
            let ssh = public.openssh(label);
            let text = format!(
                "{made} a {} key pair in {h}/{token}{whence}\nid:      {}\nopenssh: {ssh}\n",
                curve.name(),
                hex(&key.id),
            );
            let json = json!({
                "handset": h,
                "token": token,
                "id": hex(&key.id),
                "type": curve.name(),
                "bits": curve.bits(),
                "label": label,
                "local": !imported,
                "point": hex(&key.point),
                "openssh": ssh,
            });
            (text, json)
        }
    };
    say(cx, json, text)
}

/// `phonecsp pubkey`: the public half of key `id`, as PEM or DER
/// SubjectPublicKeyInfo or as an OpenSSH line.
pub(crate) fn pubkey(cx: &Context, a: &PubkeyArgs) -> Result<(), Failure> {
    let h = handset(cx)?;
    let (key, label) = cx.client.public_key(&h, &a.key.token, &a.key.id.0)?;
    let bytes = match a.format.as_str() {
        "der" => key.spki_der().map_err(Error::from)?,
        "openssh" => format!("{}\n", key.openssh(&label)).into_bytes(),
        _ => key.pem().map_err(Error::from)?.into_bytes(),
    };
    emit_bytes(cx, "public_key", &a.out, &bytes, false)
}

/// `phonecsp keys`: every key object, on the handset `--handset` names if
/// it does.
pub(crate) fn list(cx: &Context) -> Result<(), Failure> {
    let mut keys = cx.client.keys()?;
    keys.retain(|k| cx.chose(&k.handset));
    if keys.is_empty() && !cx.json {
        eprintln!("phonecsp: no key on a phone that is here: see `phonecsp tokens`");
    }
    say_list(
        cx,
        &keys,
        &["HANDSET", "TOKEN", "ID", "LABEL", "TYPE", "CERT", "OBJECT"],
        |k| {
            json!({
                "handset": k.handset,
                "token": k.token_name,
                "id": hex(&k.id),
                "label": k.label,
                "type": k.kind,
                "bits": k.bits,
                "certificate": !k.certificate.is_empty(),
                "object": k.path.as_str(),
            })
        },
        |k| {
            vec![
                k.handset.clone(),
                k.token_name.clone(),
                hex(&k.id),
                k.label.clone(),
                // rsa-2048; an EC key's type names its size (p256, ed25519).
                if k.kind == "rsa" {
                    format!("{}-{}", k.kind, k.bits)
                } else {
                    k.kind.clone()
                },
                if k.certificate.is_empty() {
                    "no"
                } else {
                    "yes"
                }
                .to_owned(),
                k.path.as_str().to_owned(),
            ]
        },
    )
}
