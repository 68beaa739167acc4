//! `phonecsp import`: a private key made elsewhere, onto the phone.
//!
//! The file is read here into wiped memory, turned into unencrypted
//! PKCS#8 DER (the one form `+CKIMPORT` carries), and sent to the daemon,
//! which sends it to the phone inside the Noise session. Nothing is
//! written anywhere on the computer. PKCS#8 is passed on as it is, so a
//! key kind the phone learns needs nothing here; an OpenSSH or PKCS#1 RSA
//! key is converted.
//!
//! Encrypted keys (PKCS#8 `ENCRYPTED PRIVATE KEY`, a passphrase-protected
//! OpenSSH key, PKCS#1 with `Proc-Type: 4,ENCRYPTED`) are refused with the
//! command that decrypts one into a pipe: asking the passphrase here would
//! need the ciphers and KDFs of both formats (scrypt, PBKDF2, bcrypt-pbkdf)
//! in this program for no gain in safety, since the decrypted key is in
//! memory here either way.

use std::io::Read;

use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::der::Decode;
use rsa::pkcs8::{EncodePrivateKey, PrivateKeyInfo};
use serde_json::json;
use zeroize::Zeroizing;

use crate::failure::{Failure, io_failure};
use crate::id::Id;
use crate::output::{hex, say};
use crate::session::{Context, ensure_login, handset};

/// Why a file cannot be imported, in the words the person reads.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum KeyFileError {
    #[error(
        "{0} is encrypted: decrypt it into a pipe, not a file, e.g. \
         `openssl pkey -in {0} | phonecsp import TOKEN -` (PKCS#8) or \
         `ssh-keygen -p` on a copy you then shred (OpenSSH)"
    )]
    Encrypted(String),
    #[error("{0}: not an OpenSSH or PKCS#8 private key ({1})")]
    Malformed(String, String),
    #[error("{0}: a {1} key; the phone imports RSA keys (2048, 3072 or 4096 bits)")]
    Unsupported(String, String),
}

/// The file's private key as unencrypted PKCS#8 DER.
pub(crate) fn pkcs8_of(name: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let malformed = |why: &str| KeyFileError::Malformed(name.to_owned(), why.to_owned());
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| bytes.first() != Some(&0x30));
    let Some(text) = text else {
        // Binary: PKCS#8 DER, checked for shape here and in full on the phone.
        if PrivateKeyInfo::from_der(bytes).is_ok() {
            return Ok(Zeroizing::new(bytes.to_vec()));
        }
        return match RsaPrivateKey::from_pkcs1_der(bytes) {
            // PKCS#1 DER, as `openssl pkey -outform DER` writes an RSA key.
            Ok(key) => rsa_pkcs8(name, &key),
            // An EncryptedPrivateKeyInfo is a SEQUENCE of an algorithm and an
            // OCTET STRING; a PrivateKeyInfo starts with its version number.
            Err(_) if looks_encrypted(bytes) => Err(KeyFileError::Encrypted(name.to_owned())),
            Err(_) => Err(malformed("DER that is neither PKCS#8 nor PKCS#1")),
        };
    };
    let label = text
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("-----BEGIN ")?.strip_suffix("-----"))
        .ok_or_else(|| malformed("no PEM block"))?;
    match label {
        "PRIVATE KEY" => {
            let (_, doc) = rsa::pkcs8::SecretDocument::from_pem(pem_block(text, label))
                .map_err(|e| malformed(&e.to_string()))?;
            PrivateKeyInfo::from_der(doc.as_bytes()).map_err(|e| malformed(&e.to_string()))?;
            Ok(Zeroizing::new(doc.as_bytes().to_vec()))
        }
        "ENCRYPTED PRIVATE KEY" => Err(KeyFileError::Encrypted(name.to_owned())),
        "RSA PRIVATE KEY" => {
            if text.contains("Proc-Type: 4,ENCRYPTED") {
                return Err(KeyFileError::Encrypted(name.to_owned()));
            }
            let key = RsaPrivateKey::from_pkcs1_pem(pem_block(text, label))
                .map_err(|e| malformed(&e.to_string()))?;
            rsa_pkcs8(name, &key)
        }
        "OPENSSH PRIVATE KEY" => {
            let key = ssh_key::PrivateKey::from_openssh(pem_block(text, label))
                .map_err(|e| malformed(&e.to_string()))?;
            if key.is_encrypted() {
                return Err(KeyFileError::Encrypted(name.to_owned()));
            }
            match key.key_data() {
                ssh_key::private::KeypairData::Rsa(pair) => {
                    let key = rsa_of_openssh(pair).ok_or_else(|| malformed("a bad RSA key"))?;
                    rsa_pkcs8(name, &key)
                }
                other => Err(KeyFileError::Unsupported(
                    name.to_owned(),
                    other
                        .algorithm()
                        .map(|a| a.to_string())
                        .unwrap_or_else(|_| "unknown".into()),
                )),
            }
        }
        other => Err(malformed(&format!("a PEM block of {other}"))),
    }
}

/// From the first `-----BEGIN LABEL-----` to its end line, so that text
/// around the block (as `openssl` writes) is left out.
fn pem_block<'a>(text: &'a str, label: &str) -> &'a str {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).unwrap_or(0);
    let stop = text[start..]
        .find(&end)
        .map(|i| start + i + end.len())
        .unwrap_or(text.len());
    &text[start..stop]
}

/// Whether DER that is no PrivateKeyInfo has an EncryptedPrivateKeyInfo's
/// shape: its first element is a SEQUENCE (an algorithm), not an INTEGER.
fn looks_encrypted(der: &[u8]) -> bool {
    // SEQUENCE, its length (short or long form), then the first element.
    let at = match der.get(1) {
        Some(l) if l & 0x80 == 0 => 2,
        Some(l) => 2 + usize::from(l & 0x7f),
        None => return false,
    };
    der.get(at) == Some(&0x30)
}

/// The RSA key of an OpenSSH key pair, from its numbers (n, e, d and the
/// primes; the CRT values are computed again), checked.
fn rsa_of_openssh(pair: &ssh_key::private::RsaKeypair) -> Option<RsaPrivateKey> {
    let n = |m: &ssh_key::Mpint| m.as_positive_bytes().map(rsa::BigUint::from_bytes_be);
    let key = RsaPrivateKey::from_components(
        n(&pair.public.n)?,
        n(&pair.public.e)?,
        n(&pair.private.d)?,
        vec![n(&pair.private.p)?, n(&pair.private.q)?],
    )
    .ok()?;
    key.validate().ok()?;
    Some(key)
}

fn rsa_pkcs8(name: &str, key: &RsaPrivateKey) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    key.to_pkcs8_der()
        .map(|doc| doc.to_bytes())
        .map_err(|e| KeyFileError::Malformed(name.to_owned(), e.to_string()))
}

/// Reads the whole key file (or stdin for `-`) into wiped memory.
fn read_key_file(path: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut out = Zeroizing::new(Vec::new());
    let r = if path == "-" {
        std::io::stdin().lock().read_to_end(&mut out)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut out))
    };
    r.map_err(|e| io_failure(path, e))?;
    Ok(out)
}

pub(crate) fn import(
    cx: &Context,
    token: &str,
    file: &str,
    id: Option<Id>,
    label: &str,
) -> Result<(), Failure> {
    let name = if file == "-" { "stdin" } else { file };
    let bytes = read_key_file(file)?;
    let pkcs8 = pkcs8_of(name, &bytes).map_err(|e| Failure::Failed(e.to_string()))?;
    drop(bytes);
    eprintln!(
        "phonecsp: warning: an imported key was once outside the phone: the phone records \
         it as imported (CKA_LOCAL false, not never-extractable), and any copy of {name} \
         or its backups can still use it; destroy them if the phone is to be its only home"
    );
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    let id = id.map(|i| i.0).unwrap_or_default();
    let key = cx.client.import_key(&h, token, &id, label, &pkcs8)?;
    let bits = key.modulus.len() * 8;
    let text = format!(
        "imported an RSA-{bits} key pair into {h}/{token} (it was made elsewhere)\nid:       {}\nexponent: {}\n",
        hex(&key.id),
        hex(&key.exponent)
    );
    let json = json!({
        "handset": h,
        "token": token,
        "id": hex(&key.id),
        "bits": bits,
        "label": label,
        "local": false,
        "modulus": hex(&key.modulus),
        "exponent": hex(&key.exponent),
    });
    say(cx, json, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> RsaPrivateKey {
        RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap()
    }

    #[test]
    fn pkcs8_pkcs1_and_openssh_give_the_same_pkcs8() {
        use rsa::pkcs1::EncodeRsaPrivateKey;
        use rsa::pkcs8::LineEnding;
        let k = key();
        let want = k.to_pkcs8_der().unwrap();
        let pem = k.to_pkcs8_pem(LineEnding::LF).unwrap();
        let framed = format!("Private-Key: (2048 bit)\n{}", pem.as_str());
        assert_eq!(
            pkcs8_of("k", framed.as_bytes()).unwrap().as_slice(),
            want.as_bytes()
        );
        assert_eq!(
            pkcs8_of("k", want.as_bytes()).unwrap().as_slice(),
            want.as_bytes()
        );
        let pkcs1 = k.to_pkcs1_pem(LineEnding::LF).unwrap();
        let got = pkcs8_of("k", pkcs1.as_bytes()).unwrap();
        assert_eq!(RsaPrivateKey::from_pkcs8_der(&got).unwrap(), k);
        let pair = ssh_key::private::RsaKeypair::try_from(&k).unwrap();
        let ssh = ssh_key::PrivateKey::new(pair.into(), "me@there").unwrap();
        let text = ssh.to_openssh(ssh_key::LineEnding::LF).unwrap();
        let got = pkcs8_of("k", text.as_bytes()).unwrap();
        use rsa::pkcs8::DecodePrivateKey;
        assert_eq!(RsaPrivateKey::from_pkcs8_der(&got).unwrap(), k);
    }

    #[test]
    fn encrypted_and_malformed_files_are_refused_by_name() {
        let enc =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n";
        assert_eq!(
            pkcs8_of("k.pem", enc.as_bytes()),
            Err(KeyFileError::Encrypted("k.pem".into()))
        );
        let legacy = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(
            pkcs8_of("k", legacy.as_bytes()),
            Err(KeyFileError::Encrypted(_))
        ));
        // EncryptedPrivateKeyInfo DER: an algorithm, then the ciphertext.
        let der = [
            0x30, 0x17, 0x30, 0x0b, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05,
            0x0d, 0x04, 0x08, 0, 1, 2, 3, 4, 5, 6, 0xff,
        ];
        assert!(matches!(
            pkcs8_of("k", &der),
            Err(KeyFileError::Encrypted(_))
        ));
        for bad in [
            &b"hello"[..],
            b"-----BEGIN CERTIFICATE-----\nAA\n-----END CERTIFICATE-----\n",
        ] {
            let e = pkcs8_of("k", bad).unwrap_err();
            assert!(matches!(e, KeyFileError::Malformed(..)), "{e}");
        }
        let der = key().to_pkcs8_der().unwrap();
        let cut = &der.as_bytes()[..der.as_bytes().len() - 3];
        assert!(matches!(
            pkcs8_of("k", cut),
            Err(KeyFileError::Malformed(..))
        ));
    }
}
