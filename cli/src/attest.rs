//! `phonecsp attest`: a phone's signed statement about one of its keys,
//! and the check of one against the phones this computer paired with
//! (docs/attestation.md).

use phonecsp_protocol::attest::{AttestError, Pinned, Statement, check};
use phonecsp_protocol::noise::fingerprint;
use serde_json::json;

use crate::failure::Failure;
use crate::id::Id;
use crate::output::{hex, read_input, say, write_output};
use crate::session::{Context, handset};

/// Bytes of the nonce `attest` picks when it is given none.
const NONCE_LEN: usize = 32;

/// `phonecsp attest TOKEN --key ID`: the statement's bytes to `out`, what
/// it says (and the nonce) on stderr.
pub(crate) fn attest(
    cx: &Context,
    token: &str,
    key: &Id,
    nonce: Option<&Id>,
    out: &str,
) -> Result<(), Failure> {
    let nonce = match nonce {
        Some(n) => n.0.clone(),
        None => {
            let mut n = vec![0u8; NONCE_LEN];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut n);
            n
        }
    };
    let h = handset(cx)?;
    let statement = cx.client.attest_key(&h, token, &key.0, &nonce)?;
    // The daemon checked it; read it here only to say what it says.
    let s = Statement::verify(&statement).map_err(|e| Failure::Failed(e.to_string()))?;
    if cx.json {
        write_output(out, &statement, false)?;
        let mut v = describe(&h, &s);
        v["out"] = json!(out);
        return say(cx, v, String::new());
    }
    eprintln!("{}", text(&h, &s));
    write_output(out, &statement, false)
}

/// `phonecsp attest --verify FILE [--nonce HEX]`: exit 0 if the statement
/// checks against a paired phone's pinned keys (and the nonce).
pub(crate) fn verify(cx: &Context, file: &str, nonce: Option<&Id>) -> Result<(), Failure> {
    let bytes = read_input(file)?;
    let failed = |e: AttestError| Failure::Failed(format!("{file}: {e}"));
    let claimed = Statement::verify(&bytes).map_err(failed)?;
    let want = fingerprint(&claimed.handset_key);
    let phone = cx
        .client
        .list_handsets()?
        .into_iter()
        .find(|h| h.fingerprint == want)
        .ok_or_else(|| {
            Failure::Failed(format!(
                "{file}: the statement is from a phone this computer has not paired with \
                 (identity {want})"
            ))
        })?;
    let key = cx.client.attestation_key(&phone.name)?;
    let attestation_key = <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
        Failure::Failed(format!(
            "{file}: no attestation key is pinned for '{}' yet: `phonecsp attest` pins it \
             at the phone's first statement",
            phone.name
        ))
    })?;
    let pinned = Pinned {
        name: &phone.name,
        handset_key: claimed.handset_key,
        attestation_key,
    };
    let s = check(&bytes, &pinned, nonce.map(|n| n.0.as_slice())).map_err(failed)?;
    let mut said = text(&phone.name, &s);
    said.push_str(if nonce.is_some() {
        "\nverified: signed by the phone paired as '"
    } else {
        "\nverified (freshness NOT checked: give --nonce): signed by the phone paired as '"
    });
    said.push_str(&phone.name);
    said.push_str("'\n");
    let mut v = describe(&phone.name, &s);
    v["verified"] = json!(true);
    v["nonce_checked"] = json!(nonce.is_some());
    say(cx, v, said)
}

fn describe(handset: &str, s: &Statement) -> serde_json::Value {
    json!({
        "handset": handset,
        "handset_name": s.handset,
        "identity": fingerprint(&s.handset_key),
        "token": s.container,
        "id": hex(&s.id),
        "label": s.label,
        "public_key": hex(&s.spki),
        "local": s.local(),
        "never_extractable": s.flags & phonecsp_protocol::attest::flags::NEVER_EXTRACTABLE != 0,
        "always_sensitive": s.flags & phonecsp_protocol::attest::flags::ALWAYS_SENSITIVE != 0,
        "policy": s.policy,
        "nonce": hex(&s.nonce),
    })
}

fn text(handset: &str, s: &Statement) -> String {
    let made = if s.local() {
        "generated on the phone (local, never extractable, always sensitive)"
    } else {
        "IMPORTED: made elsewhere, once outside the phone (not local)"
    };
    format!(
        "statement of '{handset}' (identity {}) about key {} ('{}') of token '{}'\n\
         key:    {made}\npolicy: {}\nnonce:  {}",
        fingerprint(&s.handset_key),
        hex(&s.id),
        s.label,
        s.container,
        s.policy,
        hex(&s.nonce)
    )
}
