//! A self-signed X.509 certificate for a key that lives on the handset,
//! for programs that only look at certificates (NSS, Firefox,
//! systemd-cryptenroll). The TBSCertificate is built here; the handset
//! signs its SHA-256 DigestInfo with `CKM_RSA_PKCS`, or its SHA-256
//! (P-256) or SHA-384 (P-384) digest with `CKM_ECDSA`, so only a digest
//! crosses the link; an Ed25519 key signs the TBSCertificate itself
//! (`CKM_EDDSA`, RFC 8410), which must then fit the link's 512 bytes. The
//! certificate is checked against the public key, then stored next to the
//! key with the key's `CKA_ID`.

use std::str::FromStr;
use std::time::Duration;

use phonecsp_protocol::{CkRv, HashAlg};
use rand::RngCore;
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
use phonecsp::local::PublicKey;
use phonecsp::mechanism::Signing;
use phonecsp::{Error, Result, local};
use phonecsp_protocol::Curve;

/// sha256WithRSAEncryption (RFC 4055).
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// ecdsa-with-SHA256 and ecdsa-with-SHA384 (RFC 5758), id-Ed25519 (RFC 8410).
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// How a key of each type signs its certificate: the signature algorithm
/// (RFC 5758 and 8410 give the EC ones no parameters) and the mechanism.
fn signature_scheme(key: &PublicKey) -> (AlgorithmIdentifierOwned, Signing) {
    let (oid, parameters, signing) = match key {
        PublicKey::Rsa(_) => (
            SHA256_WITH_RSA,
            Some(Any::null()),
            Signing::Pkcs1(HashAlg::Sha256),
        ),
        PublicKey::Ec(k) => match k.curve {
            Curve::P256 => (ECDSA_WITH_SHA256, None, Signing::Ecdsa(HashAlg::Sha256)),
            Curve::P384 => (ECDSA_WITH_SHA384, None, Signing::Ecdsa(HashAlg::Sha384)),
            Curve::Ed25519 => (ED25519, None, Signing::Eddsa),
        },
    };
    (AlgorithmIdentifierOwned { oid, parameters }, signing)
}
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
fn tbs(
    subject: &Name,
    spki: &[u8],
    days: u32,
    algorithm: AlgorithmIdentifierOwned,
    usage: KeyUsage,
) -> Result<TbsCertificate> {
    let mut serial = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut serial);
    // Positive and of full length.
    serial[0] = (serial[0] & 0x7f) | 0x40;
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
        extension(KEY_USAGE, true, &usage)?,
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
    let (public, label) = client.public_key(req.handset, req.token, req.id)?;
    let spki = public.spki_der()?;
    let (algorithm, signing) = signature_scheme(&public);
    // An RSA key also encrypts (key transport); an EC key only signs here.
    let usage = match public {
        PublicKey::Rsa(_) => KeyUsage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
        PublicKey::Ec(_) => KeyUsage(KeyUsages::DigitalSignature.into()),
    };
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
    let tbs = tbs(&subject, &spki, req.days, algorithm, usage)?;
    let tbs_der = tbs.to_der().map_err(der_error)?;
    let input = SignInput::once(signing, public.signature_len(), &tbs_der).map_err(|rv| {
        if signing == Signing::Eddsa && rv == CkRv::DATA_LEN_RANGE {
            Error::token(
                rv,
                format!(
                    "an Ed25519 key signs the whole certificate body, and this one is {} bytes, \
                     more than the link's 512: give a shorter --subject",
                    tbs_der.len()
                ),
            )
        } else {
            Error::from(rv)
        }
    })?;
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
    if !local::verify_prepared_any(&public, &input, &signature) {
        return Err(Error::token(
            CkRv::SIGNATURE_INVALID,
            "the handset's signature does not verify with the key's public half",
        ));
    }
    // X.509 carries an ECDSA signature in DER (RFC 5480), the others raw.
    let signature = match signing {
        Signing::Ecdsa(_) => local::ecdsa_rs_to_der(&signature)?,
        _ => signature,
    };
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
        let public = PublicKey::Rsa(key.to_public_key());
        let (alg, _) = signature_scheme(&public);
        let usage = KeyUsage(KeyUsages::DigitalSignature.into());
        let t = tbs(&name, spki.as_bytes(), 30, alg, usage).unwrap();
        let der = t.to_der().unwrap();
        let back = TbsCertificate::from_der(&der).unwrap();
        assert_eq!(back.subject, back.issuer);
        assert_eq!(back.version, Version::V3);
        assert_eq!(back.serial_number.as_bytes().len(), 16);
        assert!(Name::from_str("not a name").is_err());
    }

    /// An EC key's certificate names its ECDSA or Ed25519 signature
    /// algorithm, without parameters (RFC 5758, RFC 8410).
    #[test]
    fn ec_keys_sign_with_their_own_algorithms() {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let sk = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let point = sk.public_key().to_encoded_point(false).as_bytes().to_vec();
        let public = PublicKey::Ec(local::EcPublicKey::new(Curve::P256, &point).unwrap());
        let (alg, signing) = signature_scheme(&public);
        assert_eq!(alg.oid, ECDSA_WITH_SHA256);
        assert!(alg.parameters.is_none());
        assert_eq!(signing, Signing::Ecdsa(HashAlg::Sha256));
        let name = Name::from_str("CN=ec").unwrap();
        let usage = KeyUsage(KeyUsages::DigitalSignature.into());
        let t = tbs(&name, &public.spki_der().unwrap(), 30, alg, usage).unwrap();
        let back = TbsCertificate::from_der(&t.to_der().unwrap()).unwrap();
        assert_eq!(
            back.subject_public_key_info.subject_public_key.raw_bytes(),
            &point[..]
        );
    }
}
