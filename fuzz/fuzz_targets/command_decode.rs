//! The inner command set and the handset's state machine:
//!
//! * the input as UTF-8 through `Request::parse` (whatever parses must
//!   re-encode and parse to the same request) and through `Reply::decode`
//!   against one request of every kind;
//! * the input as compact bytes (docs/protocol.md section 6.7) through
//!   `compact::expand` both ways, and as text through `compact::compact`:
//!   what expands compacts back to the same bytes, what compacts expands
//!   to text that compacts the same;
//! * the raw bytes fed to a `Responder` in pieces: it must not panic, and
//!   every line it writes must stay within the limit it advertises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phonecsp_protocol::compact::{Direction, compact, expand};
use phonecsp_protocol::noise::PairingCode;
use phonecsp_protocol::testing::{TestHandset, one_request_of_every_kind};
use phonecsp_protocol::{Reply, Request, Responder, StaticKeypair};

fuzz_target!(|data: &[u8]| {
    for dir in [Direction::ToHandset, Direction::ToHost] {
        if let Ok(text) = expand(data, dir) {
            let again = compact(&text, dir).expect("expanded text compacts");
            assert_eq!(&again[..], data, "compact form is not canonical");
            if dir == Direction::ToHandset {
                let _ = Request::parse(&text);
            }
        }
        if let Ok(text) = std::str::from_utf8(data)
            && let Ok(c) = compact(text, dir)
        {
            let back = expand(&c, dir).expect("compacted text expands");
            let again = compact(&back, dir).expect("expanded text compacts");
            assert_eq!(again, c, "compact, expand, compact differs");
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(req) = Request::parse(text) {
            let line = req.encode().expect("a parsed request encodes");
            assert_eq!(Request::parse(&line), Ok(req));
        }
        for req in one_request_of_every_kind() {
            let _ = Reply::decode(&req, text);
        }
    }

    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let max_line = 256 + usize::from(head) * 4;
    let piece = usize::from(head % 32) + 1;
    // A pairing code on offer and one pinned host, so that handshake
    // messages reach the Noise code.
    let mut handler = TestHandset::new(StaticKeypair::from_private(&[1; 32]))
        .knowing(*StaticKeypair::from_private(&[3; 32]).public())
        .pairing(PairingCode::parse("AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AA").expect("code"));
    let mut responder = Responder::new(max_line, "fuzz");
    for chunk in rest.chunks(piece) {
        let out = responder.receive(&mut handler, chunk);
        for line in out.split(|&b| b == b'\r' || b == b'\n') {
            assert!(line.len() <= max_line, "response line over the limit");
        }
    }
    responder.disconnected(&mut handler);
});
