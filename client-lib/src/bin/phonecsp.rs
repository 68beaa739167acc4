//! `phonecsp`: the command line of the phonecsp daemon. Tables for people,
//! `--json` for scripts; errors on stderr, prefixed `phonecsp: `; the exit
//! codes are listed in `--help`.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::process::ExitCode;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Parser, Subcommand};
use phonecsp::blocking::Client;
use phonecsp::mechanism::{self, Encryption, Signing, ckm};
use phonecsp::{Bus, ClientOptions, Error, MechanismParams};
use phonecsp_protocol::message::token_flags;
use phonecsp_protocol::{CkRv, HashAlg};
use serde_json::{Value, json};
use zeroize::Zeroizing;

#[path = "../cli/luks.rs"]
mod luks_cmd;

const ENV_PIN: &str = "PHONECSP_PIN";
const ENV_NEW_PIN: &str = "PHONECSP_NEW_PIN";
const ENV_PAIRING_CODE: &str = "PHONECSP_PAIRING_CODE";

const CKO_CERTIFICATE: u32 = 1;
const CKA_VALUE: u32 = 0x011;

const LONG_ABOUT: &str = "\
Use the keys on your phone from the command line.

phonecsp talks to the phonecsp daemon (phonecspd) over D-Bus. The private keys \
stay on the handset; the computer hashes, and only digests and ciphertexts cross \
the link. A TOKEN is a container on the handset (e.g. ssh, disk, web); keys and \
certificates in it are named by their CKA_ID, given in hex (--key, --id).

Commands that use a private key or change the token (sign, decrypt, keygen, \
cert import, cert delete) log in first: the PIN comes from the environment \
variable PHONECSP_PIN, else it is read from the terminal without echo. Before \
any PIN or pairing code is sent, phonecsp checks that the daemon's bus name is \
owned by the daemon's user (PHONECSP_DAEMON_USER: a user name or uid; default \
the user phonecsp if it exists, else root).";

const AFTER_HELP: &str = "\
Environment:
  PHONECSP_BUS           system, session or a D-Bus address (default: system)
  PHONECSP_DAEMON_USER   user the daemon must run as (name or uid)
  PHONECSP_PIN           the token's PIN (else asked on the terminal)
  PHONECSP_NEW_PIN       the new PIN for `pin change`
  PHONECSP_PAIRING_CODE  the one-time code for `pair`

Exit codes:
  0  success
  1  the operation failed (verify: the signature is invalid)
  2  usage error
  3  the daemon is unreachable, or another D-Bus error
  4  the token refused (its CK_RV is reported: wrong PIN, not allowed, ...)
  5  the daemon is not running as its configured user: nothing was sent

Examples:
  phonecsp status
  phonecsp --handset pixel sign ssh --key 01 --in message.txt --out message.sig
  phonecsp --json tokens";

#[derive(Parser, Debug)]
#[command(
    name = "phonecsp",
    version,
    about = "Use the keys on your phone: the phonecsp daemon's command line",
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    propagate_version = true
)]
struct Cli {
    /// The bus the daemon is on: system, session or a D-Bus address
    /// [default: $PHONECSP_BUS, else system]
    #[arg(long, global = true, value_name = "system|session|ADDRESS")]
    bus: Option<Bus>,

    /// Print one JSON document on stdout, for scripts
    #[arg(long, global = true)]
    json: bool,

    /// The handset to use [default: the only configured handset]
    #[arg(long, global = true, value_name = "NAME")]
    handset: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the daemon's version, the handsets and their link statistics
    #[command(after_help = "Example:\n  phonecsp status")]
    Status,

    /// List the configured handsets: connected or not, pinned key fingerprint
    #[command(after_help = "Example:\n  phonecsp handsets")]
    Handsets,

    /// List the tokens you may use on connected handsets
    #[command(
        after_help = "Examples:\n  phonecsp tokens\n  phonecsp --handset pixel --json tokens"
    )]
    Tokens,

    /// List the keys and certificates in a token
    #[command(after_help = "Example:\n  phonecsp objects ssh")]
    Objects {
        /// The token (container on the handset)
        token: String,
    },

    /// Sign a file with a key on the handset (logs in first)
    #[command(after_help = "\
The input is hashed on the computer; only the digest goes to the handset. With \
RSA-PKCS the input is the DigestInfo to sign, with RSA-PKCS-PSS the digest.

Examples:
  phonecsp sign ssh --key 01 --in message.txt --out message.sig
  phonecsp sign web --key 02 --mechanism SHA384-RSA-PKCS-PSS --salt-len 48 < doc.pdf > doc.sig")]
    Sign(SignArgs),

    /// Check a signature with the public key of a key on the handset
    #[command(after_help = "\
Exit status 0 if the signature is valid, 1 if it is not.

Example:
  phonecsp verify ssh --key 01 --signature message.sig --in message.txt")]
    Verify(VerifyArgs),

    /// Decrypt with a key on the handset (logs in first)
    #[command(
        after_help = "Example:\n  phonecsp decrypt disk --key 01 --in secret.bin --out secret.txt"
    )]
    Decrypt(CryptArgs),

    /// Encrypt to the public key of a key on the handset
    #[command(
        after_help = "Example:\n  phonecsp encrypt disk --key 01 --in secret.txt --out secret.bin"
    )]
    Encrypt(CryptArgs),

    /// Get random bytes from the handset's generator
    #[command(
        after_help = "Examples:\n  phonecsp random 32 --hex\n  phonecsp random 64 > seed.bin"
    )]
    Random {
        /// How many bytes
        length: u32,
        /// Print them in hex instead of raw
        #[arg(long)]
        hex: bool,
    },

    /// Generate an RSA key pair on the handset (logs in first)
    #[command(
        after_help = "Example:\n  phonecsp keygen ssh --bits 3072 --id 01 --label \"laptop ssh\""
    )]
    Keygen {
        /// The token (container on the handset)
        token: String,
        /// Modulus size: 2048, 3072 or 4096
        #[arg(long, default_value_t = 2048, value_parser = parse_bits)]
        bits: u32,
        /// The CKA_ID in hex [default: chosen by the handset]
        #[arg(long, value_name = "HEX")]
        id: Option<Id>,
        /// The CKA_LABEL
        #[arg(long, value_name = "LABEL", default_value = "")]
        label: String,
    },

    /// Import, export or delete a certificate
    #[command(subcommand)]
    Cert(CertCommand),

    /// Manage a token's PIN
    #[command(subcommand)]
    Pin(PinCommand),

    /// Unlock LUKS disks with the handset: enrol, re-wrap, list
    #[command(subcommand)]
    Luks(luks_cmd::LuksCommand),

    /// Pair with a handset using the one-time code it shows (root only)
    #[command(after_help = "\
The code is taken from --code, else from PHONECSP_PAIRING_CODE, else asked on the \
terminal without echo. Prefer the last two: a command line is visible to other users.

Example:
  sudo phonecsp --handset pixel pair")]
    Pair {
        /// The one-time pairing code shown on the phone
        #[arg(long, value_name = "CODE")]
        code: Option<String>,
    },

    /// Forget a handset's pinned key (root only)
    #[command(after_help = "Example:\n  sudo phonecsp --handset pixel unpair")]
    Unpair,
}

#[derive(Subcommand, Debug)]
enum CertCommand {
    /// Store a certificate (PEM or DER) in a token (logs in first)
    #[command(after_help = "Example:\n  phonecsp cert import web --id 02 user.pem")]
    Import {
        /// The token (container on the handset)
        token: String,
        /// The CKA_ID in hex, usually that of the certificate's key
        #[arg(long, value_name = "HEX")]
        id: Id,
        /// The CKA_LABEL
        #[arg(long, value_name = "LABEL", default_value = "")]
        label: String,
        /// The certificate file, PEM or DER ("-" for stdin)
        file: String,
    },
    /// Write a certificate out, DER unless --pem
    #[command(after_help = "Example:\n  phonecsp cert export web --id 02 --pem --out user.pem")]
    Export {
        /// The token (container on the handset)
        token: String,
        /// The CKA_ID in hex
        #[arg(long, value_name = "HEX")]
        id: Id,
        /// Where to write it ("-" for stdout)
        #[arg(long, value_name = "FILE", default_value = "-")]
        out: String,
        /// PEM instead of DER
        #[arg(long)]
        pem: bool,
    },
    /// Have the handset sign a self-signed certificate for one of its keys,
    /// and store it next to the key (logs in first)
    #[command(
        name = "self-sign",
        after_help = "Example:\n  phonecsp cert self-sign ssh --id 01 --subject \"CN=alice's phone\" --days 365"
    )]
    SelfSign {
        /// The token (container on the handset)
        token: String,
        /// The key's CKA_ID in hex; the certificate gets the same
        #[arg(long, value_name = "HEX")]
        id: Id,
        /// The subject (and issuer), RFC 4514; default CN=<key label>
        #[arg(long, value_name = "DN")]
        subject: Option<String>,
        /// Days of validity from now
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u32,
    },
    /// Delete a certificate from a token (logs in first)
    #[command(after_help = "Example:\n  phonecsp cert delete web --id 02")]
    Delete {
        /// The token (container on the handset)
        token: String,
        /// The CKA_ID in hex
        #[arg(long, value_name = "HEX")]
        id: Id,
    },
}

#[derive(Subcommand, Debug)]
enum PinCommand {
    /// Change a token's PIN
    #[command(after_help = "\
The current PIN comes from PHONECSP_PIN and the new one from PHONECSP_NEW_PIN, \
else both are asked on the terminal (the new one twice).

Example:
  phonecsp pin change ssh")]
    Change {
        /// The token (container on the handset)
        token: String,
    },
}

#[derive(Args, Debug)]
struct SignArgs {
    /// The token (container on the handset)
    token: String,
    #[command(flatten)]
    key: KeyArg,
    #[command(flatten)]
    mech: SignMechanismArgs,
    /// The data to sign ("-" for stdin)
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    input: String,
    /// Where to write the signature ("-" for stdout)
    #[arg(long, value_name = "FILE", default_value = "-")]
    out: String,
}

#[derive(Args, Debug)]
struct VerifyArgs {
    /// The token (container on the handset)
    token: String,
    #[command(flatten)]
    key: KeyArg,
    /// The signature file
    #[arg(long, value_name = "FILE")]
    signature: String,
    #[command(flatten)]
    mech: SignMechanismArgs,
    /// The signed data ("-" for stdin)
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    input: String,
}

#[derive(Args, Debug)]
struct KeyArg {
    /// The key's CKA_ID in hex
    #[arg(long, value_name = "ID_HEX")]
    key: Id,
}

#[derive(Args, Debug)]
struct SignMechanismArgs {
    /// SHA{1,224,256,384,512}-RSA-PKCS[-PSS], RSA-PKCS (input: a DigestInfo)
    /// or RSA-PKCS-PSS (input: a digest)
    #[arg(long, value_name = "NAME", default_value = "SHA256-RSA-PKCS")]
    mechanism: String,
    /// PSS salt length in bytes [default: the digest's length]
    #[arg(long, value_name = "N")]
    salt_len: Option<u32>,
    /// PSS hash, for RSA-PKCS-PSS [default: from the digest's length]
    #[arg(long, value_name = "HASH")]
    hash: Option<String>,
}

#[derive(Args, Debug)]
struct CryptArgs {
    /// The token (container on the handset)
    token: String,
    #[command(flatten)]
    key: KeyArg,
    /// RSA-PKCS-OAEP or RSA-PKCS
    #[arg(long, value_name = "NAME", default_value = "RSA-PKCS-OAEP")]
    mechanism: String,
    /// OAEP hash (and MGF1 hash): SHA1, SHA224, SHA256, SHA384 or SHA512
    #[arg(long, value_name = "HASH", default_value = "SHA256")]
    hash: String,
    /// The input ("-" for stdin)
    #[arg(long = "in", value_name = "FILE", default_value = "-")]
    input: String,
    /// Where to write the output ("-" for stdout)
    #[arg(long, value_name = "FILE", default_value = "-")]
    out: String,
}

/// A CKA_ID given in hex (`0a1b`, `0A:1B` and `0x0a1b` are all accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Id(Vec<u8>);

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

fn parse_bits(s: &str) -> Result<u32, String> {
    match s.trim().parse::<u32>() {
        Ok(b @ (2048 | 3072 | 4096)) => Ok(b),
        _ => Err("the handset makes RSA keys of 2048, 3072 or 4096 bits".into()),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Why a command did not succeed, and so its exit code.
#[derive(Debug)]
enum Failure {
    /// Exit 1, with a message.
    Failed(String),
    /// Exit 1 without a message: the answer is "no" (verify).
    No,
    /// Exit 2.
    Usage(String),
    /// Exit 3, 4 or 5 by kind.
    Client(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Client(e)
    }
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Failed(_) | Failure::No => 1,
            Failure::Usage(_) => 2,
            Failure::Client(Error::Bus(_)) => 3,
            Failure::Client(Error::Token { .. }) => 4,
            Failure::Client(Error::Untrusted { .. }) => 5,
        }
    }
}

fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure::Failed(format!("{what}: {e}"))
}

struct Context {
    client: Client,
    json: bool,
    handset: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let bus = match cli.bus.clone().map(Ok).unwrap_or_else(Bus::from_env) {
        Ok(b) => b,
        Err(e) => return report(&Failure::Usage(format!("PHONECSP_BUS: {e}")), None),
    };
    match run(cli, &bus) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(&f, Some(&bus)),
    }
}

fn report(f: &Failure, bus: Option<&Bus>) -> ExitCode {
    match f {
        Failure::No => {}
        Failure::Failed(m) | Failure::Usage(m) => eprintln!("phonecsp: {m}"),
        Failure::Client(Error::Bus(e)) => {
            let on = match bus {
                Some(Bus::Address(a)) => format!(" at {a}"),
                Some(b) => format!(" on the {b} bus"),
                None => String::new(),
            };
            eprintln!("phonecsp: cannot use the phonecsp daemon{on}: {e}");
        }
        Failure::Client(e @ Error::Token { rv, .. }) => match hint(*rv) {
            Some(h) => eprintln!("phonecsp: {e}\nphonecsp: {h}"),
            None => eprintln!("phonecsp: {e}"),
        },
        Failure::Client(e @ Error::Untrusted { .. }) => {
            eprintln!("phonecsp: {e}");
            eprintln!(
                "phonecsp: if the daemon really runs as that user, set PHONECSP_DAEMON_USER to it"
            );
        }
    }
    ExitCode::from(f.exit_code())
}

/// What a person can do about the CK_RVs people meet most.
fn hint(rv: CkRv) -> Option<&'static str> {
    Some(match rv {
        CkRv::PIN_INCORRECT => {
            "wrong PIN: the token counts the failures and locks itself at its limit"
        }
        CkRv::PIN_LOCKED => "the token is locked after too many wrong PINs: unlock it on the phone",
        CkRv::PIN_LEN_RANGE => "the new PIN is too short or too long for this token",
        CkRv::TOKEN_NOT_PRESENT | CkRv::DEVICE_REMOVED => {
            "the handset or the token is not there: see `phonecsp status` and `phonecsp tokens`"
        }
        CkRv::KEY_HANDLE_INVALID | CkRv::OBJECT_HANDLE_INVALID => {
            "no object with that id: see `phonecsp objects TOKEN`"
        }
        CkRv::FUNCTION_REJECTED | CkRv::FUNCTION_CANCELED => "refused or cancelled on the phone",
        CkRv::USER_NOT_LOGGED_IN => "log in first: set PHONECSP_PIN or run on a terminal",
        _ => return None,
    })
}

fn run(cli: Cli, bus: &Bus) -> Result<(), Failure> {
    let expected = phonecsp::client::default_daemon_uid().map_err(Failure::Usage)?;
    let client = Client::connect_with(
        bus,
        ClientOptions {
            expected_daemon_uid: Some(expected),
        },
    )?;
    let cx = Context {
        client,
        json: cli.json,
        handset: cli.handset,
    };
    match cli.command {
        Command::Status => status(&cx),
        Command::Handsets => handsets(&cx),
        Command::Tokens => tokens(&cx),
        Command::Objects { token } => objects(&cx, &token),
        Command::Sign(a) => sign(&cx, &a),
        Command::Verify(a) => verify(&cx, &a),
        Command::Decrypt(a) => crypt(&cx, &a, true),
        Command::Encrypt(a) => crypt(&cx, &a, false),
        Command::Random { length, hex } => random(&cx, length, hex),
        Command::Keygen {
            token,
            bits,
            id,
            label,
        } => keygen(&cx, &token, bits, id, &label),
        Command::Cert(CertCommand::Import {
            token,
            id,
            label,
            file,
        }) => cert_import(&cx, &token, &id, &label, &file),
        Command::Cert(CertCommand::Export {
            token,
            id,
            out,
            pem,
        }) => cert_export(&cx, &token, &id, &out, pem),
        Command::Cert(CertCommand::Delete { token, id }) => cert_delete(&cx, &token, &id),
        Command::Cert(CertCommand::SelfSign {
            token,
            id,
            subject,
            days,
        }) => cert_self_sign(&cx, &token, &id, subject.as_deref(), days),
        Command::Pin(PinCommand::Change { token }) => pin_change(&cx, &token),
        Command::Luks(c) => luks_cmd::run(&cx, &c),
        Command::Pair { code } => pair(&cx, code),
        Command::Unpair => unpair(&cx),
    }
}

// ---- output -------------------------------------------------------------

fn print_json(v: &Value) -> Result<(), Failure> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Failure::Failed(e.to_string()))?;
    let mut out = io::stdout().lock();
    writeln!(out, "{s}")
        .and_then(|()| out.flush())
        .map_err(|e| io_failure("writing to stdout", e))
}

/// Aligned columns under a header; the last column is not padded.
fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
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

fn print_text(s: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    out.write_all(s.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| io_failure("writing to stdout", e))
}

fn read_input(path: &str) -> Result<Vec<u8>, Failure> {
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
fn write_output(path: &str, data: &[u8], secret: bool) -> Result<(), Failure> {
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
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .map_err(|e| io_failure(&format!("writing {path}"), e))
}

/// Binary results: raw to `--out`, or with `--json` either inline (base64,
/// when `--out -`) or described (the file it went to).
fn emit_bytes(
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

fn flag_names(flags: u32) -> Vec<&'static str> {
    [
        (token_flags::LOGIN_REQUIRED, "login-required"),
        (token_flags::PIN_LOCKED, "pin-locked"),
        (token_flags::PIN_COUNT_LOW, "pin-count-low"),
        (token_flags::PIN_FINAL_TRY, "pin-final-try"),
        (token_flags::CONFIRM, "confirm-on-phone"),
        (token_flags::LOGGED_IN, "logged-in"),
        (token_flags::PROTECTED_PATH, "pin-on-phone"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, n)| n)
    .collect()
}

fn class_name(class: u32) -> String {
    match class {
        1 => "certificate".into(),
        2 => "public-key".into(),
        3 => "private-key".into(),
        c => format!("class-{c}"),
    }
}

// ---- secrets --------------------------------------------------------------

/// Restores the terminal's modes when dropped.
struct EchoOff<'a> {
    tty: &'a File,
    saved: nix::sys::termios::Termios,
}

impl Drop for EchoOff<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::termios::tcsetattr(
            self.tty,
            nix::sys::termios::SetArg::TCSAFLUSH,
            &self.saved,
        );
    }
}

/// Reads a line from /dev/tty without echo. `Ok(None)`: there is no terminal.
fn read_secret_from_tty(prompt: &str) -> Result<Option<Zeroizing<Vec<u8>>>, Failure> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    const MAX: usize = 1024;
    let Ok(mut tty) = OpenOptions::new().read(true).write(true).open("/dev/tty") else {
        return Ok(None);
    };
    let Ok(saved) = tcgetattr(&tty) else {
        return Ok(None);
    };
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    quiet.local_flags.insert(LocalFlags::ECHONL);
    tcsetattr(&tty, SetArg::TCSAFLUSH, &quiet)
        .map_err(|e| io_failure("turning off the terminal's echo", e.into()))?;
    let guard = EchoOff { tty: &tty, saved };
    (&tty)
        .write_all(prompt.as_bytes())
        .map_err(|e| io_failure("writing to the terminal", e))?;
    // Byte by byte into a buffer that never reallocates, so that no copy of
    // the secret is left behind.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX));
    let mut byte = Zeroizing::new([0u8; 1]);
    loop {
        match (&tty).read(&mut byte[..]) {
            Ok(0) => break,
            Ok(_) => {
                if byte[0] == b'\n' {
                    break;
                }
                if line.len() == MAX {
                    return Err(Failure::Usage("the secret typed is too long".into()));
                }
                line.push(byte[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failure("reading the terminal", e)),
        }
    }
    drop(guard);
    let _ = tty.flush();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn secret_from_env(var: &str) -> Option<Zeroizing<Vec<u8>>> {
    std::env::var_os(var).map(|v| Zeroizing::new(v.as_bytes().to_vec()))
}

/// A secret from `var`, else the terminal, else a clear failure.
fn get_secret(var: &str, prompt: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    if let Some(s) = secret_from_env(var) {
        return Ok(s);
    }
    read_secret_from_tty(prompt)?.ok_or_else(|| {
        Failure::Usage(format!(
            "no terminal to ask on: set {var} (the value is never printed)"
        ))
    })
}

// ---- handsets and login -----------------------------------------------------

/// `--handset`, else the only configured handset.
fn handset(cx: &Context) -> Result<String, Failure> {
    if let Some(h) = &cx.handset {
        return Ok(h.clone());
    }
    let list = cx.client.list_handsets()?;
    match list.as_slice() {
        [only] => Ok(only.name.clone()),
        [] => Err(Failure::Failed(
            "no handset is configured in the daemon (see /etc/phonecsp/phonecspd.toml)".into(),
        )),
        many => Err(Failure::Usage(format!(
            "several handsets are configured ({}): choose one with --handset NAME",
            many.iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Logs in to the token unless it needs no login.
fn ensure_login(cx: &Context, handset: &str, token: &str) -> Result<(), Failure> {
    let info = cx.client.get_token_info(handset, token)?;
    if info.logged_in || info.flags & token_flags::LOGIN_REQUIRED == 0 {
        return Ok(());
    }
    if info.flags & token_flags::PIN_LOCKED != 0 {
        return Err(Error::token(
            CkRv::PIN_LOCKED,
            format!("{handset}/{token}: too many wrong PINs, the token is locked"),
        )
        .into());
    }
    // Refuse before asking for the PIN, not just before sending it.
    cx.client.check_daemon()?;
    if info.flags & token_flags::PROTECTED_PATH != 0 {
        eprintln!("phonecsp: enter the PIN of {handset}/{token} on the phone");
        cx.client.login(handset, token, &[])?;
        return Ok(());
    }
    if info.flags & token_flags::PIN_FINAL_TRY != 0 && std::env::var_os(ENV_PIN).is_none() {
        eprintln!("phonecsp: warning: one more wrong PIN locks {handset}/{token}");
    }
    let pin = get_secret(ENV_PIN, &format!("PIN for {handset}/{token}: "))?;
    cx.client.login(handset, token, &pin)?;
    Ok(())
}

// ---- commands ----------------------------------------------------------------

fn status(cx: &Context) -> Result<(), Failure> {
    let version = cx.client.version()?;
    let handsets = cx.client.list_handsets()?;
    let stats = cx.client.statistics()?;
    if cx.json {
        let hs: Vec<Value> = handsets
            .iter()
            .map(|h| {
                let s = stats.get(&h.name).copied().unwrap_or_default();
                json!({
                    "name": h.name,
                    "transport": h.transport,
                    "fingerprint": h.fingerprint,
                    "connected": h.connected,
                    "statistics": {
                        "requests": s.requests,
                        "bytes_out": s.bytes_out,
                        "bytes_in": s.bytes_in,
                    },
                })
            })
            .collect();
        return print_json(&json!({ "version": version, "handsets": hs }));
    }
    let rows: Vec<Vec<String>> = handsets
        .iter()
        .map(|h| {
            let s = stats.get(&h.name).copied().unwrap_or_default();
            vec![
                h.name.clone(),
                yes_no(h.connected),
                s.requests.to_string(),
                s.bytes_out.to_string(),
                s.bytes_in.to_string(),
                fingerprint(&h.fingerprint),
            ]
        })
        .collect();
    let mut text = format!("{version}\n");
    if rows.is_empty() {
        text.push_str("no handset is configured\n");
    } else {
        text.push('\n');
        text.push_str(&render_table(
            &[
                "HANDSET",
                "CONNECTED",
                "REQUESTS",
                "BYTES-OUT",
                "BYTES-IN",
                "FINGERPRINT",
            ],
            &rows,
        ));
    }
    print_text(&text)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.into()
}

fn fingerprint(f: &str) -> String {
    if f.is_empty() {
        "(not paired)".into()
    } else {
        f.into()
    }
}

fn handsets(cx: &Context) -> Result<(), Failure> {
    let list = cx.client.list_handsets()?;
    if cx.json {
        let v: Vec<Value> = list
            .iter()
            .map(|h| {
                json!({
                    "name": h.name,
                    "transport": h.transport,
                    "fingerprint": h.fingerprint,
                    "connected": h.connected,
                })
            })
            .collect();
        return print_json(&Value::Array(v));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|h| {
            vec![
                h.name.clone(),
                yes_no(h.connected),
                h.transport.clone(),
                fingerprint(&h.fingerprint),
            ]
        })
        .collect();
    print_text(&render_table(
        &["NAME", "CONNECTED", "TRANSPORT", "FINGERPRINT"],
        &rows,
    ))
}

fn tokens(cx: &Context) -> Result<(), Failure> {
    let list: Vec<_> = cx
        .client
        .list_tokens()?
        .into_iter()
        .filter(|t| cx.handset.as_ref().is_none_or(|h| *h == t.handset))
        .collect();
    if cx.json {
        let v: Vec<Value> = list
            .iter()
            .map(|t| {
                json!({
                    "handset": t.handset,
                    "token": t.token,
                    "flags": t.flags,
                    "flag_names": flag_names(t.flags),
                })
            })
            .collect();
        return print_json(&Value::Array(v));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|t| {
            vec![
                t.handset.clone(),
                t.token.clone(),
                flag_names(t.flags).join(","),
            ]
        })
        .collect();
    print_text(&render_table(&["HANDSET", "TOKEN", "FLAGS"], &rows))
}

fn objects(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    let list = cx.client.list_objects(&h, token)?;
    if cx.json {
        let v: Vec<Value> = list
            .iter()
            .map(|o| {
                json!({
                    "class": class_name(o.class),
                    "id": hex(&o.id),
                    "label": o.label,
                })
            })
            .collect();
        return print_json(&Value::Array(v));
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|o| vec![class_name(o.class), hex(&o.id), o.label.clone()])
        .collect();
    print_text(&render_table(&["CLASS", "ID", "LABEL"], &rows))
}

fn parse_mechanism(name: &str) -> Option<u32> {
    mechanism::by_name(name).or_else(|| {
        let t = name.trim();
        let h = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X"))?;
        u32::from_str_radix(h, 16).ok()
    })
}

fn parse_hash(name: &str) -> Result<HashAlg, Failure> {
    HashAlg::from_name(name)
        .or_else(|| mechanism::by_name(name).and_then(mechanism::digest_alg))
        .ok_or_else(|| {
            Failure::Usage(format!(
                "unknown hash '{name}': give SHA1, SHA224, SHA256, SHA384 or SHA512"
            ))
        })
}

fn signing_names() -> String {
    let p = MechanismParams::default();
    mechanism::NAMES
        .iter()
        .filter(|(_, m)| Signing::from_ckm(*m, &p).is_ok() || *m == ckm::RSA_PKCS_PSS)
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Hashes a file (or stdin) without holding it in memory.
fn hash_input(path: &str, hash: HashAlg) -> Result<Vec<u8>, Failure> {
    let mut hasher = phonecsp::hash::Hasher::new(hash);
    let mut buf = vec![0u8; 64 * 1024];
    let what = if path == "-" {
        "stdin".to_owned()
    } else {
        path.to_owned()
    };
    let mut reader: Box<dyn Read> = if path == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(path).map_err(|e| io_failure(&format!("reading {what}"), e))?)
    };
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failure(&format!("reading {what}"), e)),
        }
    }
    Ok(hasher.finish())
}

/// What goes over the bus for a signature or its check: for the hashing
/// mechanisms the input is hashed here, streamed, and the daemon gets the
/// DigestInfo (RSA-PKCS) or the digest (RSA-PKCS-PSS): the same signature,
/// whatever the size of the input.
fn prepare_signing(
    args: &SignMechanismArgs,
    input: &str,
) -> Result<(u32, MechanismParams, Vec<u8>), Failure> {
    let mech = parse_mechanism(&args.mechanism).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown mechanism '{}': give one of {}",
            args.mechanism,
            signing_names()
        ))
    })?;
    let hash = args.hash.as_deref().map(parse_hash).transpose()?;
    let not_signing = || {
        Failure::Usage(format!(
            "{} is not a signature mechanism: give one of {}",
            args.mechanism,
            signing_names()
        ))
    };
    let pss_params = |h: HashAlg| MechanismParams {
        hash: h.mechanism() as u32,
        salt_len: args.salt_len.unwrap_or(h.output_len() as u32),
        label: vec![],
    };
    match mech {
        ckm::RSA_PKCS => {
            if args.salt_len.is_some() || hash.is_some() {
                return Err(Failure::Usage(
                    "RSA-PKCS takes neither --hash nor --salt-len".into(),
                ));
            }
            Ok((mech, MechanismParams::default(), read_input(input)?))
        }
        ckm::RSA_PKCS_PSS => {
            let data = read_input(input)?;
            let h = match hash {
                Some(h) => h,
                None => HashAlg::ALL
                    .into_iter()
                    .find(|h| h.output_len() == data.len())
                    .ok_or_else(|| {
                        Failure::Usage(format!(
                            "RSA-PKCS-PSS signs a digest, and {} bytes is no digest's length; give --hash",
                            data.len()
                        ))
                    })?,
            };
            if data.len() != h.output_len() {
                return Err(Failure::Usage(format!(
                    "RSA-PKCS-PSS with {} signs a {}-byte digest, not {} bytes",
                    h.name(),
                    h.output_len(),
                    data.len()
                )));
            }
            Ok((mech, pss_params(h), data))
        }
        _ => {
            let probe = MechanismParams {
                hash: hash.map(|h| h.mechanism() as u32).unwrap_or(0),
                salt_len: args.salt_len.unwrap_or(0),
                label: vec![],
            };
            match Signing::from_ckm(mech, &probe) {
                Ok(Signing::Pkcs1(h)) => {
                    if args.salt_len.is_some() {
                        return Err(Failure::Usage(format!(
                            "--salt-len is for PSS; {} is PKCS#1 v1.5",
                            args.mechanism
                        )));
                    }
                    if hash.is_some_and(|x| x != h) {
                        return Err(Failure::Usage(format!(
                            "--hash does not match {}",
                            args.mechanism
                        )));
                    }
                    let digest = hash_input(input, h)?;
                    Ok((
                        ckm::RSA_PKCS,
                        MechanismParams::default(),
                        phonecsp::hash::digest_info(h, &digest),
                    ))
                }
                Ok(Signing::Pss { hash: h, .. }) => {
                    let digest = hash_input(input, h)?;
                    Ok((ckm::RSA_PKCS_PSS, pss_params(h), digest))
                }
                Err(CkRv::MECHANISM_PARAM_INVALID) => Err(Failure::Usage(format!(
                    "--hash or --salt-len does not fit {}",
                    args.mechanism
                ))),
                _ => Err(not_signing()),
            }
        }
    }
}

fn sign(cx: &Context, a: &SignArgs) -> Result<(), Failure> {
    let h = handset(cx)?;
    let (mech, params, data) = prepare_signing(&a.mech, &a.input)?;
    ensure_login(cx, &h, &a.token)?;
    let sig = cx
        .client
        .sign(&h, &a.token, &a.key.key.0, mech, &params, &data)?;
    emit_bytes(cx, "signature", &a.out, &sig, false)
}

fn verify(cx: &Context, a: &VerifyArgs) -> Result<(), Failure> {
    let h = handset(cx)?;
    let signature = read_input(&a.signature)?;
    let (mech, params, data) = prepare_signing(&a.mech, &a.input)?;
    let valid = cx
        .client
        .verify(&h, &a.token, &a.key.key.0, mech, &params, &data, &signature)?;
    if cx.json {
        print_json(&json!({ "valid": valid }))?;
    } else {
        print_text(if valid {
            "signature valid\n"
        } else {
            "signature INVALID\n"
        })?;
    }
    if valid { Ok(()) } else { Err(Failure::No) }
}

fn crypt(cx: &Context, a: &CryptArgs, decrypt: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    let mech = parse_mechanism(&a.mechanism).ok_or_else(|| {
        Failure::Usage(format!(
            "unknown mechanism '{}': give RSA-PKCS-OAEP or RSA-PKCS",
            a.mechanism
        ))
    })?;
    let params = if mech == ckm::RSA_PKCS_OAEP {
        MechanismParams {
            hash: parse_hash(&a.hash)?.mechanism() as u32,
            salt_len: 0,
            label: vec![],
        }
    } else {
        MechanismParams::default()
    };
    if Encryption::from_ckm(mech, &params).is_err() {
        return Err(Failure::Usage(format!(
            "{} is not an encryption mechanism: give RSA-PKCS-OAEP or RSA-PKCS",
            a.mechanism
        )));
    }
    let input = Zeroizing::new(read_input(&a.input)?);
    if decrypt {
        ensure_login(cx, &h, &a.token)?;
        let pt = cx
            .client
            .decrypt(&h, &a.token, &a.key.key.0, mech, &params, &input)?;
        emit_bytes(cx, "plaintext", &a.out, &pt, true)
    } else {
        let ct = cx
            .client
            .encrypt(&h, &a.token, &a.key.key.0, mech, &params, &input)?;
        emit_bytes(cx, "ciphertext", &a.out, &ct, false)
    }
}

fn random(cx: &Context, length: u32, as_hex: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    let bytes = Zeroizing::new(cx.client.generate_random(&h, length)?);
    if cx.json {
        return print_json(&json!({ "random": hex(&bytes), "length": bytes.len() }));
    }
    if as_hex {
        print_text(&format!("{}\n", hex(&bytes)))
    } else {
        write_output("-", &bytes, true)
    }
}

fn keygen(
    cx: &Context,
    token: &str,
    bits: u32,
    id: Option<Id>,
    label: &str,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    let id = id.map(|i| i.0).unwrap_or_default();
    let key = cx.client.generate_key_pair(&h, token, bits, &id, label)?;
    if cx.json {
        return print_json(&json!({
            "handset": h,
            "token": token,
            "id": hex(&key.id),
            "bits": bits,
            "label": label,
            "modulus": hex(&key.modulus),
            "exponent": hex(&key.exponent),
        }));
    }
    print_text(&format!(
        "generated an RSA-{bits} key pair in {h}/{token}\nid:       {}\nexponent: {}\n",
        hex(&key.id),
        hex(&key.exponent)
    ))
}

/// DER from PEM (`-----BEGIN CERTIFICATE-----`) or DER.
fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let text = String::from_utf8_lossy(bytes);
    if let Some(start) = text.find("-----BEGIN CERTIFICATE-----") {
        let body = &text[start + "-----BEGIN CERTIFICATE-----".len()..];
        let end = body
            .find("-----END CERTIFICATE-----")
            .ok_or_else(|| Failure::Usage("the PEM certificate has no END line".into()))?;
        let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
        return BASE64
            .decode(b64)
            .map_err(|e| Failure::Usage(format!("the PEM certificate is not valid base64: {e}")));
    }
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    Err(Failure::Usage(
        "not a certificate: expected PEM (-----BEGIN CERTIFICATE-----) or DER".into(),
    ))
}

fn to_pem(der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut s = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str("-----END CERTIFICATE-----\n");
    s
}

fn cert_import(cx: &Context, token: &str, id: &Id, label: &str, file: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    let der = certificate_der(&read_input(file)?)?;
    ensure_login(cx, &h, token)?;
    cx.client
        .import_certificate(&h, token, &id.0, label, &der)?;
    if cx.json {
        return print_json(
            &json!({ "handset": h, "token": token, "id": hex(&id.0), "length": der.len() }),
        );
    }
    print_text(&format!(
        "imported the certificate ({} bytes) into {h}/{token} as id {}\n",
        der.len(),
        hex(&id.0)
    ))
}

fn cert_self_sign(
    cx: &Context,
    token: &str,
    id: &Id,
    subject: Option<&str>,
    days: u32,
) -> Result<(), Failure> {
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    let req = phonecsp::selfsign::SelfSignRequest {
        handset: &h,
        token,
        id: &id.0,
        subject,
        days,
    };
    let der = phonecsp::selfsign::self_sign(&cx.client, &req)?;
    if cx.json {
        return print_json(
            &json!({ "handset": h, "token": token, "id": hex(&id.0), "length": der.len() }),
        );
    }
    print_text(&format!(
        "the handset signed a certificate ({} bytes) for key {} in {h}/{token}\n",
        der.len(),
        hex(&id.0)
    ))
}

fn cert_export(cx: &Context, token: &str, id: &Id, out: &str, pem: bool) -> Result<(), Failure> {
    let h = handset(cx)?;
    let attrs: HashMap<u32, Vec<u8>> =
        cx.client
            .get_attributes(&h, token, CKO_CERTIFICATE, &id.0)?;
    let der = attrs
        .get(&CKA_VALUE)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Failure::Failed(format!(
                "{h}/{token} has no certificate with id {}",
                hex(&id.0)
            ))
        })?;
    let data = if pem {
        to_pem(der).into_bytes()
    } else {
        der.clone()
    };
    if cx.json {
        if out == "-" {
            return print_json(&json!({
                "id": hex(&id.0),
                "certificate": BASE64.encode(der),
                "pem": to_pem(der),
            }));
        }
        write_output(out, &data, false)?;
        return print_json(&json!({ "id": hex(&id.0), "out": out, "length": data.len() }));
    }
    write_output(out, &data, false)
}

fn cert_delete(cx: &Context, token: &str, id: &Id) -> Result<(), Failure> {
    let h = handset(cx)?;
    ensure_login(cx, &h, token)?;
    cx.client.delete_object(&h, token, CKO_CERTIFICATE, &id.0)?;
    if cx.json {
        return print_json(
            &json!({ "handset": h, "token": token, "id": hex(&id.0), "deleted": true }),
        );
    }
    print_text(&format!(
        "deleted the certificate {} from {h}/{token}\n",
        hex(&id.0)
    ))
}

fn pin_change(cx: &Context, token: &str) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    let old = get_secret(ENV_PIN, &format!("Current PIN for {h}/{token}: "))?;
    let new = match secret_from_env(ENV_NEW_PIN) {
        Some(p) => p,
        None => {
            let a = get_secret(ENV_NEW_PIN, "New PIN: ")?;
            let b = get_secret(ENV_NEW_PIN, "Repeat the new PIN: ")?;
            if a != b {
                return Err(Failure::Usage(
                    "the new PINs typed differ; nothing was changed".into(),
                ));
            }
            a
        }
    };
    cx.client.change_pin(&h, token, &old, &new)?;
    if cx.json {
        return print_json(&json!({ "handset": h, "token": token, "changed": true }));
    }
    print_text(&format!("changed the PIN of {h}/{token}\n"))
}

fn pair(cx: &Context, code: Option<String>) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.check_daemon()?;
    let code = match code {
        Some(c) => Zeroizing::new(c.into_bytes()),
        None => get_secret(ENV_PAIRING_CODE, &format!("Pairing code shown on {h}: "))?,
    };
    let code = std::str::from_utf8(&code)
        .map_err(|_| Failure::Usage("the pairing code is not valid UTF-8".into()))?
        .trim();
    if code.is_empty() {
        return Err(Failure::Usage("the pairing code is empty".into()));
    }
    let fp = cx.client.pair(&h, code)?;
    if cx.json {
        return print_json(&json!({ "handset": h, "fingerprint": fp }));
    }
    print_text(&format!("paired with {h}\nfingerprint: {fp}\n"))
}

fn unpair(cx: &Context) -> Result<(), Failure> {
    let h = handset(cx)?;
    cx.client.unpair(&h)?;
    if cx.json {
        return print_json(&json!({ "handset": h, "unpaired": true }));
    }
    print_text(&format!("forgot the pinned key of {h}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ids_parse() {
        assert_eq!("0a1B".parse::<Id>(), Ok(Id(vec![0x0a, 0x1b])));
        assert_eq!("0a:1b".parse::<Id>(), Ok(Id(vec![0x0a, 0x1b])));
        assert_eq!("0x01".parse::<Id>(), Ok(Id(vec![1])));
        assert!("1".parse::<Id>().is_err());
        assert!("zz".parse::<Id>().is_err());
        assert!("".parse::<Id>().is_err());
        assert!("é1".parse::<Id>().is_err());
    }

    #[test]
    fn tables_align() {
        let t = render_table(
            &["A", "LONGER", "C"],
            &[vec!["xyz".into(), "1".into(), "last".into()]],
        );
        assert_eq!(t, "A    LONGER  C\nxyz  1       last\n");
    }

    #[test]
    fn parses_global_options_and_subcommands() {
        let cli = Cli::try_parse_from([
            "phonecsp", "--bus", "session", "--json", "sign", "ssh", "--key", "01", "--in", "f",
        ])
        .expect("parses");
        assert_eq!(cli.bus, Some(Bus::Session));
        assert!(cli.json);
        let Command::Sign(a) = cli.command else {
            panic!("not sign")
        };
        assert_eq!(a.mech.mechanism, "SHA256-RSA-PKCS");
        assert_eq!(a.out, "-");
        assert_eq!(a.key.key, Id(vec![1]));
        // Global options after the subcommand too.
        let cli =
            Cli::try_parse_from(["phonecsp", "tokens", "--handset", "pixel"]).expect("parses");
        assert_eq!(cli.handset.as_deref(), Some("pixel"));
        assert!(Cli::try_parse_from(["phonecsp", "keygen", "ssh", "--bits", "1024"]).is_err());
        assert!(Cli::try_parse_from(["phonecsp", "--bus", "nowhere", "status"]).is_err());
    }

    #[test]
    fn pem_and_der() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        assert_eq!(certificate_der(&der).ok(), Some(der.clone()));
        assert_eq!(certificate_der(to_pem(&der).as_bytes()).ok(), Some(der));
        assert!(certificate_der(b"hello").is_err());
    }

    #[test]
    fn prepares_signatures_locally() {
        let dir = std::env::temp_dir().join(format!("phonecsp-cli-test-{}", std::process::id()));
        std::fs::write(&dir, b"hello").expect("write");
        let path = dir.to_string_lossy().into_owned();
        let args = |m: &str, salt: Option<u32>, hash: Option<&str>| SignMechanismArgs {
            mechanism: m.into(),
            salt_len: salt,
            hash: hash.map(Into::into),
        };
        let (m, p, d) = prepare_signing(&args("SHA256-RSA-PKCS", None, None), &path).expect("ok");
        assert_eq!(m, ckm::RSA_PKCS);
        assert_eq!(p, MechanismParams::default());
        assert_eq!(
            d,
            phonecsp::hash::digest_info(
                HashAlg::Sha256,
                &phonecsp::hash::digest(HashAlg::Sha256, b"hello")
            )
        );
        let (m, p, d) =
            prepare_signing(&args("sha384-rsa-pkcs-pss", None, None), &path).expect("ok");
        assert_eq!(m, ckm::RSA_PKCS_PSS);
        assert_eq!((p.hash, p.salt_len), (ckm::SHA384, 48));
        assert_eq!(d.len(), 48);
        assert!(matches!(
            prepare_signing(&args("SHA256-RSA-PKCS", Some(32), None), &path),
            Err(Failure::Usage(_))
        ));
        assert!(matches!(
            prepare_signing(&args("RSA-PKCS-OAEP", None, None), &path),
            Err(Failure::Usage(_))
        ));
        // 5 bytes is no digest.
        assert!(matches!(
            prepare_signing(&args("RSA-PKCS-PSS", None, None), &path),
            Err(Failure::Usage(_))
        ));
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(Failure::No.exit_code(), 1);
        assert_eq!(Failure::Usage(String::new()).exit_code(), 2);
        assert_eq!(
            Failure::Client(Error::Bus(zbus::Error::Unsupported)).exit_code(),
            3
        );
        assert_eq!(
            Failure::Client(Error::from(CkRv::PIN_INCORRECT)).exit_code(),
            4
        );
        assert_eq!(
            Failure::Client(Error::Untrusted {
                name: String::new(),
                actual: 1,
                expected: 0
            })
            .exit_code(),
            5
        );
    }

    #[test]
    fn flags_are_named() {
        assert_eq!(
            flag_names(token_flags::LOGIN_REQUIRED | token_flags::CONFIRM),
            vec!["login-required", "confirm-on-phone"]
        );
    }
}
