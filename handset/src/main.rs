//! `phonecsp-handset`: the phone side as a command. The owner manages
//! containers, keys, paired hosts and authorisations here, and `serve`
//! puts the handset on a link.

use clap::{Parser, Subcommand, ValueEnum};
use phonecsp_handset::audit::{AuditLog, Entry};
use phonecsp_handset::crypto;
use phonecsp_handset::manager::{self, Approver, Manager};
use phonecsp_handset::serve::{self, DEFAULT_RFCOMM_CHANNEL};
use phonecsp_handset::store::{
    self, Hosts, KdfParams, KeyHealth, PinEntry, Policy, Store, StoreError,
};
use phonecsp_protocol::CkRv;
use phonecsp_protocol::PairingCode;
use phonecsp_protocol::noise::fingerprint;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(name = "phonecsp-handset", version, about = "The phone side of phonecsp: keeps keys in PIN-protected containers and serves them over a Noise-secured AT link", long_about = None)]
struct Cli {
    /// State directory (default: $PHONECSP_HANDSET_DIR, else $XDG_DATA_HOME/phonecsp-handset, else ~/.local/share/phonecsp-handset).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Log more (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the state directory and this handset's identity key.
    Init {
        /// Name shown to computers when pairing.
        #[arg(long, default_value = "phonecsp handset")]
        name: String,
    },
    /// Manage containers (each is one PKCS#11 token on the computer).
    #[command(subcommand)]
    Container(ContainerCmd),
    /// Manage keys in a container.
    #[command(subcommand)]
    Key(KeyCmd),
    /// Manage certificates in a container.
    #[command(subcommand)]
    Cert(CertCmd),
    /// Offer a one-time pairing code (printed, or taken from the computer's screen).
    Pair {
        /// The code the computer showed; without it a new one is printed.
        #[arg(long)]
        code: Option<String>,
        /// Authorise the host that pairs for this container (repeatable).
        #[arg(long = "authorise", alias = "authorize")]
        authorise: Vec<String>,
        /// Also offer an eight-digit code, easier to type; the phone stops
        /// pairing after three wrong ones (the long code stays the fallback).
        #[arg(long, conflicts_with = "code")]
        short: bool,
    },
    /// Manage paired computers.
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Show the audit log: every private-key operation, login, pairing,
    /// revocation and policy change, oldest first.
    Log {
        /// One JSON object per line, as the log keeps them.
        #[arg(long)]
        json: bool,
        /// Only the last N entries.
        #[arg(short = 'n', long)]
        lines: Option<usize>,
    },
    /// Serve the link.
    Serve(ServeArgs),
}

#[derive(Subcommand)]
enum ContainerCmd {
    /// Create a container; its PIN is read from $PHONECSP_PIN or the terminal
    /// (twice). Its PUK, which sets a new PIN after five wrong ones, is
    /// $PHONECSP_PUK (8 or more digits), else made up and shown once.
    Create {
        name: String,
        #[arg(long, value_enum, default_value_t = PolicyArg::Auto)]
        policy: PolicyArg,
        /// Argon2id memory in KiB (default 65536).
        #[arg(long)]
        kdf_memory: Option<u32>,
        /// Argon2id passes (default 3).
        #[arg(long)]
        kdf_time: Option<u32>,
    },
    /// List containers.
    List,
    /// Delete a container and all its keys, for good. At a terminal you are
    /// asked to type its name; elsewhere give --yes.
    Delete {
        name: String,
        /// Delete without asking (needed where there is no terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
    /// Set the approval policy.
    Policy { name: String, policy: PolicyArg },
    /// Where the PIN is typed: on the computer (`host`), or here on the
    /// phone (`handset`: the computer sees a protected authentication path
    /// and the prompt command or terminal asks for the PIN).
    PinEntry { name: String, entry: PinEntryArg },
    /// Change the PIN ($PHONECSP_PIN then $PHONECSP_NEW_PIN, or the terminal).
    ChangePin { name: String },
    /// Set a new PIN with the PUK, also when five wrong PINs locked the
    /// container ($PHONECSP_PUK then $PHONECSP_NEW_PIN, or the terminal).
    /// Ten wrong PUKs lock the PUK for good.
    Unblock { name: String },
    /// Give the container a new PUK, with its PIN ($PHONECSP_PIN, then
    /// $PHONECSP_NEW_PUK, or the terminal): how a container made before
    /// PUKs gets one.
    SetPuk {
        name: String,
        /// Make up a PUK of 12 digits and show it, rather than asking.
        #[arg(long)]
        generate: bool,
    },
    /// How long a computer's login outlives its link, in seconds (default
    /// 300; 0: the login ends with the link). The phone keeps it in memory
    /// only, for the same computer's next connection: the person is not
    /// asked for the PIN again after stepping out of range for a moment.
    SetGrace { name: String, seconds: u32 },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Generate an RSA key pair inside the container.
    Generate {
        container: String,
        #[arg(long, default_value_t = 2048)]
        bits: u32,
        /// CKA_ID in hex (default: random).
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Import an RSA private key from a PKCS#8 (or PKCS#1) PEM file.
    Import {
        container: String,
        file: PathBuf,
        #[arg(long)]
        id: Option<String>,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// List keys.
    List { container: String },
}

#[derive(Subcommand)]
enum CertCmd {
    /// Import an X.509 certificate (PEM or DER) for the key with this id.
    Import {
        container: String,
        file: PathBuf,
        #[arg(long)]
        id: String,
        #[arg(long, default_value = "")]
        label: String,
    },
}

#[derive(Subcommand)]
enum HostsCmd {
    /// List paired computers and their containers.
    List,
    /// Authorise a computer (name or fingerprint) for a container.
    Authorise { host: String, container: String },
    /// Revoke a computer's access to one container, or unpair it entirely
    /// (without CONTAINER: asked first at a terminal; elsewhere give --yes).
    Revoke {
        host: String,
        container: Option<String>,
        /// Unpair without asking (needed where there is no terminal).
        #[arg(long, short = 'y')]
        yes: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Serve a serial device.
    #[arg(long, group = "transport")]
    serial: Option<PathBuf>,
    #[arg(long, default_value_t = 115200)]
    baud: u32,
    /// Create a pty and serve it; prints `PTY <slave path>`.
    #[arg(long, group = "transport")]
    pty: bool,
    /// Also make a symlink to the pty's slave at this path.
    #[arg(long, requires = "pty")]
    pty_link: Option<PathBuf>,
    /// Serve stdin/stdout.
    #[arg(long, group = "transport")]
    stdio: bool,
    /// Register a Bluetooth Serial Port Profile and serve RFCOMM connections.
    #[arg(long, group = "transport")]
    rfcomm: bool,
    /// Bluetooth adapter (e.g. hci1) for --rfcomm.
    #[arg(long)]
    adapter: Option<String>,
    #[arg(long, default_value_t = DEFAULT_RFCOMM_CHANNEL)]
    channel: u16,
    /// With --rfcomm and a pairing code on offer: seconds the adapter stays
    /// discoverable and pairable (it is neither once the code is used).
    #[arg(long, default_value_t = serve::DEFAULT_DISCOVERABLE_SECS, value_name = "SECS")]
    discoverable_timeout: u32,
    /// Command that asks the owner to approve an operation (exit 0 = yes).
    #[arg(long)]
    prompt_command: Option<String>,
    /// Seconds the owner has to answer an approval or PIN prompt.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    approval_timeout: u64,
    /// Ask for PINs typed on the phone (containers with `pin-entry
    /// handset`) through this pinentry program, e.g. pinentry-gnome3.
    #[arg(long, value_name = "PROGRAM")]
    pinentry: Option<PathBuf>,
    /// The terminal a terminal pinentry (pinentry-tty, pinentry-curses)
    /// asks on [default: $GPG_TTY, else this program's terminal].
    #[arg(long, value_name = "TTY")]
    pinentry_tty: Option<String>,
    /// Remember a right PIN for this many seconds (0: never), so that the
    /// same computer's next logins to the same container skip the PIN's
    /// key derivation: as gpg-agent caches a passphrase. Only a keyed hash
    /// of the PIN is kept, in memory; a wrong PIN is counted as ever
    /// (docs/store.md).
    #[arg(long, default_value_t = 600, value_name = "SECS")]
    remember_pin: u64,
    /// Ask for approvals through the desktop's notifications
    /// (org.freedesktop.Notifications on the session bus), with Allow and
    /// Deny; closing or ignoring one denies.
    #[arg(long)]
    notify: bool,
    /// The bus the notification service is on [default: the session bus].
    #[arg(long, value_name = "ADDRESS", requires = "notify")]
    notify_bus: Option<String>,
    /// Also offer "Allow for N minutes": the same computer's operations on
    /// the same container need no approval for that long.
    #[arg(long, value_name = "MINUTES", requires = "notify")]
    allow_for: Option<u64>,
    /// Longest line accepted (advertised in +CKVER).
    #[arg(long, default_value_t = serve::DEFAULT_LINE)]
    max_line: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum PinEntryArg {
    Host,
    Handset,
}

#[derive(Clone, Copy, ValueEnum)]
enum PolicyArg {
    Auto,
    Confirm,
}

impl From<PolicyArg> for Policy {
    fn from(p: PolicyArg) -> Policy {
        match p {
            PolicyArg::Auto => Policy::Auto,
            PolicyArg::Confirm => Policy::Confirm,
        }
    }
}

struct StderrLogger(log::LevelFilter);

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= self.0
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            eprintln!(
                "phonecsp-handset: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        _ => log::LevelFilter::Debug,
    };
    let logger = Box::leak(Box::new(StderrLogger(level)));
    if log::set_logger(logger).is_ok() {
        log::set_max_level(level);
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phonecsp-handset: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<(), Box<dyn std::error::Error>>;

fn state_dir(cli: &Option<PathBuf>) -> PathBuf {
    if let Some(d) = cli {
        return d.clone();
    }
    if let Some(d) = std::env::var_os("PHONECSP_HANDSET_DIR") {
        return d.into();
    }
    // The XDG base directory rule: a relative XDG_DATA_HOME is ignored.
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| Path::new(d).is_absolute()) {
        return Path::new(&d).join("phonecsp-handset");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    Path::new(&home).join(".local/share/phonecsp-handset")
}

/// Asks before `what`, which cannot be undone: at a terminal `name` must be
/// typed back; `yes` skips the question; without a terminal (stdin) and
/// without `yes` it is refused.
fn confirm(what: &str, name: &str, yes: bool) -> Res {
    use std::io::{BufRead, IsTerminal};
    if yes {
        return Ok(());
    }
    // An empty name would be confirmed by a bare Enter.
    let name = if name.trim().is_empty() { "yes" } else { name };
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "refusing to {what} without confirmation: it cannot be undone, and stdin is not a \
             terminal to ask on; pass --yes to go ahead"
        )
        .into());
    }
    eprint!("about to {what}; this cannot be undone.\nType '{name}' to confirm: ");
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() == name {
        Ok(())
    } else {
        Err(format!("not confirmed: did not {what}").into())
    }
}

/// A new PIN: from `var`, else typed twice at the terminal, the two the same.
fn read_new_secret(
    var: &str,
    prompt: &str,
) -> Result<Zeroizing<Vec<u8>>, Box<dyn std::error::Error>> {
    if std::env::var_os(var).is_some() {
        return read_secret(var, prompt);
    }
    let first = read_secret(var, prompt)?;
    let again = read_secret(var, &format!("{prompt} again"))?;
    if first != again {
        return Err("the two PINs typed differ; nothing was changed".into());
    }
    Ok(first)
}

/// Reads a secret from `var` or, failing that, the terminal without echo.
fn read_secret(var: &str, prompt: &str) -> Result<Zeroizing<Vec<u8>>, Box<dyn std::error::Error>> {
    if let Some(v) = std::env::var_os(var) {
        use std::os::unix::ffi::OsStrExt;
        return Ok(Zeroizing::new(v.as_bytes().to_vec()));
    }
    Ok(phonecsp_handset::tty::read_secret(prompt)
        .map_err(|e| format!("no terminal to ask for the PIN ({e}): set {var}"))?)
}

fn parse_id(hex: Option<&str>) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    match hex {
        None => {
            use rand::RngCore;
            let mut id = vec![0u8; 8];
            rand::rngs::OsRng.fill_bytes(&mut id);
            Ok(id)
        }
        Some(h) => {
            let h = h.trim_start_matches("0x");
            if h.is_empty() || h.len() % 2 != 0 || h.len() > 128 {
                return Err("id must be an even number of hex digits (at most 64 bytes)".into());
            }
            (0..h.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&h[i..i + 2], 16).map_err(|_| "id is not hex".into()))
                .collect()
        }
    }
}

/// The terminal a terminal pinentry should use when none is given:
/// `$GPG_TTY`, as GnuPG's agent has it, else this program's standard input
/// if that is a terminal.
fn own_tty() -> Option<String> {
    if let Ok(t) = std::env::var("GPG_TTY") {
        return Some(t);
    }
    nix::unistd::ttyname(std::io::stdin())
        .ok()
        .map(|p| p.display().to_string())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn run(cli: Cli) -> Res {
    let dir = state_dir(&cli.state);
    if let Cmd::Init { name } = &cli.command {
        let store = Store::init(&dir, name)?;
        println!(
            "initialised handset '{}' in {} (key {})",
            store.name(),
            dir.display(),
            fingerprint(store.identity().public())
        );
        return Ok(());
    }
    let store = Store::open(&dir)?;
    let audited = owner_event(&cli.command);
    let audit = AuditLog::new(store.dir());
    let result = dispatch(store, cli.command);
    if let Some(mut e) = audited {
        e.result = match &result {
            Ok(()) => "ok".to_owned(),
            Err(err) => err.to_string(),
        };
        audit.record(e);
    }
    result
}

/// What the audit log records of an owner's command: changes to
/// containers, keys, pairing and access; not reads, and not `serve`.
fn owner_event(cmd: &Cmd) -> Option<Entry> {
    let (event, container, key, host) = match cmd {
        Cmd::Container(c) => match c {
            ContainerCmd::Create { name, .. } => ("create-container", Some(name), None, None),
            ContainerCmd::Delete { name, .. } => ("delete-container", Some(name), None, None),
            ContainerCmd::Policy { name, policy } => {
                let e = match policy {
                    PolicyArg::Auto => "policy auto",
                    PolicyArg::Confirm => "policy confirm",
                };
                (e, Some(name), None, None)
            }
            ContainerCmd::PinEntry { name, .. } => ("pin-entry", Some(name), None, None),
            ContainerCmd::ChangePin { name } => ("change-pin", Some(name), None, None),
            ContainerCmd::Unblock { name } => ("unblock", Some(name), None, None),
            ContainerCmd::SetPuk { name, .. } => ("set-puk", Some(name), None, None),
            ContainerCmd::SetGrace { name, .. } => ("set-grace", Some(name), None, None),
            ContainerCmd::List => return None,
        },
        Cmd::Key(k) => match k {
            KeyCmd::Generate { container, id, .. } => {
                ("generate-key", Some(container), id.as_ref(), None)
            }
            KeyCmd::Import { container, id, .. } => {
                ("import-key", Some(container), id.as_ref(), None)
            }
            KeyCmd::List { .. } => return None,
        },
        Cmd::Cert(CertCmd::Import { container, id, .. }) => {
            ("store-certificate", Some(container), Some(id), None)
        }
        Cmd::Pair { .. } => ("offer-pairing", None, None, None),
        Cmd::Hosts(h) => match h {
            HostsCmd::Authorise { host, container } => {
                ("authorise", Some(container), None, Some(host))
            }
            HostsCmd::Revoke {
                host,
                container: Some(c),
                ..
            } => ("revoke", Some(c), None, Some(host)),
            HostsCmd::Revoke { host, .. } => ("unpair", None, None, Some(host)),
            HostsCmd::List => return None,
        },
        Cmd::Init { .. } | Cmd::Log { .. } | Cmd::Serve(_) => return None,
    };
    let mut e = Entry::new(&format!("owner: {event}"), "");
    e.container = container.cloned();
    e.key = key.cloned();
    e.host = host.cloned();
    Some(e)
}

fn dispatch(store: Store, command: Cmd) -> Res {
    match command {
        Cmd::Init { .. } => unreachable!("handled above"),
        Cmd::Log { json, lines } => {
            let (entries, unreadable) = AuditLog::new(store.dir()).read()?;
            if unreadable > 0 {
                eprintln!(
                    "phonecsp-handset: {unreadable} line(s) of the audit log could not be read"
                );
            }
            let skip = entries.len().saturating_sub(lines.unwrap_or(usize::MAX));
            for e in &entries[skip..] {
                if json {
                    println!("{}", serde_json::to_string(e)?);
                } else {
                    println!("{}", e.display());
                }
            }
            Ok(())
        }
        Cmd::Container(c) => container(&store, c),
        Cmd::Key(k) => key(&store, k),
        Cmd::Cert(CertCmd::Import {
            container,
            file,
            id,
            label,
        }) => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let der = pem_or_der(&bytes, "CERTIFICATE")?;
            let mut c = store.load_container(&container)?;
            c.put_cert(parse_id(Some(&id))?, label, der)?;
            store.save_container(&c)?;
            println!("certificate stored in '{container}' with id {id}");
            Ok(())
        }
        Cmd::Pair {
            code,
            authorise,
            short,
        } => {
            for c in &authorise {
                store.load_container(c)?;
            }
            let (code, shown) = match code {
                Some(s) => (PairingCode::parse(&s)?, false),
                None => (PairingCode::generate(), true),
            };
            if short {
                let short = phonecsp_protocol::pake::ShortCode::generate();
                manager::offer_short_pairing(&store, &code, &short, authorise)?;
                println!("{}", short.display().as_str());
                println!("(or the long code: {})", code.display().as_str());
            } else if shown {
                manager::offer_pairing(&store, &code, authorise)?;
                println!("{}", code.display().as_str());
            } else {
                manager::offer_pairing(&store, &code, authorise)?;
                println!("pairing code accepted; waiting for the computer to pair");
            }
            Ok(())
        }
        Cmd::Hosts(h) => hosts(&store, h),
        Cmd::Serve(args) => serve_cmd(store, args),
    }
}

fn pem_or_der(bytes: &[u8], label: &str) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let text = std::str::from_utf8(bytes).ok();
    match text.and_then(|t| t.find(&format!("-----BEGIN {label}-----")).map(|i| &t[i..])) {
        Some(t) => {
            let body: String = t
                .lines()
                .skip(1)
                .take_while(|l| !l.starts_with("-----END"))
                .collect();
            Ok(phonecsp_protocol::at::decode_b64(body.trim()).map_err(|_| "malformed PEM")?)
        }
        None => Ok(bytes.to_vec()),
    }
}

fn container(store: &Store, c: ContainerCmd) -> Res {
    match c {
        ContainerCmd::Create {
            name,
            policy,
            kdf_memory,
            kdf_time,
        } => {
            let pin = read_new_secret("PHONECSP_PIN", "PIN for the new container")?;
            let mut kdf = KdfParams::DEFAULT;
            if let Some(m) = kdf_memory {
                kdf.m_kib = m;
            }
            if let Some(t) = kdf_time {
                kdf.t = t;
            }
            let (puk, made_up) = match std::env::var_os("PHONECSP_PUK") {
                Some(_) => (read_secret("PHONECSP_PUK", "PUK")?, false),
                None => (store::generate_puk(), true),
            };
            let c = store.create_container_with_puk(&name, &pin, Some(&puk), policy.into(), kdf)?;
            println!("created container '{}' (serial {})", c.name(), c.serial());
            if made_up {
                show_puk(&name, &puk);
            }
        }
        ContainerCmd::List => {
            println!(
                "{:<20} {:<8} {:>5} {:>6} {:>7} {:>6}  DAMAGED",
                "CONTAINER", "POLICY", "KEYS", "CERTS", "TRIES", "PUK"
            );
            let mut notes = Vec::new();
            for name in store.container_names()? {
                let c = store.load_container(&name)?;
                let mut damaged = Vec::new();
                for k in c.keys() {
                    if let Err(e) = c.check_key(&k.id) {
                        damaged.push(hex(&k.id));
                        notes.push(e.to_string());
                    }
                }
                println!(
                    "{:<20} {:<8} {:>5} {:>6} {:>7} {:>6}  {}",
                    name,
                    format!("{:?}", c.policy()).to_lowercase(),
                    c.keys().len(),
                    c.certs().len(),
                    if c.is_locked() {
                        "locked".to_string()
                    } else {
                        c.retries_left().to_string()
                    },
                    match c.puk_retries_left() {
                        None => "none".to_string(),
                        Some(0) => "locked".to_string(),
                        Some(n) => n.to_string(),
                    },
                    if damaged.is_empty() {
                        "-".to_string()
                    } else {
                        format!("keys {}", damaged.join(","))
                    }
                );
            }
            for n in notes {
                println!("{n}");
            }
        }
        ContainerCmd::Delete { name, yes } => {
            // A name that is not there is said as such, not asked about.
            let c = store.load_container(&name)?;
            confirm(
                &format!(
                    "delete the container '{name}' and its {} keys and {} certificates",
                    c.keys().len(),
                    c.certs().len()
                ),
                &name,
                yes,
            )?;
            store.delete_container(&name)?;
            println!("deleted container '{name}'");
        }
        ContainerCmd::Policy { name, policy } => {
            let mut c = store.load_container(&name)?;
            c.set_policy(policy.into());
            store.save_container(&c)?;
        }
        ContainerCmd::PinEntry { name, entry } => {
            let mut c = store.load_container(&name)?;
            c.set_pin_entry(match entry {
                PinEntryArg::Host => PinEntry::Host,
                PinEntryArg::Handset => PinEntry::Handset,
            });
            store.save_container(&c)?;
        }
        ContainerCmd::SetGrace { name, seconds } => {
            let mut c = store.load_container(&name)?;
            c.set_grace(seconds)?;
            store.save_container(&c)?;
            println!("a login to '{name}' now outlives its link by {seconds} s");
        }
        ContainerCmd::ChangePin { name } => {
            let old = read_secret("PHONECSP_PIN", "Current PIN")?;
            let new = read_new_secret("PHONECSP_NEW_PIN", "New PIN")?;
            let mut c = store.load_container(&name)?;
            c.change_pin(store, &old, &new)?;
            println!("PIN changed for '{name}'");
        }
        ContainerCmd::Unblock { name } => {
            let mut c = store.load_container(&name)?;
            if !c.has_puk() {
                return Err(no_puk(&name).into());
            }
            if c.puk_retries_left() == Some(0) {
                return Err(puk_locked(&name).into());
            }
            let puk = read_secret("PHONECSP_PUK", "PUK")?;
            let new = read_new_secret("PHONECSP_NEW_PIN", "New PIN")?;
            match c.unblock(store, &puk, &new) {
                Ok(()) => println!("new PIN set for '{name}'; it has every try again"),
                Err(StoreError::Token(rv)) if rv == CkRv::PIN_INCORRECT => {
                    let left = c.puk_retries_left().unwrap_or(0);
                    return Err(format!(
                        "wrong PUK for '{name}': {left} {} left before the PUK locks for good",
                        if left == 1 { "try" } else { "tries" }
                    )
                    .into());
                }
                Err(StoreError::Token(rv)) if rv == CkRv::PIN_LOCKED => {
                    return Err(puk_locked(&name).into());
                }
                Err(e) => return Err(e.into()),
            }
        }
        ContainerCmd::SetPuk { name, generate } => {
            let pin = read_secret("PHONECSP_PIN", "PIN")?;
            let puk = if generate {
                store::generate_puk()
            } else {
                read_new_secret("PHONECSP_NEW_PUK", "New PUK (8 or more digits)")?
            };
            let mut c = store.load_container(&name)?;
            c.set_puk(store, &pin, &puk)?;
            println!("new PUK set for '{name}'");
            if generate {
                show_puk(&name, &puk);
            }
        }
    }
    Ok(())
}

/// Shows a PUK the handset made up, once, with what it is for.
fn show_puk(name: &str, puk: &[u8]) {
    let digits = String::from_utf8_lossy(puk);
    let grouped: Vec<&str> = digits
        .as_bytes()
        .chunks(4)
        .filter_map(|c| std::str::from_utf8(c).ok())
        .collect();
    println!(
        "PUK of '{name}': {}\n  Write it down and keep it away from the phone: it is shown only \
         now. After five wrong PINs it sets a new one (`phonecsp unblock`, or \
         `phonecsp-handset container unblock {name}`); ten wrong PUKs lock the container for good.",
        grouped.join(" ")
    );
}

fn no_puk(name: &str) -> String {
    format!(
        "container '{name}' has no PUK (it was made before PUKs): nothing can unblock it once \
         locked. While its PIN still works, give it one: phonecsp-handset container set-puk {name}"
    )
}

/// What a locked PUK leaves: nothing in the container; what is outside it.
fn puk_locked(name: &str) -> String {
    format!(
        "the PUK of container '{name}' is locked for good after ten wrong PUKs: nothing in this \
         container can be used again. What survives is outside it: a disk's other LUKS keyslots \
         (its passphrase or recovery key) and any recovery key you re-wrapped to another \
         container. Delete this one (phonecsp-handset container delete {name}) and make a new one"
    )
}

fn key(store: &Store, k: KeyCmd) -> Res {
    match k {
        KeyCmd::Generate {
            container,
            bits,
            id,
            label,
        } => {
            let mut c = store.load_container(&container)?;
            let pin = read_secret("PHONECSP_PIN", "PIN")?;
            let kek = c.unlock(store, &pin)?;
            let id = parse_id(id.as_deref())?;
            let key = crypto::generate(bits).map_err(|rv| rv.to_string())?;
            c.add_key(&kek, id.clone(), label, &key)?;
            store.save_container(&c)?;
            println!("generated RSA-{bits} key {} in '{container}'", hex(&id));
        }
        KeyCmd::Import {
            container,
            file,
            id,
            label,
        } => {
            let pem = Zeroizing::new(
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?,
            );
            let key = crypto::import_pkcs8_pem(&pem)
                .map_err(|rv| format!("{}: not an RSA private key PEM ({rv})", file.display()))?;
            let mut c = store.load_container(&container)?;
            let pin = read_secret("PHONECSP_PIN", "PIN")?;
            let kek = c.unlock(store, &pin)?;
            let id = parse_id(id.as_deref())?;
            // Made elsewhere: recorded as imported (CKA_LOCAL false).
            c.import_key(&kek, id.clone(), label, &crypto::ImportedKey::Rsa(key))?;
            store.save_container(&c)?;
            println!("imported key {} into '{container}'", hex(&id));
        }
        KeyCmd::List { container } => {
            let c = store.load_container(&container)?;
            println!(
                "{:<18} {:<8} {:>5} {:<6} {:<9} LABEL",
                "ID", "TYPE", "BITS", "CERT", "STATE"
            );
            let mut notes = Vec::new();
            for k in c.keys() {
                let has_cert = c.certs().iter().any(|x| x.id == k.id);
                let state = match k.health() {
                    KeyHealth::Sound => "ok",
                    KeyHealth::Unchecked => "unchecked",
                    KeyHealth::Damaged(_) => "damaged",
                };
                if let Err(e) = c.check_key(&k.id) {
                    notes.push(e.to_string());
                }
                println!(
                    "{:<18} {:<8} {:>5} {:<6} {:<9} {}",
                    hex(&k.id),
                    k.curve().map_or("rsa", |c| c.name()),
                    k.bits,
                    if has_cert { "yes" } else { "no" },
                    state,
                    k.label
                );
            }
            if c.keys().iter().any(|k| k.health() == KeyHealth::Unchecked) {
                notes.push(
                    "unchecked: written before keys had integrity checks; checked at the next \
                     right PIN"
                        .into(),
                );
            }
            for n in notes {
                println!("{n}");
            }
        }
    }
    Ok(())
}

fn hosts(store: &Store, h: HostsCmd) -> Res {
    // Read once to check and to ask; changed under the hosts lock, on the
    // file as it is then (`serve` may have pinned a host meanwhile).
    let hosts = store.load_hosts()?;
    let find = |hosts: &Hosts, host: &str| {
        hosts
            .find_by_name_or_fingerprint(host)
            .ok_or_else(|| StoreError::NotFound(format!("paired host '{host}'")))
    };
    match h {
        HostsCmd::List => {
            println!("{:<20} {:<20} CONTAINERS", "HOST", "FINGERPRINT");
            for e in &hosts.hosts {
                println!(
                    "{:<20} {:<20} {}",
                    e.name,
                    fingerprint(&e.public),
                    e.containers.join(",")
                );
            }
            if hosts.pairing.is_some() {
                println!("(a pairing code is on offer)");
            }
        }
        HostsCmd::Authorise { host, container } => {
            store.load_container(&container)?;
            hosts
                .find_by_name_or_fingerprint(&host)
                .ok_or_else(|| format!("no paired host '{host}'"))?;
            store.update_hosts(|hosts| {
                let i = find(hosts, &host)?;
                if !hosts.hosts[i].containers.contains(&container) {
                    hosts.hosts[i].containers.push(container);
                }
                Ok(())
            })?;
        }
        HostsCmd::Revoke {
            host,
            container,
            yes,
        } => {
            let i = hosts
                .find_by_name_or_fingerprint(&host)
                .ok_or_else(|| format!("no paired host '{host}'"))?;
            if container.is_none() {
                let name = hosts.hosts[i].name.clone();
                confirm(
                    &format!(
                        "unpair the computer '{name}' (it needs a new pairing code to come back)"
                    ),
                    &name,
                    yes,
                )?;
            }
            store.update_hosts(|hosts| {
                let i = find(hosts, &host)?;
                match container {
                    Some(c) => hosts.hosts[i].containers.retain(|x| *x != c),
                    None => {
                        hosts.hosts.remove(i);
                    }
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

fn serve_cmd(store: Store, args: ServeArgs) -> Res {
    let approver = Approver {
        command: args.prompt_command.clone(),
        terminal: args.prompt_command.is_none() && !args.stdio,
        timeout: Some(std::time::Duration::from_secs(args.approval_timeout.max(1))),
        pinentry: args.pinentry.clone(),
        pinentry_tty: args.pinentry_tty.clone().or_else(own_tty),
        notifier: args.notify.then(|| phonecsp_handset::notify::Notifier {
            address: args.notify_bus.clone(),
            allow_for: args
                .allow_for
                .map(|m| std::time::Duration::from_secs(m.max(1) * 60)),
        }),
    };
    let mut manager = Manager::new(store, approver);
    manager.remember_pins_for(std::time::Duration::from_secs(args.remember_pin));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some(path) = &args.serial {
            serve::serve_serial(&mut manager, path, args.baud, args.max_line).await?;
        } else if args.pty {
            let pty = serve::open_pty()?;
            if let Some(link) = &args.pty_link {
                let _ = std::fs::remove_file(link);
                std::os::unix::fs::symlink(&pty.slave_path, link)?;
            }
            println!("PTY {}", pty.slave_path.display());
            std::io::stdout().flush()?;
            serve::serve_pty(&mut manager, &pty, args.max_line).await?;
        } else if args.stdio {
            serve::serve_stdio(&mut manager, args.max_line).await?;
        } else if args.rfcomm {
            serve::serve_rfcomm(
                &mut manager,
                args.adapter.as_deref(),
                args.channel,
                args.max_line,
                args.discoverable_timeout,
            )
            .await?;
        } else {
            return Err("choose a transport: --serial PATH, --pty, --stdio or --rfcomm".into());
        }
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
