//! The `phonecsp` command as a person meets it, end to end: a real
//! `dbus-daemon`, the emulated handset on a pty and `phonecspd`. Each test
//! is a friction of a day with the phone as one's card: what the command
//! says when something is wrong must name the fix, a failure must not look
//! like an empty answer.

use std::process::Output;
use std::time::Duration;

use phonecsp::blocking::Client;
use phonecsp::{Bus, ClientOptions};
use phonecsp_protocol::message::token_flags::LOGGED_IN;
use phonecsp_tests::{Daemon, Handset, PIN, TestBus, phonecsp, shared_root, wait_until};

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
