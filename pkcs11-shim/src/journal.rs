//! Why there are no slots, told to the journal. The module lives in other
//! people's programs and cannot print; when it cannot list the daemon's
//! tokens, those programs only say `No slots.`. The reason goes to the
//! system journal once (`journalctl -t phonecsp-pkcs11`), and once more
//! only after a listing has worked again.

use std::sync::atomic::{AtomicBool, Ordering};

use phonecsp::{Bus, Error};

/// The journal's `SYSLOG_IDENTIFIER` for the module's messages.
pub const IDENTIFIER: &str = "phonecsp-pkcs11";

/// Whether the current failure to list has been told.
struct Once(AtomicBool);

impl Once {
    /// True the first time after a reset.
    fn first(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }

    fn reset(&self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

static TOLD: Once = Once(AtomicBool::new(false));

/// What is said when the daemon's tokens cannot be listed: the reason and
/// what to do. `bus` is the bus the module was to use (`PHONECSP_BUS`).
pub fn no_tokens_message(e: &Error, bus: Option<&Bus>) -> String {
    let on = match bus {
        Some(Bus::Address(a)) => format!("on the bus at {a}"),
        Some(b) => format!("on the {b} bus"),
        None => "(PHONECSP_BUS is not a bus)".into(),
    };
    match e {
        Error::Bus(b) => format!(
            "no tokens, so programs see no slots: cannot reach phonecspd {on}: {b}. \
             Is it running? `systemctl status phonecspd` (start: `systemctl start phonecspd`); \
             PHONECSP_BUS chooses another bus"
        ),
        Error::Untrusted { .. } => format!(
            "no tokens, so programs see no slots: {e}. If the daemon really runs as that \
             user, set PHONECSP_DAEMON_USER to it"
        ),
        Error::Token { .. } => {
            format!("no tokens, so programs see no slots: phonecspd {on} did not list them: {e}")
        }
    }
}

/// A listing failed with `e`: tell the journal, unless this failure was
/// told already.
pub fn listing_failed(e: &Error) {
    if !TOLD.first() {
        return;
    }
    let bus = Bus::from_env().ok();
    send(&no_tokens_message(e, bus.as_ref()));
}

/// A listing worked: the next failure is news again.
pub fn listing_worked() {
    TOLD.reset();
}

/// To the journal's native socket, as a warning; where there is no
/// journal the message is lost (the module has nowhere else to say it).
fn send(message: &str) {
    // The unit tests' fake daemon fails on purpose: not the developer's journal.
    if cfg!(test) {
        return;
    }
    let Ok(journal) = systemd_journal_logger::JournalLog::new() else {
        return;
    };
    let journal = journal.with_syslog_identifier(IDENTIFIER.into());
    let _ = journal.journal_send(
        &log::Record::builder()
            .level(log::Level::Warn)
            .target(IDENTIFIER)
            .args(format_args!("{message}"))
            .build(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonecsp_protocol::CkRv;

    #[test]
    fn the_message_names_the_bus_and_the_fix() {
        let unknown = zbus::fdo::Error::ServiceUnknown(
            "The name org.phonecsp.CryptoProvider1 was not provided by any .service files".into(),
        );
        let m = no_tokens_message(&Error::from(unknown), Some(&Bus::System));
        assert!(m.contains("on the system bus"), "{m}");
        assert!(m.contains("ServiceUnknown"), "{m}");
        assert!(m.contains("systemctl start phonecspd"), "{m}");
        assert!(m.contains("no slots"), "{m}");
        let at = Bus::Address("unix:path=/run/x".into());
        let m = no_tokens_message(&Error::from(CkRv::GENERAL_ERROR), Some(&at));
        assert!(m.contains("at unix:path=/run/x"), "{m}");
        let m = no_tokens_message(
            &Error::Untrusted {
                name: "org.phonecsp.CryptoProvider1".into(),
                actual: 1000,
                expected: 0,
            },
            Some(&Bus::System),
        );
        assert!(m.contains("PHONECSP_DAEMON_USER"), "{m}");
    }

    #[test]
    fn a_failure_is_told_once_until_a_listing_works() {
        let once = Once(AtomicBool::new(false));
        assert!(once.first());
        assert!(!once.first());
        assert!(!once.first());
        once.reset();
        assert!(once.first());
    }
}
