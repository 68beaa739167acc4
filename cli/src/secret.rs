//! Where secrets (PINs, pairing codes, passphrases) come from: an
//! environment variable, else the terminal, read without echo. The
//! computer's only no-echo reader.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;

use zeroize::Zeroizing;

use crate::failure::{Failure, io_failure};

pub(crate) const ENV_PIN: &str = "PHONECSP_PIN";
pub(crate) const ENV_NEW_PIN: &str = "PHONECSP_NEW_PIN";
pub(crate) const ENV_PUK: &str = "PHONECSP_PUK";
pub(crate) const ENV_NEW_PUK: &str = "PHONECSP_NEW_PUK";
pub(crate) const ENV_PAIRING_CODE: &str = "PHONECSP_PAIRING_CODE";

/// Restores the terminal's modes when dropped.
pub(crate) struct EchoOff<'a> {
    tty: &'a File,
    saved: nix::sys::termios::Termios,
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            self.tty,
            nix::sys::termios::SetArg::TCSAFLUSH,
            &self.saved,
        );
    }
}

/// Reads a line from /dev/tty without echo. `Ok(None)`: there is no terminal.
pub(crate) fn read_secret_from_tty(prompt: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    const MAX: usize = 1024;
    let Ok(mut tty) = OpenOptions::new().read(true).write(true).open("/dev/tty") else {
        return Ok(None);
    };
    let Ok(saved) = tcgetattr(&tty) else {
        return Ok(None);
    };
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet)
        .map_err(|e| io_failure("turning off the terminal's echo", e.into()))?;
    let guard = EchoOff { tty: &tty, saved };
    (&tty)
        .write_all(prompt.as_bytes())
        .map_err(|e| io_failure("writing to the terminal", e))?;
    // Byte by byte into a buffer that never reallocates, so that no copy of
    // the secret is left behind.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX));
    let mut byte = Zeroizing::new([0u8; 1]);
    loop {
        match (&tty).read(&mut byte[..]) {
            Ok(0) => break,
            Ok(_) => {
                if byte[0] == b'\n' {
                    break;
                }
                if line.len() == MAX {
                    return Err(Failure::Usage("the secret typed is too long".into()));
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failure("reading the terminal", e)),
        }
    }
    drop(guard);
    let _ = tty.flush();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

pub(crate) fn secret_from_env(var: &str) -> Option<Zeroizing<Vec<u8>>> {
    std::env::var_os(var).map(|v| Zeroizing::new(v.as_bytes().to_vec()))
}

/// A new secret from `var`, else typed twice at the terminal, the two the
/// same (`what` names it: "PIN", "PUK").
pub(crate) fn get_new_secret(var: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(s) = secret_from_env(var) {
        return Ok(s);
    }
    let a = get_secret(var, &format!("New {what}: "))?;
    let b = get_secret(var, &format!("Repeat the new {what}: "))?;
    if a != b {
        return Err(Failure::Usage(format!(
            "the new {what}s typed differ; nothing was changed"
        )));
    }
    Ok(a)
}

/// A secret from `var`, else the terminal, else a clear failure.
pub(crate) fn get_secret(var: &str, prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(s) = secret_from_env(var) {
        return Ok(s);
    }
    read_secret_from_tty(prompt)?.ok_or_else(|| {
        Failure::Usage(format!(
            "no terminal to ask on: set {var} (the value is never printed)"
        ))
    })
}
