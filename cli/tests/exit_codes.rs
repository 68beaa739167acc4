//! The `phonecsp` command's exit codes at its edges, run as the program.
//!
//! Also why this file exists beside tests/: an integration test makes
//! plain `cargo test --workspace` build this package's binary, which the
//! end-to-end tests in tests/ start; without one they would run a stale
//! `phonecsp` left by an earlier build.

use std::process::Command;

fn phonecsp(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phonecsp"))
        .args(args)
        .env_remove("PHONECSP_BUS")
        .output()
        .expect("run phonecsp")
}

#[test]
fn an_unknown_command_is_a_usage_error() {
    let o = phonecsp(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    assert!(String::from_utf8_lossy(&o.stderr).contains("unrecognized subcommand 'frobnicate'"));
}

#[test]
fn no_bus_is_exit_3_with_the_fix_named() {
    let o = phonecsp(&["--bus", "unix:path=/nonexistent/phonecsp-bus", "tokens"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("check --bus or PHONECSP_BUS"), "{err}");
}
