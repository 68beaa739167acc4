//! `phonecsp sign`, `verify`, `encrypt` and `decrypt`. A signature's input
//! is prepared as the PKCS#11 module prepares it ([`phonecsp::input`]): a
//! file is hashed here, streamed, and only the digest (in a DigestInfo for
//! PKCS#1 v1.5) goes to the daemon, whatever the size of the input.
//! Signatures are checked here, with the key's public half.

use std::fs::File;
use std::io::{self, Read};

use phonecsp::input::{HandsetSign, SignInput};
use phonecsp::local::PublicKey;
use phonecsp::mechanism::{self, Encryption, Signing, ckm};
use phonecsp::{Error, MechanismParams, local};
use phonecsp_protocol::Curve;
use phonecsp_protocol::{CkRv, HashAlg};
use serde_json::json;
use zeroize::Zeroizing;

use crate::args::{CryptArgs, SignArgs, SignMechanismArgs, VerifyArgs};
use crate::failure::{Failure, io_failure};
use crate::output::{emit_bytes, print_json, print_text, read_input};
use crate::session::{ApprovalNotice, Context, ensure_login, handset};

/// The longest modulus the handset makes: the tests prepare input for
/// any key.
#[cfg(test)]
const ANY_KEY_LEN: usize = (phonecsp_protocol::limits::MAX_RSA_BITS / 8) as usize;

pub(crate) fn parse_mechanism(name: &str) -> Option<u32> {
    mechanism::by_name(name).or_else(|| {
        let t = name.trim();
        let h = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
        u32::from_str_radix(h, 16).ok()
    })
}

pub(crate) fn parse_hash(name: &str) -> Result<HashAlg, Failure> {
    HashAlg::from_name(name)
        .or_else(|| mechanism::by_name(name).and_then(mechanism::digest_alg))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "unknown hash '{name}': give SHA1, SHA224, SHA256, SHA384 or SHA512"
            ))
        })
}

fn signing_names() -> String {
    let p = MechanismParams::default();
    mechanism::NAMES
        .iter()
        .filter(|(_, m)| Signing::from_ckm(*m, &p).is_ok() || *m == ckm::RSA_PKCS_PSS)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The signature options, resolved before anything is read or sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resolved {
    /// The input streams through a [`SignInput`].
    Streamed(Signing),
    /// RSA-PKCS-PSS over a digest: without --hash, its hash is the one
    /// whose output has the digest's length.
    Digest {
        hash: Option<HashAlg>,
        salt_len: Option<u32>,
    },
}

/// The mechanism a key signs with when none is named: SHA-256 with
/// PKCS#1 v1.5 for RSA, ECDSA with the hash of the curve's strength, EdDSA.
fn default_mechanism(key: &PublicKey) -> &'static str {
    match key {
        PublicKey::Rsa(_) => "SHA256-RSA-PKCS",
        PublicKey::Ec(k) => match k.curve {
            Curve::P256 => "ECDSA-SHA256",
            Curve::P384 => "ECDSA-SHA384",
            Curve::Ed25519 => "EDDSA",
        },
    }
}

fn resolve(args: &SignMechanismArgs, default: &str) -> Result<Resolved, Failure> {
    let name = args.mechanism.as_deref().unwrap_or(default);
    let mech = parse_mechanism(name).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown mechanism '{name}': give one of {}",
            signing_names()
        ))
    })?;
    let hash = args.hash.as_deref().map(parse_hash).transpose()?;
    match mech {
        ckm::RSA_PKCS => {
            if args.salt_len.is_some() || hash.is_some() {
                return Err(Failure::Usage(
                    "RSA-PKCS takes neither --hash nor --salt-len".into(),
                ));
            }
            Ok(Resolved::Streamed(Signing::Raw))
        }
        ckm::RSA_PKCS_PSS => Ok(Resolved::Digest {
            hash,
            salt_len: args.salt_len,
        }),
        _ => {
            let probe = MechanismParams {
                hash: hash.map(|h| h.mechanism() as u32).unwrap_or(0),
                salt_len: args.salt_len.unwrap_or(0),
                label: vec![],
            };
            match Signing::from_ckm(mech, &probe) {
                Ok(Signing::Pkcs1(h)) => {
                    if args.salt_len.is_some() {
                        return Err(Failure::Usage(format!(
                            "--salt-len is for PSS; {name} is PKCS#1 v1.5"
                        )));
                    }
                    if hash.is_some_and(|x| x != h) {
                        return Err(Failure::Usage(format!("--hash does not match {name}")));
                    }
                    Ok(Resolved::Streamed(Signing::Pkcs1(h)))
                }
                Ok(Signing::Pss { hash: h, .. }) => Ok(Resolved::Streamed(Signing::Pss {
                    hash: h,
                    salt_len: args.salt_len.unwrap_or(h.output_len() as u32),
                })),
                Ok(s @ (Signing::Ecdsa(_) | Signing::EcdsaDigest | Signing::Eddsa)) => {
                    if args.salt_len.is_some() || hash.is_some() {
                        return Err(Failure::Usage(format!(
                            "{name} takes neither --hash nor --salt-len"
                        )));
                    }
                    Ok(Resolved::Streamed(s))
                }
                Err(CkRv::MECHANISM_PARAM_INVALID) => Err(Failure::Usage(format!(
                    "--hash or --salt-len does not fit {name}"
                ))),
                _ => Err(Failure::Usage(format!(
                    "{name} is not a signature mechanism: give one of {}",
                    signing_names()
                ))),
            }
        }
    }
}

/// Feeds a file (or stdin) to `take` in pieces, never holding it whole.
fn stream(path: &str, mut take: impl FnMut(&[u8]) -> Result<(), CkRv>) -> Result<(), Failure> {
    let what = if path == "-" { "stdin" } else { path };
    let mut reader: Box<dyn Read> = if path == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|e| io_failure(&format!("reading {what}"), e))?)
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => take(&buf[..n]).map_err(Error::from)?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failure(&format!("reading {what}"), e)),
        }
    }
}

/// What the handset signs for the input at `path`, checked against a key
/// of `key_len` bytes.
fn prepare(resolved: Resolved, path: &str, key_len: usize) -> Result<HandsetSign, Failure> {
    let signing = match resolved {
        Resolved::Streamed(signing) => {
            let mut input = SignInput::new(signing, key_len);
            stream(path, |piece| input.update(piece))?;
            return Ok(input.finish().map_err(Error::from)?);
        }
        Resolved::Digest { hash, salt_len } => {
            let data = read_input(path)?;
            let h = match hash {
                Some(h) => h,
                None => HashAlg::ALL
                    .into_iter()
                    .find(|h| h.output_len() == data.len())
                    .ok_or_else(|| {
                        Failure::Usage(format!(
                            "RSA-PKCS-PSS signs a digest, and {} bytes is no digest's length; give --hash",
                            data.len()
                        ))
                    })?,
            };
            if data.len() != h.output_len() {
                return Err(Failure::Usage(format!(
                    "RSA-PKCS-PSS with {} signs a {}-byte digest, not {} bytes",
                    h.name(),
                    h.output_len(),
                    data.len()
                )));
            }
            let signing = Signing::PssDigest {
                hash: h,
                salt_len: salt_len.unwrap_or(h.output_len() as u32),
            };
            SignInput::once(signing, key_len, &data)
        }
    };
    Ok(signing.map_err(Error::from)?)
}

/// The public half of key `id`, of any type the handset holds.
fn public_key(cx: &Context, h: &str, token: &str, id: &[u8]) -> Result<PublicKey, Failure> {
    Ok(cx.client.public_key(h, token, id)?.0)
}

/// `--der` is for ECDSA signatures only.
fn check_der(der: bool, key: &PublicKey) -> Result<Option<Curve>, Failure> {
    match (der, key) {
        (false, _) => Ok(None),
        (true, PublicKey::Ec(k)) if k.curve != Curve::Ed25519 => Ok(Some(k.curve)),
        (true, _) => Err(Failure::Usage(
            "--der is for ECDSA signatures (P-256 and P-384 keys)".into(),
        )),
    }
}

pub(crate) fn sign(cx: &Context, a: &SignArgs) -> Result<(), Failure> {
    let h = handset(cx)?;
    // The key's type decides the default mechanism, and its size the
    // checks; both before anything is sent.
    let key = public_key(cx, &h, &a.key.token, &a.key.id.0)?;
    let der = check_der(a.der, &key)?;
    let resolved = resolve(&a.mech, default_mechanism(&key))?;
    if let Resolved::Streamed(s) = resolved {
        key.check_signing(&s)
            .map_err(|rv| Error::token(rv, "that mechanism is not one of this key's type"))?;
    }
    let input = prepare(resolved, &a.input, key.signature_len())?;
    ensure_login(cx, &h, &a.key.token)?;
    let (mech, params) = input.wire();
    let notice = ApprovalNotice::start(cx);
    let sig = cx
        .client
        .sign(&h, &a.key.token, &a.key.id.0, mech, &params, &input.data);
    drop(notice);
    let mut sig = sig?;
    if der.is_some() {
        sig = local::ecdsa_rs_to_der(&sig).map_err(Error::from)?;
    }
    emit_bytes(cx, "signature", &a.out, &sig, false)
}

pub(crate) fn verify(cx: &Context, a: &VerifyArgs) -> Result<(), Failure> {
    let h = handset(cx)?;
    let mut signature = read_input(&a.signature)?;
    let key = public_key(cx, &h, &a.key.token, &a.key.id.0)?;
    if let Some(curve) = check_der(a.der, &key)? {
        // A signature that is no DER is one that does not verify.
        signature = local::ecdsa_der_to_rs(&signature, curve).unwrap_or_default();
    }
    let resolved = resolve(&a.mech, default_mechanism(&key))?;
    if let Resolved::Streamed(s) = resolved {
        key.check_signing(&s)
            .map_err(|rv| Error::token(rv, "that mechanism is not one of this key's type"))?;
    }
    let input = prepare(resolved, &a.input, key.signature_len())?;
    let valid = local::verify_prepared_any(&key, &input, &signature);
    if cx.json {
        print_json(&json!({ "valid": valid }))?;
    } else {
        print_text(if valid {
            "signature valid\n"
        } else {
            "signature INVALID\n"
        })?;
    }
    if valid { Ok(()) } else { Err(Failure::No) }
}

pub(crate) fn crypt(cx: &Context, a: &CryptArgs, decrypt: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    let mech = parse_mechanism(&a.mechanism).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown mechanism '{}': give RSA-PKCS-OAEP or RSA-PKCS",
            a.mechanism
        ))
    })?;
    let enc = match mech {
        ckm::RSA_PKCS_OAEP => Encryption::Oaep {
            hash: parse_hash(&a.hash)?,
            label: vec![],
        },
        ckm::RSA_PKCS => Encryption::Pkcs1,
        _ => {
            return Err(Failure::Usage(format!(
                "{} is not an encryption mechanism: give RSA-PKCS-OAEP or RSA-PKCS",
                a.mechanism
            )));
        }
    };
    let (mech, params) = enc.wire();
    let input = Zeroizing::new(read_input(&a.input)?);
    if decrypt {
        ensure_login(cx, &h, &a.key.token)?;
        let notice = ApprovalNotice::start(cx);
        let pt = cx
            .client
            .decrypt(&h, &a.key.token, &a.key.id.0, mech, &params, &input);
        drop(notice);
        let pt = pt?;
        emit_bytes(cx, "plaintext", &a.out, &pt, true)
    } else {
        let ct = cx
            .client
            .encrypt(&h, &a.key.token, &a.key.id.0, mech, &params, &input)?;
        emit_bytes(cx, "ciphertext", &a.out, &ct, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(m: &str, salt: Option<u32>, hash: Option<&str>) -> SignMechanismArgs {
        SignMechanismArgs {
            mechanism: Some(m.into()),
            salt_len: salt,
            hash: hash.map(Into::into),
        }
    }

    /// A file holding `data`, removed when dropped.
    struct Input(std::path::PathBuf);

    impl Input {
        fn new(tag: &str, data: &[u8]) -> Input {
            let p = std::env::temp_dir().join(format!("phonecsp-cli-{tag}-{}", std::process::id()));
            std::fs::write(&p, data).expect("write");
            Input(p)
        }

        fn path(&self) -> String {
            self.0.to_string_lossy().into_owned()
        }
    }

    impl Drop for Input {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn prepared(
        m: &str,
        salt: Option<u32>,
        hash: Option<&str>,
        path: &str,
    ) -> Result<HandsetSign, Failure> {
        prepare(
            resolve(&args(m, salt, hash), "SHA256-RSA-PKCS")?,
            path,
            ANY_KEY_LEN,
        )
    }

    #[test]
    fn prepares_signatures_locally() {
        let f = Input::new("prepare", b"hello");
        let path = f.path();
        let s = prepared("SHA256-RSA-PKCS", None, None, &path).expect("ok");
        let (m, p) = s.wire();
        assert_eq!(m, ckm::RSA_PKCS);
        assert_eq!(p, MechanismParams::default());
        assert_eq!(
            s.data,
            phonecsp::hash::digest_info(
                HashAlg::Sha256,
                &phonecsp::hash::digest(HashAlg::Sha256, b"hello")
            )
        );
        let s = prepared("sha384-rsa-pkcs-pss", None, None, &path).expect("ok");
        let (m, p) = s.wire();
        assert_eq!(m, ckm::RSA_PKCS_PSS);
        assert_eq!((p.hash, p.salt_len), (ckm::SHA384, 48));
        assert_eq!(s.data.len(), 48);
        assert!(matches!(
            prepared("SHA256-RSA-PKCS", Some(32), None, &path),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            prepared("RSA-PKCS-OAEP", None, None, &path),
            Err(Failure::Usage(_))
        ));
        // 5 bytes is no digest.
        assert!(matches!(
            prepared("RSA-PKCS-PSS", None, None, &path),
            Err(Failure::Usage(_))
        ));
    }

    #[test]
    fn a_given_digest_keeps_its_inferred_hash_and_salt() {
        let f = Input::new("pss-digest", &[7; 32]);
        let s = prepared("RSA-PKCS-PSS", Some(20), None, &f.path()).expect("ok");
        let (m, p) = s.wire();
        assert_eq!(
            (m, p.hash, p.salt_len),
            (ckm::RSA_PKCS_PSS, ckm::SHA256, 20)
        );
        assert_eq!(s.data, vec![7; 32]);
    }

    /// The PKCS#1 v1.5 padding check is the shared one, applied before
    /// anything is sent: 246 bytes do not fit a 2048-bit key.
    #[test]
    fn raw_input_is_checked_against_the_key() {
        let fits = Input::new("raw-fits", &[1; 245]);
        let too_long = Input::new("raw-long", &[1; 246]);
        let raw = resolve(&args("RSA-PKCS", None, None), "SHA256-RSA-PKCS").expect("resolves");
        assert!(prepare(raw, &fits.path(), 256).is_ok());
        assert!(matches!(
            prepare(raw, &too_long.path(), 256),
            Err(Failure::Client(Error::Token {
                rv: CkRv::DATA_LEN_RANGE,
                ..
            }))
        ));
    }

    /// What the command signs is exactly what the PKCS#11 module would
    /// send for the same mechanism, however the file is cut into pieces.
    #[test]
    fn a_large_file_streams_to_the_same_input_as_one_piece() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let f = Input::new("large", &data);
        let pss = Signing::Pss {
            hash: HashAlg::Sha512,
            salt_len: 64,
        };
        assert_eq!(
            prepare(Resolved::Streamed(pss), &f.path(), 512).expect("ok"),
            SignInput::once(pss, 512, &data).expect("ok")
        );
    }
}
