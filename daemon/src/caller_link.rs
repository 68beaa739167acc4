//! The daemon's end of the typed call layer ([`phonecsp::handset`]): a
//! [`CallerLink`] carries one caller's requests about one token on a
//! handset's link, and keeps the login records ([`Logins`]) true to what
//! the handset answers: a Login it carried is recorded for its caller, a
//! "not logged in" from the handset clears the token's records, and the
//! logged-in flag of a listing or token info says whether the handset kept
//! an earlier session's login (its grace period). Logging the handset out
//! when nobody needs its login any more is here too.

use std::sync::Arc;

use phonecsp::Error;
use phonecsp::handset::HandsetLink;
use phonecsp_protocol::{CkRv, Reply, Request};

use crate::link::{IfWanted, LinkHandle};
use crate::logins::{Logins, Stamps};
use phonecsp_protocol::message::token_flags::LOGGED_IN;

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
    /// The caller's program, named to the handset with the requests its
    /// owner may be asked to approve.
    program: Option<String>,
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
            program: None,
        }
    }

    /// Names `program` to the handset with the requests its owner may be
    /// asked to approve.
    pub fn for_program(mut self, program: Option<String>) -> CallerLink {
        self.program = program;
        self
    }

    /// Sends a request, with the caller's program where it takes one.
    async fn send(&self, request: Request) -> Result<Reply, Error> {
        let program = self.program.clone().filter(|_| request.takes_program());
        self.link.call_for(&self.caller, request, program).await
    }

    /// Records what a reply says of the handset's logins in session
    /// `generation` (see [`Logins::observe`]); `stamps` were taken before
    /// the request went.
    fn observe(&self, reply: &Reply, generation: u64, stamps: &Stamps) {
        let handset = self.link.name();
        let stamp = |token: &str| stamps.iter().find(|(t, _)| t == token).map_or(0, |s| s.1);
        match reply {
            Reply::TokenInfo(t) => {
                let on = t.flags & LOGGED_IN != 0;
                self.logins
                    .observe(handset, &t.name, generation, stamp(&t.name), on);
            }
            Reply::Containers(list) => {
                for t in list {
                    let on = t.flags & LOGGED_IN != 0;
                    self.logins
                        .observe(handset, &t.name, generation, stamp(&t.name), on);
                }
            }
            _ => {}
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
        let handset = self.link.name();
        let generation = self.link.generation();
        let stamps = self.logins.stamps(handset);
        let Some(token) = self.token.as_deref() else {
            let r = self.send(request).await;
            if let (Ok(reply), Some(g)) = (&r, generation) {
                self.observe(reply, g, &stamps);
            }
            return r;
        };
        if matches!(&request, Request::Login { container, .. } if container == token) {
            return self.login(token, request).await;
        }
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
        let r = self.send(request).await;
        if let (Ok(reply), Some(g)) = (&r, generation) {
            self.observe(reply, g, &stamps);
        }
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
    let logout = logout_if_unused(link, logins, token, generation);
    match link.call_if(DAEMON, logout).await {
        Ok(Some(_)) => log::debug!("handset '{}' logged out of '{token}'", link.name()),
        Ok(None) => log::debug!("'{token}' on '{}' is still in use", link.name()),
        // Nothing to undo: a session that failed has no logins left.
        Err(e) => log::debug!("logging '{}' out of '{token}': {e}", link.name()),
    }
}

/// The Logout of `token` and the test made when its turn comes: the
/// session is still `generation` and nobody holds or awaits a login.
fn logout_if_unused(
    link: &LinkHandle,
    logins: &Arc<Logins>,
    token: &str,
    generation: u64,
) -> IfWanted {
    let (logins, handset, tok) = (logins.clone(), link.name().to_owned(), token.to_owned());
    let logout = Request::Logout {
        container: token.to_owned(),
    };
    let wanted = move |now: u64| now == generation && logins.may_log_out(&handset, &tok, now);
    IfWanted::new(logout, wanted)
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
    let logout = logout_if_unused(link, logins, token, generation);
    if let Err(e) = link.queue_if(caller, logout).await {
        // Nothing to undo: a session that failed has no logins left.
        log::debug!("logging '{}' out of '{token}': {e}", link.name());
    }
}
