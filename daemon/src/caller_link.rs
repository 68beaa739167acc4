//! The daemon's end of the typed call layer ([`phonecsp::handset`]): a
//! [`CallerLink`] carries one caller's requests about one token on a
//! handset's link, and keeps the login records ([`Logins`]) true to what
//! the handset answers: a Login it carried is recorded for its caller, and
//! a "not logged in" from the handset clears the token's records. Logging
//! the handset out when nobody needs its login any more is here too.

use std::sync::Arc;

use phonecsp::Error;
use phonecsp::handset::HandsetLink;
use phonecsp_protocol::{CkRv, Reply, Request};

use crate::link::LinkHandle;
use crate::logins::Logins;

/// The name under which the daemon sends requests of its own.
const DAEMON: &str = "phonecspd";

/// One caller's requests on one handset's link, about one token (whose
/// login records it keeps) or about the handset as a whole.
#[derive(Clone)]
pub struct CallerLink {
    link: LinkHandle,
    caller: String,
    token: Option<String>,
    logins: Arc<Logins>,
}

impl CallerLink {
    pub fn new(
        link: LinkHandle,
        caller: &str,
        token: Option<&str>,
        logins: Arc<Logins>,
    ) -> CallerLink {
        CallerLink {
            link,
            caller: caller.to_owned(),
            token: token.map(str::to_owned),
            logins,
        }
    }

    /// The link session a request sent now would go to, if one is up.
    fn session(&self) -> Result<u64, Error> {
        self.link.generation().ok_or_else(|| {
            Error::token(
                CkRv::DEVICE_REMOVED,
                format!("handset '{}' is away", self.link.name()),
            )
        })
    }

    async fn login(&self, token: &str, request: Request) -> Result<Reply, Error> {
        let generation = self.session()?;
        let hold = self.logins.hold(self.link.name(), token);
        match self.link.call(&self.caller, request).await {
            Ok(reply) => {
                hold.succeeded(&self.caller, generation);
                Ok(reply)
            }
            Err(e) => {
                if hold.release() {
                    log_out_if_unused(&self.link, &self.logins, token, generation).await;
                }
                Err(e)
            }
        }
    }
}

impl HandsetLink for CallerLink {
    async fn call(&mut self, request: Request) -> phonecsp::Result<Reply> {
        let Some(token) = self.token.as_deref() else {
            return self.link.call(&self.caller, request).await;
        };
        if matches!(&request, Request::Login { container, .. } if container == token) {
            return self.login(token, request).await;
        }
        let handset = self.link.name();
        let before = self.logins.stamp(handset, token);
        // A security officer's login is not the user's: its absence says
        // nothing about theirs.
        let so = matches!(
            request,
            Request::SoLogin { .. }
                | Request::SoLogout { .. }
                | Request::InitPin { .. }
                | Request::ChangePuk { .. }
        );
        let r = self.link.call(&self.caller, request).await;
        if let Err(e) = &r
            && e.rv() == CkRv::USER_NOT_LOGGED_IN
            && !so
        {
            // The handset has no login to the token (it timed out, or was
            // ended on the phone): nobody's record of one is true any more.
            log::debug!("handset '{handset}' has no login to '{token}'");
            self.logins.forget_until(handset, token, before);
        }
        r
    }
}

/// Logs the handset's session `generation` out of `token` unless, when the
/// Logout's turn on the link comes, somebody is logged in to the token in
/// that session or a Login to it is on its way.
pub async fn log_out_if_unused(
    link: &LinkHandle,
    logins: &Arc<Logins>,
    token: &str,
    generation: u64,
) {
    let (logins, handset, tok) = (logins.clone(), link.name().to_owned(), token.to_owned());
    let logout = Request::Logout {
        container: token.to_owned(),
    };
    let wanted = move |now: u64| now == generation && logins.may_log_out(&handset, &tok, now);
    match link.call_if(DAEMON, logout, wanted).await {
        Ok(Some(_)) => log::debug!("handset '{}' logged out of '{token}'", link.name()),
        Ok(None) => log::debug!("'{token}' on '{}' is still in use", link.name()),
        // Nothing to undo: a session that failed has no logins left.
        Err(e) => log::debug!("logging '{}' out of '{token}': {e}", link.name()),
    }
}

/// [`log_out_if_unused`] without waiting for the handset: queued now as
/// `caller`'s, so that it goes before any later request of that caller,
/// and the caller is answered at once.
pub async fn queue_log_out_if_unused(
    link: &LinkHandle,
    logins: &Arc<Logins>,
    caller: &str,
    token: &str,
    generation: u64,
) {
    let (logins, handset, tok) = (logins.clone(), link.name().to_owned(), token.to_owned());
    let logout = Request::Logout {
        container: token.to_owned(),
    };
    let wanted = move |now: u64| now == generation && logins.may_log_out(&handset, &tok, now);
    if let Err(e) = link.queue_if(caller, logout, wanted).await {
        // Nothing to undo: a session that failed has no logins left.
        log::debug!("logging '{}' out of '{token}': {e}", link.name());
    }
}
