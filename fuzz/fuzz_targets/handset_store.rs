//! The handset's store files, as the handset reads them back from its
//! state directory: the first byte picks the file, the rest is its
//! contents.
//!
//! * `hosts.json` through `Hosts::parse_file` (what `Store::load_hosts`
//!   calls): whatever parses must write out (`Hosts::to_file`, what
//!   `Store::save_hosts` writes) and parse back to the same hosts.
//! * `containers/<name>.json` through `Store::parse_container_file` (what
//!   `Store::load_container` calls), for the container name the file
//!   gives: whatever parses must write out (`Store::container_file`, with
//!   its integrity check) and parse back, and writing that again must give
//!   the same bytes.
//! * `identity.json` through `Store::from_identity_file` (what
//!   `Store::open` calls).
//!
//! No file is read or written: the store these run against is made from
//! an identity in memory.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use phonecsp_handset::store::{Hosts, Store};

fn store() -> &'static Store {
    static STORE: OnceLock<Store> = OnceLock::new();
    STORE.get_or_init(|| {
        let identity = br#"{"version":1,"name":"fuzz handset","noise_private":"AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}"#;
        Store::from_identity_file(Path::new("/nonexistent/handset"), identity)
            .expect("the fuzz target's own identity parses")
    })
}

/// The container name a file claims (its `name` field), if any.
fn claimed_name(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    Some(v.get("name")?.as_str()?.to_owned())
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            let path = Path::new("hosts.json");
            if let Ok(hosts) = Hosts::parse_file(path, bytes) {
                let written = hosts.to_file().expect("parsed hosts write out");
                let again = Hosts::parse_file(path, &written).expect("written hosts parse");
                assert_eq!(again, hosts);
                for h in &hosts.hosts {
                    assert_eq!(hosts.find(&h.public).map(|f| &f.name), Some(&h.name));
                    let _ = hosts.find_by_name_or_fingerprint(&h.name);
                }
            }
        }
        1 => {
            let store = store();
            // Most files name a container other than the file would be
            // called; ask for the one the file names, and for "ssh".
            let name = claimed_name(bytes).unwrap_or_else(|| "ssh".into());
            for name in [name.as_str(), "ssh"] {
                let Ok(c) = store.parse_container_file(name, bytes) else {
                    continue;
                };
                assert_eq!(c.name(), name);
                let written = store
                    .container_file(&c)
                    .expect("a parsed container writes out");
                let again = store
                    .parse_container_file(name, &written)
                    .expect("a written container parses");
                let rewritten = store.container_file(&again).expect("writes out again");
                assert_eq!(&written[..], &rewritten[..], "writing is not stable");
                let _ = (c.keys().len(), c.certs().len(), c.data().len(), c.kdf());
                let _ = (
                    c.serial(),
                    c.policy(),
                    c.pin_entry(),
                    c.retries_left(),
                    c.is_locked(),
                );
            }
        }
        _ => {
            if let Ok(s) = Store::from_identity_file(Path::new("/nonexistent/handset"), bytes) {
                assert!(!s.name().is_empty());
                let _ = s.identity().public();
            }
        }
    }
});
