//! `phonecsp import`: a private key made elsewhere, onto the phone.
//!
//! The file is read here into wiped memory, turned into unencrypted
//! PKCS#8 DER (the one form `+CKIMPORT` carries), and sent to the daemon,
//! which sends it to the phone inside the Noise session. Nothing is
//! written anywhere on the computer. An RSA PKCS#8 is passed on as it is,
//! and one of a kind not known here too, for the phone to judge; an
//! OpenSSH or PKCS#1 RSA key is converted. An EC key (P-256, P-384,
//! Ed25519) from PKCS#8, SEC1 (`EC PRIVATE KEY`) or OpenSSH is read with
//! the curve crates, which check its scalar against the public key the
//! file carries, and written out again as the curve crates' PKCS#8: every
//! form of one key sends the same bytes. An EC key on another curve
//! (P-521) is refused here, by name, before it leaves this program.
//!
//! Encrypted keys (PKCS#8 `ENCRYPTED PRIVATE KEY`, a passphrase-protected
//! OpenSSH key, PKCS#1 with `Proc-Type: 4,ENCRYPTED`) are refused with the
//! command that decrypts one into a pipe: asking the passphrase here would
//! need the ciphers and KDFs of both formats (scrypt, PBKDF2, bcrypt-pbkdf)
//! in this program for no gain in safety, since the decrypted key is in
//! memory here either way.

use std::io::Read;

use p256::pkcs8::DecodePrivateKey as _;
use phonecsp::local;
use phonecsp_protocol::CkRv;
use phonecsp_protocol::ck::Curve;
use rsa::RsaPrivateKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::der::Decode;
use rsa::pkcs8::{EncodePrivateKey, PrivateKeyInfo};
use zeroize::Zeroizing;

use crate::failure::{Failure, io_failure};
use crate::id::Id;
use crate::keys::{NewKey, say_new_key};
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
    #[error(
        "{0}: a {1} key; the phone imports RSA (2048, 3072 or 4096 bits), P-256, P-384 \
         and Ed25519 keys"
    )]
    Unsupported(String, String),
}

/// An EC private key read from a file, checked, before it is PKCS#8.
enum EcKey {
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    Ed25519(ed25519_dalek::SigningKey),
}

impl EcKey {
    /// The curve crates' PKCS#8 of the key (with its public key), so that
    /// each form of one key sends the same bytes.
    fn pkcs8(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
        match self {
            EcKey::P256(k) => k.to_pkcs8_der(),
            EcKey::P384(k) => k.to_pkcs8_der(),
            EcKey::Ed25519(k) => k.to_pkcs8_der(),
        }
        .map(|doc| doc.to_bytes())
        .map_err(|e| KeyFileError::Malformed(name.to_owned(), e.to_string()))
    }

    /// A PKCS#8 EC key on `curve`, checked by the curve crate: the curve it
    /// names, the scalar's range, and its public key against the scalar.
    fn from_pkcs8(curve: Curve, der: &[u8]) -> Result<EcKey, String> {
        let why = |e: p256::pkcs8::Error| format!("not a valid {} key: {e}", curve.name());
        Ok(match curve {
            Curve::P256 => EcKey::P256(p256::SecretKey::from_pkcs8_der(der).map_err(why)?),
            Curve::P384 => EcKey::P384(p384::SecretKey::from_pkcs8_der(der).map_err(why)?),
            Curve::Ed25519 => {
                EcKey::Ed25519(ed25519_dalek::SigningKey::from_pkcs8_der(der).map_err(why)?)
            }
        })
    }

    /// A SEC1 `ECPrivateKey` (RFC 5915), on the curve it names; the curve
    /// crate checks the scalar and the public key it carries.
    fn from_sec1(name: &str, der: &[u8]) -> Result<EcKey, KeyFileError> {
        let malformed = |why: String| KeyFileError::Malformed(name.to_owned(), why);
        let key = sec1::EcPrivateKey::from_der(der).map_err(|e| malformed(e.to_string()))?;
        let oid = key
            .parameters
            .and_then(|p| p.named_curve())
            .ok_or_else(|| malformed("an EC key that names no curve".into()))?;
        let bad = |e: p256::elliptic_curve::Error| malformed(format!("not a valid key: {e}"));
        match oid.to_string().as_str() {
            "1.2.840.10045.3.1.7" => Ok(EcKey::P256(
                p256::SecretKey::from_sec1_der(der).map_err(bad)?,
            )),
            "1.3.132.0.34" => Ok(EcKey::P384(
                p384::SecretKey::from_sec1_der(der).map_err(bad)?,
            )),
            other => Err(KeyFileError::Unsupported(
                name.to_owned(),
                curve_name(other),
            )),
        }
    }

    /// An OpenSSH ECDSA or Ed25519 key pair: its private key, checked to be
    /// the public key's. `None` for another kind.
    fn from_openssh(
        name: &str,
        data: &ssh_key::private::KeypairData,
    ) -> Option<Result<EcKey, KeyFileError>> {
        use ssh_key::private::{EcdsaKeypair, KeypairData};
        let (key, public) = match data {
            KeypairData::Ecdsa(EcdsaKeypair::NistP256 { public, private }) => (
                p256::SecretKey::from_slice(private.as_slice()).map(EcKey::P256),
                public.as_bytes(),
            ),
            KeypairData::Ecdsa(EcdsaKeypair::NistP384 { public, private }) => (
                p384::SecretKey::from_slice(private.as_slice()).map(EcKey::P384),
                public.as_bytes(),
            ),
            KeypairData::Ed25519(pair) => (
                Ok(EcKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(
                    &pair.private.to_bytes(),
                ))),
                &pair.public.0[..],
            ),
            _ => return None,
        };
        Some(EcKey::checked(name, key, public))
    }

    /// `key`, read from a file, if it is valid and `public` is its public
    /// key.
    fn checked(
        name: &str,
        key: Result<EcKey, p256::elliptic_curve::Error>,
        public: &[u8],
    ) -> Result<EcKey, KeyFileError> {
        let why = |why: &str| KeyFileError::Malformed(name.to_owned(), why.into());
        let key = key.map_err(|_| why("a private key out of range"))?;
        if key.public_point() != public {
            return Err(why("its public key is not its private key's"));
        }
        Ok(key)
    }

    /// The public key: SEC1 uncompressed, or Ed25519's 32 bytes.
    fn public_point(&self) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        match self {
            EcKey::P256(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            EcKey::P384(k) => k.public_key().to_encoded_point(false).as_bytes().to_vec(),
            EcKey::Ed25519(k) => k.verifying_key().to_bytes().to_vec(),
        }
    }
}

/// A curve's common name for its OID, for a refusal.
fn curve_name(oid: &str) -> String {
    match oid {
        "1.3.132.0.35" => "P-521".into(),
        "1.3.132.0.10" => "secp256k1".into(),
        other => format!("EC (curve {other})"),
    }
}

/// PKCS#8 that is an EC key on a curve the phone holds, rewritten as the
/// curve crates write it; any other PKCS#8 as it is, for the phone.
fn checked_pkcs8(name: &str, der: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let malformed = |why: String| KeyFileError::Malformed(name.to_owned(), why);
    let info = PrivateKeyInfo::from_der(der).map_err(|e| malformed(e.to_string()))?;
    match local::pkcs8_curve(der) {
        Ok(Some(curve)) => EcKey::from_pkcs8(curve, der)
            .map_err(malformed)?
            .pkcs8(name),
        Err(rv) if rv == CkRv::KEY_TYPE_INCONSISTENT => {
            let oid = info
                .algorithm
                .parameters_oid()
                .map(|o| o.to_string())
                .unwrap_or_default();
            Err(KeyFileError::Unsupported(name.to_owned(), curve_name(&oid)))
        }
        _ => Ok(Zeroizing::new(der.to_vec())),
    }
}

/// The file's private key as unencrypted PKCS#8 DER.
pub(crate) fn pkcs8_of(name: &str, bytes: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let malformed = |why: &str| KeyFileError::Malformed(name.to_owned(), why.to_owned());
    let text = std::str::from_utf8(bytes)
        .ok()
        .filter(|_| bytes.first() != Some(&0x30));
    let Some(text) = text else {
        // Binary: PKCS#8 DER, checked for shape here (an EC key in full) and
        // in full on the phone.
        if PrivateKeyInfo::from_der(bytes).is_ok() {
            return checked_pkcs8(name, bytes);
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
            checked_pkcs8(name, doc.as_bytes())
        }
        "EC PRIVATE KEY" => {
            if text.contains("Proc-Type: 4,ENCRYPTED") {
                return Err(KeyFileError::Encrypted(name.to_owned()));
            }
            let (_, doc) = rsa::pkcs8::SecretDocument::from_pem(pem_block(text, label))
                .map_err(|e| malformed(&e.to_string()))?;
            EcKey::from_sec1(name, doc.as_bytes())?.pkcs8(name)
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
            let block = pem_block(text, label);
            let key = match ssh_key::PrivateKey::from_openssh(block) {
                Ok(key) => key,
                // ssh-key 0.6 cannot read an ECDSA scalar shorter than the
                // field (one P-256 key in 256 from ssh-keygen, most P-521
                // ones): such a key is read here; another, of a kind the
                // phone does not take, is named by the type its file gives.
                Err(e) => {
                    let file = OpensshFile::read(block);
                    if let Some(ec) = file.as_ref().and_then(|f| ecdsa_of_openssh_file(name, f)) {
                        return ec?.pkcs8(name);
                    }
                    return Err(match file {
                        Some(f) if f.cipher != b"none" => KeyFileError::Encrypted(name.to_owned()),
                        Some(f) if !OPENSSH_TYPES.contains(&f.key_type.as_str()) => {
                            KeyFileError::Unsupported(name.to_owned(), f.key_type)
                        }
                        _ => malformed(&e.to_string()),
                    });
                }
            };
            if key.is_encrypted() {
                return Err(KeyFileError::Encrypted(name.to_owned()));
            }
            if let Some(ec) = EcKey::from_openssh(name, key.key_data()) {
                return ec?.pkcs8(name);
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

/// The OpenSSH key types the phone takes.
const OPENSSH_TYPES: [&str; 4] = [
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ssh-ed25519",
];

/// An OpenSSH private key file's fields (PROTOCOL.key), read apart from
/// ssh-key for what it cannot read.
struct OpensshFile {
    cipher: Vec<u8>,
    /// The first public key's type.
    key_type: String,
    /// The private section (encrypted unless `cipher` is `none`).
    private: Zeroizing<Vec<u8>>,
}

/// A reader of SSH wire fields: a u32, or a u32 length and its bytes.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn u32(&mut self) -> Option<u32> {
        let (four, rest) = self.0.split_first_chunk::<4>()?;
        self.0 = rest;
        Some(u32::from_be_bytes(*four))
    }

    fn string(&mut self) -> Option<&'a [u8]> {
        let len = usize::try_from(self.u32()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (value, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(value)
    }
}

impl OpensshFile {
    /// Magic, cipher, KDF, KDF options, key count, the first public key
    /// (its type leads it), the private section; `None` if not so shaped.
    fn read(block: &str) -> Option<OpensshFile> {
        use base64::Engine as _;
        let body: Zeroizing<String> = Zeroizing::new(
            block
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(str::trim)
                .collect(),
        );
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .ok()?,
        );
        let mut f = Fields(bytes.strip_prefix(b"openssh-key-v1\0")?);
        let cipher = f.string()?.to_vec();
        f.string()?;
        f.string()?;
        f.u32()?;
        let key_type = Fields(f.string()?).string()?;
        let private = Zeroizing::new(f.string()?.to_vec());
        Some(OpensshFile {
            cipher,
            key_type: String::from_utf8(key_type.to_vec()).ok()?,
            private,
        })
    }

    /// An unencrypted ECDSA key's scalar, as the file has it (an mpint:
    /// no leading zeros, which is where ssh-key 0.6 fails), left-padded
    /// to the field, and its public point.
    fn ecdsa(&self, field: usize) -> Option<(Zeroizing<Vec<u8>>, Vec<u8>)> {
        if self.cipher != b"none" {
            return None;
        }
        let mut f = Fields(&self.private);
        // Two equal check numbers, then type, curve, point, scalar.
        if f.u32()? != f.u32()? {
            return None;
        }
        f.string()?;
        f.string()?;
        let point = f.string()?.to_vec();
        let d = f.string()?;
        let d = &d[d.iter().position(|b| *b != 0).unwrap_or(d.len())..];
        if d.len() > field {
            return None;
        }
        let mut scalar = Zeroizing::new(vec![0u8; field]);
        scalar[field - d.len()..].copy_from_slice(d);
        Some((scalar, point))
    }
}

/// An ECDSA key ssh-key could not read, read here: `None` for another
/// type or a file not so shaped.
fn ecdsa_of_openssh_file(name: &str, file: &OpensshFile) -> Option<Result<EcKey, KeyFileError>> {
    let (key, point) = match file.key_type.as_str() {
        "ecdsa-sha2-nistp256" => {
            let (d, point) = file.ecdsa(32)?;
            (p256::SecretKey::from_slice(&d).map(EcKey::P256), point)
        }
        "ecdsa-sha2-nistp384" => {
            let (d, point) = file.ecdsa(48)?;
            (p384::SecretKey::from_slice(&d).map(EcKey::P384), point)
        }
        _ => return None,
    };
    Some(EcKey::checked(name, key, &point))
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
    // An EC key has its own call, whose answer is a point.
    if let Ok(Some(curve)) = local::pkcs8_curve(&pkcs8) {
        let key = cx.client.import_ec_key(&h, token, &id, label, &pkcs8)?;
        return say_new_key(cx, &h, token, label, NewKey::Ec(curve, &key), true);
    }
    let key = cx.client.import_key(&h, token, &id, label, &pkcs8)?;
    say_new_key(cx, &h, token, label, NewKey::Rsa(&key), true)
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

    /// An OpenSSH private key file of `data`.
    fn openssh(data: ssh_key::private::KeypairData) -> String {
        let key = ssh_key::PrivateKey::new(data, "me@there").unwrap();
        key.to_openssh(ssh_key::LineEnding::LF).unwrap().to_string()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        rsa::pkcs8::der::pem::encode_string(label, rsa::pkcs8::LineEnding::LF, der).unwrap()
    }

    /// SEC1 DER as openssl writes it (`openssl ec`): scalar, named curve
    /// `oid` and public point.
    fn sec1(scalar: &[u8], oid: &str, point: &[u8]) -> Vec<u8> {
        use rsa::pkcs8::der::Encode;
        sec1::EcPrivateKey {
            private_key: scalar,
            parameters: Some(sec1::EcParameters::NamedCurve(oid.parse().unwrap())),
            public_key: Some(point),
        }
        .to_der()
        .unwrap()
    }

    fn sec1_p256(k: &p256::SecretKey) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let point = k.public_key().to_encoded_point(false);
        sec1(&k.to_bytes(), "1.2.840.10045.3.1.7", point.as_bytes())
    }

    fn sec1_p384(k: &p384::SecretKey) -> Vec<u8> {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        let point = k.public_key().to_encoded_point(false);
        sec1(&k.to_bytes(), "1.3.132.0.34", point.as_bytes())
    }

    /// An OpenSSH ECDSA key pair of `sk`'s scalar and the public point
    /// `public`.
    fn nistp256(sk: &p256::SecretKey, public: &p256::SecretKey) -> ssh_key::private::KeypairData {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        ssh_key::private::EcdsaKeypair::NistP256 {
            public: public.public_key().to_encoded_point(false),
            private: sk.clone().into(),
        }
        .into()
    }

    /// Issue 15, item 3: an EC key as PKCS#8 PEM and DER, SEC1 PEM and an
    /// OpenSSH file all become the same PKCS#8, the curve crates' own.
    #[test]
    fn every_form_of_an_ec_key_gives_the_same_pkcs8() {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        use p256::pkcs8::EncodePrivateKey as _;
        use rsa::pkcs8::LineEnding;
        use ssh_key::private::{EcdsaKeypair, Ed25519Keypair, Ed25519PrivateKey};
        let rng = &mut rand::rngs::OsRng;
        let k256 = p256::SecretKey::random(rng);
        let k384 = p384::SecretKey::random(rng);
        let ked = ed25519_dalek::SigningKey::from_bytes(&rand::random());
        let cases: Vec<(Vec<u8>, Vec<String>)> = vec![
            (
                k256.to_pkcs8_der().unwrap().as_bytes().to_vec(),
                vec![
                    k256.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                    pem("EC PRIVATE KEY", &sec1_p256(&k256)),
                    openssh(nistp256(&k256, &k256)),
                ],
            ),
            (
                k384.to_pkcs8_der().unwrap().as_bytes().to_vec(),
                vec![
                    k384.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                    pem("EC PRIVATE KEY", &sec1_p384(&k384)),
                    openssh(
                        EcdsaKeypair::NistP384 {
                            public: k384.public_key().to_encoded_point(false),
                            private: k384.clone().into(),
                        }
                        .into(),
                    ),
                ],
            ),
            (
                ked.to_pkcs8_der().unwrap().as_bytes().to_vec(),
                vec![
                    ked.to_pkcs8_pem(LineEnding::LF).unwrap().to_string(),
                    openssh(Ed25519Keypair::from(Ed25519PrivateKey::from(&ked)).into()),
                ],
            ),
        ];
        for (want, forms) in cases {
            assert_eq!(pkcs8_of("k", &want).unwrap().as_slice(), want);
            for form in forms {
                let got = pkcs8_of("k", form.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{form}"));
                assert_eq!(got.as_slice(), want, "{form}");
            }
        }
        // openssl's PKCS#8 carries no parameters in the ECPrivateKey: the
        // same key, written again as the curve crates write it.
        let inner = k256.to_sec1_der().unwrap();
        let p256_oid: rsa::pkcs8::ObjectIdentifier = "1.2.840.10045.3.1.7".parse().unwrap();
        let info = PrivateKeyInfo {
            algorithm: rsa::pkcs8::AlgorithmIdentifierRef {
                oid: "1.2.840.10045.2.1".parse().unwrap(),
                parameters: Some((&p256_oid).into()),
            },
            private_key: &inner,
            public_key: None,
        };
        use rsa::pkcs8::der::Encode;
        let other = info.to_der().unwrap();
        assert_eq!(
            pkcs8_of("k", &other).unwrap().as_slice(),
            k256.to_pkcs8_der().unwrap().as_bytes()
        );
    }

    /// Issue 15, item 3: a key whose public key is not its scalar's, a
    /// curve the phone does not hold and an encrypted SEC1 key are refused
    /// by name.
    #[test]
    fn bad_ec_keys_are_refused() {
        use p256::pkcs8::EncodePrivateKey as _;
        let rng = &mut rand::rngs::OsRng;
        let (a, b) = (p256::SecretKey::random(rng), p256::SecretKey::random(rng));
        // PKCS#8 with b's public key at its end.
        let mut mixed = a.to_pkcs8_der().unwrap().as_bytes().to_vec();
        let b_der = b.to_pkcs8_der().unwrap();
        let n = mixed.len();
        mixed[n - 65..].copy_from_slice(&b_der.as_bytes()[b_der.as_bytes().len() - 65..]);
        for bad in [mixed.clone(), pem("PRIVATE KEY", &mixed).into_bytes()] {
            let e = pkcs8_of("k", &bad).unwrap_err();
            assert!(matches!(e, KeyFileError::Malformed(..)), "{e}");
        }
        let e = pkcs8_of("k", openssh(nistp256(&a, &b)).as_bytes()).unwrap_err();
        assert_eq!(
            e,
            KeyFileError::Malformed("k".into(), "its public key is not its private key's".into())
        );
        // P-521: a P-384 key with its curve renamed, as PKCS#8 and SEC1.
        let k384 = p384::SecretKey::random(rng);
        let rename = |der: &[u8]| {
            let p384 = [0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];
            let mut der = der.to_vec();
            let at = der.windows(7).position(|w| w == p384).unwrap();
            der[at + 6] = 0x23;
            der
        };
        let p521 = rename(k384.to_pkcs8_der().unwrap().as_bytes());
        let sec1 = pem("EC PRIVATE KEY", &rename(&sec1_p384(&k384)));
        for bad in [p521, sec1.into_bytes()] {
            let e = pkcs8_of("k.pem", &bad).unwrap_err();
            assert_eq!(e, KeyFileError::Unsupported("k.pem".into(), "P-521".into()));
            assert!(e.to_string().contains("P-256, P-384 and Ed25519"), "{e}");
        }
        let legacy = "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                      DEK-Info: AES-128-CBC,00\n\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert_eq!(
            pkcs8_of("k", legacy.as_bytes()),
            Err(KeyFileError::Encrypted("k".into()))
        );
    }

    /// The fields of an OpenSSH file are read where ssh-key cannot go.
    #[test]
    fn an_openssh_file_is_read_apart_from_ssh_key() {
        let k = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let text = openssh(nistp256(&k, &k));
        let file = OpensshFile::read(&text).unwrap();
        assert_eq!(file.key_type, "ecdsa-sha2-nistp256");
        let (d, point) = file.ecdsa(32).unwrap();
        assert_eq!(d.as_slice(), k.to_bytes().as_slice());
        assert_eq!(point, EcKey::P256(k).public_point());
        assert!(OpensshFile::read("-----BEGIN X-----\nAAAA\n-----END X-----").is_none());
        // Cut short anywhere: nothing, and no panic.
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        for cut in (0..body.len()).step_by(4) {
            let _ = OpensshFile::read(&body[..cut]).map(|f| f.ecdsa(32));
        }
    }

    /// An OpenSSH P-256 key file as ssh-keygen writes one, its scalar a
    /// minimal mpint.
    fn ssh_keygen_file(k: &p256::SecretKey) -> String {
        use p256::elliptic_curve::sec1::ToEncodedPoint as _;
        fn put(out: &mut Vec<u8>, field: &[u8]) {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        let q = k.public_key().to_encoded_point(false);
        let mut public = Vec::new();
        for f in [&b"ecdsa-sha2-nistp256"[..], b"nistp256", q.as_bytes()] {
            put(&mut public, f);
        }
        let d = k.to_bytes();
        let d = &d[d.iter().position(|b| *b != 0).unwrap()..];
        let mut private = vec![1, 2, 3, 4, 1, 2, 3, 4];
        for f in [
            &b"ecdsa-sha2-nistp256"[..],
            b"nistp256",
            q.as_bytes(),
            d,
            b"c",
        ] {
            put(&mut private, f);
        }
        private.extend((1..).take(8 - private.len() % 8).map(|i: u8| i));
        let mut file = b"openssh-key-v1\0".to_vec();
        for f in [&b"none"[..], b"none", b""] {
            put(&mut file, f);
        }
        file.extend_from_slice(&1u32.to_be_bytes());
        put(&mut file, &public);
        put(&mut file, &private);
        pem("OPENSSH PRIVATE KEY", &file)
    }

    /// Issue 15, item 3: one ssh-keygen P-256 key in 256 has a scalar
    /// shorter than the field, which ssh-key 0.6 cannot read; it is read.
    #[test]
    fn an_openssh_key_with_a_short_scalar_is_read() {
        use p256::pkcs8::EncodePrivateKey as _;
        let k = std::iter::repeat_with(|| p256::SecretKey::random(&mut rand::rngs::OsRng))
            .find(|k| k.to_bytes()[0] == 0)
            .unwrap();
        let text = ssh_keygen_file(&k);
        assert!(
            ssh_key::PrivateKey::from_openssh(&text).is_err(),
            "ssh-key reads it now"
        );
        assert_eq!(
            pkcs8_of("k", text.as_bytes()).unwrap().as_slice(),
            k.to_pkcs8_der().unwrap().as_bytes()
        );
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
