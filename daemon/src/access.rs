//! Who may use which token. A caller is known by the uid (and groups) the
//! bus reports for its connection, never by anything it says; each token's
//! allow list (or the default one) names users and groups, resolved to ids
//! once when the daemon starts.

use std::collections::HashSet;

use crate::config::{AccessList, Config};

/// Who is calling, as the bus says.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its unique bus name, which its login records are kept under.
    pub name: String,
    pub uid: u32,
    pub gids: Vec<u32>,
    /// The program behind the connection, to show the phone's owner when
    /// asked to approve (`name (pid N)`, from the bus's process id and
    /// `/proc/PID/comm`). Display text the caller controls: never a
    /// basis for a decision.
    pub program: Option<String>,
}

/// An allow list with names resolved to ids.
#[derive(Debug, Clone, Default)]
struct Allowed {
    uids: HashSet<u32>,
    gids: HashSet<u32>,
}

/// Resolves `names` (numbers or names) to ids with `by_name`.
fn resolve(names: &[String], what: &str, by_name: impl Fn(&str) -> Option<u32>) -> HashSet<u32> {
    names
        .iter()
        .filter_map(|n| {
            let id = n.parse::<u32>().ok().or_else(|| by_name(n));
            if id.is_none() {
                log::warn!("allow list: no {what} '{n}'");
            }
            id
        })
        .collect()
}

impl Allowed {
    fn resolve(list: &AccessList) -> Allowed {
        Allowed {
            uids: resolve(&list.users, "user", |u| {
                Some(nix::unistd::User::from_name(u).ok()??.uid.as_raw())
            }),
            gids: resolve(&list.groups, "group", |g| {
                Some(nix::unistd::Group::from_name(g).ok()??.gid.as_raw())
            }),
        }
    }

    fn permits(&self, c: &Caller) -> bool {
        self.uids.contains(&c.uid) || c.gids.iter().any(|g| self.gids.contains(g))
    }
}

/// The allow lists of the configuration, resolved.
pub struct Access {
    own_uid: u32,
    default: Allowed,
    /// (handset, if the entry names one; token; who may use it).
    tokens: Vec<(Option<String>, String, Allowed)>,
}

impl Access {
    pub fn new(config: &Config) -> Access {
        Access {
            own_uid: nix::unistd::getuid().as_raw(),
            default: Allowed::resolve(&config.access),
            tokens: config
                .tokens
                .iter()
                .map(|t| {
                    (
                        t.handset.clone(),
                        t.name.clone(),
                        Allowed::resolve(&t.allow),
                    )
                })
                .collect(),
        }
    }

    /// Whether `c` may use `token` on `handset`: root always; else the
    /// token's own list (one naming the handset first), or the default.
    pub fn allowed(&self, c: &Caller, handset: &str, token: &str) -> bool {
        if c.uid == 0 {
            return true;
        }
        let entry = |h: Option<&str>| {
            self.tokens
                .iter()
                .find(|(eh, t, _)| t == token && eh.as_deref() == h)
        };
        match entry(Some(handset)).or_else(|| entry(None)) {
            Some((_, _, a)) => a.permits(c),
            None => self.default.permits(c),
        }
    }

    /// Whether `c` may use some token of `handset`: root, the default list,
    /// or a token entry (for that handset or for any) that lets it in.
    /// Random numbers from the handset and its listing need this.
    pub fn may_use_handset(&self, c: &Caller, handset: &str) -> bool {
        c.uid == 0
            || self.default.permits(c)
            || self
                .tokens
                .iter()
                .any(|(h, _, a)| h.as_deref().is_none_or(|h| h == handset) && a.permits(c))
    }

    /// Root, or the daemon's own user: may see handsets' device paths and
    /// key fingerprints (and pair and unpair without asking polkit, which
    /// `polkit::authorize` decides for itself).
    pub fn is_admin(&self, c: &Caller) -> bool {
        c.uid == 0 || c.uid == self.own_uid
    }
}

/// The groups of `uid`, when the bus does not report them.
pub fn groups_of(uid: u32) -> Vec<u32> {
    let Ok(Some(user)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) else {
        return Vec::new();
    };
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return vec![user.gid.as_raw()];
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid.as_raw()])
}
