//! `phonecsp random`: bytes from the handset's generator.

use serde_json::json;
use zeroize::Zeroizing;

use crate::failure::Failure;
use crate::output::{hex, print_json, print_text, write_output};
use crate::session::{Context, handset};

pub(crate) fn random(cx: &Context, length: u32, as_hex: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    let bytes = Zeroizing::new(cx.client.generate_random(&h, length)?);
    if cx.json {
        return print_json(&json!({ "random": hex(&bytes), "length": bytes.len() }));
    }
    if as_hex {
        print_text(&format!("{}\n", hex(&bytes)))
    } else {
        write_output("-", &bytes, true)
    }
}
