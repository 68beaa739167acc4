//! The security manager: answers each `+CK` request from an authenticated
//! host. It checks that the host is authorised for the container, that the
//! session has logged in, and that the owner approves when the container's
//! policy asks; then it unwraps the key for one operation and drops it.
//!
//! Hosts and containers are looked at on every request, so the owner's
//! revocations and PIN counters take effect at once; but a file is read
//! and parsed again only when `stat` says it changed ([`FileStamp`]),
//! since that costs more than the request itself.
//!
//! A login outlives its session for the container's grace period
//! (docs/store.md): kept in memory only, keyed by the computer's Noise key,
//! and given back to that computer's next session, so a link that drops
//! and comes back does not cost the person their PIN again.

use crate::audit::{AuditLog, Entry};
use crate::crypto;
use crate::store::{
    Container, DataEntry, EcPrivateKey, FileStamp, Hosts, Kek, PinEntry, Policy, PrivateKey, Store,
    StoreError,
};
use phonecsp_protocol::SignMechanism;
use phonecsp_protocol::announce::{Announced, Announcement};
use phonecsp_protocol::ck::{Curve, cka};
use phonecsp_protocol::limits::MAX_PROGRAM_LEN;
use phonecsp_protocol::message::{ContainerEntry, ObjectEntry, TokenInfo, token_flags};
use phonecsp_protocol::noise::fingerprint;
use phonecsp_protocol::{Asker, CkRv, Handler, ObjectClass, Reply, Request, StaticKeypair};
use rand::RngCore;
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// What the owner said when asked to approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    Yes,
    /// Yes, and to the same computer's operations on the same container
    /// for this long (the owner's "allow for a while").
    YesFor(Duration),
    /// The owner refused.
    No,
    /// Nobody answered in time, or nobody could be asked.
    NoAnswer,
}

/// How the owner is asked to approve an operation on a `confirm` container.
#[derive(Debug, Clone, Default)]
pub struct Approver {
    /// Run through `sh -c`; exit status 0 approves. The request is described
    /// in `PHONECSP_PROMPT`, `PHONECSP_HOST`, `PHONECSP_CONTAINER`,
    /// `PHONECSP_OPERATION`, for an operation with a key `PHONECSP_KEY`
    /// (the key's label), and where the computer named it
    /// `PHONECSP_PROGRAM` (the program there that asks, as the computer
    /// says: text to show, not to trust).
    pub command: Option<String>,
    /// Without a command, ask on the controlling terminal (`/dev/tty`).
    pub terminal: bool,
    /// How long a person has to answer before the request is refused.
    pub timeout: Option<Duration>,
    /// Ask for PINs typed on the phone through this pinentry program
    /// (before the prompt command and the terminal).
    pub pinentry: Option<std::path::PathBuf>,
    /// The terminal a terminal pinentry (`pinentry-tty`, `-curses`) uses.
    pub pinentry_tty: Option<String>,
    /// Ask through the desktop's notifications (before the prompt command
    /// and the terminal, which are asked if no notification service
    /// answers).
    pub notifier: Option<crate::notify::Notifier>,
}

const DEFAULT_APPROVAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Characters that change how the text around them is shown (direction
/// overrides, invisible joiners) without being seen themselves: a name
/// from the computer could use them to read as something it is not.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}')
}

/// A program's description from the computer as the owner is shown it:
/// no control or invisible formatting characters, at most
/// [`MAX_PROGRAM_LEN`] characters; `None` if nothing is left. The link's
/// parser has already refused quotes, backslashes and controls; this is
/// the phone's own check of text it did not write.
fn shown_program(program: Option<&str>) -> Option<String> {
    let s: String = program?
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .take(MAX_PROGRAM_LEN)
        .collect();
    let s = s.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

impl Approver {
    fn approve(
        &self,
        host: &str,
        container: &str,
        operation: &str,
        key: Option<&str>,
        program: Option<&str>,
    ) -> Approval {
        let with = match key {
            Some(label) => format!(" with the key '{label}'"),
            // "generate a key", "import a key": the key is the one made.
            None if operation.ends_with("a key") => String::new(),
            None => " with a key".to_owned(),
        };
        let by = match program {
            Some(p) => format!(" for {p}"),
            None => String::new(),
        };
        let prompt = format!("{host} asks to {operation}{with} of container '{container}'{by}");
        if let Some(n) = &self.notifier {
            use crate::notify::Answer;
            let timeout = self.timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
            let summary = format!("Allow '{host}' to {operation}?");
            match n.ask(&summary, &prompt, timeout) {
                Ok(Answer::Allow) => return Approval::Yes,
                Ok(Answer::AllowForAWhile) => {
                    return Approval::YesFor(n.allow_for.unwrap_or_default());
                }
                Ok(Answer::Deny) => return Approval::No,
                Ok(Answer::NoAnswer) => return Approval::NoAnswer,
                Err(e) => log::warn!("could not ask through a notification: {e}"),
            }
        }
        let asked = Asked {
            prompt: &prompt,
            host,
            container,
            operation,
            key,
            program,
        };
        if let Some(cmd) = &self.command {
            return match self.run_command(cmd, &asked, Stdio::inherit()) {
                Ok(_) => Approval::Yes,
                Err(answer) => answer,
            };
        }
        match self.terminal && crate::tty::approve(&prompt) {
            true => Approval::Yes,
            false if self.terminal => Approval::No,
            false => Approval::NoAnswer,
        }
    }

    /// Asks the owner to type the container's PIN on the phone: the prompt
    /// command (run with `PHONECSP_OPERATION=pin`) prints it on its first
    /// line of output, or the terminal asks without echo. `None` if the
    /// person cancels, does not answer in time, or nobody can be asked.
    pub fn ask_pin(&self, host: &str, container: &str) -> Option<Zeroizing<Vec<u8>>> {
        let prompt = format!("{host} asks to log in to container '{container}': enter its PIN");
        if let Some(program) = &self.pinentry {
            let req = crate::pinentry::Request {
                title: "phonecsp",
                description: &format!(
                    "The computer '{host}' asks to use container '{container}'.\n\
                     Enter the container's PIN to allow it."
                ),
                prompt: "PIN:",
                timeout: self.timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT),
                tty: self.pinentry_tty.as_deref(),
            };
            return match crate::pinentry::get_pin(program, &req) {
                Ok(pin) => pin,
                Err(e) => {
                    log::warn!("no PIN for container '{container}': {e}");
                    None
                }
            };
        }
        if let Some(cmd) = &self.command {
            let asked = Asked {
                prompt: &prompt,
                host,
                container,
                operation: "pin",
                key: None,
                program: None,
            };
            let mut child = self.run_command(cmd, &asked, Stdio::piped()).ok()?;
            let mut out = Zeroizing::new(Vec::new());
            use std::io::Read;
            child.stdout.take()?.read_to_end(&mut out).ok()?;
            let end = out.iter().position(|b| *b == b'\n').unwrap_or(out.len());
            let line = out[..end].strip_suffix(b"\r").unwrap_or(&out[..end]);
            return Some(Zeroizing::new(line.to_vec()));
        }
        if self.terminal {
            return crate::tty::read_secret(&prompt).ok();
        }
        None
    }

    /// Runs the prompt command for `asked` and waits for it, at most the
    /// approval timeout. The finished child if it said yes (exit 0);
    /// [`Approval::No`] if it said no; [`Approval::NoAnswer`] if it could
    /// not start or did not answer in time (then it is killed).
    fn run_command(
        &self,
        cmd: &str,
        asked: &Asked<'_>,
        stdout: Stdio,
    ) -> Result<std::process::Child, Approval> {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(cmd)
            .env("PHONECSP_PROMPT", asked.prompt)
            .env("PHONECSP_HOST", asked.host)
            .env("PHONECSP_CONTAINER", asked.container)
            .env("PHONECSP_OPERATION", asked.operation)
            .stdin(Stdio::null())
            .stdout(stdout);
        if let Some(key) = asked.key {
            command.env("PHONECSP_KEY", key);
        }
        if let Some(program) = asked.program {
            command.env("PHONECSP_PROGRAM", program);
        }
        let Ok(mut child) = command.spawn() else {
            log::warn!(
                "the prompt command could not be started for {}",
                asked.operation
            );
            return Err(Approval::NoAnswer);
        };
        let deadline = Instant::now() + self.timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(child),
                Ok(Some(_)) => return Err(Approval::No),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Approval::NoAnswer);
                }
            }
        }
    }
}

/// The requests that add or remove an object of the container (in memory;
/// the caller saves it). A missing object is an invalid handle.
fn change_objects(c: &mut Container, request: Request) -> Result<(), CkRv> {
    let missing = |_| CkRv::OBJECT_HANDLE_INVALID;
    match request {
        Request::PutCertificate { id, label, der, .. } => {
            c.put_cert(id, label, der).map_err(store_rv)
        }
        Request::DeleteCertificate { id, .. } => c.remove_cert(&id).map_err(missing),
        Request::DestroyKey { id, .. } => c.remove_key(&id).map_err(missing),
        Request::PutData { object, .. } => c.put_data(DataEntry::from(object)).map_err(store_rv),
        Request::DeleteData { id, .. } => c.remove_data(&id).map_err(missing),
        _ => Err(CkRv::GENERAL_ERROR),
    }
}

/// The operations that use a private key, with the key unwrapped. A
/// mechanism of the other key type is `CKR_KEY_TYPE_INCONSISTENT`.
fn private_key_operation(key: &PrivateKey, request: Request) -> Result<Reply, CkRv> {
    if let Request::Rewrap {
        in_hash,
        data,
        out_hash,
        spki,
        ..
    } = request
    {
        return crate::rewrap::rewrap(key, in_hash, &data, out_hash, &spki).map(Reply::Rewrapped);
    }
    let key = match key {
        PrivateKey::Rsa(key) => key,
        PrivateKey::Ec(key) => return ec_key_operation(key, request),
    };
    match request {
        Request::Sign {
            mechanism: SignMechanism::Ecdsa | SignMechanism::Eddsa,
            ..
        }
        | Request::Derive { .. } => Err(CkRv::KEY_TYPE_INCONSISTENT),
        Request::Sign {
            mechanism, data, ..
        } => crypto::sign(key, &mechanism, &data).map(Reply::Signature),
        Request::Decrypt {
            mechanism, data, ..
        } => crypto::decrypt(key, &mechanism, &data).map(Reply::Plaintext),
        _ => Err(CkRv::GENERAL_ERROR),
    }
}

/// [`private_key_operation`] with an EC key: ECDSA over a digest, EdDSA
/// over a message, ECDH; nothing of RSA's.
fn ec_key_operation(key: &EcPrivateKey, request: Request) -> Result<Reply, CkRv> {
    match request {
        Request::Sign {
            mechanism: SignMechanism::Ecdsa,
            data,
            ..
        } => key.sign_digest(&data).map(Reply::Signature),
        Request::Sign {
            mechanism: SignMechanism::Eddsa,
            data,
            ..
        } => key.sign_message(&data).map(Reply::Signature),
        Request::Derive { peer, .. } => key.derive(&peer).map(Reply::Derived),
        Request::Sign { .. } | Request::Decrypt { .. } => Err(CkRv::KEY_TYPE_INCONSISTENT),
        _ => Err(CkRv::GENERAL_ERROR),
    }
}

/// What a prompt describes.
struct Asked<'a> {
    prompt: &'a str,
    host: &'a str,
    container: &'a str,
    operation: &'a str,
    key: Option<&'a str>,
    /// The program on the computer that asks, as the computer named it.
    program: Option<&'a str>,
}

/// The key a request uses, if it names one.
fn key_id_of(r: &Request) -> Option<&[u8]> {
    match r {
        Request::Sign { id, .. }
        | Request::Decrypt { id, .. }
        | Request::DestroyKey { id, .. }
        | Request::Derive { id, .. } => Some(id),
        Request::Rewrap { id, .. } => Some(id),
        _ => None,
    }
}

/// What the audit log keeps of a request.
struct AuditedRequest {
    container: Option<String>,
    key: Option<String>,
    /// The program the computer named, cleaned as the prompt shows it.
    program: Option<String>,
}

/// The audit log's name for a request it records: operations with a
/// private key, logins and PIN changes, and changes to a container's
/// objects. Reads (lists, token information, attributes, random bytes)
/// are not recorded.
fn audit_event(r: &Request) -> Option<&'static str> {
    Some(match r {
        Request::Login { .. } => "login",
        Request::Logout { .. } => "logout",
        Request::ChangePin { .. } => "change-pin",
        Request::SoLogin { .. } => "puk-login",
        Request::SoLogout { .. } => "puk-logout",
        Request::InitPin { .. } => "unblock",
        Request::ChangePuk { .. } => "change-puk",
        Request::Sign { .. } => "sign",
        Request::Decrypt { .. } => "decrypt",
        Request::Rewrap { .. } => "rewrap",
        Request::GenerateKeyPair { .. } | Request::GenerateEcKeyPair { .. } => "generate-key",
        Request::Derive { .. } => "derive",
        Request::ImportKey { .. } => "import-key",
        Request::DestroyKey { .. } => "delete-key",
        Request::PutCertificate { .. } => "store-certificate",
        Request::DeleteCertificate { .. } => "delete-certificate",
        Request::PutData { .. } => "store-data",
        Request::DeleteData { .. } => "delete-data",
        _ => return None,
    })
}

/// The key or object a request names, as the log shows it: its id in hex.
fn audited_key(r: &Request) -> Option<String> {
    let id = match r {
        Request::GenerateKeyPair { id, .. }
        | Request::GenerateEcKeyPair { id, .. }
        | Request::ImportKey { id, .. }
        | Request::PutCertificate { id, .. }
        | Request::DeleteCertificate { id, .. }
        | Request::DeleteData { id, .. } => id.as_slice(),
        Request::PutData { object, .. } => object.id.as_slice(),
        other => key_id_of(other)?,
    };
    Some(id.iter().map(|b| format!("{b:02x}")).collect())
}

/// Operations whose approval the owner is asked for.
fn operation_name(r: &Request) -> Option<&'static str> {
    match r {
        Request::Sign { .. } => Some("sign"),
        Request::Decrypt { .. } => Some("decrypt"),
        Request::Rewrap { .. } => Some("re-wrap a secret"),
        Request::DestroyKey { .. } => Some("destroy a key"),
        Request::GenerateKeyPair { .. } | Request::GenerateEcKeyPair { .. } => {
            Some("generate a key")
        }
        Request::Derive { .. } => Some("agree a shared secret (ECDH)"),
        Request::ImportKey { .. } => Some("import a key"),
        _ => None,
    }
}

/// A login whose session ended, kept for the same computer's next session
/// until `until` (its container's grace period after the computer was last
/// heard from). In memory only: a restart of the handset ends it.
struct Kept {
    kek: Kek,
    heard: Instant,
    until: Instant,
}

/// A right PIN, remembered for a computer's next logins to the same
/// container: a keyed hash of it (never the PIN), the container key it
/// opened, and until when.
struct Remembered {
    pin_mac: [u8; 32],
    kek: Kek,
    until: Instant,
}

/// HMAC-SHA256 of a PIN under the process's random key.
fn pin_mac(key: &[u8; 32], pin: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    mac.update(pin);
    mac.finalize().into_bytes().into()
}

pub struct Manager {
    store: Store,
    approver: Approver,
    audit: AuditLog,
    /// Key-encrypting keys of the containers each host's session logged in to.
    logins: PerHost<Kek>,
    /// Logins of sessions that ended, within their grace period.
    kept: PerHost<Kept>,
    /// When each host with a session up was last heard from.
    heard: HashMap<[u8; 32], Instant>,
    /// (computer, container) whose operations the owner allowed for a
    /// while, and until when. In memory only.
    allowed: PerHost<Instant>,
    /// Security officers' logins (with the PUK), kept apart from the user's
    /// so that neither replaces the other: they only set a new PIN or PUK.
    so_logins: PerHost<Kek>,
    /// PINs remembered after a right login (docs/store.md, "Remembering a
    /// PIN"): how long, and per (computer, container) a keyed hash of the
    /// PIN with the container key it opened.
    pin_memory: Duration,
    remembered: PerHost<Remembered>,
    /// The key of those hashes: random, in this process's memory only.
    pin_key: Zeroizing<[u8; 32]>,
    /// `hosts.json` as last read, under its stamp then (`None`: missing).
    hosts: Mutex<Option<(Option<FileStamp>, Hosts)>>,
    /// Each container as last read, with its version, under its stamp then.
    containers: Mutex<HashMap<String, (FileStamp, Container, u64)>>,
    /// Files read and parsed, for the tests that they are read only when
    /// they changed.
    #[cfg(test)]
    reads: std::sync::atomic::AtomicUsize,
}

/// What the manager holds per (computer, container).
type PerHost<V> = HashMap<([u8; 32], String), V>;

/// Takes `host`'s entries out of `map`.
fn take_host<V>(map: &mut PerHost<V>, host: &[u8; 32]) -> Vec<(([u8; 32], String), V)> {
    let mine: Vec<_> = map.keys().filter(|(h, _)| h == host).cloned().collect();
    mine.iter()
        .filter_map(|key| map.remove_entry(key))
        .collect()
}

/// Ends `host`'s login (a user's or a security officer's) to `container`.
fn log_out<V>(map: &mut PerHost<V>, host: &[u8; 32], container: String) -> Result<Reply, CkRv> {
    map.remove(&(*host, container))
        .map(|_| Reply::Done)
        .ok_or(CkRv::USER_NOT_LOGGED_IN)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Caches only: whatever a panic left is checked against the file's
    // stamp before it is used.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Manager {
    pub fn new(store: Store, approver: Approver) -> Manager {
        Manager {
            audit: AuditLog::new(store.dir()),
            store,
            approver,
            logins: HashMap::new(),
            kept: HashMap::new(),
            heard: HashMap::new(),
            allowed: HashMap::new(),
            so_logins: HashMap::new(),
            pin_memory: Duration::ZERO,
            remembered: HashMap::new(),
            pin_key: {
                use rand::RngCore;
                let mut k = Zeroizing::new([0u8; 32]);
                rand::rngs::OsRng.fill_bytes(k.as_mut());
                k
            },
            hosts: Mutex::new(None),
            containers: Mutex::new(HashMap::new()),
            #[cfg(test)]
            reads: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Gives `host`'s kept logins back to its session, where the container
    /// still allows: the host is still authorised for it, it is not
    /// locked, and its grace period (as it is now) has not run out since
    /// the host was last heard from. Every kept login past its time goes.
    fn restore(&mut self, host: &[u8; 32], hosts: &Hosts, host_name: &str) {
        let now = Instant::now();
        self.kept.retain(|_, k| k.until > now);
        for (key, kept) in take_host(&mut self.kept, host) {
            let name = &key.1;
            let still = self.container(hosts, host, name).is_ok_and(|c| {
                !c.is_locked() && !c.grace().is_zero() && kept.heard + c.grace() > now
            });
            if still && !self.logins.contains_key(&key) {
                log::info!(
                    "restored the login of {host_name} to '{name}' (within its grace period)"
                );
                self.logins.insert(key, kept.kek);
            }
        }
    }

    /// Records what a computer asked for in the audit log (only the
    /// requests the owner would want to account for; reads are not).
    fn audit(
        &self,
        host: &[u8; 32],
        event: &str,
        request: &AuditedRequest,
        result: &Result<Reply, CkRv>,
    ) {
        let mut e = Entry::new(
            event,
            &match result {
                Ok(_) => "ok".to_owned(),
                Err(rv) => rv.name().to_owned(),
            },
        );
        e.fingerprint = Some(fingerprint(host));
        e.host = self.hosts().ok().and_then(|h| {
            h.hosts
                .into_iter()
                .find(|e| &e.public == host)
                .map(|e| e.name)
        });
        e.container = request.container.clone();
        e.key = request.key.clone();
        e.program = request.program.clone();
        self.audit.record(e);
    }

    /// Pins a newly paired computer under `host_name` and authorises it
    /// for what the pairing offer named.
    fn pin_host(&mut self, host: [u8; 32], host_name: &str) -> bool {
        let name: String = host_name
            .chars()
            .filter(|c| !c.is_control())
            .take(64)
            .collect();
        let pinned = self.store.update_hosts(|hosts| {
            let Some(pairing) = hosts.pairing.take() else {
                return Ok(false);
            };
            match hosts.hosts.iter_mut().find(|h| h.public == host) {
                Some(h) => {
                    h.name = name.clone();
                    for c in pairing.authorise {
                        if !h.containers.contains(&c) {
                            h.containers.push(c);
                        }
                    }
                }
                None => hosts.hosts.push(crate::store::HostEntry {
                    name: name.clone(),
                    public: host,
                    containers: pairing.authorise,
                }),
            }
            Ok(true)
        });
        match pinned {
            Ok(true) => {
                log::info!("paired with host '{name}' ({})", fingerprint(&host));
                true
            }
            Ok(false) => false,
            Err(e) => {
                log::error!("{e}");
                false
            }
        }
    }

    /// Remember a right PIN for `period` (zero: never, the default), for
    /// the same computer's next logins to the same container.
    pub fn remember_pins_for(&mut self, period: Duration) {
        self.pin_memory = period;
        if period.is_zero() {
            self.remembered.clear();
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn hosts(&self) -> Result<Hosts, CkRv> {
        self.read_hosts().map_err(|e| {
            log::error!("{e}");
            CkRv::DEVICE_ERROR
        })
    }

    /// `hosts.json`, read again only if it changed since the last read.
    fn read_hosts(&self) -> Result<Hosts, StoreError> {
        let stamp = self.store.hosts_stamp()?;
        if let Some((s, h)) = &*lock(&self.hosts)
            && *s == stamp
        {
            return Ok(h.clone());
        }
        // Stamped before the read: a change in between is read again next
        // time, never missed.
        let hosts = self.store.load_hosts()?;
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        *lock(&self.hosts) = Some((stamp, hosts.clone()));
        Ok(hosts)
    }

    /// Container `name` and its version, read again only if its file
    /// changed since the last read.
    fn load(&self, name: &str) -> Result<(Container, u64), StoreError> {
        let Some(stamp) = self.store.container_stamp(name)? else {
            lock(&self.containers).remove(name);
            return Err(StoreError::NotFound(format!("container '{name}'")));
        };
        if let Some((s, c, v)) = lock(&self.containers).get(name)
            && *s == stamp
        {
            return Ok((c.clone(), *v));
        }
        let (c, v) = self.store.load_container_versioned(name)?;
        #[cfg(test)]
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        lock(&self.containers).insert(name.to_owned(), (stamp, c.clone(), v));
        Ok((c, v))
    }

    /// Loads a container the host is authorised for. Any other name looks
    /// exactly like one that does not exist.
    fn container(&self, hosts: &Hosts, host: &[u8; 32], name: &str) -> Result<Container, CkRv> {
        let entry = hosts.find(host).ok_or(CkRv::TOKEN_NOT_PRESENT)?;
        if !entry.containers.iter().any(|c| c == name) {
            return Err(CkRv::TOKEN_NOT_PRESENT);
        }
        self.load(name).map(|(c, _)| c).map_err(|e| match e {
            StoreError::NotFound(_) => CkRv::TOKEN_NOT_PRESENT,
            e => {
                log::error!("{e}");
                CkRv::DEVICE_ERROR
            }
        })
    }

    fn flags(&self, host: &[u8; 32], c: &Container) -> u32 {
        let mut f = token_flags::LOGIN_REQUIRED;
        if c.is_locked() {
            f |= token_flags::PIN_LOCKED;
        }
        if c.retries_left() < crate::store::MAX_PIN_TRIES {
            f |= token_flags::PIN_COUNT_LOW;
        }
        if c.retries_left() == 1 {
            f |= token_flags::PIN_FINAL_TRY;
        }
        if c.policy() == Policy::Confirm {
            f |= token_flags::CONFIRM;
        }
        if c.pin_entry() == PinEntry::Handset {
            f |= token_flags::PROTECTED_PATH;
        }
        if self.logins.contains_key(&(*host, c.name().to_owned())) {
            f |= token_flags::LOGGED_IN;
        }
        // The SO's flags as PKCS#11 defines them for the SO PIN.
        if let Some(left) = c.puk_retries_left() {
            f |= token_flags::PUK_SET;
            if left == 0 {
                f |= token_flags::SO_PIN_LOCKED;
            }
            if left < crate::store::MAX_PUK_TRIES {
                f |= token_flags::SO_PIN_COUNT_LOW;
            }
            if left == 1 {
                f |= token_flags::SO_PIN_FINAL_TRY;
            }
        }
        if self.so_logins.contains_key(&(*host, c.name().to_owned())) {
            f |= token_flags::SO_LOGGED_IN;
        }
        f
    }

    fn kek(&self, host: &[u8; 32], container: &str) -> Result<&Kek, CkRv> {
        self.logins
            .get(&(*host, container.to_owned()))
            .ok_or(CkRv::USER_NOT_LOGGED_IN)
    }

    /// The private key `id` of `c`, unwrapped with the host's login, for
    /// one operation (dropped, and so zeroized, right after it).
    fn private_key(&self, host: &[u8; 32], c: &Container, id: &[u8]) -> Result<PrivateKey, CkRv> {
        c.any_private_key(self.kek(host, c.name())?, id)
            .map_err(store_rv)
    }

    fn save(&self, c: &Container) -> Result<(), CkRv> {
        self.store.save_container(c).map_err(store_rv)
    }

    /// What [`Handler::execute`] does, before the audit log sees it.
    fn run(&mut self, asker: &Asker<'_>, request: Request) -> Result<Reply, CkRv> {
        let host = &asker.host;
        if let Request::GenerateRandom { len } = request {
            let mut out = vec![0u8; len as usize];
            rand::rngs::OsRng.fill_bytes(&mut out);
            return Ok(Reply::Random(out));
        }
        let hosts = self.hosts()?;
        let host_name = hosts
            .find(host)
            .map(|h| h.name.clone())
            .ok_or(CkRv::TOKEN_NOT_PRESENT)?;
        if !self.kept.is_empty() {
            self.restore(host, &hosts, &host_name);
        }
        if let Request::ListContainers = request {
            let entry = hosts.find(host).ok_or(CkRv::TOKEN_NOT_PRESENT)?;
            let mut out = Vec::new();
            for name in &entry.containers {
                match self.load(name) {
                    Ok((c, _)) => out.push(ContainerEntry {
                        name: name.clone(),
                        flags: self.flags(host, &c),
                    }),
                    Err(StoreError::NotFound(_)) => {}
                    Err(e) => log::error!("{e}"),
                }
            }
            return Ok(Reply::Containers(out));
        }
        let name = request.container().ok_or(CkRv::ARGUMENTS_BAD)?.to_owned();
        let mut c = self.container(&hosts, host, &name)?;
        if let Some(op) = operation_name(&request) {
            // Check login before bothering a person, and a key known to be
            // damaged too.
            self.kek(host, &name)?;
            // A damaged key can still be destroyed.
            if let Some(id) = key_id_of(&request)
                && !matches!(request, Request::DestroyKey { .. })
            {
                c.check_key(id).map_err(store_rv)?;
            }
            let allowed = (*host, name.clone());
            let still_allowed = self
                .allowed
                .get(&allowed)
                .is_some_and(|until| Instant::now() < *until);
            if c.policy() == Policy::Confirm && !still_allowed {
                let key = key_id_of(&request)
                    .and_then(|id| c.key(id))
                    .map(|k| k.label.as_str());
                let program = shown_program(asker.program);
                let approval =
                    self.approver
                        .approve(&host_name, &name, op, key, program.as_deref());
                match approval {
                    Approval::Yes => {}
                    Approval::YesFor(period) => {
                        log::info!("'{name}' allowed to {host_name} for {} s", period.as_secs());
                        self.allowed.insert(allowed, Instant::now() + period);
                    }
                    // The standard's value for "rejected by the user".
                    Approval::No => {
                        log::info!("{op} on '{name}' for {host_name}: refused by the owner");
                        return Err(CkRv::FUNCTION_REJECTED);
                    }
                    Approval::NoAnswer => {
                        log::info!("{op} on '{name}' for {host_name}: nobody answered in time");
                        return Err(CkRv::FUNCTION_CANCELED);
                    }
                }
            }
        }
        match request {
            Request::ListContainers | Request::GenerateRandom { .. } => Err(CkRv::GENERAL_ERROR),
            Request::TokenInfo { .. } => Ok(Reply::TokenInfo(TokenInfo {
                name: name.clone(),
                flags: self.flags(host, &c),
                retries_left: c.retries_left(),
                min_pin: crate::store::MIN_PIN_LEN as u32,
                max_pin: crate::store::MAX_PIN_LEN as u32,
                serial: c.serial().to_owned(),
                so_retries_left: c.puk_retries_left().unwrap_or(0),
            })),
            Request::Login { pin, .. } => {
                // An empty PIN asks the owner to type it here, where the
                // container allows that.
                let pin = if pin.is_empty() {
                    if c.pin_entry() != PinEntry::Handset {
                        return Err(CkRv::PIN_LEN_RANGE);
                    }
                    self.approver
                        .ask_pin(&host_name, &name)
                        .ok_or(CkRv::FUNCTION_CANCELED)?
                } else {
                    pin
                };
                let key = (*host, name);
                let mac = pin_mac(&self.pin_key, &pin);
                // A PIN this computer gave right a moment ago opens without
                // the Argon2id derivation; anything else takes the whole
                // path, and a wrong PIN is counted as ever.
                let now = Instant::now();
                self.remembered.retain(|_, r| r.until > now);
                let known = self.remembered.get(&key).filter(|r| {
                    !c.is_locked() && bool::from(r.pin_mac.ct_eq(&mac)) && c.kek_matches(&r.kek)
                });
                let kek = match known {
                    Some(r) => r.kek.clone(),
                    None => {
                        let kek = c.unlock(&self.store, &pin).map_err(store_rv)?;
                        if !self.pin_memory.is_zero() {
                            let until = now + self.pin_memory;
                            let r = Remembered {
                                pin_mac: mac,
                                kek: kek.clone(),
                                until,
                            };
                            self.remembered.insert(key.clone(), r);
                        }
                        kek
                    }
                };
                self.logins.insert(key, kek);
                Ok(Reply::Done)
            }
            Request::Logout { .. } => log_out(&mut self.logins, host, name),
            Request::ChangePin { old, new, .. } => {
                c.change_pin(&self.store, &old, &new).map_err(store_rv)?;
                // Every session's key-encrypting key for it is now stale,
                // and so is every kept one, and every remembered PIN.
                self.logins.retain(|(_, n), _| *n != name);
                self.kept.retain(|(_, n), _| *n != name);
                self.remembered.retain(|(_, n), _| *n != name);
                Ok(Reply::Done)
            }
            Request::SoLogin { puk, .. } => {
                let so = c.so_unlock(&self.store, &puk).map_err(store_rv)?;
                log::info!("{host_name} logged in to '{name}' with its PUK");
                self.so_logins.insert((*host, name), so);
                Ok(Reply::Done)
            }
            Request::SoLogout { .. } => log_out(&mut self.so_logins, host, name),
            Request::InitPin { pin, .. } => {
                let so = self
                    .so_logins
                    .get(&(*host, name.clone()))
                    .ok_or(CkRv::USER_NOT_LOGGED_IN)?;
                c.init_pin(&self.store, so, &pin).map_err(store_rv)?;
                log::info!("{host_name} set a new PIN for '{name}' with its PUK");
                // Logins made under the old PIN are stale, and so is the
                // old PIN remembered.
                self.logins.retain(|(_, n), _| *n != name);
                self.remembered.retain(|(_, n), _| *n != name);
                Ok(Reply::Done)
            }
            Request::ChangePuk { old, new, .. } => {
                c.change_puk(&self.store, &old, &new).map_err(store_rv)?;
                self.so_logins.retain(|(_, n), _| *n != name);
                Ok(Reply::Done)
            }
            Request::FindObjects {
                class, id, label, ..
            } => {
                let mut out = Vec::new();
                for k in c.keys() {
                    for cl in [ObjectClass::PrivateKey, ObjectClass::PublicKey] {
                        out.push(ObjectEntry {
                            class: cl,
                            id: k.id.clone(),
                            label: k.label.clone(),
                        });
                    }
                }
                for cert in c.certs() {
                    out.push(ObjectEntry {
                        class: ObjectClass::Certificate,
                        id: cert.id.clone(),
                        label: cert.label.clone(),
                    });
                }
                for d in c.data() {
                    out.push(ObjectEntry {
                        class: ObjectClass::Data,
                        id: d.id.clone(),
                        label: d.label.clone(),
                    });
                }
                out.retain(|o| {
                    class.is_none_or(|cl| cl == o.class)
                        && id.as_ref().is_none_or(|i| *i == o.id)
                        && label.as_ref().is_none_or(|l| *l == o.label)
                });
                Ok(Reply::Objects(out))
            }
            Request::GetAttributes { class, id, .. } => attributes(&c, class, &id),
            Request::Sign { ref id, .. }
            | Request::Decrypt { ref id, .. }
            | Request::Rewrap { ref id, .. }
            | Request::Derive { ref id, .. } => {
                let key = self.private_key(host, &c, id)?;
                private_key_operation(&key, request)
            }
            Request::GenerateKeyPair {
                bits, id, label, ..
            } => {
                let id = if id.is_empty() { fresh_id() } else { id };
                if c.keys().iter().any(|k| k.id == id) {
                    return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
                }
                let key = crypto::generate(bits)?;
                let kek = self.kek(host, &name)?;
                c.add_key(kek, id.clone(), label, &key).map_err(store_rv)?;
                self.save(&c)?;
                let (modulus, exponent, _) = crypto::public_parts(&key);
                log::info!("generated an RSA-{bits} key in '{name}' for {host_name}");
                Ok(Reply::KeyPair {
                    id,
                    modulus,
                    exponent,
                })
            }
            Request::GenerateEcKeyPair {
                curve, id, label, ..
            } => {
                let id = if id.is_empty() {
                    let mut fresh = vec![0u8; 8];
                    rand::rngs::OsRng.fill_bytes(&mut fresh);
                    fresh
                } else {
                    id
                };
                if c.keys().iter().any(|k| k.id == id) {
                    return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
                }
                let key = EcPrivateKey::generate(curve);
                let kek = self.kek(host, &name)?;
                c.add_ec_key(kek, id.clone(), label, &key)
                    .map_err(store_rv)?;
                self.save(&c)?;
                log::info!(
                    "generated a {} key in '{name}' for {host_name}",
                    curve.name()
                );
                Ok(Reply::EcKeyPair {
                    id,
                    point: key.public_point(),
                })
            }
            Request::ImportKey {
                id, label, pkcs8, ..
            } => {
                // Every check before anything is written: the key parses,
                // is of a kind and size the handset holds, and the id is
                // free.
                let key = crypto::parse_pkcs8(&pkcs8)?;
                drop(pkcs8);
                let id = if id.is_empty() { fresh_id() } else { id };
                if c.keys().iter().any(|k| k.id == id) {
                    return Err(CkRv::ATTRIBUTE_VALUE_INVALID);
                }
                let kek = self.kek(host, &name)?;
                c.import_key(kek, id.clone(), label, &key)
                    .map_err(store_rv)?;
                self.save(&c)?;
                // Answered as the generation of the same kind of key is.
                match &key {
                    crypto::ImportedKey::Rsa(key) => {
                        let (modulus, exponent, bits) = crypto::public_parts(key);
                        log::info!("imported an RSA-{bits} key into '{name}' for {host_name}");
                        Ok(Reply::KeyPair {
                            id,
                            modulus,
                            exponent,
                        })
                    }
                    crypto::ImportedKey::Ec(key) => {
                        log::info!(
                            "imported a {} key into '{name}' for {host_name}",
                            key.curve().name()
                        );
                        Ok(Reply::EcKeyPair {
                            id,
                            point: key.public_point(),
                        })
                    }
                }
            }
            Request::Attest { id, nonce, .. } => {
                attest(&self.store, &c, &id, nonce).map(Reply::Attestation)
            }
            Request::PutCertificate { .. }
            | Request::DeleteCertificate { .. }
            | Request::DestroyKey { .. }
            | Request::PutData { .. }
            | Request::DeleteData { .. } => {
                self.kek(host, &name)?;
                change_objects(&mut c, request)?;
                self.save(&c)?;
                Ok(Reply::Done)
            }
        }
    }
}

/// A statement of what this handset knows of the key `id` of `c`, for the
/// computer's `nonce`, signed with its attestation key (docs/attestation.md).
/// It reads only what `+CKATTR` gives: no login, no approval.
fn attest(store: &Store, c: &Container, id: &[u8], nonce: Vec<u8>) -> Result<Vec<u8>, CkRv> {
    use phonecsp_protocol::attest::{Statement, flags};
    let k = c.key(id).ok_or(CkRv::OBJECT_HANDLE_INVALID)?;
    let signing = store.attestation_key().map_err(store_rv)?;
    let local = if k.local() {
        flags::LOCAL | flags::NEVER_EXTRACTABLE | flags::ALWAYS_SENSITIVE
    } else {
        0
    };
    let statement = Statement {
        handset_key: *store.identity().public(),
        attestation_key: signing.verifying_key().to_bytes(),
        handset: store.name().to_owned(),
        container: c.name().to_owned(),
        id: id.to_vec(),
        label: k.label.clone(),
        spki: match (k.curve(), &k.ec) {
            (Some(curve), Some(ec)) => crypto::ec_spki_der(curve, &ec.point)?,
            _ => crypto::spki_der(&k.modulus, &k.exponent)?,
        },
        flags: local,
        policy: match c.policy() {
            Policy::Auto => "auto",
            Policy::Confirm => "confirm",
        }
        .to_owned(),
        nonce,
    };
    statement.sign(&signing).map_err(|e| {
        log::error!("attestation of key {id:02x?} in '{}': {e}", c.name());
        CkRv::GENERAL_ERROR
    })
}

/// A fresh random id of 8 bytes, for a key whose request names none.
fn fresh_id() -> Vec<u8> {
    let mut fresh = vec![0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut fresh);
    fresh
}

/// Maps a store error to what the host may see: PIN results as they are,
/// a missing object as an invalid handle, anything else as a device error
/// (logged here, never sent).
///
/// A damaged key is `CKR_DEVICE_ERROR`, PKCS#11 2.40's "some problem has
/// occurred with the token": neither `CKR_DEVICE_MEMORY` (the token lacks
/// memory) nor `CKR_DATA_INVALID` (the caller's plaintext is invalid) says
/// what happened, and `CKR_KEY_HANDLE_INVALID` would say the key is not
/// there (docs/protocol.md section 7.1). The log names the key.
fn store_rv(e: StoreError) -> CkRv {
    match e {
        StoreError::Token(rv) => rv,
        StoreError::NotFound(_) => CkRv::KEY_HANDLE_INVALID,
        StoreError::Exists(_) | StoreError::Invalid(_) => CkRv::ATTRIBUTE_VALUE_INVALID,
        e @ StoreError::KeyDamaged { .. } => {
            log::error!("{e}");
            CkRv::DEVICE_ERROR
        }
        e => {
            log::error!("{e}");
            CkRv::DEVICE_ERROR
        }
    }
}

/// Numeric attributes travel as 8-byte big-endian integers.
fn ulong(v: u64) -> Vec<u8> {
    v.to_be_bytes().to_vec()
}

/// `CKK_RSA`, `CKC_X_509`.
const CKK_RSA: u64 = 0;
const CKC_X_509: u64 = 0;

fn attributes(c: &Container, class: ObjectClass, id: &[u8]) -> Result<Reply, CkRv> {
    /// The object with this id in one of the container's lists.
    fn find<'a, T>(list: &'a [T], id: &[u8], id_of: impl Fn(&T) -> &[u8]) -> Result<&'a T, CkRv> {
        list.iter()
            .find(|x| id_of(x) == id)
            .ok_or(CkRv::OBJECT_HANDLE_INVALID)
    }
    // Every object reports its class, id and label; then what its class has.
    let (label, own) = match class {
        ObjectClass::PrivateKey | ObjectClass::PublicKey => {
            let k = find(c.keys(), id, |k| &k.id)?;
            let own = if let (Some(curve), Some(ec)) = (k.curve(), &k.ec) {
                let own = vec![
                    (cka::KEY_TYPE, ulong(u64::from(curve.key_type()))),
                    (cka::EC_PARAMS, curve.ec_params().to_vec()),
                    (cka::EC_POINT, Curve::ec_point_der(&ec.point)),
                ];
                (&k.label, own)
            } else {
                let own = vec![
                    (cka::KEY_TYPE, ulong(CKK_RSA)),
                    (cka::MODULUS, k.modulus.clone()),
                    (cka::MODULUS_BITS, ulong(u64::from(k.bits))),
                    (cka::PUBLIC_EXPONENT, k.exponent.clone()),
                ];
                (&k.label, own)
            };
            let (label, mut own) = own;
            // An imported key was once outside the phone: not local, and
            // neither always sensitive nor never extractable.
            for t in [cka::LOCAL, cka::NEVER_EXTRACTABLE, cka::ALWAYS_SENSITIVE] {
                own.push((t, vec![u8::from(k.local())]));
            }
            (label, own)
        }
        ObjectClass::Certificate => {
            let cert = find(c.certs(), id, |x| &x.id)?;
            let f = crypto::cert_fields(&cert.der)?;
            let own = vec![
                (cka::CERTIFICATE_TYPE, ulong(CKC_X_509)),
                (cka::VALUE, cert.der.clone()),
                (cka::SUBJECT, f.subject),
                (cka::ISSUER, f.issuer),
                (cka::SERIAL_NUMBER, f.serial),
            ];
            (&cert.label, own)
        }
        ObjectClass::Data => {
            let d = find(c.data(), id, |x| &x.id)?;
            let own = vec![
                (cka::APPLICATION, d.application.clone().into_bytes()),
                (cka::OBJECT_ID, d.oid.clone()),
                (cka::VALUE, d.value.clone()),
            ];
            (&d.label, own)
        }
    };
    let mut out = vec![
        (cka::CLASS, ulong(class.value())),
        (cka::ID, id.to_vec()),
        (cka::LABEL, label.clone().into_bytes()),
    ];
    out.extend(own);
    Ok(Reply::Attributes(out))
}

impl Handler for Manager {
    fn identity(&self) -> StaticKeypair {
        self.store.identity().clone()
    }

    fn handset_name(&self) -> String {
        self.store.name().to_owned()
    }

    fn known_hosts(&self) -> Vec<[u8; 32]> {
        self.hosts()
            .map(|h| h.hosts.iter().map(|e| e.public).collect())
            .unwrap_or_default()
    }

    fn pairing_psk(&mut self) -> Option<Zeroizing<[u8; 32]>> {
        let hosts = self.hosts().ok()?;
        hosts.pairing.map(|p| p.psk)
    }

    fn pairing_short_code(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        let hosts = self.hosts().ok()?;
        let digits = hosts.pairing?.short_code?;
        Some(Zeroizing::new(digits.0.as_bytes().to_vec()))
    }

    fn pairing_completed(&mut self, host: [u8; 32], host_name: &str) -> bool {
        let paired = self.pin_host(host, host_name);
        let mut e = Entry::new("pair", if paired { "ok" } else { "refused" });
        e.host = Some(host_name.to_owned());
        e.fingerprint = Some(fingerprint(&host));
        self.audit.record(e);
        paired
    }
    fn pairing_failed(&mut self) {
        self.audit.record(Entry::new("pair", "wrong pairing code"));
        let r = self.store.update_hosts(|hosts| {
            if let Some(p) = hosts.pairing.as_mut() {
                p.failures += 1;
                if p.failures >= MAX_PAIRING_FAILURES {
                    log::warn!(
                        "pairing code withdrawn after {MAX_PAIRING_FAILURES} failed attempts"
                    );
                    hosts.pairing = None;
                }
            }
            Ok(())
        });
        if let Err(e) = r {
            log::error!("{e}");
        }
    }

    /// Runs the request and audits it, with the program the computer named
    /// cleaned as the prompt shows it.
    fn execute(&mut self, asker: &Asker<'_>, request: Request) -> Result<Reply, CkRv> {
        let what = request.name();
        let audited = audit_event(&request).map(|event| {
            let of = AuditedRequest {
                container: request.container().map(str::to_owned),
                key: audited_key(&request),
                program: shown_program(asker.program),
            };
            (event, of)
        });
        let r = self.run(asker, request);
        if let Err(rv) = &r {
            log::debug!("{what} from {}: {rv}", fingerprint(&asker.host));
        }
        if let Some((event, of)) = audited {
            self.audit(&asker.host, event, &of, &r);
        }
        r
    }

    /// The session's logins are kept for their containers' grace periods,
    /// counted from when the host was last heard from: a serial line stays
    /// open when the computer goes, and its session ends only when the
    /// computer's next handshake arrives.
    fn session_ended(&mut self, host: &[u8; 32]) {
        let now = Instant::now();
        let heard = self.heard.remove(host).unwrap_or(now);
        for (key, kek) in take_host(&mut self.logins, host) {
            let grace = match self.store.load_container(&key.1) {
                Ok(c) => c.grace(),
                Err(_) => continue,
            };
            let until = heard + grace;
            if until > now {
                log::debug!(
                    "keeping the login to '{}' of {} for {}s",
                    key.1,
                    fingerprint(host),
                    (until - now).as_secs()
                );
                self.kept.insert(key, Kept { kek, heard, until });
            }
        }
    }

    fn session_heard(&mut self, host: &[u8; 32]) {
        self.heard.insert(*host, Instant::now());
    }

    /// Each container `host` may use, with the flags `+CKLIST` would give
    /// it and its version; nothing if that does not fit in `max` bytes (the
    /// host then asks, as without an announcement) or cannot be read.
    fn session_announcement(&mut self, host: &[u8; 32], max: usize) -> Vec<u8> {
        let Ok(hosts) = self.hosts() else {
            return Vec::new();
        };
        let Some(entry) = hosts.find(host) else {
            return Vec::new();
        };
        let mut a = Announcement::default();
        for name in &entry.containers {
            match self.load(name) {
                Ok((c, version)) => a.containers.push(Announced {
                    name: name.clone(),
                    flags: self.flags(host, &c),
                    version,
                }),
                Err(StoreError::NotFound(_)) => {}
                // A container that does not load is left out, as +CKLIST
                // leaves it out; its requests answer for themselves.
                Err(e) => log::error!("{e}"),
            }
        }
        match a.encode() {
            Ok(p) if p.len() <= max => p,
            Ok(p) => {
                log::info!(
                    "the session announcement ({} bytes) does not fit the line ({max}): none made",
                    p.len()
                );
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }
}

/// Failed pairing attempts after which a code is withdrawn.
pub const MAX_PAIRING_FAILURES: u32 = 3;

/// Makes a new one-time pairing code the handset will accept, authorising
/// the host that uses it for `authorise`.
pub fn offer_pairing(
    store: &Store,
    code: &phonecsp_protocol::PairingCode,
    authorise: Vec<String>,
) -> Result<(), StoreError> {
    store.update_hosts(|hosts| {
        hosts.pairing = Some(crate::store::PendingPairing {
            psk: code.psk(),
            authorise,
            failures: 0,
            short_code: None,
        });
        Ok(())
    })
}

/// [`offer_pairing`], with a short code on offer too (the long one stays
/// the fallback): either pairs, and the first to do so uses up both.
pub fn offer_short_pairing(
    store: &Store,
    code: &phonecsp_protocol::PairingCode,
    short: &phonecsp_protocol::pake::ShortCode,
    authorise: Vec<String>,
) -> Result<(), StoreError> {
    let digits = String::from_utf8_lossy(short.digits()).into_owned();
    store.update_hosts(|hosts| {
        hosts.pairing = Some(crate::store::PendingPairing {
            psk: code.psk(),
            authorise,
            failures: 0,
            short_code: Some(crate::store::ShortDigits(Zeroizing::new(digits))),
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HostEntry;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use phonecsp_protocol::SignMechanism;
    use std::sync::Mutex;

    const PIN: &[u8] = b"123456";
    const HOST: [u8; 32] = [7; 32];

    /// [`HOST`] asks the manager, for no program or for the one named.
    trait Ask {
        fn ask(&mut self, request: Request) -> Result<Reply, CkRv>;
        fn ask_for(&mut self, program: &str, request: Request) -> Result<Reply, CkRv>;
    }

    impl Ask for Manager {
        fn ask(&mut self, request: Request) -> Result<Reply, CkRv> {
            self.execute(&Asker::host(HOST), request)
        }
        fn ask_for(&mut self, program: &str, request: Request) -> Result<Reply, CkRv> {
            let asker = Asker {
                host: HOST,
                program: Some(program),
            };
            self.execute(&asker, request)
        }
    }

    /// Every line logged by this test process.
    static LOGGED: Mutex<Vec<String>> = Mutex::new(Vec::new());

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, r: &log::Record) {
            if let Ok(mut lines) = LOGGED.lock() {
                lines.push(r.args().to_string());
            }
        }
        fn flush(&self) {}
    }

    fn logged() -> Vec<String> {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if log::set_logger(&Capture).is_ok() {
                log::set_max_level(log::LevelFilter::Trace);
            }
        });
        LOGGED.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// A store with `ssh` (keys 01 "ssh key" and 02, policy `confirm`) and
    /// `web` (key 01), both authorised for [`HOST`].
    fn store(dir: &std::path::Path) -> Store {
        let store = Store::init(dir, "test phone").unwrap();
        crate::store::test_containers(&store, PIN, Policy::Confirm);
        store
            .save_hosts(&Hosts {
                hosts: vec![HostEntry {
                    name: "laptop".into(),
                    public: HOST,
                    containers: vec!["ssh".into(), "web".into()],
                }],
                pairing: None,
            })
            .unwrap();
        store
    }

    /// A manager of `store` whose owner says yes to every prompt, and the
    /// file to which the prompt command writes what `shown` prints (a
    /// shell command, run with the prompt's environment) each time.
    fn approving(store: Store, shown: &str) -> (Manager, std::path::PathBuf) {
        let asked = store.dir().join("asked");
        let approver = Approver {
            command: Some(format!("{shown} > {}", asked.display())),
            ..Approver::default()
        };
        (Manager::new(store, approver), asked)
    }

    fn sign(container: &str, id: u8) -> Request {
        Request::Sign {
            container: container.into(),
            id: vec![id],
            mechanism: SignMechanism::Pkcs1,
            data: vec![1; 51],
        }
    }

    fn login(container: &str) -> Request {
        Request::Login {
            container: container.into(),
            pin: Zeroizing::new(PIN.to_vec()),
        }
    }

    fn retries(m: &mut Manager, container: &str) -> u32 {
        let request = Request::TokenInfo {
            container: container.into(),
        };
        match m.ask(request) {
            Ok(Reply::TokenInfo(t)) => t.retries_left,
            other => panic!("{other:?}"),
        }
    }

    fn info(m: &mut Manager, container: &str) -> TokenInfo {
        let request = Request::TokenInfo {
            container: container.into(),
        };
        match m.ask(request) {
            Ok(Reply::TokenInfo(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    fn logged_in(m: &mut Manager, container: &str) -> bool {
        info(m, container).flags & token_flags::LOGGED_IN != 0
    }

    /// Issue 13: the SO's commands. `+CKINITPIN` needs this session's SO
    /// login; a wrong PUK spends one of its tries and the flags say so;
    /// the right one sets a new PIN on a locked container, drops the user
    /// logins made with the old one, and leaves the SO login until
    /// `+CKSOLOGOUT`; `+CKPUK` changes the PUK.
    #[test]
    fn the_so_unblocks_with_the_puk_and_the_flags_follow() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut web = store.load_container("web").unwrap();
        web.set_puk(&store, PIN, b"12345678").unwrap();
        let mut m = Manager::new(store, Approver::default());
        let puk = |p: &[u8]| Request::SoLogin {
            container: "web".into(),
            puk: Zeroizing::new(p.to_vec()),
        };
        let init = || Request::InitPin {
            container: "web".into(),
            pin: Zeroizing::new(b"4321".to_vec()),
        };
        assert!(matches!(m.ask(login("web")), Ok(Reply::Done)));
        let t = info(&mut m, "web");
        assert_eq!(t.so_retries_left, crate::store::MAX_PUK_TRIES);
        assert_eq!(t.flags & token_flags::PUK_SET, token_flags::PUK_SET);
        assert_eq!(info(&mut m, "ssh").flags & token_flags::PUK_SET, 0);
        assert_eq!(m.ask(init()).unwrap_err(), CkRv::USER_NOT_LOGGED_IN);
        for _ in 0..crate::store::MAX_PIN_TRIES {
            let wrong = Request::Login {
                container: "web".into(),
                pin: Zeroizing::new(b"0000".to_vec()),
            };
            let _ = m.ask(wrong);
        }
        assert_ne!(info(&mut m, "web").flags & token_flags::PIN_LOCKED, 0);
        assert_eq!(m.ask(puk(b"99999999")).unwrap_err(), CkRv::PIN_INCORRECT);
        let t = info(&mut m, "web");
        assert_eq!(t.so_retries_left, crate::store::MAX_PUK_TRIES - 1);
        assert_ne!(t.flags & token_flags::SO_PIN_COUNT_LOW, 0);
        assert!(matches!(m.ask(puk(b"12345678")), Ok(Reply::Done)));
        assert_ne!(info(&mut m, "web").flags & token_flags::SO_LOGGED_IN, 0);
        assert!(matches!(m.ask(init()), Ok(Reply::Done)));
        let t = info(&mut m, "web");
        assert_eq!(
            t.flags & (token_flags::PIN_LOCKED | token_flags::LOGGED_IN),
            0
        );
        assert_eq!(t.retries_left, crate::store::MAX_PIN_TRIES);
        let logout = || Request::SoLogout {
            container: "web".into(),
        };
        assert!(matches!(m.ask(logout()), Ok(Reply::Done)));
        assert_eq!(m.ask(logout()).unwrap_err(), CkRv::USER_NOT_LOGGED_IN);
        let new_login = Request::Login {
            container: "web".into(),
            pin: Zeroizing::new(b"4321".to_vec()),
        };
        assert!(matches!(m.ask(new_login), Ok(Reply::Done)));
        assert!(matches!(m.ask(sign("web", 1)), Ok(Reply::Signature(_))));
        let change = Request::ChangePuk {
            container: "web".into(),
            old: Zeroizing::new(b"12345678".to_vec()),
            new: Zeroizing::new(b"87654321".to_vec()),
        };
        assert!(matches!(m.ask(change), Ok(Reply::Done)));
        assert_eq!(m.ask(puk(b"12345678")).unwrap_err(), CkRv::PIN_INCORRECT);
        assert!(matches!(m.ask(puk(b"87654321")), Ok(Reply::Done)));
    }

    fn set_grace(store: &Store, container: &str, secs: u32) {
        let mut c = store.load_container(container).unwrap();
        c.set_grace(secs).unwrap();
        store.save_container(&c).unwrap();
    }

    /// Issue 14, item 6: a right PIN is remembered for the same computer
    /// and container: the next login with it takes no key derivation and
    /// writes nothing (the retry counter is not touched); a wrong PIN still
    /// costs a try; after a PIN change, or with a period of zero, every
    /// login derives.
    #[test]
    fn a_right_pin_is_remembered_for_the_same_computer_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let file = dir.path().join("containers/web.json");
        let stamp = || std::fs::metadata(&file).unwrap().modified().unwrap();
        let mut m = Manager::new(store, Approver::default());
        m.remember_pins_for(Duration::from_secs(600));
        assert!(matches!(m.ask(login("web")), Ok(Reply::Done)));
        let after_first = stamp();
        // Remembered: the file (where every derivation's try is counted
        // and given back) is not written.
        for _ in 0..3 {
            let logout = Request::Logout {
                container: "web".into(),
            };
            assert!(matches!(m.ask(logout), Ok(Reply::Done)));
            assert!(matches!(m.ask(login("web")), Ok(Reply::Done)));
            assert_eq!(stamp(), after_first);
            let r = m.ask(sign("web", 1));
            assert!(matches!(r, Ok(Reply::Signature(_))), "{r:?}");
        }
        // A wrong PIN goes the whole way and is counted.
        let wrong = Request::Login {
            container: "web".into(),
            pin: Zeroizing::new(b"0000".to_vec()),
        };
        assert_eq!(m.ask(wrong).unwrap_err(), CkRv::PIN_INCORRECT);
        assert_eq!(retries(&mut m, "web"), crate::store::MAX_PIN_TRIES - 1);
        // A PIN change forgets it.
        assert!(matches!(m.ask(login("web")), Ok(Reply::Done)));
        let change = Request::ChangePin {
            container: "web".into(),
            old: Zeroizing::new(PIN.to_vec()),
            new: Zeroizing::new(b"654321".to_vec()),
        };
        assert!(matches!(m.ask(change), Ok(Reply::Done)));
        let old_pin = m.ask(login("web"));
        assert_eq!(old_pin.unwrap_err(), CkRv::PIN_INCORRECT);
        // With no memory, every login derives.
        m.remember_pins_for(Duration::ZERO);
        let new_login = || Request::Login {
            container: "web".into(),
            pin: Zeroizing::new(b"654321".to_vec()),
        };
        assert!(matches!(m.ask(new_login()), Ok(Reply::Done)));
        let before = stamp();
        assert!(matches!(m.ask(new_login()), Ok(Reply::Done)));
        assert_ne!(stamp(), before);
    }

    /// Issue 13, item 4: a session's login comes back to the same host's
    /// next session within the container's grace period, counted from when
    /// the host was last heard from; not past the period, not where the
    /// owner set none, not after a PIN change.
    #[test]
    fn a_login_outlives_its_session_for_the_grace_period_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        set_grace(&store, "web", 0);
        let mut m = Manager::new(Store::open(dir.path()).unwrap(), Approver::default());
        for c in ["ssh", "web"] {
            assert!(matches!(m.ask(login(c)), Ok(Reply::Done)));
        }
        m.session_heard(&HOST);
        m.session_ended(&HOST);
        assert!(logged_in(&mut m, "ssh"), "kept within the grace period");
        assert!(!logged_in(&mut m, "web"), "grace 0: the login ended");

        // Another host's session ending takes nothing of this one's.
        m.session_ended(&[9; 32]);
        assert!(logged_in(&mut m, "ssh"));

        // Past the period (set short here), the login is gone.
        set_grace(&store, "ssh", 1);
        m.session_heard(&HOST);
        m.session_ended(&HOST);
        std::thread::sleep(Duration::from_millis(1100));
        assert!(!logged_in(&mut m, "ssh"), "past the grace period");

        // A PIN change ends kept logins too.
        set_grace(&store, "ssh", 300);
        assert!(matches!(m.ask(login("ssh")), Ok(Reply::Done)));
        m.session_ended(&HOST);
        let change = Request::ChangePin {
            container: "ssh".into(),
            old: Zeroizing::new(PIN.to_vec()),
            new: Zeroizing::new(b"654321".to_vec()),
        };
        assert!(matches!(m.ask(change), Ok(Reply::Done)));
        assert!(!logged_in(&mut m, "ssh"));
    }

    /// Issue 13, item 5: the prompt names the program the computer named,
    /// cleaned of characters that would change how it reads.
    #[test]
    fn the_prompt_names_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let shown = "printf '%s|%s' \"$PHONECSP_PROMPT\" \"$PHONECSP_PROGRAM\"";
        let (mut m, asked) = approving(store(dir.path()), shown);
        assert!(matches!(m.ask(login("ssh")), Ok(Reply::Done)));
        let r = m.ask_for("ssh-\u{202e}agent (pid 7)", sign("ssh", 1));
        assert!(matches!(r, Ok(Reply::Signature(_))), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&asked).unwrap(),
            "laptop asks to sign with the key 'ssh key' of container 'ssh' \
             for ssh-agent (pid 7)|ssh-agent (pid 7)"
        );
        // Without a program, the prompt is as before and the variable unset.
        let r = m.ask(sign("ssh", 1));
        assert!(matches!(r, Ok(Reply::Signature(_))), "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&asked).unwrap(),
            "laptop asks to sign with the key 'ssh key' of container 'ssh'|"
        );
    }

    /// Issue 15, item 3: `+CKIMPORT` needs a login and the owner's
    /// approval, refuses bad keys with their own CK_RV and leaves the
    /// container's file as it was, stores a good one as imported
    /// (`CKA_LOCAL` and the others false), and is in the audit log without
    /// its value.
    #[test]
    fn an_import_is_approved_checked_and_recorded_as_imported() {
        use rsa::pkcs8::EncodePrivateKey;
        let dir = tempfile::tempdir().unwrap();
        let (mut m, asked) = approving(store(dir.path()), "printf '%s' \"$PHONECSP_PROMPT\"");
        let import = |id: &[u8], der: &[u8]| Request::ImportKey {
            container: "ssh".into(),
            id: id.to_vec(),
            label: "old laptop".into(),
            pkcs8: Zeroizing::new(der.to_vec()),
        };
        let good = crypto::test_key().to_pkcs8_der().unwrap();
        assert_eq!(
            m.ask(import(&[9], good.as_bytes())).unwrap_err(),
            CkRv::USER_NOT_LOGGED_IN
        );
        assert!(matches!(m.ask(login("ssh")), Ok(Reply::Done)));
        let file = dir.path().join("containers/ssh.json");
        let before = std::fs::read(&file).unwrap();
        let small = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 1024).unwrap();
        let small = small.to_pkcs8_der().unwrap();
        // X25519 (1.3.101.110): a key kind the handset does not hold.
        let mut x25519 = hex_bytes("302e020100300506032b656e04220420");
        x25519.extend([7u8; 32]);
        let mut ed25519 = hex_bytes("302e020100300506032b657004220420");
        ed25519.extend([7u8; 32]);
        // An EncryptedPrivateKeyInfo: PBES2, then the ciphertext.
        let encrypted = hex_bytes("3017300b06092a864886f70d01050d04080001020304050607");
        let der = good.as_bytes();
        for (what, bad, rv) in [
            ("garbage", &b"not a key"[..], CkRv::ATTRIBUTE_VALUE_INVALID),
            (
                "truncated",
                &der[..der.len() - 1],
                CkRv::ATTRIBUTE_VALUE_INVALID,
            ),
            ("encrypted", &encrypted, CkRv::ATTRIBUTE_VALUE_INVALID),
            ("X25519", &x25519, CkRv::KEY_TYPE_INCONSISTENT),
            ("RSA-1024", small.as_bytes(), CkRv::KEY_SIZE_RANGE),
            ("existing id", der, CkRv::ATTRIBUTE_VALUE_INVALID),
        ] {
            let id: &[u8] = if what == "existing id" { &[1] } else { &[9] };
            assert_eq!(m.ask(import(id, bad)).unwrap_err(), rv, "{what}");
            assert_eq!(std::fs::read(&file).unwrap(), before, "{what}");
        }
        let r = m.ask_for("phonecsp (pid 9)", import(&[9], der));
        match r {
            Ok(Reply::KeyPair { id, modulus, .. }) => {
                assert_eq!(id, vec![9]);
                assert_eq!(modulus, crypto::public_parts(crypto::test_key()).0);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            std::fs::read_to_string(&asked).unwrap(),
            "laptop asks to import a key of container 'ssh' for phonecsp (pid 9)"
        );
        // An Ed25519 key (RFC 8410) is answered as a generated EC key is,
        // and is recorded as imported too.
        let seed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        match m.ask(import(&[10], &ed25519)) {
            Ok(Reply::EcKeyPair { id, point }) => {
                assert_eq!(id, vec![10]);
                assert_eq!(point, seed.verifying_key().to_bytes().to_vec());
            }
            other => panic!("{other:?}"),
        }
        let mut attrs = |id: u8| match m.ask(Request::GetAttributes {
            container: "ssh".into(),
            class: ObjectClass::PrivateKey,
            id: vec![id],
        }) {
            Ok(Reply::Attributes(a)) => a,
            other => panic!("{other:?}"),
        };
        let (imported, generated, ec) = (attrs(9), attrs(1), attrs(10));
        for t in [cka::LOCAL, cka::NEVER_EXTRACTABLE, cka::ALWAYS_SENSITIVE] {
            assert!(imported.contains(&(t, vec![0])), "{t:x}");
            assert!(generated.contains(&(t, vec![1])), "{t:x}");
        }
        // The imported key signs.
        assert!(matches!(m.ask(sign("ssh", 9)), Ok(Reply::Signature(_))));
        assert!(ec.contains(&(cka::KEY_TYPE, ulong(u64::from(Curve::Ed25519.key_type())))));
        for t in [cka::LOCAL, cka::NEVER_EXTRACTABLE, cka::ALWAYS_SENSITIVE] {
            assert!(ec.contains(&(t, vec![0])), "{t:x}");
        }
        let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let line = log.lines().rfind(|l| l.contains("import-key")).unwrap();
        assert!(line.contains("\"ok\""), "{line}");
        assert!(!log.contains(&B64.encode(der)));
    }

    /// Issue 15, item 4: a statement needs no login, names the key's
    /// attributes as stored, checks under the handset's identity and
    /// attestation key, and carries the nonce; an unknown key is refused.
    #[test]
    fn a_statement_names_the_key_and_checks_under_the_handset_keys() {
        use phonecsp_protocol::attest::{Pinned, check};
        use rsa::pkcs8::EncodePrivateKey;
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let pinned_noise = *store.identity().public();
        let pinned_attest = store.attestation_key().unwrap().verifying_key().to_bytes();
        let mut m = Manager::new(store, Approver::default());
        let attest = |id: u8| Request::Attest {
            container: "ssh".into(),
            id: vec![id],
            nonce: vec![id; 32],
        };
        let pinned = Pinned {
            name: "phone",
            handset_key: pinned_noise,
            attestation_key: pinned_attest,
        };
        let statement = match m.ask(attest(1)) {
            Ok(Reply::Attestation(s)) => s,
            other => panic!("{other:?}"),
        };
        let s = check(&statement, &pinned, Some(&[1; 32])).unwrap();
        assert!(s.local());
        assert_eq!((s.container.as_str(), s.label.as_str()), ("ssh", "ssh key"));
        assert_eq!(s.policy, "confirm");
        assert_eq!(m.ask(attest(9)).unwrap_err(), CkRv::OBJECT_HANDLE_INVALID);
        // An imported key's statement says it was not made here.
        assert!(matches!(m.ask(login("web")), Ok(Reply::Done)));
        let der = crypto::test_key().to_pkcs8_der().unwrap();
        let import = Request::ImportKey {
            container: "web".into(),
            id: vec![9],
            label: String::new(),
            pkcs8: Zeroizing::new(der.as_bytes().to_vec()),
        };
        assert!(matches!(m.ask(import), Ok(Reply::KeyPair { .. })));
        let request = Request::Attest {
            container: "web".into(),
            id: vec![9],
            nonce: vec![3; 16],
        };
        let Ok(Reply::Attestation(statement)) = m.ask(request) else {
            panic!("no statement");
        };
        let s = check(&statement, &pinned, Some(&[3; 16])).unwrap();
        assert_eq!(s.flags, 0);
        assert_eq!(s.policy, "auto");
    }

    fn hex_bytes(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Issue 18, item 1: a key whose wrapped form is damaged answers
    /// CKR_DEVICE_ERROR and the handset's log names it; the owner is not
    /// asked about it; the login spends no try; the container's other key
    /// and the other container sign; the objects are all still listed.
    #[test]
    fn a_damaged_key_is_refused_and_logged_by_name_and_the_others_work() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let path = dir.path().join("containers/ssh.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let ct = v["keys"][0]["wrapped"]["ct"].as_str().unwrap().to_owned();
        let mut bytes = B64.decode(&ct).unwrap();
        bytes[40] ^= 1;
        let damaged_ct = B64.encode(&bytes);
        v["keys"][0]["wrapped"]["ct"] = damaged_ct.clone().into();
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

        let (mut m, asked) = approving(store, "echo \"$PHONECSP_OPERATION\"");
        logged();
        assert_eq!(m.ask(sign("ssh", 1)).unwrap_err(), CkRv::USER_NOT_LOGGED_IN);
        assert!(matches!(m.ask(login("ssh")), Ok(Reply::Done)));
        assert_eq!(retries(&mut m, "ssh"), crate::store::MAX_PIN_TRIES);

        assert_eq!(m.ask(sign("ssh", 1)).unwrap_err(), CkRv::DEVICE_ERROR);
        assert!(!asked.exists(), "the owner was asked about a damaged key");
        let lines = logged();
        assert!(
            lines.iter().any(|l| l
                .starts_with("container 'ssh': key 01 ('ssh key') is damaged: its stored entry")),
            "{lines:?}"
        );
        for l in &lines {
            assert!(!l.contains("123456") && !l.contains(&damaged_ct), "{l}");
        }

        assert!(matches!(m.ask(sign("ssh", 2)), Ok(Reply::Signature(_))));
        assert!(asked.exists());
        assert!(matches!(m.ask(login("web")), Ok(Reply::Done)));
        assert!(matches!(m.ask(sign("web", 1)), Ok(Reply::Signature(_))));
        assert_eq!(retries(&mut m, "ssh"), crate::store::MAX_PIN_TRIES);

        let list = Request::FindObjects {
            container: "ssh".into(),
            class: Some(ObjectClass::PrivateKey),
            id: None,
            label: None,
        };
        match m.ask(list) {
            Ok(Reply::Objects(o)) => assert_eq!(o.len(), 2),
            other => panic!("{other:?}"),
        }
    }

    fn reads(m: &Manager) -> usize {
        m.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn list(m: &mut Manager) -> Vec<String> {
        match m.ask(Request::ListContainers) {
            Ok(Reply::Containers(c)) => c.into_iter().map(|c| c.name).collect(),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 14, item 7: files are read again only when they changed, and
    /// a revocation on the command line still takes effect at the very
    /// next request.
    #[test]
    fn files_are_read_when_they_change_and_a_revocation_is_immediate() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut m = Manager::new(store, Approver::default());
        assert_eq!(list(&mut m), ["ssh", "web"]);
        let first = reads(&m);
        assert_eq!(first, 3, "hosts.json and two containers");
        for _ in 0..5 {
            assert_eq!(list(&mut m), ["ssh", "web"]);
            assert_eq!(retries(&mut m, "web"), crate::store::MAX_PIN_TRIES);
        }
        assert_eq!(reads(&m), first, "read again though unchanged");

        // The owner revokes 'web' (as `hosts revoke` does, another process).
        let other = Store::open(dir.path()).unwrap();
        other
            .update_hosts(|h| {
                h.hosts[0].containers.retain(|c| c != "web");
                Ok(())
            })
            .unwrap();
        assert_eq!(list(&mut m), ["ssh"]);
        assert_eq!(
            m.ask(Request::TokenInfo {
                container: "web".into()
            }),
            Err(CkRv::TOKEN_NOT_PRESENT)
        );
        assert!(announced(&mut m).get("web").is_none());
        // And a container changed behind its back is read again.
        let mut web = other.load_container("web").unwrap();
        web.set_policy(Policy::Confirm);
        other.save_container(&web).unwrap();
        other
            .update_hosts(|h| {
                h.hosts[0].containers.push("web".into());
                Ok(())
            })
            .unwrap();
        let flags = match m.ask(Request::ListContainers) {
            Ok(Reply::Containers(c)) => c[1].flags,
            other => panic!("{other:?}"),
        };
        assert_ne!(flags & token_flags::CONFIRM, 0);
    }

    /// Issue 14, item 7: the command line and `serve` change hosts.json
    /// at once, and neither change is lost.
    #[test]
    fn two_writers_of_hosts_json_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let _ = store(dir.path());
        let path = dir.path().to_owned();
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|w| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    for i in 0..25 {
                        store
                            .update_hosts(|h| {
                                h.hosts[0].containers.push(format!("{w}{i}"));
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let hosts = Store::open(&path).unwrap().load_hosts().unwrap();
        let containers = &hosts.hosts[0].containers;
        for w in ["a", "b"] {
            for i in 0..25 {
                let name = format!("{w}{i}");
                assert!(containers.contains(&name), "{name} lost: {containers:?}");
            }
        }
    }

    fn announced(m: &mut Manager) -> Announcement {
        Announcement::parse(&m.session_announcement(&HOST, 4096))
            .unwrap()
            .unwrap()
    }

    /// Issue 14, item 1: the announcement lists what the host may use,
    /// and a container's version changes with anything a host can read of
    /// it, and only then.
    #[test]
    fn the_announcement_follows_what_a_host_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let mut m = Manager::new(store, Approver::default());
        let a = announced(&mut m);
        let names: Vec<&str> = a.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["ssh", "web"]);
        let v = |a: &Announcement, n: &str| a.get(n).unwrap().version;
        assert_ne!(v(&a, "ssh"), v(&a, "web"));

        // A right PIN changes nothing a host sees.
        m.ask(login("web")).unwrap();
        m.session_ended(&HOST);
        assert_eq!(v(&announced(&mut m), "web"), v(&a, "web"));

        // A wrong one does (the retry counter), and so does a certificate.
        let wrong = Request::Login {
            container: "web".into(),
            pin: Zeroizing::new(b"000000".to_vec()),
        };
        assert_eq!(m.ask(wrong), Err(CkRv::PIN_INCORRECT));
        let b = announced(&mut m);
        assert_ne!(v(&b, "web"), v(&a, "web"));
        assert_eq!(v(&b, "ssh"), v(&a, "ssh"));
        assert_ne!(b.get("web").unwrap().flags & token_flags::PIN_COUNT_LOW, 0);
        m.ask(login("ssh")).unwrap();
        let put = Request::PutData {
            container: "ssh".into(),
            object: phonecsp_protocol::message::DataObject {
                id: vec![9],
                label: "note".into(),
                application: "test".into(),
                oid: Vec::new(),
                value: b"hello".to_vec(),
            },
        };
        m.ask(put).unwrap();
        m.session_ended(&HOST);
        assert_ne!(v(&announced(&mut m), "ssh"), v(&a, "ssh"));

        // One that does not fit the line is not made; an unknown host gets none.
        assert!(m.session_announcement(&HOST, 20).is_empty());
        assert!(m.session_announcement(&[9; 32], 4096).is_empty());
    }
}
