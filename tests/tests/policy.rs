//! The system-bus policy in dbus/: on a bus configured like Debian's
//! system bus, only the daemon's user may own the name, and any user may
//! call it; what a caller then sees is the daemon's access scope. (The policy names the user `phonecsp`; the test substitutes
//! `nobody`, a user every Debian machine has.)

use phonecsp_tests::{Reaped, bin, is_root};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A bus configured like Debian's system bus, with @SOCKET@ and @POLICY@
/// to fill in.
const SYSTEM_LIKE: &str = include_str!("../data/system-like-bus.conf");

fn as_uid(uid: u32, program: &std::path::Path) -> Command {
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg(program);
    c
}

#[test]
fn only_the_daemon_user_owns_the_name_and_anyone_may_call() {
    if !is_root() {
        eprintln!("SKIPPED: needs root to run as other users");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let policy = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../dbus/org.phonecsp.CryptoProvider1.conf"
    ))
    .unwrap();
    assert!(policy.contains("user=\"phonecsp\""));
    let policy_path = dir.path().join("policy.conf");
    std::fs::write(
        &policy_path,
        policy.replace("user=\"phonecsp\"", "user=\"nobody\""),
    )
    .unwrap();
    let socket = dir.path().join("system_bus");
    let conf = dir.path().join("system.conf");
    std::fs::write(
        &conf,
        SYSTEM_LIKE
            .replace("@SOCKET@", socket.to_str().unwrap())
            .replace("@POLICY@", policy_path.to_str().unwrap()),
    )
    .unwrap();
    let _bus = Reaped(
        Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .arg("--nofork")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "bus did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let address = format!("unix:path={}", socket.display());
    let cfg = dir.path().join("phonecspd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n[access]\nusers = [\"2\"]\n\
             [[handset]]\nname = \"phone\"\nserial = \"/nonexistent/tty\"\n",
            dir.path().join("state").display()
        ),
    )
    .unwrap();

    // Another user cannot take the name.
    let o = as_uid(1, &bin("phonecspd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--state-dir")
        .arg(dir.path().join("state-daemon"))
        .arg("--bus")
        .arg(&address)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("AccessDenied") || err.contains("not allowed"),
        "{err}"
    );

    // The daemon's user can, and another user may call it.
    let daemon = Reaped(
        as_uid(65534, &bin("phonecspd"))
            .arg("--config")
            .arg(&cfg)
            .arg("--bus")
            .arg(&address)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let phonecsp = |uid: u32, args: &[&str]| {
        as_uid(uid, &bin("phonecsp"))
            .args(["--bus", &address, "--json"])
            .args(args)
            .output()
            .unwrap()
    };
    let mut listed = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let o = phonecsp(2, &["handsets"]);
        if o.status.success() {
            listed = Some(String::from_utf8_lossy(&o.stdout).into_owned());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Access scope (docs/architecture.md, "Who may call what"): uid 2 is
    // in [access] and sees the handset, but not where it is plugged in
    // nor its key; uid 1 is not, and sees no handset and gets no random
    // numbers from it.
    let listed = listed.expect("uid 2 could not call the daemon");
    assert!(listed.contains("\"phone\""), "{listed}");
    assert!(!listed.contains("nonexistent"), "{listed}");
    let outsider = phonecsp(1, &["handsets"]);
    assert!(outsider.status.success(), "{outsider:?}");
    assert!(!String::from_utf8_lossy(&outsider.stdout).contains("phone"));
    let random = phonecsp(1, &["--handset", "phone", "random", "8"]);
    assert!(!random.status.success());
    let err = String::from_utf8_lossy(&random.stderr);
    assert!(err.contains("not available to uid 1"), "{err}");
    drop(daemon);
}
