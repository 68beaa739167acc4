//! `phonecspd --check` on the shipped configuration and on broken files,
//! run as the program: a bad file is named with its fault and exit 78
//! (EX_CONFIG), which systemd shows.
//!
//! An integration test also makes plain `cargo test --workspace` build
//! `phonecspd`, which the end-to-end tests in tests/ start.

use std::process::Command;

fn check(config: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_phonecspd"))
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .expect("run phonecspd")
}

#[test]
fn the_shipped_configuration_is_valid() {
    let shipped =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/phonecspd.toml");
    let o = check(&shipped);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok (0 handsets)"));
}

#[test]
fn a_truncated_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phonecspd.toml");
    std::fs::write(&path, "[[handset]]\nname = \"phone\"\nserial = \"/dev/tty").unwrap();
    let o = check(&path);
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&*path.to_string_lossy()), "{err}");
}

#[test]
fn a_missing_file_is_a_config_error() {
    let o = check(std::path::Path::new("/nonexistent/phonecspd.toml"));
    assert_eq!(o.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/phonecspd.toml"));
}
