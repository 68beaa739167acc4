//! A damaged key in the handset's store, end to end (issue 18, item 1): a
//! real `dbus-daemon`, the handset on a pty with its log kept, and
//! `phonecspd`. One byte of one wrapped key is flipped in the handset's
//! state directory while the computer is using it.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use phonecsp::mechanism::ckm;
use phonecsp::{Client, MechanismParams};
use phonecsp_protocol::CkRv;
use phonecsp_tests::{Daemon, Handset, PIN, Reaped, TestBus, bin, client, shared_root};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// `phonecsp-handset serve --pty` for `handset`, its log (stderr) in
/// `log`; returns once the pty is there.
fn serve(handset: &Handset, log: &Path) -> Reaped {
    let mut child = Command::new(bin("phonecsp-handset"))
        .arg("--state")
        .arg(&handset.state)
        .args(["serve", "--pty", "--pty-link"])
        .arg(&handset.tty)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("handset log"))
        .stdin(Stdio::null())
        .spawn()
        .expect("phonecsp-handset serve");
    let stdout = child.stdout.take().expect("stdout");
    let served = Reaped(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the PTY line");
    assert!(line.starts_with("PTY /dev/"), "unexpected: {line}");
    served
}

/// Flips one bit in the ciphertext of the wrapped private key `id` of
/// `container`, in the handset's file.
fn damage_wrapped_key(handset: &Handset, container: &str, id: &[u8]) {
    let path = handset
        .state
        .join("containers")
        .join(format!("{container}.json"));
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
    let key = v["keys"]
        .as_array_mut()
        .expect("keys")
        .iter_mut()
        .find(|k| k["id"] == B64.encode(id))
        .expect("the key");
    let mut ct = B64
        .decode(key["wrapped"]["ct"].as_str().expect("ct"))
        .expect("base64");
    ct[100] ^= 0x04;
    key["wrapped"]["ct"] = B64.encode(ct).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&v).expect("json")).expect("write");
}

async fn sign(c: &Client, token: &str, id: &[u8]) -> phonecsp::Result<Vec<u8>> {
    let none = MechanismParams::default();
    c.sign(
        "phone",
        token,
        id,
        ckm::SHA256_RSA_PKCS,
        &none,
        b"a document",
    )
    .await
}

async fn retries(c: &Client, token: &str) -> u32 {
    c.get_token_info("phone", token)
        .await
        .expect("token info")
        .retries_left
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_key_is_refused_and_named_on_the_phone_while_the_rest_work() {
    let root = shared_root();
    let bus = TestBus::start();
    // ssh: key 01 "ssh key" (made by the harness) and 02; disk: key 03.
    let handset = Handset::create(root.path());
    handset.cli_ok(&["key", "generate", "ssh", "--id", "02", "--label", "second"]);
    handset.cli_ok(&["key", "generate", "disk", "--id", "03", "--label", "disk"]);
    let code = handset.offer_pairing(&["ssh", "disk"]);
    let log = root.path().join("handset.log");
    let _served = serve(&handset, &log);
    let _daemon = Daemon::start(&bus, root.path(), &handset, "");
    let c = client(&bus).await;
    phonecsp_tests::paired(&c, &code, "/org/phonecsp/handset/phone/ssh/key_02").await;

    c.login("phone", "ssh", PIN.as_bytes())
        .await
        .expect("login");
    sign(&c, "ssh", &[1]).await.expect("key 01 signs before");
    assert!(
        !handset.cli_ok(&["container", "list"]).contains("keys 01"),
        "damaged before the damage"
    );

    damage_wrapped_key(&handset, "ssh", &[1]);

    // The damaged key: the distinct answer, CKR_DEVICE_ERROR (protocol.md
    // section 7.1), and the handset's log names it.
    let e = sign(&c, "ssh", &[1])
        .await
        .expect_err("a damaged key signed");
    assert_eq!(e.rv(), CkRv::DEVICE_ERROR, "{e}");
    // The computer is told which key, and where to look.
    assert!(
        e.to_string()
            .contains("could not use key 01 of 'ssh': it may be damaged"),
        "{e}"
    );
    let none = MechanismParams::default();
    let e = c
        .decrypt("phone", "ssh", &[1], ckm::RSA_PKCS, &none, &[1; 256])
        .await
        .expect_err("a damaged key decrypted");
    assert_eq!(e.rv(), CkRv::DEVICE_ERROR, "{e}");
    let logged = std::fs::read_to_string(&log).expect("handset log");
    assert!(
        logged.contains("container 'ssh': key 01 ('ssh key') is damaged: "),
        "{logged}"
    );
    assert!(!logged.contains(PIN), "{logged}");

    // The container's other key, and the other container, work.
    sign(&c, "ssh", &[2]).await.expect("key 02 signs");
    c.login("phone", "disk", PIN.as_bytes())
        .await
        .expect("login disk");
    sign(&c, "disk", &[3]).await.expect("disk's key signs");

    // The right PIN is still right and spends no try, before and after.
    assert_eq!(retries(&c, "ssh").await, 5);
    c.logout("phone", "ssh").await.expect("logout");
    c.login("phone", "ssh", PIN.as_bytes())
        .await
        .expect("the right PIN, with a damaged key");
    assert_eq!(retries(&c, "ssh").await, 5);
    assert_eq!(
        sign(&c, "ssh", &[1]).await.expect_err("still damaged").rv(),
        CkRv::DEVICE_ERROR
    );
    sign(&c, "ssh", &[2]).await.expect("key 02 signs after");

    // The computer's listing still has both key pairs.
    let objects = c.list_objects("phone", "ssh").await.expect("objects");
    let mut ids: Vec<_> = objects.iter().map(|o| o.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, [vec![1], vec![1], vec![2], vec![2]]);

    // The owner sees which key, without a PIN.
    let list = handset.cli_ok(&["container", "list"]);
    let row = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(row("ssh").ends_with("keys 01"), "{list}");
    assert!(row("disk").ends_with(" -"), "{list}");
    assert!(
        list.contains("container 'ssh': key 01 ('ssh key') is damaged: "),
        "{list}"
    );
    let keys = handset.cli_ok(&["key", "list", "ssh"]);
    assert!(
        keys.lines()
            .any(|l| l.starts_with("01 ") && l.contains(" damaged ")),
        "{keys}"
    );
}
