//! The `phonecsp-handset` command as the owner uses it, including what it
//! does with a damaged store.

use std::path::Path;
use std::process::{Command, Output};

fn run(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_phonecsp-handset"))
        .arg("--state")
        .arg(state)
        .args(args)
        .env("PHONECSP_PIN", "123456")
        .output()
        .expect("run phonecsp-handset")
}

/// `container create NAME` with a KDF cheap enough for tests.
fn create_cheap(state: &Path, name: &str) {
    let kdf = ["--kdf-memory", "64", "--kdf-time", "1"];
    ok(state, &[&["container", "create", name][..], &kdf].concat());
}

fn ok(state: &Path, args: &[&str]) -> String {
    let o = run(state, args);
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn owner_commands_and_a_truncated_store_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    ok(&s, &["init", "--name", "cli phone"]);
    assert!(
        !run(&s, &["init"]).status.success(),
        "init twice must refuse"
    );
    create_cheap(&s, "ssh");
    ok(
        &s,
        &["key", "generate", "ssh", "--id", "0a0b", "--label", "k"],
    );
    let keys = ok(&s, &["key", "list", "ssh"]);
    assert!(keys.contains("0a0b") && keys.contains("2048"), "{keys}");

    // Import a PKCS#8 key made by OpenSSL.
    let pem = dir.path().join("k.pem");
    let g = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&pem)
        .output()
        .unwrap();
    assert!(g.status.success());
    ok(
        &s,
        &["key", "import", "ssh", pem.to_str().unwrap(), "--id", "02"],
    );
    // A truncated PEM is refused with a reason.
    let bad = dir.path().join("bad.pem");
    let text = std::fs::read_to_string(&pem).unwrap();
    std::fs::write(&bad, &text[..text.len() / 2]).unwrap();
    let o = run(&s, &["key", "import", "ssh", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.pem"));

    // Pairing codes are printed in groups a person can type.
    let code = ok(&s, &["pair", "--authorise", "ssh"]);
    assert_eq!(code.trim().len(), 26 + 6, "{code}");
    assert!(!run(&s, &["pair", "--authorise", "nope"]).status.success());
    assert!(!run(&s, &["pair", "--code", "not a code"]).status.success());
    ok(&s, &["hosts", "list"]);

    // A wrong PIN is refused and counted.
    let o = Command::new(env!("CARGO_BIN_EXE_phonecsp-handset"))
        .arg("--state")
        .arg(&s)
        .args(["key", "generate", "ssh"])
        .env("PHONECSP_PIN", "999999")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("CKR_PIN_INCORRECT"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(ok(&s, &["container", "list"]).contains(" 4"));

    // Truncate the container file: every command that reads it reports the
    // file and the damage, and the file is left exactly as it was.
    let file = s.join("containers").join("ssh.json");
    let full = std::fs::read(&file).unwrap();
    std::fs::write(&file, &full[..full.len() / 2]).unwrap();
    let damaged = std::fs::read(&file).unwrap();
    for args in [
        &["container", "list"][..],
        &["key", "list", "ssh"],
        &["key", "generate", "ssh"],
        &["container", "policy", "ssh", "confirm"],
    ] {
        let o = run(&s, args);
        assert!(!o.status.success(), "{args:?} succeeded on a damaged store");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("ssh.json") && err.contains("corrupt"),
            "{args:?}: {err}"
        );
        assert_eq!(
            std::fs::read(&file).unwrap(),
            damaged,
            "{args:?} rewrote the damaged file"
        );
    }
}

/// A damaged wrapped key is marked in `container list` and `key list`
/// without a PIN, by name; the container's PIN still works (and spends no
/// try), and so does adding a key.
#[test]
fn a_damaged_key_is_listed_as_damaged() {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    ok(&s, &["init"]);
    create_cheap(&s, "ssh");
    for (id, label) in [("01", "ssh key"), ("02", "other")] {
        ok(
            &s,
            &["key", "generate", "ssh", "--id", id, "--label", label],
        );
    }
    let list = ok(&s, &["container", "list"]);
    assert!(!list.contains("damaged") && list.contains(" -"), "{list}");

    let file = s.join("containers").join("ssh.json");
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let nonce = v["keys"][0]["wrapped"]["nonce"].as_str().unwrap();
    let mut bytes = B64.decode(nonce).unwrap();
    bytes[3] ^= 0x80;
    v["keys"][0]["wrapped"]["nonce"] = B64.encode(bytes).into();
    std::fs::write(&file, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

    let list = ok(&s, &["container", "list"]);
    assert!(list.contains("keys 01"), "{list}");
    assert!(
        list.contains("container 'ssh': key 01 ('ssh key') is damaged"),
        "{list}"
    );
    let keys = ok(&s, &["key", "list", "ssh"]);
    let line = |id: &str| {
        keys.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("01").contains("damaged"), "{keys}");
    assert!(line("02").contains(" ok "), "{keys}");

    ok(&s, &["key", "generate", "ssh", "--id", "03"]);
    let list = ok(&s, &["container", "list"]);
    assert!(
        list.contains("keys 01") && list.contains("     5 "),
        "{list}"
    );
}

fn run_env(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phonecsp-handset"));
    c.arg("--state").arg(state).args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.env_remove("PHONECSP_PUK")
        .env_remove("PHONECSP_NEW_PIN")
        .env_remove("PHONECSP_NEW_PUK");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdin(std::process::Stdio::null())
        .output()
        .expect("run phonecsp-handset")
}

/// Issue 13: `container create` shows a made-up PUK once; five wrong PINs
/// lock; `container unblock` with the PUK sets a new PIN; a wrong PUK
/// says the tries left, and a locked one says what survives.
#[test]
fn the_owner_unblocks_a_locked_container_with_its_puk() {
    let dir = tempfile::tempdir().unwrap();
    let s = dir.path().join("state");
    ok(&s, &["init"]);
    let cheap = ["--kdf-memory", "64", "--kdf-time", "1"];
    let made = run_env(
        &s,
        &[&["container", "create", "web"][..], &cheap].concat(),
        &[("PHONECSP_PIN", "123456")],
    );
    let out = String::from_utf8_lossy(&made.stdout);
    assert!(made.status.success(), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("PUK of 'web': "))
        .unwrap();
    let puk: String = line["PUK of 'web': ".len()..]
        .chars()
        .filter(|c| c.is_ascii_digit())
        .collect();
    assert_eq!(puk.len(), 12, "{out}");

    let gen_key = |pin: &str| {
        run_env(
            &s,
            &["key", "generate", "web", "--id", "01"],
            &[("PHONECSP_PIN", pin)],
        )
    };
    for _ in 0..5 {
        assert!(!gen_key("000000").status.success());
    }
    let locked = gen_key("123456");
    assert!(!locked.status.success());
    let list = ok(&s, &["container", "list"]);
    assert!(list.contains("locked") && list.contains("PUK"), "{list}");

    let unblock = |puk: &str| {
        run_env(
            &s,
            &["container", "unblock", "web"],
            &[("PHONECSP_PUK", puk), ("PHONECSP_NEW_PIN", "654321")],
        )
    };
    let wrong = unblock("99999999");
    let err = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success());
    assert!(
        err.contains("wrong PUK") && err.contains("9 tries left"),
        "{err}"
    );
    let o = unblock(&puk);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(gen_key("654321").status.success());

    for _ in 0..10 {
        assert!(!unblock("99999999").status.success());
    }
    let o = unblock(&puk);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("locked for good") && err.contains("nothing in this container"),
        "{err}"
    );
    assert!(err.contains("other LUKS keyslots"), "{err}");
}

/// Without `--state`, the store is where the XDG base directory rules put
/// a program's data (which the user unit relies on), and a relative
/// `XDG_DATA_HOME` is ignored, as those rules say.
#[test]
fn default_state_follows_xdg_data_home() {
    let dir = tempfile::tempdir().unwrap();
    let default = |env: &[(&str, &Path)], xdg_relative: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_phonecsp-handset"));
        c.args(["init", "--name", "xdg phone"])
            .env_remove("PHONECSP_HANDSET_DIR")
            .env_remove("XDG_DATA_HOME");
        for (k, v) in env {
            c.env(k, v);
        }
        if xdg_relative {
            c.env("XDG_DATA_HOME", "relative/data");
        }
        let o = c.current_dir(dir.path()).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    let home = dir.path().join("home");
    let data = dir.path().join("data");
    default(&[("HOME", &home), ("XDG_DATA_HOME", &data)], false);
    assert!(data.join("phonecsp-handset").is_dir());
    assert!(!home.join(".local/share/phonecsp-handset").exists());
    default(&[("HOME", &home)], true);
    assert!(home.join(".local/share/phonecsp-handset").is_dir());
    assert!(!dir.path().join("relative").exists());
}
