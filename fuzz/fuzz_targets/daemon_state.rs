//! The daemon's persisted state, as it reads it back: the first byte picks
//! the file, the rest is its contents.
//!
//! * `host.key` and `handsets/<name>.pub` through
//!   `phonecsp_host::state::parse_key` (what `State::open` and
//!   `State::pinned` call): 32 bytes or an error.
//! * `handsets/<name>.tokens` through `phonecspd::known::parse` (what
//!   `Known::load` calls): what it reads must write out
//!   (`known::encode`, what `Known::remember` writes) and read back the
//!   same, for every name without a control character (the only names the
//!   link can bring, and so the only ones the daemon writes).
//! * a first byte of 0xf0 or more: `cache/<handset>/<container>.json`
//!   through `phonecspd::public::parse` (what `PublicStore::load` calls):
//!   never a panic, and what it trusts writes out (`public::encode`) and
//!   reads back the same.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use phonecsp_host::state::parse_key;
use phonecspd::{known, public};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which >= 0xf0 {
        const KEY: [u8; 32] = [7; 32];
        if let Ok(p) = public::parse(bytes, &KEY, "ssh", 1) {
            let written = public::encode(&KEY, "ssh", 1, &p);
            assert_eq!(public::parse(&written, &KEY, "ssh", 1), Ok(p));
        }
        return;
    }
    if which % 2 == 0 {
        let key = parse_key(Path::new("host.key"), bytes);
        assert_eq!(key.is_ok(), bytes.len() == 32);
        if let Ok(k) = key {
            assert_eq!(&k[..], bytes);
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let seen = known::parse(text);
    // The names the daemon writes come off the link, which carries no
    // control character; only those must survive the round trip (a name
    // read from a damaged file may end in a CR, which `lines` then eats).
    let clean: Vec<_> = seen
        .into_iter()
        .filter(|(n, _)| !n.chars().any(char::is_control))
        .collect();
    let written = known::encode(&clean);
    assert_eq!(known::parse(&written), clean, "{written:?}");
});
