//! ITU-T V.250 framing: splitting a byte stream into lines, final result
//! codes, and the extended-syntax parameter lists (`+CKX=1,"abc",,7`).
//!
//! Everything here is sans-I/O and total: any byte sequence yields either a
//! value or a [`ParseError`], never a panic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

/// Why a line or command could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("syntax: {0}")]
    Syntax(&'static str),
    #[error("unknown command")]
    UnknownCommand,
    #[error("unknown mechanism")]
    Mechanism,
}

/// Longest line (without its terminator) a handset accepts unless it
/// advertises otherwise in `+CKVER`.
pub const DEFAULT_MAX_LINE: usize = 4096;
/// The smallest line limit a handset may advertise; below this even the
/// handshake commands would not fit.
pub const MIN_MAX_LINE: usize = 256;

/// What a splitter yields for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    Text(String),
    /// The line exceeded the limit; its bytes were dropped up to the terminator.
    TooLong,
    /// The line was not UTF-8 (or held control characters).
    NotText,
}

/// Splits bytes into lines at CR or LF. Empty lines are skipped, so
/// `<CR><LF>OK<CR><LF>` and `AT<CR>` both give one line.
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    discarding: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            discarding: false,
        }
    }

    pub fn set_max(&mut self, max: usize) {
        self.max = max;
    }

    /// Feeds bytes in, returning every line they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<Line> {
        let mut out = Vec::new();
        for &b in bytes {
            if b == b'\r' || b == b'\n' {
                if self.discarding {
                    self.discarding = false;
                    self.buf.clear();
                    out.push(Line::TooLong);
                } else if !self.buf.is_empty() {
                    let raw = std::mem::take(&mut self.buf);
                    out.push(match String::from_utf8(raw) {
                        Ok(s) if !s.chars().any(|c| c.is_control()) => Line::Text(s),
                        _ => Line::NotText,
                    });
                }
            } else if !self.discarding {
                if self.buf.len() >= self.max {
                    self.buf.clear();
                    self.discarding = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
        out
    }
}

/// A final result code, which ends every response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalResult {
    Ok,
    Error,
    CmeError(u16),
}

impl FinalResult {
    pub fn parse(line: &str) -> Option<FinalResult> {
        match line {
            "OK" => Some(FinalResult::Ok),
            "ERROR" => Some(FinalResult::Error),
            _ => {
                let n = line.strip_prefix("+CME ERROR: ")?;
                if n.is_empty() || n.len() > 5 || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                n.parse().ok().map(FinalResult::CmeError)
            }
        }
    }

    pub fn as_line(&self) -> String {
        match self {
            FinalResult::Ok => "OK".into(),
            FinalResult::Error => "ERROR".into(),
            FinalResult::CmeError(n) => format!("+CME ERROR: {n}"),
        }
    }
}

/// `+CME ERROR` codes the handset uses outside a session. 3, 4 and 50 are
/// the 3GPP TS 27.007 meanings; 700 and up are phonecsp's own.
pub mod cme {
    /// Writes each code's constant and [`meaning`], from one row a code:
    /// `NAME = code, "what a person is told";`.
    macro_rules! codes {
        ($($(#[$doc:meta])* $code:ident = $n:literal, $meaning:literal;)*) => {
            $($(#[$doc])* pub const $code: u16 = $n;)*

            /// What the code `n` means, in a few words for a log or a
            /// person; `None` for a code this version does not know.
            pub fn meaning(n: u16) -> Option<&'static str> {
                match n {
                    $($n => Some($meaning),)*
                    _ => None,
                }
            }
        };
    }

    codes! {
        /// The command needs a session (or pairing is not open).
        NOT_ALLOWED = 3, "not allowed outside a session";
        /// Operation not supported. Reserved: an unknown command is answered
        /// with a plain `ERROR` (V.250), and hosts treat 4 the same way.
        NOT_SUPPORTED = 4, "not supported";
        /// Malformed parameters.
        INCORRECT_PARAMETERS = 50, "malformed parameters";
        /// The handshake failed (wrong pairing code, unknown host, bad message).
        HANDSHAKE_FAILED = 701, "the handshake failed";
        /// A frame failed to decrypt (replayed, reordered, altered): the session
        /// is over.
        SESSION_ENDED = 702, "a frame failed to decrypt: the session is over";
        /// The line exceeded the advertised maximum.
        LINE_TOO_LONG = 703, "the line was too long";
        /// A chunked frame grew past the largest Noise message.
        FRAME_TOO_LONG = 704, "the frame was too long";
    }
}

/// Formats an information line as the handset sends it.
pub fn info_line(line: &str) -> Vec<u8> {
    format!("\r\n{line}\r\n").into_bytes()
}

/// Formats a final result as the handset sends it.
pub fn final_line(result: FinalResult) -> Vec<u8> {
    info_line(&result.as_line())
}

/// Formats a command line as the host sends it (`AT` prefix, CR).
pub fn command_line(body: &str) -> Vec<u8> {
    format!("AT{body}\r").into_bytes()
}

/// One parameter of an extended-syntax parameter list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Empty,
    Number(u64),
    Text(String),
}

/// A parsed parameter list with typed, bounds-checked accessors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params(pub Vec<Param>);

impl Params {
    /// Parses `1,"abc",,42`. Strings may hold any printable character but
    /// `"` and `\`; numbers are decimal and fit in a u64.
    pub fn parse(s: &str) -> Result<Params, ParseError> {
        let mut out = Vec::new();
        if s.is_empty() {
            return Ok(Params(out));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        loop {
            // One parameter starts at i.
            let param = match bytes.get(i) {
                None | Some(b',') => Param::Empty,
                Some(b'"') => {
                    let rest = &s[i + 1..];
                    let end = rest
                        .find('"')
                        .ok_or(ParseError::Syntax("unterminated string"))?;
                    let text = &rest[..end];
                    if text.contains('\\') {
                        return Err(ParseError::Syntax("backslash in string"));
                    }
                    i += end + 2;
                    Param::Text(text.to_owned())
                }
                Some(b) if b.is_ascii_digit() => {
                    let start = i;
                    while bytes.get(i).is_some_and(|b| b.is_ascii_digit()) {
                        i += 1;
                    }
                    let n = s[start..i]
                        .parse::<u64>()
                        .map_err(|_| ParseError::Syntax("number out of range"))?;
                    Param::Number(n)
                }
                Some(_) => return Err(ParseError::Syntax("unexpected character in parameters")),
            };
            out.push(param);
            match bytes.get(i) {
                None => break,
                Some(b',') => {
                    i += 1;
                    if i == bytes.len() {
                        out.push(Param::Empty);
                        break;
                    }
                }
                Some(_) => return Err(ParseError::Syntax("expected ','")),
            }
        }
        Ok(Params(out))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Fails unless the list has between `min` and `max` parameters.
    pub fn expect_count(&self, min: usize, max: usize) -> Result<(), ParseError> {
        if self.0.len() < min || self.0.len() > max {
            return Err(ParseError::Syntax("wrong number of parameters"));
        }
        Ok(())
    }

    fn get(&self, i: usize) -> &Param {
        self.0.get(i).unwrap_or(&Param::Empty)
    }

    pub fn is_empty_at(&self, i: usize) -> bool {
        matches!(self.get(i), Param::Empty)
    }

    pub fn text(&self, i: usize) -> Result<&str, ParseError> {
        match self.get(i) {
            Param::Text(t) => Ok(t),
            _ => Err(ParseError::Syntax("expected a string")),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<&str>, ParseError> {
        match self.get(i) {
            Param::Empty => Ok(None),
            _ => self.text(i).map(Some),
        }
    }

    pub fn number(&self, i: usize) -> Result<u64, ParseError> {
        match self.get(i) {
            Param::Number(n) => Ok(*n),
            _ => Err(ParseError::Syntax("expected a number")),
        }
    }

    pub fn opt_number(&self, i: usize) -> Result<Option<u64>, ParseError> {
        match self.get(i) {
            Param::Empty => Ok(None),
            _ => self.number(i).map(Some),
        }
    }

    pub fn u32(&self, i: usize) -> Result<u32, ParseError> {
        u32::try_from(self.number(i)?).map_err(|_| ParseError::Syntax("number out of range"))
    }

    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, ParseError> {
        decode_b64(self.text(i)?)
    }

    pub fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, ParseError> {
        match self.get(i) {
            Param::Empty => Ok(None),
            _ => self.bytes(i).map(Some),
        }
    }
}

/// Splits `+NAME=params`, `+NAME?` or `+NAME: params` into name and params.
pub fn split_extended(body: &str) -> Option<(&str, Option<&str>)> {
    let rest = body.strip_prefix('+')?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric()))
        .unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    if name.is_empty() {
        return None;
    }
    let name = &body[..=name.len()];
    match tail {
        "" => Some((name, None)),
        "?" => Some((name, Some("?"))),
        _ => {
            if let Some(p) = tail.strip_prefix(": ") {
                Some((name, Some(p)))
            } else {
                tail.strip_prefix('=').map(|p| (name, Some(p)))
            }
        }
    }
}

/// Splits a command body `+NAME`, `+NAME?` or `+NAME=params` (never the
/// `+NAME: ` form, which belongs to information lines).
pub fn split_command(body: &str) -> Option<(&str, Option<&str>)> {
    let (name, params) = split_extended(body)?;
    if body.as_bytes().get(name.len()) == Some(&b':') {
        return None;
    }
    Some((name, params))
}

pub fn encode_b64(data: &[u8]) -> String {
    B64.encode(data)
}

/// Appends `data` in base64 to `out`, with no copy in between (the data
/// may be a secret).
pub fn push_b64(data: &[u8], out: &mut String) {
    B64.encode_string(data, out);
}

pub fn decode_b64(s: &str) -> Result<Vec<u8>, ParseError> {
    B64.decode(s)
        .map_err(|_| ParseError::Syntax("invalid base64"))
}

/// Quotes a string parameter, refusing what the grammar cannot carry.
pub fn quote(s: &str) -> Result<String, ParseError> {
    check_text(s)?;
    Ok(format!("\"{s}\""))
}

/// Labels and names travel as quoted strings: no `"`, `\` or control characters.
pub fn check_text(s: &str) -> Result<(), ParseError> {
    if s.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
        return Err(ParseError::Syntax(
            "string holds '\"', '\\' or a control character",
        ));
    }
    Ok(())
}

/// Quotes base64 of binary data.
pub fn quote_b64(data: &[u8]) -> String {
    format!("\"{}\"", encode_b64(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_on_cr_and_lf() {
        let mut s = LineSplitter::new(16);
        let lines = s.push(b"\r\nOK\r\n\r\n+CME ERROR: 3\r\nAT");
        assert_eq!(
            lines,
            vec![Line::Text("OK".into()), Line::Text("+CME ERROR: 3".into())]
        );
        assert_eq!(s.push(b"E0\r"), vec![Line::Text("ATE0".into())]);
    }

    #[test]
    fn overlong_line_is_dropped_and_reported_once() {
        let mut s = LineSplitter::new(4);
        assert_eq!(s.push(b"ABCDEFGH"), vec![]);
        assert_eq!(
            s.push(b"IJ\rOK\r"),
            vec![Line::TooLong, Line::Text("OK".into())]
        );
    }

    #[test]
    fn rejects_non_text() {
        let mut s = LineSplitter::new(16);
        assert_eq!(s.push(b"\xff\xfe\r"), vec![Line::NotText]);
        assert_eq!(s.push(b"a\x07b\r"), vec![Line::NotText]);
    }

    #[test]
    fn parses_params() {
        let p = Params::parse("1,\"ab c\",,42,").unwrap();
        assert_eq!(
            p.0,
            vec![
                Param::Number(1),
                Param::Text("ab c".into()),
                Param::Empty,
                Param::Number(42),
                Param::Empty
            ]
        );
        assert!(Params::parse("\"abc").is_err());
        assert!(Params::parse("1 2").is_err());
        assert!(Params::parse("99999999999999999999999").is_err());
        assert!(Params::parse("\"a\\b\"").is_err());
    }

    #[test]
    fn final_results() {
        assert_eq!(FinalResult::parse("OK"), Some(FinalResult::Ok));
        assert_eq!(
            FinalResult::parse("+CME ERROR: 702"),
            Some(FinalResult::CmeError(702))
        );
        assert_eq!(FinalResult::parse("+CME ERROR: 99999999"), None);
        assert_eq!(FinalResult::parse("+CME ERROR: "), None);
        assert_eq!(FinalResult::parse("OKAY"), None);
    }

    #[test]
    fn splits_extended_names() {
        assert_eq!(split_extended("+CKVER?"), Some(("+CKVER", Some("?"))));
        assert_eq!(split_extended("+CKX=\"a\""), Some(("+CKX", Some("\"a\""))));
        assert_eq!(split_extended("+CKX: \"a\""), Some(("+CKX", Some("\"a\""))));
        assert_eq!(split_extended("+CKLIST"), Some(("+CKLIST", None)));
        assert_eq!(split_extended("+"), None);
        assert_eq!(split_command("+CKX=\"a\""), Some(("+CKX", Some("\"a\""))));
        assert_eq!(split_command("+CKLIST"), Some(("+CKLIST", None)));
        assert_eq!(split_command("+CKX: \"a\""), None);
        assert_eq!(split_extended("+CK#"), None);
    }
}
