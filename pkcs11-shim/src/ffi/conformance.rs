//! The module at its C boundary, on the in-memory fake handset, checked
//! against PKCS#11 2.40 section by section (docs/pkcs11-conformance.md
//! follows the same order). Every test initialises the process's module,
//! so each holds `module::GLOBAL` for its length. The wrappers below make
//! each C call once, with NULL where a test passes `None`, so that the
//! tests themselves are safe code.

use std::sync::MutexGuard;

use rsa::Pkcs1v15Encrypt;

use super::*;
use crate::backend::fake::{self, Fake};
use crate::objects;

type H = CK_SESSION_HANDLE;

// ---- the fixture ------------------------------------------------------------

/// An initialised module on a fake token, with a read/write session
/// logged in and the key pair's handles. Finalises when dropped.
struct Fx {
    fake: Fake,
    h: H,
    private: CK_OBJECT_HANDLE,
    public: CK_OBJECT_HANDLE,
    _global: MutexGuard<'static, ()>,
}

impl Drop for Fx {
    fn drop(&mut self) {
        // SAFETY: NULL is the reserved argument's only value.
        unsafe { C_Finalize(std::ptr::null_mut()) };
    }
}

fn null<T>() -> *mut T {
    std::ptr::null_mut()
}

/// A fresh module on a fresh fake token, no session open.
fn module_on(fake: &Fake) -> MutexGuard<'static, ()> {
    let g = module::GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
    // A test that failed half-way may have left one behind.
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
    module::initialize_fake(Box::new(fake.clone())).expect("initialised");
    g
}

fn fx() -> Fx {
    let fake = Fake::new();
    let g = module_on(&fake);
    let slot = slots()[0];
    let h = open_session(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION).expect("a session");
    assert_eq!(login(h, Some(fake::PIN)), CKR_OK);
    let private = find(h, CKO_PRIVATE_KEY)[0];
    let public = find(h, CKO_PUBLIC_KEY)[0];
    Fx {
        fake,
        h,
        private,
        public,
        _global: g,
    }
}

// ---- one wrapper per C signature ---------------------------------------------

fn slots() -> Vec<CK_SLOT_ID> {
    let mut list = [0; 8];
    let mut n = 8;
    // SAFETY: a buffer of `n` slot IDs.
    assert_eq!(
        unsafe { C_GetSlotList(CK_FALSE, list.as_mut_ptr(), &mut n) },
        CKR_OK
    );
    list[..n as usize].to_vec()
}

fn open_session(slot: CK_SLOT_ID, flags: CK_FLAGS) -> std::result::Result<H, CK_RV> {
    let mut h = 0;
    // SAFETY: a valid out-pointer; the application pointer and callback
    // may be NULL.
    match unsafe { C_OpenSession(slot, flags, null(), None, &mut h) } {
        CKR_OK => Ok(h),
        rv => Err(rv),
    }
}

fn login(h: H, pin: Option<&[u8]>) -> CK_RV {
    let mut pin = pin.map(<[u8]>::to_vec);
    let (p, n) = match pin.as_mut() {
        Some(v) => (v.as_mut_ptr(), v.len() as CK_ULONG),
        None => (null(), 0),
    };
    // SAFETY: `p` is NULL with length 0, or valid for `n` bytes.
    unsafe { C_Login(h, CKU_USER, p, n) }
}

fn attr(t: CK_ATTRIBUTE_TYPE, v: &mut [u8]) -> CK_ATTRIBUTE {
    CK_ATTRIBUTE {
        type_: t,
        pValue: v.as_mut_ptr() as *mut c_void,
        ulValueLen: v.len() as CK_ULONG,
    }
}

fn find(h: H, class: CK_OBJECT_CLASS) -> Vec<CK_OBJECT_HANDLE> {
    let mut c = class.to_ne_bytes();
    let mut t = [attr(CKA_CLASS, &mut c)];
    let mut found = [0; 16];
    let mut n = 0;
    // SAFETY: a template of one attribute, buffers of their stated sizes.
    unsafe {
        assert_eq!(C_FindObjectsInit(h, t.as_mut_ptr(), 1), CKR_OK);
        assert_eq!(C_FindObjects(h, found.as_mut_ptr(), 16, &mut n), CKR_OK);
        assert_eq!(C_FindObjectsFinal(h), CKR_OK);
    }
    found[..n as usize].to_vec()
}

fn mechanism_of(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: null(),
        ulParameterLen: 0,
    }
}

type KeyInit = unsafe extern "C" fn(H, *mut CK_MECHANISM, CK_OBJECT_HANDLE) -> CK_RV;
type SinglePart = unsafe extern "C" fn(H, *mut u8, CK_ULONG, *mut u8, *mut CK_ULONG) -> CK_RV;
type Final = unsafe extern "C" fn(H, *mut u8, *mut CK_ULONG) -> CK_RV;
type Input = unsafe extern "C" fn(H, *mut u8, CK_ULONG) -> CK_RV;

fn key_init(f: KeyInit, h: H, m: CK_MECHANISM_TYPE, key: CK_OBJECT_HANDLE) -> CK_RV {
    let mut m = mechanism_of(m);
    // SAFETY: a valid mechanism without a parameter.
    unsafe { f(h, &mut m, key) }
}

fn digest_init(h: H, m: CK_MECHANISM_TYPE) -> CK_RV {
    let mut m = mechanism_of(m);
    // SAFETY: a valid mechanism without a parameter.
    unsafe { C_DigestInit(h, &mut m) }
}

/// How a call is given its output.
#[derive(Clone, Copy, Debug)]
enum Out {
    /// A NULL length pointer.
    NullLen,
    /// A NULL buffer: a length query.
    Query,
    /// A buffer of this many bytes.
    Cap(usize),
}

/// Makes `call` with a buffer as `out` says; the `CK_RV`, the length
/// written back and the bytes.
fn with_out(
    out: Out,
    call: impl FnOnce(*mut u8, *mut CK_ULONG) -> CK_RV,
) -> (CK_RV, usize, Vec<u8>) {
    let mut buf = vec![0u8; if let Out::Cap(n) = out { n } else { 0 }];
    let mut len = buf.len() as CK_ULONG;
    let rv = match out {
        Out::NullLen => call(buf.as_mut_ptr(), null()),
        Out::Query => call(null(), &mut len),
        Out::Cap(_) => call(buf.as_mut_ptr(), &mut len),
    };
    let n = len as usize;
    buf.truncate(n);
    (rv, n, buf)
}

/// Input bytes, or NULL with a length of 4.
fn input(data: Option<&[u8]>) -> (*mut u8, CK_ULONG) {
    match data {
        Some(d) => (d.as_ptr() as *mut u8, d.len() as CK_ULONG),
        None => (null(), 4),
    }
}

fn single(f: SinglePart, h: H, data: Option<&[u8]>, out: Out) -> (CK_RV, usize, Vec<u8>) {
    let (p, n) = input(data);
    // SAFETY: `p` NULL or valid for `n` bytes, only read; the output as
    // `with_out` makes it.
    with_out(out, |b, l| unsafe { f(h, p, n, b, l) })
}

fn last(f: Final, h: H, out: Out) -> (CK_RV, usize, Vec<u8>) {
    // SAFETY: the output as `with_out` makes it.
    with_out(out, |b, l| unsafe { f(h, b, l) })
}

fn feed(f: Input, h: H, data: Option<&[u8]>) -> CK_RV {
    let (p, n) = input(data);
    // SAFETY: `p` NULL or valid for `n` bytes, only read.
    unsafe { f(h, p, n) }
}

fn verify(h: H, data: Option<&[u8]>, sig: Option<&[u8]>) -> CK_RV {
    let (d, dn) = input(data);
    let (s, sn) = input(sig);
    // SAFETY: each pointer NULL or valid for its length, only read.
    unsafe { C_Verify(h, d, dn, s, sn) }
}

fn rv(r: (CK_RV, usize, Vec<u8>)) -> CK_RV {
    r.0
}

// ---- operations end as the standard says (section 5, each function's
// rule on ending its operation; section 5.2's output convention) ---------

/// The operation a path runs in.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    Digest,
}

/// One way a call of an operation can go.
struct Path {
    what: &'static str,
    kind: Kind,
    /// After the operation's init.
    before: fn(&Fx),
    call: fn(&Fx) -> CK_RV,
    want: CK_RV,
    /// Whether the call ends the operation.
    ends: bool,
}

fn start(fx: &Fx, kind: Kind) {
    let h = fx.h;
    let r = match kind {
        Kind::Sign => key_init(C_SignInit, h, CKM_SHA256_RSA_PKCS, fx.private),
        Kind::Verify => key_init(C_VerifyInit, h, CKM_SHA256_RSA_PKCS, fx.public),
        Kind::Encrypt => key_init(C_EncryptInit, h, CKM_RSA_PKCS, fx.public),
        Kind::Decrypt => key_init(C_DecryptInit, h, CKM_RSA_PKCS, fx.private),
        Kind::Digest => digest_init(h, CKM_SHA256),
    };
    assert_eq!(r, CKR_OK, "{kind:?} init");
}

/// Whether the operation of `kind` is still active: a call that leaves
/// it as it is when it is.
fn active(fx: &Fx, kind: Kind) -> bool {
    let h = fx.h;
    let r = match kind {
        Kind::Sign => rv(last(C_SignFinal, h, Out::Query)),
        Kind::Digest => rv(last(C_DigestFinal, h, Out::Query)),
        Kind::Encrypt => rv(single(C_Encrypt, h, Some(b"x"), Out::Query)),
        Kind::Decrypt => rv(single(C_Decrypt, h, Some(&[0; 256]), Out::Query)),
        Kind::Verify => feed(C_VerifyUpdate, h, Some(b"x")),
    };
    match r {
        CKR_OK => true,
        CKR_OPERATION_NOT_INITIALIZED => false,
        r => panic!("{kind:?}: probing answered 0x{r:X}"),
    }
}

fn ciphertext() -> Vec<u8> {
    fake::public_key()
        .encrypt(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, b"secret")
        .expect("encrypted")
}

fn signature() -> Vec<u8> {
    let fake = Fake::new();
    fake.state().logged_in = true;
    let input = phonecsp::input::SignInput::once(
        phonecsp::mechanism::Signing::from_ckm(CKM_SHA256_RSA_PKCS as u32, &Default::default())
            .expect("a mechanism"),
        256,
        b"msg",
    )
    .expect("an input");
    use crate::backend::Backend;
    let t = crate::backend::TokenName {
        handset: fake::HANDSET.into(),
        token: fake::TOKEN.into(),
    };
    fake.sign(&t, fake::KEY_ID, &input).expect("signed")
}

fn nothing(_: &Fx) {}

/// One way a call of an operation can go, as a row: the operation, what
/// the call is, what runs after the operation's init, the call, the
/// `CK_RV` it gives, and whether it ends the operation.
macro_rules! paths {
    ($($kind:ident $what:literal [$before:expr] $call:expr => $want:expr, $ends:expr;)*) => {
        &[$(Path {
            what: $what,
            kind: Kind::$kind,
            before: $before,
            call: $call,
            want: $want,
            ends: $ends,
        },)*]
    };
}

#[rustfmt::skip]
const PATHS: &[Path] = paths! {
    // C_Sign, C_SignUpdate, C_SignFinal.
    Sign "C_Sign after C_SignUpdate" [|fx| assert_eq!(feed(C_SignUpdate, fx.h, Some(b"m")), CKR_OK)]
        |fx| rv(single(C_Sign, fx.h, Some(b"msg"), Out::Cap(256))) => CKR_OPERATION_ACTIVE, true;
    Sign "C_Sign the handset refuses" [|fx| fx.fake.fail("sign", phonecsp_protocol::CkRv::FUNCTION_CANCELED)]
        |fx| rv(single(C_Sign, fx.h, Some(b"msg"), Out::Cap(256))) => CKR_FUNCTION_CANCELED, true;
    Sign "C_Sign that succeeds" [nothing]
        |fx| rv(single(C_Sign, fx.h, Some(b"msg"), Out::Cap(256))) => CKR_OK, true;
    Sign "C_SignFinal with a NULL length pointer" [|fx| assert_eq!(feed(C_SignUpdate, fx.h, Some(b"m")), CKR_OK)]
        |fx| rv(last(C_SignFinal, fx.h, Out::NullLen)) => CKR_ARGUMENTS_BAD, true;
    Sign "C_SignFinal the handset refuses" [|fx| fx.fake.fail("sign", phonecsp_protocol::CkRv::DEVICE_ERROR)]
        |fx| rv(last(C_SignFinal, fx.h, Out::Cap(256))) => CKR_DEVICE_ERROR, true;
    Sign "C_SignFinal into a short buffer" [nothing]
        |fx| rv(last(C_SignFinal, fx.h, Out::Cap(1))) => CKR_BUFFER_TOO_SMALL, false;
    Sign "C_SignInit while signing" [nothing]
        |fx| key_init(C_SignInit, fx.h, CKM_SHA1_RSA_PKCS, fx.private) => CKR_OPERATION_ACTIVE, false;
    // C_Verify, C_VerifyUpdate, C_VerifyFinal.
    Verify "C_Verify with a NULL signature" [nothing]
        |fx| verify(fx.h, Some(b"msg"), None) => CKR_ARGUMENTS_BAD, true;
    Verify "C_Verify with NULL data" [nothing]
        |fx| verify(fx.h, None, Some(&[0; 256])) => CKR_ARGUMENTS_BAD, true;
    Verify "C_Verify of a wrong signature" [nothing]
        |fx| verify(fx.h, Some(b"msg"), Some(&[1; 256])) => CKR_SIGNATURE_INVALID, true;
    Verify "C_Verify of a signature of the wrong length" [nothing]
        |fx| verify(fx.h, Some(b"msg"), Some(&[1; 255])) => CKR_SIGNATURE_LEN_RANGE, true;
    Verify "C_Verify after C_VerifyUpdate" [|fx| assert_eq!(feed(C_VerifyUpdate, fx.h, Some(b"m")), CKR_OK)]
        |fx| verify(fx.h, Some(b"msg"), Some(&signature())) => CKR_OPERATION_ACTIVE, true;
    Verify "C_Verify that succeeds" [nothing]
        |fx| verify(fx.h, Some(b"msg"), Some(&signature())) => CKR_OK, true;
    Verify "C_VerifyFinal of a wrong signature" [nothing]
        |fx| feed(C_VerifyFinal, fx.h, Some(&[1; 256])) => CKR_SIGNATURE_INVALID, true;
    Verify "C_VerifyInit while verifying" [nothing]
        |fx| key_init(C_VerifyInit, fx.h, CKM_SHA256_RSA_PKCS, fx.public) => CKR_OPERATION_ACTIVE, false;
    // C_Encrypt (and its multi-part forms, which RSA does not have).
    Encrypt "C_Encrypt of too much data" [nothing]
        |fx| rv(single(C_Encrypt, fx.h, Some(&[7; 300]), Out::Cap(256))) => CKR_DATA_LEN_RANGE, true;
    Encrypt "C_EncryptUpdate of a single-part mechanism" [nothing]
        |fx| rv(single(C_EncryptUpdate, fx.h, Some(b"x"), Out::Cap(256))) => CKR_FUNCTION_NOT_SUPPORTED, true;
    Encrypt "C_EncryptInit while encrypting" [nothing]
        |fx| key_init(C_EncryptInit, fx.h, CKM_RSA_PKCS, fx.public) => CKR_OPERATION_ACTIVE, false;
    // C_Decrypt.
    Decrypt "C_Decrypt of a ciphertext of the wrong length" [nothing]
        |fx| rv(single(C_Decrypt, fx.h, Some(&[1; 255]), Out::Cap(256))) => CKR_ENCRYPTED_DATA_LEN_RANGE, true;
    Decrypt "C_Decrypt of a ciphertext the handset rejects" [nothing]
        |fx| rv(single(C_Decrypt, fx.h, Some(&[1; 256]), Out::Cap(256))) => CKR_ENCRYPTED_DATA_INVALID, true;
    Decrypt "C_DecryptFinal of a single-part mechanism" [nothing]
        |fx| rv(last(C_DecryptFinal, fx.h, Out::Cap(256))) => CKR_FUNCTION_NOT_SUPPORTED, true;
    Decrypt "C_DecryptInit while decrypting" [nothing]
        |fx| key_init(C_DecryptInit, fx.h, CKM_RSA_PKCS, fx.private) => CKR_OPERATION_ACTIVE, false;
    // C_Digest, C_DigestUpdate, C_DigestKey, C_DigestFinal.
    Digest "C_Digest after C_DigestUpdate" [|fx| assert_eq!(feed(C_DigestUpdate, fx.h, Some(b"a")), CKR_OK)]
        |fx| rv(single(C_Digest, fx.h, Some(b"abc"), Out::Cap(32))) => CKR_OPERATION_ACTIVE, true;
    Digest "C_DigestKey" [nothing]
        |fx| C_DigestKey(fx.h, fx.public) => CKR_KEY_INDIGESTIBLE, true;
    Digest "C_DigestFinal with a NULL length pointer" [nothing]
        |fx| rv(last(C_DigestFinal, fx.h, Out::NullLen)) => CKR_ARGUMENTS_BAD, true;
    Digest "C_DigestFinal into a short buffer" [nothing]
        |fx| rv(last(C_DigestFinal, fx.h, Out::Cap(1))) => CKR_BUFFER_TOO_SMALL, false;
    Digest "C_DigestInit while digesting" [nothing]
        |fx| digest_init(fx.h, CKM_SHA_1) => CKR_OPERATION_ACTIVE, false;
};

/// Runs one path on a fresh fixture: the operation of `kind` started,
/// `before`, then `call`, which must answer `want` and end the operation
/// or leave it active as `ends` says.
fn check_path(
    kind: Kind,
    what: &str,
    before: fn(&Fx),
    call: &dyn Fn(&Fx) -> CK_RV,
    want: CK_RV,
    ends: bool,
) {
    let fx = fx();
    start(&fx, kind);
    before(&fx);
    let got = call(&fx);
    assert_eq!(got, want, "{what}: 0x{got:X}");
    assert_eq!(active(&fx, kind), !ends, "{what}: ended?");
}

#[test]
fn s5_operations_end_on_failure_and_stay_for_a_length_query() {
    for p in PATHS {
        check_path(p.kind, p.what, p.before, &p.call, p.want, p.ends);
    }
}

/// A single-part call: its name, its operation, input it takes, the
/// output size it needs and a buffer size too short for that.
type SinglePartCall = (&'static str, Kind, SinglePart, Vec<u8>, usize, usize);

/// Section 5.2's output convention is the same for every single-part
/// call: a NULL length pointer or NULL input fails and ends the
/// operation; a length query and a buffer too short leave it active.
/// Each call with input it takes, the output it needs and a buffer too
/// short for that.
#[test]
fn s5_2_every_single_part_call_keeps_the_output_convention() {
    #[rustfmt::skip]
    let calls: [SinglePartCall; 4] = [
        ("C_Sign", Kind::Sign, C_Sign, b"msg".to_vec(), 256, 10),
        ("C_Encrypt", Kind::Encrypt, C_Encrypt, b"x".to_vec(), 256, 255),
        ("C_Decrypt", Kind::Decrypt, C_Decrypt, ciphertext(), 256, 2),
        ("C_Digest", Kind::Digest, C_Digest, b"abc".to_vec(), 32, 31),
    ];
    for (name, kind, f, data, size, short) in calls {
        let data = Some(&data[..]);
        #[rustfmt::skip]
        let rules = [
            ("with a NULL length pointer", data, Out::NullLen, CKR_ARGUMENTS_BAD, true),
            ("with NULL data", None, Out::Cap(size), CKR_ARGUMENTS_BAD, true),
            ("length query", data, Out::Query, CKR_OK, false),
            ("into a short buffer", data, Out::Cap(short), CKR_BUFFER_TOO_SMALL, false),
        ];
        for (what, data, out, want, ends) in rules {
            let call = |fx: &Fx| rv(single(f, fx.h, data, out));
            check_path(kind, &format!("{name} {what}"), nothing, &call, want, ends);
        }
    }
    // A call that takes input only: NULL input fails and ends it too.
    let feeds: [(&str, Kind, Input); 4] = [
        ("C_SignUpdate", Kind::Sign, C_SignUpdate),
        ("C_VerifyUpdate", Kind::Verify, C_VerifyUpdate),
        ("C_VerifyFinal", Kind::Verify, C_VerifyFinal),
        ("C_DigestUpdate", Kind::Digest, C_DigestUpdate),
    ];
    for (name, kind, f) in feeds {
        let call = |fx: &Fx| feed(f, fx.h, None);
        let what = format!("{name} with NULL input");
        check_path(kind, &what, nothing, &call, CKR_ARGUMENTS_BAD, true);
    }
}

#[test]
fn s5_an_init_while_active_leaves_the_active_operation_alone() {
    let fx = fx();
    start(&fx, Kind::Sign);
    // A SHA-1 init is refused; the SHA-256 operation signs.
    assert_eq!(
        key_init(C_SignInit, fx.h, CKM_SHA1_RSA_PKCS, fx.private),
        CKR_OPERATION_ACTIVE
    );
    let (r, n, sig) = single(C_Sign, fx.h, Some(b"msg"), Out::Cap(256));
    assert_eq!((r, n), (CKR_OK, 256));
    assert_eq!(sig, signature());
    start(&fx, Kind::Digest);
    assert_eq!(feed(C_DigestUpdate, fx.h, Some(b"ab")), CKR_OK);
    assert_eq!(digest_init(fx.h, CKM_SHA_1), CKR_OPERATION_ACTIVE);
    assert_eq!(feed(C_DigestUpdate, fx.h, Some(b"c")), CKR_OK);
    let (r, _, d) = last(C_DigestFinal, fx.h, Out::Cap(64));
    assert_eq!(r, CKR_OK);
    use sha2::Digest;
    assert_eq!(d, sha2::Sha256::digest(b"abc").to_vec());
}

#[test]
fn s5_a_too_small_buffer_is_told_the_length_and_the_retry_succeeds() {
    let fx = fx();
    start(&fx, Kind::Decrypt);
    let ct = ciphertext();
    let (r, n, _) = single(C_Decrypt, fx.h, Some(&ct), Out::Cap(2));
    assert_eq!((r, n), (CKR_BUFFER_TOO_SMALL, 6));
    let (r, n, plain) = single(C_Decrypt, fx.h, Some(&ct), Out::Cap(n));
    assert_eq!((r, n), (CKR_OK, 6));
    assert_eq!(plain, b"secret");
    // The handset decrypted once.
    assert_eq!(fx.fake.count("decrypt"), 1);
}

// ---- mechanisms (section 5.5: C_GetMechanismList and C_GetMechanismInfo;
// the mechanisms document, 2.1: RSA) -------------------------------------

/// The bytes of a C structure, as a caller passes it.
fn raw<T: Copy>(v: T) -> Vec<u8> {
    let mut out = vec![0u8; std::mem::size_of::<T>()];
    // SAFETY: `out` is exactly `T`'s size; an unaligned write of a plain
    // C struct.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr() as *mut T, v) };
    out
}

fn pss(hash: CK_MECHANISM_TYPE, mgf: CK_ULONG) -> Vec<u8> {
    raw(CK_RSA_PKCS_PSS_PARAMS {
        hashAlg: hash,
        mgf,
        sLen: 32,
    })
}

fn oaep(source: CK_ULONG, label: &mut [u8], label_len: CK_ULONG) -> Vec<u8> {
    raw(CK_RSA_PKCS_OAEP_PARAMS {
        hashAlg: CKM_SHA256,
        mgf: CKG_MGF1_SHA256,
        source,
        pSourceData: if label.is_empty() {
            null()
        } else {
            label.as_mut_ptr() as *mut c_void
        },
        ulSourceDataLen: label_len,
    })
}

/// `C_*Init` of a key operation with a raw parameter; the key is the
/// fixture's phone key of the class the operation takes.
fn init_param(fx: &Fx, what: KeyUse, m: CK_MECHANISM_TYPE, param: Vec<u8>, len: usize) -> CK_RV {
    let key = match what {
        KeyUse::Sign | KeyUse::Decrypt => fx.private,
        KeyUse::Verify | KeyUse::Encrypt => fx.public,
    };
    let rv = init_with(fx, what, m, param, len, key);
    cancel(fx, what);
    rv
}

/// Ends the operation of `what`, as a NULL mechanism does.
fn cancel(fx: &Fx, what: KeyUse) {
    let f: KeyInit = match what {
        KeyUse::Sign => C_SignInit,
        KeyUse::Verify => C_VerifyInit,
        KeyUse::Encrypt => C_EncryptInit,
        KeyUse::Decrypt => C_DecryptInit,
    };
    // SAFETY: a NULL mechanism ends whatever started.
    unsafe { f(fx.h, null(), 0) };
}

/// `C_*Init` of a key operation with a raw parameter and a given key.
fn init_with(
    fx: &Fx,
    what: KeyUse,
    m: CK_MECHANISM_TYPE,
    mut param: Vec<u8>,
    len: usize,
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    let f: KeyInit = match what {
        KeyUse::Sign => C_SignInit,
        KeyUse::Verify => C_VerifyInit,
        KeyUse::Encrypt => C_EncryptInit,
        KeyUse::Decrypt => C_DecryptInit,
    };
    let mut mech = CK_MECHANISM {
        mechanism: m,
        pParameter: if param.is_empty() {
            null()
        } else {
            param.as_mut_ptr() as *mut c_void
        },
        ulParameterLen: len as CK_ULONG,
    };
    // SAFETY: the parameter is NULL or a buffer of `param.len()` bytes,
    // and `len` is at most that unless the parameter is NULL, which the
    // module refuses before reading.
    assert!(param.is_empty() || len <= param.len());
    unsafe { f(fx.h, &mut mech, key) }
}

#[test]
fn rsa_parameters_are_read_as_the_mechanism_says() {
    let fx = fx();
    let sha256_pss = pss(CKM_SHA256, CKG_MGF1_SHA256);
    for (what, m, param, len, want) in [
        // PSS: its own structure, of its own size.
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS_PSS,
            sha256_pss.clone(),
            24,
            CKR_OK,
        ),
        (
            KeyUse::Verify,
            CKM_RSA_PKCS_PSS,
            sha256_pss.clone(),
            24,
            CKR_OK,
        ),
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS_PSS,
            sha256_pss.clone(),
            16,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS_PSS,
            vec![],
            0,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        // An OAEP structure is no PSS parameter, whatever its size.
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS_PSS,
            oaep(CKZ_DATA_SPECIFIED, &mut [], 0),
            40,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        // The hash and MGF must agree with the mechanism.
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS_PSS,
            pss(CKM_SHA_1, CKG_MGF1_SHA1),
            24,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Sign,
            CKM_RSA_PKCS_PSS,
            pss(CKM_SHA256, CKG_MGF1_SHA1),
            24,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        // Mechanisms without a parameter take none, and a NULL parameter
        // has no length.
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS,
            sha256_pss.clone(),
            24,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Sign,
            CKM_SHA256_RSA_PKCS,
            vec![],
            24,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Encrypt,
            CKM_RSA_PKCS,
            vec![],
            8,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        // OAEP: CKZ_DATA_SPECIFIED, with or without a label.
        (
            KeyUse::Encrypt,
            CKM_RSA_PKCS_OAEP,
            oaep(CKZ_DATA_SPECIFIED, &mut [], 0),
            40,
            CKR_OK,
        ),
        (
            KeyUse::Decrypt,
            CKM_RSA_PKCS_OAEP,
            oaep(CKZ_DATA_SPECIFIED, &mut [], 0),
            40,
            CKR_OK,
        ),
        (
            KeyUse::Encrypt,
            CKM_RSA_PKCS_OAEP,
            oaep(2, &mut [], 0),
            40,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Encrypt,
            CKM_RSA_PKCS_OAEP,
            oaep(0, &mut [], 3),
            40,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Encrypt,
            CKM_RSA_PKCS_OAEP,
            sha256_pss.clone(),
            24,
            CKR_MECHANISM_PARAM_INVALID,
        ),
        (
            KeyUse::Decrypt,
            CKM_RSA_PKCS_OAEP,
            vec![],
            0,
            CKR_MECHANISM_PARAM_INVALID,
        ),
    ] {
        let got = init_param(&fx, what, m, param, len);
        assert_eq!(got, want, "{what:?} 0x{m:X} with {len} bytes: 0x{got:X}");
    }
}

#[test]
fn an_oaep_label_is_used_only_when_specified() {
    let fx = fx();
    let mut label = *b"label";
    // A label of a source that is not CKZ_DATA_SPECIFIED is refused,
    // not dropped.
    let with_source_0 = oaep(0, &mut label, 5);
    assert_eq!(
        init_param(&fx, KeyUse::Encrypt, CKM_RSA_PKCS_OAEP, with_source_0, 40),
        CKR_MECHANISM_PARAM_INVALID
    );
    let specified = oaep(CKZ_DATA_SPECIFIED, &mut label, 5);
    assert_eq!(
        init_param(&fx, KeyUse::Encrypt, CKM_RSA_PKCS_OAEP, specified, 40),
        CKR_OK
    );
}

#[test]
fn the_mechanism_list_is_what_the_module_does() {
    let fx = fx();
    let slot = slots()[0];
    let mut n = 0;
    // SAFETY: a length query.
    assert_eq!(unsafe { C_GetMechanismList(slot, null(), &mut n) }, CKR_OK);
    let mut list = vec![0; n as usize];
    // SAFETY: a buffer of `n` mechanisms.
    assert_eq!(
        unsafe { C_GetMechanismList(slot, list.as_mut_ptr(), &mut n) },
        CKR_OK
    );
    for m in list {
        let mut info = CK_MECHANISM_INFO::default();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { C_GetMechanismInfo(slot, m, &mut info) }, CKR_OK);
        // Derivation is no operation of the four tried below, and its
        // parameter is refused before the key is looked at.
        if m == CKM_ECDH1_DERIVE {
            assert_eq!(
                info.flags & (CKF_SIGN | CKF_VERIFY | CKF_ENCRYPT | CKF_DECRYPT),
                0
            );
            continue;
        }
        let mut iv = [0u8; 12];
        let param = match mechanisms::takes(m) {
            Takes::Pss => pss(CKM_SHA256, CKG_MGF1_SHA256),
            Takes::Oaep => oaep(CKZ_DATA_SPECIFIED, &mut [], 0),
            Takes::Iv(n) => vec![0; n],
            Takes::Gcm => gcm(&mut iv),
            // Derivation only: none of the operations tried below.
            Takes::Ecdh | Takes::Nothing => vec![],
        };
        let len = param.len();
        // A secret-key mechanism is tried with a session key of its type.
        let secret = crate::symmetric::key_type_for(m).map(|kt| {
            let n = if kt == CKK_DES3 {
                24
            } else {
                info.ulMinKeySize as usize
            };
            create(fx.h, &secret_key(kt, &vec![1; n], true)).expect("a secret key")
        });
        // Each flag the module states, it honours on the phone's key.
        for (flag, what) in [
            (CKF_SIGN, KeyUse::Sign),
            (CKF_VERIFY, KeyUse::Verify),
            (CKF_ENCRYPT, KeyUse::Encrypt),
            (CKF_DECRYPT, KeyUse::Decrypt),
        ] {
            let mut param = param.clone();
            if let Takes::Pss = mechanisms::takes(m) {
                // The SHA-n PSS mechanisms take their own hash.
                let hash = match m {
                    CKM_SHA1_RSA_PKCS_PSS => (CKM_SHA_1, CKG_MGF1_SHA1),
                    CKM_SHA224_RSA_PKCS_PSS => (CKM_SHA224, CKG_MGF1_SHA224),
                    CKM_SHA384_RSA_PKCS_PSS => (CKM_SHA384, CKG_MGF1_SHA384),
                    CKM_SHA512_RSA_PKCS_PSS => (CKM_SHA512, CKG_MGF1_SHA512),
                    _ => (CKM_SHA256, CKG_MGF1_SHA256),
                };
                param = pss(hash.0, hash.1);
            }
            if secret.is_some() && matches!(what, KeyUse::Sign | KeyUse::Verify) {
                assert_eq!(info.flags & flag, 0, "0x{m:X} {what:?}");
                continue;
            }
            let got = match secret {
                Some(k) => {
                    let rv = init_with(&fx, what, m, param, len, k);
                    cancel(&fx, what);
                    rv
                }
                None => init_param(&fx, what, m, param, len),
            };
            // The phone's key 01 is RSA: an EC mechanism the module
            // offers is refused for it by key type, not as unknown.
            let ec = info.ulMinKeySize != mechanisms::MIN_BITS && secret.is_none();
            let want = if info.flags & flag != 0 && ec {
                CKR_KEY_TYPE_INCONSISTENT
            } else if info.flags & flag != 0 {
                CKR_OK
            } else {
                CKR_MECHANISM_INVALID
            };
            assert_eq!(got, want, "0x{m:X} {what:?}: 0x{got:X}");
        }
        if info.flags & CKF_DIGEST != 0 {
            assert_eq!(digest_init(fx.h, m), CKR_OK, "0x{m:X}");
            // SAFETY: a NULL mechanism ends the digest.
            unsafe { C_DigestInit(fx.h, null()) };
        }
        // The phone's keys are 2048 bits, within every RSA range given.
        if info.ulMinKeySize == mechanisms::MIN_BITS
            && info.flags & (CKF_SIGN | CKF_DECRYPT | CKF_GENERATE_KEY_PAIR) != 0
        {
            assert!(
                info.ulMinKeySize <= 2048 && 2048 <= info.ulMaxKeySize,
                "0x{m:X}"
            );
        }
    }
    let mut info = CK_MECHANISM_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(
        unsafe { C_GetMechanismInfo(slot, CKM_AES_ECB, &mut info) },
        CKR_MECHANISM_INVALID
    );
}

// ---- object management (section 5.7), and session objects (section 4.4:
// CKA_TOKEN false, kept for the application) ---------------------------------

/// A template as a caller builds it: attributes pointing into `values`.
struct Tmpl {
    values: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>,
}

impl Tmpl {
    fn new(values: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Tmpl {
        Tmpl {
            values: values.to_vec(),
        }
    }

    fn attrs(&mut self) -> Vec<CK_ATTRIBUTE> {
        self.values.iter_mut().map(|(t, v)| attr(*t, v)).collect()
    }
}

fn class(c: CK_OBJECT_CLASS) -> (CK_ATTRIBUTE_TYPE, Vec<u8>) {
    (CKA_CLASS, objects::ulong(c))
}

fn flag(t: CK_ATTRIBUTE_TYPE, v: bool) -> (CK_ATTRIBUTE_TYPE, Vec<u8>) {
    (t, objects::bbool(v))
}

/// Makes `call`, a function that makes an object from a template, with
/// `t` as its template (a pointer to `n` attributes whose values live
/// here for the call) and an out-pointer for the handle; the handle made.
fn making(
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
    call: impl FnOnce(*mut CK_ATTRIBUTE, CK_ULONG, &mut CK_OBJECT_HANDLE) -> CK_RV,
) -> std::result::Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut t = Tmpl::new(t);
    let mut a = t.attrs();
    let mut o = 0;
    match call(a.as_mut_ptr(), a.len() as CK_ULONG, &mut o) {
        CKR_OK => Ok(o),
        rv => Err(rv),
    }
}

fn create(
    h: H,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> std::result::Result<CK_OBJECT_HANDLE, CK_RV> {
    // SAFETY: a template as `making` passes it.
    making(t, |a, n, o| unsafe { C_CreateObject(h, a, n, o) })
}

fn copy(
    h: H,
    obj: CK_OBJECT_HANDLE,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> std::result::Result<CK_OBJECT_HANDLE, CK_RV> {
    // SAFETY: a template as `making` passes it.
    making(t, |a, n, o| unsafe { C_CopyObject(h, obj, a, n, o) })
}

fn set(h: H, obj: CK_OBJECT_HANDLE, t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> CK_RV {
    let mut t = Tmpl::new(t);
    let mut a = t.attrs();
    // SAFETY: as in `create`.
    unsafe { C_SetAttributeValue(h, obj, a.as_mut_ptr(), a.len() as CK_ULONG) }
}

/// One attribute's value, or the `CK_RV` that refused it.
fn get(h: H, obj: CK_OBJECT_HANDLE, t: CK_ATTRIBUTE_TYPE) -> std::result::Result<Vec<u8>, CK_RV> {
    let mut a = CK_ATTRIBUTE {
        type_: t,
        pValue: null(),
        ulValueLen: 0,
    };
    // SAFETY: a length query of one attribute.
    let rv = unsafe { C_GetAttributeValue(h, obj, &mut a, 1) };
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut v = vec![0u8; a.ulValueLen as usize];
    a.pValue = v.as_mut_ptr() as *mut c_void;
    // SAFETY: a buffer of the length just given.
    match unsafe { C_GetAttributeValue(h, obj, &mut a, 1) } {
        CKR_OK => Ok(v),
        rv => Err(rv),
    }
}

fn find_by(h: H, t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)]) -> Vec<CK_OBJECT_HANDLE> {
    let mut t = Tmpl::new(t);
    let mut a = t.attrs();
    let mut found = [0; 32];
    let mut n = 0;
    // SAFETY: a template as in `create`, a buffer of 32 handles.
    unsafe {
        assert_eq!(
            C_FindObjectsInit(h, a.as_mut_ptr(), a.len() as CK_ULONG),
            CKR_OK
        );
        assert_eq!(C_FindObjects(h, found.as_mut_ptr(), 32, &mut n), CKR_OK);
        assert_eq!(C_FindObjectsFinal(h), CKR_OK);
    }
    found[..n as usize].to_vec()
}

fn data_object(value: &[u8]) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![
        class(CKO_DATA),
        (CKA_APPLICATION, b"conformance".to_vec()),
        (CKA_VALUE, value.to_vec()),
    ]
}

#[test]
fn s5_7_objects_are_session_objects_unless_cka_token_is_true() {
    let fx = fx();
    let slot = slots()[0];
    let ro = open_session(slot, CKF_SERIAL_SESSION).expect("a read-only session");
    // A read-only session makes session objects; the same template gives
    // the same answer in a read/write one.
    let d = create(ro, &data_object(b"v1")).expect("a data object");
    let d2 = create(fx.h, &data_object(b"v1")).expect("the same in read/write");
    assert_ne!(d, d2);
    assert_eq!(get(fx.h, d, CKA_TOKEN), Ok(vec![CK_FALSE]));
    assert_eq!(get(fx.h, d, CKA_VALUE), Ok(b"v1".to_vec()));
    // Every session of the application sees it.
    let app = (CKA_APPLICATION, b"conformance".to_vec());
    assert_eq!(find_by(fx.h, &[class(CKO_DATA), app.clone()]), vec![d, d2]);
    // Nothing reached the phone.
    assert_eq!(
        fx.fake
            .state()
            .calls
            .iter()
            .filter(|c| c.starts_with("put"))
            .count(),
        0
    );
    // Its session closing destroys it, and only it.
    assert_eq!(C_CloseSession(ro), CKR_OK);
    assert_eq!(get(fx.h, d, CKA_VALUE), Err(CKR_OBJECT_HANDLE_INVALID));
    assert_eq!(find_by(fx.h, &[app]), vec![d2]);

    // A token object needs a read/write session: a certificate goes to
    // the phone.
    let ro = open_session(slot, CKF_SERIAL_SESSION).expect("a read-only session");
    let cert = [
        class(CKO_CERTIFICATE),
        flag(CKA_TOKEN, true),
        (CKA_ID, vec![9]),
        (CKA_VALUE, vec![0x30, 0]),
    ];
    assert_eq!(create(ro, &cert), Err(CKR_SESSION_READ_ONLY));
    let c = create(fx.h, &cert).expect("a certificate on the phone");
    assert_eq!(get(fx.h, c, CKA_TOKEN), Ok(vec![CK_TRUE]));
    assert_eq!(fx.fake.state().certs.len(), 1);
    // The same certificate as a session object stays here.
    let session_cert = create(
        ro,
        &cert[..1]
            .iter()
            .chain(&cert[2..])
            .cloned()
            .collect::<Vec<_>>(),
    )
    .expect("a session certificate");
    assert_eq!(get(ro, session_cert, CKA_TOKEN), Ok(vec![CK_FALSE]));
    assert_eq!(fx.fake.state().certs.len(), 1);
    // A read-only session destroys session objects, not token objects.
    assert_eq!(C_DestroyObject(ro, c), CKR_SESSION_READ_ONLY);
    assert_eq!(C_DestroyObject(ro, session_cert), CKR_OK);
    assert_eq!(C_DestroyObject(ro, session_cert), CKR_OBJECT_HANDLE_INVALID);
    assert_eq!(C_DestroyObject(fx.h, c), CKR_OK);
    assert!(fx.fake.state().certs.is_empty());
    // C_Finalize destroys the rest.
    drop(fx);
    let fake = Fake::new();
    let _g = module_on(&fake);
    let h = open_session(slots()[0], CKF_SERIAL_SESSION).expect("a session");
    assert_eq!(get(h, d2, CKA_VALUE), Err(CKR_OBJECT_HANDLE_INVALID));
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
}

#[test]
fn s5_7_private_session_objects_need_the_user() {
    let fake = Fake::new();
    let _g = module_on(&fake);
    let h = open_session(slots()[0], CKF_SERIAL_SESSION).expect("a session");
    let private = [&data_object(b"x")[..], &[flag(CKA_PRIVATE, true)]].concat();
    assert_eq!(create(h, &private), Err(CKR_USER_NOT_LOGGED_IN));
    assert_eq!(login(h, Some(fake::PIN)), CKR_OK);
    let o = create(h, &private).expect("made while logged in");
    assert_eq!(find_by(h, &[class(CKO_DATA)]), vec![o]);
    assert_eq!(C_Logout(h), CKR_OK);
    assert!(find_by(h, &[class(CKO_DATA)]).is_empty());
    assert_eq!(get(h, o, CKA_VALUE), Err(CKR_OBJECT_HANDLE_INVALID));
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
}

#[test]
fn s5_7_templates_get_the_errors_the_standard_assigns() {
    let fx = fx();
    let key = fake::public_key();
    use rsa::traits::PublicKeyParts;
    let public = vec![
        class(CKO_PUBLIC_KEY),
        (CKA_KEY_TYPE, objects::ulong(CKK_RSA)),
        (CKA_MODULUS, key.n().to_bytes_be()),
        (CKA_PUBLIC_EXPONENT, key.e().to_bytes_be()),
    ];
    let with = |extra: (CK_ATTRIBUTE_TYPE, Vec<u8>)| [&public[..], &[extra]].concat();
    for (what, template, want) in [
        (
            "no class",
            vec![(CKA_VALUE, vec![1])],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            "a certificate without a value",
            vec![class(CKO_CERTIFICATE)],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            "a public key without a modulus",
            public[..2].to_vec(),
            CKR_TEMPLATE_INCOMPLETE,
        ),
        (
            "an attribute the class lacks",
            with((CKA_APPLICATION, vec![1])),
            CKR_ATTRIBUTE_TYPE_INVALID,
        ),
        (
            "an unknown attribute",
            with((0x7fff_0000, vec![1])),
            CKR_ATTRIBUTE_TYPE_INVALID,
        ),
        (
            "the modulus size, which is derived",
            with((CKA_MODULUS_BITS, objects::ulong(2048))),
            CKR_ATTRIBUTE_READ_ONLY,
        ),
        (
            "CKA_LOCAL",
            with(flag(CKA_LOCAL, true)),
            CKR_ATTRIBUTE_READ_ONLY,
        ),
        (
            "one attribute twice, differently",
            with(flag(CKA_TOKEN, true))
                .into_iter()
                .chain([flag(CKA_TOKEN, false)])
                .collect(),
            CKR_TEMPLATE_INCONSISTENT,
        ),
        (
            "a boolean of two bytes",
            with((CKA_ENCRYPT, vec![1, 1])),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "a key type that is not RSA",
            [
                &[
                    class(CKO_PUBLIC_KEY),
                    (CKA_KEY_TYPE, objects::ulong(CKK_EC)),
                ],
                &public[2..],
            ]
            .concat(),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "a modulus that is no key",
            [&public[..2], &[(CKA_MODULUS, vec![0]), public[3].clone()]].concat(),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "a private key",
            vec![
                class(CKO_PRIVATE_KEY),
                (CKA_KEY_TYPE, objects::ulong(CKK_RSA)),
            ],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "an unknown class",
            vec![class(0x7fff_0000)],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "an oversized value",
            data_object(&vec![0; objects::MAX_VALUE_LEN + 1]),
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
        (
            "an AES key of 15 bytes",
            vec![
                class(CKO_SECRET_KEY),
                (CKA_KEY_TYPE, objects::ulong(CKK_AES)),
                (CKA_VALUE, vec![0; 15]),
            ],
            CKR_ATTRIBUTE_VALUE_INVALID,
        ),
    ] {
        assert_eq!(create(fx.h, &template), Err(want), "{what}");
    }
    // NULL pointers.
    // SAFETY: NULL where a template or an out-pointer belongs is what is
    // tested; nothing is read through them.
    unsafe {
        assert_eq!(C_CreateObject(fx.h, null(), 2, &mut 0), CKR_ARGUMENTS_BAD);
        let mut t = Tmpl::new(&data_object(b"x"));
        let mut a = t.attrs();
        assert_eq!(
            C_CreateObject(fx.h, a.as_mut_ptr(), 3, null()),
            CKR_ARGUMENTS_BAD
        );
        assert_eq!(
            C_CreateObject(999, a.as_mut_ptr(), 3, &mut 0),
            CKR_SESSION_HANDLE_INVALID
        );
    }
    // A session public key encrypts, and the phone decrypts.
    let k = create(fx.h, &public).expect("a session public key");
    assert_eq!(get(fx.h, k, CKA_MODULUS_BITS), Ok(objects::ulong(2048)));
    assert_eq!(key_init(C_EncryptInit, fx.h, CKM_RSA_PKCS, k), CKR_OK);
    let (r, _, ct) = single(C_Encrypt, fx.h, Some(b"to the phone"), Out::Cap(256));
    assert_eq!(r, CKR_OK);
    assert_eq!(
        key_init(C_DecryptInit, fx.h, CKM_RSA_PKCS, fx.private),
        CKR_OK
    );
    let (r, _, plain) = single(C_Decrypt, fx.h, Some(&ct), Out::Cap(256));
    assert_eq!((r, plain.as_slice()), (CKR_OK, &b"to the phone"[..]));
    // A secret key's value is sensitive unless made extractable and not
    // sensitive.
    let aes = vec![
        class(CKO_SECRET_KEY),
        (CKA_KEY_TYPE, objects::ulong(CKK_AES)),
        (CKA_VALUE, vec![7; 16]),
    ];
    let sealed = create(fx.h, &aes).expect("an AES key");
    assert_eq!(get(fx.h, sealed, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
    assert_eq!(get(fx.h, sealed, CKA_VALUE_LEN), Ok(objects::ulong(16)));
    let open = create(
        fx.h,
        &[
            &aes[..],
            &[flag(CKA_SENSITIVE, false), flag(CKA_EXTRACTABLE, true)],
        ]
        .concat(),
    )
    .expect("an extractable AES key");
    assert_eq!(get(fx.h, open, CKA_VALUE), Ok(vec![7; 16]));
    // A search never matches on a value it may not show.
    assert_eq!(find_by(fx.h, &[(CKA_VALUE, vec![7; 16])]), vec![open]);
}

#[test]
fn s5_7_copy_and_set_attributes_of_session_objects() {
    let fx = fx();
    let o = create(fx.h, &data_object(b"v")).expect("a data object");
    let c = copy(fx.h, o, &[(CKA_LABEL, b"copy".to_vec())]).expect("a copy");
    assert_ne!(c, o);
    assert_eq!(get(fx.h, c, CKA_LABEL), Ok(b"copy".to_vec()));
    assert_eq!(get(fx.h, c, CKA_VALUE), Ok(b"v".to_vec()));
    assert_eq!(get(fx.h, o, CKA_LABEL), Ok(Vec::new()));
    assert_eq!(
        copy(fx.h, o, &[(CKA_VALUE, b"w".to_vec())]),
        Err(CKR_ATTRIBUTE_READ_ONLY)
    );
    assert_eq!(
        copy(fx.h, o, &[flag(CKA_TOKEN, true)]),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(
        copy(fx.h, o, &[(CKA_MODULUS, vec![1])]),
        Err(CKR_ATTRIBUTE_TYPE_INVALID)
    );
    // The phone's objects are not copyable and not modifiable here.
    assert_eq!(copy(fx.h, fx.public, &[]), Err(CKR_ACTION_PROHIBITED));
    assert_eq!(
        set(fx.h, fx.public, &[(CKA_LABEL, b"x".to_vec())]),
        CKR_ACTION_PROHIBITED
    );
    // A session object's label changes; its value does not.
    assert_eq!(set(fx.h, o, &[(CKA_LABEL, b"new".to_vec())]), CKR_OK);
    assert_eq!(get(fx.h, o, CKA_LABEL), Ok(b"new".to_vec()));
    assert_eq!(
        set(fx.h, o, &[(CKA_VALUE, b"w".to_vec())]),
        CKR_ATTRIBUTE_READ_ONLY
    );
    // Not modifiable, not copyable, not destroyable: as they say.
    let fixed = create(
        fx.h,
        &[
            &data_object(b"f")[..],
            &[
                flag(CKA_MODIFIABLE, false),
                flag(CKA_COPYABLE, false),
                flag(CKA_DESTROYABLE, false),
            ],
        ]
        .concat(),
    )
    .expect("a fixed object");
    assert_eq!(
        set(fx.h, fixed, &[(CKA_LABEL, b"x".to_vec())]),
        CKR_ACTION_PROHIBITED
    );
    assert_eq!(copy(fx.h, fixed, &[]), Err(CKR_ACTION_PROHIBITED));
    assert_eq!(C_DestroyObject(fx.h, fixed), CKR_ACTION_PROHIBITED);
}

fn generate(
    h: H,
    private_token: Option<bool>,
) -> std::result::Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE), CK_RV> {
    let mut public = Tmpl::new(&[(CKA_MODULUS_BITS, objects::ulong(2048))]);
    let mut private = Tmpl::new(
        &private_token
            .map(|t| vec![flag(CKA_TOKEN, t)])
            .unwrap_or_default(),
    );
    let (mut pa, mut pr) = (public.attrs(), private.attrs());
    let mut m = mechanism_of(CKM_RSA_PKCS_KEY_PAIR_GEN);
    let (mut pu_h, mut pr_h) = (0, 0);
    // SAFETY: templates as in `create`, valid out-pointers.
    let rv = unsafe {
        C_GenerateKeyPair(
            h,
            &mut m,
            pa.as_mut_ptr(),
            pa.len() as CK_ULONG,
            if pr.is_empty() {
                null()
            } else {
                pr.as_mut_ptr()
            },
            pr.len() as CK_ULONG,
            &mut pu_h,
            &mut pr_h,
        )
    };
    match rv {
        CKR_OK => Ok((pu_h, pr_h)),
        rv => Err(rv),
    }
}

#[test]
fn s5_14_a_session_key_pair_lives_on_the_phone_until_its_session_closes() {
    let fx = fx();
    let slot = slots()[0];
    let ro = open_session(slot, CKF_SERIAL_SESSION).expect("a read-only session");
    // A token pair needs a read/write session; a session pair does not.
    assert_eq!(generate(ro, Some(true)), Err(CKR_SESSION_READ_ONLY));
    let (pu, pr) = generate(ro, None).expect("a session pair");
    assert_eq!(fx.fake.state().keys.len(), 2);
    assert_eq!(get(fx.h, pr, CKA_TOKEN), Ok(vec![CK_FALSE]));
    assert_eq!(get(fx.h, pu, CKA_TOKEN), Ok(vec![CK_FALSE]));
    // Searches see it as a session object.
    let session = find_by(fx.h, &[class(CKO_PRIVATE_KEY), flag(CKA_TOKEN, false)]);
    assert_eq!(session, vec![pr]);
    // It signs like any key.
    assert_eq!(key_init(C_SignInit, fx.h, CKM_SHA256_RSA_PKCS, pr), CKR_OK);
    assert_eq!(
        rv(single(C_Sign, fx.h, Some(b"msg"), Out::Cap(256))),
        CKR_OK
    );
    // Its session closing deletes it on the phone.
    assert_eq!(C_CloseSession(ro), CKR_OK);
    assert_eq!(fx.fake.state().keys.len(), 1);
    assert_eq!(get(fx.h, pr, CKA_TOKEN), Err(CKR_OBJECT_HANDLE_INVALID));
    // A token pair stays; a session pair of a session still open goes at
    // C_Finalize.
    let (_, kept) = generate(fx.h, Some(true)).expect("a token pair");
    assert_eq!(get(fx.h, kept, CKA_TOKEN), Ok(vec![CK_TRUE]));
    generate(fx.h, Some(false)).expect("a session pair");
    assert_eq!(fx.fake.state().keys.len(), 3);
    let fake = fx.fake.clone();
    drop(fx);
    assert_eq!(fake.state().keys.len(), 2);
}

#[test]
fn s5_14_a_session_pair_left_while_the_phone_was_away_is_deleted_when_it_is_back() {
    let fx = fx();
    generate(fx.h, None).expect("a session pair");
    fx.fake.state().present = false;
    assert_eq!(C_CloseSession(fx.h), CKR_OK);
    assert_eq!(fx.fake.state().keys.len(), 2);
    fx.fake.state().present = true;
    let mut n = 0;
    // SAFETY: a length query, which reads the slots afresh.
    assert_eq!(unsafe { C_GetSlotList(CK_FALSE, null(), &mut n) }, CKR_OK);
    assert_eq!(fx.fake.state().keys.len(), 1);
}

fn secret_key(
    kt: CK_KEY_TYPE,
    value: &[u8],
    extractable: bool,
) -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![
        class(CKO_SECRET_KEY),
        (CKA_KEY_TYPE, objects::ulong(kt)),
        (CKA_VALUE, value.to_vec()),
        flag(CKA_SENSITIVE, !extractable),
        flag(CKA_EXTRACTABLE, extractable),
    ]
}

/// A `CK_GCM_PARAMS` with a 12-byte IV, no AAD and a 128-bit tag; `iv`
/// must outlive its use.
fn gcm(iv: &mut [u8; 12]) -> Vec<u8> {
    raw(CK_GCM_PARAMS {
        pIv: iv.as_mut_ptr(),
        ulIvLen: 12,
        ulIvBits: 96,
        pAAD: null(),
        ulAADLen: 0,
        ulTagBits: 128,
    })
}

// ---- key management (section 5.14): C_GenerateKey, C_WrapKey,
// C_UnwrapKey; and the secret keys' ciphers (sections 5.8, 5.9) -----------

fn unwrap(
    h: H,
    m: CK_MECHANISM_TYPE,
    key: CK_OBJECT_HANDLE,
    wrapped: Option<&[u8]>,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> std::result::Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut mech = mechanism_of(m);
    let (w, wn) = input(wrapped);
    // SAFETY: a valid mechanism, `w` NULL or valid for `wn` bytes, a
    // template as `making` passes it.
    making(t, |a, n, o| unsafe {
        C_UnwrapKey(h, &mut mech, key, w, wn, a, n, o)
    })
}

/// The phone key unwraps `wrapped` (PKCS#1 v1.5) as an AES session key.
fn unwrap_aes_with_the_phone_key(fx: &Fx, wrapped: &[u8]) -> CK_OBJECT_HANDLE {
    unwrap(
        fx.h,
        CKM_RSA_PKCS,
        fx.private,
        Some(wrapped),
        &aes_template(),
    )
    .expect("unwrapped")
}

fn wrap(
    h: H,
    m: CK_MECHANISM_TYPE,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: Out,
) -> (CK_RV, usize, Vec<u8>) {
    let mut mech = mechanism_of(m);
    // SAFETY: a valid mechanism; the output as `with_out` makes it.
    with_out(out, |b, l| unsafe {
        C_WrapKey(h, &mut mech, wrapping, key, b, l)
    })
}

fn generate_key(
    h: H,
    t: &[(CK_ATTRIBUTE_TYPE, Vec<u8>)],
) -> std::result::Result<CK_OBJECT_HANDLE, CK_RV> {
    let mut mech = mechanism_of(CKM_AES_KEY_GEN);
    // SAFETY: a valid mechanism, a template as `making` passes it.
    making(t, |a, n, o| unsafe { C_GenerateKey(h, &mut mech, a, n, o) })
}

/// Starts a secret-key cipher with a raw IV.
fn cipher_init(
    fx: &Fx,
    dir: KeyUse,
    m: CK_MECHANISM_TYPE,
    iv: &[u8],
    key: CK_OBJECT_HANDLE,
) -> CK_RV {
    init_with(fx, dir, m, iv.to_vec(), iv.len(), key)
}

fn aes_template() -> Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)> {
    vec![
        class(CKO_SECRET_KEY),
        (CKA_KEY_TYPE, objects::ulong(CKK_AES)),
    ]
}

/// Encrypts `msg` with `key` in one call.
fn encrypt_with(
    fx: &Fx,
    m: CK_MECHANISM_TYPE,
    iv: &[u8],
    key: CK_OBJECT_HANDLE,
    msg: &[u8],
) -> Vec<u8> {
    assert_eq!(cipher_init(fx, KeyUse::Encrypt, m, iv, key), CKR_OK);
    let (r, _, ct) = single(C_Encrypt, fx.h, Some(msg), Out::Cap(msg.len() + 32));
    assert_eq!(r, CKR_OK);
    ct
}

#[test]
fn s5_14_unwrap_with_the_phone_key_then_decrypt_here() {
    let fx = fx();
    let value = [0x42u8; 16];
    let wrapped = fake::public_key()
        .encrypt(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, &value)
        .expect("wrapped");
    let k = unwrap_aes_with_the_phone_key(&fx, &wrapped);
    assert_eq!(fx.fake.count("decrypt"), 1);
    // A session secret key, sensitive, not local, never on the phone.
    assert_eq!(get(fx.h, k, CKA_TOKEN), Ok(vec![CK_FALSE]));
    assert_eq!(get(fx.h, k, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
    assert_eq!(get(fx.h, k, CKA_VALUE_LEN), Ok(objects::ulong(16)));
    assert_eq!(get(fx.h, k, CKA_LOCAL), Ok(vec![CK_FALSE]));
    assert_eq!(get(fx.h, k, CKA_ALWAYS_SENSITIVE), Ok(vec![CK_FALSE]));
    // It decrypts what a key of the same value encrypted, in parts.
    let same = create(fx.h, &secret_key(CKK_AES, &value, true)).expect("the same key");
    let iv = [3u8; 16];
    let msg = b"a message long enough for three AES blocks";
    let ct = encrypt_with(&fx, CKM_AES_CBC_PAD, &iv, same, msg);
    assert_eq!(
        cipher_init(&fx, KeyUse::Decrypt, CKM_AES_CBC_PAD, &iv, k),
        CKR_OK
    );
    let mut plain = Vec::new();
    for part in ct.chunks(10) {
        let (r, n) = {
            let (r, n, _) = single(C_DecryptUpdate, fx.h, Some(part), Out::Query);
            (r, n)
        };
        assert_eq!(r, CKR_OK);
        let (r, m, out) = single(C_DecryptUpdate, fx.h, Some(part), Out::Cap(n));
        assert_eq!((r, m), (CKR_OK, n));
        plain.extend(out);
    }
    let (r, _, last) = last(C_DecryptFinal, fx.h, Out::Cap(16));
    assert_eq!(r, CKR_OK);
    plain.extend(last);
    assert_eq!(plain, msg);
    // The NIST SP 800-38A CBC-AES128 vector, through C_Encrypt.
    let nist = create(
        fx.h,
        &secret_key(CKK_AES, &hex("2b7e151628aed2a6abf7158809cf4f3c"), false),
    )
    .expect("a key");
    let ct = encrypt_with(
        &fx,
        CKM_AES_CBC,
        &hex("000102030405060708090a0b0c0d0e0f"),
        nist,
        &hex("6bc1bee22e409f96e93d7e117393172a"),
    );
    assert_eq!(ct, hex("7649abac8119b246cee98e9b12e9197d"));
    // GCM and DES3 round trips.
    let mut giv = [9u8; 12];
    let g = gcm(&mut giv);
    assert_eq!(
        init_with(&fx, KeyUse::Encrypt, CKM_AES_GCM, g.clone(), g.len(), same),
        CKR_OK
    );
    let (r, n, gct) = single(C_Encrypt, fx.h, Some(b"gcm"), Out::Cap(64));
    assert_eq!((r, n), (CKR_OK, 3 + 16));
    assert_eq!(
        init_with(&fx, KeyUse::Decrypt, CKM_AES_GCM, g.clone(), g.len(), k),
        CKR_OK
    );
    assert_eq!(single(C_Decrypt, fx.h, Some(&gct), Out::Cap(64)).2, b"gcm");
    let des = create(fx.h, &secret_key(CKK_DES3, &[5; 24], false)).expect("a DES3 key");
    let dct = encrypt_with(&fx, CKM_DES3_CBC_PAD, &[1; 8], des, b"triple");
    assert_eq!(dct.len(), 8);
    assert_eq!(
        cipher_init(&fx, KeyUse::Decrypt, CKM_DES3_CBC_PAD, &[1; 8], des),
        CKR_OK
    );
    assert_eq!(
        single(C_Decrypt, fx.h, Some(&dct), Out::Cap(8)).2,
        b"triple"
    );
    // A cipher and a key of different types.
    assert_eq!(
        cipher_init(&fx, KeyUse::Encrypt, CKM_DES3_CBC, &[1; 8], k),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        cipher_init(&fx, KeyUse::Encrypt, CKM_AES_CBC, &[1; 16], fx.public),
        CKR_KEY_TYPE_INCONSISTENT
    );
    assert_eq!(
        key_init(C_EncryptInit, fx.h, CKM_RSA_PKCS, k),
        CKR_KEY_TYPE_INCONSISTENT
    );
}

#[test]
fn s5_14_unwrap_refuses_what_the_standard_says() {
    let fx = fx();
    let good = fake::public_key()
        .encrypt(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, &[1; 16])
        .expect("wrapped");
    let short = fake::public_key()
        .encrypt(&mut rand::rngs::OsRng, Pkcs1v15Encrypt, &[1; 15])
        .expect("wrapped");
    let token = [&aes_template()[..], &[flag(CKA_TOKEN, true)]].concat();
    let value = [&aes_template()[..], &[(CKA_VALUE, vec![1; 16])]].concat();
    let len17 = [&aes_template()[..], &[(CKA_VALUE_LEN, objects::ulong(17))]].concat();
    // Templates the standard refuses.
    for (what, t, want) in [
        ("a token secret key", token, CKR_TEMPLATE_INCONSISTENT),
        (
            "no key type",
            vec![class(CKO_SECRET_KEY)],
            CKR_TEMPLATE_INCOMPLETE,
        ),
        ("a value given", value, CKR_TEMPLATE_INCONSISTENT),
        (
            "another class",
            vec![class(CKO_DATA)],
            CKR_TEMPLATE_INCONSISTENT,
        ),
        ("a length that disagrees", len17, CKR_WRAPPED_KEY_INVALID),
    ] {
        let got = unwrap(fx.h, CKM_RSA_PKCS, fx.private, Some(&good), &t);
        assert_eq!(got, Err(want), "{what}");
    }
    // Wrapped keys, unwrapping keys and mechanisms it refuses.
    let aes = aes_template();
    let garbage = [1u8; 256];
    for (what, m, key, wrapped, want) in [
        (
            "an AES key of 15 bytes",
            CKM_RSA_PKCS,
            fx.private,
            Some(&short[..]),
            CKR_WRAPPED_KEY_INVALID,
        ),
        (
            "a wrapped key of the wrong size",
            CKM_RSA_PKCS,
            fx.private,
            Some(&good[1..]),
            CKR_WRAPPED_KEY_LEN_RANGE,
        ),
        (
            "garbage",
            CKM_RSA_PKCS,
            fx.private,
            Some(&garbage[..]),
            CKR_WRAPPED_KEY_INVALID,
        ),
        (
            "NULL wrapped key",
            CKM_RSA_PKCS,
            fx.private,
            None,
            CKR_ARGUMENTS_BAD,
        ),
        (
            "a public key",
            CKM_RSA_PKCS,
            fx.public,
            Some(&good[..]),
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        ),
        (
            "no key",
            CKM_RSA_PKCS,
            4242,
            Some(&good[..]),
            CKR_UNWRAPPING_KEY_HANDLE_INVALID,
        ),
        (
            "a digest mechanism",
            CKM_SHA256,
            fx.private,
            Some(&good[..]),
            CKR_MECHANISM_INVALID,
        ),
    ] {
        assert_eq!(unwrap(fx.h, m, key, wrapped, &aes), Err(want), "{what}");
    }
    // Nothing was kept for any of them.
    assert!(find_by(fx.h, &[class(CKO_SECRET_KEY)]).is_empty());
    // A phone that goes away mid-operation.
    fx.fake.state().present = false;
    assert_eq!(
        unwrap(fx.h, CKM_RSA_PKCS, fx.private, Some(&good), &aes_template()),
        Err(CKR_DEVICE_REMOVED)
    );
}

#[test]
fn s5_14_generate_and_wrap_session_keys() {
    let fx = fx();
    let len = |n: CK_ULONG| (CKA_VALUE_LEN, objects::ulong(n));
    assert_eq!(generate_key(fx.h, &[]), Err(CKR_TEMPLATE_INCOMPLETE));
    assert_eq!(
        generate_key(fx.h, &[len(20)]),
        Err(CKR_ATTRIBUTE_VALUE_INVALID)
    );
    assert_eq!(
        generate_key(fx.h, &[len(16), flag(CKA_TOKEN, true)]),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    assert_eq!(
        generate_key(fx.h, &[len(16), (CKA_KEY_TYPE, objects::ulong(CKK_DES3))]),
        Err(CKR_TEMPLATE_INCONSISTENT)
    );
    let sealed = generate_key(fx.h, &[len(32)]).expect("an AES-256 key");
    assert_eq!(get(fx.h, sealed, CKA_LOCAL), Ok(vec![CK_TRUE]));
    assert_eq!(
        get(fx.h, sealed, CKA_KEY_GEN_MECHANISM),
        Ok(objects::ulong(CKM_AES_KEY_GEN))
    );
    assert_eq!(get(fx.h, sealed, CKA_ALWAYS_SENSITIVE), Ok(vec![CK_TRUE]));
    assert_eq!(fx.fake.count("random"), 1);
    // An unextractable key is not wrapped.
    assert_eq!(
        rv(wrap(fx.h, CKM_RSA_PKCS, fx.public, sealed, Out::Cap(256))),
        CKR_KEY_UNEXTRACTABLE
    );
    let open =
        generate_key(fx.h, &[len(16), flag(CKA_EXTRACTABLE, true)]).expect("an extractable key");
    // The standard's length query and short buffer.
    assert_eq!(wrap(fx.h, CKM_RSA_PKCS, fx.public, open, Out::Query).1, 256);
    assert_eq!(
        rv(wrap(fx.h, CKM_RSA_PKCS, fx.public, open, Out::Cap(10))),
        CKR_BUFFER_TOO_SMALL
    );
    assert_eq!(
        rv(wrap(fx.h, CKM_RSA_PKCS, fx.public, open, Out::NullLen)),
        CKR_ARGUMENTS_BAD
    );
    assert_eq!(
        rv(wrap(fx.h, CKM_RSA_PKCS, fx.private, open, Out::Cap(256))),
        CKR_WRAPPING_KEY_HANDLE_INVALID
    );
    assert_eq!(
        rv(wrap(
            fx.h,
            CKM_RSA_PKCS,
            fx.public,
            fx.private,
            Out::Cap(256)
        )),
        CKR_KEY_HANDLE_INVALID
    );
    let (r, _, wrapped) = wrap(fx.h, CKM_RSA_PKCS, fx.public, open, Out::Cap(256));
    assert_eq!(r, CKR_OK);
    // Unwrapped by the phone, it is the same key.
    let back = unwrap_aes_with_the_phone_key(&fx, &wrapped);
    let iv = [0u8; 16];
    assert_eq!(
        encrypt_with(&fx, CKM_AES_CBC, &iv, open, &[7; 32]),
        encrypt_with(&fx, CKM_AES_CBC, &iv, back, &[7; 32])
    );
}

/// Feeds `n` bytes to the active decryption.
fn feed_decrypt(fx: &Fx, n: usize) {
    let r = single(C_DecryptUpdate, fx.h, Some(&vec![0; n]), Out::Cap(16));
    assert_eq!(rv(r), CKR_OK);
}

/// A call on a secret-key decryption: what it is, the call (given the
/// key), the `CK_RV` it gives, whether it ends the operation.
type SymPath = (
    &'static str,
    fn(&Fx, CK_OBJECT_HANDLE) -> CK_RV,
    CK_RV,
    bool,
);

const SYM_PATHS: &[SymPath] = &[
    (
        "C_DecryptUpdate with a NULL length pointer",
        |fx, _| rv(single(C_DecryptUpdate, fx.h, Some(&[0; 16]), Out::NullLen)),
        CKR_ARGUMENTS_BAD,
        true,
    ),
    (
        "C_DecryptUpdate length query",
        |fx, _| rv(single(C_DecryptUpdate, fx.h, Some(&[0; 32]), Out::Query)),
        CKR_OK,
        false,
    ),
    (
        "C_DecryptUpdate into a short buffer",
        |fx, _| rv(single(C_DecryptUpdate, fx.h, Some(&[0; 48]), Out::Cap(16))),
        CKR_BUFFER_TOO_SMALL,
        false,
    ),
    (
        "C_DecryptFinal of a bad padding",
        |fx, _| {
            feed_decrypt(fx, 16);
            rv(last(C_DecryptFinal, fx.h, Out::Cap(16)))
        },
        CKR_ENCRYPTED_DATA_INVALID,
        true,
    ),
    (
        "C_DecryptFinal of a partial block",
        |fx, _| {
            feed_decrypt(fx, 5);
            rv(last(C_DecryptFinal, fx.h, Out::Cap(16)))
        },
        CKR_ENCRYPTED_DATA_LEN_RANGE,
        true,
    ),
    (
        "C_DecryptFinal with a NULL length pointer",
        |fx, _| rv(last(C_DecryptFinal, fx.h, Out::NullLen)),
        CKR_ARGUMENTS_BAD,
        true,
    ),
    (
        "C_Decrypt after C_DecryptUpdate",
        |fx, _| {
            feed_decrypt(fx, 5);
            rv(single(C_Decrypt, fx.h, Some(&[0; 16]), Out::Cap(16)))
        },
        CKR_OPERATION_ACTIVE,
        true,
    ),
    (
        "C_DecryptInit while decrypting",
        |fx, k| cipher_init(fx, KeyUse::Decrypt, CKM_AES_CBC_PAD, &[0; 16], k),
        CKR_OPERATION_ACTIVE,
        false,
    ),
];

#[test]
fn s5_9_secret_key_decryption_ends_as_the_standard_says() {
    for (what, call, want, ends) in SYM_PATHS {
        let fx = fx();
        let k = create(fx.h, &secret_key(CKK_AES, &[1; 16], false)).expect("a key");
        assert_eq!(
            cipher_init(&fx, KeyUse::Decrypt, CKM_AES_CBC_PAD, &[0; 16], k),
            CKR_OK
        );
        assert_eq!(call(&fx, k), *want, "{what}");
        let probe = rv(single(C_DecryptUpdate, fx.h, Some(&[]), Out::Cap(0)));
        let active = match probe {
            CKR_OK => true,
            CKR_OPERATION_NOT_INITIALIZED => false,
            r => panic!("{what}: probing answered 0x{r:X}"),
        };
        assert_eq!(active, !ends, "{what}: ended?");
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

// ---- slots and tokens (section 5.5) ------------------------------------------

/// The fake token's slot ID: derived from its names, the same in every
/// process.
const SLOT: CK_SLOT_ID = 0x6530_7349;

#[test]
fn s5_5_a_remembered_slot_id_works_right_after_c_initialize() {
    let fake = Fake::new();
    let _g = module_on(&fake);
    // No C_GetSlotList first.
    let mut info = CK_SLOT_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { C_GetSlotInfo(SLOT, &mut info) }, CKR_OK);
    assert_ne!(info.flags & CKF_TOKEN_PRESENT, 0);
    let h = open_session(SLOT, CKF_SERIAL_SESSION).expect("a session on the remembered slot");
    let mut si = CK_SESSION_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { C_GetSessionInfo(h, &mut si) }, CKR_OK);
    assert_eq!(si.slotID, SLOT);
    assert_eq!(slots(), vec![SLOT]);
    // An ID no token has.
    // SAFETY: a valid out-pointer.
    assert_eq!(
        unsafe { C_GetSlotInfo(SLOT + 1, &mut info) },
        CKR_SLOT_ID_INVALID
    );
    assert_eq!(
        open_session(SLOT + 1, CKF_SERIAL_SESSION),
        Err(CKR_SLOT_ID_INVALID)
    );
    // The same after C_Finalize and C_Initialize, as in another process.
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
    module::initialize_fake(Box::new(fake.clone())).expect("initialised again");
    let mut token = CK_TOKEN_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { C_GetTokenInfo(SLOT, &mut token) }, CKR_OK);
    // A phone that goes away leaves its slot, without a token.
    fake.state().present = false;
    assert_eq!(slots(), vec![SLOT]);
    let mut n = 0;
    // SAFETY: a length query, which asks the daemon afresh.
    assert_eq!(unsafe { C_GetSlotList(CK_TRUE, null(), &mut n) }, CKR_OK);
    assert_eq!(n, 0);
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(C_GetSlotInfo(SLOT, &mut info), CKR_OK);
        assert_eq!(info.flags & CKF_TOKEN_PRESENT, 0);
        assert_eq!(C_GetTokenInfo(SLOT, &mut token), CKR_TOKEN_NOT_PRESENT);
    }
    assert_eq!(
        open_session(SLOT, CKF_SERIAL_SESSION),
        Err(CKR_TOKEN_NOT_PRESENT)
    );
    // A process that starts while the phone is away finds the slot, as
    // the daemon remembers the token, without a token.
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
    module::initialize_fake(Box::new(fake.clone())).expect("initialised while away");
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(C_GetSlotInfo(SLOT, &mut info), CKR_OK);
        assert_eq!(info.flags & CKF_TOKEN_PRESENT, 0);
        assert_eq!(
            C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut 0, null()),
            CKR_NO_EVENT
        );
    }
    // It comes back: the same slot has its token, and that is an event.
    fake.state().present = true;
    let mut event = 0;
    // SAFETY: a valid out-pointer.
    assert_eq!(
        unsafe { C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut event, null()) },
        CKR_OK
    );
    assert_eq!(event, SLOT);
    assert!(open_session(SLOT, CKF_SERIAL_SESSION).is_ok());
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
}

// ---- session management (section 5.6) -----------------------------------------

#[test]
fn s5_6_sessions_are_serial_and_logins_are_the_tokens() {
    let fake = Fake::new();
    let _g = module_on(&fake);
    assert_eq!(
        open_session(SLOT, 0),
        Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED)
    );
    let ro = open_session(SLOT, CKF_SERIAL_SESSION).expect("read-only");
    let rw = open_session(SLOT, CKF_SERIAL_SESSION | CKF_RW_SESSION).expect("read/write");
    let state = |h| {
        let mut si = CK_SESSION_INFO::default();
        // SAFETY: a valid out-pointer.
        assert_eq!(unsafe { C_GetSessionInfo(h, &mut si) }, CKR_OK);
        si.state
    };
    assert_eq!(
        (state(ro), state(rw)),
        (CKS_RO_PUBLIC_SESSION, CKS_RW_PUBLIC_SESSION)
    );
    // SAFETY: a NULL out-pointer is what is tested.
    assert_eq!(unsafe { C_GetSessionInfo(ro, null()) }, CKR_ARGUMENTS_BAD);
    let mut pin = fake::PIN.to_vec();
    // SAFETY: a PIN buffer of its length.
    unsafe {
        // The SO has only read/write sessions.
        assert_eq!(
            C_Login(ro, CKU_SO, pin.as_mut_ptr(), 4),
            CKR_SESSION_READ_ONLY_EXISTS
        );
        assert_eq!(C_Login(ro, 7, pin.as_mut_ptr(), 4), CKR_USER_TYPE_INVALID);
        assert_eq!(
            C_Login(ro, CKU_CONTEXT_SPECIFIC, pin.as_mut_ptr(), 4),
            CKR_OPERATION_NOT_INITIALIZED
        );
        assert_eq!(
            C_LoginUser(ro, CKU_USER, pin.as_mut_ptr(), 4, null(), 0),
            CKR_FUNCTION_NOT_SUPPORTED
        );
    }
    assert_eq!(login(ro, Some(b"0000")), CKR_PIN_INCORRECT);
    // No PIN is for a PIN typed on the phone only.
    assert_eq!(login(ro, None), CKR_ARGUMENTS_BAD);
    assert_eq!(login(ro, Some(fake::PIN)), CKR_OK);
    // The login is the token's: every session sees it.
    assert_eq!(
        (state(ro), state(rw)),
        (CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS)
    );
    assert_eq!(login(rw, Some(fake::PIN)), CKR_USER_ALREADY_LOGGED_IN);
    // Saved operation state is not offered.
    assert_eq!(
        C_GetOperationState(ro, null(), &mut 0),
        CKR_FUNCTION_NOT_SUPPORTED
    );
    // Closing the last session logs out on the phone.
    assert_eq!(C_CloseSession(ro), CKR_OK);
    assert_eq!(C_CloseSession(ro), CKR_SESSION_HANDLE_INVALID);
    assert!(fake.state().logged_in);
    assert_eq!(C_CloseAllSessions(SLOT), CKR_OK);
    assert!(!fake.state().logged_in);
    assert_eq!(C_CloseAllSessions(SLOT + 1), CKR_SLOT_ID_INVALID);
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
}

fn so_login(h: H, puk: &[u8]) -> CK_RV {
    let mut puk = puk.to_vec();
    // SAFETY: a buffer of its length.
    unsafe { C_Login(h, CKU_SO, puk.as_mut_ptr(), puk.len() as CK_ULONG) }
}

fn init_pin(h: H, pin: &[u8]) -> CK_RV {
    let mut pin = pin.to_vec();
    // SAFETY: a buffer of its length.
    unsafe { C_InitPIN(h, pin.as_mut_ptr(), pin.len() as CK_ULONG) }
}

fn token_flags_now() -> CK_FLAGS {
    let mut token = CK_TOKEN_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { C_GetTokenInfo(SLOT, &mut token) }, CKR_OK);
    token.flags
}

/// Issue 13: the SO (the PUK) as PKCS#11 2.40 sections 5.6 and 5.5 say:
/// `C_Login(CKU_SO)` refused beside a read-only session or another
/// login; `C_InitPIN` only in a read/write SO session, where it sets a new
/// user PIN on a locked token; `C_SetPIN` there changes the PUK; the
/// `CKF_USER_PIN_*` and `CKF_SO_PIN_*` flags follow the tries.
#[test]
fn s5_6_the_so_logs_in_with_the_puk_and_sets_a_new_user_pin() {
    let fake = Fake::new();
    let _g = module_on(&fake);
    let rw = open_session(SLOT, CKF_SERIAL_SESSION | CKF_RW_SESSION).expect("read/write");
    // No SO session: C_InitPIN has nobody to act for.
    assert_eq!(init_pin(rw, b"5678"), CKR_USER_NOT_LOGGED_IN);
    // Five wrong PINs lock, the flags saying so on the way.
    assert_eq!(token_flags_now() & CKF_USER_PIN_COUNT_LOW, 0);
    for _ in 0..3 {
        assert_eq!(login(rw, Some(b"0000")), CKR_PIN_INCORRECT);
    }
    assert_ne!(token_flags_now() & CKF_USER_PIN_COUNT_LOW, 0);
    assert_eq!(login(rw, Some(b"0000")), CKR_PIN_INCORRECT);
    assert_ne!(token_flags_now() & CKF_USER_PIN_FINAL_TRY, 0);
    assert_eq!(login(rw, Some(b"0000")), CKR_PIN_LOCKED);
    assert_ne!(token_flags_now() & CKF_USER_PIN_LOCKED, 0);
    assert_eq!(login(rw, Some(fake::PIN)), CKR_PIN_LOCKED);

    // A wrong PUK spends one of its tries, and says so in the flags.
    assert_eq!(so_login(rw, b"99999999"), CKR_PIN_INCORRECT);
    assert_ne!(token_flags_now() & CKF_SO_PIN_COUNT_LOW, 0);
    assert_eq!(so_login(rw, fake::PUK), CKR_OK);
    assert_eq!(token_flags_now() & CKF_SO_PIN_COUNT_LOW, 0);
    assert_eq!(so_login(rw, fake::PUK), CKR_USER_ALREADY_LOGGED_IN);
    assert_eq!(
        login(rw, Some(fake::PIN)),
        CKR_USER_ANOTHER_ALREADY_LOGGED_IN
    );
    let mut si = CK_SESSION_INFO::default();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { C_GetSessionInfo(rw, &mut si) }, CKR_OK);
    assert_eq!(si.state, CKS_RW_SO_FUNCTIONS);
    assert_eq!(
        open_session(SLOT, CKF_SERIAL_SESSION),
        Err(CKR_SESSION_READ_WRITE_SO_EXISTS)
    );
    // The SO sees no private object.
    assert!(find(rw, CKO_PRIVATE_KEY).is_empty());
    assert_eq!(init_pin(rw, b"5678"), CKR_OK);
    assert_eq!(token_flags_now() & CKF_USER_PIN_LOCKED, 0);
    // C_SetPIN in the SO session changes the PUK (the old one proves it).
    let mut old = b"00000000".to_vec();
    let mut new = b"87654321".to_vec();
    // SAFETY: buffers of their lengths.
    unsafe {
        assert_eq!(
            C_SetPIN(rw, old.as_mut_ptr(), 8, new.as_mut_ptr(), 8),
            CKR_PIN_INCORRECT
        );
        let mut puk = fake::PUK.to_vec();
        assert_eq!(
            C_SetPIN(rw, puk.as_mut_ptr(), 8, new.as_mut_ptr(), 8),
            CKR_OK
        );
    }
    assert_eq!(C_Logout(rw), CKR_OK);
    assert_eq!(C_Logout(rw), CKR_USER_NOT_LOGGED_IN);
    assert_eq!(fake.count("change_puk"), 1);
    // The user logs in with the new PIN; then the SO cannot.
    assert_eq!(login(rw, Some(fake::PIN)), CKR_PIN_INCORRECT);
    assert_eq!(login(rw, Some(b"5678")), CKR_OK);
    assert_eq!(so_login(rw, fake::PUK), CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
    assert_eq!(C_Logout(rw), CKR_OK);
    assert_eq!(C_CloseAllSessions(SLOT), CKR_OK);
    // Ten wrong PUKs lock the PUK, for good; the flags on the way.
    let rw = open_session(SLOT, CKF_SERIAL_SESSION | CKF_RW_SESSION).expect("read/write");
    for _ in 0..9 {
        assert_eq!(so_login(rw, b"99999999"), CKR_PIN_INCORRECT);
    }
    assert_ne!(token_flags_now() & CKF_SO_PIN_FINAL_TRY, 0);
    assert_eq!(so_login(rw, b"99999999"), CKR_PIN_LOCKED);
    assert_ne!(token_flags_now() & CKF_SO_PIN_LOCKED, 0);
    assert_eq!(so_login(rw, fake::PUK), CKR_PIN_LOCKED);
    // SAFETY: NULL is the reserved argument's only value.
    unsafe { C_Finalize(null()) };
}

#[test]
fn s5_7_data_objects_live_on_the_phone_when_asked() {
    let fx = fx();
    let token_data = |value: &[u8]| {
        let mut t = data_object(value);
        t.push(flag(CKA_TOKEN, true));
        t.push((CKA_LABEL, b"prefs".to_vec()));
        t.push((CKA_OBJECT_ID, vec![0x06, 0x03, 0x2a, 0x03, 0x04]));
        t
    };
    let ro = open_session(SLOT, CKF_SERIAL_SESSION).expect("read-only");
    assert_eq!(create(ro, &token_data(b"v")), Err(CKR_SESSION_READ_ONLY));
    let d = create(fx.h, &token_data(b"kept on the phone")).expect("a token data object");
    assert_eq!(fx.fake.state().data.len(), 1);
    assert_eq!(get(fx.h, d, CKA_TOKEN), Ok(vec![CK_TRUE]));
    assert_eq!(get(fx.h, d, CKA_VALUE), Ok(b"kept on the phone".to_vec()));
    assert_eq!(get(fx.h, d, CKA_APPLICATION), Ok(b"conformance".to_vec()));
    assert_eq!(
        get(fx.h, d, CKA_OBJECT_ID),
        Ok(vec![0x06, 0x03, 0x2a, 0x03, 0x04])
    );
    assert_eq!(get(fx.h, d, CKA_LABEL), Ok(b"prefs".to_vec()));
    // A data object has no CKA_ID.
    assert_eq!(get(fx.h, d, CKA_ID), Err(CKR_ATTRIBUTE_TYPE_INVALID));
    // Found by its application, from any session, without a login.
    let app = (CKA_APPLICATION, b"conformance".to_vec());
    assert_eq!(
        find_by(ro, &[class(CKO_DATA), flag(CKA_TOKEN, true), app.clone()]),
        vec![d]
    );
    // Limits and refusals.
    let long = token_data(&vec![0; phonecsp_protocol::limits::MAX_DATA_OBJECT_LEN + 1]);
    assert_eq!(create(fx.h, &long), Err(CKR_ATTRIBUTE_VALUE_INVALID));
    let private = [&token_data(b"x")[..], &[flag(CKA_PRIVATE, true)]].concat();
    assert_eq!(create(fx.h, &private), Err(CKR_ATTRIBUTE_VALUE_INVALID));
    assert_eq!(
        create(
            fx.h,
            &[&token_data(b"x")[..], &[(CKA_ID, vec![1])]].concat()
        ),
        Err(CKR_ATTRIBUTE_TYPE_INVALID)
    );
    assert_eq!(fx.fake.state().data.len(), 1);
    // Destroyed from a read/write session.
    assert_eq!(C_DestroyObject(ro, d), CKR_SESSION_READ_ONLY);
    assert_eq!(C_DestroyObject(fx.h, d), CKR_OK);
    assert!(fx.fake.state().data.is_empty());
    assert_eq!(get(fx.h, d, CKA_VALUE), Err(CKR_OBJECT_HANDLE_INVALID));
    // Writing to the phone needs the user.
    assert_eq!(C_Logout(fx.h), CKR_OK);
    assert_eq!(create(fx.h, &token_data(b"v")), Err(CKR_USER_NOT_LOGGED_IN));
}
