//! Hashing on the computer: one-shot and incremental digests, and the
//! DER DigestInfo that PKCS#1 v1.5 signs. The handset never hashes.

use phonecsp_protocol::HashAlg;
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

pub fn digest(hash: HashAlg, data: &[u8]) -> Vec<u8> {
    let mut h = Hasher::new(hash);
    h.update(data);
    h.finish()
}

/// An incremental hash, for multi-part operations.
#[derive(Clone)]
pub enum Hasher {
    Sha1(Sha1),
    Sha224(Sha224),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(hash: HashAlg) -> Hasher {
        match hash {
            HashAlg::Sha1 => Hasher::Sha1(Sha1::new()),
            HashAlg::Sha224 => Hasher::Sha224(Sha224::new()),
            HashAlg::Sha256 => Hasher::Sha256(Sha256::new()),
            HashAlg::Sha384 => Hasher::Sha384(Sha384::new()),
            HashAlg::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    pub fn finish(self) -> Vec<u8> {
        match self {
            Hasher::Sha1(h) => h.finalize().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        }
    }
}

/// DER DigestInfo for PKCS#1 v1.5 signatures.
pub fn digest_info(hash: HashAlg, digest: &[u8]) -> Vec<u8> {
    let mut v = hash.digest_info_prefix().to_vec();
    v.extend_from_slice(digest);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incremental_equals_one_shot() {
        for hash in HashAlg::ALL {
            let mut h = Hasher::new(hash);
            h.update(b"hel");
            h.update(b"lo");
            let d = h.finish();
            assert_eq!(d, digest(hash, b"hello"));
            assert_eq!(d.len(), hash.output_len());
        }
        assert_eq!(
            digest_info(HashAlg::Sha256, &[0; 32]).len(),
            HashAlg::Sha256.digest_info_prefix().len() + 32
        );
    }
}
