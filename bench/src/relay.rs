//! A paced relay: a new pty (reachable at a symlink) whose bytes reach the
//! handset's pty no faster than a given byte rate and no sooner than a
//! given one-way latency, in both directions. It models a 115200 baud
//! serial line or Bluetooth RFCOMM between the daemon and the handset.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

fn raw<Fd: AsFd>(fd: Fd) -> Result<(), Error> {
    use nix::sys::termios;
    let mut t = termios::tcgetattr(&fd)?;
    termios::cfmakeraw(&mut t);
    termios::tcsetattr(&fd, termios::SetArg::TCSANOW, &t)?;
    Ok(())
}

/// Copies `from` to `to` as a line of `rate` bytes per second with a
/// one-way `latency` would deliver them.
fn pump(mut from: std::fs::File, mut to: std::fs::File, rate: f64, latency: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
                Err(e) if e.raw_os_error() == Some(nix::libc::EIO) => {
                    // A pty master reads EIO while no slave is open; wait.
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return,
            }
        }
    });
    let mut line_free = Instant::now();
    for (arrived, bytes) in rx {
        // In slices, each written when its last byte would have crossed the
        // line: a long message streams instead of arriving whole, without
        // sleeping once per byte.
        for slice in bytes.chunks(32) {
            let start = line_free.max(arrived);
            let done = start + Duration::from_secs_f64(slice.len() as f64 / rate);
            line_free = done;
            let due = done + latency;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(slice).is_err() {
                return;
            }
        }
    }
}

pub fn run(link: &Path, target: &Path, bytes_per_sec: u64, latency_ms: u64) -> Result<(), Error> {
    let pair = nix::pty::openpty(None, None)?;
    raw(&pair.master)?;
    raw(&pair.slave)?;
    let slave_path = nix::unistd::ttyname(&pair.slave)?;
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(&slave_path, link)?;
    let handset = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)?;
    raw(&handset)?;
    let master = std::fs::File::from(pair.master);
    let rate = bytes_per_sec.max(1) as f64;
    let latency = Duration::from_millis(latency_ms);
    let (m2, h2) = (master.try_clone()?, handset.try_clone()?);
    println!("RELAY {}", slave_path.display());
    std::io::stdout().flush()?;
    let a = std::thread::spawn(move || pump(master, handset, rate, latency));
    let b = std::thread::spawn(move || pump(h2, m2, rate, latency));
    // Keep the slave open so the master never sees EOF between connections.
    let _slave = pair.slave;
    let _ = a.join();
    let _ = b.join();
    Ok(())
}
