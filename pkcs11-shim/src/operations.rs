//! A session's operation state, as one value: at most one operation of each
//! kind (find, sign, verify, encrypt, decrypt, digest) active at a time,
//! each kind independent of the others. The rules every kind shares are
//! written once here: a second init is `CKR_OPERATION_ACTIVE`, a call
//! without init `CKR_OPERATION_NOT_INITIALIZED`, and, as PKCS#11 2.40
//! section 5.2 says, every call of an operation that fails ends it (a
//! single-part call after an update, a bad argument, a NULL length pointer
//! included), while a length query or a too-small buffer leaves it active
//! for the retry.

use std::collections::VecDeque;

use cryptoki_sys::*;
use phonecsp::hash::Hasher;
use phonecsp::input::SignInput;
use phonecsp::local::PublicKey;
use phonecsp::mechanism::{Encryption, Signing};
use phonecsp_protocol::{CkRv, HashAlg};
use rsa::RsaPublicKey;
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use crate::error::{Error, Result, fail};
use crate::registry::ObjKey;
use crate::symmetric::SymOp;

/// The size of the caller's output buffer; `None` for a length query (a
/// NULL buffer).
pub type Cap = Option<usize>;

/// What a function that produces bytes gives back.
pub enum Out {
    /// A length query (NULL output buffer): this many bytes suffice.
    Len(usize),
    Data(Zeroizing<Vec<u8>>),
}

pub struct FindOp(pub VecDeque<CK_OBJECT_HANDLE>);

/// The operations that start with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUse {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
}

pub struct SignOp {
    pub key: ObjKey,
    pub input: SignInput,
}

pub struct VerifyOp {
    pub key: PublicKey,
    pub input: SignInput,
}

/// An encryption: RSA to a public key (single-part), or a session secret
/// key's cipher.
pub enum EncryptOp {
    Rsa { key: RsaPublicKey, enc: Encryption },
    Sym(SymOp),
}

/// A decryption: RSA on the phone (single-part), or a session secret
/// key's cipher.
pub enum DecryptOp {
    Rsa(RsaDecrypt),
    Sym(SymOp),
}

pub struct RsaDecrypt {
    pub key: ObjKey,
    pub enc: Encryption,
    /// The modulus length: the largest plaintext, and the ciphertext's size.
    pub len: usize,
    /// The plaintext, kept after a too-small buffer for the retry.
    pub result: Option<Zeroizing<Vec<u8>>>,
}

impl SignOp {
    /// `CKR_KEY_TYPE_INCONSISTENT` for a mechanism of another key type.
    pub fn new(
        (key, public): (ObjKey, PublicKey),
        signing: Signing,
    ) -> std::result::Result<SignOp, CkRv> {
        public.check_signing(&signing)?;
        Ok(SignOp {
            key,
            input: SignInput::new(signing, public.signature_len()),
        })
    }
}

impl VerifyOp {
    pub fn new(key: PublicKey, signing: Signing) -> std::result::Result<VerifyOp, CkRv> {
        key.check_signing(&signing)?;
        let input = SignInput::new(signing, key.signature_len());
        Ok(VerifyOp { key, input })
    }
}

impl DecryptOp {
    pub fn rsa(
        (key, public): (ObjKey, PublicKey),
        enc: Encryption,
    ) -> std::result::Result<DecryptOp, CkRv> {
        let len = public.rsa()?.size();
        let result = None;
        Ok(DecryptOp::Rsa(RsaDecrypt {
            key,
            enc,
            len,
            result,
        }))
    }
}

pub struct DigestOp {
    pub hasher: Hasher,
    pub hash: HashAlg,
}

/// Takes a signature's collected input out of its operation, which ends
/// with it; the fresh input left behind is never used.
pub fn take_input(input: &mut SignInput) -> SignInput {
    let fresh = SignInput::new(input.signing(), input.signature_len());
    std::mem::replace(input, fresh)
}

/// An operation in progress, and whether an update has been seen (after
/// which only the final call may end it).
pub struct Active<T> {
    op: T,
    multipart: bool,
}

/// An operation kind: where [`Operations`] keeps it.
pub trait Kind: Sized {
    fn slot(ops: &mut Operations) -> &mut Option<Active<Self>>;
}

/// A kind whose final call writes bytes to the caller.
pub trait Produces: Kind {
    /// The output's length for a length query, with `input` bytes given
    /// to the call: exact, or an upper bound when [`Produces::exact`] is
    /// false.
    fn output_len(&self, input: usize) -> usize;
    /// Whether a buffer shorter than [`Produces::output_len`] can be
    /// refused before the work is done.
    fn exact(&self) -> bool {
        true
    }
    /// Keeps an output that did not fit, for the retry.
    fn keep(&mut self, _out: Zeroizing<Vec<u8>>) {}
}

impl Produces for SignOp {
    fn output_len(&self, _: usize) -> usize {
        self.input.signature_len()
    }
}

impl Produces for DigestOp {
    fn output_len(&self, _: usize) -> usize {
        self.hash.output_len()
    }
}

impl Produces for EncryptOp {
    fn output_len(&self, input: usize) -> usize {
        match self {
            EncryptOp::Rsa { key, .. } => key.size(),
            EncryptOp::Sym(s) => s.result.as_ref().map_or(s.single_len(input), |r| r.len()),
        }
    }

    fn keep(&mut self, out: Zeroizing<Vec<u8>>) {
        if let EncryptOp::Sym(s) = self {
            s.result = Some(out);
        }
    }
}

impl Produces for DecryptOp {
    fn exact(&self) -> bool {
        false
    }

    fn output_len(&self, input: usize) -> usize {
        match self {
            DecryptOp::Rsa(r) => r.result.as_ref().map_or(r.len, |r| r.len()),
            DecryptOp::Sym(s) => s.result.as_ref().map_or(s.single_len(input), |r| r.len()),
        }
    }

    fn keep(&mut self, out: Zeroizing<Vec<u8>>) {
        match self {
            DecryptOp::Rsa(r) => r.result = Some(out),
            DecryptOp::Sym(s) => s.result = Some(out),
        }
    }
}

/// Declares the one value that holds a session's operations, and which
/// `C_SessionCancel` flag ends each kind.
macro_rules! operations {
    ($($field:ident: $ty:ty = $flag:expr;)*) => {
        /// Every operation of one session.
        #[derive(Default)]
        pub struct Operations {
            $($field: Option<Active<$ty>>,)*
        }

        $(impl Kind for $ty {
            fn slot(ops: &mut Operations) -> &mut Option<Active<Self>> {
                &mut ops.$field
            }
        })*

        impl Operations {
            /// `C_SessionCancel`: ends the operations `flags` name.
            pub fn cancel(&mut self, flags: CK_FLAGS) {
                $(if flags & $flag != 0 {
                    self.$field = None;
                })*
            }
        }
    };
}

operations! {
    find: FindOp = CKF_FIND_OBJECTS;
    sign: SignOp = CKF_SIGN;
    verify: VerifyOp = CKF_VERIFY;
    encrypt: EncryptOp = CKF_ENCRYPT;
    decrypt: DecryptOp = CKF_DECRYPT;
    digest: DigestOp = CKF_DIGEST;
}

impl Operations {
    /// Starts an operation of kind `T` with what `make` builds, unless one
    /// is active; `make` runs only when none is.
    pub fn start<T: Kind>(&mut self, make: impl FnOnce() -> Result<T>) -> Result<()> {
        if T::slot(self).is_some() {
            return fail(CKR_OPERATION_ACTIVE);
        }
        let op = make()?;
        *T::slot(self) = Some(Active {
            op,
            multipart: false,
        });
        Ok(())
    }

    /// An `*Init` call: a NULL mechanism ends the operation, as the
    /// standard lets a caller cancel that way; otherwise [`Self::start`].
    pub fn init<T: Kind, M>(
        &mut self,
        mech: Option<M>,
        make: impl FnOnce(M) -> Result<T>,
    ) -> Result<()> {
        match mech {
            None => {
                *T::slot(self) = None;
                Ok(())
            }
            Some(m) => self.start(|| make(m)),
        }
    }

    /// The active operation of kind `T`.
    pub fn active<T: Kind>(&mut self) -> Result<&mut T> {
        match T::slot(self) {
            Some(a) => Ok(&mut a.op),
            None => fail(CKR_OPERATION_NOT_INITIALIZED),
        }
    }

    /// Ends the operation of kind `T`, which must be active.
    pub fn end<T: Kind>(&mut self) -> Result<T> {
        T::slot(self)
            .take()
            .map(|a| a.op)
            .ok_or(Error::Rv(CKR_OPERATION_NOT_INITIALIZED))
    }

    /// Settles one call of an operation of kind `T` (an update, a
    /// single-part or a final call): a failure other than a too-small
    /// buffer ends the operation, whatever failed, the reading of the
    /// caller's arguments included.
    pub fn settle<T: Kind, R>(&mut self, r: Result<R>) -> Result<R> {
        if matches!(&r, Err(e) if !matches!(e, Error::BufferTooSmall { .. })) {
            *T::slot(self) = None;
        }
        r
    }

    /// An `*Update` call: the operation becomes multi-part (a failure ends
    /// it, see [`Self::settle`]).
    pub fn update<T: Kind>(&mut self, f: impl FnOnce(&mut T) -> Result<()>) -> Result<()> {
        let a = T::slot(self)
            .as_mut()
            .ok_or(Error::Rv(CKR_OPERATION_NOT_INITIALIZED))?;
        a.multipart = true;
        let r = f(&mut a.op);
        self.settle::<T, ()>(r)
    }

    /// An update that writes bytes back (a secret key's encryption or
    /// decryption): the operation becomes multi-part; `len` says how long
    /// the output of this update is, and, as for a final call, a length
    /// query or a too-small buffer leave the operation as it was.
    pub fn update_out<T: Kind>(
        &mut self,
        cap: Cap,
        len: impl FnOnce(&T) -> Result<usize>,
        run: impl FnOnce(&mut T) -> Result<Zeroizing<Vec<u8>>>,
    ) -> Result<Out> {
        let a = T::slot(self)
            .as_mut()
            .ok_or(Error::Rv(CKR_OPERATION_NOT_INITIALIZED))?;
        let n = len(&a.op)?;
        match cap {
            None => Ok(Out::Len(n)),
            Some(c) if c < n => Err(Error::BufferTooSmall { needed: n }),
            Some(_) => {
                a.multipart = true;
                run(&mut a.op).map(Out::Data)
            }
        }
    }

    /// The final call of a kind that writes nothing back (verify): ends
    /// the operation. A single-part call (`single`) after an update is
    /// refused with `CKR_OPERATION_ACTIVE`, and, failing, ends it too.
    pub fn finish<T: Kind>(&mut self, single: bool) -> Result<T> {
        self.take_final(single).map(|a| a.op)
    }

    fn take_final<T: Kind>(&mut self, single: bool) -> Result<Active<T>> {
        match T::slot(self).take() {
            None => fail(CKR_OPERATION_NOT_INITIALIZED),
            Some(a) if single && a.multipart => fail(CKR_OPERATION_ACTIVE),
            Some(a) => Ok(a),
        }
    }

    /// The final call of a kind that writes bytes (`cap`: the caller's
    /// buffer, `None` for a length query). The operation stays active for
    /// a length query and a too-small buffer, and ends otherwise, `run`'s
    /// failure included.
    pub fn produce<T: Produces>(
        &mut self,
        single: bool,
        (cap, input): (Cap, usize),
        run: impl FnOnce(&mut T) -> Result<Zeroizing<Vec<u8>>>,
    ) -> Result<Out> {
        let mut active = self.take_final::<T>(single)?;
        let op = &mut active.op;
        let n = op.output_len(input);
        let result = match cap {
            None => Ok(Out::Len(n)),
            Some(c) if op.exact() && c < n => Err(Error::BufferTooSmall { needed: n }),
            Some(c) => {
                let out = run(op)?;
                if out.len() <= c {
                    return Ok(Out::Data(out));
                }
                let needed = out.len();
                op.keep(out);
                Err(Error::BufferTooSmall { needed })
            }
        };
        *T::slot(self) = Some(active);
        result
    }
}
