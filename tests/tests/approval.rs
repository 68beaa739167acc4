//! Waiting that speaks: on a token whose owner approves each use on the
//! phone, the daemon says a call is waiting (`ApprovalPending`) and the
//! command says so at once; the phone's prompt names the key and the
//! program that asks; a refusal and an unanswered prompt come back as
//! distinct errors that say which.

use phonecsp_tests::{Fixture, KEY_ID_HEX, PIN, fixture, phonecsp, pkcs11_module, wait_for_object};
use std::process::{Command, Output, Stdio};

const KEY: &str = "/org/phonecsp/handset/phone/ssh/key_01";

/// The handset again, `ssh` asking its owner to approve each use, with
/// `args` for `serve`.
async fn restart_confirming(f: &mut Fixture, args: &[&str]) {
    let c = f.client.connection().clone();
    f.handset.kill();
    wait_for_object(&c, KEY, false).await;
    f.handset.cli_ok(&["container", "policy", "ssh", "confirm"]);
    f.handset.set_serve_args(args);
    f.handset.start();
    wait_for_object(&c, KEY, true).await;
}

fn sign(f: &Fixture) -> Output {
    let data = f.root.path().join("data");
    std::fs::write(&data, b"approve me").unwrap();
    let (input, out) = (data.to_str().unwrap(), f.root.path().join("sig"));
    let args = [
        "sign",
        "ssh",
        "--key",
        KEY_ID_HEX,
        "--in",
        input,
        "--out",
        out.to_str().unwrap(),
    ];
    tokio::task::block_in_place(|| phonecsp(&f.bus, None, &args, &[("PHONECSP_PIN", PIN)]))
}

/// Key 01 signs through the PKCS#11 module, as the real `pkcs11-tool`.
fn sign_with_pkcs11_tool(f: &Fixture) -> Output {
    let data = f.root.path().join("data");
    std::fs::write(&data, b"approve me too").unwrap();
    let out = f.root.path().join("tool-sig");
    let sign = [
        "--sign",
        "--mechanism",
        "SHA256-RSA-PKCS",
        "--id",
        KEY_ID_HEX,
    ];
    let cmd = Command::new("pkcs11-tool")
        .arg("--module")
        .arg(pkcs11_module())
        .args(["--login", "--pin", PIN])
        .args(sign)
        .arg("-i")
        .arg(&data)
        .arg("-o")
        .arg(&out)
        .envs(f.bus.client_env())
        .stdin(Stdio::null())
        .output();
    tokio::task::block_in_place(|| cmd).expect("pkcs11-tool (install opensc)")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The command failed, and its error says each of `words`.
fn fails_saying(o: &Output, words: &[&str]) {
    assert!(!o.status.success());
    for w in words {
        assert!(stderr(o).contains(w), "{w}: {}", stderr(o));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_waiting_for_the_owner_is_said_and_refusal_and_silence_told_apart() {
    let mut f = fixture("", &[]).await;
    let asked = f.root.path().join("asked");
    let approve = format!(
        "echo \"$PHONECSP_PROMPT|$PHONECSP_KEY|$PHONECSP_PROGRAM\" > {}; sleep 1; exit 0",
        asked.display()
    );
    restart_confirming(&mut f, &["--prompt-command", &approve]).await;
    let o = sign(&f);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("confirm on your phone 'phone': sign with a key of 'ssh'"),
        "{}",
        stderr(&o)
    );
    // The prompt names the computer, the operation, the key and the
    // program that asks (its name as the computer's kernel has it, and
    // its pid); PHONECSP_KEY and PHONECSP_PROGRAM carry them for a
    // prompt of the owner's own.
    let prompt = std::fs::read_to_string(&asked).unwrap();
    let fields: Vec<&str> = prompt.trim_end().split('|').collect();
    assert_eq!(fields.len(), 3, "{prompt}");
    assert!(
        fields[0].starts_with(
            "test host asks to sign with the key 'ssh key' of container 'ssh' for phonecsp (pid "
        ),
        "{prompt}"
    );
    assert_eq!(fields[1], "ssh key", "{prompt}");
    assert!(fields[2].starts_with("phonecsp (pid "), "{prompt}");

    // Through the PKCS#11 module, the program is the one that loaded it.
    let o = sign_with_pkcs11_tool(&f);
    assert!(o.status.success(), "{}", stderr(&o));
    let prompt = std::fs::read_to_string(&asked).unwrap();
    assert!(
        prompt.contains("with the key 'ssh key' of container 'ssh' for pkcs11-tool (pid "),
        "{prompt}"
    );
    assert!(prompt.contains("|ssh key|pkcs11-tool (pid "), "{prompt}");
    assert!(
        f.daemon.log().contains("pkcs11-tool (pid "),
        "the daemon's log names the waiting program: {}",
        f.daemon.log()
    );

    // The owner says no: rejected, by the standard's value for it.
    restart_confirming(&mut f, &["--prompt-command", "exit 1"]).await;
    fails_saying(&sign(&f), &["CKR_FUNCTION_REJECTED", "refused"]);

    // Nobody answers: cancelled, and the command says so.
    let silent = ["--prompt-command", "sleep 30", "--approval-timeout", "1"];
    restart_confirming(&mut f, &silent).await;
    fails_saying(
        &sign(&f),
        &["CKR_FUNCTION_CANCELED", "nobody answered on the phone"],
    );
}
