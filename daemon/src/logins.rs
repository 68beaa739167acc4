//! Who is logged in to which token. The handset keeps one login per token
//! for the daemon's whole session with it; the daemon shares that login
//! among its callers and records, per caller, that it logged in. The
//! handset is logged out of a token only when nobody holds such a record
//! and nobody's Login is on its way (see [`Logins::may_log_out`]), judged
//! by the link task when the Logout's turn comes, not when it was queued.
//!
//! A handset keeps a session's login for the container's grace period
//! after the link drops (docs/store.md), and gives it to the same
//! computer's next session. A record of an earlier session is therefore
//! not dead at once: it is carried into the new session when the handset
//! says it is logged in there, and dropped when it says it is not
//! ([`Logins::observe`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// (handset, token).
type Token = (String, String);

/// Each token's stamp (see [`Logins::stamp`]) on one handset.
pub type Stamps = Vec<(String, u64)>;

#[derive(Debug, Clone, Copy)]
struct Record {
    /// The link session the login was made in; a new session has none.
    generation: u64,
    /// When, among the token's logins, it was made (see [`Logins::stamp`]).
    stamp: u64,
}

#[derive(Debug, Default)]
struct TokenState {
    /// Holds on the token (see [`Logins::hold`]).
    held: usize,
    /// A Logout was left out because of a hold while no login was recorded.
    logout_owed: bool,
    /// The stamp of the token's latest recorded login.
    stamp: u64,
}

#[derive(Debug, Default)]
struct Table {
    /// (caller, handset, token) -> its login.
    records: HashMap<(String, String, String), Record>,
    tokens: HashMap<Token, TokenState>,
    /// (caller, handset, token) whose login the handset did not keep
    /// across a reconnect, until the caller logs in again or leaves: so
    /// that its refusal can say why.
    lapsed: std::collections::HashSet<(String, String, String)>,
}

/// The login records of every caller, behind one lock that is never held
/// across an await.
#[derive(Debug, Default)]
pub struct Logins {
    table: Mutex<Table>,
}

fn key(caller: &str, handset: &str, token: &str) -> (String, String, String) {
    (caller.to_owned(), handset.to_owned(), token.to_owned())
}

fn token(handset: &str, token: &str) -> Token {
    (handset.to_owned(), token.to_owned())
}

impl Logins {
    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every change is a single insert or remove: a panic elsewhere
        // cannot leave the table half-changed, so poisoning is not fatal.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps the token in use while the guard lives: a Login on its way
    /// to the handset, or work that uses the handset's login without a
    /// record of its own (a disk key being unwrapped).
    pub fn hold(&self, handset: &str, tok: &str) -> Hold<'_> {
        self.lock()
            .tokens
            .entry(token(handset, tok))
            .or_default()
            .held += 1;
        Hold {
            logins: self,
            handset: handset.to_owned(),
            token: tok.to_owned(),
        }
    }

    /// Whether `caller` logged in to the token in session `generation`.
    pub fn logged_in(&self, caller: &str, handset: &str, token: &str, generation: u64) -> bool {
        self.lock()
            .records
            .get(&key(caller, handset, token))
            .is_some_and(|r| r.generation == generation)
    }

    /// Drops `caller`'s login; the session it was made in, if it had one.
    pub fn remove(&self, caller: &str, handset: &str, token: &str) -> Option<u64> {
        let mut t = self.lock();
        t.lapsed.remove(&key(caller, handset, token));
        t.records
            .remove(&key(caller, handset, token))
            .map(|r| r.generation)
    }

    /// Drops every login of `caller`: (handset, token, generation) of each.
    pub fn remove_caller(&self, caller: &str) -> Vec<(String, String, u64)> {
        let mut t = self.lock();
        t.lapsed.retain(|k| k.0 != caller);
        let mine: Vec<_> = t
            .records
            .keys()
            .filter(|k| k.0 == caller)
            .cloned()
            .collect();
        mine.into_iter()
            .filter_map(|k| t.records.remove(&k).map(|r| (k.1, k.2, r.generation)))
            .collect()
    }

    /// A mark of the token's logins so far, taken before a request is sent,
    /// for [`Logins::forget_until`] when its reply says the handset has no
    /// login.
    pub fn stamp(&self, handset: &str, tok: &str) -> u64 {
        self.lock()
            .tokens
            .get(&token(handset, tok))
            .map_or(0, |s| s.stamp)
    }

    /// Every token's stamp on `handset`, for [`Logins::observe`].
    pub fn stamps(&self, handset: &str) -> Stamps {
        self.lock()
            .tokens
            .iter()
            .filter(|((h, _), _)| h == handset)
            .map(|((_, t), s)| (t.clone(), s.stamp))
            .collect()
    }

    /// Whether `caller`'s login to the token lapsed because the handset did
    /// not keep it across a reconnect (see [`Logins::observe`]).
    pub fn lapsed(&self, caller: &str, handset: &str, token: &str) -> bool {
        self.lock().lapsed.contains(&key(caller, handset, token))
    }

    /// Whether `caller` logged in to the token in a session before
    /// `generation`: a login the handset may have kept for this one.
    pub fn carried(&self, caller: &str, handset: &str, token: &str, generation: u64) -> bool {
        self.lock()
            .records
            .get(&key(caller, handset, token))
            .is_some_and(|r| r.generation < generation)
    }

    /// What the handset said of its login to the token in session
    /// `generation`, answering a request sent when the token's stamp was
    /// `stamp`. Logged in, with no login of this session recorded, on its
    /// way, or recorded since the request: it kept the earlier session's
    /// login, whose records are this session's now. Any of those would
    /// make "logged in" that login's, and then nothing is carried (those
    /// callers log in again). Not logged in: the earlier records are dead.
    pub fn observe(&self, handset: &str, tok: &str, generation: u64, stamp: u64, logged_in: bool) {
        let mut t = self.lock();
        let of_token = |k: &(String, String, String)| k.1 == handset && k.2 == tok;
        if !logged_in {
            let lapsed: Vec<_> = t
                .records
                .iter()
                .filter(|(k, r)| of_token(k) && r.generation < generation)
                .map(|(k, _)| k.clone())
                .collect();
            for k in lapsed {
                t.records.remove(&k);
                t.lapsed.insert(k);
            }
            return;
        }
        let quiet = t
            .tokens
            .get(&token(handset, tok))
            .is_none_or(|s| s.held == 0 && s.stamp == stamp);
        let fresh = t
            .records
            .iter()
            .any(|(k, r)| of_token(k) && r.generation >= generation);
        if !quiet || fresh {
            return;
        }
        for (k, r) in t.records.iter_mut() {
            if of_token(k) && r.generation < generation {
                r.generation = generation;
            }
        }
    }

    /// The handset has no login to the token (it said so, or dropped them
    /// all): forget every record made up to `stamp`. A login recorded
    /// since may have been served after that reply, so it stays.
    pub fn forget_until(&self, handset: &str, token: &str, stamp: u64) {
        self.lock()
            .records
            .retain(|k, r| !(k.1 == handset && k.2 == token && r.stamp <= stamp));
    }

    /// Whether the handset may be logged out of the token, for a Logout
    /// meant for session `generation`: nobody holds a login to it in that
    /// session and nothing holds the token. Asked by the link task when the
    /// Logout's turn comes. A Logout left out only because of a hold is
    /// owed: [`Hold::release`] says so.
    pub fn may_log_out(&self, handset: &str, tok: &str, generation: u64) -> bool {
        let mut t = self.lock();
        if t.records
            .iter()
            .any(|(k, r)| k.1 == handset && k.2 == tok && r.generation == generation)
        {
            return false;
        }
        match t.tokens.get_mut(&token(handset, tok)) {
            Some(s) if s.held > 0 => {
                s.logout_owed = true;
                false
            }
            _ => true,
        }
    }
}

/// A hold on a token (see [`Logins::hold`]).
pub struct Hold<'a> {
    logins: &'a Logins,
    handset: String,
    token: String,
}

impl Hold<'_> {
    /// The handset accepted the Login that `caller` sent in session
    /// `generation`.
    pub fn succeeded(self, caller: &str, generation: u64) {
        let mut t = self.logins.lock();
        let s = t
            .tokens
            .entry(token(&self.handset, &self.token))
            .or_default();
        s.stamp += 1;
        s.logout_owed = false;
        let stamp = s.stamp;
        t.lapsed.remove(&key(caller, &self.handset, &self.token));
        t.records.insert(
            key(caller, &self.handset, &self.token),
            Record { generation, stamp },
        );
        // Recorded before the hold ends (in drop, after this lock is
        // released), so the token never looks unused in between.
    }

    /// Ends the hold; `true` if a Logout was left out because of it (or
    /// another hold since ended) and the token is now unused, so the
    /// caller should ask for it again.
    pub fn release(self) -> bool {
        let mut t = self.logins.lock();
        let recorded = t
            .records
            .keys()
            .any(|k| k.1 == self.handset && k.2 == self.token);
        match t.tokens.get_mut(&token(&self.handset, &self.token)) {
            Some(s) if s.logout_owed && s.held == 1 && !recorded => {
                s.logout_owed = false;
                true
            }
            _ => false,
        }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Some(s) = self
            .logins
            .lock()
            .tokens
            .get_mut(&token(&self.handset, &self.token))
        {
            s.held = s.held.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_on_its_way_keeps_the_token_in_use() {
        let l = Logins::default();
        let p = l.hold("phone", "ssh");
        assert!(!l.may_log_out("phone", "ssh", 1));
        // The Logout left out is owed once the Login fails.
        assert!(p.release());
        assert!(l.may_log_out("phone", "ssh", 1));
        l.hold("phone", "ssh").succeeded("a", 1);
        assert!(!l.may_log_out("phone", "ssh", 1));
        assert!(l.logged_in("a", "phone", "ssh", 1));
        // A login of an older session holds nothing.
        assert!(!l.logged_in("a", "phone", "ssh", 2));
        assert!(l.may_log_out("phone", "ssh", 2));
        assert_eq!(l.remove("a", "phone", "ssh"), Some(1));
        assert!(l.may_log_out("phone", "ssh", 1));
        // Nothing is owed where nothing was left out.
        assert!(!l.hold("phone", "ssh").release());
    }

    /// Issue 13, item 4: a login of an earlier session is carried into
    /// the new one when the handset says it kept it, dropped when it says
    /// it did not, and not carried where the handset's login may be one
    /// made in the new session.
    #[test]
    fn a_kept_login_is_carried_into_the_new_session() {
        let l = Logins::default();
        l.hold("phone", "ssh").succeeded("a", 1);
        l.hold("phone", "web").succeeded("a", 1);
        assert!(l.carried("a", "phone", "ssh", 2));
        assert!(!l.logged_in("a", "phone", "ssh", 2));
        let stamps = |t: &str| {
            l.stamps("phone")
                .into_iter()
                .find(|(n, _)| n == t)
                .map_or(0, |s| s.1)
        };
        l.observe("phone", "ssh", 2, stamps("ssh"), true);
        l.observe("phone", "web", 2, stamps("web"), false);
        assert!(l.logged_in("a", "phone", "ssh", 2));
        assert!(!l.carried("a", "phone", "web", 2));
        assert!(!l.logged_in("a", "phone", "web", 2));
        // The lapsed login is told as such until the caller logs in again.
        assert!(l.lapsed("a", "phone", "web") && !l.lapsed("a", "phone", "ssh"));

        // A Login recorded in the new session (or on its way) makes the
        // handset's "logged in" its own: nothing earlier is carried.
        l.hold("phone", "web").succeeded("a", 1);
        let before = stamps("web");
        l.hold("phone", "web").succeeded("b", 3);
        l.observe("phone", "web", 3, before, true);
        assert!(!l.logged_in("a", "phone", "web", 3));
        let hold = l.hold("phone", "ssh");
        l.observe("phone", "ssh", 3, stamps("ssh"), true);
        assert!(!l.logged_in("a", "phone", "ssh", 3));
        drop(hold);
        l.observe("phone", "ssh", 3, stamps("ssh"), true);
        assert!(l.logged_in("a", "phone", "ssh", 3));
    }

    #[test]
    fn only_logins_before_a_refusal_are_forgotten() {
        let l = Logins::default();
        l.hold("phone", "ssh").succeeded("a", 1);
        l.hold("phone", "other").succeeded("a", 1);
        let before = l.stamp("phone", "ssh");
        l.hold("phone", "ssh").succeeded("b", 1);
        l.forget_until("phone", "ssh", before);
        assert!(!l.logged_in("a", "phone", "ssh", 1));
        assert!(l.logged_in("b", "phone", "ssh", 1));
        assert!(l.logged_in("a", "phone", "other", 1));
        assert_eq!(
            l.remove_caller("a"),
            vec![("phone".to_owned(), "other".to_owned(), 1)]
        );
    }
}
