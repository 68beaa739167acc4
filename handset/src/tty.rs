//! The owner's terminal, for a handset run from one: a yes/no question and
//! a secret read without echo. The approver (manager.rs) and the command
//! line (main.rs) both ask through here.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};

use nix::sys::termios::{self, LocalFlags, SetArg};
use zeroize::Zeroizing;

fn open() -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open("/dev/tty")
}

/// Asks `prompt` and reads one line with echo off; the line ending is
/// dropped. The terminal's settings are restored whatever happens.
pub fn read_secret(prompt: &str) -> io::Result<Zeroizing<Vec<u8>>> {
    let tty = open()?;
    let old = termios::tcgetattr(&tty)?;
    let mut quiet = old.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    termios::tcsetattr(&tty, SetArg::TCSANOW, &quiet)?;
    let mut w = &tty;
    let asked = write!(w, "{prompt}: ");
    let mut line = Zeroizing::new(String::new());
    let read = BufReader::new(&tty).read_line(&mut line);
    termios::tcsetattr(&tty, SetArg::TCSANOW, &old)?;
    let _ = writeln!(w);
    asked?;
    read?;
    Ok(Zeroizing::new(
        line.trim_end_matches(['\r', '\n']).as_bytes().to_vec(),
    ))
}

/// Asks `prompt`; only an explicit yes approves.
pub fn approve(prompt: &str) -> bool {
    let Ok(tty) = open() else {
        return false;
    };
    let mut w = &tty;
    if write!(w, "{prompt}. Approve? [y/N] ").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(&tty).read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}
