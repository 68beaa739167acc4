//! The containers each handset was last seen with, so that a handset that
//! is away still has its tokens listed (flagged `token_flags::AWAY`): a
//! PKCS#11 application that starts while the phone is away then finds the
//! slot it remembers, without a token, rather than no slot at all. Kept in
//! memory and in `handsets/<name>.tokens` under the state directory (one
//! `flags name` line per container), so that a restarted daemon remembers
//! too. Only names and flags are kept; nothing secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use phonecsp_protocol::message::token_flags;

use crate::lock;
use crate::state::write_private;

/// A container as last listed: its name and the handset's flags for it.
pub type Seen = (String, u32);

pub struct Known {
    dir: PathBuf,
    seen: Mutex<BTreeMap<String, Vec<Seen>>>,
}

fn file(dir: &Path, handset: &str) -> PathBuf {
    dir.join("handsets").join(format!("{handset}.tokens"))
}

/// The containers in a `handsets/<name>.tokens` file's text, as
/// [`Known::load`] reads them. Public for the `daemon_state` fuzz target.
pub fn parse(text: &str) -> Vec<Seen> {
    text.lines()
        .filter_map(|l| {
            let (flags, name) = l.split_once(' ')?;
            Some((name.to_owned(), flags.parse().ok()?))
        })
        .collect()
}

/// The text of a `handsets/<name>.tokens` file: one `flags name` line per
/// container. Public for the `daemon_state` fuzz target's round trip.
pub fn encode(seen: &[Seen]) -> String {
    seen.iter().map(|(n, f)| format!("{f} {n}\n")).collect()
}

impl Known {
    /// What the state directory `dir` remembers of `handsets`.
    pub fn load<'a>(dir: &Path, handsets: impl IntoIterator<Item = &'a str>) -> Known {
        let seen = handsets
            .into_iter()
            .filter_map(|h| {
                let text = std::fs::read_to_string(file(dir, h)).ok()?;
                Some((h.to_owned(), parse(&text)))
            })
            .collect();
        Known {
            dir: dir.to_owned(),
            seen: Mutex::new(seen),
        }
    }

    /// The flags `token` of `handset` was last listed with.
    pub fn flags(&self, handset: &str, token: &str) -> Option<u32> {
        let seen = lock(&self.seen);
        let containers = seen.get(handset)?;
        containers.iter().find(|(n, _)| n == token).map(|(_, f)| *f)
    }

    /// `handset`'s containers as just listed; written down when they
    /// changed. A failed write is logged: the memory is a convenience.
    pub fn remember(&self, handset: &str, now: Vec<Seen>) {
        // A login is the moment's, not the container's.
        let now: Vec<Seen> = now
            .into_iter()
            .map(|(n, f)| (n, f & !token_flags::LOGGED_IN))
            .collect();
        let mut seen = lock(&self.seen);
        if seen.get(handset) == Some(&now) {
            return;
        }
        let text = encode(&now);
        if let Err(e) = write_private(&file(&self.dir, handset), text.as_bytes()) {
            log::warn!("remembering the tokens of '{handset}': {e}");
        }
        seen.insert(handset.to_owned(), now);
    }

    /// The containers `handset` was last seen with, flagged as away.
    pub fn away(&self, handset: &str) -> Vec<Seen> {
        lock(&self.seen)
            .get(handset)
            .map(|v| {
                v.iter()
                    .map(|(n, f)| (n.clone(), f | token_flags::AWAY))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forgets `handset` (unpaired).
    pub fn forget(&self, handset: &str) {
        lock(&self.seen).remove(handset);
        let _ = std::fs::remove_file(file(&self.dir, handset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_across_restarts_and_flags_the_absent() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("handsets")).unwrap();
        let k = Known::load(dir.path(), ["phone"]);
        assert!(k.away("phone").is_empty());
        k.remember(
            "phone",
            vec![(
                "ssh".into(),
                token_flags::LOGIN_REQUIRED | token_flags::LOGGED_IN,
            )],
        );
        let again = Known::load(dir.path(), ["phone", "other"]);
        assert_eq!(
            again.away("phone"),
            vec![(
                "ssh".into(),
                token_flags::LOGIN_REQUIRED | token_flags::AWAY
            )]
        );
        assert!(again.away("other").is_empty());
        again.forget("phone");
        assert!(Known::load(dir.path(), ["phone"]).away("phone").is_empty());
    }
}
