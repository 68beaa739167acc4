//! Which tokens the module offers to the program that loaded it. By
//! default every token but those a disk volume was enrolled to
//! (`token_flags::DISK`): a program such as ssh-agent logs in to every
//! token it is offered with the one PIN it asked for, and each wrong PIN
//! spends one of the disk container's tries. A person can name exactly
//! the tokens to offer, as `token` or `handset/token`, in
//! `PHONECSP_PKCS11_TOKENS` (comma-separated) or, failing that, in
//! `$XDG_CONFIG_HOME/phonecsp/pkcs11-tokens` (else
//! `~/.config/phonecsp/pkcs11-tokens`; one per line, `#` comments).

use std::path::PathBuf;

use phonecsp::TokenEntry;
use phonecsp_protocol::message::token_flags;

pub const ENV: &str = "PHONECSP_PKCS11_TOKENS";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenFilter {
    /// The tokens named, if any were.
    only: Option<Vec<String>>,
}

fn config_file() -> Option<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(std::env::var_os("HOME")?).join(".config"),
    };
    Some(base.join("phonecsp").join("pkcs11-tokens"))
}

impl TokenFilter {
    /// The filter the environment and the person's configuration give.
    pub fn from_environment() -> TokenFilter {
        if let Some(list) = std::env::var_os(ENV) {
            return TokenFilter::parse(&list.to_string_lossy().replace(',', "\n"));
        }
        match config_file().and_then(|f| std::fs::read_to_string(f).ok()) {
            Some(text) => TokenFilter::parse(&text),
            None => TokenFilter::default(),
        }
    }

    /// One name a line; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> TokenFilter {
        let names: Vec<String> = text
            .lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect();
        TokenFilter {
            only: (!names.is_empty()).then_some(names),
        }
    }

    /// Whether the module offers `t` as a slot.
    pub fn offers(&self, t: &TokenEntry) -> bool {
        match &self.only {
            Some(names) => names
                .iter()
                .any(|n| *n == t.token || *n == format!("{}/{}", t.handset, t.token)),
            None => t.flags & token_flags::DISK == 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, flags: u32) -> TokenEntry {
        TokenEntry {
            handset: "phone".into(),
            token: name.into(),
            flags,
        }
    }

    #[test]
    fn disk_tokens_are_offered_only_when_named() {
        let (ssh, disk) = (token("ssh", 0), token("disk", token_flags::DISK));
        let default = TokenFilter::default();
        assert!(default.offers(&ssh) && !default.offers(&disk));
        let named = TokenFilter::parse("# mine\nphone/disk\n\n");
        assert!(named.offers(&disk) && !named.offers(&ssh));
        let both = TokenFilter::parse("ssh\ndisk # the disk too");
        assert!(both.offers(&ssh) && both.offers(&disk));
        assert_eq!(TokenFilter::parse(" \n# nothing\n"), TokenFilter::default());
    }
}
