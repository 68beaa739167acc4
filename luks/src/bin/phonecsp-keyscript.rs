//! `phonecsp-keyscript`: a crypttab `keyscript=` that gets the disk key
//! from the handset (see `phonecsp_luks::keyscript` for the contract).
//!
//! ```text
//! # /etc/crypttab
//! cryptroot  UUID=...  luks-token              luks,keyscript=/usr/lib/phonecsp/phonecsp-keyscript
//! data       /dev/sdb  /etc/phonecsp/data.json luks,keyscript=/usr/lib/phonecsp/phonecsp-keyscript
//! ```
//!
//! On success exactly the key's bytes go to stdout, with no newline, and
//! the exit status is 0. On failure nothing goes to stdout, the reason goes
//! to stderr, and the exit status is 1 (2 for a usage or configuration
//! error), so that cryptsetup fails and the boot scripts ask again.

use std::io::Write;
use std::process::ExitCode;

use phonecsp_luks::keyscript::{self, Request};

const USAGE: &str = "\
usage: phonecsp-keyscript KEY-FIELD
  a crypttab keyscript: prints the disk key unwrapped by the phone on stdout.
  KEY-FIELD: luks-token (the phonecsp tokens in CRYPTTAB_SOURCE's LUKS2 header),
             luks-token:ID (one token), or the path of a wrapped-key file.
environment:
  CRYPTTAB_NAME, CRYPTTAB_SOURCE, CRYPTTAB_TRIED, CRYPTTAB_OPTION_header  (from cryptsetup's scripts)
  PHONECSP_BUS          the bus the daemon is on (default: system); without it, the
                        serial line is opened directly
  PHONECSP_CONFIG       the daemon's configuration (default /etc/phonecsp/phonecspd.toml)
  PHONECSP_ASKPASS      the PIN prompt program (default /lib/cryptsetup/askpass)
  PHONECSP_WAIT_SECS    how long to wait for the handset (default 30)
  PHONECSP_FALLBACK     passphrase (default): the handset still away, ask for the
                        passphrase of the disk's other keyslot; none: fail
  PHONECSP_DAEMON_USER  the user the daemon must run as";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let arg = args.next();
    if matches!(arg.as_deref(), Some("-h" | "--help")) || args.next().is_some() {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    let req = match Request::from_env(arg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("phonecsp-keyscript: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("phonecsp-keyscript: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(keyscript::run_with_fallback(&req));
    // Child processes and connections end before the key is printed.
    drop(rt);
    match result {
        Ok((key, from_phone)) => {
            let mut out = std::io::stdout().lock();
            match out.write_all(&key).and_then(|()| out.flush()) {
                Ok(()) => {
                    eprintln!(
                        "phonecsp-keyscript: {}: {}",
                        req.name,
                        if from_phone {
                            "key unwrapped by the handset"
                        } else {
                            "passphrase given for the disk's other keyslots"
                        }
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("phonecsp-keyscript: {}: writing the key: {e}", req.name);
                    ExitCode::FAILURE
                }
            }
        }
        Err(e) => {
            eprintln!("phonecsp-keyscript: {}: {e}", req.name);
            let usage = matches!(
                e,
                phonecsp_luks::LuksError::Usage(_)
                    | phonecsp_luks::LuksError::Host(_)
                    | phonecsp_luks::LuksError::HandsetNotConfigured(_)
            );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}
