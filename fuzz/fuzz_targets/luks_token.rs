//! The LUKS side's stored wrapped keys: the first byte picks the form, the
//! rest is its contents.
//!
//! * A wrapped-key file or a LUKS2 token's JSON through
//!   `WrappedKey::parse` (what `read_wrapped_file` calls on the file's
//!   text): whatever parses must write out (`to_json`, what
//!   `write_wrapped_file` writes) and parse back to the same key, and
//!   answer its queries (target, keyslots, description, the wrapped bytes).
//! * The LUKS2 metadata `cryptsetup luksDump --dump-json-metadata` prints,
//!   through `phonecsp_tokens` (what `Cryptsetup::tokens` calls): every
//!   token it returns as good must also pass `WrappedKey::parse`, and
//!   they come in order of token id.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phonecsp_luks::{WrappedKey, phonecsp_tokens};

fn check(w: &WrappedKey) {
    let json = w.to_json();
    assert_eq!(WrappedKey::parse(&json).as_ref().ok(), Some(w), "{json}");
    w.wrapped().expect("a key that parsed has base64");
    let _ = (w.target(), w.describe(), w.keyslot_numbers());
    if let Some(t) = w.target() {
        assert!(!t.key_id.is_empty());
        assert_eq!(t.key_id_hex().len(), 2 * t.key_id.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        if let Ok(w) = WrappedKey::parse(text) {
            check(&w);
        }
        return;
    }
    let Ok(meta) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return;
    };
    let tokens = phonecsp_tokens(&meta);
    // In order; not strictly: "1" and "01" both name token 1 (cryptsetup
    // writes neither twice, but a header's JSON is not ours to trust).
    assert!(
        tokens.windows(2).all(|p| p[0].0 <= p[1].0),
        "tokens not in order"
    );
    for (_, w) in tokens {
        if let Ok(w) = w {
            check(&w);
        }
    }
});
