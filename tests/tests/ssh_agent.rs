//! The ssh agent as people use it: `ssh-add -s MODULE` offers its one PIN
//! to every token the module shows. A disk container with another PIN
//! must not lose a try to it, however often the agent is reloaded: the
//! module does not offer a token a disk volume was enrolled to (marked
//! by `phonecsp luks enroll`, or `phonecsp luks mark`), unless the person
//! names it. Real `ssh-agent` and `ssh-add`, the module, the daemon on a
//! private bus and the emulated handset.

use phonecsp::{Bus, ClientOptions};
use phonecsp_tests::{
    Daemon, Handset, PIN, TestBus, bin, phonecsp, pkcs11_module, shared_root, succeeded, wait_until,
};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const DISK_PIN: &str = "24681357";

struct Agent {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ssh-agent -D` on a socket in `dir`, allowed to load any module. The
/// module runs in the agent's helper, so the agent's environment is the
/// one that finds the daemon (and names tokens, with `env`).
/// A client of the daemon on `bus`, paired with `code`, once the handset
/// lists `tokens` tokens.
fn paired_client(bus: &TestBus, code: &str, tokens: usize) -> phonecsp::blocking::Client {
    let options = ClientOptions {
        expected_daemon_uid: Some(nix::unistd::getuid().as_raw()),
    };
    let client =
        phonecsp::blocking::Client::connect_with(&Bus::Address(bus.address.clone()), options)
            .unwrap();
    client.pair("phone", code).unwrap();
    wait_until("the tokens", Duration::from_secs(20), || {
        client.list_tokens().is_ok_and(|t| t.len() == tokens)
    });
    client
}

fn start_agent(dir: &Path, bus: &TestBus, name: &str, env: &[(&str, &str)]) -> Agent {
    let socket = dir.join(name);
    let child = Command::new("ssh-agent")
        .args(["-D", "-P", "/*", "-a"])
        .arg(&socket)
        .envs(bus.client_env())
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .spawn()
        .expect("ssh-agent");
    wait_until("the agent's socket", Duration::from_secs(10), || {
        socket.exists()
    });
    Agent { child, socket }
}

/// `ssh-add ARGS` against `agent`, the PIN answered by an askpass script.
fn ssh_add(dir: &Path, agent: &Agent, args: &[&str]) -> Output {
    let askpass = phonecsp_tests::script_at(&dir.join("askpass"), &format!("echo {PIN}"));
    ssh_add_asking(&askpass, agent, args)
}

/// `ssh-add ARGS` against `agent`, the PIN answered by `askpass`.
fn ssh_add_asking(askpass: &Path, agent: &Agent, args: &[&str]) -> Output {
    Command::new("ssh-add")
        .args(args)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .output()
        .expect("ssh-add")
}

/// A directory for the test's files, a private bus and a handset whose
/// state is in the directory: not yet paired, nor started.
fn unpaired() -> (tempfile::TempDir, TestBus, Handset) {
    let root = shared_root();
    let bus = TestBus::start();
    let handset = Handset::create(root.path());
    (root, bus, handset)
}

fn disk_tries(client: &phonecsp::blocking::Client) -> u32 {
    client.get_token_info("phone", "disk").unwrap().retries_left
}

#[test]
fn reloading_the_agent_ten_times_spends_no_try_of_a_disk_container() {
    let (root, bus, mut handset) = unpaired();
    let dir = root.path();
    // The disk container has a PIN of its own.
    let changed = Command::new(bin("phonecsp-handset"))
        .arg("--state")
        .arg(&handset.state)
        .args(["container", "change-pin", "disk"])
        .env("PHONECSP_PIN", PIN)
        .env("PHONECSP_NEW_PIN", DISK_PIN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    succeeded(&changed, "container change-pin disk");
    let code = handset.offer_pairing(&["ssh", "disk"]);
    handset.start();
    let _daemon = Daemon::start(&bus, dir, &handset, "");
    let client = paired_client(&bus, &code, 2);
    let module = pkcs11_module();
    let module = module.to_str().unwrap();
    let agent = start_agent(dir, &bus, "agent.sock", &[]);

    // Unmarked, the disk token is offered and the agent's PIN costs it a
    // try: what happened to people before.
    let before = disk_tries(&client);
    let _ = ssh_add(dir, &agent, &["-s", module]);
    let _ = ssh_add(dir, &agent, &["-e", module]);
    assert_eq!(
        disk_tries(&client),
        before - 1,
        "the unmarked disk token lost a try"
    );
    client
        .login("phone", "disk", DISK_PIN.as_bytes())
        .expect("the disk PIN resets its count");
    client.logout("phone", "disk").unwrap();
    let full = disk_tries(&client);

    // Marked as a disk token (as `phonecsp luks enroll` does), it is not.
    let marked = phonecsp(&bus, None, &["luks", "mark", "disk"], &[]);
    succeeded(&marked, "phonecsp luks mark disk");
    let listed = succeeded(&phonecsp(&bus, None, &["tokens"], &[]), "phonecsp tokens");
    assert!(listed.contains("disk"), "{listed}");
    for round in 0..10 {
        let added = ssh_add(dir, &agent, &["-s", module]);
        succeeded(&added, &format!("ssh-add -s, round {round}"));
        let keys = succeeded(&ssh_add(dir, &agent, &["-L"]), "ssh-add -L");
        assert_eq!(keys.lines().count(), 1, "only the ssh key: {keys}");
        succeeded(&ssh_add(dir, &agent, &["-e", module]), "ssh-add -e");
    }
    assert_eq!(disk_tries(&client), full, "no try spent in ten reloads");

    // Named by the person, the disk token is offered again.
    let named = start_agent(
        dir,
        &bus,
        "named.sock",
        &[("PHONECSP_PKCS11_TOKENS", "phone/disk")],
    );
    let _ = ssh_add(dir, &named, &["-s", module]);
    assert_eq!(
        disk_tries(&client),
        full - 1,
        "offered when named: the wrong PIN costs a try"
    );
}

/// Signs `data` with the agent's key (`ssh-keygen -Y sign`, which asks the
/// agent when given only the public key).
fn agent_sign(dir: &Path, agent: &Agent, public: &Path) -> Output {
    let data = dir.join("to-sign");
    std::fs::write(&data, b"the agent signs this").unwrap();
    let _ = std::fs::remove_file(dir.join("to-sign.sig"));
    Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "file", "-f"])
        .arg(public)
        .arg(&data)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen")
}

/// The daemon's view of the phone: connected or not.
fn wait_connected(client: &phonecsp::blocking::Client, want: bool) {
    wait_until(
        &format!("the phone connected={want}"),
        Duration::from_secs(20),
        || {
            client
                .list_handsets()
                .is_ok_and(|h| h.iter().all(|h| h.connected == want))
        },
    );
}

/// Issue 13, item 4: the phone steps out of range (its link is cut while
/// its handset runs on) and comes back within the container's grace
/// period: the agent loaded before signs again with no new PIN, through
/// the same module sessions. Past the grace period the agent's key is
/// refused, the daemon's log says why and what to do, and one `ssh-add -e`
/// and `ssh-add -s` bring it back. A restart of the handset ends the login
/// whatever the grace period: it was never written down.
#[test]
fn the_agent_signs_after_the_phone_was_away_for_less_than_its_grace_period() {
    let (root, bus, mut handset) = unpaired();
    let dir = root.path();
    let code = handset.offer_pairing(&["ssh"]);
    // The handset's own pty, and the line to it that the test can cut.
    let line = handset.tty.clone();
    handset.tty = dir.join("phone.pty");
    handset.start();
    let relay = phonecsp_tests::LinkRelay::start(&line, &handset.tty);
    let daemon = Daemon::start_relayed(&bus, dir, &line, "");
    let client = paired_client(&bus, &code, 1);
    let module = pkcs11_module();
    let module = module.to_str().unwrap();
    let agent = start_agent(dir, &bus, "agent.sock", &[]);
    // Every PIN the agent asks for is counted.
    let asked = dir.join("pins-asked");
    let askpass = phonecsp_tests::script_at(
        &dir.join("askpass"),
        &format!("echo asked >> {}; echo {PIN}", asked.display()),
    );
    let add = |args: &[&str]| ssh_add_asking(&askpass, &agent, args);
    let pins = || {
        std::fs::read_to_string(&asked)
            .unwrap_or_default()
            .lines()
            .count()
    };
    succeeded(&add(&["-s", module]), "ssh-add -s");
    let keys = succeeded(&add(&["-L"]), "ssh-add -L");
    let public = dir.join("agent-key.pub");
    std::fs::write(&public, keys.lines().next().expect("a key")).unwrap();
    succeeded(&agent_sign(dir, &agent, &public), "the agent signs");
    assert_eq!(pins(), 1);

    // Away for a moment (the default grace period is 300 s), and back.
    relay.cut();
    wait_connected(&client, false);
    std::thread::sleep(Duration::from_millis(1500));
    let relay = phonecsp_tests::LinkRelay::start(&line, &handset.tty);
    wait_connected(&client, true);
    succeeded(
        &agent_sign(dir, &agent, &public),
        "the agent signs after the phone came back within its grace period",
    );
    assert_eq!(pins(), 1, "no new PIN");

    // Away for longer than a grace period of 1 s, set on the phone.
    handset.cli_ok(&["container", "set-grace", "ssh", "1"]);
    relay.cut();
    wait_connected(&client, false);
    std::thread::sleep(Duration::from_millis(2500));
    let _relay = phonecsp_tests::LinkRelay::start(&line, &handset.tty);
    wait_connected(&client, true);
    let refused = agent_sign(dir, &agent, &public);
    assert!(!refused.status.success(), "signed past the grace period");
    assert!(
        daemon
            .log()
            .contains("ended the login to 'ssh' while it was away (for longer than the container's grace period, or it restarted): log in again (an ssh-agent: ssh-add -e and ssh-add -s)"),
        "{}",
        daemon.log()
    );
    // One reload brings it back, with one PIN.
    succeeded(&add(&["-e", module]), "ssh-add -e");
    succeeded(&add(&["-s", module]), "ssh-add -s again");
    succeeded(&agent_sign(dir, &agent, &public), "the agent signs again");
    assert_eq!(pins(), 2);

    // The handset restarted, however quickly: its logins were in its
    // memory only, and none is given back (docs/store.md).
    handset.cli_ok(&["container", "set-grace", "ssh", "300"]);
    _relay.cut();
    handset.kill();
    wait_connected(&client, false);
    handset.start();
    let _relay = phonecsp_tests::LinkRelay::start(&line, &handset.tty);
    wait_connected(&client, true);
    let refused = agent_sign(dir, &agent, &public);
    assert!(!refused.status.success(), "signed after a restart");
    let told = daemon
        .log()
        .matches("ended the login to 'ssh' while it was away")
        .count();
    assert_eq!(told, 2, "{}", daemon.log());
}
