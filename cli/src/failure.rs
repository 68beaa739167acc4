//! Why a command did not succeed, its exit code, and what is said about
//! it on stderr (with a hint for the token errors people meet most).

use std::io;
use std::process::ExitCode;

use phonecsp::{Bus, Error};
use phonecsp_protocol::CkRv;

/// Why a command did not succeed, and so its exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Exit 1, with a message.
    Failed(String),
    /// Exit 1 without a message: the answer is "no" (verify).
    No,
    /// Exit 2.
    Usage(String),
    /// Exit 3, 4 or 5 by kind.
    Client(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Client(e)
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) | Failure::No => 1,
            Failure::Usage(_) => 2,
            Failure::Client(Error::Bus(_)) => 3,
            Failure::Client(Error::Token { .. }) => 4,
            Failure::Client(Error::Untrusted { .. }) => 5,
        }
    }
}

pub(crate) fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure::Failed(format!("{what}: {e}"))
}

pub(crate) fn report(f: &Failure, bus: Option<&Bus>) -> ExitCode {
    match f {
        Failure::No => {}
        Failure::Failed(m) | Failure::Usage(m) => eprintln!("phonecsp: {m}"),
        Failure::Client(Error::Bus(e)) => {
            let on = match bus {
                Some(Bus::Address(a)) => format!(" at {a}"),
                Some(b) => format!(" on the {b} bus"),
                None => String::new(),
            };
            eprintln!("phonecsp: cannot use the phonecsp daemon{on}: {e}");
        }
        Failure::Client(e @ Error::Token { rv, .. }) => {
            let pin_given = std::env::var_os(crate::secret::ENV_PIN).is_some();
            match hint(*rv, pin_given) {
                Some(h) => eprintln!("phonecsp: {e}\nphonecsp: {h}"),
                None => eprintln!("phonecsp: {e}"),
            }
        }
        Failure::Client(e @ Error::Untrusted { .. }) => {
            eprintln!("phonecsp: {e}");
            eprintln!(
                "phonecsp: if the daemon really runs as that user, set PHONECSP_DAEMON_USER to it"
            );
        }
    }
    ExitCode::from(f.exit_code())
}

/// What a person can do about the CK_RVs people meet most.
/// What to do about `rv`. `pin_given`: `PHONECSP_PIN` was set, so a
/// "not logged in" means a login that was lost, not one never made.
pub(crate) fn hint(rv: CkRv, pin_given: bool) -> Option<&'static str> {
    Some(match rv {
        CkRv::PIN_INCORRECT => {
            "wrong PIN: the token counts the failures and locks itself at its limit"
        }
        CkRv::PIN_LOCKED => "the token is locked after too many wrong PINs: unlock it on the phone",
        CkRv::PIN_LEN_RANGE => "the new PIN is too short or too long for this token",
        CkRv::TOKEN_NOT_PRESENT | CkRv::DEVICE_REMOVED => {
            "the handset or the token is not there: see `phonecsp status` and `phonecsp tokens`"
        }
        CkRv::KEY_HANDLE_INVALID | CkRv::OBJECT_HANDLE_INVALID => {
            "no object with that id: see `phonecsp objects TOKEN`"
        }
        CkRv::FUNCTION_REJECTED | CkRv::FUNCTION_CANCELED => "refused or cancelled on the phone",
        CkRv::USER_NOT_LOGGED_IN if pin_given => {
            "the login was lost before the operation ran (the token was logged out on the phone or by another program): try again"
        }
        CkRv::USER_NOT_LOGGED_IN => "log in first: set PHONECSP_PIN or run on a terminal",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(Failure::No.exit_code(), 1);
        assert_eq!(Failure::Usage(String::new()).exit_code(), 2);
        assert_eq!(
            Failure::Client(Error::Bus(zbus::Error::Unsupported)).exit_code(),
            3
        );
        assert_eq!(
            Failure::Client(Error::from(CkRv::PIN_INCORRECT)).exit_code(),
            4
        );
        assert_eq!(
            Failure::Client(Error::Untrusted {
                name: String::new(),
                actual: 1,
                expected: 0
            })
            .exit_code(),
            5
        );
    }

    #[test]
    fn a_lost_login_is_not_told_to_set_the_pin_it_had() {
        let never = hint(CkRv::USER_NOT_LOGGED_IN, false).unwrap();
        assert!(never.contains("set PHONECSP_PIN"), "{never}");
        let lost = hint(CkRv::USER_NOT_LOGGED_IN, true).unwrap();
        assert!(!lost.contains("set PHONECSP_PIN"), "{lost}");
        assert!(lost.contains("try again"), "{lost}");
    }
}
