//! The session announcement (docs/protocol.md section 5.9): in the payload
//! of KK message 2 the handset names each container the connecting host
//! may use, with its flags and its **version**, a value that changes
//! whenever anything the host could read of the container changes. A host
//! that kept a container's public data under that version may serve it
//! without asking; one that sees another version, or no entry, may not.
//! It rides on a message that is sent anyway, so it costs no round trip.
//!
//! The payload may carry other lines too (the capabilities of section
//! 5.5), which are left alone. A payload without a `+CKANN` line is no
//! announcement (a handset of before this section, or one whose
//! announcement would not fit its line), and so is one of a format this
//! host does not know: the host falls back to asking, as it did before.

use crate::at::{Params, ParseError, check_text, quote};
use crate::limits::MAX_NAME_LEN;
use crate::message::info_params;

/// The announcement format this code writes and reads.
pub const ANNOUNCEMENT_FORMAT: u64 = 1;

/// One container as announced: `+CKANC: "<name>",<flags>,<version>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub name: String,
    /// The flags `+CKLIST` would give it now (section 8).
    pub flags: u32,
    /// Opaque: equal means unchanged, anything else means changed.
    pub version: u64,
}

/// What a handset announces when a session opens.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Announcement {
    pub containers: Vec<Announced>,
}

impl Announcement {
    /// The payload: `+CKANN: 1`, then one `+CKANC:` line per container,
    /// joined by CR LF.
    pub fn encode(&self) -> Result<Vec<u8>, ParseError> {
        let mut lines = vec![format!("+CKANN: {ANNOUNCEMENT_FORMAT}")];
        for c in &self.containers {
            lines.push(format!(
                "+CKANC: {},{},{}",
                quote(&c.name)?,
                c.flags,
                c.version
            ));
        }
        Ok(lines.join("\r\n").into_bytes())
    }

    /// Reads a KK message 2 payload: `Ok(None)` for no announcement (an
    /// empty payload, or a format other than [`ANNOUNCEMENT_FORMAT`]); an
    /// error for a payload of this format that breaks its grammar, which
    /// a host then treats as no announcement too.
    pub fn parse(payload: &[u8]) -> Result<Option<Announcement>, ParseError> {
        if payload.is_empty() {
            return Ok(None);
        }
        let text = std::str::from_utf8(payload)
            .map_err(|_| ParseError::Syntax("announcement is not text"))?;
        // The payload may hold other lines (the capabilities of section
        // 5.5), which are not the announcement's to judge.
        let mut format = None;
        let mut containers: Vec<Announced> = Vec::new();
        for line in text.split("\r\n") {
            if line.starts_with("+CKANN:") {
                if format.is_some() {
                    return Err(ParseError::Syntax("two announcements"));
                }
                let p = info_params(line, "+CKANN")?;
                p.expect_count(1, 1)?;
                format = Some(p.number(0)?);
                continue;
            }
            if !line.starts_with("+CKANC:") {
                continue;
            }
            match format {
                None => return Err(ParseError::Syntax("+CKANC before +CKANN")),
                Some(ANNOUNCEMENT_FORMAT) => {}
                // A later format's lines are its own.
                Some(_) => continue,
            }
            let p: Params = info_params(line, "+CKANC")?;
            p.expect_count(3, 3)?;
            let name = p.text(0)?.to_owned();
            if name.is_empty() || name.len() > MAX_NAME_LEN {
                return Err(ParseError::Syntax("container name length"));
            }
            check_text(&name)?;
            if containers.iter().any(|c| c.name == name) {
                return Err(ParseError::Syntax("container announced twice"));
            }
            containers.push(Announced {
                name,
                flags: p.u32(1)?,
                version: p.number(2)?,
            });
        }
        match format {
            Some(ANNOUNCEMENT_FORMAT) => Ok(Some(Announcement { containers })),
            _ => Ok(None),
        }
    }

    pub fn get(&self, name: &str) -> Option<&Announced> {
        self.containers.iter().find(|c| c.name == name)
    }
}

/// The longest payload whose KK message 2 still fits a `+CKHS:` line of
/// `max_line` bytes: the line is `+CKHS: "<base64>"` (9 bytes around the
/// base64), and message 2 is its payload plus 48 bytes (the ephemeral key
/// and the payload's tag).
pub fn max_payload(max_line: usize) -> usize {
    ((max_line.saturating_sub(9)) / 4 * 3).saturating_sub(48)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Announcement {
        Announcement {
            containers: vec![
                Announced {
                    name: "ssh".into(),
                    flags: 1,
                    version: 0x9f3a_61c2_e0d4_b857,
                },
                Announced {
                    name: "disk".into(),
                    flags: 17,
                    version: 0,
                },
            ],
        }
    }

    #[test]
    fn round_trips_and_reads_as_specified() {
        let bytes = sample().encode().unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "+CKANN: 1\r\n+CKANC: \"ssh\",1,11473590490303346775\r\n+CKANC: \"disk\",17,0"
        );
        assert_eq!(Announcement::parse(&bytes).unwrap(), Some(sample()));
        let none = Announcement::default().encode().unwrap();
        assert_eq!(
            Announcement::parse(&none).unwrap(),
            Some(Announcement::default())
        );
    }

    #[test]
    fn other_lines_are_left_alone() {
        let mut bytes = b"+CKCAP: \"bin1\"\r\n".to_vec();
        bytes.extend(sample().encode().unwrap());
        bytes.extend(b"\r\n+CKWHATEVER: 1");
        assert_eq!(Announcement::parse(&bytes).unwrap(), Some(sample()));
        assert_eq!(Announcement::parse(b"+CKCAP: \"bin1\"").unwrap(), None);
    }

    #[test]
    fn no_announcement_and_other_formats_are_none() {
        assert_eq!(Announcement::parse(b"").unwrap(), None);
        assert_eq!(
            Announcement::parse(b"+CKANN: 2\r\n+CKANX: whatever").unwrap(),
            None
        );
    }

    #[test]
    fn a_broken_announcement_is_an_error() {
        for (bad, why) in [
            (&b"+CKANN: 1\r\n+CKANC: \"ssh\",1"[..], "a field missing"),
            (
                b"+CKANN: 1\r\n+CKANC: \"ssh\",1,2\r\n+CKANC: \"ssh\",1,3",
                "a container twice",
            ),
            (b"+CKANN: 1\r\n+CKANC: \"\",1,2", "an empty name"),
            (
                b"+CKANN: 1\r\n+CKANC: \"ssh\",4294967296,2",
                "flags beyond 32 bits",
            ),
            (
                b"+CKANN: 1\r\n+CKANC: \"ssh\",1,18446744073709551616",
                "a version beyond 64 bits",
            ),
            (b"+CKANC: \"ssh\",1,2\r\n+CKANN: 1", "a container first"),
            (b"+CKANN: 1\r\n+CKANN: 1", "the header twice"),
            (b"\xff", "not text"),
            (b"+CKANN: x", "a format that is no number"),
        ] {
            assert!(Announcement::parse(bad).is_err(), "{why}: {bad:?}");
        }
    }

    #[test]
    fn the_payload_bound_keeps_the_line_within_the_limit() {
        for l in [256usize, 300, 4096] {
            let p = max_payload(l);
            let line = 9 + (48 + p).div_ceil(3) * 4;
            assert!(line <= l, "{l}: {line}");
        }
    }
}
