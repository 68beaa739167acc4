//! Who besides root may pair and unpair handsets: polkit decides, as it
//! does for UDisks2 and NetworkManager (the actions are in
//! `dbus/org.phonecsp.policy`). Root and the daemon's own user are let
//! through without asking, so administration keeps working where polkit is
//! not installed or not running. Anyone else is named to polkit by its
//! unique bus name, from which polkit itself finds the uid and the session;
//! whatever is not a clear yes is a refusal.

use crate::access::Caller;
use phonecsp::Error;
use phonecsp_protocol::CkRv;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;
use zbus::{Type, Variant};

/// Pair a handset (`Pair`).
pub const PAIR: &str = "org.phonecsp.pair";
/// Forget a handset's pinned key (`Unpair`).
pub const UNPAIR: &str = "org.phonecsp.unpair";

/// How long polkit may take to answer. Long: with an authentication agent
/// the caller may be typing an administrator's password. Bounded all the
/// same, so that a polkit that never answers cannot hold a call forever.
pub const TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// `CheckAuthorization`'s flag that lets polkit ask the caller through an
/// authentication agent (`auth_admin` and `auth_self` need one).
const ALLOW_USER_INTERACTION: u32 = 1;

/// polkit's subject, `(sa{sv})`: a kind and its details.
#[derive(Debug, Serialize, Type)]
struct Subject<'a> {
    kind: &'a str,
    details: HashMap<&'a str, Variant<'a>>,
}

/// polkit's answer, `(bba{ss})`.
#[derive(Debug, Deserialize, Type)]
struct Authorization {
    is_authorized: bool,
    /// Authentication would have been accepted, but none was given (no
    /// agent, or the caller dismissed it).
    is_challenge: bool,
    /// Logged with a refusal (`polkit.dismissed` and the like).
    #[allow(dead_code)] // read through Debug only
    details: HashMap<String, String>,
}

#[zbus::proxy(
    interface = "org.freedesktop.PolicyKit1.Authority",
    default_service = "org.freedesktop.PolicyKit1",
    default_path = "/org/freedesktop/PolicyKit1/Authority"
)]
trait Authority {
    fn check_authorization(
        &self,
        subject: &Subject<'_>,
        action_id: &str,
        details: &HashMap<&str, &str>,
        flags: u32,
        cancellation_id: &str,
    ) -> zbus::Result<Authorization>;
}

fn refused(detail: impl std::fmt::Display) -> Error {
    Error::token(CkRv::FUNCTION_REJECTED, detail)
}

/// Whether `e` means nobody serves polkit's name on the bus (and the bus
/// could not start it). zbus gives the bus's own errors typed
/// ([`zbus::fdo::Error`]), any other as a name.
fn not_running(e: &zbus::Error) -> bool {
    let name = match e {
        zbus::Error::FDO(e) => zbus::DBusError::name(&**e).to_string(),
        zbus::Error::MethodError(name, _, _) => name.to_string(),
        _ => return false,
    };
    name == "org.freedesktop.DBus.Error.ServiceUnknown"
        || name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        // Activatable, but it failed to start.
        || name.starts_with("org.freedesktop.DBus.Error.Spawn.")
}

/// Asks polkit whether `caller` may do `action`, on `conn` (the bus the
/// daemon serves, where the caller's name means something).
async fn check(conn: &zbus::Connection, caller: &str, action: &str) -> zbus::Result<Authorization> {
    let authority = AuthorityProxy::new(conn).await?;
    let subject = Subject {
        kind: "system-bus-name",
        details: HashMap::from([("name", Variant::from(caller))]),
    };
    authority
        .check_authorization(
            &subject,
            action,
            &HashMap::new(),
            ALLOW_USER_INTERACTION,
            "",
        )
        .await
}

/// Lets `caller` do `action` (one of [`PAIR`], [`UNPAIR`]) or says why not,
/// with `CKR_FUNCTION_REJECTED`.
pub async fn authorize(
    conn: &zbus::Connection,
    caller: &Caller,
    action: &str,
) -> Result<(), Error> {
    // Root and the daemon's user were the only administrators before
    // polkit, and stay so without it: polkit is not asked about them.
    if caller.uid == 0 || caller.uid == nix::unistd::getuid().as_raw() {
        return Ok(());
    }
    let who = format!("uid {} ({})", caller.uid, caller.name);
    let answer = match tokio::time::timeout(TIMEOUT, check(conn, &caller.name, action)).await {
        Ok(answer) => answer,
        Err(_) => {
            log::info!("{action} for {who}: polkit did not answer in time");
            return Err(refused(format!(
                "polkit did not answer about {action} within {} s",
                TIMEOUT.as_secs()
            )));
        }
    };
    match answer {
        Ok(a) if a.is_authorized => {
            log::info!("{action} for {who}: polkit allows it");
            Ok(())
        }
        Ok(a) => {
            log::info!("{action} for {who}: polkit refuses it ({a:?})");
            let why = if a.is_challenge {
                ": it needs authentication, and none was given"
            } else {
                ""
            };
            Err(refused(format!(
                "polkit refused {action} to uid {}{why}",
                caller.uid
            )))
        }
        Err(e) if not_running(&e) => {
            log::info!("{action} for {who}: polkit is not running ({e})");
            Err(refused(format!(
                "polkit is not running, so only root may do {action}"
            )))
        }
        Err(e) => {
            log::warn!("{action} for {who}: polkit failed: {e}");
            Err(refused(format!("polkit could not decide on {action}: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped policy declares the actions asked about, so that polkit
    /// knows them (it refuses actions it does not know).
    #[test]
    fn the_shipped_policy_declares_the_actions() {
        let policy = include_str!("../../dbus/org.phonecsp.policy");
        for action in [PAIR, UNPAIR] {
            assert!(
                policy.contains(&format!("<action id=\"{action}\">")),
                "{action}"
            );
        }
    }

    #[test]
    fn only_a_missing_polkit_counts_as_not_running() {
        use zbus::fdo::Error as Fdo;
        let fdo = |e: Fdo| zbus::Error::FDO(Box::new(e));
        assert!(not_running(&fdo(Fdo::ServiceUnknown(String::new()))));
        assert!(not_running(&fdo(Fdo::NameHasNoOwner(String::new()))));
        assert!(not_running(&fdo(Fdo::SpawnChildExited(String::new()))));
        assert!(!not_running(&fdo(Fdo::AccessDenied(String::new()))));
        assert!(!not_running(&fdo(Fdo::NoReply(String::new()))));
        // An error of polkit's own comes by name.
        let msg = zbus::message::Message::method_call("/", "Ping")
            .build(&())
            .unwrap();
        let polkit_error = zbus::Error::MethodError(
            zbus::names::OwnedErrorName::try_from("org.freedesktop.PolicyKit1.Error.NotAuthorized")
                .unwrap(),
            None,
            msg,
        );
        assert!(!not_running(&polkit_error));
        assert!(!not_running(&zbus::Error::InvalidReply));
    }
}
