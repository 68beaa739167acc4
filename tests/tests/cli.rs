//! The `phonecsp` command as a person meets it, end to end: a real
//! `dbus-daemon`, the emulated handset on a pty and `phonecspd`. Each test
//! is a friction of a day with the phone as one's card: what the command
//! says when something is wrong must name the fix, a failure must not look
//! like an empty answer, and the steps that cannot be undone are asked
//! about (at a terminal, run through util-linux `script`) or refused.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use phonecsp::blocking::Client;
use phonecsp::{Bus, ClientOptions};
use phonecsp_protocol::message::token_flags::LOGGED_IN;
use phonecsp_tests::{Daemon, Handset, PIN, TestBus, bin, phonecsp, shared_root, wait_until};

struct Fixture {
    _root: tempfile::TempDir,
    bus: TestBus,
    handset: Handset,
    _daemon: Daemon,
}

/// The handset with `ssh` (a key, id 01) and `disk`, both authorised for
/// the computer; the daemon; paired through the command unless `paired`
/// is false.
fn fixture(paired: bool) -> Fixture {
    let root = shared_root();
    let bus = TestBus::start();
    let mut handset = Handset::create(root.path());
    let code = handset.offer_pairing(&["ssh", "disk"]);
    handset.start();
    let daemon = Daemon::start(&bus, root.path(), &handset, "");
    let f = Fixture {
        _root: root,
        bus,
        handset,
        _daemon: daemon,
    };
    if paired {
        let o = f.cli(&["pair"], &[("PHONECSP_PAIRING_CODE", &code)]);
        assert!(o.status.success(), "pair: {}", stderr(&o));
        wait_until("the handset connected", Duration::from_secs(20), || {
            f.connected()
        });
    }
    f
}

impl Fixture {
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        phonecsp(&self.bus, None, args, env)
    }

    fn connected(&self) -> bool {
        let o = self.cli(&["--json", "handsets"], &[]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v[0]["connected"].as_bool() == Some(true)
    }

    fn objects(&self) -> String {
        let o = self.cli(&["objects", "ssh"], &[]);
        assert!(o.status.success(), "objects: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn client(&self) -> Client {
        Client::connect_with(
            &Bus::Address(self.bus.address.clone()),
            ClientOptions {
                expected_daemon_uid: Some(nix::unistd::getuid().as_raw()),
            },
        )
        .expect("client")
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails unless `o` exited with `code` and its stderr has every one of `said`.
fn fails(o: &Output, code: i32, said: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "exit code; stderr: {err}");
    for s in said {
        assert!(err.contains(s), "stderr lacks {s:?}: {err}");
    }
}

#[test]
fn a_daemon_that_is_not_running_is_named_with_how_to_start_it() {
    // A bus, and no daemon on it.
    let bus = TestBus::start();
    let start = format!("phonecspd --bus {} --config FILE", bus.address);
    let o = phonecsp(&bus, None, &["tokens"], &[]);
    fails(&o, 3, &["phonecspd is not running", &start]);
    assert!(!stderr(&o).contains("was not provided by any .service files"));
    // The check of the daemon's owner before a secret: NameHasNoOwner.
    let o = phonecsp(
        &bus,
        None,
        &["--handset", "phone", "pair"],
        &[("PHONECSP_PAIRING_CODE", "AAAA")],
    );
    fails(&o, 3, &["phonecspd is not running", &start]);
}

#[test]
fn a_mistyped_token_is_said_not_to_exist_with_the_tokens_there_are() {
    let f = fixture(true);
    for args in [
        &["objects", "shh"][..],
        &["sign", "shh", "--key", "01", "--in", "/dev/null"],
        &["--handset", "phone", "keygen", "shh"],
    ] {
        let o = f.cli(args, &[("PHONECSP_PIN", PIN)]);
        fails(
            &o,
            4,
            &[
                "phone has no token 'shh'",
                "you can use on phone: ssh, disk",
            ],
        );
        assert!(!stderr(&o).contains("handset refused"), "{}", stderr(&o));
    }
}

#[test]
fn a_wrong_pin_says_how_many_tries_are_left() {
    let f = fixture(true);
    let sign = [
        "sign",
        "ssh",
        "--key",
        "01",
        "--in",
        "/dev/null",
        "--out",
        "/dev/null",
    ];
    let o = f.cli(&sign, &[("PHONECSP_PIN", "000000")]);
    fails(&o, 4, &["wrong PIN for phone/ssh: 4 tries left"]);
    let o = f.cli(&sign, &[("PHONECSP_PIN", "000000")]);
    fails(&o, 4, &["3 tries left"]);
    // A wrong current PIN in a PIN change counts, and says so, the same.
    let o = f.cli(
        &["pin", "change", "ssh"],
        &[("PHONECSP_PIN", "000000"), ("PHONECSP_NEW_PIN", "24680")],
    );
    fails(&o, 4, &["2 tries left"]);
    let o = f.cli(&sign, &[("PHONECSP_PIN", PIN)]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_new_pin_of_the_wrong_length_is_told_the_lengths_allowed() {
    let f = fixture(true);
    let o = f.cli(
        &["pin", "change", "ssh"],
        &[("PHONECSP_PIN", PIN), ("PHONECSP_NEW_PIN", "12")],
    );
    fails(&o, 4, &["a PIN of phone/ssh has 4 to 64 bytes"]);
    assert!(!stderr(&o).contains("12"), "the PIN is never said");
}

#[test]
fn a_named_handset_that_is_not_there_or_not_usable_fails_with_the_reason() {
    let mut f = fixture(true);
    // Not configured: no empty table, a non-zero exit and the handsets there are.
    for args in [
        &["--handset", "pixel", "tokens"][..],
        &["--handset", "pixel", "objects", "ssh"],
    ] {
        let o = f.cli(args, &[]);
        fails(
            &o,
            4,
            &[
                "no handset 'pixel' is configured",
                "handsets you can use: phone",
            ],
        );
        assert!(
            o.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    // Away: what it had is shown as away, and the command fails, saying
    // what to do.
    f.handset.kill();
    wait_until("the handset away", Duration::from_secs(20), || {
        !f.connected()
    });
    let o = f.cli(&["--handset", "phone", "tokens"], &[]);
    fails(
        &o,
        4,
        &[
            "handset 'phone' is away",
            "phonecsp-handset serve",
            "phonecsp handsets",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("away"));
    let o = f.cli(&["objects", "ssh"], &[]);
    fails(&o, 4, &["is away", "phonecsp-handset serve"]);
}

#[test]
fn an_unpaired_handset_is_told_to_be_paired() {
    let f = fixture(false);
    let o = f.cli(&["--handset", "phone", "tokens"], &[]);
    fails(
        &o,
        4,
        &[
            "handset 'phone' is not paired",
            "phonecsp-handset pair",
            "sudo phonecsp --handset phone pair",
        ],
    );
    let o = f.cli(&["objects", "ssh"], &[]);
    fails(&o, 4, &["not paired", "phonecsp --handset phone pair"]);
}

#[test]
fn tokens_say_logged_in_only_to_the_caller_that_is() {
    let f = fixture(true);
    let client = f.client();
    client.login("phone", "ssh", PIN.as_bytes()).expect("login");
    let ssh = |c: &Client| {
        c.list_tokens()
            .expect("tokens")
            .into_iter()
            .find(|t| t.token == "ssh")
            .expect("ssh")
            .flags
    };
    // The caller logged in is told so...
    assert_ne!(ssh(&client) & LOGGED_IN, 0);
    // ...another caller is not, whether through the library or the command.
    assert_eq!(ssh(&f.client()) & LOGGED_IN, 0);
    let o = f.cli(&["--json", "tokens"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let names = v
        .as_array()
        .expect("a list")
        .iter()
        .find(|t| t["token"] == "ssh")
        .expect("ssh")["flag_names"]
        .to_string();
    assert!(names.contains("login-required"), "{names}");
    assert!(!names.contains("logged-in"), "{names}");
}

#[test]
fn irreversible_steps_are_refused_without_a_terminal_or_yes() {
    let f = fixture(true);
    let pin = [("PHONECSP_PIN", PIN)];
    let o = f.cli(&["cert", "self-sign", "ssh", "--id", "01"], &pin);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(f.objects().contains("certificate"));

    // stdin is not a terminal (the harness gives /dev/null).
    let o = f.cli(&["cert", "delete", "ssh", "--id", "01"], &pin);
    fails(&o, 2, &["refusing to delete the certificate 01", "--yes"]);
    assert!(f.objects().contains("certificate"), "nothing was deleted");
    let o = f.cli(&["unpair"], &[]);
    fails(&o, 2, &["refusing to unpair phone", "--yes"]);
    assert!(f.connected(), "still paired");

    let o = f.cli(&["cert", "delete", "ssh", "--id", "01", "--yes"], &pin);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!f.objects().contains("certificate"));
    // A certificate that is not there is said so, not asked about.
    let o = f.cli(&["cert", "delete", "ssh", "--id", "01"], &pin);
    fails(&o, 4, &["no certificate with id 01"]);
}

/// A program run on a terminal of its own (util-linux `script`), which
/// types each answer once its prompt has appeared; its exit code and
/// everything it showed.
fn on_terminal(
    program: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
    answers: &[(&str, &str)],
) -> (Option<i32>, String) {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
    let line: Vec<String> = std::iter::once(program.to_string_lossy().into_owned())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| quote(&a))
        .collect();
    let mut cmd = Command::new("script");
    cmd.args(["-q", "-f", "-e", "-c", &line.join(" "), "/dev/null"])
        .env_remove("PHONECSP_PIN")
        .env_remove("PHONECSP_NEW_PIN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = phonecsp_tests::Reaped(cmd.spawn().expect("script (util-linux)"));
    let shown = Arc::new(Mutex::new(String::new()));
    let mut out = child.0.stdout.take().expect("stdout");
    let reader = {
        let shown = shown.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut stdin = child.0.stdin.take().expect("stdin");
    let mut seen = 0;
    for (prompt, answer) in answers {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = shown.lock().unwrap().clone();
            if let Some(i) = s[seen..].find(prompt) {
                seen += i + prompt.len();
                break;
            }
            assert!(Instant::now() < deadline, "no prompt {prompt:?} in: {s}");
            std::thread::sleep(Duration::from_millis(20));
        }
        stdin
            .write_all(format!("{answer}\n").as_bytes())
            .expect("type");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.0.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running: {}",
            shown.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    let _ = reader.join();
    let s = shown.lock().unwrap().clone();
    (status.code(), s)
}

#[test]
fn at_a_terminal_the_name_is_typed_to_confirm() {
    let f = fixture(true);
    let bus = ["--bus", f.bus.address.as_str()];
    let uid = nix::unistd::getuid().to_string();
    let env = [("PHONECSP_DAEMON_USER", uid.as_str())];
    let unpair = [&bus[..], &["unpair"]].concat();
    let confirm = |answer| {
        let prompt = [("Type 'phone' to confirm", answer)];
        on_terminal(&bin("phonecsp"), &unpair, &env, &prompt)
    };
    // "y" is not the name: nothing happens.
    let (code, shown) = confirm("y");
    assert_eq!(code, Some(1), "{shown}");
    assert!(shown.contains("not confirmed"), "{shown}");
    assert!(f.connected(), "still paired");
    let (code, shown) = confirm("phone");
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("forgot the pinned key of phone"), "{shown}");
    let o = f.cli(&["--json", "handsets"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(v[0]["fingerprint"], "", "unpaired");
}

/// The phone's owner: a new container's PIN typed at a terminal is asked
/// twice, and two that differ make nothing; deleting a container asks for
/// its name, or --yes.
#[test]
fn on_the_phone_a_new_pin_is_typed_twice_and_a_deletion_confirmed() {
    let root = shared_root();
    let handset = Handset::create(root.path());
    let state = handset.state.to_str().expect("path");
    let create = [
        "--state",
        state,
        "container",
        "create",
        "web",
        "--kdf-memory",
        "64",
        "--kdf-time",
        "1",
    ];
    let hs = bin("phonecsp-handset");
    let (code, shown) = on_terminal(
        &hs,
        &create,
        &[],
        &[
            ("PIN for the new container: ", "1234567"),
            ("PIN for the new container again: ", "7654321"),
        ],
    );
    assert_ne!(code, Some(0), "{shown}");
    assert!(shown.contains("differ"), "{shown}");
    assert!(!handset.cli_ok(&["container", "list"]).contains("web"));
    let (code, shown) = on_terminal(
        &hs,
        &create,
        &[],
        &[
            ("PIN for the new container: ", "1234567"),
            ("PIN for the new container again: ", "1234567"),
        ],
    );
    assert_eq!(code, Some(0), "{shown}");
    assert!(handset.cli_ok(&["container", "list"]).contains("web"));
    // The PIN works: a key is made with it.
    let o = Command::new(&hs)
        .args(["--state", state, "key", "generate", "web", "--id", "07"])
        .env("PHONECSP_PIN", "1234567")
        .stdin(Stdio::null())
        .output()
        .expect("phonecsp-handset");
    assert!(o.status.success(), "{}", stderr(&o));

    // Deleting: refused without a terminal, asked at one, done with --yes.
    let o = handset.cli(&["container", "delete", "web"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    let delete = ["--state", state, "container", "delete", "web"];
    let (code, shown) = on_terminal(&hs, &delete, &[], &[("Type 'web' to confirm", "no")]);
    assert_ne!(code, Some(0), "{shown}");
    assert!(handset.cli_ok(&["container", "list"]).contains("web"));
    let (code, shown) = on_terminal(&hs, &delete, &[], &[("Type 'web' to confirm", "web")]);
    assert_eq!(code, Some(0), "{shown}");
    assert!(!handset.cli_ok(&["container", "list"]).contains("web"));
    handset.cli_ok(&["container", "delete", "disk", "--yes"]);
    assert!(!handset.cli_ok(&["container", "list"]).contains("disk"));
}

/// `phonecsp pair` with the eight digits `phonecsp-handset pair --short`
/// shows: the daemon runs the PAKE and pairs; a mistyped code is refused
/// with the reason, and the phone's offer survives it.
#[test]
fn pairing_with_the_eight_digit_code() {
    let root = shared_root();
    let bus = TestBus::start();
    let mut handset = Handset::create(root.path());
    let shown = handset.cli_ok(&["pair", "--short", "--authorise", "ssh"]);
    let short = shown.lines().next().unwrap().trim().to_owned();
    assert_eq!(short.len(), 9, "{shown}");
    assert!(shown.contains("or the long code"), "{shown}");
    handset.start();
    let _daemon = Daemon::start(&bus, root.path(), &handset, "");
    let wrong = if short.starts_with('9') {
        "1111-1111"
    } else {
        "9999-9999"
    };
    let o = phonecsp(&bus, None, &["pair"], &[("PHONECSP_PAIRING_CODE", wrong)]);
    assert!(!o.status.success(), "a wrong code paired");
    let o = phonecsp(&bus, None, &["pair"], &[("PHONECSP_PAIRING_CODE", &short)]);
    assert!(o.status.success(), "pair: {}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("paired with"));
    let log = handset.cli_ok(&["log", "--json"]);
    assert!(
        log.contains("wrong pairing code") && log.contains("\"pair\""),
        "{log}"
    );
}
