//! A self-signed X.509 certificate for a key that lives on the handset,
//! for programs that only look at certificates (NSS, Firefox,
//! systemd-cryptenroll). The TBSCertificate is built here; the handset
//! signs its SHA-256 DigestInfo with `CKM_RSA_PKCS` (so only the digest
//! crosses the link); the certificate is checked against the public key,
//! then stored next to the key with the key's `CKA_ID`.

use std::str::FromStr;
use std::time::Duration;

use phonecsp_protocol::{CkRv, HashAlg};
use rand::RngCore;
use rsa::traits::PublicKeyParts;
use x509_cert::der::asn1::{BitString, OctetString};
use x509_cert::der::{Any, Decode, Encode, oid::ObjectIdentifier};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::time::Validity;
use x509_cert::{Certificate, TbsCertificate, Version};

use phonecsp::blocking::Client;
use phonecsp::input::SignInput;
use phonecsp::mechanism::Signing;
use phonecsp::{Error, Result, local};
use phonecsp_protocol::ck::{cka, cko};

/// sha256WithRSAEncryption (RFC 4055).
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");

/// What to put in the certificate.
#[derive(Debug, Clone)]
pub struct SelfSignRequest<'a> {
    pub handset: &'a str,
    pub token: &'a str,
    /// The key's `CKA_ID`; the certificate gets the same.
    pub id: &'a [u8],
    /// An RFC 4514 name such as `CN=alice's phone`; `None`: `CN=<key label>`.
    pub subject: Option<&'a str>,
    /// Validity from now, in days.
    pub days: u32,
}

fn der_error(e: x509_cert::der::Error) -> Error {
    Error::token(CkRv::GENERAL_ERROR, format!("DER: {e}"))
}

fn extension(oid: ObjectIdentifier, critical: bool, value: &impl Encode) -> Result<Extension> {
    Ok(Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(der_error)?).map_err(der_error)?,
    })
}

/// The TBSCertificate for `spki`, self-issued by `subject`.
fn tbs(subject: &Name, spki: &[u8], days: u32) -> Result<TbsCertificate> {
    let mut serial = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    // Positive and of full length.
    serial[0] = (serial[0] & 0x7f) | 0x40;
    let algorithm = AlgorithmIdentifierOwned {
        oid: SHA256_WITH_RSA,
        parameters: Some(Any::null()),
    };
    let validity =
        Validity::from_now(Duration::from_secs(u64::from(days) * 86_400)).map_err(der_error)?;
    let extensions: Extensions = vec![
        extension(
            BASIC_CONSTRAINTS,
            true,
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
        )?,
        extension(
            KEY_USAGE,
            true,
            &KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
        )?,
    ];
    Ok(TbsCertificate {
        version: Version::V3,
        serial_number: SerialNumber::new(&serial).map_err(der_error)?,
        signature: algorithm,
        issuer: subject.clone(),
        validity,
        subject: subject.clone(),
        subject_public_key_info: SubjectPublicKeyInfoOwned::from_der(spki).map_err(der_error)?,
        issuer_unique_id: None,
        subject_unique_id: None,
        extensions: Some(extensions),
    })
}

/// Has the handset sign a certificate for its own key and stores it on the
/// token; returns the certificate (DER). Needs a logged-in client.
pub fn self_sign(client: &Client, req: &SelfSignRequest<'_>) -> Result<Vec<u8>> {
    if req.days == 0 {
        return Err(Error::token(
            CkRv::ARGUMENTS_BAD,
            "--days must be at least 1",
        ));
    }
    let attrs = client.get_attributes(req.handset, req.token, cko::PUBLIC_KEY, req.id)?;
    let (Some(n), Some(e)) = (attrs.get(&cka::MODULUS), attrs.get(&cka::PUBLIC_EXPONENT)) else {
        return Err(Error::token(
            CkRv::KEY_HANDLE_INVALID,
            "the handset reported no RSA public key for that id",
        ));
    };
    let label = attrs
        .get(&cka::LABEL)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .unwrap_or_default();
    let public = local::public_key(n, e)?;
    let spki = local::spki_der(&public)?;
    let subject_text = match req.subject {
        Some(s) => s.to_owned(),
        None if label.is_empty() => format!("CN={}", req.token),
        None => format!("CN={label}"),
    };
    let subject = Name::from_str(&subject_text).map_err(|e| {
        Error::token(
            CkRv::ARGUMENTS_BAD,
            format!("'{subject_text}' is not a distinguished name (RFC 4514, e.g. CN=name): {e}"),
        )
    })?;
    let tbs = tbs(&subject, &spki, req.days)?;
    let tbs_der = tbs.to_der().map_err(der_error)?;
    let input = SignInput::once(Signing::Pkcs1(HashAlg::Sha256), public.size(), &tbs_der)?;
    let (mechanism, params) = input.wire();
    let signature = client.sign(
        req.handset,
        req.token,
        req.id,
        mechanism,
        &params,
        &input.data,
    )?;
    // Never store a certificate whose signature does not verify.
    if !local::verify_prepared(&public, &input, &signature) {
        return Err(Error::token(
            CkRv::SIGNATURE_INVALID,
            "the handset's signature does not verify with the key's public half",
        ));
    }
    let cert = Certificate {
        signature_algorithm: tbs.signature.clone(),
        tbs_certificate: tbs,
        signature: BitString::from_bytes(&signature).map_err(der_error)?,
    };
    let der = cert.to_der().map_err(der_error)?;
    client.import_certificate(req.handset, req.token, req.id, &label, &der)?;
    Ok(der)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs8::EncodePublicKey;

    #[test]
    fn a_tbs_certificate_round_trips() {
        let key = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
        let spki = key.to_public_key().to_public_key_der().unwrap();
        let name = Name::from_str("CN=phonecsp test,O=phonecsp").unwrap();
        let t = tbs(&name, spki.as_bytes(), 30).unwrap();
        let der = t.to_der().unwrap();
        let back = TbsCertificate::from_der(&der).unwrap();
        assert_eq!(back.subject, back.issuer);
        assert_eq!(back.version, Version::V3);
        assert_eq!(back.serial_number.as_bytes().len(), 16);
        assert!(Name::from_str("not a name").is_err());
    }
}
