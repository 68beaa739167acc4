//! The tokens disk volumes were enrolled to, flagged `token_flags::DISK`
//! in every listing so that the PKCS#11 module does not offer them to
//! programs such as ssh-agent, whose one PIN would spend their tries.
//! `phonecsp luks enroll` marks its token; an administrator may mark or
//! unmark any. Kept in `disk-tokens` under the state directory, one
//! `handset<TAB>token` line each; names only, nothing secret.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::lock;
use crate::state::write_private;

pub struct DiskTokens {
    file: PathBuf,
    marked: Mutex<BTreeSet<(String, String)>>,
}

impl DiskTokens {
    /// What the state directory `dir` remembers; a missing or unreadable
    /// file is an empty set (the marks are a convenience, not a secret).
    pub fn load(dir: &Path) -> DiskTokens {
        let file = dir.join("disk-tokens");
        let marked = std::fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (h, t) = l.split_once('\t')?;
                Some((h.to_owned(), t.to_owned()))
            })
            .collect();
        DiskTokens {
            file,
            marked: Mutex::new(marked),
        }
    }

    pub fn contains(&self, handset: &str, token: &str) -> bool {
        lock(&self.marked).contains(&(handset.to_owned(), token.to_owned()))
    }

    /// Marks (or unmarks) `handset`/`token`, and writes the set down.
    pub fn set(&self, handset: &str, token: &str, disk: bool) -> std::io::Result<()> {
        let mut marked = lock(&self.marked);
        let key = (handset.to_owned(), token.to_owned());
        let changed = match disk {
            true => marked.insert(key),
            false => marked.remove(&key),
        };
        if !changed {
            return Ok(());
        }
        let text: String = marked.iter().map(|(h, t)| format!("{h}\t{t}\n")).collect();
        write_private(&self.file, text.as_bytes()).map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_survive_a_restart_and_can_be_taken_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = DiskTokens::load(dir.path());
        assert!(!d.contains("phone", "disk"));
        d.set("phone", "disk", true).unwrap();
        d.set("phone", "other disk", true).unwrap();
        let again = DiskTokens::load(dir.path());
        assert!(again.contains("phone", "disk") && again.contains("phone", "other disk"));
        again.set("phone", "disk", false).unwrap();
        assert!(!DiskTokens::load(dir.path()).contains("phone", "disk"));
        assert!(!again.contains("phone", "ssh"));
    }
}
