//! The keyscript run as cryptsetup's scripts would, with what they might
//! get wrong: it fails with a reason on stderr and prints nothing on
//! stdout, which cryptsetup would take for a key.
//!
//! An integration test also makes plain `cargo test --workspace` build
//! `phonecsp-keyscript`, which the end-to-end tests in tests/ start.

use std::process::Command;

fn keyscript(args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_phonecsp-keyscript"));
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("CRYPTTAB_") || k.starts_with("PHONECSP_") {
            c.env_remove(k);
        }
    }
    c.output().expect("run phonecsp-keyscript")
}

#[test]
fn extra_arguments_are_a_usage_error() {
    let o = keyscript(&["one", "two"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
}

#[test]
fn without_cryptsetup_s_environment_it_says_what_is_missing() {
    let o = keyscript(&[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty(), "stdout: {:?}", o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("CRYPTTAB_SOURCE is not set"), "{err}");
}

#[test]
fn a_wrapped_key_file_that_is_not_there_prints_no_key() {
    let o = keyscript(&["/nonexistent/disk.phonecsp"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "stdout: {:?}", o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/nonexistent/disk.phonecsp"), "{err}");
}
