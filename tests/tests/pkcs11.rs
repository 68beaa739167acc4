//! The PKCS#11 module end to end: a real `dbus-daemon`, the handset on a
//! pty and `phonecspd`, used by programs nobody here wrote (`pkcs11-tool`,
//! `ssh-keygen`, `ssh` against a real `sshd`, GnuTLS's `p11tool`, OpenSSL's
//! pkcs11 engine, NSS's `modutil`/`certutil`), and through the `cryptoki`
//! crate and the raw function list for the error paths. Results are checked
//! with `openssl` and the public key, independently of the module.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cryptoki::error::RvError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::UserType;
use cryptoki::types::AuthPin;
use phonecsp_tests::ck_rv as rv;
use phonecsp_tests::{
    KEY_ID, ModuleRig, OPENSSL_OAEP_SHA256, PIN, Reaped, cryptoki_rig, ok, openssl,
    openssl_verifies, output_text, own_process, s, wait_until,
};

/// Handset with `ssh` authorised, daemon started and paired, the token listed.
fn fixture() -> ModuleRig {
    ModuleRig::paired_ssh()
}

/// Checks a SHA-256 PKCS#1 v1.5 signature by key 01 with openssl and the
/// exported public key, independently of the module; the key's PEM file.
fn verified_by_openssl(f: &ModuleRig, msg: &Path, sig: &Path) -> PathBuf {
    let pem = f.public_pem("01");
    openssl_verifies("-sha256", &pem, sig, msg);
    pem
}

#[test]
fn pkcs11_tool_lists_signs_decrypts_generates_and_writes() {
    let f = fixture();
    let slots = ok(f.pkcs11_tool(&["--list-slots"]));
    assert!(slots.contains("phonecsp"), "{slots}");
    assert!(slots.contains("token label        : ssh"), "{slots}");
    f.lists_mechanisms(&[
        "SHA256-RSA-PKCS",
        "RSA-PKCS-OAEP",
        "RSA-PKCS-PSS",
        "SHA256",
        "RSA-PKCS-KEY-PAIR-GEN",
    ]);

    // Public objects without a login, the private key only after one.
    let objects = ok(f.pkcs11_tool(&["--list-objects"]));
    assert!(objects.contains("Public Key Object"), "{objects}");
    assert!(!objects.contains("Private Key Object"), "{objects}");
    let objects = ok(f.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]));
    assert!(objects.contains("Private Key Object"), "{objects}");
    assert!(objects.contains("ssh key"), "{objects}");

    // Sign on the phone, verify with openssl and the exported public key.
    let msg = f.file("msg", b"signed through PKCS#11");
    let sig = f.path("msg.sig");
    f.sign_with_tool("01", "SHA256-RSA-PKCS", &msg, &sig, &[]);
    let pem = verified_by_openssl(&f, &msg, &sig);
    // PSS too.
    let pss = f.path("msg.pss");
    f.sign_with_tool("01", "SHA256-RSA-PKCS-PSS", &msg, &pss, &[]);
    let padding = ["-sigopt", "rsa_padding_mode:pss"];
    let salt = ["-sigopt", "rsa_pss_saltlen:-1"];
    let check = ["-verify", s(&pem), "-signature", s(&pss), s(&msg)];
    openssl(&[&["dgst", "-sha256"], &padding[..], &salt, &check].concat());

    // Decrypt on the phone what openssl encrypted to the public key.
    let secret = f.file("secret", b"a disk key, say");
    for (mech, opts) in [
        ("RSA-PKCS", vec![]),
        ("RSA-PKCS-OAEP", OPENSSL_OAEP_SHA256.to_vec()),
    ] {
        let ct = f.path("secret.enc");
        let encrypt = ["pkeyutl", "-encrypt", "-pubin", "-inkey", s(&pem)];
        let files = ["-in", s(&secret), "-out", s(&ct)];
        openssl(&[&encrypt[..], &files, &opts].concat());
        let out = f.path("secret.out");
        let mut args = vec!["--decrypt", "--mechanism", mech, "--id", "01"];
        args.extend(["-i", s(&ct), "-o", s(&out)]);
        if mech == "RSA-PKCS-OAEP" {
            args.extend(["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"]);
        }
        ok(f.pkcs11_tool_login(&args));
        assert_eq!(std::fs::read(&out).unwrap(), b"a disk key, say", "{mech}");
    }

    // A key pair generated on the phone, and a certificate written for it.
    let made = ok(f.pkcs11_tool_login(&[
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        "02",
        "--label",
        "generated",
    ]));
    assert!(made.contains("generated"), "{made}");
    let key = f.path("cert.key");
    let cert = f.path("cert.der");
    let request = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ];
    let files = ["-outform", "DER", "-keyout", s(&key), "-out", s(&cert)];
    openssl(&[&request[..], &["-subj", "/CN=pkcs11 write"], &files].concat());
    let objects = write_read_delete(&f, &cert, &["cert", "--id", "02", "--label", "generated"]);
    assert!(objects.contains("Certificate Object"), "{objects}");
    assert!(objects.contains("pkcs11 write"), "{objects}");
}

/// pkcs11-tool writes `file` to the phone as the object `what` (its
/// `--type` and how to name it), reads it back, deletes it and checks it
/// is gone; the object list while it was there.
fn write_read_delete(f: &ModuleRig, file: &Path, what: &[&str]) -> String {
    let login = ["--login", "--pin", PIN];
    let with = |action: &[&str], extra: &[&str]| {
        let mut args = action.to_vec();
        args.push("--type");
        args.extend(what);
        args.extend(extra);
        ok(f.pkcs11_tool(&args))
    };
    with(&[&login[..], &["--write-object", s(file)]].concat(), &[]);
    let objects = ok(f.pkcs11_tool(&["--list-objects"]));
    let back = f.path("object.back");
    with(&["--read-object"], &["-o", s(&back)]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(file).unwrap());
    with(&[&login[..], &["--delete-object"]].concat(), &[]);
    let after = ok(f.pkcs11_tool(&["--list-objects"]));
    assert_ne!(after, objects, "the object is still there");
    objects
}

#[test]
fn pkcs11_tool_test_passes() {
    let f = fixture();
    let out = f.pkcs11_tool_login(&["--test"]);
    let text = output_text(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("No errors"), "{text}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn ssh_logs_in_with_the_phone_key() {
    let f = fixture();
    let line = f.ssh_key_line("ssh-rsa");
    f.ssh_logs_in(&line, "logged-in-by-phone");
}

#[test]
fn p11tool_lists_and_test_signs() {
    let f = fixture();
    let uri = f.p11tool_test_signs(None);
    assert!(uri.contains("token=ssh"), "{uri}");
}

/// The phone key's URI, PIN included.
fn key_uri() -> String {
    format!("pkcs11:token=ssh;object=ssh%20key;type=private;pin-value={PIN}")
}

#[test]
fn openssl_engine_signs_with_a_pkcs11_uri() {
    let f = fixture();
    let msg = f.file("msg", b"signed by openssl through the engine");
    let sig = f.path("msg.sig");
    f.engine_signs(&key_uri(), &msg, &sig);
    verified_by_openssl(&f, &msg, &sig);
}

/// A self-signed certificate for key 01, made on the phone and stored
/// there; its PEM file.
fn phone_certificate(f: &ModuleRig, subject: &str) -> PathBuf {
    let o = phonecsp_tests::phonecsp(
        &f.bus,
        None,
        &[
            "cert",
            "self-sign",
            "ssh",
            "--id",
            "01",
            "--subject",
            subject,
            "--days",
            "30",
        ],
        &[("PHONECSP_PIN", PIN)],
    );
    ok(o);
    let cert = f.path("cert.der");
    f.read_object("cert", "01", &cert);
    let pem = f.path("cert.pem");
    openssl(&["x509", "-inform", "DER", "-in", s(&cert), "-out", s(&pem)]);
    pem
}

#[test]
fn self_signed_certificate_shows_in_nss() {
    let f = fixture();
    let pem = phone_certificate(&f, "CN=phonecsp nss test");
    // The handset's signature on it verifies.
    let v = openssl(&["verify", "-CAfile", s(&pem), s(&pem)]);
    assert!(v.contains("OK"), "{v}");
    let list = f.nss_certificates(&f.nss_db());
    assert!(list.contains("ssh:ssh key"), "{list}");
}

// ---- the consumers that need the standard by the letter ---------------------

/// `openssl cms -encrypt` to the phone key's certificate, with `cipher`;
/// the message and the DER file.
fn encrypt_to_phone(f: &ModuleRig, pem: &Path, cipher: &str) -> (Vec<u8>, PathBuf) {
    let msg = format!("mail for the phone, sealed with {cipher}\n").into_bytes();
    let plain = f.file("mail.txt", &msg);
    let sealed = f.path(&format!("mail{cipher}.p7m"));
    let encrypt = ["cms", "-encrypt", "-binary", cipher, "-outform", "DER"];
    openssl(
        &[
            &encrypt[..],
            &["-in", s(&plain), "-out", s(&sealed), s(pem)],
        ]
        .concat(),
    );
    (msg, sealed)
}

/// NSS decrypts S/MIME mail with the phone key: the phone unwraps the
/// content key (C_UnwrapKey), the module decrypts the content with it;
/// and NSS signs with the phone key, for OpenSSL to verify.
#[test]
fn nss_cmsutil_decrypts_and_signs_smime_with_the_phone_key() {
    let f = fixture();
    let pem = phone_certificate(&f, "CN=phonecsp smime test");
    let db = f.nss_db();
    for cipher in ["-aes256", "-aes128", "-des3"] {
        let (msg, sealed) = encrypt_to_phone(&f, &pem, cipher);
        let out = f.path("mail.out");
        ok(f.cmd("cmsutil")
            .args(["-D", "-d", &db, "-p", PIN, "-i", s(&sealed), "-o", s(&out)])
            .output()
            .expect("cmsutil (install libnss3-tools)"));
        assert_eq!(std::fs::read(&out).unwrap(), msg, "{cipher}");
    }
    // NSS signs only with a certificate it trusts: a self-signed one, as
    // its own authority, for mail.
    ok(f.cmd("certutil")
        .args([
            "-A",
            "-d",
            &db,
            "-n",
            "phone",
            "-t",
            ",,CTu",
            "-a",
            "-i",
            s(&pem),
        ])
        .output()
        .unwrap());
    let plain = f.file("signed.txt", b"signed by NSS with the phone key\n");
    let signed = f.path("signed.p7m");
    ok(f.cmd("cmsutil")
        .args([
            "-S",
            "-Y",
            "NONE",
            "-d",
            &db,
            "-p",
            PIN,
            "-N",
            "ssh:ssh key",
            "-H",
            "SHA256",
        ])
        .args(["-i", s(&plain), "-o", s(&signed)])
        .output()
        .unwrap());
    let verified = f.path("verified.txt");
    let cms = [
        "cms",
        "-verify",
        "-binary",
        "-inform",
        "DER",
        "-CAfile",
        s(&pem),
    ];
    openssl(&[&cms[..], &["-in", s(&signed), "-out", s(&verified)]].concat());
    assert_eq!(
        std::fs::read(&verified).unwrap(),
        std::fs::read(&plain).unwrap()
    );
}

/// `openssl cms -decrypt` with the key through the pkcs11 engine.
#[test]
fn openssl_cms_decrypts_through_the_engine() {
    let f = fixture();
    let pem = phone_certificate(&f, "CN=phonecsp cms test");
    let conf = f.openssl_engine_conf();
    let (msg, sealed) = encrypt_to_phone(&f, &pem, "-aes256");
    let out = f.path("mail.out");
    ok(f.cmd("openssl")
        .env("OPENSSL_CONF", &conf)
        .args([
            "cms",
            "-decrypt",
            "-binary",
            "-inform",
            "DER",
            "-in",
            s(&sealed),
        ])
        .args(["-recip", s(&pem), "-engine", "pkcs11", "-keyform", "engine"])
        .args(["-inkey", &key_uri(), "-out", s(&out)])
        .output()
        .unwrap());
    assert_eq!(std::fs::read(&out).unwrap(), msg);
}

/// TLS client authentication with the phone key: a local `openssl
/// s_server` that requires a client certificate (the phone's, which it
/// trusts) accepts `gnutls-cli` authenticating with `pkcs11:` URIs.
#[test]
fn tls_client_authentication_with_the_phone_key() {
    let f = fixture();
    let client = phone_certificate(&f, "CN=phonecsp tls client");
    let server_key = f.path("server.key");
    let server_cert = f.path("server.pem");
    let request = [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ];
    let files = ["-keyout", s(&server_key), "-out", s(&server_cert)];
    openssl(&[&request[..], &["-subj", "/CN=127.0.0.1"], &files].concat());
    let port = free_port();
    let _server = Reaped::listening(
        "openssl s_server",
        Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &port.to_string(),
                "-www",
                "-Verify",
                "1",
            ])
            .args(["-verify_return_error", "-CAfile", s(&client)])
            .args(["-cert", s(&server_cert), "-key", s(&server_key)]),
        &f.path("s_server.log"),
        port,
    );
    let get = |with_key: bool| {
        let mut c = f.cmd("gnutls-cli");
        c.arg("--provider").arg(&f.module);
        if with_key {
            c.args([
                "--x509certfile",
                "pkcs11:token=ssh;object=ssh%20key;type=cert",
                "--x509keyfile",
                "pkcs11:token=ssh;object=ssh%20key;type=private",
            ]);
        }
        c.args(["--insecure", "-p", &port.to_string(), "127.0.0.1"])
            .env("GNUTLS_PIN", PIN)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().expect("gnutls-cli (install gnutls-bin)");
        use std::io::Write;
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"GET / HTTP/1.0\r\n\r\n");
        child.wait_with_output().expect("gnutls-cli")
    };
    let out = get(true);
    let text = format!(
        "{}\n{}\n--- s_server\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(f.path("s_server.log")).unwrap_or_default()
    );
    assert!(text.contains("HTTP/1.0 200 ok"), "{text}");
    // Without the phone key the server refuses.
    let refused = get(false);
    assert!(
        !String::from_utf8_lossy(&refused.stdout).contains("HTTP/1.0 200 ok"),
        "the server took no client certificate"
    );
}

// ---- through the cryptoki crate and the raw function list -------------------

fn private_key(session: &cryptoki::session::Session) -> ObjectHandle {
    let keys = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(KEY_ID.to_vec()),
        ])
        .expect("find");
    assert_eq!(keys.len(), 1);
    keys[0]
}

#[test]
fn cryptoki_sessions_objects_and_eight_threads() {
    let Some((_f, p)) = cryptoki_rig("cryptoki_sessions_objects_and_eight_threads") else {
        return;
    };
    let slots = p.get_slots_with_token().unwrap();
    assert_eq!(slots.len(), 1);
    let slot = slots[0];
    let info = p.get_token_info(slot).unwrap();
    assert_eq!(info.label(), "ssh");
    assert!(info.login_required() && info.rng() && info.token_initialized());
    let si = p.get_slot_info(slot).unwrap();
    assert!(si.removable_device() && si.hardware_slot() && si.token_present());
    let mi = p
        .get_mechanism_info(slot, cryptoki::mechanism::MechanismType::RSA_PKCS)
        .unwrap();
    assert!(mi.hardware() && mi.sign() && mi.decrypt());
    assert_eq!(mi.min_key_size(), 2048);

    let session = p.open_ro_session(slot).unwrap();
    // Private objects are hidden before login, as on a real token.
    let before = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .unwrap();
    assert!(before.is_empty());
    let public = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
        .unwrap();
    assert_eq!(public.len(), 1);
    // Signing needs a login. The SO (the PUK) has no read-only session.
    assert_eq!(
        rv(session.login(UserType::So, Some(&AuthPin::new(PIN.into())))),
        RvError::SessionReadOnlyExists
    );
    assert_eq!(
        rv(session.login(UserType::User, Some(&AuthPin::new("000000".into())))),
        RvError::PinIncorrect
    );
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    assert_eq!(
        rv(session.login(UserType::User, Some(&AuthPin::new(PIN.into())))),
        RvError::UserAlreadyLoggedIn
    );
    let key = private_key(&session);
    // Handles are stable across searches.
    assert_eq!(private_key(&session), key);
    let attrs = session
        .get_attributes(
            key,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Modulus,
                AttributeType::PublicKeyInfo,
            ],
        )
        .unwrap();
    assert!(attrs.contains(&Attribute::Sensitive(true)));
    assert!(attrs.contains(&Attribute::Extractable(false)));
    assert!(
        attrs
            .iter()
            .any(|a| matches!(a, Attribute::Modulus(m) if m.len() == 256))
    );
    assert!(
        attrs
            .iter()
            .any(|a| matches!(a, Attribute::PublicKeyInfo(d) if d.len() > 256))
    );
    // A sensitive value is refused.
    let raw = session.get_attributes(key, &[AttributeType::PrivateExponent]);
    assert!(raw.map(|a| a.is_empty()).unwrap_or(true));

    // Sign here, verify here (in-process, with the public key).
    let sig = session
        .sign(&Mechanism::Sha256RsaPkcs, key, b"message")
        .unwrap();
    session
        .verify(&Mechanism::Sha256RsaPkcs, public[0], b"message", &sig)
        .unwrap();
    assert_eq!(
        rv(session.verify(&Mechanism::Sha256RsaPkcs, public[0], b"other", &sig)),
        RvError::SignatureInvalid
    );
    // Multi-part: the message is hashed here; the same signature results.
    session.sign_init(&Mechanism::Sha256RsaPkcs, key).unwrap();
    session.sign_update(b"mess").unwrap();
    session.sign_update(b"age").unwrap();
    assert_eq!(session.sign_final().unwrap(), sig);
    // Encrypt here, decrypt on the phone.
    let ct = session
        .encrypt(&Mechanism::RsaPkcs, public[0], b"secret")
        .unwrap();
    assert_eq!(
        session.decrypt(&Mechanism::RsaPkcs, key, &ct).unwrap(),
        b"secret"
    );
    assert_eq!(session.generate_random_vec(48).unwrap().len(), 48);
    let digest = session.digest(&Mechanism::Sha256, b"abc").unwrap();
    assert_eq!(digest[..4], [0xba, 0x78, 0x16, 0xbf]);

    // Eight threads, eight sessions, signing at once.
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let p = p.clone();
            std::thread::spawn(move || {
                let s = p.open_ro_session(slot).unwrap();
                let key = private_key(&s);
                let msg = format!("thread {i}");
                let pubs = s
                    .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY)])
                    .unwrap();
                for _ in 0..3 {
                    let sig = s
                        .sign(&Mechanism::Sha256RsaPkcs, key, msg.as_bytes())
                        .unwrap();
                    s.verify(&Mechanism::Sha256RsaPkcs, pubs[0], msg.as_bytes(), &sig)
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a signing thread failed");
    }
    session.logout().unwrap();
    assert!(
        session
            .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
            .unwrap()
            .is_empty()
    );
}

/// The raw function list, for what the safe wrapper never sends.
struct Raw {
    _lib: libloading::Library,
    f: &'static cryptoki_sys::CK_FUNCTION_LIST,
}

fn raw(f: &ModuleRig) -> Raw {
    f.set_module_env();
    // SAFETY: loading the module under test, which has no constructors that
    // could misbehave.
    let lib = unsafe { libloading::Library::new(&f.module) }.expect("dlopen");
    // SAFETY: the symbol has the standard's C_GetFunctionList type.
    let get: libloading::Symbol<
        unsafe extern "C" fn(*mut *mut cryptoki_sys::CK_FUNCTION_LIST) -> cryptoki_sys::CK_RV,
    > = unsafe { lib.get(b"C_GetFunctionList\0") }.expect("C_GetFunctionList");
    let mut list = std::ptr::null_mut();
    // SAFETY: a valid out-pointer.
    assert_eq!(unsafe { get(&mut list) }, cryptoki_sys::CKR_OK);
    // SAFETY: the module's static list lives as long as the library, which
    // this struct keeps loaded.
    let f = unsafe { &*list };
    Raw { _lib: lib, f }
}

macro_rules! call {
    ($raw:expr, $name:ident($($arg:expr),*)) => {
        // SAFETY: the arguments are valid or deliberately NULL/invalid, which
        // the module must answer with an error rather than a crash.
        unsafe { ($raw.f.$name.expect(stringify!($name)))($($arg),*) }
    };
}

/// The start of a test that drives the module through its raw function
/// list in this process: alone in a process of its own ([`own_process`];
/// `None` when it ran there), a fixture, and the module's functions.
fn raw_fixture(test: &str) -> Option<(ModuleRig, Raw)> {
    if own_process(test) {
        return None;
    }
    let fx = fixture();
    let r = raw(&fx);
    Some((fx, r))
}

/// Calls a function of the raw list and checks the `CK_RV` it answers.
macro_rules! check {
    ($raw:expr, $name:ident($($arg:expr),*) => $rv:expr) => {
        assert_eq!(call!($raw, $name($($arg),*)), $rv, stringify!($name))
    };
}

#[test]
fn raw_calls_null_pointers_bad_handles_wrong_state_and_short_buffers() {
    let Some((_fx, r)) =
        raw_fixture("raw_calls_null_pointers_bad_handles_wrong_state_and_short_buffers")
    else {
        return;
    };
    use cryptoki_sys::*;
    check!(r, C_GetSlotList(CK_TRUE, null(), null()) => CKR_CRYPTOKI_NOT_INITIALIZED);
    check!(r, C_Initialize(null()) => CKR_OK);
    check!(r, C_Initialize(null()) => CKR_CRYPTOKI_ALREADY_INITIALIZED);
    // NULL where a value is needed.
    check!(r, C_GetInfo(null()) => CKR_ARGUMENTS_BAD);
    check!(r, C_GetSlotList(CK_TRUE, null(), null()) => CKR_ARGUMENTS_BAD);
    let mut n: CK_ULONG = 0;
    check!(r, C_GetSlotList(CK_TRUE, null(), &mut n) => CKR_OK);
    assert_eq!(n, 1);
    let mut slot: CK_SLOT_ID = 99;
    check!(r, C_GetSlotList(CK_TRUE, &mut slot, &mut n) => CKR_OK);
    check!(r, C_GetTokenInfo(slot, null()) => CKR_ARGUMENTS_BAD);
    check!(r, C_GetSlotInfo(12345, &mut CK_SLOT_INFO::default()) => CKR_SLOT_ID_INVALID);
    check!(r, C_OpenSession(slot, CKF_SERIAL_SESSION, null(), None, null()) => CKR_ARGUMENTS_BAD);
    check!(r, C_OpenSession(slot, 0, null(), None, &mut 0) => CKR_SESSION_PARALLEL_NOT_SUPPORTED);
    let mut h: CK_SESSION_HANDLE = 0;
    check!(r, C_OpenSession(slot, CKF_SERIAL_SESSION, null(), None, &mut h) => CKR_OK);
    // Invalid session and object handles.
    check!(r, C_CloseSession(h + 1000) => CKR_SESSION_HANDLE_INVALID);
    check!(r, C_Logout(h + 1000) => CKR_SESSION_HANDLE_INVALID);
    let mut class: CK_OBJECT_CLASS = 0;
    let mut attr = attribute(
        CKA_CLASS,
        &mut class,
        std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
    );
    check!(r, C_GetAttributeValue(h, 424242, &mut attr, 1) => CKR_OBJECT_HANDLE_INVALID);
    check!(r, C_DestroyObject(h, 424242) => CKR_OBJECT_HANDLE_INVALID);
    // Operations in the wrong state.
    let mut out = [0u8; 512];
    let mut out_len: CK_ULONG = out.len() as CK_ULONG;
    let mut data = *b"data";
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut out_len)
        => CKR_OPERATION_NOT_INITIALIZED);
    check!(r, C_FindObjects(h, &mut 0, 1, &mut 0) => CKR_OPERATION_NOT_INITIALIZED);
    check!(r, C_FindObjectsFinal(h) => CKR_OPERATION_NOT_INITIALIZED);
    check!(r, C_Logout(h) => CKR_USER_NOT_LOGGED_IN);
    let mut pin = *b"123456";
    // A read-only session cannot change the PIN.
    check!(r, C_SetPIN(h, pin.as_mut_ptr(), 6, pin.as_mut_ptr(), 6) => CKR_SESSION_READ_ONLY);
    check!(r, C_Login(h, CKU_USER, null(), 6) => CKR_ARGUMENTS_BAD);
    check!(r, C_Login(h, CKU_USER, pin.as_mut_ptr(), 6) => CKR_OK);

    // Find the private key (its handle, by CKA_ID).
    let mut id = KEY_ID.to_vec();
    let mut pclass: CK_OBJECT_CLASS = CKO_PRIVATE_KEY;
    let mut tmpl = [
        attribute(CKA_CLASS, &mut pclass, 8),
        attribute(CKA_ID, id.as_mut_ptr(), 1),
    ];
    check!(r, C_FindObjectsInit(h, tmpl.as_mut_ptr(), 2) => CKR_OK);
    check!(r, C_FindObjectsInit(h, tmpl.as_mut_ptr(), 2) => CKR_OPERATION_ACTIVE);
    let mut key: CK_OBJECT_HANDLE = 0;
    let mut found: CK_ULONG = 0;
    check!(r, C_FindObjects(h, null(), 1, &mut found) => CKR_ARGUMENTS_BAD);
    check!(r, C_FindObjects(h, &mut key, 1, &mut found) => CKR_OK);
    assert_eq!(found, 1);
    check!(r, C_FindObjectsFinal(h) => CKR_OK);

    // Attributes: a sensitive one, a length query, a short buffer.
    let mut exp = [0u8; 256];
    let mut a = attribute(CKA_PRIVATE_EXPONENT, exp.as_mut_ptr(), 256);
    check!(r, C_GetAttributeValue(h, key, &mut a, 1) => CKR_ATTRIBUTE_SENSITIVE);
    assert_eq!(a.ulValueLen, CK_UNAVAILABLE_INFORMATION);
    let mut a = attribute(CKA_MODULUS, null::<u8>(), 0);
    check!(r, C_GetAttributeValue(h, key, &mut a, 1) => CKR_OK);
    assert_eq!(a.ulValueLen, 256);
    let mut small = [0u8; 8];
    let mut a = attribute(CKA_MODULUS, small.as_mut_ptr(), 8);
    check!(r, C_GetAttributeValue(h, key, &mut a, 1) => CKR_BUFFER_TOO_SMALL);
    let mut a = attribute(0x7fff_fff0, null::<u8>(), 0);
    check!(r, C_GetAttributeValue(h, key, &mut a, 1) => CKR_ATTRIBUTE_TYPE_INVALID);

    // Signing: a length query, then a too-small buffer, which keeps the
    // operation active, then the signature.
    let mut mech = mechanism(CKM_SHA256_RSA_PKCS);
    check!(r, C_SignInit(h, &mut mech, 424242) => CKR_KEY_HANDLE_INVALID);
    let mut bad = mechanism(0x7fff_fff0);
    check!(r, C_SignInit(h, &mut bad, key) => CKR_MECHANISM_INVALID);
    check!(r, C_SignInit(h, &mut mech, key) => CKR_OK);
    check!(r, C_SignInit(h, &mut mech, key) => CKR_OPERATION_ACTIVE);
    let mut len: CK_ULONG = 0;
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, null(), &mut len) => CKR_OK);
    assert_eq!(len, 256);
    // A NULL length pointer is a failure, and ends the operation.
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), null()) => CKR_ARGUMENTS_BAD);
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, null(), &mut len) => CKR_OPERATION_NOT_INITIALIZED);
    check!(r, C_SignInit(h, &mut mech, key) => CKR_OK);
    let mut len: CK_ULONG = 10;
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len) => CKR_BUFFER_TOO_SMALL);
    assert_eq!(len, 256);
    let mut len: CK_ULONG = out.len() as CK_ULONG;
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len) => CKR_OK);
    assert_eq!(len, 256);
    // The operation ended with the signature.
    check!(r, C_Sign(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len)
        => CKR_OPERATION_NOT_INITIALIZED);
    // A NULL mechanism ends an operation (PKCS#11 3.0).
    check!(r, C_SignInit(h, &mut mech, key) => CKR_OK);
    check!(r, C_SignInit(h, null(), key) => CKR_OK);
    check!(r, C_SignFinal(h, null(), &mut len) => CKR_OPERATION_NOT_INITIALIZED);
    // Digest with a short buffer.
    let mut dm = mechanism(CKM_SHA256);
    check!(r, C_DigestInit(h, &mut dm) => CKR_OK);
    let mut len: CK_ULONG = 16;
    check!(r, C_Digest(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len)
        => CKR_BUFFER_TOO_SMALL);
    assert_eq!(len, 32);
    check!(r, C_Digest(h, data.as_mut_ptr(), 4, out.as_mut_ptr(), &mut len) => CKR_OK);
    // Unsupported functions say so.
    check!(r, C_InitToken(slot, null(), 0, null()) => CKR_FUNCTION_NOT_SUPPORTED);
    // C_DeriveKey is ECDH's alone: another mechanism is refused as such.
    check!(r, C_DeriveKey(h, &mut mech, 0, null(), 0, &mut 0) => CKR_MECHANISM_INVALID);
    // C_GenerateKey makes AES keys only, and needs a template.
    check!(r, C_GenerateKey(h, &mut mech, null(), 0, &mut 0) => CKR_MECHANISM_INVALID);
    // CKF_DONT_BLOCK: nothing changed.
    check!(r, C_WaitForSlotEvent(CKF_DONT_BLOCK, &mut slot, null()) => CKR_NO_EVENT);

    // fork(): the child is not initialised until it initialises again.
    // SAFETY: the child only calls into the module and exits with _exit.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        nix::unistd::ForkResult::Child => {
            let mut n: CK_ULONG = 0;
            let code = if call!(r, C_GetSlotList(CK_TRUE, null(), &mut n))
                != CKR_CRYPTOKI_NOT_INITIALIZED
            {
                10
            } else if call!(r, C_CloseSession(h)) != CKR_CRYPTOKI_NOT_INITIALIZED {
                11
            } else if call!(r, C_Initialize(null())) != CKR_OK {
                12
            } else if call!(r, C_GetSlotList(CK_TRUE, null(), &mut n)) != CKR_OK || n != 1 {
                13
            } else if call!(r, C_Finalize(null())) != CKR_OK {
                14
            } else {
                0
            };
            // SAFETY: ends the child without running the parent's destructors.
            unsafe { libc_exit(code) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    // The parent is unaffected.
    let mut len: CK_ULONG = 0;
    check!(r, C_GetSlotList(CK_TRUE, null(), &mut len) => CKR_OK);
    check!(r, C_CloseSession(h) => CKR_OK);
    check!(r, C_Finalize(null()) => CKR_OK);
    check!(r, C_GetSlotList(CK_TRUE, null(), &mut len) => CKR_CRYPTOKI_NOT_INITIALIZED);
}

fn null<T>() -> *mut T {
    std::ptr::null_mut()
}

/// A template's attribute of `type_`, its value at `value` (of `len`
/// bytes), as a C caller fills it in.
fn attribute<T>(
    type_: cryptoki_sys::CK_ATTRIBUTE_TYPE,
    value: *mut T,
    len: cryptoki_sys::CK_ULONG,
) -> cryptoki_sys::CK_ATTRIBUTE {
    cryptoki_sys::CK_ATTRIBUTE {
        type_,
        pValue: value as *mut _,
        ulValueLen: len,
    }
}

/// A mechanism without a parameter.
fn mechanism(m: cryptoki_sys::CK_MECHANISM_TYPE) -> cryptoki_sys::CK_MECHANISM {
    cryptoki_sys::CK_MECHANISM {
        mechanism: m,
        pParameter: null(),
        ulParameterLen: 0,
    }
}

unsafe extern "C" {
    #[link_name = "_exit"]
    fn libc_exit(code: i32) -> !;
}

/// Logs the session in and signs `msg` with the private key, which it
/// returns.
fn log_in_and_sign(session: &cryptoki::session::Session, msg: &[u8]) -> ObjectHandle {
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .unwrap();
    let key = private_key(session);
    session.sign(&Mechanism::Sha256RsaPkcs, key, msg).unwrap();
    key
}

#[test]
fn handset_disconnect_mid_session_then_recovery() {
    let Some((mut f, p)) = cryptoki_rig("handset_disconnect_mid_session_then_recovery") else {
        return;
    };
    let slot = p.get_slots_with_token().unwrap()[0];
    let session = p.open_rw_session(slot).unwrap();
    let key = log_in_and_sign(&session, b"before");
    session.sign_init(&Mechanism::Sha256RsaPkcs, key).unwrap();
    session.sign_update(b"mid-").unwrap();

    f.handset.kill();
    // The signature in progress fails with the device gone...
    assert_eq!(rv(session.sign_final()), RvError::DeviceRemoved);
    // ...the session went with it, and the slot stays, without a token.
    assert_eq!(
        rv(session.sign(&Mechanism::Sha256RsaPkcs, key, b"x")),
        RvError::SessionHandleInvalid
    );
    wait_until("the token to go", Duration::from_secs(20), || {
        p.get_slots_with_token().is_ok_and(|s| s.is_empty())
    });
    let all = p.get_all_slots().unwrap();
    assert_eq!(all, vec![slot]);
    assert!(!p.get_slot_info(slot).unwrap().token_present());
    assert_eq!(rv(p.open_ro_session(slot)), RvError::TokenNotPresent);
    assert_eq!(rv(p.get_token_info(slot)), RvError::TokenNotPresent);
    let event = p.get_slot_event().unwrap();
    assert_eq!(event, Some(slot));

    // The phone comes back: the daemon reconnects by itself, the same slot
    // has its token again, and after a login signing works.
    // A blocking C_WaitForSlotEvent, waiting on a thread of its own, wakes
    // up when it does.
    let waiter = {
        let p = p.clone();
        std::thread::spawn(move || p.wait_for_slot_event())
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiter.is_finished(), "the blocking wait returned early");
    f.handset.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !waiter.is_finished() {
        assert!(Instant::now() < deadline, "the token never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(waiter.join().unwrap().unwrap(), slot);
    assert_eq!(p.get_slots_with_token().unwrap(), vec![slot]);
    assert_eq!(p.get_slot_event().unwrap(), None);
    let session = p.open_ro_session(slot).unwrap();
    log_in_and_sign(&session, b"after");
}

/// A container whose PIN is typed on the phone: the token shows a
/// protected authentication path and `C_Login(CKU_USER, NULL, 0)` logs in
/// once the owner has typed the PIN there.
#[test]
fn protected_authentication_path_logs_in_with_a_null_pin() {
    if own_process("protected_authentication_path_logs_in_with_a_null_pin") {
        return;
    }
    let f = ModuleRig::paired_ssh_with(|handset| {
        handset.cli_ok(&["container", "pin-entry", "ssh", "handset"]);
        // The phone's PIN prompt: the owner types the right PIN.
        handset.set_serve_args(&[
            "--prompt-command",
            &format!("test \"$PHONECSP_OPERATION\" = pin && echo {PIN}"),
        ]);
    });
    let p = f.pkcs11_context();
    let slot = p.get_slots_with_token().unwrap()[0];
    let info = p.get_token_info(slot).unwrap();
    assert!(info.protected_authentication_path());
    let session = p.open_ro_session(slot).unwrap();
    session.login(UserType::User, None).unwrap();
    let key = private_key(&session);
    let sig = session
        .sign(
            &cryptoki::mechanism::Mechanism::Sha256RsaPkcs,
            key,
            b"typed on the phone",
        )
        .unwrap();
    assert_eq!(sig.len(), 256);
}

/// A program that keeps a slot ID (in its configuration, or in a
/// `slot-id=` URI) opens a session on it right after `C_Initialize`,
/// without listing the slots first; the ID is derived from the handset's
/// and the container's names, so it is the same in every process and
/// after restarts.
#[test]
fn a_remembered_slot_id_opens_right_after_c_initialize() {
    let Some((fx, r)) = raw_fixture("a_remembered_slot_id_opens_right_after_c_initialize") else {
        return;
    };
    use cryptoki_sys::*;
    check!(r, C_Initialize(null()) => CKR_OK);
    let mut n: CK_ULONG = 1;
    let mut slot: CK_SLOT_ID = 0;
    check!(r, C_GetSlotList(CK_TRUE, &mut slot, &mut n) => CKR_OK);
    // FNV-1a of "phone\0ssh", cut to 31 bits: the names', not the order's.
    assert_eq!(slot, 0x6530_7349);
    check!(r, C_Finalize(null()) => CKR_OK);
    // As a new process would: initialise and go straight to the slot.
    check!(r, C_Initialize(null()) => CKR_OK);
    let mut info = CK_SLOT_INFO::default();
    check!(r, C_GetSlotInfo(slot, &mut info) => CKR_OK);
    assert_ne!(info.flags & CKF_TOKEN_PRESENT, 0);
    let mut h: CK_SESSION_HANDLE = 0;
    check!(r, C_OpenSession(slot, CKF_SERIAL_SESSION, null(), None, &mut h) => CKR_OK);
    let mut pin = PIN.as_bytes().to_vec();
    check!(r, C_Login(h, CKU_USER, pin.as_mut_ptr(), pin.len() as CK_ULONG) => CKR_OK);
    check!(r, C_CloseSession(h) => CKR_OK);
    check!(r, C_GetSlotInfo(slot + 1, &mut info) => CKR_SLOT_ID_INVALID);
    check!(r, C_Finalize(null()) => CKR_OK);

    // A program that starts while the phone is away finds the slot too,
    // without a token: the daemon remembers the phone's containers.
    let mut fx = fx;
    fx.handset.kill();
    check!(r, C_Initialize(null()) => CKR_OK);
    wait_until("the token to go", Duration::from_secs(20), || {
        let mut n: CK_ULONG = 0;
        call!(r, C_GetSlotList(CK_TRUE, null(), &mut n)) == CKR_OK && n == 0
    });
    check!(r, C_Finalize(null()) => CKR_OK);
    check!(r, C_Initialize(null()) => CKR_OK);
    check!(r, C_GetSlotInfo(slot, &mut info) => CKR_OK);
    assert_eq!(info.flags & CKF_TOKEN_PRESENT, 0);
    check!(r, C_OpenSession(slot, CKF_SERIAL_SESSION, null(), None, &mut h)
        => CKR_TOKEN_NOT_PRESENT);
    check!(r, C_Finalize(null()) => CKR_OK);
}

/// A data object (`CKO_DATA`) written to the phone by pkcs11-tool is
/// listed, read back and deleted, through the daemon and the handset.
#[test]
fn pkcs11_tool_keeps_a_data_object_on_the_phone() {
    let f = fixture();
    let value = f.file("prefs.bin", b"settings kept on the phone");
    let what = [
        "data",
        "--label",
        "prefs",
        "--application-label",
        "phonecsp test",
    ];
    let objects = write_read_delete(&f, &value, &what);
    assert!(objects.contains("Data object"), "{objects}");
    assert!(objects.contains("phonecsp test"), "{objects}");
}
