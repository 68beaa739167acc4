//! `phonecsp status`, `handsets`, `pair` and `unpair`: the handsets the
//! daemon knows, their links, and their pairing.

use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::confirm::{Confirm, confirm};
use crate::failure::Failure;
use crate::output::{print_json, print_text, render_table, say, say_list};
use crate::secret::{ENV_PAIRING_CODE, get_secret};
use crate::session::{Context, handset};

pub(crate) fn status(cx: &Context) -> Result<(), Failure> {
    let version = cx.client.version()?;
    let handsets = cx.client.list_handsets()?;
    let stats = cx.client.statistics()?;
    if cx.json {
        let hs: Vec<Value> = handsets
            .iter()
            .map(|h| {
                let s = stats.get(&h.name).copied().unwrap_or_default();
                json!({
                    "name": h.name,
                    "transport": h.transport,
                    "fingerprint": h.fingerprint,
                    "connected": h.connected,
                    "statistics": {
                        "requests": s.requests,
                        "bytes_out": s.bytes_out,
                        "bytes_in": s.bytes_in,
                    },
                })
            })
            .collect();
        return print_json(&json!({ "version": version, "handsets": hs }));
    }
    let rows: Vec<Vec<String>> = handsets
        .iter()
        .map(|h| {
            let s = stats.get(&h.name).copied().unwrap_or_default();
            vec![
                h.name.clone(),
                yes_no(h.connected),
                s.requests.to_string(),
                s.bytes_out.to_string(),
                s.bytes_in.to_string(),
                fingerprint(&h.fingerprint),
            ]
        })
        .collect();
    let mut text = format!("{version}\n");
    if rows.is_empty() {
        text.push_str("no handset is configured\n");
    } else {
        text.push('\n');
        text.push_str(&render_table(
            &[
                "HANDSET",
                "CONNECTED",
                "REQUESTS",
                "BYTES-OUT",
                "BYTES-IN",
                "FINGERPRINT",
            ],
            &rows,
        ));
    }
    print_text(&text)
}

pub(crate) fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

pub(crate) fn fingerprint(f: &str) -> String {
    if f.is_empty() {
        "(not paired)".into()
    } else {
        f.into()
    }
}

pub(crate) fn handsets(cx: &Context) -> Result<(), Failure> {
    let list = cx.client.list_handsets()?;
    say_list(
        cx,
        &list,
        &["NAME", "CONNECTED", "TRANSPORT", "FINGERPRINT"],
        |h| {
            json!({
                "name": h.name,
                "transport": h.transport,
                "fingerprint": h.fingerprint,
                "connected": h.connected,
            })
        },
        |h| {
            vec![
                h.name.clone(),
                yes_no(h.connected),
                h.transport.clone(),
                fingerprint(&h.fingerprint),
            ]
        },
    )
}

pub(crate) fn pair(cx: &Context, code: Option<String>, qr: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    let code = match code {
        Some(c) => Zeroizing::new(c.into_bytes()),
        None if qr => show_qr(&h)?,
        None => get_secret(ENV_PAIRING_CODE, &format!("Pairing code shown on {h}: "))?,
    };
    let code = std::str::from_utf8(&code)
        .map_err(|_| Failure::Usage("the pairing code is not valid UTF-8".into()))?
        .trim();
    if code.is_empty() {
        return Err(Failure::Usage("the pairing code is empty".into()));
    }
    let fp = cx.client.pair(&h, code)?;
    say(
        cx,
        json!({ "handset": h, "fingerprint": fp }),
        format!("paired with {h}\nfingerprint: {fp}\n"),
    )
}

/// Makes a one-time code and shows it as a QR code (and as text) for the
/// phone to scan, then waits for Enter. The long code: a QR code carries
/// its 128 bits as easily as eight digits.
fn show_qr(h: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return Err(Failure::Usage(
            "--qr needs a terminal: it waits for Enter once the phone has the code".into(),
        ));
    }
    let code = phonecsp_protocol::PairingCode::generate();
    let text = code.display();
    let qr = qrcode::QrCode::new(text.as_bytes())
        .map_err(|e| Failure::Usage(format!("the QR code: {e}")))?;
    let drawn = qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    eprintln!(
        "{drawn}\nScan this on {h}, or type `phonecsp-handset pair --code {}` there.\n\
         Press Enter here once the phone has it.",
        text.as_str()
    );
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("reading Enter: {e}")))?;
    Ok(Zeroizing::new(text.as_bytes().to_vec()))
}

pub(crate) fn unpair(cx: &Context, yes: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    // The handset's name is not checked against the list here: that list
    // holds the handsets the caller may use, and an administrator whom
    // polkit lets unpair may use none. The daemon checks the name before
    // it asks polkit.
    confirm(
        &format!("unpair {h} (pairing again needs a new code from the phone)"),
        Confirm::TypeName(&h),
        yes,
    )?;
    cx.client.unpair(&h)?;
    say(
        cx,
        json!({ "handset": h, "unpaired": true }),
        format!("forgot the pinned key of {h}\n"),
    )
}
