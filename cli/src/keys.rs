//! `phonecsp keygen`: a new RSA key pair made on the handset.

use serde_json::json;

use crate::failure::Failure;
use crate::id::Id;
use crate::output::{hex, say};
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
