//! The one "prepare the input" step of every private-key operation: what a
//! caller gives (a message, a digest, a ciphertext) becomes exactly what the
//! handset is asked to do. The mechanism is already resolved
//! ([`crate::mechanism`]); here the data is hashed on the computer, the
//! DigestInfo built and the sizes checked against the key.
//!
//! The PKCS#11 module (single- and multi-part), the `phonecsp` command and
//! the daemon all go through [`SignInput`] and the checks below, so a size
//! rule or a new algorithm is written once.

use phonecsp_protocol::limits::{MAX_DATA_LEN, PKCS1_OVERHEAD};
use phonecsp_protocol::{CkRv, DecryptMechanism, HashAlg, SignMechanism};

use crate::hash::{Hasher, digest_info};
use crate::mechanism::{Encryption, Signing, ckm};
use crate::types::MechanismParams;

/// The longest digest `CKM_ECDSA` takes: SHA-512's.
pub const MAX_ECDSA_DIGEST: usize = 64;

/// What the handset signs, and how: a digest (in a DigestInfo for PKCS#1
/// v1.5), never the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandsetSign {
    pub mechanism: SignMechanism,
    pub data: Vec<u8>,
}

impl HandsetSign {
    /// Checks it against a key of `key_len` bytes: the PKCS#1 v1.5 input
    /// leaves room for the padding, a PSS digest has its hash's length.
    /// The daemon applies this to what it receives, as the clients do.
    pub fn check(&self, key_len: usize) -> Result<(), CkRv> {
        match self.mechanism {
            // Any digest a SHA-1/SHA-2 hash makes, of any length up to
            // SHA-512's (docs/protocol.md section 7.9).
            SignMechanism::Ecdsa => {
                if self.data.is_empty() || self.data.len() > MAX_ECDSA_DIGEST {
                    return Err(CkRv::DATA_LEN_RANGE);
                }
            }
            // The message crosses the link whole: at most MAX_DATA_LEN.
            SignMechanism::Eddsa => {
                if self.data.len() > MAX_DATA_LEN {
                    return Err(CkRv::DATA_LEN_RANGE);
                }
            }
            SignMechanism::Pkcs1 => {
                if self.data.len() + PKCS1_OVERHEAD > key_len {
                    return Err(CkRv::DATA_LEN_RANGE);
                }
            }
            SignMechanism::Pss { hash, .. } => {
                if self.data.len() != hash.output_len() {
                    return Err(CkRv::DATA_LEN_RANGE);
                }
            }
        }
        Ok(())
    }

    /// The already-hashed signature as it is resolved again on the far
    /// side (`CKM_RSA_PKCS` over the DigestInfo, `CKM_RSA_PKCS_PSS` over
    /// the digest).
    pub fn as_signing(&self) -> Signing {
        match self.mechanism {
            SignMechanism::Pkcs1 => Signing::Raw,
            SignMechanism::Pss { hash, salt_len } => Signing::PssDigest { hash, salt_len },
            SignMechanism::Ecdsa => Signing::EcdsaDigest,
            SignMechanism::Eddsa => Signing::Eddsa,
        }
    }

    /// The mechanism and parameters of the D-Bus `Sign` call that asks for
    /// exactly this signature.
    pub fn wire(&self) -> (u32, MechanismParams) {
        match self.mechanism {
            SignMechanism::Pkcs1 => (ckm::RSA_PKCS, MechanismParams::default()),
            SignMechanism::Ecdsa => (ckm::ECDSA, MechanismParams::default()),
            SignMechanism::Eddsa => (ckm::EDDSA, MechanismParams::default()),
            SignMechanism::Pss { hash, salt_len } => (
                ckm::RSA_PKCS_PSS,
                MechanismParams {
                    hash: hash.mechanism() as u32,
                    salt_len,
                    label: Vec::new(),
                },
            ),
        }
    }
}

enum Collected {
    /// The mechanism hashes here: only the running hash is kept.
    Hashing(Box<Hasher>, HashAlg),
    /// The caller gives what is signed (a DigestInfo or a digest).
    Given(Vec<u8>),
}

/// A signature's input, single- or multi-part: [`SignInput::update`] as
/// often as the caller likes, then [`SignInput::finish`]. Verification
/// collects its input the same way.
pub struct SignInput {
    signing: Signing,
    key_len: usize,
    collected: Collected,
}

impl SignInput {
    /// Starts a signature with a key whose signature is `key_len` bytes
    /// (an RSA key's modulus; an EC key's `r || s`).
    pub fn new(signing: Signing, key_len: usize) -> SignInput {
        let collected = match signing {
            Signing::Pkcs1(h) | Signing::Pss { hash: h, .. } | Signing::Ecdsa(h) => {
                Collected::Hashing(Box::new(Hasher::new(h)), h)
            }
            Signing::Raw | Signing::PssDigest { .. } | Signing::EcdsaDigest | Signing::Eddsa => {
                Collected::Given(Vec::new())
            }
        };
        SignInput {
            signing,
            key_len,
            collected,
        }
    }

    /// The whole input at once.
    pub fn once(signing: Signing, key_len: usize, data: &[u8]) -> Result<HandsetSign, CkRv> {
        let mut input = SignInput::new(signing, key_len);
        input.update(data)?;
        input.finish()
    }

    pub fn signing(&self) -> Signing {
        self.signing
    }

    /// The signature's length: the modulus's.
    pub fn signature_len(&self) -> usize {
        self.key_len
    }

    /// Adds data. Given (unhashed) input can never be longer than a
    /// modulus, so more than [`MAX_DATA_LEN`] is refused at once.
    pub fn update(&mut self, data: &[u8]) -> Result<(), CkRv> {
        match &mut self.collected {
            Collected::Hashing(h, _) => h.update(data),
            Collected::Given(d) => {
                if d.len() + data.len() > MAX_DATA_LEN {
                    return Err(CkRv::DATA_LEN_RANGE);
                }
                d.extend_from_slice(data);
            }
        }
        Ok(())
    }

    /// What the handset signs, checked against the key.
    pub fn finish(self) -> Result<HandsetSign, CkRv> {
        let sign = match (self.signing, self.collected) {
            (Signing::Pkcs1(_), Collected::Hashing(h, alg)) => HandsetSign {
                mechanism: SignMechanism::Pkcs1,
                data: digest_info(alg, &h.finish()),
            },
            (Signing::Pss { hash, salt_len }, Collected::Hashing(h, _)) => HandsetSign {
                mechanism: SignMechanism::Pss { hash, salt_len },
                data: h.finish(),
            },
            (Signing::Raw, Collected::Given(d)) => HandsetSign {
                mechanism: SignMechanism::Pkcs1,
                data: d,
            },
            (Signing::PssDigest { hash, salt_len }, Collected::Given(d)) => HandsetSign {
                mechanism: SignMechanism::Pss { hash, salt_len },
                data: d,
            },
            (Signing::Ecdsa(_), Collected::Hashing(h, _)) => HandsetSign {
                mechanism: SignMechanism::Ecdsa,
                data: h.finish(),
            },
            (Signing::EcdsaDigest, Collected::Given(d)) => HandsetSign {
                mechanism: SignMechanism::Ecdsa,
                data: d,
            },
            (Signing::Eddsa, Collected::Given(d)) => HandsetSign {
                mechanism: SignMechanism::Eddsa,
                data: d,
            },
            // `new` pairs each signing with its way of collecting.
            _ => return Err(CkRv::GENERAL_ERROR),
        };
        sign.check(self.key_len)?;
        Ok(sign)
    }
}

impl Encryption {
    /// The handset's decryption mechanism.
    pub fn for_handset(&self) -> DecryptMechanism {
        match self {
            Encryption::Pkcs1 => DecryptMechanism::Pkcs1,
            Encryption::Oaep { hash, label } => DecryptMechanism::Oaep {
                hash: *hash,
                label: label.clone(),
            },
        }
    }

    /// The mechanism and parameters of the D-Bus `Encrypt`/`Decrypt` call.
    pub fn wire(&self) -> (u32, MechanismParams) {
        match self {
            Encryption::Pkcs1 => (ckm::RSA_PKCS, MechanismParams::default()),
            Encryption::Oaep { hash, label } => (
                ckm::RSA_PKCS_OAEP,
                MechanismParams {
                    hash: hash.mechanism() as u32,
                    salt_len: 0,
                    label: label.clone(),
                },
            ),
        }
    }

    /// The longest plaintext a key of `key_len` bytes encrypts.
    pub fn max_plaintext(&self, key_len: usize) -> usize {
        match self {
            Encryption::Pkcs1 => key_len.saturating_sub(PKCS1_OVERHEAD),
            Encryption::Oaep { hash, .. } => key_len.saturating_sub(2 * hash.output_len() + 2),
        }
    }

    /// Checks a plaintext before encrypting it.
    pub fn check_plaintext(&self, len: usize, key_len: usize) -> Result<(), CkRv> {
        if len > self.max_plaintext(key_len) {
            return Err(CkRv::DATA_LEN_RANGE);
        }
        Ok(())
    }

    /// Checks a ciphertext before it goes to the handset: exactly the
    /// modulus's length.
    pub fn check_ciphertext(&self, len: usize, key_len: usize) -> Result<(), CkRv> {
        if len != key_len {
            return Err(CkRv::ENCRYPTED_DATA_LEN_RANGE);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::digest;

    #[test]
    fn only_the_digest_goes_to_the_handset() {
        let big = vec![0x61u8; 1 << 20];
        let s = SignInput::once(Signing::Pkcs1(HashAlg::Sha256), 256, &big).unwrap();
        assert_eq!(s.mechanism, SignMechanism::Pkcs1);
        assert_eq!(
            s.data,
            digest_info(HashAlg::Sha256, &digest(HashAlg::Sha256, &big))
        );
        let pss = Signing::Pss {
            hash: HashAlg::Sha512,
            salt_len: 64,
        };
        assert_eq!(SignInput::once(pss, 256, &big).unwrap().data.len(), 64);
    }

    /// EC signatures: ECDSA-SHA* hash here and send the digest (any
    /// message size); CKM_ECDSA takes a digest of 1 to 64 bytes, any
    /// length in between; EdDSA sends the message, at most MAX_DATA_LEN.
    #[test]
    fn ec_inputs_are_prepared_and_bounded() {
        let big = vec![0x62u8; 1 << 20];
        let s = SignInput::once(Signing::Ecdsa(HashAlg::Sha384), 96, &big).unwrap();
        assert_eq!(s.mechanism, SignMechanism::Ecdsa);
        assert_eq!(s.data, digest(HashAlg::Sha384, &big));
        let mut parts = SignInput::new(Signing::Ecdsa(HashAlg::Sha384), 96);
        for chunk in big.chunks(1000) {
            parts.update(chunk).unwrap();
        }
        assert_eq!(parts.finish().unwrap(), s);
        for len in [1, 20, 33, 64] {
            SignInput::once(Signing::EcdsaDigest, 64, &vec![1; len]).unwrap();
        }
        for len in [0, 65] {
            assert_eq!(
                SignInput::once(Signing::EcdsaDigest, 64, &vec![1; len]),
                Err(CkRv::DATA_LEN_RANGE)
            );
        }
        let m = SignInput::once(Signing::Eddsa, 64, b"message").unwrap();
        assert_eq!(
            (m.mechanism, m.data.as_slice()),
            (SignMechanism::Eddsa, &b"message"[..])
        );
        SignInput::once(Signing::Eddsa, 64, &[0; MAX_DATA_LEN]).unwrap();
        assert_eq!(
            SignInput::once(Signing::Eddsa, 64, &[0; MAX_DATA_LEN + 1]),
            Err(CkRv::DATA_LEN_RANGE)
        );
        assert_eq!(m.as_signing(), Signing::Eddsa);
        assert_eq!(m.wire().0, ckm::EDDSA);
        assert_eq!(s.as_signing(), Signing::EcdsaDigest);
        assert_eq!(s.wire().0, ckm::ECDSA);
    }

    #[test]
    fn multi_part_equals_single_part() {
        for signing in [
            Signing::Pkcs1(HashAlg::Sha384),
            Signing::Pss {
                hash: HashAlg::Sha256,
                salt_len: 32,
            },
            Signing::Raw,
        ] {
            let mut parts = SignInput::new(signing, 256);
            parts.update(b"hel").unwrap();
            parts.update(b"").unwrap();
            parts.update(b"lo").unwrap();
            assert_eq!(
                parts.finish().unwrap(),
                SignInput::once(signing, 256, b"hello").unwrap()
            );
        }
    }

    #[test]
    fn sizes_are_checked_against_the_key() {
        // PKCS#1 v1.5: data + 11 bytes of padding must fit the modulus.
        assert!(SignInput::once(Signing::Raw, 256, &[1; 245]).is_ok());
        assert_eq!(
            SignInput::once(Signing::Raw, 256, &[1; 246]),
            Err(CkRv::DATA_LEN_RANGE)
        );
        // A PSS digest has its hash's length.
        let digest_given = Signing::PssDigest {
            hash: HashAlg::Sha256,
            salt_len: 32,
        };
        assert_eq!(
            SignInput::once(digest_given, 256, &[0; 31]),
            Err(CkRv::DATA_LEN_RANGE)
        );
        // Given input longer than any modulus is refused while collecting.
        let mut raw = SignInput::new(Signing::Raw, 512);
        assert_eq!(
            raw.update(&[0; MAX_DATA_LEN + 1]),
            Err(CkRv::DATA_LEN_RANGE)
        );
        let oaep = Encryption::Oaep {
            hash: HashAlg::Sha256,
            label: vec![],
        };
        assert_eq!(oaep.max_plaintext(256), 190);
        assert_eq!(oaep.check_plaintext(191, 256), Err(CkRv::DATA_LEN_RANGE));
        assert_eq!(
            Encryption::Pkcs1.check_ciphertext(255, 256),
            Err(CkRv::ENCRYPTED_DATA_LEN_RANGE)
        );
    }

    #[test]
    fn wire_form_resolves_back_to_the_same_signature() {
        let s = SignInput::once(
            Signing::Pss {
                hash: HashAlg::Sha256,
                salt_len: 20,
            },
            256,
            b"m",
        )
        .unwrap();
        let (mech, params) = s.wire();
        let again = Signing::from_ckm(mech, &params).unwrap();
        assert_eq!(again, s.as_signing());
        assert_eq!(SignInput::once(again, 256, &s.data).unwrap(), s);
    }
}
