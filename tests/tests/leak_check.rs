//! scripts/leak-check, the end-of-run check of scripts/test and
//! scripts/demo: it must name a process a run left behind, including one
//! whose starter has already gone (the demo's old bug: a server started
//! through a shell function, so the cleanup stopped only the subshell),
//! and pass once it is gone.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn leak_check(run_id: &str) -> Output {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/leak-check");
    Command::new(script)
        .args([run_id, "0"])
        .output()
        .expect("scripts/leak-check")
}

/// A run id no other test or run uses.
fn run_id(what: &str) -> String {
    format!("leak-check-test-{what}-{}", std::process::id())
}

#[test]
fn a_process_left_running_fails_the_check_and_is_named() {
    let id = run_id("child");
    assert!(leak_check(&id).status.success(), "nothing started yet");
    let mut left = Command::new("sleep")
        .arg("300")
        .env("PHONECSP_RUN_ID", &id)
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep");
    let o = leak_check(&id);
    let _ = left.kill();
    let _ = left.wait();
    assert!(!o.status.success(), "a leaked process passed the check");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("sleep 300"), "{err}");
    assert!(err.contains(&left.id().to_string()), "{err}");
    assert!(leak_check(&id).status.success(), "after it was stopped");
}

#[test]
fn an_orphan_whose_starter_exited_is_found_too() {
    let id = run_id("orphan");
    // The shell starts the sleep in the background and exits at once, as
    // `hs serve ... &` inside a function did: the sleep is an orphan.
    let o = Command::new("sh")
        .args(["-c", "sleep 301 >/dev/null 2>&1 & echo $!"])
        .env("PHONECSP_RUN_ID", &id)
        .output()
        .expect("sh");
    let pid: i32 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("the orphan's pid");
    let checked = leak_check(&id);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(!checked.status.success(), "the orphan was not found");
    assert!(
        String::from_utf8_lossy(&checked.stderr).contains("sleep 301"),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
}
