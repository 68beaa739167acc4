//! The module's state machines on the in-memory fake handset, without a
//! bus: sessions, logins, the operations with their length queries and
//! short buffers, the token going away, cancelling and finding. They test
//! today's behaviour; where the standard's conformance work changes it,
//! the expectation to change is in one assertion.

use rsa::Pkcs1v15Sign;
use sha2::{Digest, Sha256};

use super::*;
use crate::backend::fake::{self, Fake};
use crate::mechanisms::Param;
use phonecsp_protocol::CkRv;

/// The fake token's slot ID, derived from its names.
const SLOT: CK_SLOT_ID = 0x6530_7349;

fn setup() -> (Module, Fake) {
    let fake = Fake::new();
    (Module::new(Box::new(fake.clone())), fake)
}

fn open(m: &Module, rw: bool) -> CK_SESSION_HANDLE {
    assert_eq!(m.slot_list(true, true), vec![SLOT]);
    let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
    m.open_session(SLOT, flags).unwrap()
}

fn rv<T>(r: Result<T>) -> CK_RV {
    r.err().map_or(CKR_OK, |e| e.rv())
}

fn login(m: &Module, h: CK_SESSION_HANDLE) {
    m.login(h, CKU_USER, Some(Zeroizing::new(fake::PIN.to_vec())))
        .unwrap();
}

fn state(m: &Module, h: CK_SESSION_HANDLE) -> CK_STATE {
    m.session_info(h).unwrap().state
}

fn find(m: &Module, h: CK_SESSION_HANDLE, class: CK_OBJECT_CLASS) -> Vec<CK_OBJECT_HANDLE> {
    m.find_init(h, vec![(CKA_CLASS, objects::ulong(class))])
        .unwrap();
    let found = m.find(h, 10).unwrap();
    m.find_final(h).unwrap();
    found
}

fn mech(mechanism: CK_MECHANISM_TYPE) -> Mechanism {
    Mechanism {
        mechanism,
        param: Param::None,
    }
}

fn data(o: Result<Out>) -> Vec<u8> {
    match o.unwrap() {
        Out::Data(d) => d.to_vec(),
        Out::Len(n) => panic!("a length ({n}), not data"),
    }
}

fn len(o: Result<Out>) -> usize {
    match o.unwrap() {
        Out::Len(n) => n,
        Out::Data(_) => panic!("data, not a length"),
    }
}

// The operations' calls, each as one step on a session handle, as the
// C entry points make them.

fn sign(m: &Module, h: CK_SESSION_HANDLE, data: Option<&[u8]>, cap: Cap) -> Result<Out> {
    m.step::<SignOp, _>(h, |s| m.sign(s, data, cap))
}

fn sign_update(m: &Module, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
    m.step::<SignOp, _>(h, |s| m.sign_update(s, data))
}

fn verify(m: &Module, h: CK_SESSION_HANDLE, data: Option<&[u8]>, sig: &[u8]) -> Result<()> {
    m.step::<VerifyOp, _>(h, |s| m.verify(s, data, sig))
}

fn verify_update(m: &Module, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
    m.step::<VerifyOp, _>(h, |s| m.verify_update(s, data))
}

fn encrypt(m: &Module, h: CK_SESSION_HANDLE, data: &[u8], cap: Cap) -> Result<Out> {
    m.step::<EncryptOp, _>(h, |s| m.encrypt(s, data, cap))
}

fn decrypt(m: &Module, h: CK_SESSION_HANDLE, data: &[u8], cap: Cap) -> Result<Out> {
    m.step::<DecryptOp, _>(h, |s| m.decrypt(s, data, cap))
}

fn digest(m: &Module, h: CK_SESSION_HANDLE, data: Option<&[u8]>, cap: Cap) -> Result<Out> {
    m.step::<DigestOp, _>(h, |s| m.digest(s, data, cap))
}

fn digest_update(m: &Module, h: CK_SESSION_HANDLE, data: &[u8]) -> Result<()> {
    m.step::<DigestOp, _>(h, |s| m.digest_update(s, data))
}

/// A logged-in session and the token's private key.
fn signer() -> (Module, Fake, CK_SESSION_HANDLE, CK_OBJECT_HANDLE) {
    let (m, fake) = setup();
    let h = open(&m, false);
    login(&m, h);
    let key = find(&m, h, CKO_PRIVATE_KEY)[0];
    (m, fake, h, key)
}

fn verifies(msg: &[u8], sig: &[u8]) -> bool {
    fake::public_key()
        .verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), sig)
        .is_ok()
}

#[test]
fn padding() {
    assert_eq!(&pad::<8>("ssh"), b"ssh     ");
    assert_eq!(&pad::<4>("abcdef"), b"abcd");
    // Never cuts a character in two.
    assert_eq!(&pad::<2>("é!"), b"\xc3\xa9");
    assert_eq!(&pad::<1>("é"), b" ");
}

#[test]
fn calls_before_initialize_are_refused() {
    let _g = lock(&GLOBAL);
    assert_eq!(
        module().err().map(|e| e.rv()),
        Some(CKR_CRYPTOKI_NOT_INITIALIZED)
    );
    assert_eq!(finalize().unwrap_err().rv(), CKR_CRYPTOKI_NOT_INITIALIZED);
}

#[test]
fn sessions_open_and_close() {
    let (m, _) = setup();
    // A slot ID is valid before any listing, and is the names'.
    assert_eq!(rv(m.open_session(SLOT, CKF_SERIAL_SESSION)), CKR_OK);
    assert_eq!(m.slot_list(false, false), vec![SLOT]);
    assert_eq!(
        rv(m.open_session(7, CKF_SERIAL_SESSION)),
        CKR_SLOT_ID_INVALID
    );
    assert_eq!(
        rv(m.open_session(SLOT, 0)),
        CKR_SESSION_PARALLEL_NOT_SUPPORTED
    );
    let ro = open(&m, false);
    let rw = open(&m, true);
    assert_eq!(state(&m, ro), CKS_RO_PUBLIC_SESSION);
    assert_eq!(state(&m, rw), CKS_RW_PUBLIC_SESSION);
    let info = m.token_info(SLOT).unwrap();
    assert_eq!((info.ulSessionCount, info.ulRwSessionCount), (3, 1));
    m.close_session(ro).unwrap();
    assert_eq!(rv(m.close_session(ro)), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(rv(m.session_info(ro)), CKR_SESSION_HANDLE_INVALID);
    m.close_all_sessions(SLOT).unwrap();
    assert_eq!(rv(m.session_info(rw)), CKR_SESSION_HANDLE_INVALID);
}

#[test]
fn login_and_logout() {
    let (m, fake) = setup();
    let h = open(&m, true);
    let other = open(&m, false);
    let wrong = Some(Zeroizing::new(b"0000".to_vec()));
    assert_eq!(rv(m.login(h, CKU_USER, wrong)), CKR_PIN_INCORRECT);
    assert_eq!(state(&m, h), CKS_RW_PUBLIC_SESSION);
    // The SO has no read-only session: `other` is one.
    assert_eq!(rv(m.login(h, CKU_SO, None)), CKR_SESSION_READ_ONLY_EXISTS);
    assert_eq!(rv(m.login(h, 7, None)), CKR_USER_TYPE_INVALID);
    // No PIN is accepted only where it is typed on the phone.
    assert_eq!(rv(m.login(h, CKU_USER, None)), CKR_ARGUMENTS_BAD);
    login(&m, h);
    // The login is the token's, seen by every session.
    assert_eq!(state(&m, h), CKS_RW_USER_FUNCTIONS);
    assert_eq!(state(&m, other), CKS_RO_USER_FUNCTIONS);
    assert_eq!(
        rv(m.login(other, CKU_USER, Some(Zeroizing::new(fake::PIN.to_vec())))),
        CKR_USER_ALREADY_LOGGED_IN
    );
    m.logout(other).unwrap();
    assert_eq!(state(&m, h), CKS_RW_PUBLIC_SESSION);
    assert_eq!(rv(m.logout(h)), CKR_USER_NOT_LOGGED_IN);
    // Closing the last session of a logged-in token logs out on the handset.
    login(&m, h);
    m.close_session(other).unwrap();
    assert_eq!(fake.count("logout"), 1);
    m.close_session(h).unwrap();
    assert_eq!(fake.count("logout"), 2);
    assert!(!fake.state().logged_in);
}

#[test]
fn protected_path_logs_in_without_a_pin() {
    let (m, fake) = setup();
    fake.state().protected_path = true;
    let h = open(&m, false);
    m.login(h, CKU_USER, None).unwrap();
    assert_eq!(state(&m, h), CKS_RO_USER_FUNCTIONS);
}

#[test]
fn private_keys_show_only_after_login() {
    let (m, _) = setup();
    let h = open(&m, false);
    assert!(find(&m, h, CKO_PRIVATE_KEY).is_empty());
    assert_eq!(find(&m, h, CKO_PUBLIC_KEY).len(), 1);
    login(&m, h);
    let private = find(&m, h, CKO_PRIVATE_KEY);
    assert_eq!(private.len(), 1);
    // Handles stay the same from one search to the next.
    assert_eq!(find(&m, h, CKO_PRIVATE_KEY), private);
    m.logout(h).unwrap();
    assert_eq!(
        rv(m.get_attributes(h, private[0])),
        CKR_OBJECT_HANDLE_INVALID
    );
}

/// Issue 14, item 2: what was read of an object before C_Login is not
/// read again after it.
#[test]
fn attributes_read_before_login_are_kept_across_it() {
    let (m, fake) = setup();
    let h = open(&m, false);
    let public = find(&m, h, CKO_PUBLIC_KEY)[0];
    m.get_attributes(h, public).unwrap();
    let before = fake.count("attributes");
    login(&m, h);
    m.get_attributes(h, public).unwrap();
    assert_eq!(fake.count("attributes"), before);
}

#[test]
fn find_is_an_operation_of_its_own() {
    let (m, _) = setup();
    let h = open(&m, false);
    assert_eq!(rv(m.find(h, 1)), CKR_OPERATION_NOT_INITIALIZED);
    m.find_init(h, Vec::new()).unwrap();
    assert_eq!(rv(m.find_init(h, Vec::new())), CKR_OPERATION_ACTIVE);
    // One at a time, then none: the public key only, before login.
    assert_eq!(m.find(h, 1).unwrap().len(), 1);
    assert!(m.find(h, 1).unwrap().is_empty());
    m.find_final(h).unwrap();
    assert_eq!(rv(m.find_final(h)), CKR_OPERATION_NOT_INITIALIZED);
    // A full template (not answered by the object list) asks for attributes.
    m.find_init(h, vec![(CKA_MODULUS_BITS, objects::ulong(2048))])
        .unwrap();
    assert_eq!(m.find(h, 10).unwrap().len(), 1);
}

#[test]
fn sign_single_and_multi_part_and_verify() {
    let (m, fake, h, key) = signer();
    let sha256 = mech(CKM_SHA256_RSA_PKCS);
    m.key_init(h, KeyUse::Sign, Some(&sha256), key).unwrap();
    let one = data(sign(&m, h, Some(b"hello world"), Some(256)));
    assert!(verifies(b"hello world", &one));
    m.key_init(h, KeyUse::Sign, Some(&sha256), key).unwrap();
    sign_update(&m, h, b"hello ").unwrap();
    sign_update(&m, h, b"world").unwrap();
    // PKCS#1 v1.5 is deterministic: both paths sign the same input.
    assert_eq!(data(sign(&m, h, None, Some(256))), one);
    assert_eq!(fake.count("sign"), 2);

    m.key_init(h, KeyUse::Verify, Some(&sha256), key).unwrap();
    verify(&m, h, Some(b"hello world"), &one).unwrap();
    m.key_init(h, KeyUse::Verify, Some(&sha256), key).unwrap();
    verify_update(&m, h, b"hello ").unwrap();
    verify_update(&m, h, b"world").unwrap();
    verify(&m, h, None, &one).unwrap();
    m.key_init(h, KeyUse::Verify, Some(&sha256), key).unwrap();
    assert_eq!(
        rv(verify(&m, h, Some(b"hello"), &one)),
        CKR_SIGNATURE_INVALID
    );
    m.key_init(h, KeyUse::Verify, Some(&sha256), key).unwrap();
    assert_eq!(
        rv(verify(&m, h, Some(b"x"), &one[1..])),
        CKR_SIGNATURE_LEN_RANGE
    );
    // Each final call ended its operation.
    assert_eq!(rv(verify(&m, h, None, &one)), CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
fn length_query_and_short_buffer_keep_the_operation() {
    let (m, fake, h, key) = signer();
    m.key_init(h, KeyUse::Sign, Some(&mech(CKM_SHA256_RSA_PKCS)), key)
        .unwrap();
    assert_eq!(len(sign(&m, h, Some(b"msg"), None)), 256);
    match sign(&m, h, Some(b"msg"), Some(10)) {
        Err(Error::BufferTooSmall { needed }) => assert_eq!(needed, 256),
        r => panic!("not BUFFER_TOO_SMALL: {:?}", r.err()),
    }
    // Neither reached the handset.
    assert_eq!(fake.count("sign"), 0);
    assert!(verifies(
        b"msg",
        &data(sign(&m, h, Some(b"msg"), Some(300)))
    ));
    assert_eq!(
        rv(sign(&m, h, Some(b"msg"), Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );

    // A length query through the final call leaves a single-part
    // operation single-part.
    m.key_init(h, KeyUse::Sign, Some(&mech(CKM_SHA256_RSA_PKCS)), key)
        .unwrap();
    assert_eq!(len(sign(&m, h, None, None)), 256);
    assert!(verifies(
        b"msg",
        &data(sign(&m, h, Some(b"msg"), Some(256)))
    ));

    m.digest_init(h, Some(&mech(CKM_SHA256))).unwrap();
    digest_update(&m, h, b"abc").unwrap();
    assert_eq!(len(digest(&m, h, None, None)), 32);
    assert_eq!(rv(digest(&m, h, None, Some(31))), CKR_BUFFER_TOO_SMALL);
    assert_eq!(
        data(digest(&m, h, None, Some(32))),
        Sha256::digest(b"abc").to_vec()
    );
}

#[test]
fn operation_active_and_not_initialized() {
    let (m, _, h, key) = signer();
    let sha256 = mech(CKM_SHA256_RSA_PKCS);
    assert_eq!(
        rv(sign(&m, h, Some(b"x"), Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(rv(sign_update(&m, h, b"x")), CKR_OPERATION_NOT_INITIALIZED);
    m.key_init(h, KeyUse::Sign, Some(&sha256), key).unwrap();
    assert_eq!(
        rv(m.key_init(h, KeyUse::Sign, Some(&sha256), key)),
        CKR_OPERATION_ACTIVE
    );
    // The kinds are independent of each other.
    m.key_init(h, KeyUse::Verify, Some(&sha256), key).unwrap();
    m.digest_init(h, Some(&mech(CKM_SHA256))).unwrap();
    // A single-part call after an update is refused, and, as every failed
    // call of an operation, ends it.
    sign_update(&m, h, b"hello").unwrap();
    assert_eq!(
        rv(sign(&m, h, Some(b"hello"), Some(256))),
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(
        rv(sign(&m, h, None, Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // A NULL mechanism cancels.
    m.key_init(h, KeyUse::Verify, None, key).unwrap();
    assert_eq!(
        rv(verify(&m, h, None, &[0; 256])),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // A key of the wrong class, or no key, starts nothing.
    let public = find(&m, h, CKO_PUBLIC_KEY)[0];
    assert_eq!(
        rv(m.key_init(h, KeyUse::Sign, Some(&sha256), public)),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        rv(m.key_init(h, KeyUse::Sign, Some(&sha256), 999)),
        CKR_KEY_HANDLE_INVALID
    );
    assert_eq!(
        rv(sign(&m, h, None, Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );
    // Digest keys are never digestible; the operation ends.
    assert_eq!(rv(m.digest_key(h)), CKR_KEY_INDIGESTIBLE);
    assert_eq!(rv(m.digest_key(h)), CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
fn a_failed_update_ends_the_operation() {
    let (m, _, h, key) = signer();
    // Raw PKCS#1 input is at most a modulus long.
    m.key_init(h, KeyUse::Sign, Some(&mech(CKM_RSA_PKCS)), key)
        .unwrap();
    assert_eq!(rv(sign_update(&m, h, &[0; 600])), CKR_DATA_LEN_RANGE);
    assert_eq!(
        rv(sign(&m, h, None, Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );
}

#[test]
fn encrypt_and_decrypt() {
    let (m, fake, h, private) = signer();
    let public = find(&m, h, CKO_PUBLIC_KEY)[0];
    let pkcs = mech(CKM_RSA_PKCS);
    m.key_init(h, KeyUse::Encrypt, Some(&pkcs), public).unwrap();
    assert_eq!(
        rv(m.key_init(h, KeyUse::Encrypt, Some(&pkcs), public)),
        CKR_OPERATION_ACTIVE
    );
    assert_eq!(len(encrypt(&m, h, b"secret", None)), 256);
    assert_eq!(
        rv(encrypt(&m, h, b"secret", Some(255))),
        CKR_BUFFER_TOO_SMALL
    );
    let ct = data(encrypt(&m, h, b"secret", Some(256)));
    assert_eq!(
        rv(encrypt(&m, h, b"secret", Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );

    m.key_init(h, KeyUse::Decrypt, Some(&pkcs), private)
        .unwrap();
    // The length query answers the largest plaintext; a buffer of the
    // plaintext's own size is enough.
    assert_eq!(len(decrypt(&m, h, &ct, None)), 256);
    assert_eq!(rv(decrypt(&m, h, &ct, Some(3))), CKR_BUFFER_TOO_SMALL);
    // The plaintext is kept for the retry: the handset decrypted once.
    assert_eq!(len(decrypt(&m, h, &ct, None)), 6);
    assert_eq!(data(decrypt(&m, h, &ct, Some(6))), b"secret");
    assert_eq!(fake.count("decrypt"), 1);

    m.key_init(h, KeyUse::Decrypt, Some(&pkcs), private)
        .unwrap();
    assert_eq!(
        rv(decrypt(&m, h, &ct[1..], Some(256))),
        CKR_ENCRYPTED_DATA_LEN_RANGE
    );
    assert_eq!(
        rv(decrypt(&m, h, &ct, Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );

    // RSA is single-part: an update ends the operation.
    m.key_init(h, KeyUse::Encrypt, Some(&pkcs), public).unwrap();
    let update = |m: &Module| m.step::<EncryptOp, _>(h, |s| m.encrypt_update(s, b"x", Some(256)));
    assert_eq!(rv(update(&m)), CKR_FUNCTION_NOT_SUPPORTED);
    assert_eq!(rv(update(&m)), CKR_OPERATION_NOT_INITIALIZED);
}

#[test]
fn digest_single_and_multi_part() {
    let (m, _) = setup();
    let h = open(&m, false);
    let want = Sha256::digest(b"abcdef").to_vec();
    m.digest_init(h, Some(&mech(CKM_SHA256))).unwrap();
    assert_eq!(data(digest(&m, h, Some(b"abcdef"), Some(32))), want);
    m.digest_init(h, Some(&mech(CKM_SHA256))).unwrap();
    digest_update(&m, h, b"abc").unwrap();
    digest_update(&m, h, b"def").unwrap();
    assert_eq!(data(digest(&m, h, None, Some(32))), want);
    assert_eq!(
        rv(m.digest_init(h, Some(&mech(CKM_RSA_PKCS)))),
        CKR_MECHANISM_INVALID
    );
}

#[test]
fn session_cancel_ends_only_the_named_operations() {
    let (m, _, h, key) = signer();
    m.key_init(h, KeyUse::Sign, Some(&mech(CKM_SHA256_RSA_PKCS)), key)
        .unwrap();
    m.digest_init(h, Some(&mech(CKM_SHA256))).unwrap();
    m.find_init(h, Vec::new()).unwrap();
    m.cancel(h, CKF_SIGN | CKF_FIND_OBJECTS).unwrap();
    assert_eq!(
        rv(sign(&m, h, None, Some(256))),
        CKR_OPERATION_NOT_INITIALIZED
    );
    assert_eq!(rv(m.find(h, 1)), CKR_OPERATION_NOT_INITIALIZED);
    assert_eq!(data(digest(&m, h, Some(b"abc"), Some(32))).len(), 32);
    assert_eq!(rv(m.cancel(999, CKF_SIGN)), CKR_SESSION_HANDLE_INVALID);
}

#[test]
fn the_token_going_away_closes_its_sessions() {
    let (m, fake, h, key) = signer();
    let other = open(&m, true);
    m.key_init(h, KeyUse::Sign, Some(&mech(CKM_SHA256_RSA_PKCS)), key)
        .unwrap();
    fake.state().present = false;
    assert_eq!(rv(sign(&m, h, Some(b"x"), Some(256))), CKR_DEVICE_REMOVED);
    assert_eq!(rv(m.session_info(h)), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(rv(m.session_info(other)), CKR_SESSION_HANDLE_INVALID);
    assert_eq!(
        rv(m.open_session(SLOT, CKF_SERIAL_SESSION)),
        CKR_TOKEN_NOT_PRESENT
    );
    assert_eq!(rv(m.token_info(SLOT)), CKR_TOKEN_NOT_PRESENT);
    assert!(m.slot_list(true, true).is_empty());
    assert_eq!(m.slot_list(false, false), vec![SLOT]);
    assert_eq!(m.wait_for_slot_event(CKF_DONT_BLOCK).ok(), Some(SLOT));
    assert_eq!(rv(m.wait_for_slot_event(CKF_DONT_BLOCK)), CKR_NO_EVENT);
    // Back again: the same slot, logged out.
    fake.state().present = true;
    assert_eq!(m.wait_for_slot_event(CKF_DONT_BLOCK).ok(), Some(SLOT));
    let h = open(&m, false);
    assert_eq!(state(&m, h), CKS_RO_PUBLIC_SESSION);
}

#[test]
fn handset_errors_keep_their_ck_rv() {
    // A lost login is noticed; other failures leave the login as it was.
    for (failure, still_logged_in) in [
        (CkRv::USER_NOT_LOGGED_IN, false),
        (CkRv::FUNCTION_CANCELED, true),
    ] {
        let (m, fake, h, key) = signer();
        fake.fail("sign", failure);
        let sha256 = mech(CKM_SHA256_RSA_PKCS);
        m.key_init(h, KeyUse::Sign, Some(&sha256), key).unwrap();
        assert_eq!(rv(sign(&m, h, Some(b"x"), Some(256))), failure.0 as CK_RV);
        // The failed final call ended the operation; the session stays.
        assert_eq!(
            rv(sign(&m, h, None, Some(256))),
            CKR_OPERATION_NOT_INITIALIZED
        );
        let want = if still_logged_in {
            CKS_RO_USER_FUNCTIONS
        } else {
            CKS_RO_PUBLIC_SESSION
        };
        assert_eq!(state(&m, h), want, "{failure}");
    }
}

/// Issue 15, item 3: `C_CreateObject` of a token RSA private key puts it
/// on the phone (with its public key object), marked not local; a
/// template that is incomplete, of another key type, extractable or not a
/// consistent key is refused with the standard's values, before anything
/// reaches the phone.
#[test]
fn a_token_private_key_is_imported_and_reads_as_not_local() {
    use rsa::traits::{PrivateKeyParts, PublicKeyParts};
    let (m, fake) = setup();
    let h = open(&m, true);
    let k = fake::private_key();
    let be = |v: &rsa::BigUint| v.to_bytes_be();
    let template = |extra: Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>, leave: CK_ATTRIBUTE_TYPE| {
        let mut t = vec![
            (CKA_CLASS, objects::ulong(CKO_PRIVATE_KEY)),
            (CKA_KEY_TYPE, objects::ulong(CKK_RSA)),
            (CKA_TOKEN, objects::bbool(true)),
            (CKA_ID, vec![0x42]),
            (CKA_LABEL, b"old key".to_vec()),
            (CKA_MODULUS, be(k.n())),
            (CKA_PUBLIC_EXPONENT, be(k.e())),
            (CKA_PRIVATE_EXPONENT, be(k.d())),
            (CKA_PRIME_1, be(&k.primes()[0])),
            (CKA_PRIME_2, be(&k.primes()[1])),
        ];
        t.retain(|(a, _)| *a != leave);
        t.retain(|(a, _)| !extra.iter().any(|(b, _)| b == a));
        t.extend(extra);
        t
    };
    let none = CKA_VENDOR_DEFINED;
    assert_eq!(
        rv(m.create_object(h, template(vec![], none))),
        CKR_USER_NOT_LOGGED_IN
    );
    login(&m, h);
    let mut wrong_d = be(k.d());
    wrong_d[10] ^= 1;
    // A template without one of what the key needs.
    for (what, left_out) in [
        ("no type", CKA_KEY_TYPE),
        ("no e", CKA_PUBLIC_EXPONENT),
        ("no d", CKA_PRIVATE_EXPONENT),
        ("one prime", CKA_PRIME_2),
    ] {
        let t = template(vec![], left_out);
        assert_eq!(rv(m.create_object(h, t)), CKR_TEMPLATE_INCOMPLETE, "{what}");
    }
    // EC without CKA_EC_PARAMS (and CKA_VALUE).
    let t = template(vec![(CKA_KEY_TYPE, objects::ulong(CKK_EC))], none);
    assert_eq!(rv(m.create_object(h, t)), CKR_TEMPLATE_INCOMPLETE, "EC");
    // A template with a value the phone cannot take.
    for (what, value) in [
        ("DSA", (CKA_KEY_TYPE, objects::ulong(CKK_DSA))),
        ("extractable", (CKA_EXTRACTABLE, objects::bbool(true))),
        ("wrong d", (CKA_PRIVATE_EXPONENT, wrong_d)),
    ] {
        let t = template(vec![value], none);
        assert_eq!(
            rv(m.create_object(h, t)),
            CKR_ATTRIBUTE_VALUE_INVALID,
            "{what}"
        );
    }
    assert_eq!(fake.count("generate_key_pair"), 0);
    // Without the primes: found from n, e and d.
    let no_primes = template(vec![(CKA_PRIME_2, Vec::new())], CKA_PRIME_1);
    let o = m.create_object(h, no_primes).unwrap();
    assert_eq!(fake.state().imported, vec![vec![0x42]]);
    let a = m.get_attributes(h, o).unwrap();
    let get = |t| match a.get(&t) {
        Some(objects::Value::Bytes(v)) => v.clone(),
        other => panic!("{t:x}: {other:?}"),
    };
    for t in [CKA_LOCAL, CKA_NEVER_EXTRACTABLE, CKA_ALWAYS_SENSITIVE] {
        assert_eq!(get(t), objects::bbool(false), "{t:x}");
    }
    assert_eq!(get(CKA_SENSITIVE), objects::bbool(true));
    assert_eq!(
        get(CKA_KEY_GEN_MECHANISM),
        objects::ulong(CK_UNAVAILABLE_INFORMATION)
    );
    assert_eq!(find(&m, h, CKO_PUBLIC_KEY).len(), 2);
}

#[test]
fn objects_are_written_through_rw_sessions() {
    let (m, fake) = setup();
    let ro = open(&m, false);
    let h = open(&m, true);
    let cert = vec![
        (CKA_CLASS, objects::ulong(CKO_CERTIFICATE)),
        (CKA_TOKEN, objects::bbool(true)),
        (CKA_ID, fake::CERT_ID.to_vec()),
        (CKA_VALUE, vec![0x30, 0x00]),
    ];
    assert_eq!(rv(m.create_object(ro, cert.clone())), CKR_SESSION_READ_ONLY);
    let c = m.create_object(h, cert).unwrap();
    assert_eq!(find(&m, h, CKO_CERTIFICATE), vec![c]);
    m.destroy_object(h, c).unwrap();
    assert!(fake.state().certs.is_empty());
    // Key generation needs a login, and a size the handset makes.
    let public = vec![(CKA_MODULUS_BITS, objects::ulong(2048))];
    let gen_mech = mech(CKM_RSA_PKCS_KEY_PAIR_GEN);
    assert_eq!(
        rv(m.generate_key_pair(h, &gen_mech, public.clone(), Vec::new())),
        CKR_USER_NOT_LOGGED_IN
    );
    login(&m, h);
    let small = vec![(CKA_MODULUS_BITS, objects::ulong(1024))];
    assert_eq!(
        rv(m.generate_key_pair(h, &gen_mech, small, Vec::new())),
        CKR_KEY_SIZE_RANGE
    );
    let token = vec![(CKA_TOKEN, objects::bbool(true))];
    let (pu, pr) = m.generate_key_pair(h, &gen_mech, public, token).unwrap();
    assert_ne!(pu, pr);
    assert_eq!(find(&m, h, CKO_PRIVATE_KEY).len(), 2);
    assert_eq!(m.generate_random(h, 70_000).unwrap().len(), 70_000);
    assert_eq!(fake.count("random"), 2);
}
