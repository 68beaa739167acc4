//! The PUK end to end (issue 13, items 1 and 2): a real `dbus-daemon`, the
//! handset on a pty and `phonecspd`, with a container locked by five wrong
//! PINs and unblocked with its PUK through the real `pkcs11-tool`
//! (`--init-pin --login --login-type so`), the `phonecsp unblock` command and
//! the D-Bus `Token1.Unblock`; ten wrong PUKs lock the PUK for good.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use phonecsp_tests::{Fixture, PIN, PUK, fixture, phonecsp, pkcs11_module};

const NEW_PIN: &str = "654321";
const WRONG_PUK: &str = "99999999";
const TOKEN: &str = "/org/phonecsp/handset/phone/ssh";

fn pkcs11_tool(f: &Fixture, args: &[&str]) -> Output {
    Command::new("pkcs11-tool")
        .arg("--module")
        .arg(pkcs11_module())
        .args(args)
        .env("PHONECSP_BUS", &f.bus.address)
        .env("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string())
        .stdin(Stdio::null())
        .output()
        .expect("pkcs11-tool (install opensc)")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(o.status.success(), "failed ({:?}):\n{}", o.status, text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[track_caller]
fn refused(o: Output, rv: &str) -> String {
    let t = text(&o);
    assert!(!o.status.success(), "succeeded:\n{t}");
    assert!(t.contains(rv), "expected {rv}:\n{t}");
    t
}

/// The token's flags as `pkcs11-tool --list-token-slots` prints them.
fn token_flags(f: &Fixture) -> String {
    let out = ok(pkcs11_tool(f, &["--list-token-slots"]));
    out.lines()
        .find(|l| l.trim_start().starts_with("token flags"))
        .unwrap_or_else(|| panic!("no token flags in:\n{out}"))
        .to_owned()
}

/// Five wrong PINs, through pkcs11-tool: the last one locks.
fn lock_with_wrong_pins(f: &Fixture) {
    for i in 1..=5 {
        let o = pkcs11_tool(f, &["--login", "--pin", "000000", "--list-objects"]);
        let want = if i < 5 {
            "CKR_PIN_INCORRECT"
        } else {
            "CKR_PIN_LOCKED"
        };
        refused(o, want);
        if i == 4 {
            let flags = token_flags(f);
            assert!(flags.contains("final user PIN try"), "{flags}");
        }
    }
    let flags = token_flags(f);
    assert!(flags.contains("user PIN locked"), "{flags}");
    refused(
        pkcs11_tool(f, &["--login", "--pin", PIN, "--list-objects"]),
        "CKR_PIN_LOCKED",
    );
}

/// Key 01 signs a file with `pin`, and openssl checks the signature.
fn signs_with(f: &Fixture, pin: &str) {
    let dir = f.root.path();
    let msg = dir.join("msg.txt");
    let sig = dir.join("msg.sig");
    std::fs::write(&msg, b"signed after the unblock").unwrap();
    ok(pkcs11_tool(
        f,
        &[
            "--login",
            "--pin",
            pin,
            "--sign",
            "--mechanism",
            "SHA256-RSA-PKCS",
            "--id",
            "01",
            "-i",
            s(&msg),
            "-o",
            s(&sig),
        ],
    ));
    let pem = public_key(f, pin);
    let v = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pem)
        .arg("-signature")
        .arg(&sig)
        .arg(&msg)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", text(&v));
}

fn public_key(f: &Fixture, pin: &str) -> PathBuf {
    let der = f.root.path().join("pub.der");
    let pem = f.root.path().join("pub.pem");
    ok(pkcs11_tool(
        f,
        &[
            "--login",
            "--pin",
            pin,
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            "01",
            "-o",
            s(&der),
        ],
    ));
    let c = Command::new("openssl")
        .args(["pkey", "-pubin", "-inform", "DER", "-in"])
        .arg(&der)
        .arg("-out")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", text(&c));
    pem
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `pkcs11-tool --init-pin --login --login-type so --so-pin PUK --new-pin NEW`.
fn init_pin(f: &Fixture, puk: &str) -> Output {
    pkcs11_tool(
        f,
        &[
            "--init-pin",
            "--login",
            "--login-type",
            "so",
            "--so-pin",
            puk,
            "--new-pin",
            NEW_PIN,
        ],
    )
}

/// Issue 13: five wrong PINs lock the container; pkcs11-tool as the SO,
/// with the PUK, sets a new PIN; the key signs with it, and the old PIN
/// is wrong. A wrong PUK first spends one of the PUK's tries, which the
/// token flags show.
#[tokio::test(flavor = "multi_thread")]
async fn pkcs11_tool_unblocks_a_locked_token_with_the_puk() {
    let f = fixture("", &[]).await;
    lock_with_wrong_pins(&f);

    refused(init_pin(&f, WRONG_PUK), "CKR_PIN_INCORRECT");
    let flags = token_flags(&f);
    assert!(flags.contains("SO PIN count low"), "{flags}");
    ok(init_pin(&f, PUK));
    let flags = token_flags(&f);
    assert!(!flags.contains("user PIN locked"), "{flags}");
    assert!(!flags.contains("SO PIN count low"), "{flags}");

    signs_with(&f, NEW_PIN);
    refused(
        pkcs11_tool(&f, &["--login", "--pin", PIN, "--list-objects"]),
        "CKR_PIN_INCORRECT",
    );
    // The phone says it was the PUK.
    let list = f.handset.cli_ok(&["container", "list"]);
    assert!(list.contains("ssh"), "{list}");
}

/// Issue 13: ten wrong PUKs lock the PUK for good: the right one is
/// refused then, the flags say so, and `phonecsp unblock` says what
/// survives.
#[tokio::test(flavor = "multi_thread")]
async fn ten_wrong_puks_lock_the_puk_for_good() {
    let f = fixture("", &[]).await;
    lock_with_wrong_pins(&f);
    for i in 1..=10 {
        let want = if i < 10 {
            "CKR_PIN_INCORRECT"
        } else {
            "CKR_PIN_LOCKED"
        };
        refused(init_pin(&f, WRONG_PUK), want);
        if i == 9 {
            let flags = token_flags(&f);
            assert!(flags.contains("final SO PIN try"), "{flags}");
        }
    }
    let flags = token_flags(&f);
    assert!(flags.contains("SO PIN locked"), "{flags}");
    refused(init_pin(&f, PUK), "CKR_PIN_LOCKED");

    let o = phonecsp(
        &f.bus,
        None,
        &["unblock", "ssh"],
        &[("PHONECSP_PUK", PUK), ("PHONECSP_NEW_PIN", NEW_PIN)],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("locked for good") && err.contains("nothing in the container"),
        "{err}"
    );
    assert!(err.contains("other LUKS keyslots"), "{err}");
}

/// Issue 13: `phonecsp unblock`: a locked login says to unblock; a wrong
/// PUK says the tries left; the right one sets the new PIN, which logs
/// in; `phonecsp change-puk` changes the PUK.
#[tokio::test(flavor = "multi_thread")]
async fn phonecsp_unblock_sets_a_new_pin_and_says_the_tries_left() {
    let f = fixture("", &[]).await;
    let sign = |pin: &str| {
        let msg = f.root.path().join("cli.txt");
        std::fs::write(&msg, b"cli").unwrap();
        phonecsp(
            &f.bus,
            None,
            &[
                "sign",
                "ssh",
                "--key",
                "01",
                "--in",
                s(&msg),
                "--out",
                "/dev/null",
            ],
            &[("PHONECSP_PIN", pin)],
        )
    };
    for _ in 0..4 {
        assert!(!sign("000000").status.success());
    }
    let o = sign("000000");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("now locked") && err.contains("phonecsp unblock ssh"),
        "{err}"
    );

    let unblock = |puk: &str| {
        phonecsp(
            &f.bus,
            None,
            &["unblock", "ssh"],
            &[("PHONECSP_PUK", puk), ("PHONECSP_NEW_PIN", NEW_PIN)],
        )
    };
    let o = unblock(WRONG_PUK);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("wrong PUK") && err.contains("9 tries left"),
        "{err}"
    );
    let o = unblock(PUK);
    assert!(o.status.success(), "{}", text(&o));
    let o = sign(NEW_PIN);
    assert!(o.status.success(), "{}", text(&o));

    let o = phonecsp(
        &f.bus,
        None,
        &["change-puk", "ssh"],
        &[("PHONECSP_PUK", PUK), ("PHONECSP_NEW_PUK", "24682468")],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = unblock(PUK);
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong PUK"));
    assert!(unblock("24682468").status.success());
}

/// Issue 13: `Token1.Unblock` on the object API sets a new PIN on a
/// locked token, and `PinFlags`, `RetriesLeft` and `PukRetriesLeft` follow.
#[tokio::test(flavor = "multi_thread")]
async fn token1_unblock_over_d_bus() {
    let f = fixture("", &[]).await;
    let c = f.client.connection().clone();
    phonecsp_tests::wait_for_object(&c, TOKEN, true).await;
    let token = phonecsp::objects::Token1Proxy::builder(&c)
        .path(TOKEN)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .unwrap();
    for _ in 0..5 {
        assert!(token.login(b"000000").await.is_err());
    }
    let e = token.login(PIN.as_bytes()).await.unwrap_err();
    assert_eq!(e.rv(), phonecsp_protocol::CkRv::PIN_LOCKED);
    let settled = |want: &'static str| {
        let token = token.clone();
        async move {
            for _ in 0..100 {
                if token
                    .pin_flags()
                    .await
                    .is_ok_and(|f| f.iter().any(|x| x == want))
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!(
                "PinFlags never showed {want}: {:?}",
                token.pin_flags().await
            );
        }
    };
    settled("pin-locked").await;
    assert!(token.pin_flags().await.unwrap().contains(&"puk-set".into()));

    let e = token
        .unblock(WRONG_PUK.as_bytes(), NEW_PIN.as_bytes())
        .await
        .unwrap_err();
    assert_eq!(e.rv(), phonecsp_protocol::CkRv::PIN_INCORRECT);
    assert!(e.to_string().contains("9 tries left"), "{e}");
    settled("puk-count-low").await;
    assert_eq!(token.puk_retries_left().await.unwrap(), 9);
    // Locked before: login says so, and no PIN is tried.

    token
        .unblock(PUK.as_bytes(), NEW_PIN.as_bytes())
        .await
        .unwrap();
    token.login(NEW_PIN.as_bytes()).await.unwrap();
    assert!(token.logged_in().await.unwrap());
    // The tree may first show the phone as it was between the PUK's
    // login and the new PIN (every PUK try back, the PIN still locked):
    // the read that follows the unblock brings both up to date.
    let unblocked = async || {
        token.puk_retries_left().await.unwrap() == 10
            && !token
                .pin_flags()
                .await
                .unwrap()
                .contains(&"pin-locked".into())
    };
    for _ in 0..100 {
        if unblocked().await {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(token.puk_retries_left().await.unwrap(), 10);
    assert!(
        !token
            .pin_flags()
            .await
            .unwrap()
            .contains(&"pin-locked".into())
    );
}
