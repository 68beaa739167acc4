//! Issue 15, items 3 and 4, end to end: keys made by real programs
//! (`openssl genpkey`, `ssh-keygen`; RSA, ECDSA P-256 and P-384, Ed25519)
//! moved onto the phone by `phonecsp import` and by `pkcs11-tool
//! --write-object --type privkey` (C_CreateObject), then used: an ssh login
//! to a real sshd through the PKCS#11 module (RSA and ECDSA), signatures
//! checked by `openssl` with the original key's public half (ECDSA,
//! EdDSA: OpenSSH 9.2 leaves Ed25519 PKCS#11 keys out). Bad files are refused with clear errors, and nothing is
//! stored half-way. Then `phonecsp attest` of a generated and an imported
//! key, checked by `phonecsp attest --verify`, and statements tampered
//! with, for another nonce, or from another phone, refused. And
//! `C_UnwrapKey` of a private key wrapped with AES-CBC-PAD, through the
//! `cryptoki` crate.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use phonecsp_tests::ModuleRig;
use phonecsp_tests::{
    PIN, cryptoki_rig, logged_in_session, ok, openssl_verifies, openssl_verifies_eddsa, phonecsp,
};

/// The shared rig, with this file's own helpers on it.
struct Fixture(ModuleRig);

impl std::ops::Deref for Fixture {
    type Target = ModuleRig;
    fn deref(&self) -> &ModuleRig {
        &self.0
    }
}

fn fixture() -> Fixture {
    Fixture(ModuleRig::paired_ssh())
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

impl Fixture {
    fn import(&self, file: &Path, id: &str) -> Output {
        phonecsp(
            &self.bus,
            None,
            &["import", "ssh", s(file), "--id", id, "--label", "imported"],
            &[("PHONECSP_PIN", PIN)],
        )
    }

    /// The token's public key `id` as DER, read by pkcs11-tool.
    fn public_der(&self, id: &str) -> Vec<u8> {
        let der = self.path(&format!("pub-{id}.der"));
        self.read_object("pubkey", id, &der);
        std::fs::read(der).expect("public key")
    }

    /// `phonecsp import` of `file` as `id` succeeds, warning that the key
    /// was once outside the phone.
    fn import_ok(&self, file: &Path, id: &str) {
        let o = self.import(file, id);
        assert!(
            o.status.success(),
            "import {}: {}",
            file.display(),
            stderr(&o)
        );
        assert!(
            stderr(&o).contains("an imported key was once outside the phone"),
            "{}",
            stderr(&o)
        );
    }

    /// `pkcs11-tool --write-object` of the private key file `der` as `id`
    /// (C_CreateObject of a token private key).
    fn write_private_key(&self, der: &Path, id: &str) {
        ok(self.pkcs11_tool(&[
            "--login",
            "--pin",
            PIN,
            "--write-object",
            s(der),
            "--type",
            "privkey",
            "--id",
            id,
            "--label",
            "written",
        ]));
    }

    /// The private keys' lines of `pkcs11-tool --list-objects`, logged in.
    fn private_keys(&self) -> String {
        ok(self.pkcs11_tool(&[
            "--login",
            "--pin",
            PIN,
            "--list-objects",
            "--type",
            "privkey",
        ]))
    }
}

/// `openssl` run to completion, its stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "openssl {args:?}: {}", stderr(&o));
    o.stdout
}

/// A fresh RSA key made by `openssl genpkey`: PKCS#8 PEM.
fn openssl_key(dir: &Path, name: &str, bits: u32) -> PathBuf {
    let path = dir.join(name);
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        &format!("rsa_keygen_bits:{bits}"),
        "-out",
        s(&path),
    ]);
    path
}

/// A fresh key made by `ssh-keygen -t type` with `more` arguments and the
/// passphrase `pass` (empty: none): the private key file's path.
fn ssh_keygen(dir: &Path, name: &str, key_type: &str, more: &[&str], pass: &str) -> PathBuf {
    let path = dir.join(name);
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", key_type, "-N", pass, "-C", "old@laptop"])
        .args(more)
        .arg("-f")
        .arg(&path)
        .status()
        .expect("ssh-keygen");
    assert!(made.success(), "ssh-keygen -t {key_type} {more:?}");
    path
}

/// The public key line ssh-keygen wrote beside `key`, and its base64 blob.
fn ssh_public(key: &Path) -> (String, String) {
    let line = std::fs::read_to_string(key.with_extension("pub"))
        .or_else(|_| std::fs::read_to_string(format!("{}.pub", key.display())))
        .expect("the .pub file");
    let blob = line.split_whitespace().nth(1).expect("a blob").to_owned();
    (line.trim().to_owned(), blob)
}

/// A fresh EC key made by `openssl genpkey` on `curve` (P-256, P-521):
/// PKCS#8 PEM.
fn openssl_ec_key(path: &Path, curve: &str) -> PathBuf {
    let on = format!("ec_paramgen_curve:{curve}");
    openssl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        &on,
        "-out",
        s(path),
    ]);
    path.to_owned()
}

/// The SubjectPublicKeyInfo DER of a private key file openssl reads.
fn spki_of(key: &Path) -> Vec<u8> {
    openssl(&["pkey", "-in", s(key), "-pubout", "-outform", "DER"])
}

/// The "Access:" line of the object with `id` in pkcs11-tool's listing.
fn access_of(listing: &str, id: &str) -> String {
    listing
        .split("Private Key Object")
        .find(|block| {
            block
                .lines()
                .any(|l| l.trim().strip_prefix("ID:").map(str::trim) == Some(id))
        })
        .and_then(|block| {
            block
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with("Access:"))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no Access line for {id} in\n{listing}"))
}

#[test]
fn openssl_and_ssh_keygen_keys_are_imported_and_an_imported_key_logs_in_to_sshd() {
    let f = fixture();
    let dir = f.root.path();
    // A PKCS#8 PEM key from openssl: the phone's public key is its own.
    let pem = openssl_key(dir, "openssl.pem", 2048);
    f.import_ok(&pem, "0a");
    assert_eq!(f.public_der("0a"), spki_of(&pem));

    // An OpenSSH key from ssh-keygen.
    let ssh_key = ssh_keygen(dir, "id_rsa", "rsa", &["-b", "3072"], "");
    f.import_ok(&ssh_key, "0b");
    let (ssh_pub, blob) = ssh_public(&ssh_key);
    let listed = f.ssh_keygen_d();
    assert!(listed.contains(&blob), "{blob} not in\n{listed}");

    // pkcs11-tool reads the imported keys as not local, the generated one
    // as local.
    let keys = f.private_keys();
    assert!(!access_of(&keys, "0a").contains("local"), "{keys}");
    assert!(
        !access_of(&keys, "0b").contains("never extractable"),
        "{keys}"
    );
    assert!(access_of(&keys, "01").contains("local"), "{keys}");

    // An ssh login with the key ssh-keygen made, now held by the phone:
    // sshd trusts only that key.
    f.ssh_logs_in(&ssh_pub, "logged-in-with-imported-key");
}

/// ECDSA P-256 and P-384 and Ed25519 keys from `ssh-keygen` move onto the
/// phone: ssh lists the ECDSA ones and logs in to a real sshd with the
/// P-256 one; the Ed25519 one (which OpenSSH 9.2 does not take through
/// PKCS#11) signs with CKM_EDDSA, checked by openssl against the public key
/// ssh-keygen wrote. All read as imported (CKA_LOCAL false).
#[test]
fn ssh_keygen_ec_keys_are_imported_and_used() {
    let f = fixture();
    let dir = f.root.path();
    let p256 = ssh_keygen(dir, "id_ecdsa", "ecdsa", &["-b", "256"], "");
    let p384 = ssh_keygen(dir, "id_ecdsa384", "ecdsa", &["-b", "384"], "");
    let ed = ssh_keygen(dir, "id_ed25519", "ed25519", &[], "");
    f.import_ok(&p256, "21");
    f.import_ok(&p384, "22");
    f.import_ok(&ed, "23");
    let listed = f.ssh_keygen_d();
    for key in [&p256, &p384] {
        let (_, blob) = ssh_public(key);
        assert!(listed.contains(&blob), "{} not in\n{listed}", key.display());
    }
    let keys = f.private_keys();
    for id in ["21", "22", "23"] {
        let access = access_of(&keys, id);
        assert!(!access.contains("local"), "{id}: {access}");
        assert!(!access.contains("never extractable"), "{id}: {access}");
    }
    assert!(
        keys.contains("EC_EDWARDS") || keys.contains("EDDSA"),
        "{keys}"
    );

    // Ed25519: the raw public key of ssh-keygen's line, as an SPKI.
    let (_, blob) = ssh_public(&ed);
    use base64::Engine as _;
    let wire = base64::engine::general_purpose::STANDARD
        .decode(&blob)
        .expect("base64");
    let raw = &wire[wire.len() - 32..];
    let spki = f.path("ed.spki");
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(raw);
    std::fs::write(&spki, &der).unwrap();
    let msg = f.path("msg");
    std::fs::write(&msg, b"signed by an imported Ed25519 key").unwrap();
    let sig = f.signature_of("23", "EDDSA", &msg, &[]);
    let pem = f.path("ed.pem");
    openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        s(&spki),
        "-out",
        s(&pem),
    ]);
    openssl_verifies_eddsa(&pem, &sig, &msg);

    // The phone's attestation says the EC key was imported.
    let o = attest(&f, "21", &f.path("21.att"));
    assert!(o.status.success(), "attest: {}", stderr(&o));
    assert!(stderr(&o).contains("IMPORTED"), "{}", stderr(&o));
    assert_eq!(verified(&f, &f.path("21.att"), NONCE)["local"], false);

    let (p256_pub, _) = ssh_public(&p256);
    f.ssh_logs_in(&p256_pub, "logged-in-with-imported-ecdsa-key");
}

/// An EC key `openssl genpkey` made (PKCS#8 PEM) is imported by `phonecsp
/// import` and one (PKCS#8 DER) written by `pkcs11-tool --write-object`
/// (C_CreateObject of CKK_EC); each signs with ECDSA-SHA256, checked by
/// openssl with the original key.
#[test]
fn openssl_ec_keys_are_imported_and_sign_ecdsa() {
    let f = fixture();
    let dir = f.root.path();
    let imported = openssl_ec_key(&dir.join("imported.pem"), "P-256");
    f.import_ok(&imported, "24");
    let written = openssl_ec_key(&dir.join("written.pem"), "P-256");
    let der = f.path("written.der");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        s(&written),
        "-outform",
        "DER",
        "-out",
        s(&der),
    ]);
    f.write_private_key(&der, "25");
    let msg = f.path("msg");
    std::fs::write(&msg, b"signed by an imported P-256 key").unwrap();
    for (id, key) in [("24", &imported), ("25", &written)] {
        assert_eq!(f.public_der(id), spki_of(key), "{id}");
        let sig = f.signature_of(id, "ECDSA-SHA256", &msg, &["--signature-format", "openssl"]);
        openssl_verifies("-sha256", &public_pem_of(&f, key), &sig, &msg);
    }
    let keys = f.private_keys();
    assert!(!access_of(&keys, "24").contains("local"), "{keys}");
    assert!(!access_of(&keys, "25").contains("local"), "{keys}");
}

#[test]
fn pkcs11_tool_writes_a_private_key_that_then_signs() {
    let f = fixture();
    let pem = openssl_key(f.root.path(), "k.pem", 2048);
    let der = f.path("k.der");
    openssl(&["pkey", "-in", s(&pem), "-outform", "DER", "-out", s(&der)]);
    f.write_private_key(&der, "0c");
    assert_eq!(f.public_der("0c"), spki_of(&pem));
    assert!(!access_of(&f.private_keys(), "0c").contains("local"));
    // It signs, and openssl verifies with the original key.
    let msg = f.path("msg");
    std::fs::write(&msg, b"signed by a written key").unwrap();
    let sig = f.signature_of("0c", "SHA256-RSA-PKCS", &msg, &[]);
    openssl_verifies("-sha256", &public_pem_of(&f, &pem), &sig, &msg);
}

/// The public half of the private key file `key`, as PEM.
fn public_pem_of(f: &Fixture, key: &Path) -> PathBuf {
    let name = key
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    let public = f.path(&format!("{name}.pub.pem"));
    openssl(&["pkey", "-in", s(key), "-pubout", "-out", s(&public)]);
    public
}

#[test]
fn bad_key_files_are_refused_clearly_and_nothing_is_stored() {
    let f = fixture();
    let dir = f.root.path();
    let before = f.private_keys();
    let pem = openssl_key(dir, "good.pem", 2048);
    // Encrypted PKCS#8, and a passphrase-protected OpenSSH key.
    let enc = dir.join("enc.pem");
    openssl(&[
        "pkcs8",
        "-topk8",
        "-v2",
        "aes-256-cbc",
        "-passout",
        "pass:secret",
        "-in",
        s(&pem),
        "-out",
        s(&enc),
    ]);
    let enc_ssh = ssh_keygen(dir, "enc_ssh", "rsa", &["-b", "2048"], "secret");
    let enc_ecdsa = ssh_keygen(dir, "enc_ecdsa", "ecdsa", &["-b", "256"], "secret");
    // EC keys on P-521, from ssh-keygen and openssl.
    let ssh_p521 = ssh_keygen(dir, "id_p521", "ecdsa", &["-b", "521"], "");
    let p521 = openssl_ec_key(&dir.join("p521.pem"), "P-521");
    // A P-256 PKCS#8 whose public key is not its scalar's.
    let mismatched = dir.join("mismatched.der");
    std::fs::write(&mismatched, mismatched_p256_pkcs8()).unwrap();
    // Malformed, truncated DER, an unsupported type and size.
    let junk = dir.join("junk");
    std::fs::write(&junk, "this is not a key\n").unwrap();
    let der = openssl(&["pkey", "-in", s(&pem), "-outform", "DER"]);
    let cut = dir.join("cut.der");
    std::fs::write(&cut, &der[..der.len() - 20]).unwrap();
    let small = openssl_key(dir, "small.pem", 1024);
    // X25519: a kind of key the phone does not hold, which the command
    // leaves to the phone to refuse.
    let x25519 = dir.join("x25519.pem");
    openssl(&["genpkey", "-algorithm", "X25519", "-out", s(&x25519)]);

    for (file, code, says) in [
        (&enc, 1, "is encrypted"),
        (&enc_ssh, 1, "is encrypted"),
        (&enc_ecdsa, 1, "is encrypted"),
        (&junk, 1, "not an OpenSSH or PKCS#8 private key"),
        (&cut, 1, "not an OpenSSH or PKCS#8 private key"),
        (&small, 4, "CKR_KEY_SIZE_RANGE"),
        (&x25519, 4, "CKR_KEY_TYPE_INCONSISTENT"),
        (&ssh_p521, 1, "a ecdsa-sha2-nistp521 key; the phone imports"),
        (&p521, 1, "a P-521 key; the phone imports"),
        (&mismatched, 1, "not a valid p256 key"),
    ] {
        exits_saying(&f.import(file, "0d"), file, code, says);
    }
    // An id in use: the generated key 01 stays as it was.
    let o = f.import(&pem, "01");
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("CKR_ATTRIBUTE_VALUE_INVALID"),
        "{}",
        stderr(&o)
    );
    assert_eq!(f.private_keys(), before);
}

/// PKCS#8 DER of a P-256 key with another key's public key in it.
fn mismatched_p256_pkcs8() -> Vec<u8> {
    use p256::pkcs8::EncodePrivateKey as _;
    let der = |k: p256::SecretKey| k.to_pkcs8_der().unwrap().as_bytes().to_vec();
    let mut a = der(p256::SecretKey::random(&mut rand::rngs::OsRng));
    let b = der(p256::SecretKey::random(&mut rand::rngs::OsRng));
    let n = a.len();
    a[n - 65..].copy_from_slice(&b[b.len() - 65..]);
    a
}

fn cli(f: &Fixture, args: &[&str]) -> Output {
    phonecsp(&f.bus, None, args, &[("PHONECSP_PIN", PIN)])
}

const NONCE: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// `attest ssh --key id --nonce NONCE --out out`.
fn attest(f: &Fixture, id: &str, out: &Path) -> Output {
    cli(
        f,
        &[
            "attest",
            "ssh",
            "--key",
            id,
            "--nonce",
            NONCE,
            "--out",
            s(out),
        ],
    )
}

/// `attest --verify` of `file` with `nonce`: its JSON on success.
fn verified(f: &Fixture, file: &Path, nonce: &str) -> serde_json::Value {
    let o = cli(
        f,
        &["--json", "attest", "--verify", s(file), "--nonce", nonce],
    );
    assert!(o.status.success(), "verify: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("json")
}

/// `attest --verify` of `file` fails (exit 1) saying `says`.
fn refused(f: &Fixture, file: &Path, nonce: &str, says: &str) {
    let o = cli(f, &["attest", "--verify", s(file), "--nonce", nonce]);
    exits_saying(&o, file, 1, says);
}

/// The command about `file` exited with `code`, its error saying `says`.
#[track_caller]
fn exits_saying(o: &Output, file: &Path, code: i32, says: &str) {
    let why = format!("{}: {}", file.display(), stderr(o));
    assert_eq!(o.status.code(), Some(code), "{why}");
    assert!(stderr(o).contains(says), "{why}");
}

#[test]
fn generated_and_imported_keys_are_attested_and_bad_statements_refused() {
    use phonecsp_protocol::attest::Statement;
    let f = fixture();
    let dir = f.root.path();
    let generated = dir.join("01.att");
    let o = attest(&f, "01", &generated);
    assert!(o.status.success(), "attest: {}", stderr(&o));
    assert!(
        stderr(&o).contains("generated on the phone"),
        "{}",
        stderr(&o)
    );
    // The daemon pinned the phone's attestation key at that first statement.
    let pin = dir.join("daemon-state/handsets/phone.attest");
    assert_eq!(std::fs::read(&pin).expect("pinned").len(), 32);
    let v = verified(&f, &generated, NONCE);
    assert_eq!(v["local"], true);
    assert_eq!(v["never_extractable"], true);
    assert_eq!(v["token"], "ssh");
    assert_eq!(v["id"], "01");
    assert_eq!(v["handset"], "phone");
    // Its public key is the one pkcs11-tool reads.
    let spki = f.public_der("01");
    assert_eq!(
        v["public_key"],
        spki.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );

    // An imported key: the statement says so.
    let pem = openssl_key(dir, "imported.pem", 2048);
    assert!(f.import(&pem, "0a").status.success());
    let imported = dir.join("0a.att");
    let o = attest(&f, "0a", &imported);
    assert!(o.status.success(), "attest: {}", stderr(&o));
    assert!(stderr(&o).contains("IMPORTED"), "{}", stderr(&o));
    let v = verified(&f, &imported, NONCE);
    assert_eq!(v["local"], false);
    assert_eq!(v["always_sensitive"], false);

    // Another nonce, and no nonce (said, not hidden).
    refused(&f, &generated, &NONCE.replace("1f", "20"), "another nonce");
    let o = cli(&f, &["attest", "--verify", s(&generated)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("freshness NOT checked"));

    // Any changed byte: every 5th, and the first and last.
    let bytes = std::fs::read(&generated).unwrap();
    let bad = dir.join("bad.att");
    let mut positions: Vec<usize> = (0..bytes.len()).step_by(5).collect();
    positions.push(bytes.len() - 1);
    for i in positions {
        let mut b = bytes.clone();
        b[i] ^= 0x04;
        std::fs::write(&bad, &b).unwrap();
        let o = cli(&f, &["attest", "--verify", s(&bad), "--nonce", NONCE]);
        assert_eq!(o.status.code(), Some(1), "byte {i}: {}", stderr(&o));
        assert!(stderr(&o).contains("bad.att: "), "byte {i}: {}", stderr(&o));
    }
    std::fs::write(&bad, &bytes[..bytes.len() - 1]).unwrap();
    refused(&f, &bad, NONCE, "not an attestation statement");

    // Another phone: its own identity and attestation key (not paired
    // here), and one that claims this phone's identity with a key of its own.
    let real = Statement::verify(&bytes).unwrap();
    let other_key = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    let mut other = real.clone();
    other.attestation_key = other_key.verifying_key().to_bytes();
    other.handset_key = [0x11; 32];
    std::fs::write(&bad, other.sign(&other_key).unwrap()).unwrap();
    refused(&f, &bad, NONCE, "a phone this computer has not paired with");
    other.handset_key = real.handset_key;
    std::fs::write(&bad, other.sign(&other_key).unwrap()).unwrap();
    refused(
        &f,
        &bad,
        NONCE,
        "another attestation key than the one pinned",
    );

    // A phone whose attestation key is not the pinned one: the daemon
    // refuses its statement rather than pass it on.
    std::fs::write(&pin, [0x22; 32]).unwrap();
    let o = cli(&f, &["attest", "ssh", "--key", "01", "--out", s(&bad)]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("CKR_DEVICE_ERROR"), "{}", stderr(&o));
}

#[test]
fn c_unwrapkey_puts_an_aes_wrapped_private_key_on_the_phone() {
    use cryptoki::error::{Error as CkError, RvError};
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    let Some((rig, p)) = cryptoki_rig("c_unwrapkey_puts_an_aes_wrapped_private_key_on_the_phone")
    else {
        return;
    };
    let f = Fixture(rig);
    let session = logged_in_session(&p);
    let aes = |unwrap: bool| {
        session
            .generate_key(
                &Mechanism::AesKeyGen,
                &[
                    Attribute::Token(false),
                    Attribute::ValueLen(32.into()),
                    Attribute::Encrypt(true),
                    Attribute::Decrypt(true),
                    Attribute::Unwrap(unwrap),
                ],
            )
            .unwrap()
    };
    let (wrapping, other) = (aes(true), aes(true));
    let pem = openssl_key(f.root.path(), "wrapped.pem", 2048);
    // The standard's wrapped private key is a PKCS#8 PrivateKeyInfo
    // (`openssl pkey -outform DER` writes PKCS#1).
    let pkcs8 = openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        s(&pem),
        "-outform",
        "DER",
    ]);
    let iv = [7u8; 16];
    let wrapped = session
        .encrypt(&Mechanism::AesCbcPad(iv), wrapping, &pkcs8)
        .unwrap();
    let back = session
        .decrypt(&Mechanism::AesCbcPad(iv), wrapping, &wrapped)
        .unwrap();
    assert_eq!(back, pkcs8, "AES-CBC-PAD round trip");
    let template = |id: u8| {
        vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Token(true),
            Attribute::Id(vec![id]),
            Attribute::Label(b"unwrapped".to_vec()),
        ]
    };
    // An unwrapped key reads CKA_LOCAL false, and its public key is the
    // original's.
    let on_the_phone_not_local = |key, id: &str, pem: &Path| {
        let attrs = session
            .get_attributes(key, &[cryptoki::object::AttributeType::Local])
            .unwrap();
        assert!(matches!(attrs[..], [Attribute::Local(false)]), "{attrs:?}");
        assert_eq!(f.public_der(id), spki_of(pem));
    };
    // Nothing was stored under `id`.
    let absent = |id: u8| {
        let found = session.find_objects(&[Attribute::Id(vec![id])]).unwrap();
        assert!(found.is_empty(), "{id:02x}: {found:?}");
    };
    let rv = |r: cryptoki::error::Result<cryptoki::object::ObjectHandle>| match r {
        Err(CkError::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    };
    // Another mechanism, another AES key, the phone's own RSA key.
    assert_eq!(
        rv(session.unwrap_key(&Mechanism::AesCbc(iv), wrapping, &wrapped, &template(0x0e))),
        RvError::MechanismInvalid
    );
    assert_eq!(
        rv(session.unwrap_key(&Mechanism::AesCbcPad(iv), other, &wrapped, &template(0x0e))),
        RvError::WrappedKeyInvalid
    );
    let phone_key = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Id(vec![1]),
        ])
        .unwrap()[0];
    assert_eq!(
        rv(session.unwrap_key(
            &Mechanism::AesCbcPad(iv),
            phone_key,
            &wrapped,
            &template(0x0e)
        )),
        RvError::UnwrappingKeyHandleInvalid
    );
    absent(0x0e);
    // The right key: on the phone, not local, and it signs.
    let key = session
        .unwrap_key(
            &Mechanism::AesCbcPad(iv),
            wrapping,
            &wrapped,
            &template(0x0e),
        )
        .unwrap();
    on_the_phone_not_local(key, "0e", &pem);
    let msg = b"signed by an unwrapped key";
    let sig = session.sign(&Mechanism::Sha256RsaPkcs, key, msg).unwrap();
    let (m, sg) = (f.path("u.msg"), f.path("u.sig"));
    std::fs::write(&m, msg).unwrap();
    std::fs::write(&sg, &sig).unwrap();
    openssl_verifies("-sha256", &public_pem_of(&f, &pem), &sg, &m);

    // RFC 5649 key wrap (CKM_AES_KEY_WRAP_PAD as SoftHSM2 and cryptoki
    // take it), under a session AES key whose value the test knows; a
    // changed byte fails its integrity check and stores nothing.
    let kek = [9u8; 32];
    let known = session
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(kek.to_vec()),
            Attribute::Unwrap(true),
        ])
        .unwrap();
    let kwp = aes_kw::KekAes256::from(kek)
        .wrap_with_padding_vec(&pkcs8)
        .unwrap();
    let mut changed = kwp.clone();
    changed[20] ^= 1;
    assert_eq!(
        rv(session.unwrap_key(&Mechanism::AesKeyWrapPad, known, &changed, &template(0x0f))),
        RvError::WrappedKeyInvalid
    );
    assert_eq!(
        rv(session.unwrap_key(
            &Mechanism::AesKeyWrapPad,
            known,
            &kwp[..20],
            &template(0x0f)
        )),
        RvError::WrappedKeyLenRange
    );
    absent(0x0f);
    session
        .unwrap_key(&Mechanism::AesKeyWrapPad, known, &kwp, &template(0x0f))
        .unwrap();
    assert_eq!(f.public_der("0f"), spki_of(&pem));

    // A P-256 key from openssl, wrapped the same way: a template naming
    // RSA is refused; one naming EC puts it on the phone, not local.
    let ec_pem = openssl_ec_key(&f.path("wrapped-ec.pem"), "P-256");
    let ec_pkcs8 = openssl(&[
        "pkcs8",
        "-topk8",
        "-nocrypt",
        "-in",
        s(&ec_pem),
        "-outform",
        "DER",
    ]);
    let ec_wrapped = session
        .encrypt(&Mechanism::AesCbcPad(iv), wrapping, &ec_pkcs8)
        .unwrap();
    assert_eq!(
        rv(session.unwrap_key(
            &Mechanism::AesCbcPad(iv),
            wrapping,
            &ec_wrapped,
            &template(0x10)
        )),
        RvError::TemplateInconsistent
    );
    let mut ec_template = template(0x10);
    ec_template[1] = Attribute::KeyType(KeyType::EC);
    let key = session
        .unwrap_key(
            &Mechanism::AesCbcPad(iv),
            wrapping,
            &ec_wrapped,
            &ec_template,
        )
        .unwrap();
    on_the_phone_not_local(key, "10", &ec_pem);

    // C_CreateObject of an Ed25519 private key by its value (RFC 8032's
    // 32 bytes): its public key is the seed's, and it reads not local; a
    // P-521 one is refused with the standard's value and not stored.
    let ed_key = |params: Vec<u8>, id: u8| {
        vec![
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
            Attribute::Token(true),
            Attribute::Id(vec![id]),
            Attribute::EcParams(params),
            Attribute::Value(vec![0x11; 32]),
        ]
    };
    let p521 = vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23];
    let mut nist = ed_key(p521, 0x12);
    nist[1] = Attribute::KeyType(KeyType::EC);
    assert_eq!(rv(session.create_object(&nist)), RvError::CurveNotSupported);
    absent(0x12);
    let ed = session
        .create_object(&ed_key(vec![0x06, 0x03, 0x2b, 0x65, 0x70], 0x11))
        .unwrap();
    let attrs = session
        .get_attributes(ed, &[cryptoki::object::AttributeType::Local])
        .unwrap();
    assert!(matches!(attrs[..], [Attribute::Local(false)]), "{attrs:?}");
    let public = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Id(vec![0x11]),
        ])
        .unwrap()[0];
    let point = session
        .get_attributes(public, &[cryptoki::object::AttributeType::EcPoint])
        .unwrap();
    let want = ed25519_dalek::SigningKey::from_bytes(&[0x11; 32])
        .verifying_key()
        .to_bytes();
    assert!(
        matches!(&point[..], [Attribute::EcPoint(p)] if p[2..] == want),
        "{point:?}"
    );
}
