//! A key's CKA_ID as people type it: hex, with or without a `0x` prefix
//! or colons. Shared by the argument definitions and the command groups.

use std::str::FromStr;

/// A CKA_ID given in hex (`0a1b`, `0A:1B` and `0x0a1b` are all accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Id(pub(crate) Vec<u8>);

impl FromStr for Id {
    type Err = String;

    fn from_str(s: &str) -> Result<Id, String> {
        let t = s.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        let digits: Vec<u8> = t.bytes().filter(|b| *b != b':').collect();
        if digits.is_empty() {
            return Err("an empty id: give the CKA_ID in hex, e.g. 01".into());
        }
        let pairs = digits.chunks_exact(2);
        if !pairs.remainder().is_empty() {
            return Err(format!("'{s}' has an odd number of hex digits"));
        }
        pairs
            .map(|pair| {
                let hi = (pair[0] as char).to_digit(16);
                let lo = (pair[1] as char).to_digit(16);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
                    _ => Err(format!("'{s}' is not hex")),
                }
            })
            .collect::<Result<Vec<u8>, String>>()
            .map(Id)
    }
}
