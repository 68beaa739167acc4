//! The bulk ciphers the module runs in the calling process with a session
//! secret key: AES-CBC, AES-CBC-PAD, AES-GCM, DES3-CBC and DES3-CBC-PAD.
//! This is the standard's way for a token to decrypt mail and files: the
//! phone unwraps the content key with its private key, and the computer
//! does the bulk work. The modes are RustCrypto's; this file only keeps
//! the multi-part state (the partial block, the block held back for the
//! padding, GCM's whole input) and says how long each output is, so that
//! length queries are exact where they can be.

use aes::{Aes128, Aes192, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::{Aead, AeadCore, KeyInit, Nonce, Payload};
use cbc::cipher::generic_array::GenericArray;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cryptoki_sys::*;
use des::TdesEde3;
use zeroize::Zeroizing;

use crate::error::{Error, Result, fail};
use crate::mechanisms::{Mechanism, Param};

/// A GCM tag: the standard lets the caller choose; 128 bits is what the
/// mail and file formats use, and the only size taken here.
const TAG_LEN: usize = 16;
const GCM_IV_LEN: usize = 12;

/// The largest input a GCM operation collects before its final call.
pub const MAX_GCM_LEN: usize = 64 * 1024 * 1024;

type Bytes = Zeroizing<Vec<u8>>;

/// RFC 5649 key unwrap with padding (AES key wrap, KWP) under `key` (16,
/// 24 or 32 bytes): the unwrapped bytes, wiped when dropped. A wrapped
/// length that is not a multiple of 8 of at least 16 bytes is
/// `CKR_WRAPPED_KEY_LEN_RANGE`; one whose integrity check fails (another
/// key, changed bytes) `CKR_WRAPPED_KEY_INVALID`.
pub fn unwrap_kwp(key: &[u8], wrapped: &[u8]) -> Result<Bytes> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return fail(CKR_WRAPPED_KEY_LEN_RANGE);
    }
    let invalid = |_| Error::Rv(CKR_WRAPPED_KEY_INVALID);
    let out = match key.len() {
        16 => aes_kw::KekAes128::try_from(key)
            .map_err(|_| Error::Rv(CKR_UNWRAPPING_KEY_SIZE_RANGE))?
            .unwrap_with_padding_vec(wrapped)
            .map_err(invalid)?,
        24 => aes_kw::KekAes192::try_from(key)
            .map_err(|_| Error::Rv(CKR_UNWRAPPING_KEY_SIZE_RANGE))?
            .unwrap_with_padding_vec(wrapped)
            .map_err(invalid)?,
        32 => aes_kw::KekAes256::try_from(key)
            .map_err(|_| Error::Rv(CKR_UNWRAPPING_KEY_SIZE_RANGE))?
            .unwrap_with_padding_vec(wrapped)
            .map_err(invalid)?,
        _ => return fail(CKR_UNWRAPPING_KEY_SIZE_RANGE),
    };
    Ok(Zeroizing::new(out))
}

/// Which way the operation goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Encrypt,
    Decrypt,
}

macro_rules! cbc_states {
    ($($v:ident: $c:ty;)*) => {
        /// A CBC chain in progress: the cipher and key size, and the IV
        /// carried from block to block. It is kept boxed, so the sizes of
        /// its variants do not matter.
        #[allow(clippy::large_enum_variant)]
        enum Chain {
            $($v(cbc::Encryptor<$c>, cbc::Decryptor<$c>),)*
        }

        impl Chain {
            /// Runs whole blocks through the chain, in place.
            fn run(&mut self, dir: Direction, buf: &mut [u8]) {
                match self {
                    $(Chain::$v(e, d) => {
                        let bs = <$c as cbc::cipher::BlockSizeUser>::block_size();
                        for b in buf.chunks_exact_mut(bs) {
                            let b = GenericArray::from_mut_slice(b);
                            match dir {
                                Direction::Encrypt => e.encrypt_block_mut(b),
                                Direction::Decrypt => d.decrypt_block_mut(b),
                            }
                        }
                    })*
                }
            }
        }
    };
}

cbc_states! {
    Aes128: Aes128;
    Aes192: Aes192;
    Aes256: Aes256;
    Des3: TdesEde3;
}

/// A chain for cipher `C`, made into the variant `make` names; an IV of
/// the wrong size is the caller's parameter's fault.
fn build<C>(
    key: &[u8],
    iv: &[u8],
    make: fn(cbc::Encryptor<C>, cbc::Decryptor<C>) -> Chain,
) -> Result<Chain>
where
    C: cbc::cipher::BlockCipher + cbc::cipher::BlockEncryptMut + cbc::cipher::BlockDecryptMut,
    C: cbc::cipher::KeyInit,
{
    let bad = |_| Error::Rv(CKR_MECHANISM_PARAM_INVALID);
    Ok(make(
        cbc::Encryptor::new_from_slices(key, iv).map_err(bad)?,
        cbc::Decryptor::new_from_slices(key, iv).map_err(bad)?,
    ))
}

/// A chain for a DES3 key, or an AES key of whichever size it is (the key
/// type tells the two 24-byte kinds apart).
fn chain(des: bool, key: &[u8], iv: &[u8]) -> Result<Chain> {
    match (des, key.len()) {
        (true, 24) => build(key, iv, Chain::Des3),
        (false, 16) => build(key, iv, Chain::Aes128),
        (false, 24) => build(key, iv, Chain::Aes192),
        (false, 32) => build(key, iv, Chain::Aes256),
        _ => fail(CKR_KEY_SIZE_RANGE),
    }
}

enum Mode {
    // Boxed: the key schedules are large, and a session's operations are
    // kept by value.
    Cbc {
        chain: Box<Chain>,
        pad: bool,
        block: usize,
    },
    Gcm {
        key: Bytes,
        iv: Vec<u8>,
        aad: Vec<u8>,
    },
}

/// One symmetric encryption or decryption in progress.
pub struct SymOp {
    dir: Direction,
    mode: Mode,
    /// Input not yet run: a partial block, the block held back for the
    /// padding, or all of GCM's input.
    pending: Bytes,
    /// An output that did not fit, kept for the retry.
    pub result: Option<Bytes>,
}

/// The key types a mechanism takes.
pub fn key_type_for(mech: CK_MECHANISM_TYPE) -> Option<CK_KEY_TYPE> {
    match mech {
        CKM_AES_CBC | CKM_AES_CBC_PAD | CKM_AES_GCM => Some(CKK_AES),
        CKM_DES3_CBC | CKM_DES3_CBC_PAD => Some(CKK_DES3),
        _ => None,
    }
}

impl SymOp {
    /// Starts `mech` with `key` (of `key_type`), or says why not.
    pub fn new(
        mech: &Mechanism,
        key_type: CK_KEY_TYPE,
        key: &[u8],
        dir: Direction,
    ) -> Result<SymOp> {
        let want = key_type_for(mech.mechanism).ok_or(Error::Rv(CKR_MECHANISM_INVALID))?;
        if want != key_type {
            return fail(CKR_KEY_TYPE_INCONSISTENT);
        }
        let mode = match (&mech.param, mech.mechanism) {
            (Param::Iv(iv), m) if m != CKM_AES_GCM => {
                let des = key_type == CKK_DES3;
                Mode::Cbc {
                    chain: Box::new(chain(des, key, iv)?),
                    pad: matches!(m, CKM_AES_CBC_PAD | CKM_DES3_CBC_PAD),
                    block: if des { 8 } else { 16 },
                }
            }
            (Param::Gcm { iv, aad, tag_bits }, CKM_AES_GCM) => {
                if iv.len() != GCM_IV_LEN || *tag_bits != (TAG_LEN * 8) as CK_ULONG {
                    return fail(CKR_MECHANISM_PARAM_INVALID);
                }
                if ![16, 24, 32].contains(&key.len()) {
                    return fail(CKR_KEY_SIZE_RANGE);
                }
                Mode::Gcm {
                    key: Zeroizing::new(key.to_vec()),
                    iv: iv.clone(),
                    aad: aad.clone(),
                }
            }
            _ => return fail(CKR_MECHANISM_PARAM_INVALID),
        };
        Ok(SymOp {
            dir,
            mode,
            pending: Zeroizing::new(Vec::new()),
            result: None,
        })
    }

    /// How many bytes an update with `n` more bytes of input runs now
    /// (the rest waits): exact.
    fn runnable(&self, n: usize) -> usize {
        let total = self.pending.len() + n;
        match &self.mode {
            Mode::Gcm { .. } => 0,
            Mode::Cbc { pad, block, .. } => {
                let whole = total - total % block;
                // Decrypting with padding keeps the last block back: it
                // may be the one that holds the padding.
                if *pad && self.dir == Direction::Decrypt && whole == total && whole > 0 {
                    whole - block
                } else {
                    whole
                }
            }
        }
    }

    /// The output of an update with `n` bytes of input: exact.
    pub fn update_len(&self, n: usize) -> usize {
        self.runnable(n)
    }

    /// An update: the output of the whole blocks now complete.
    pub fn update(&mut self, data: &[u8]) -> Result<Bytes> {
        if let Mode::Gcm { .. } = self.mode {
            if self.pending.len() + data.len() > MAX_GCM_LEN {
                return fail(CKR_DATA_LEN_RANGE);
            }
            self.pending.extend_from_slice(data);
            return Ok(Zeroizing::new(Vec::new()));
        }
        let n = self.runnable(data.len());
        let mut all = Zeroizing::new(Vec::with_capacity(self.pending.len() + data.len()));
        all.extend_from_slice(&self.pending);
        all.extend_from_slice(data);
        let mut out = Zeroizing::new(all[..n].to_vec());
        self.pending = Zeroizing::new(all[n..].to_vec());
        if let Mode::Cbc { chain, .. } = &mut self.mode {
            chain.run(self.dir, &mut out);
        }
        Ok(out)
    }

    /// The output of a single-part call with `n` bytes of input: exact
    /// when encrypting, an upper bound when decrypting.
    pub fn single_len(&self, n: usize) -> usize {
        let total = self.pending.len() + n;
        match (&self.mode, self.dir) {
            (Mode::Gcm { .. }, Direction::Encrypt) => total + TAG_LEN,
            (Mode::Gcm { .. }, Direction::Decrypt) => total.saturating_sub(TAG_LEN),
            (
                Mode::Cbc {
                    pad: true, block, ..
                },
                Direction::Encrypt,
            ) => total - total % block + block,
            (Mode::Cbc { .. }, _) => total,
        }
    }

    /// A single-part call, or the final call (`data` empty): the rest of
    /// the output. The output of a call that did not fit is given again.
    pub fn complete(&mut self, data: &[u8]) -> Result<Bytes> {
        if let Some(r) = self.result.take() {
            return Ok(r);
        }
        let mut out = self.update(data)?;
        out.extend_from_slice(&self.finish()?);
        Ok(out)
    }

    /// The final call: what is left, padded or unpadded, or the GCM
    /// operation whole.
    pub fn finish(&mut self) -> Result<Bytes> {
        let left = std::mem::take(&mut *self.pending);
        let left = Zeroizing::new(left);
        let dir = self.dir;
        let range = || {
            fail(match dir {
                Direction::Encrypt => CKR_DATA_LEN_RANGE,
                Direction::Decrypt => CKR_ENCRYPTED_DATA_LEN_RANGE,
            })
        };
        match &mut self.mode {
            Mode::Gcm { key, iv, aad } => gcm(dir, key, iv, aad, &left),
            Mode::Cbc { chain, pad, block } => {
                let block = *block;
                if !*pad {
                    if !left.is_empty() {
                        return range();
                    }
                    return Ok(left);
                }
                match dir {
                    Direction::Encrypt => {
                        let fill = block - left.len() % block;
                        let mut out = left;
                        out.extend(std::iter::repeat_n(fill as u8, fill));
                        chain.run(dir, &mut out);
                        Ok(out)
                    }
                    Direction::Decrypt => {
                        if left.len() != block {
                            return range();
                        }
                        let mut out = left;
                        chain.run(dir, &mut out);
                        let fill = usize::from(out[block - 1]);
                        let ok = (1..=block).contains(&fill)
                            && out[block - fill..].iter().all(|b| usize::from(*b) == fill);
                        if !ok {
                            return fail(CKR_ENCRYPTED_DATA_INVALID);
                        }
                        out.truncate(block - fill);
                        Ok(out)
                    }
                }
            }
        }
    }
}

fn gcm(dir: Direction, key: &[u8], iv: &[u8], aad: &[u8], data: &[u8]) -> Result<Bytes> {
    fn run<C>(c: &C, dir: Direction, iv: &[u8], aad: &[u8], msg: &[u8]) -> Result<Bytes>
    where
        C: Aead + AeadCore<NonceSize = U12>,
    {
        let nonce = Nonce::<C>::from_slice(iv);
        let payload = Payload { msg, aad };
        let r = match dir {
            Direction::Encrypt => c.encrypt(nonce, payload),
            Direction::Decrypt => c.decrypt(nonce, payload),
        };
        r.map(Zeroizing::new)
            .or_else(|_| fail(CKR_ENCRYPTED_DATA_INVALID))
    }
    if dir == Direction::Decrypt && data.len() < TAG_LEN {
        return fail(CKR_ENCRYPTED_DATA_LEN_RANGE);
    }
    let bad = |_| Error::Rv(CKR_KEY_SIZE_RANGE);
    match key.len() {
        16 => run(
            &AesGcm::<Aes128, U12>::new_from_slice(key).map_err(bad)?,
            dir,
            iv,
            aad,
            data,
        ),
        24 => run(
            &AesGcm::<Aes192, U12>::new_from_slice(key).map_err(bad)?,
            dir,
            iv,
            aad,
            data,
        ),
        32 => run(
            &AesGcm::<Aes256, U12>::new_from_slice(key).map_err(bad)?,
            dir,
            iv,
            aad,
            data,
        ),
        _ => fail(CKR_KEY_SIZE_RANGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mech(m: CK_MECHANISM_TYPE, iv: &[u8]) -> Mechanism {
        Mechanism {
            mechanism: m,
            param: Param::Iv(iv.to_vec()),
        }
    }

    /// Runs `op` over `parts` as a caller's updates and final call would,
    /// checking each output against the length the operation announced:
    /// exact, but for a decryption's final part, for which it is an upper
    /// bound (the padding is only seen there).
    fn feed<'a>(mut op: SymOp, parts: impl IntoIterator<Item = &'a [u8]>, exact: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            let n = op.update_len(p.len());
            let piece = op.update(p).unwrap();
            assert_eq!(piece.len(), n);
            out.extend_from_slice(&piece);
        }
        let bound = op.single_len(0);
        let last = op.finish().unwrap();
        assert!(last.len() == bound || (!exact && last.len() < bound));
        out.extend_from_slice(&last);
        out
    }

    fn both(m: &Mechanism, kt: CK_KEY_TYPE, key: &[u8], parts: &[&[u8]]) -> (Vec<u8>, Vec<u8>) {
        let e = SymOp::new(m, kt, key, Direction::Encrypt).unwrap();
        let ct = feed(e, parts.iter().copied(), true);
        let d = SymOp::new(m, kt, key, Direction::Decrypt).unwrap();
        let pt = feed(d, ct.chunks(5), false);
        (ct, pt)
    }

    #[test]
    fn cbc_matches_the_nist_vector() {
        // NIST SP 800-38A F.2.1, CBC-AES128.Encrypt, first block.
        let key = hex("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = hex("000102030405060708090a0b0c0d0e0f");
        let pt = hex("6bc1bee22e409f96e93d7e117393172a");
        let (ct, back) = both(
            &mech(CKM_AES_CBC, &iv),
            CKK_AES,
            &key,
            &[&pt[..7], &pt[7..]],
        );
        assert_eq!(ct, hex("7649abac8119b246cee98e9b12e9197d"));
        assert_eq!(back, pt);
    }

    #[test]
    fn padding_and_every_cipher_round_trip() {
        for (m, kt, key, iv) in [
            (CKM_AES_CBC_PAD, CKK_AES, vec![1; 16], vec![2; 16]),
            (CKM_AES_CBC_PAD, CKK_AES, vec![1; 24], vec![2; 16]),
            (CKM_AES_CBC_PAD, CKK_AES, vec![1; 32], vec![2; 16]),
            (CKM_DES3_CBC_PAD, CKK_DES3, vec![3; 24], vec![4; 8]),
        ] {
            for len in [0, 1, 8, 15, 16, 17, 40] {
                let msg = vec![9u8; len];
                let (ct, pt) = both(&mech(m, &iv), kt, &key, &[&msg]);
                assert_eq!(ct.len() % iv.len(), 0);
                assert!(ct.len() > len);
                assert_eq!(pt, msg, "0x{m:X} {len}");
            }
        }
        // Unpadded CBC takes whole blocks only.
        let mut e = SymOp::new(
            &mech(CKM_AES_CBC, &[0; 16]),
            CKK_AES,
            &[1; 16],
            Direction::Encrypt,
        )
        .unwrap();
        e.update(&[0; 5]).unwrap();
        assert_eq!(e.finish().unwrap_err().rv(), CKR_DATA_LEN_RANGE);
        // A key of the other type, a wrong IV.
        let refused = |m: &Mechanism, kt, key: &[u8]| {
            let op = SymOp::new(m, kt, key, Direction::Encrypt);
            op.err().map(|e| e.rv())
        };
        let des3_key = refused(&mech(CKM_AES_CBC, &[0; 16]), CKK_DES3, &[1; 24]);
        assert_eq!(des3_key, Some(CKR_KEY_TYPE_INCONSISTENT));
        let short_iv = refused(&mech(CKM_AES_CBC, &[0; 8]), CKK_AES, &[1; 16]);
        assert_eq!(short_iv, Some(CKR_MECHANISM_PARAM_INVALID));
    }

    #[test]
    fn a_bad_padding_is_invalid_data() {
        let m = mech(CKM_AES_CBC, &[0; 16]);
        let mut e = SymOp::new(&m, CKK_AES, &[1; 16], Direction::Encrypt).unwrap();
        let ct = e.update(&[0x11; 16]).unwrap();
        let pad = mech(CKM_AES_CBC_PAD, &[0; 16]);
        let mut d = SymOp::new(&pad, CKK_AES, &[1; 16], Direction::Decrypt).unwrap();
        assert!(d.update(&ct).unwrap().is_empty());
        assert_eq!(d.finish().unwrap_err().rv(), CKR_ENCRYPTED_DATA_INVALID);
    }

    #[test]
    fn gcm_round_trips_and_checks_its_tag() {
        let m = Mechanism {
            mechanism: CKM_AES_GCM,
            param: Param::Gcm {
                iv: vec![5; 12],
                aad: b"header".to_vec(),
                tag_bits: 128,
            },
        };
        let (ct, pt) = both(&m, CKK_AES, &[6; 32], &[b"hello ", b"gcm"]);
        assert_eq!(ct.len(), 9 + 16);
        assert_eq!(pt, b"hello gcm");
        let mut d = SymOp::new(&m, CKK_AES, &[6; 32], Direction::Decrypt).unwrap();
        let mut bad = ct.clone();
        bad[0] ^= 1;
        d.update(&bad).unwrap();
        assert_eq!(d.finish().unwrap_err().rv(), CKR_ENCRYPTED_DATA_INVALID);
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
