//! EC keys on the phone end to end (issue 15, items 1 and 2): a real
//! `dbus-daemon`, the handset on a pty and `phonecspd`, with OpenSC's
//! `pkcs11-tool` generating P-256, P-384 and Ed25519 keys on the phone and
//! signing with them, `openssl` checking the signatures independently of
//! the module, and `ssh-keygen`/`ssh` against a real `sshd`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use phonecsp::{Bus, ClientOptions};
use phonecsp_tests::{Daemon, Handset, PIN, Sshd, TestBus, is_root, ok, pkcs11_module, wait_until};

struct Fixture {
    root: tempfile::TempDir,
    bus: TestBus,
    _handset: Handset,
    _daemon: Daemon,
    module: PathBuf,
}

/// Handset with `ssh` authorised, daemon started and paired.
fn fixture() -> Fixture {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        root.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let bus = TestBus::start();
    let mut handset = Handset::create(root.path());
    let code = handset.offer_pairing(&["ssh"]);
    handset.start();
    let daemon = Daemon::start(&bus, root.path(), &handset, "");
    let client = phonecsp::blocking::Client::connect_with(
        &Bus::Address(bus.address.clone()),
        ClientOptions {
            expected_daemon_uid: Some(nix::unistd::getuid().as_raw()),
        },
    )
    .expect("client");
    client.pair("phone", &code).expect("pair");
    wait_until("the ssh token", Duration::from_secs(20), || {
        client.list_tokens().is_ok_and(|t| !t.is_empty())
    });
    Fixture {
        root,
        bus,
        _handset: handset,
        _daemon: daemon,
        module: pkcs11_module(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

impl Fixture {
    fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("PHONECSP_BUS", &self.bus.address)
            .env("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string())
            .stdin(Stdio::null());
        c
    }

    fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.cmd("pkcs11-tool")
            .arg("--module")
            .arg(&self.module)
            .args(args)
            .output()
            .expect("pkcs11-tool (install opensc)")
    }

    /// Generates a key pair on the phone with pkcs11-tool.
    fn keypairgen(&self, key_type: &str, id: &str) -> Output {
        self.pkcs11_tool(&[
            "--login",
            "--pin",
            PIN,
            "--keypairgen",
            "--key-type",
            key_type,
            "--id",
            id,
            "--label",
            &format!("ec {id}"),
            // A token object: it outlives pkcs11-tool's session.
            "--usage-sign",
        ])
    }

    /// The public key `id` as PEM, exported by pkcs11-tool and converted
    /// by openssl (which so also checks the SPKI).
    fn public_pem(&self, id: &str) -> PathBuf {
        eprintln!("exporting public key {id}");
        let der = self.path(&format!("pub-{id}.der"));
        ok(self.pkcs11_tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            id,
            "-o",
            s(&der),
        ]));
        let pem = self.path(&format!("pub-{id}.pem"));
        // pkcs11-tool 0.23 writes an EdDSA key as PEM, the others as DER.
        let form = if std::fs::read(&der).unwrap().starts_with(b"-----") {
            "PEM"
        } else {
            "DER"
        };
        ok(Command::new("openssl")
            .args([
                "pkey",
                "-pubin",
                "-inform",
                form,
                "-in",
                s(&der),
                "-out",
                s(&pem),
            ])
            .output()
            .expect("openssl"));
        pem
    }

    fn p11tool(&self, args: &[&str]) -> Output {
        self.cmd("p11tool")
            .arg("--provider")
            .arg(&self.module)
            .args(args)
            .env("GNUTLS_PIN", PIN)
            .output()
            .expect("p11tool (install gnutls-bin)")
    }

    /// The public key `id` as PEM, exported by GnuTLS's p11tool (OpenSC
    /// 0.23's pkcs11-tool cannot export a P-384 key from any module:
    /// "cannot create EVP_PKEY", SoftHSM2's too).
    fn p11tool_public_pem(&self, id: &str) -> PathBuf {
        let pem = self.path(&format!("p11-pub-{id}.pem"));
        let uri = format!("pkcs11:token=ssh;id=%{id};type=public");
        ok(self.p11tool(&["--login", "--export-pubkey", &uri, "--outfile", s(&pem)]));
        pem
    }

    /// Signs `msg` with key `id` through pkcs11-tool; the signature file.
    fn sign(&self, id: &str, mechanism: &str, msg: &Path, extra: &[&str]) -> PathBuf {
        let sig = self.path(&format!("sig-{id}-{mechanism}-{}", extra.len()));
        let mut args = vec![
            "--login",
            "--pin",
            PIN,
            "--sign",
            "--mechanism",
            mechanism,
            "--id",
            id,
            "-i",
            s(msg),
            "-o",
            s(&sig),
        ];
        args.extend(extra);
        ok(self.pkcs11_tool(&args));
        sig
    }
}

/// P-256 and P-384: generated on the phone by pkcs11-tool, listed with
/// their curve, an ECDSA-SHA256 signature (and a CKM_ECDSA one over a
/// digest pkcs11-tool made) checked by openssl with the exported key.
#[test]
fn pkcs11_tool_generates_nist_keys_and_openssl_verifies_ecdsa() {
    let f = fixture();
    let mechs = ok(f.pkcs11_tool(&["--list-mechanisms"]));
    for m in [
        "ECDSA-KEY-PAIR-GEN",
        "ECDSA-SHA256",
        "ECDH1-DERIVE",
        "EC-EDWARDS-KEY-PAIR-GEN",
    ] {
        assert!(mechs.contains(m), "{m} not in\n{mechs}");
    }
    let msg = f.path("msg");
    std::fs::write(&msg, b"a message signed by a key on the phone").unwrap();
    for (key_type, id, bits, raw_len) in [
        ("EC:prime256v1", "05", "256", 64),
        ("EC:secp384r1", "06", "384", 96),
    ] {
        let out = ok(f.keypairgen(key_type, id));
        assert!(out.contains("EC_POINT"), "{out}");
        let objects = ok(f.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]));
        assert!(
            objects.contains(&format!("EC_POINT {bits} bits")),
            "{objects}"
        );
        let pem = if bits == "256" {
            f.public_pem(id)
        } else {
            f.p11tool_public_pem(id)
        };
        // The raw r||s PKCS#11 returns, converted to DER by pkcs11-tool.
        let raw = f.sign(id, "ECDSA-SHA256", &msg, &[]);
        assert_eq!(std::fs::metadata(&raw).unwrap().len(), raw_len);
        let sig = f.sign(id, "ECDSA-SHA256", &msg, &["--signature-format", "openssl"]);
        let v = ok(Command::new("openssl")
            .args([
                "dgst",
                "-sha256",
                "-verify",
                s(&pem),
                "-signature",
                s(&sig),
                s(&msg),
            ])
            .output()
            .unwrap());
        assert!(v.contains("Verified OK"), "{key_type}: {v}");
        // And pkcs11-tool verifies through the module (C_Verify).
        ok(f.pkcs11_tool(&[
            "--verify",
            "--mechanism",
            "ECDSA-SHA256",
            "--id",
            id,
            "-i",
            s(&msg),
            "--signature-file",
            s(&raw),
        ]));
    }
    // GnuTLS signs with both keys and checks the signatures itself.
    let all = ok(f.p11tool(&["--list-all", "--login"]));
    for id in ["05", "06"] {
        let uri = all
            .lines()
            .filter_map(|l| l.trim().strip_prefix("URL: "))
            .find(|u| u.contains("type=private") && u.contains(&format!("id=%{id}")))
            .unwrap_or_else(|| panic!("no private key {id} in\n{all}"))
            .to_owned();
        let out = f.p11tool(&["--test-sign", &uri, "--login"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("Verifying against public key") && text.contains("ok"),
            "{text}"
        );
    }
    // A curve the phone does not make: refused, nothing stored.
    let out = f.keypairgen("EC:secp256k1", "07");
    assert!(!out.status.success());
    let objects = ok(f.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]));
    assert!(!objects.contains("ec 07"), "{objects}");
}

/// Ed25519: generated by pkcs11-tool, CKM_EDDSA over the message, checked
/// by openssl with the exported key.
#[test]
fn pkcs11_tool_generates_ed25519_and_openssl_verifies_eddsa() {
    let f = fixture();
    ok(f.keypairgen("EC:edwards25519", "08"));
    let pem = f.public_pem("08");
    let msg = f.path("msg");
    std::fs::write(&msg, b"an Ed25519 message").unwrap();
    let sig = f.sign("08", "EDDSA", &msg, &[]);
    assert_eq!(std::fs::metadata(&sig).unwrap().len(), 64);
    let v = Command::new("openssl")
        .args([
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            s(&pem),
            "-rawin",
            "-in",
            s(&msg),
            "-sigfile",
            s(&sig),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&v.stdout);
    assert!(
        text.contains("Signature Verified Successfully"),
        "{text}{}",
        String::from_utf8_lossy(&v.stderr)
    );
}

/// ssh: `ssh-keygen -D` lists the P-256 key as ecdsa-sha2-nistp256 and
/// ssh logs in to a real sshd with it. Also says what bookworm's OpenSSH
/// does with an Ed25519 key through PKCS#11.
#[test]
fn ssh_logs_in_with_a_p256_key_on_the_phone() {
    let f = fixture();
    ok(f.keypairgen("EC:prime256v1", "05"));
    ok(f.keypairgen("EC:edwards25519", "08"));
    let keys = ok(f
        .cmd("ssh-keygen")
        .arg("-D")
        .arg(&f.module)
        .output()
        .expect("ssh-keygen"));
    let line = keys
        .lines()
        .find(|l| l.starts_with("ecdsa-sha2-nistp256 "))
        .unwrap_or_else(|| panic!("no ecdsa-sha2-nistp256 key in\n{keys}"))
        .to_owned();
    // OpenSSH 9.2 (bookworm) reads only RSA and ECDSA keys from PKCS#11
    // tokens; Ed25519 support came in 9.4 (what this test found: see
    // docs/pkcs11-conformance.md).
    eprintln!("ssh-keygen -D listed:\n{keys}");
    if !is_root() {
        eprintln!("SKIPPED: sshd needs root");
        return;
    }
    let sshd = Sshd::start(&f.path("."), &line);
    let out = sshd.login(f.cmd("ssh"), &f.module, "echo logged-in-by-ec-key");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("logged-in-by-ec-key"),
        "ssh failed: {}\n{stdout}\n{}\n--- sshd log\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
}
