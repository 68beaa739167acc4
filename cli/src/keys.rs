//! `phonecsp keys` and `keygen`: the keys on the phones, as the daemon's
//! object tree shows them, and a new RSA key pair made on the handset.

use serde_json::json;

use crate::failure::Failure;
use crate::id::Id;
use crate::output::{hex, say, say_list};
use crate::session::{Context, ensure_login, handset};

pub(crate) fn keygen(
    cx: &Context,
    token: &str,
    bits: u32,
    id: Option<Id>,
    label: &str,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    let id = id.map(|i| i.0).unwrap_or_default();
    let key = cx.client.generate_key_pair(&h, token, bits, &id, label)?;
    let text = format!(
        "generated an RSA-{bits} key pair in {h}/{token}\nid:       {}\nexponent: {}\n",
        hex(&key.id),
        hex(&key.exponent)
    );
    let json = json!({
        "handset": h,
        "token": token,
        "id": hex(&key.id),
        "bits": bits,
        "label": label,
        "modulus": hex(&key.modulus),
        "exponent": hex(&key.exponent),
    });
    say(cx, json, text)
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
                format!("{}-{}", k.kind, k.bits),
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
