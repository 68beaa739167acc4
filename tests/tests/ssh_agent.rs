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
fn start_agent(dir: &Path, bus: &TestBus, name: &str, env: &[(&str, &str)]) -> Agent {
    let socket = dir.join(name);
    let child = Command::new("ssh-agent")
        .args(["-D", "-P", "/*", "-a"])
        .arg(&socket)
        .env("PHONECSP_BUS", &bus.address)
        .env("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string())
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
    Command::new("ssh-add")
        .args(args)
        .env("SSH_AUTH_SOCK", &agent.socket)
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("DISPLAY", ":0")
        .stdin(Stdio::null())
        .output()
        .expect("ssh-add")
}

fn disk_tries(client: &phonecsp::blocking::Client) -> u32 {
    client.get_token_info("phone", "disk").unwrap().retries_left
}

#[test]
fn reloading_the_agent_ten_times_spends_no_try_of_a_disk_container() {
    let root = shared_root();
    let dir = root.path();
    let bus = TestBus::start();
    let mut handset = Handset::create(dir);
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
    let options = ClientOptions {
        expected_daemon_uid: Some(nix::unistd::getuid().as_raw()),
    };
    let client =
        phonecsp::blocking::Client::connect_with(&Bus::Address(bus.address.clone()), options)
            .unwrap();
    client.pair("phone", &code).unwrap();
    wait_until("both tokens", Duration::from_secs(20), || {
        client.list_tokens().is_ok_and(|t| t.len() == 2)
    });
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
