//! Why a command did not succeed, its exit code, and what is said about
//! it on stderr: what happened, and on a second line what to do about it.
//! The advice comes from the error's kind ([`hint`], [`bus_trouble`]) or
//! from what the daemon told after the failure ([`Advice`], gathered by
//! `explain.rs`). Exit codes are decided here and nowhere else.

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
    /// A client error and what the daemon told after it: the exit code
    /// of the error, with a message that names the fix.
    Advised(Error, Box<Advice>),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Client(e)
    }
}

impl Failure {
    pub(crate) fn advised(e: Error, advice: Advice) -> Failure {
        Failure::Advised(e, Box::new(advice))
    }

    fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) | Failure::No => 1,
            Failure::Usage(_) => 2,
            Failure::Client(e) | Failure::Advised(e, _) => match e {
                Error::Bus(_) => 3,
                Error::Token { .. } => 4,
                Error::Untrusted { .. } => 5,
            },
        }
    }
}

/// What is true after a failure, found by asking the daemon, each with
/// its fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Advice {
    /// No handset of that name is configured (or the caller may use none
    /// of its tokens: the daemon does not tell the two apart).
    NoSuchHandset { handset: String, known: Vec<String> },
    /// The handset has no such token that the caller may use.
    NoSuchToken {
        handset: String,
        token: String,
        /// The tokens the caller can see on that handset.
        known: Vec<String>,
        connected: bool,
    },
    /// The handset is not connected. `maybe_unpaired`: the caller cannot
    /// tell away from unpaired (only root sees the pinned keys).
    Away {
        handset: String,
        maybe_unpaired: bool,
    },
    /// The handset has no pinned key: it must be paired.
    Unpaired { handset: String },
    /// A wrong PIN, and what the token says now.
    WrongPin {
        handset: String,
        token: String,
        retries_left: u32,
        locked: bool,
        /// The token has a PUK that is not locked, which can unblock it.
        puk: bool,
    },
    /// The token was locked already: no PIN was tried.
    Locked {
        handset: String,
        token: String,
        /// As in `WrongPin`.
        puk: bool,
    },
    /// A wrong PUK, and its tries left.
    WrongPuk {
        handset: String,
        token: String,
        retries_left: u32,
    },
    /// The PUK is locked, for good.
    PukLocked { handset: String, token: String },
    /// The token has no PUK (made before PUKs).
    NoPuk { handset: String, token: String },
    /// A new PIN (or PUK) of a form the token does not take.
    PukForm {
        handset: String,
        token: String,
        min_pin: u32,
        max_pin: u32,
    },
    /// A PIN of a length the token does not take.
    PinLength {
        handset: String,
        token: String,
        min: u32,
        max: u32,
    },
}

/// "a, b, c".
fn list(names: &[String]) -> String {
    names.join(", ")
}

const PAIRING: &str = "on the phone run `phonecsp-handset pair --authorise CONTAINER`, \
     then here `sudo phonecsp --handset {h} pair` and type the code it shows";

const BRING_IT: &str = "bring the phone near (in Bluetooth range, or its cable plugged in), \
     start `phonecsp-handset serve --rfcomm` (or `--serial`) on it, and check that \
     `phonecsp handsets` shows it connected";

impl Advice {
    /// What happened, and what to do.
    pub(crate) fn lines(&self) -> (String, String) {
        match self {
            Advice::NoSuchHandset { handset, known } => (
                format!("no handset '{handset}' is configured (or none of its tokens is yours)"),
                match known.as_slice() {
                    [] => "no handset is available to you: see the [[handset]] tables and the \
                           access lists in /etc/phonecsp/phonecspd.toml"
                        .into(),
                    k => format!(
                        "the handsets you can use: {} (choose with --handset NAME)",
                        list(k)
                    ),
                },
            ),
            Advice::NoSuchToken {
                handset,
                token,
                known,
                connected,
            } => (
                format!("{handset} has no token '{token}' that you may use"),
                match (known.as_slice(), connected) {
                    ([], true) => format!(
                        "you may use no token on {handset}: the phone's owner authorises \
                         this computer for a container with `phonecsp-handset hosts authorise`"
                    ),
                    ([], false) => format!(
                        "{handset} is not connected, and no token of it is known here: \
                         see `phonecsp handsets`"
                    ),
                    (k, _) => format!(
                        "the tokens you can use on {handset}: {} (`phonecsp tokens`)",
                        list(k)
                    ),
                },
            ),
            Advice::Away {
                handset,
                maybe_unpaired,
            } => {
                let mut fix = BRING_IT.to_owned();
                if *maybe_unpaired {
                    fix.push_str(&format!(
                        "; if it never connects it may not be paired: {}",
                        PAIRING.replace("{h}", handset)
                    ));
                }
                (format!("handset '{handset}' is away (not connected)"), fix)
            }
            Advice::Unpaired { handset } => (
                format!("handset '{handset}' is not paired with this computer"),
                format!("pair it: {}", PAIRING.replace("{h}", handset)),
            ),
            Advice::WrongPin {
                handset,
                token,
                retries_left,
                locked,
                puk,
            } => match (locked, retries_left) {
                (true, _) | (_, 0) if *puk => (
                    format!("wrong PIN for {handset}/{token}: the token is now locked"),
                    format!(
                        "set a new PIN with its PUK: `phonecsp unblock {token}` (it asks for \
                         the PUK and the new PIN; ten wrong PUKs lock it for good)"
                    ),
                ),
                (true, _) | (_, 0) => (
                    format!("wrong PIN for {handset}/{token}: the token is now locked"),
                    LOCKED.into(),
                ),
                (false, n) => (
                    format!(
                        "wrong PIN for {handset}/{token}: {n} {} left before it locks",
                        if *n == 1 { "try" } else { "tries" }
                    ),
                    "type it again carefully; PHONECSP_PIN, if set, holds the wrong one".into(),
                ),
            },
            Advice::Locked {
                handset,
                token,
                puk,
            } => (
                format!("{handset}/{token} is locked after too many wrong PINs"),
                if *puk {
                    format!(
                        "set a new PIN with its PUK: `phonecsp unblock {token}` (it asks for \
                         the PUK and the new PIN; ten wrong PUKs lock it for good)"
                    )
                } else {
                    LOCKED.into()
                },
            ),
            Advice::WrongPuk {
                handset,
                token,
                retries_left: 0,
            } => (
                format!("wrong PUK for {handset}/{token}: the PUK is now locked for good"),
                PUK_LOCKED.into(),
            ),
            Advice::WrongPuk {
                handset,
                token,
                retries_left: n,
            } => (
                format!(
                    "wrong PUK for {handset}/{token}: {n} {} left before the PUK locks for good",
                    if *n == 1 { "try" } else { "tries" }
                ),
                "type it again carefully (8 or more digits, as given when the container was \
                 made); PHONECSP_PUK, if set, holds the wrong one"
                    .into(),
            ),
            Advice::PukLocked { handset, token } => (
                format!("the PUK of {handset}/{token} is locked for good"),
                PUK_LOCKED.into(),
            ),
            Advice::NoPuk { handset, token } => (
                format!("{handset}/{token} has no PUK (it was made before PUKs)"),
                format!(
                    "while its PIN works, the phone's owner gives it one: \
                     `phonecsp-handset container set-puk {token}`; once locked, {LOCKED}"
                ),
            ),
            Advice::PukForm {
                handset,
                token,
                min_pin,
                max_pin,
            } => (
                format!("a new PIN or PUK that {handset}/{token} does not take"),
                format!("a PIN has {min_pin} to {max_pin} bytes; a PUK has 8 to {max_pin} digits"),
            ),
            Advice::PinLength {
                handset,
                token,
                min,
                max,
            } => (
                format!("a PIN of {handset}/{token} has {min} to {max} bytes"),
                format!("choose a new PIN of {min} to {max} characters (bytes, for non-ASCII)"),
            ),
        }
    }
}

/// A locked container without a PUK that works: nothing opens its
/// container key again.
const LOCKED: &str = "nothing unlocks a locked container without a PUK: its keys cannot be used \
    again. The phone's owner deletes it and makes a new one (`phonecsp-handset container delete`, \
    `container create`, new keys); a disk enrolled to it opens with another keyslot";

/// A PUK locked for good: what survives is outside the container.
const PUK_LOCKED: &str = "that is final: nothing in the container can be used again. What \
    survives is outside it: a disk's other LUKS keyslots (its passphrase or recovery key) and \
    any recovery key re-wrapped to another container. The phone's owner deletes the container \
    (`phonecsp-handset container delete`) and makes a new one";

/// Why the daemon could not be reached: each kind has its own fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BusTrouble {
    /// The bus answers, but nobody owns the daemon's name and the bus
    /// cannot start it (`ServiceUnknown`, `NameHasNoOwner`).
    NotRunning,
    /// The bus tried to start the daemon (D-Bus activation) and failed.
    FailedToStart,
    /// The bus itself cannot be reached.
    NoBus,
    /// Anything else: said as it is.
    Other,
}

/// The kind of a bus failure.
pub(crate) fn bus_trouble(e: &zbus::Error) -> BusTrouble {
    use zbus::fdo::Error as Fdo;
    match e {
        zbus::Error::FDO(f) => match f.as_ref() {
            Fdo::ServiceUnknown(_) | Fdo::NameHasNoOwner(_) => BusTrouble::NotRunning,
            Fdo::SpawnExecFailed(_)
            | Fdo::SpawnForkFailed(_)
            | Fdo::SpawnChildExited(_)
            | Fdo::SpawnChildSignaled(_)
            | Fdo::SpawnFailed(_)
            | Fdo::SpawnFailedToSetup(_)
            | Fdo::SpawnConfigInvalid(_)
            | Fdo::SpawnServiceNotValid(_)
            | Fdo::SpawnServiceNotFound(_)
            | Fdo::SpawnPermissionsInvalid(_)
            | Fdo::SpawnFileInvalid(_)
            | Fdo::SpawnNoMemory(_) => BusTrouble::FailedToStart,
            _ => BusTrouble::Other,
        },
        // Activation through systemd (SystemdService=) that failed.
        zbus::Error::MethodError(name, ..)
            if name.as_str().starts_with("org.freedesktop.systemd1.") =>
        {
            BusTrouble::FailedToStart
        }
        zbus::Error::Connection(..) | zbus::Error::Address(_) => BusTrouble::NoBus,
        _ => BusTrouble::Other,
    }
}

/// The D-Bus error name of `e`, to say along with the advice.
fn bus_error_name(e: &zbus::Error) -> Option<String> {
    use zbus::DBusError;
    match e {
        zbus::Error::FDO(f) => Some(f.name().to_string()),
        zbus::Error::MethodError(name, ..) => Some(name.to_string()),
        _ => None,
    }
}

/// What to say about a bus failure on `bus`: what happened, and what to do.
pub(crate) fn bus_lines(e: &zbus::Error, bus: Option<&Bus>) -> (String, Option<String>) {
    let on = match bus {
        Some(Bus::Address(a)) => format!("on the bus at {a}"),
        Some(b) => format!("on the {b} bus"),
        None => "on its bus".into(),
    };
    let name = bus_error_name(e)
        .map(|n| format!(" ({n})"))
        .unwrap_or_default();
    match (bus_trouble(e), bus) {
        (BusTrouble::NotRunning, Some(Bus::System)) => (
            format!("phonecspd is not running {on}{name}"),
            Some(
                "start it with `sudo systemctl start phonecspd` (`systemctl status phonecspd` \
                 says why it stopped; if the unit is unknown, install phonecsp first: \
                 `sudo scripts/install`); a daemon on another bus is chosen with --bus or \
                 PHONECSP_BUS"
                    .into(),
            ),
        ),
        (BusTrouble::NotRunning, Some(Bus::Session)) => (
            format!("phonecspd is not running {on}{name}"),
            Some(
                "the installed phonecspd serves the system bus: leave out --bus session (and \
                 unset PHONECSP_BUS) to use it, or run one on this bus: \
                 `phonecspd --bus session --config FILE`"
                    .into(),
            ),
        ),
        (BusTrouble::NotRunning, Some(Bus::Address(a))) => (
            format!("phonecspd is not running {on}{name}"),
            Some(format!(
                "start one there with `phonecspd --bus {a} --config FILE`, or leave out --bus \
                 (and unset PHONECSP_BUS) to use the system bus, where the installed phonecspd runs"
            )),
        ),
        (BusTrouble::FailedToStart, _) => (
            format!("the bus could not start phonecspd {on}{name}: {e}"),
            Some(
                "see why with `journalctl -u phonecspd`; `phonecspd --check` checks \
                 /etc/phonecsp/phonecspd.toml"
                    .into(),
            ),
        ),
        (BusTrouble::NoBus, Some(Bus::System)) => (
            format!("cannot reach the system bus: {e}"),
            Some("is D-Bus running? `systemctl status dbus`".into()),
        ),
        (BusTrouble::NoBus, Some(Bus::Session)) => (
            format!("cannot reach a session bus: {e}"),
            Some(
                "the installed phonecspd serves the system bus: leave out --bus session (and \
                 unset PHONECSP_BUS)"
                    .into(),
            ),
        ),
        (BusTrouble::NoBus, Some(Bus::Address(a))) => (
            format!("cannot reach the bus at {a}: {e}"),
            Some("check --bus or PHONECSP_BUS: nothing answers at that address".into()),
        ),
        _ => (format!("cannot use the phonecsp daemon {on}: {e}"), None),
    }
}

pub(crate) fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure::Failed(format!("{what}: {e}"))
}

/// The lines said about `f` on stderr, without the `phonecsp: ` prefix.
pub(crate) fn message(f: &Failure, bus: Option<&Bus>) -> Vec<String> {
    match f {
        Failure::No => Vec::new(),
        Failure::Failed(m) | Failure::Usage(m) => vec![m.clone()],
        Failure::Client(Error::Bus(e)) | Failure::Advised(Error::Bus(e), _) => {
            let (what, fix) = bus_lines(e, bus);
            std::iter::once(what).chain(fix).collect()
        }
        Failure::Advised(e, advice) => {
            let (what, fix) = advice.lines();
            let what = match advice.as_ref() {
                // Only the daemon can tell a handset not configured from
                // one this caller may not use: its words, then the fix.
                Advice::NoSuchHandset { .. } => e.to_string(),
                _ => format!("{what} ({})", e.rv().name()),
            };
            vec![what, fix]
        }
        Failure::Client(e @ Error::Token { rv, .. }) => {
            let pin_given = std::env::var_os(crate::secret::ENV_PIN).is_some();
            std::iter::once(e.to_string())
                .chain(hint(*rv, pin_given).map(str::to_owned))
                .collect()
        }
        Failure::Client(e @ Error::Untrusted { .. }) => vec![
            e.to_string(),
            "if the daemon really runs as that user, set PHONECSP_DAEMON_USER to it".into(),
        ],
    }
}

pub(crate) fn report(f: &Failure, bus: Option<&Bus>) -> ExitCode {
    for line in message(f, bus) {
        eprintln!("phonecsp: {line}");
    }
    ExitCode::from(f.exit_code())
}

/// What to do about the CK_RVs people meet most, when nothing more was
/// found out. `pin_given`: `PHONECSP_PIN` was set, so a "not logged in"
/// means a login that was lost, not one never made.
pub(crate) fn hint(rv: CkRv, pin_given: bool) -> Option<&'static str> {
    Some(match rv {
        CkRv::PIN_INCORRECT => {
            "wrong PIN: the token counts the failures and locks itself at its limit"
        }
        CkRv::PIN_LOCKED => {
            "the token is locked: a PUK sets a new PIN (`phonecsp unblock TOKEN`); a container \
             made before PUKs cannot be unlocked"
        }
        CkRv::PIN_LEN_RANGE => "the PIN is too short or too long for this token",
        CkRv::DEVICE_REMOVED => BRING_IT,
        CkRv::TOKEN_NOT_PRESENT => {
            "the handset or the token is not there: see `phonecsp handsets` and `phonecsp tokens`"
        }
        CkRv::KEY_HANDLE_INVALID | CkRv::OBJECT_HANDLE_INVALID => {
            "no object with that id: see `phonecsp objects TOKEN`"
        }
        CkRv::FUNCTION_REJECTED => {
            "refused (by the phone's owner, the phone, or the system's policy): nothing was done"
        }
        CkRv::FUNCTION_CANCELED => {
            "nobody answered on the phone in time (or a PIN prompt was dismissed): try again and answer there"
        }
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
        // Advice changes the message, never the exit code.
        let away = Advice::Away {
            handset: "phone".into(),
            maybe_unpaired: false,
        };
        assert_eq!(
            Failure::advised(Error::from(CkRv::DEVICE_REMOVED), away).exit_code(),
            4
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

    fn unknown() -> zbus::Error {
        zbus::Error::FDO(Box::new(zbus::fdo::Error::ServiceUnknown(
            "The name org.phonecsp.CryptoProvider1 was not provided by any .service files".into(),
        )))
    }

    fn said(e: &zbus::Error, bus: &Bus) -> String {
        message(&Failure::Client(Error::Bus(e.clone())), Some(bus)).join("\n")
    }

    /// The system bus is where the installed daemon runs (its unit); the
    /// others are where someone started one by hand.
    #[test]
    fn a_daemon_not_running_is_told_how_to_start_it_on_its_bus() {
        let owner = zbus::Error::FDO(Box::new(zbus::fdo::Error::NameHasNoOwner(
            "Could not get owner of name 'org.phonecsp.CryptoProvider1': no such name".into(),
        )));
        for e in [unknown(), owner] {
            assert_eq!(bus_trouble(&e), BusTrouble::NotRunning);
            let system = said(&e, &Bus::System);
            assert!(
                system.contains("phonecspd is not running on the system bus"),
                "{system}"
            );
            assert!(system.contains("systemctl start phonecspd"), "{system}");
            let session = said(&e, &Bus::Session);
            assert!(
                session.contains("not running on the session bus"),
                "{session}"
            );
            assert!(
                session.contains("phonecspd --bus session --config"),
                "{session}"
            );
            assert!(session.contains("system bus"), "{session}");
            let private = said(&e, &Bus::Address("unix:path=/tmp/b".into()));
            assert!(
                private.contains("phonecspd --bus unix:path=/tmp/b --config FILE"),
                "{private}"
            );
            assert!(!private.contains("ServiceUnknown: The name"), "{private}");
        }
        let spawn = zbus::Error::FDO(Box::new(zbus::fdo::Error::SpawnChildExited(
            "exited with status 78".into(),
        )));
        assert_eq!(bus_trouble(&spawn), BusTrouble::FailedToStart);
        assert!(said(&spawn, &Bus::System).contains("journalctl -u phonecspd"));
        let other = zbus::Error::Unsupported;
        assert_eq!(bus_trouble(&other), BusTrouble::Other);
        assert!(said(&other, &Bus::System).starts_with("cannot use the phonecsp daemon"));
    }

    #[test]
    fn a_handset_refused_keeps_the_daemons_words() {
        let e = Error::token(
            CkRv::TOKEN_NOT_PRESENT,
            "handset 'phone' is not available to uid 1",
        );
        let advice = Advice::NoSuchHandset {
            handset: "phone".into(),
            known: Vec::new(),
        };
        let said = message(&Failure::advised(e, advice), None);
        assert!(said[0].contains("not available to uid 1"), "{said:?}");
        assert!(said[1].contains("access lists"), "{said:?}");
    }

    #[test]
    fn advice_names_the_fix() {
        let wrong_pin = |retries_left, locked, puk| Advice::WrongPin {
            handset: "phone".into(),
            token: "ssh".into(),
            retries_left,
            locked,
            puk,
        };
        let (phone, ssh) = (|| "phone".to_string(), || "ssh".to_string());
        // Each advice, and what its text must say.
        let cases: Vec<(Advice, &[&str])> = vec![
            (
                Advice::NoSuchToken {
                    handset: phone(),
                    token: "shh".into(),
                    known: vec!["ssh".into(), "disk".into()],
                    connected: true,
                },
                &["no token 'shh'", "ssh, disk"],
            ),
            (
                Advice::NoSuchHandset {
                    handset: "pixel".into(),
                    known: vec![phone()],
                },
                &["no handset 'pixel'", ": phone"],
            ),
            (wrong_pin(1, false, true), &["1 try left"]),
            (
                wrong_pin(0, true, false),
                &["now locked", "container delete"],
            ),
            (
                wrong_pin(0, true, true),
                &["now locked", "phonecsp unblock ssh"],
            ),
            (
                Advice::WrongPuk {
                    handset: phone(),
                    token: ssh(),
                    retries_left: 9,
                },
                &["9 tries left"],
            ),
            (
                Advice::PukLocked {
                    handset: phone(),
                    token: ssh(),
                },
                &[
                    "locked for good",
                    "nothing in the container",
                    "other LUKS keyslots",
                ],
            ),
            (
                Advice::PinLength {
                    handset: phone(),
                    token: ssh(),
                    min: 4,
                    max: 64,
                },
                &["4 to 64"],
            ),
            (
                Advice::Unpaired { handset: phone() },
                &["sudo phonecsp --handset phone pair"],
            ),
            (
                Advice::Away {
                    handset: phone(),
                    maybe_unpaired: true,
                },
                &["phonecsp-handset serve", "phonecsp handsets", "pair"],
            ),
        ];
        for (advice, says) in cases {
            let (what, fix) = advice.lines();
            let t = format!("{what}\n{fix}");
            for s in says {
                assert!(t.contains(s), "{s:?} not in {t}");
            }
            // A pairing code is never put on a command line.
            assert!(!t.contains("--code"), "{t}");
        }
    }
}
