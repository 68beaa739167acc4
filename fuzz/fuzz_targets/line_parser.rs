//! Arbitrary bytes through the outer framing: the line splitter (in pieces,
//! with a limit taken from the input), then every text line through
//! `Command::parse`, `Params::parse`, `FinalResult::parse` and the
//! `+CKVER` parser. Nothing may panic, and no line may exceed the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phonecsp_protocol::Command;
use phonecsp_protocol::at::{FinalResult, Line, LineSplitter, Params, split_extended};
use phonecsp_protocol::message::VersionInfo;

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    // First byte: the line limit (0..=1020) and the piece size (1..=16).
    let max = usize::from(head & 0x3f) * 16 + usize::from(head >> 6) * 4;
    let piece = usize::from(head % 16) + 1;
    let mut splitter = LineSplitter::new(max);
    for chunk in rest.chunks(piece) {
        for line in splitter.push(chunk) {
            let Line::Text(text) = line else { continue };
            assert!(text.len() <= max, "line over the limit");
            assert!(!text.is_empty());
            if let Ok(cmd) = Command::parse(&text) {
                // Whatever parses re-encodes to something that parses the same.
                assert_eq!(Command::parse(&cmd.encode()), Ok(cmd));
            }
            let _ = Params::parse(&text);
            if let Some((_, Some(p))) = split_extended(&text) {
                let _ = Params::parse(p);
            }
            if let Some(f) = FinalResult::parse(&text) {
                assert_eq!(FinalResult::parse(&f.as_line()), Some(f));
            }
            if let Ok(v) = VersionInfo::parse(&text)
                && let Ok(line) = v.encode()
            {
                assert_eq!(VersionInfo::parse(&line), Ok(v));
            }
        }
    }
});
