//! Test harness for the end-to-end tier: starts a private `dbus-daemon`,
//! the handset (`phonecsp-handset serve --pty`) and the daemon
//! (`phonecspd`) as real processes, and tears them down on drop. The
//! binaries are the workspace's own, built by `cargo build --workspace --bins`.

use phonecsp::{Bus, Client, ClientOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const PIN: &str = "123456";
/// Every test container's PUK (`container create` reads $PHONECSP_PUK).
pub const PUK: &str = "12345678";
pub const KEY_ID: &[u8] = &[0x01];
pub const KEY_ID_HEX: &str = "01";

/// The directory of the binaries under test: the one next to the test
/// executable's `deps/` directory, or `PHONECSP_TEST_BIN_DIR` (to run the
/// same tests against another build, as the round-trip table's "before").
fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PHONECSP_TEST_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(|d| d.parent())
        .expect("target directory")
        .to_owned()
}

/// A workspace binary next to the test executable's `deps/` directory.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --workspace --bins` first",
        p.display()
    );
    p
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A temporary directory for one test's files that the daemon, the
/// handset and other users (tests call as them through `setpriv`) can enter.
pub fn shared_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    root
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The first line a child prints (its address, its pty), read from its
/// piped stdout.
fn first_line(child: &mut Child, what: &str) -> String {
    let mut line = String::new();
    let stdout = child
        .stdout
        .take()
        .unwrap_or_else(|| panic!("{what}: no stdout"));
    BufReader::new(stdout)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    line
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// A private bus anyone on this machine may connect to (so that tests can
/// call as other users through `setpriv`).
pub struct TestBus {
    _dir: tempfile::TempDir,
    child: Option<Child>,
    pub address: String,
}

impl TestBus {
    pub fn start() -> TestBus {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let socket = dir.path().join("bus");
        let conf = dir.path().join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("bus config");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (install the dbus package)");
        // It prints its address once it listens.
        first_line(&mut child, "the bus address");
        let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777));
        TestBus {
            _dir: dir,
            child: Some(child),
            address: format!("unix:path={}", socket.display()),
        }
    }

    /// The environment a client of the daemon on this bus (the PKCS#11
    /// module, the command) reads to find it: the bus, and the daemon's
    /// user, which is this test's.
    pub fn client_env(&self) -> [(&'static str, String); 2] {
        [
            ("PHONECSP_BUS", self.address.clone()),
            ("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string()),
        ]
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// The emulated handset: its own state directory and a pty whose slave is
/// reachable at a fixed symlink across restarts.
pub struct Handset {
    pub state: PathBuf,
    pub tty: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl Handset {
    /// Creates a handset with containers `ssh` (an RSA-2048 key, id 01)
    /// and `disk` (empty), both with PIN [`PIN`].
    pub fn create(root: &Path) -> Handset {
        let h = Handset {
            state: root.join("handset"),
            tty: root.join("handset.tty"),
            child: None,
            extra_args: Vec::new(),
        };
        h.cli_ok(&["init", "--name", "test phone"]);
        for c in ["ssh", "disk"] {
            h.cli_ok(&[
                "container",
                "create",
                c,
                "--kdf-memory",
                "64",
                "--kdf-time",
                "1",
            ]);
        }
        h.cli_ok(&[
            "key", "generate", "ssh", "--id", KEY_ID_HEX, "--label", "ssh key",
        ]);
        h
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("phonecsp-handset"))
            .arg("--state")
            .arg(&self.state)
            .args(args)
            .env("PHONECSP_PIN", PIN)
            .env("PHONECSP_PUK", PUK)
            .stdin(Stdio::null())
            .output()
            .expect("phonecsp-handset")
    }

    pub fn cli_ok(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            o.status.success(),
            "phonecsp-handset {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Offers a pairing code authorising `containers`; returns the code.
    pub fn offer_pairing(&self, containers: &[&str]) -> String {
        let mut args = vec!["pair"];
        for c in containers {
            args.push("--authorise");
            args.push(c);
        }
        self.cli_ok(&args).trim().to_owned()
    }

    pub fn set_serve_args(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
    }

    /// Starts `serve --pty` and waits until the pty is there.
    pub fn start(&mut self) {
        let mut child = Command::new(bin("phonecsp-handset"))
            .arg("--state")
            .arg(&self.state)
            .args(["serve", "--pty", "--pty-link"])
            .arg(&self.tty)
            .args(&self.extra_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("phonecsp-handset serve");
        let line = first_line(&mut child, "the PTY line");
        assert!(line.starts_with("PTY /dev/"), "unexpected: {line}");
        self.child = Some(child);
    }

    pub fn kill(&mut self) {
        kill(&mut self.child);
    }
}

impl Drop for Handset {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `phonecspd` on a test bus, configured for one handset named `phone`.
pub struct Daemon {
    child: Option<Child>,
    pub config: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// `extra` is appended to the configuration (e.g. `[[token]]` tables).
    pub fn start(bus: &TestBus, root: &Path, handset: &Handset, extra: &str) -> Daemon {
        Daemon::start_with(bus, root, handset, "", extra)
    }

    /// Like [`Daemon::start`], with `daemon_extra` added to the `[daemon]`
    /// table; it may set the timings the tests otherwise shorten.
    pub fn start_with(
        bus: &TestBus,
        root: &Path,
        handset: &Handset,
        daemon_extra: &str,
        extra: &str,
    ) -> Daemon {
        let mut timings = String::new();
        for (key, value) in [
            ("request_timeout_secs", 5),
            ("health_interval_secs", 1),
            ("max_backoff_secs", 1),
        ] {
            let overridden = daemon_extra
                .lines()
                .any(|l| l.split('=').next().is_some_and(|k| k.trim() == key));
            if !overridden {
                timings.push_str(&format!("{key} = {value}\n"));
            }
        }
        Daemon::start_on(bus, root, &handset.tty, &timings, daemon_extra, extra)
    }

    /// Like [`Daemon::start`], reaching the handset at `serial` (a relay
    /// in front of its pty, [`LinkRelay`]).
    pub fn start_relayed(bus: &TestBus, root: &Path, serial: &Path, extra: &str) -> Daemon {
        let timings = "request_timeout_secs = 5\nhealth_interval_secs = 1\nmax_backoff_secs = 1\n";
        Daemon::start_on(bus, root, serial, timings, "", extra)
    }

    fn start_on(
        bus: &TestBus,
        root: &Path,
        serial: &Path,
        timings: &str,
        daemon_extra: &str,
        extra: &str,
    ) -> Daemon {
        let config = root.join("phonecspd.toml");
        std::fs::write(
            &config,
            format!(
                "[daemon]\nstate_dir = \"{}\"\nhost_name = \"test host\"\n{timings}{daemon_extra}\n[access]\nusers = [\"root\", \"{}\"]\n\n[[handset]]\nname = \"phone\"\nserial = \"{}\"\n{extra}",
                root.join("daemon-state").display(),
                nix::unistd::getuid(),
                serial.display()
            ),
        )
        .expect("config");
        let log = root.join("phonecspd.log");
        let child = Command::new(bin("phonecspd"))
            .arg("--config")
            .arg(&config)
            .arg("--bus")
            .arg(&bus.address)
            .arg("-v")
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("phonecspd");
        let d = Daemon {
            child: Some(child),
            config,
            log,
        };
        let addr = bus.address.clone();
        wait_for("phonecspd on the bus", Duration::from_secs(20), || {
            name_has_owner(&addr)
        });
        d
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(c.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        c.wait().expect("wait")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- phonecspd log ---\n{}", self.log());
        }
        kill(&mut self.child);
    }
}

fn name_has_owner(address: &str) -> bool {
    // On a thread of its own: callers may be inside a runtime already.
    let address = address.to_owned();
    std::thread::spawn(move || name_has_owner_blocking(&address))
        .join()
        .unwrap_or(false)
}

fn name_has_owner_blocking(address: &str) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let Ok(conn) = zbus::connection::Builder::address(address).build().await else {
            return false;
        };
        let Ok(dbus) = zbus::fdo::DBusProxy::new(&conn).await else {
            return false;
        };
        let Ok(name) = zbus::names::BusName::try_from(phonecsp::BUS_NAME) else {
            return false;
        };
        dbus.name_has_owner(name).await.unwrap_or(false)
    })
}

/// Runs the `phonecsp` command against the test bus, optionally as
/// another uid (through `setpriv`, which needs root).
pub fn phonecsp(bus: &TestBus, as_uid: Option<u32>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = match as_uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .arg("--clear-groups")
                .arg(bin("phonecsp"));
            c
        }
        None => Command::new(bin("phonecsp")),
    };
    cmd.arg("--bus")
        .arg(&bus.address)
        .args(args)
        .env("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string())
        .env_remove("PHONECSP_PIN")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("phonecsp")
}

/// Writes an executable `sh` script at `path` (an askpass, a prompt).
pub fn script_at(path: &Path, body: &str) -> PathBuf {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.to_owned()
}

/// The output of a program that must have succeeded (else its stderr
/// fails the test, under `what`).
pub fn succeeded(o: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{what}: {}: {stderr}", o.status);
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn wait_until(what: &str, timeout: Duration, f: impl FnMut() -> bool) {
    wait_for(what, timeout, f)
}

/// The daemon on a private bus with the emulated handset, paired: the
/// fixture most end-to-end tests start from.
pub struct Fixture {
    pub root: tempfile::TempDir,
    pub bus: TestBus,
    pub handset: Handset,
    pub daemon: Daemon,
    pub client: Client,
}

pub async fn client(bus: &TestBus) -> Client {
    Client::connect_with(
        &Bus::Address(bus.address.clone()),
        ClientOptions {
            expected_daemon_uid: Some(nix::unistd::getuid().as_raw()),
        },
    )
    .await
    .expect("client")
}

pub async fn connected(c: &Client) -> bool {
    c.list_handsets()
        .await
        .map(|h| h.iter().all(|h| h.connected))
        .unwrap_or(false)
}

pub async fn wait_connected(c: &Client, want: bool) {
    for _ in 0..500 {
        if connected(c).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("handset never became connected={want}");
}

/// Pairs "phone" with `code`, then waits until it is connected and the
/// object tree shows `key` (the tree is read in the background: a test
/// that counts link requests starts after it).
pub async fn paired(client: &Client, code: &str, key: &str) {
    let fp = client.pair("phone", code).await.expect("pair");
    assert!(!fp.is_empty());
    wait_connected(client, true).await;
    wait_for_object(client.connection(), key, true).await;
}

/// The object tree's paths (`org.phonecsp.*` objects under the
/// ObjectManager at `/org/phonecsp`).
pub async fn tree_paths(c: &zbus::Connection) -> Vec<String> {
    let Ok(om) = zbus::fdo::ObjectManagerProxy::builder(c)
        .destination(phonecsp::BUS_NAME)
        .path("/org/phonecsp")
        .build()
        .await
    else {
        return Vec::new();
    };
    match om.get_managed_objects().await {
        Ok(objects) => objects.into_keys().map(|p| p.as_str().to_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Waits until the object tree has `path` (or has not, for `want` false).
/// The tree is read from the handset once per connection, in the
/// background: a test that counts link requests starts after it.
pub async fn wait_for_object(c: &zbus::Connection, path: &str, want: bool) {
    for _ in 0..1000 {
        if tree_paths(c).await.iter().any(|p| p == path) == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never became present={want}");
}

/// Handset with `ssh` authorised, daemon started and paired.
pub async fn fixture(extra_config: &str, serve_args: &[&str]) -> Fixture {
    fixture_with("", extra_config, serve_args).await
}

/// Like [`fixture`], with `daemon_extra` in the daemon's `[daemon]` table.
pub async fn fixture_with(daemon_extra: &str, extra_config: &str, serve_args: &[&str]) -> Fixture {
    let root = shared_root();
    let bus = TestBus::start();
    let mut handset = Handset::create(root.path());
    let code = handset.offer_pairing(&["ssh"]);
    handset.set_serve_args(serve_args);
    handset.start();
    let daemon = Daemon::start_with(&bus, root.path(), &handset, daemon_extra, extra_config);
    let client = client(&bus).await;
    // Before pairing the handset answers but no session is possible.
    let tokens = client.list_tokens().await.expect("tokens");
    assert!(tokens.is_empty());
    paired(&client, &code, "/org/phonecsp/handset/phone/ssh/key_01").await;
    Fixture {
        root,
        bus,
        handset,
        daemon,
        client,
    }
}

/// Just enough of the introspection format to compare an interface's
/// methods, signals and properties with their argument names, types and
/// directions.
pub mod introspect {
    /// The running service's introspection of `path`.
    pub async fn live(c: &zbus::Connection, path: &str) -> String {
        let iface = Some("org.freedesktop.DBus.Introspectable");
        let reply = c
            .call_method(Some(phonecsp::BUS_NAME), path, iface, "Introspect", &())
            .await
            .expect("Introspect");
        reply.body().deserialize().expect("an XML string")
    }

    /// An interface description of dbus/.
    pub fn file(name: &str) -> String {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../dbus/");
        std::fs::read_to_string(format!("{dir}{name}")).expect("the interface's XML")
    }

    fn attr(tag: &str, name: &str) -> Option<String> {
        let key = format!("{name}=\"");
        let start = tag.find(&key)? + key.len();
        let end = tag[start..].find('"')?;
        Some(tag[start..start + end].to_owned())
    }

    /// Lines like `method Sign(in s handset, ..., out ay signature)`, sorted.
    pub fn interface(xml: &str, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut inside = false;
        let mut current: Option<String> = None;
        let mut args: Vec<String> = Vec::new();
        let mut rest = xml;
        // Comments may hold anything; drop them first.
        let mut cleaned = String::new();
        while let Some(i) = rest.find("<!--") {
            cleaned.push_str(&rest[..i]);
            rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
        }
        cleaned.push_str(rest);
        let mut s = cleaned.as_str();
        while let Some(i) = s.find('<') {
            let Some(j) = s[i..].find('>') else { break };
            let tag = &s[i + 1..i + j];
            s = &s[i + j + 1..];
            let closing = tag.starts_with('/');
            let self_closing = tag.ends_with('/');
            let kind = tag
                .trim_start_matches('/')
                .split_whitespace()
                .next()
                .unwrap_or("");
            match (kind, closing) {
                ("interface", false) => inside = attr(tag, "name").as_deref() == Some(name),
                ("interface", true) => inside = false,
                ("method" | "signal", false) if inside => {
                    current = Some(format!("{kind} {}", attr(tag, "name").unwrap_or_default()));
                    args.clear();
                    if self_closing {
                        out.push(format!("{}()", current.take().unwrap_or_default()));
                    }
                }
                ("method" | "signal", true) if inside => {
                    if let Some(c) = current.take() {
                        out.push(format!("{c}({})", args.join(", ")));
                    }
                }
                ("arg", false) if inside && current.is_some() => {
                    let is_signal = current.as_deref().is_some_and(|c| c.starts_with("signal"));
                    let dir = attr(tag, "direction")
                        .unwrap_or_else(|| if is_signal { "out".into() } else { "in".into() });
                    args.push(format!(
                        "{dir} {} {}",
                        attr(tag, "type").unwrap_or_default(),
                        attr(tag, "name").unwrap_or_default()
                    ));
                }
                ("property", false) if inside => out.push(format!(
                    "property {} {} {}",
                    attr(tag, "name").unwrap_or_default(),
                    attr(tag, "type").unwrap_or_default(),
                    attr(tag, "access").unwrap_or_default()
                )),
                _ => {}
            }
        }
        out.sort();
        out
    }
}

/// The PKCS#11 module, `libphonecsp_pkcs11.so`: the newer of the two
/// builds of it beside the binaries. A build of the library
/// (`cargo build -p phonecsp-pkcs11 --lib`, what scripts/test does) puts
/// it there; `cargo test --workspace` never builds a cdylib, but does
/// build the same module as an example (pkcs11-shim/examples/module.rs)
/// into `examples/`. Whichever was built last is what the sources are now.
/// Under `PHONECSP_TEST_BIN_DIR`, that directory's library only.
pub fn pkcs11_module() -> PathBuf {
    let name = "libphonecsp_pkcs11.so";
    let dir = bin_dir();
    let mut builds = vec![dir.join(name)];
    if std::env::var_os("PHONECSP_TEST_BIN_DIR").is_none() {
        builds.push(dir.join("examples").join(name));
    }
    let modified = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    builds
        .into_iter()
        .filter_map(|p| Some((modified(&p)?, p)))
        .max()
        .map(|(_, p)| p)
        .unwrap_or_else(|| {
            panic!(
                "{} is not built: run `cargo build -p phonecsp-pkcs11 --lib` first",
                dir.join(name).display()
            )
        })
}

/// The line between the computer and the handset, as a test can cut it:
/// a pty of its own at `link` (the path the daemon opens), relaying bytes
/// to and from the handset's pty. Cut, the computer's end hangs up and
/// the handset hears nothing more, as when a phone steps out of Bluetooth
/// range; the handset's process runs on. Started again, the line is back.
pub struct LinkRelay {
    link: PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn raw_tty<Fd: std::os::fd::AsFd>(fd: Fd) {
    use nix::sys::termios;
    let mut t = termios::tcgetattr(&fd).expect("tcgetattr");
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(&fd, termios::SetArg::TCSANOW, &t).expect("tcsetattr");
}

/// Copies what one end has to the other; `false` once either end is gone.
fn pass(from: &std::fs::File, to: &std::fs::File) -> bool {
    use std::io::{Read, Write};
    let mut buf = [0u8; 4096];
    match (&mut &*from).read(&mut buf) {
        Ok(0) => false,
        Ok(n) => (&mut &*to).write_all(&buf[..n]).is_ok(),
        // No computer has the line open yet (a pty master reads EIO).
        Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => {
            std::thread::sleep(Duration::from_millis(20));
            true
        }
        Err(_) => false,
    }
}

impl LinkRelay {
    /// A new line at `link` to the handset's pty at `target`.
    pub fn start(link: &Path, target: &Path) -> LinkRelay {
        use std::sync::atomic::Ordering;
        let pair = nix::pty::openpty(None, None).expect("openpty");
        raw_tty(&pair.master);
        raw_tty(&pair.slave);
        let slave_path = nix::unistd::ttyname(&pair.slave).expect("ttyname");
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&slave_path, link).expect("the link's symlink");
        let handset = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(target)
            .expect("the handset's pty");
        raw_tty(&handset);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
                use std::os::fd::AsFd;
                let master = std::fs::File::from(pair.master);
                // Held so that the master does not read EIO between two
                // opens by the computer; closed with the line.
                let _slave = pair.slave;
                while !stop.load(Ordering::Relaxed) {
                    let mut fds = [
                        PollFd::new(master.as_fd(), PollFlags::POLLIN),
                        PollFd::new(handset.as_fd(), PollFlags::POLLIN),
                    ];
                    match poll(&mut fds, PollTimeout::from(50u16)) {
                        Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    let ready = |f: &PollFd| {
                        f.revents()
                            .is_some_and(|r| r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP))
                    };
                    let (computer, phone) = (ready(&fds[0]), ready(&fds[1]));
                    if computer && !pass(&master, &handset) {
                        return;
                    }
                    if phone && !pass(&handset, &master) {
                        return;
                    }
                }
            }
        });
        LinkRelay {
            link: link.to_owned(),
            stop,
            thread: Some(thread),
        }
    }

    /// Cuts the line: the pty the computer opened is closed and gone.
    pub fn cut(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.link);
    }
}

impl Drop for LinkRelay {
    fn drop(&mut self) {
        self.end();
    }
}

/// A child process that is killed and reaped when the guard goes, so a
/// test that fails half-way leaves nothing running (scripts/test ends by
/// checking that with scripts/leak-check).
pub struct Reaped(pub Child);

impl Reaped {
    /// Starts a local server (sshd, `openssl s_server`) with its stderr in
    /// `log`, and waits until it accepts connections on 127.0.0.1:`port`.
    pub fn listening(what: &str, cmd: &mut Command, log: &Path, port: u16) -> Reaped {
        let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("{what} log: {e}"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let server = Reaped(child);
        wait_until(
            &format!("{what} listening"),
            Duration::from_secs(10),
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
        );
        server
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The standard output of a command that must have succeeded; its output
/// and error in the panic if not.
#[track_caller]
pub fn ok(o: std::process::Output) -> String {
    assert!(
        o.status.success(),
        "failed ({:?}):\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A real sshd on a free port of 127.0.0.1, trusting `authorized` (lines
/// of `authorized_keys`), its files and log in `dir`. Needs root.
pub struct Sshd {
    _sshd: Reaped,
    pub port: u16,
    dir: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path, authorized: &str) -> Sshd {
        let s = |p: &Path| p.to_str().expect("UTF-8 path").to_owned();
        let sshd_bin = ["/usr/sbin/sshd", "/sbin/sshd"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("sshd (install openssh-server)");
        std::fs::create_dir_all("/run/sshd").expect("/run/sshd");
        let host_key = dir.join("host_key");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f", &s(&host_key)])
            .status()
            .expect("ssh-keygen");
        assert!(made.success(), "ssh-keygen for the host key");
        let keys = dir.join("authorized_keys");
        std::fs::write(&keys, format!("{authorized}\n")).expect("authorized_keys");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\nAuthorizedKeysFile {}\n\
                 StrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\n",
                s(&host_key),
                s(&dir.join("sshd.pid")),
                s(&keys)
            ),
        )
        .expect("sshd_config");
        let sshd = Reaped::listening(
            "sshd",
            Command::new(sshd_bin).args(["-D", "-e", "-f", &s(&config)]),
            &dir.join("sshd.log"),
            port,
        );
        Sshd {
            _sshd: sshd,
            port,
            dir: dir.to_owned(),
        }
    }

    /// `ssh -I module` as root to this sshd, running `command`; the PIN
    /// from `SSH_ASKPASS`, as ssh asks without a terminal. `cmd` is the
    /// caller's `ssh` command with its environment (bus, module options).
    pub fn login(&self, mut cmd: Command, module: &Path, command: &str) -> std::process::Output {
        let askpass = script_at(&self.dir.join("askpass"), &format!("echo {PIN}"));
        cmd.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o"])
            .arg(format!(
                "UserKnownHostsFile={}",
                self.dir.join("known_hosts").display()
            ))
            .args([
                "-o",
                "PasswordAuthentication=no",
                "-o",
                "KbdInteractiveAuthentication=no",
            ])
            .arg("-I")
            .arg(module)
            .args(["-p", &self.port.to_string(), "root@127.0.0.1", command])
            .env("SSH_ASKPASS", &askpass)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0")
            .output()
            .expect("ssh")
    }

    /// The log sshd wrote, for a failure's message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

/// `openssl pkeyutl` options for RSA-OAEP with SHA-256 and MGF1 with
/// SHA-256, the disk wrapping's and the PKCS#11 tests' OAEP.
pub const OPENSSL_OAEP_SHA256: [&str; 6] = [
    "-pkeyopt",
    "rsa_padding_mode:oaep",
    "-pkeyopt",
    "rsa_oaep_md:sha256",
    "-pkeyopt",
    "rsa_mgf1_md:sha256",
];

/// Set in the process [`own_process`] starts.
const OWN_PROCESS: &str = "PHONECSP_TEST_OWN_PROCESS";

/// Tests that load the module into this process share its
/// `C_Initialize` state and the environment it reads, which belong to the
/// process. Plain `cargo test` runs the tests of a file as threads of one
/// process, so such a test runs itself again, alone, in a child process of
/// its test binary: `true` means that has been done (and passed), and the
/// caller returns; `false` means this is the process to run the test in.
/// nextest already gives each test a process of its own.
pub fn own_process(test: &str) -> bool {
    let isolated = std::env::var_os(OWN_PROCESS).is_some()
        || std::env::var("NEXTEST_EXECUTION_MODE").is_ok_and(|m| m == "process-per-test");
    if isolated {
        return false;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = Command::new(exe)
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(OWN_PROCESS, "1")
        .stdin(Stdio::null())
        .output()
        .expect("run the test in a process of its own");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{test} in its own process: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// The emulated handset with its `ssh` container authorised, the daemon
/// on a private bus, paired, the token listed; and the PKCS#11 module the
/// real programs are pointed at.
pub struct ModuleRig {
    pub root: tempfile::TempDir,
    pub bus: TestBus,
    pub handset: Handset,
    pub daemon: Daemon,
    pub module: PathBuf,
}

impl ModuleRig {
    pub fn paired_ssh() -> ModuleRig {
        ModuleRig::paired_ssh_with(|_| {})
    }

    /// [`ModuleRig::paired_ssh`], with the handset prepared by `prepare`
    /// before it pairs and starts.
    pub fn paired_ssh_with(prepare: impl FnOnce(&mut Handset)) -> ModuleRig {
        let root = shared_root();
        let bus = TestBus::start();
        let mut handset = Handset::create(root.path());
        prepare(&mut handset);
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
        ModuleRig {
            root,
            bus,
            handset,
            daemon,
            module: pkcs11_module(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// A file `name` in the rig's directory holding `contents`.
    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write a test file");
        path
    }

    /// The environment the module reads to find this rig's daemon.
    pub fn module_env(&self) -> [(&'static str, String); 2] {
        self.bus.client_env()
    }

    /// Sets [`ModuleRig::module_env`] in this process, for a module loaded
    /// here. Only in a test that [`own_process`] runs alone in its process.
    pub fn set_module_env(&self) {
        for (k, v) in self.module_env() {
            // SAFETY: set before the module starts any thread, in a test
            // process of its own (see `own_process`).
            unsafe { std::env::set_var(k, v) };
        }
    }

    /// The module loaded into this process through the `cryptoki` crate
    /// (a real consumer's bindings), `C_Initialize`d. Only in a test that
    /// [`own_process`] runs alone in its process.
    pub fn pkcs11_context(&self) -> cryptoki::context::Pkcs11 {
        use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
        self.set_module_env();
        let p = Pkcs11::new(&self.module).expect("load the module");
        p.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
            .expect("C_Initialize");
        p
    }

    /// `program` pointed at this rig's bus and daemon.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.module_env()).stdin(Stdio::null());
        c
    }

    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.cmd("pkcs11-tool")
            .arg("--module")
            .arg(&self.module)
            .args(args)
            .output()
            .expect("pkcs11-tool (install opensc)")
    }

    /// pkcs11-tool logged in with the PIN, then `args`.
    pub fn pkcs11_tool_login(&self, args: &[&str]) -> Output {
        self.pkcs11_tool(&[&["--login", "--pin", PIN], args].concat())
    }

    /// GnuTLS's `p11tool` on the module, the PIN in its environment.
    pub fn p11tool(&self, args: &[&str]) -> Output {
        self.cmd("p11tool")
            .arg("--provider")
            .arg(&self.module)
            .args(args)
            .env("GNUTLS_PIN", PIN)
            .output()
            .expect("p11tool (install gnutls-bin)")
    }

    /// What `ssh-keygen -D` lists of the module's keys.
    pub fn ssh_keygen_d(&self) -> String {
        ok(self
            .cmd("ssh-keygen")
            .arg("-D")
            .arg(&self.module)
            .output()
            .expect("ssh-keygen"))
    }

    /// The line of `ssh-keygen -D` that starts with `key_type`.
    pub fn ssh_key_line(&self, key_type: &str) -> String {
        let keys = self.ssh_keygen_d();
        keys.lines()
            .find(|l| l.starts_with(&format!("{key_type} ")))
            .unwrap_or_else(|| panic!("no {key_type} key in\n{keys}"))
            .to_owned()
    }

    /// Key `id` signs the file `input` with `mechanism` through
    /// pkcs11-tool into `output`, with pkcs11-tool's `extra` options.
    pub fn sign_with_tool(
        &self,
        id: &str,
        mechanism: &str,
        input: &Path,
        output: &Path,
        extra: &[&str],
    ) {
        let args = ["--sign", "--mechanism", mechanism, "--id", id];
        let files = ["-i", s(input), "-o", s(output)];
        ok(self.pkcs11_tool_login(&[&args[..], &files, extra].concat()));
    }

    /// Key `id` signs the file `msg` as [`ModuleRig::sign_with_tool`]
    /// does, into a file of its own: that file.
    pub fn signature_of(&self, id: &str, mechanism: &str, msg: &Path, extra: &[&str]) -> PathBuf {
        let sig = self.path(&format!("sig-{id}-{mechanism}-{}", extra.len()));
        self.sign_with_tool(id, mechanism, msg, &sig, extra);
        sig
    }

    /// pkcs11-tool reads the object of `kind` (`pubkey`, `cert`, ...) with
    /// CKA_ID `id` into `out`.
    pub fn read_object(&self, kind: &str, id: &str, out: &Path) {
        let read = ["--read-object", "--type", kind, "--id", id];
        ok(self.pkcs11_tool(&[&read[..], &["-o", s(out)]].concat()));
    }

    /// pkcs11-tool lists each of `mechanisms` among the module's.
    pub fn lists_mechanisms(&self, mechanisms: &[&str]) {
        let listed = ok(self.pkcs11_tool(&["--list-mechanisms"]));
        for m in mechanisms {
            assert!(listed.contains(m), "{m} not in\n{listed}");
        }
    }

    /// The public key `id` as PEM, exported by pkcs11-tool and converted
    /// by openssl (which so also checks the SPKI).
    pub fn public_pem(&self, id: &str) -> PathBuf {
        let der = self.path(&format!("pub-{id}.der"));
        self.read_object("pubkey", id, &der);
        let pem = self.path(&format!("pub-{id}.pem"));
        // pkcs11-tool 0.23 writes an EdDSA key as PEM, the others as DER.
        let der_bytes = std::fs::read(&der).expect("the exported key");
        let form = if der_bytes.starts_with(b"-----") {
            "PEM"
        } else {
            "DER"
        };
        let convert = ["pkey", "-pubin", "-inform", form];
        openssl(&[&convert[..], &["-in", s(&der), "-out", s(&pem)]].concat());
        pem
    }

    /// GnuTLS lists the private key whose URI has `id` in it (any, for
    /// `None`), signs with it and checks the signature itself
    /// (`p11tool --test-sign`); the key's URI.
    pub fn p11tool_test_signs(&self, id: Option<&str>) -> String {
        let all = ok(self.p11tool(&["--list-all", "--login"]));
        let id = id.map(|id| format!("id=%{id}"));
        let uri = all
            .lines()
            .filter_map(|l| l.trim().strip_prefix("URL: "))
            .filter(|u| u.contains("type=private"))
            .find(|u| id.as_ref().is_none_or(|id| u.contains(id.as_str())))
            .unwrap_or_else(|| panic!("no private key {id:?} in\n{all}"))
            .to_owned();
        let out = self.p11tool(&["--test-sign", &uri, "--login"]);
        let text = output_text(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains("Verifying against public key") && text.contains("ok"),
            "{text}"
        );
        uri
    }

    /// `ssh` logs in with the module to a real sshd that trusts only
    /// `authorized` (an `authorized_keys` line) and runs `echo greeting`.
    /// Skipped, and said, where sshd cannot run (it needs root).
    pub fn ssh_logs_in(&self, authorized: &str, greeting: &str) {
        if !is_root() {
            eprintln!("SKIPPED: sshd needs root");
            return;
        }
        let sshd = Sshd::start(&self.path("."), authorized);
        let out = sshd.login(self.cmd("ssh"), &self.module, &format!("echo {greeting}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(greeting),
            "ssh failed: {}\n{stdout}\n{}\n--- sshd log\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            sshd.log()
        );
    }

    /// An NSS database with the module added; its `sql:` name.
    pub fn nss_db(&self) -> String {
        let db = format!("sql:{}", s(&self.path("nssdb")));
        std::fs::create_dir_all(self.path("nssdb")).expect("the NSS database's directory");
        ok(self
            .cmd("certutil")
            .args(["-N", "-d", &db, "--empty-password"])
            .output()
            .expect("certutil (install libnss3-tools)"));
        let module = ["-add", "phonecsp", "-libfile", s(&self.module)];
        ok(self
            .cmd("modutil")
            .args(module)
            .args(["-dbdir", &db, "-force"])
            .output()
            .expect("modutil"));
        db
    }

    /// What NSS's `certutil -L` lists through the module.
    pub fn nss_certificates(&self, db: &str) -> String {
        ok(self
            .cmd("certutil")
            .args(["-L", "-h", "all", "-d", db])
            .output()
            .expect("certutil"))
    }

    /// An OpenSSL configuration that loads the pkcs11 engine on the module.
    pub fn openssl_engine_conf(&self) -> PathBuf {
        openssl_engine_conf(&self.path("openssl.cnf"), &self.module)
    }

    /// OpenSSL's pkcs11 engine signs a SHA-256 digest of the file `msg`
    /// into `sig` with the key the PKCS#11 `uri` names.
    pub fn engine_signs(&self, uri: &str, msg: &Path, sig: &Path) {
        ok(self
            .cmd("openssl")
            .env("OPENSSL_CONF", self.openssl_engine_conf())
            .args(["dgst", "-sha256", "-engine", "pkcs11", "-keyform", "engine"])
            .args(["-sign", uri, "-out", s(sig), s(msg)])
            .output()
            .expect("openssl"));
    }
}

/// A path as a program's argument.
pub fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// What a program wrote, its standard output then its error.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `openssl ARGS`, which must succeed; its standard output.
#[track_caller]
pub fn openssl(args: &[&str]) -> String {
    ok(Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl"))
}

/// openssl checks the signature in `sig` of the file `msg`, over its
/// `hash` (`-sha256`, ...), with the public key in `pem`: independently of
/// the module.
#[track_caller]
pub fn openssl_verifies(hash: &str, pem: &Path, sig: &Path, msg: &Path) {
    let v = openssl(&[
        "dgst",
        hash,
        "-verify",
        s(pem),
        "-signature",
        s(sig),
        s(msg),
    ]);
    assert!(v.contains("Verified OK"), "{v}");
}

/// openssl checks the Ed25519 signature in `sig` of the file `msg` with
/// the public key in `pem`.
#[track_caller]
pub fn openssl_verifies_eddsa(pem: &Path, sig: &Path, msg: &Path) {
    let key = ["pkeyutl", "-verify", "-pubin", "-inkey", s(pem)];
    let v = openssl(&[&key[..], &["-rawin", "-in", s(msg), "-sigfile", s(sig)]].concat());
    assert!(v.contains("Signature Verified Successfully"), "{v}");
}

/// The `CK_RV` of a call through the `cryptoki` crate that must fail
/// with one.
#[track_caller]
pub fn ck_rv<T: std::fmt::Debug>(r: cryptoki::error::Result<T>) -> cryptoki::error::RvError {
    match r {
        Err(cryptoki::error::Error::Pkcs11(rv, _)) => rv,
        other => panic!("expected a PKCS#11 error, got {other:?}"),
    }
}

/// The start of a test that loads the module into this process through
/// the `cryptoki` crate: alone in a process of its own ([`own_process`];
/// `None` when it ran there), the rig, and the module initialised.
pub fn cryptoki_rig(test: &str) -> Option<(ModuleRig, cryptoki::context::Pkcs11)> {
    if own_process(test) {
        return None;
    }
    let rig = ModuleRig::paired_ssh();
    let p = rig.pkcs11_context();
    Some((rig, p))
}

/// A read/write session on the first slot with a token, logged in with
/// [`PIN`].
pub fn logged_in_session(p: &cryptoki::context::Pkcs11) -> cryptoki::session::Session {
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;
    let slot = p.get_slots_with_token().expect("slots")[0];
    let session = p.open_rw_session(slot).expect("a read/write session");
    session
        .login(UserType::User, Some(&AuthPin::new(PIN.into())))
        .expect("C_Login");
    session
}

/// An OpenSSL configuration, written to `path`, that loads the pkcs11
/// engine on `module`.
pub fn openssl_engine_conf(path: &Path, module: &Path) -> PathBuf {
    let engine = [
        "/usr/lib/x86_64-linux-gnu/engines-3/pkcs11.so",
        "/usr/lib/aarch64-linux-gnu/engines-3/pkcs11.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .expect("the pkcs11 engine (install libengine-pkcs11-openssl)");
    std::fs::write(
        path,
        format!(
            "openssl_conf = openssl_init\n[openssl_init]\nengines = engine_section\n\
             [engine_section]\npkcs11 = pkcs11_section\n[pkcs11_section]\nengine_id = pkcs11\n\
             dynamic_path = {engine}\nMODULE_PATH = {}\ninit = 0\n",
            module.display()
        ),
    )
    .expect("write the OpenSSL configuration");
    path.to_owned()
}
