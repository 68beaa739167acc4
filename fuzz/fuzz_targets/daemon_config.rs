//! The daemon's configuration file (`/etc/phonecsp/phonecspd.toml`)
//! through `Config::parse`, the function `Config::load` calls on the
//! file's text. Nothing may panic (the error's line and column are worked
//! out from byte offsets into the text), and a configuration that parses
//! must answer its queries: each handset's transport, the access list of
//! every handset and token, the host name.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use phonecsp_host::config::{Config, ConfigError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("phonecspd.toml")) {
        Ok(config) => {
            for h in &config.handsets {
                h.transport().expect("a parsed handset has a transport");
                for t in &config.tokens {
                    let _ = config.access_for(&h.name, &t.name);
                }
            }
            let _ = config.host_name();
            let _ = (
                config.daemon.request_timeout(),
                config.daemon.prompt_timeout(),
            );
        }
        Err(ConfigError::Invalid { line, column, .. }) => {
            assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
            assert!(column >= 1 && column <= text.len() + 1);
        }
        Err(e) => panic!("parsing text gave {e}"),
    }
});
