//! What goes in and out: input files (or stdin), results to files (or
//! stdout), aligned tables for people and JSON for scripts, and the names
//! shown for token flags and object classes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use phonecsp_protocol::ck::cko;
use phonecsp_protocol::message::token_flags;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::failure::{Failure, io_failure};
use crate::session::Context;

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub(crate) fn print_json(v: &Value) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Failure::Failed(e.to_string()))?;
    let mut out = io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|()| out.flush())
        .map_err(|e| io_failure("writing to stdout", e))
}

/// Aligned columns under a header; the last column is not padded.
pub(crate) fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let n = cells.len();
        let mut s = String::new();
        for (i, c) in cells.into_iter().enumerate() {
            if i + 1 == n {
                s.push_str(c);
            } else {
                let w = widths.get(i).copied().unwrap_or(0);
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// One result: `json` with `--json`, else `text`.
pub(crate) fn say(cx: &Context, json: Value, text: String) -> Result<(), Failure> {
    if cx.json {
        print_json(&json)
    } else {
        print_text(&text)
    }
}

/// A list: with `--json` an array of `json(item)`, else a table of
/// `row(item)` under `headers`.
pub(crate) fn say_list<T>(
    cx: &Context,
    items: &[T],
    headers: &[&str],
    json: impl Fn(&T) -> Value,
    row: impl Fn(&T) -> Vec<String>,
) -> Result<(), Failure> {
    if cx.json {
        return print_json(&Value::Array(items.iter().map(json).collect()));
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    print_text(&render_table(headers, &rows))
}

pub(crate) fn print_text(s: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| io_failure("writing to stdout", e))
}

pub(crate) fn read_input(path: &str) -> Result<Vec<u8>, Failure> {
    let mut v = Vec::new();
    if path == "-" {
        io::stdin()
            .lock()
            .read_to_end(&mut v)
            .map_err(|e| io_failure("reading stdin", e))?;
    } else {
        File::open(path)
            .and_then(|mut f| f.read_to_end(&mut v))
            .map_err(|e| io_failure(&format!("reading {path}"), e))?;
    }
    Ok(v)
}

/// Writes `data` to `path` ("-": stdout); a secret is written to a new file
/// readable by its owner only.
pub(crate) fn write_output(path: &str, data: &[u8], secret: bool) -> Result<(), Failure> {
    if path == "-" {
        let mut out = io::stdout().lock();
        return out
            .write_all(data)
            .and_then(|()| out.flush())
            .map_err(|e| io_failure("writing to stdout", e));
    }
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    if secret {
        opts.mode(0o600);
    }
    opts.open(path)
        .and_then(|mut f| {
            f.write_all(data)?;
            // A regular file is made durable; a pipe or a character device
            // (`--out /dev/null`, a terminal) has nothing to sync and
            // answers fsync with EINVAL.
            if f.metadata()?.is_file() {
                f.sync_all()?;
            }
            Ok(())
        })
        .map_err(|e| io_failure(&format!("writing {path}"), e))
}

/// Binary results: raw to `--out`, or with `--json` either inline (base64,
/// when `--out -`) or described (the file it went to).
pub(crate) fn emit_bytes(
    cx: &Context,
    key: &str,
    out: &str,
    data: &[u8],
    secret: bool,
) -> Result<(), Failure> {
    if !cx.json {
        return write_output(out, data, secret);
    }
    if out == "-" {
        let encoded = Zeroizing::new(BASE64.encode(data));
        print_json(&json!({ key: encoded.as_str(), "length": data.len() }))
    } else {
        write_output(out, data, secret)?;
        print_json(&json!({ "out": out, "length": data.len() }))
    }
}

pub(crate) fn flag_names(flags: u32) -> Vec<&'static str> {
    token_flags::names(flags)
}

pub(crate) fn class_name(class: u32) -> String {
    match class {
        cko::DATA => "data".into(),
        cko::CERTIFICATE => "certificate".into(),
        cko::PUBLIC_KEY => "public-key".into(),
        cko::PRIVATE_KEY => "private-key".into(),
        c => format!("class-{c}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = render_table(
            &["A", "LONGER", "C"],
            &[vec!["xyz".into(), "1".into(), "last".into()]],
        );
        assert_eq!(t, "A    LONGER  C\nxyz  1       last\n");
    }

    #[test]
    fn flags_are_named() {
        assert_eq!(
            flag_names(token_flags::LOGIN_REQUIRED | token_flags::CONFIRM),
            vec!["login-required", "confirm-on-phone"]
        );
    }

    #[test]
    fn output_goes_to_files_and_to_character_devices() {
        // /dev/null is a character device: no fsync there (EINVAL before).
        write_output("/dev/null", b"signature", false).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.out");
        let path = path.to_str().unwrap();
        write_output(path, b"plaintext", true).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"plaintext");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
