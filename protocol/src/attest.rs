//! Key attestation statements (`+CKATTEST`, docs/attestation.md): what a
//! handset says of one of its keys, signed with its Ed25519 attestation
//! key. The byte format is here once, for the handset that writes it and
//! the computer that checks it.
//!
//! A statement is a body, then the 64-byte Ed25519 signature of the body.
//! The body is a fixed magic, then a fixed list of fields, each a 2-byte
//! big-endian length and its bytes. The format is deliberately not
//! X.509: the verifier is always this project's computer side, which pins
//! the key that signs; a certificate's encoding and extensions would add a
//! DER writer and parser for nothing a person or another program reads.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// The first bytes of every statement body: format and version.
pub const MAGIC: &[u8; 24] = b"phonecsp attestation v1\0";
/// The length of the Ed25519 signature that ends a statement.
pub const SIGNATURE_LEN: usize = 64;
/// The longest statement a handset writes: the fields' limits (names and
/// labels of 64 bytes, an id and a nonce of 64, an SPKI of 16 KiB).
pub const MAX_STATEMENT_LEN: usize = 20 * 1024;

/// Attribute bits of a statement (field 8, one byte).
pub mod flags {
    /// `CKA_LOCAL`: the key was generated on the handset.
    pub const LOCAL: u8 = 0x01;
    /// `CKA_NEVER_EXTRACTABLE`.
    pub const NEVER_EXTRACTABLE: u8 = 0x02;
    /// `CKA_ALWAYS_SENSITIVE`.
    pub const ALWAYS_SENSITIVE: u8 = 0x04;
}

/// What a handset states about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The handset's Noise static public key: the identity the computer
    /// pinned at pairing.
    pub handset_key: [u8; 32],
    /// The Ed25519 public key that signs the statement.
    pub attestation_key: [u8; 32],
    /// The handset's name, as it calls itself (display only).
    pub handset: String,
    pub container: String,
    /// The key's `CKA_ID` and `CKA_LABEL`.
    pub id: Vec<u8>,
    pub label: String,
    /// The public key, a DER SubjectPublicKeyInfo, whatever its algorithm.
    pub spki: Vec<u8>,
    /// [`flags`] bits.
    pub flags: u8,
    /// The container's approval policy: `auto` or `confirm`.
    pub policy: String,
    /// The computer's freshness nonce, as it sent it.
    pub nonce: Vec<u8>,
}

/// Why a statement does not check, each in words a person can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    #[error("not an attestation statement: {0}")]
    Malformed(&'static str),
    #[error(
        "the statement's signature does not verify: it was changed, or not signed by the key it names"
    )]
    BadSignature,
    #[error("the statement is from another phone than the one paired as '{0}'")]
    OtherPhone(String),
    #[error("the statement is signed by another attestation key than the one pinned for '{0}'")]
    OtherAttestationKey(String),
    #[error(
        "the statement answers another nonce: it is not fresh, or not the answer to this request"
    )]
    WrongNonce,
}

const FIELDS: usize = 10;

impl Statement {
    pub fn local(&self) -> bool {
        self.flags & flags::LOCAL != 0
    }

    /// The signed bytes: the magic, then each field with its length.
    pub fn body(&self) -> Result<Vec<u8>, AttestError> {
        let fields: [&[u8]; FIELDS] = [
            &self.handset_key,
            &self.attestation_key,
            self.handset.as_bytes(),
            self.container.as_bytes(),
            &self.id,
            self.label.as_bytes(),
            &self.spki,
            &[self.flags],
            self.policy.as_bytes(),
            &self.nonce,
        ];
        let mut out = MAGIC.to_vec();
        for f in fields {
            let len =
                u16::try_from(f.len()).map_err(|_| AttestError::Malformed("a field too long"))?;
            out.extend(len.to_be_bytes());
            out.extend(f);
        }
        if out.len() + SIGNATURE_LEN > MAX_STATEMENT_LEN {
            return Err(AttestError::Malformed("too long"));
        }
        Ok(out)
    }

    /// The statement signed with `key`, whose public key it must name.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, AttestError> {
        if key.verifying_key().to_bytes() != self.attestation_key {
            return Err(AttestError::BadSignature);
        }
        let mut out = self.body()?;
        let sig = key.sign(&out);
        out.extend(sig.to_bytes());
        Ok(out)
    }

    /// Parses a statement and checks its signature under the attestation
    /// key it names. That proves only that the bytes are whole; who holds
    /// that key is [`check`]'s question.
    pub fn verify(bytes: &[u8]) -> Result<Statement, AttestError> {
        if bytes.len() > MAX_STATEMENT_LEN {
            return Err(AttestError::Malformed("too long"));
        }
        let split = bytes
            .len()
            .checked_sub(SIGNATURE_LEN)
            .ok_or(AttestError::Malformed("too short"))?;
        let (body, sig) = bytes.split_at(split);
        let rest = body
            .strip_prefix(MAGIC.as_slice())
            .ok_or(AttestError::Malformed("no phonecsp attestation v1 magic"))?;
        let mut fields: Vec<&[u8]> = Vec::with_capacity(FIELDS);
        let mut at = rest;
        while !at.is_empty() {
            let (len, tail) = at
                .split_first_chunk::<2>()
                .ok_or(AttestError::Malformed("a cut-short field"))?;
            let len = usize::from(u16::from_be_bytes(*len));
            if tail.len() < len {
                return Err(AttestError::Malformed("a cut-short field"));
            }
            fields.push(&tail[..len]);
            at = &tail[len..];
        }
        let [hk, ak, name, container, id, label, spki, fl, policy, nonce] = fields[..] else {
            return Err(AttestError::Malformed("not ten fields"));
        };
        let key32 = |f: &[u8]| {
            <[u8; 32]>::try_from(f).map_err(|_| AttestError::Malformed("a key not 32 bytes"))
        };
        let text = |f: &[u8]| {
            String::from_utf8(f.to_vec()).map_err(|_| AttestError::Malformed("text not UTF-8"))
        };
        let [flags] = fl else {
            return Err(AttestError::Malformed("flags not one byte"));
        };
        let statement = Statement {
            handset_key: key32(hk)?,
            attestation_key: key32(ak)?,
            handset: text(name)?,
            container: text(container)?,
            id: id.to_vec(),
            label: text(label)?,
            spki: spki.to_vec(),
            flags: *flags,
            policy: text(policy)?,
            nonce: nonce.to_vec(),
        };
        let key = VerifyingKey::from_bytes(&statement.attestation_key)
            .map_err(|_| AttestError::BadSignature)?;
        let sig = Signature::from_slice(sig).map_err(|_| AttestError::BadSignature)?;
        key.verify_strict(body, &sig)
            .map_err(|_| AttestError::BadSignature)?;
        // Canonical: the body parsed is the body this statement writes.
        if statement.body()? != body {
            return Err(AttestError::Malformed("not in canonical form"));
        }
        Ok(statement)
    }
}

/// What a computer pinned for a phone: its Noise static key (at pairing)
/// and its attestation key (at its first statement, docs/attestation.md).
pub struct Pinned<'a> {
    /// The name the computer knows the phone by, for errors.
    pub name: &'a str,
    pub handset_key: [u8; 32],
    pub attestation_key: [u8; 32],
}

/// Checks a statement against a phone's pinned keys and, if given, the
/// nonce the computer sent: whole and signed, by that phone's attestation
/// key, naming that phone's identity, for that nonce.
pub fn check(
    bytes: &[u8],
    pinned: &Pinned,
    nonce: Option<&[u8]>,
) -> Result<Statement, AttestError> {
    let s = Statement::verify(bytes)?;
    if s.handset_key != pinned.handset_key {
        return Err(AttestError::OtherPhone(pinned.name.to_owned()));
    }
    if s.attestation_key != pinned.attestation_key {
        return Err(AttestError::OtherAttestationKey(pinned.name.to_owned()));
    }
    if nonce.is_some_and(|n| n != s.nonce) {
        return Err(AttestError::WrongNonce);
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn statement(k: &SigningKey) -> Statement {
        Statement {
            handset_key: [7; 32],
            attestation_key: k.verifying_key().to_bytes(),
            handset: "my phone".into(),
            container: "ssh".into(),
            id: vec![1],
            label: "ssh key".into(),
            spki: vec![0x30, 0x03, 0x02, 0x01, 0x00],
            flags: flags::LOCAL | flags::NEVER_EXTRACTABLE | flags::ALWAYS_SENSITIVE,
            policy: "confirm".into(),
            nonce: vec![9; 32],
        }
    }

    fn pinned(k: &SigningKey) -> Pinned<'static> {
        Pinned {
            name: "phone",
            handset_key: [7; 32],
            attestation_key: k.verifying_key().to_bytes(),
        }
    }

    /// The layout of docs/attestation.md, byte for byte.
    #[test]
    fn the_body_is_the_documented_layout() {
        let k = key(1);
        let s = statement(&k);
        let body = s.body().unwrap();
        assert_eq!(&body[..24], b"phonecsp attestation v1\0");
        assert_eq!(&body[24..26], &[0, 32]);
        assert_eq!(&body[26..58], &[7; 32]);
        assert_eq!(&body[58..60], &[0, 32]);
        assert_eq!(&body[92..94], &[0, 8]);
        assert_eq!(&body[94..102], b"my phone");
        let tail = [&[0u8, 7][..], b"confirm", &[0, 32], &[9; 32]].concat();
        assert!(body.ends_with(&tail));
        let signed = s.sign(&k).unwrap();
        assert_eq!(signed.len(), body.len() + 64);
        assert_eq!(check(&signed, &pinned(&k), Some(&[9; 32])).unwrap(), s);
    }

    #[test]
    fn any_changed_byte_fails() {
        let k = key(1);
        let signed = statement(&k).sign(&k).unwrap();
        for i in 0..signed.len() {
            for bit in [0x01, 0x80] {
                let mut bad = signed.clone();
                bad[i] ^= bit;
                assert!(check(&bad, &pinned(&k), None).is_err(), "byte {i}");
            }
        }
        for cut in [0, 1, 24, signed.len() - 65, signed.len() - 1] {
            assert!(Statement::verify(&signed[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = signed.clone();
        longer.push(0);
        assert!(Statement::verify(&longer).is_err());
    }

    #[test]
    fn another_phone_another_key_and_another_nonce_are_named() {
        let k = key(1);
        let signed = statement(&k).sign(&k).unwrap();
        let mut other = pinned(&k);
        other.handset_key = [8; 32];
        assert_eq!(
            check(&signed, &other, None),
            Err(AttestError::OtherPhone("phone".into()))
        );
        // Another phone that claims this phone's identity, with a key of
        // its own: not the pinned attestation key.
        let k2 = key(2);
        let forged = statement(&k2).sign(&k2).unwrap();
        assert_eq!(
            check(&forged, &pinned(&k), None),
            Err(AttestError::OtherAttestationKey("phone".into()))
        );
        assert_eq!(
            check(&signed, &pinned(&k), Some(&[8; 32])),
            Err(AttestError::WrongNonce)
        );
        // A signature by a key other than the one the statement names.
        let mut s = statement(&k);
        s.attestation_key = k2.verifying_key().to_bytes();
        let mut body = s.body().unwrap();
        body.extend(k.sign(&body).to_bytes());
        assert_eq!(Statement::verify(&body), Err(AttestError::BadSignature));
    }
}
