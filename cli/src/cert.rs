//! `phonecsp cert`: import, export, delete and self-sign the certificates
//! stored next to the keys.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use phonecsp::Error;
use phonecsp_protocol::CkRv;
use phonecsp_protocol::ck::{cka, cko};
use serde_json::json;

use crate::confirm::{Confirm, confirm};
use crate::failure::Failure;
use crate::id::Id;
use crate::output::{hex, print_json, read_input, say, write_output};
use crate::selfsign;
use crate::session::{Context, ensure_login, handset};

/// DER from PEM (`-----BEGIN CERTIFICATE-----`) or DER.
pub(crate) fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let text = String::from_utf8_lossy(bytes);
    if let Some(start) = text.find("-----BEGIN CERTIFICATE-----") {
        let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
        let end = body
            .find("-----END CERTIFICATE-----")
            .ok_or_else(|| Failure::Usage("the PEM certificate has no END line".into()))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        return BASE64
            .decode(b64)
            .map_err(|e| Failure::Usage(format!("the PEM certificate is not valid base64: {e}")));
    }
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    Err(Failure::Usage(
        "not a certificate: expected PEM (-----BEGIN CERTIFICATE-----) or DER".into(),
    ))
}

pub(crate) fn to_pem(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

pub(crate) fn cert_import(
    cx: &Context,
    token: &str,
    id: &Id,
    label: &str,
    file: &str,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    let der = certificate_der(&read_input(file)?)?;
    ensure_login(cx, &h, token)?;
    cx.client
        .import_certificate(&h, token, &id.0, label, &der)?;
    say(
        cx,
        json!({ "handset": h, "token": token, "id": hex(&id.0), "length": der.len() }),
        format!(
            "imported the certificate ({} bytes) into {h}/{token} as id {}\n",
            der.len(),
            hex(&id.0)
        ),
    )
}

pub(crate) fn cert_self_sign(
    cx: &Context,
    token: &str,
    id: &Id,
    subject: Option<&str>,
    days: u32,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    let req = selfsign::SelfSignRequest {
        handset: &h,
        token,
        id: &id.0,
        subject,
        days,
    };
    let der = selfsign::self_sign(&cx.client, &req)?;
    say(
        cx,
        json!({ "handset": h, "token": token, "id": hex(&id.0), "length": der.len() }),
        format!(
            "the handset signed a certificate ({} bytes) for key {} in {h}/{token}\n",
            der.len(),
            hex(&id.0)
        ),
    )
}

pub(crate) fn cert_export(
    cx: &Context,
    token: &str,
    id: &Id,
    out: &str,
    pem: bool,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    let attrs = cx
        .client
        .get_attributes(&h, token, cko::CERTIFICATE, &id.0)?;
    let der = attrs
        .get(&cka::VALUE)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Failure::Failed(format!(
                "{h}/{token} has no certificate with id {}",
                hex(&id.0)
            ))
        })?;
    let data = if pem {
        to_pem(der).into_bytes()
    } else {
        der.clone()
    };
    if cx.json {
        if out == "-" {
            return print_json(&json!({
                "id": hex(&id.0),
                "certificate": BASE64.encode(der),
                "pem": to_pem(der),
            }));
        }
        write_output(out, &data, false)?;
        return print_json(&json!({ "id": hex(&id.0), "out": out, "length": data.len() }));
    }
    write_output(out, &data, false)
}

pub(crate) fn cert_delete(cx: &Context, token: &str, id: &Id, yes: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    // Ask about a certificate that is there, with its label.
    let cert = cx
        .client
        .list_objects(&h, token)?
        .into_iter()
        .find(|o| o.class == cko::CERTIFICATE && o.id == id.0)
        .ok_or_else(|| {
            Error::token(
                CkRv::OBJECT_HANDLE_INVALID,
                format!("no certificate with id {} in {h}/{token}", hex(&id.0)),
            )
        })?;
    let label = match cert.label.as_str() {
        "" => String::new(),
        l => format!(" ('{l}')"),
    };
    confirm(
        &format!(
            "delete the certificate {}{label} from {h}/{token}",
            hex(&id.0)
        ),
        Confirm::YesNo,
        yes,
    )?;
    ensure_login(cx, &h, token)?;
    cx.client
        .delete_object(&h, token, cko::CERTIFICATE, &id.0)?;
    say(
        cx,
        json!({ "handset": h, "token": token, "id": hex(&id.0), "deleted": true }),
        format!("deleted the certificate {} from {h}/{token}\n", hex(&id.0)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_and_der() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        assert_eq!(certificate_der(&der).ok(), Some(der.clone()));
        assert_eq!(certificate_der(to_pem(&der).as_bytes()).ok(), Some(der));
        assert!(certificate_der(b"hello").is_err());
    }
}
