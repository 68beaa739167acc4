//! The `org.phonecsp.CryptoProvider1` D-Bus service.
//!
//! Every method starts the same way ([`Inner::begin`]): the caller's uid
//! from the bus (never from its arguments), the token's allow list, the
//! handset's link; then it validates its own arguments with the checks the
//! client library and the link protocol share, and only then, if the
//! handset is needed at all, sends typed requests through a
//! [`CallerLink`]. Hashing, verification and encryption happen here. Login
//! state belongs to the calling connection and to the link's current
//! session ([`Logins`]): it is dropped when the caller leaves the bus, the
//! session ends, or the handset says it has no login.

use crate::access::{Access, Caller, groups_of};
use crate::agent::Agents;
use crate::caller_link::{CallerLink, log_out_if_unused, queue_log_out_if_unused};
use crate::config::Config;
use crate::disk_tokens::DiskTokens;
use crate::interface::interface_table;
use crate::known::Known;
use crate::link::{LinkHandle, LinkState};
use crate::lock;
use crate::logins::Logins;
use crate::objects::Resync;
use crate::polkit;
use crate::public::{self, Info, Public, PublicStore};
use crate::state::State;
use phonecsp::handset::{Handset, ImportedKey};
use phonecsp::input::SignInput;
use phonecsp::local;
use phonecsp::local::{EcPublicKey, PublicKey};
use phonecsp::mechanism::{self, Encryption, Signing};
use phonecsp::{
    EcKeyPairInfo, Error, HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo,
    TokenDetails, TokenEntry,
};
use phonecsp_protocol::at::check_text;
use phonecsp_protocol::limits::{
    MAX_DATA_OBJECT_LEN, MAX_DER_LEN, MAX_ID_LEN, MAX_LABEL_LEN, MAX_NAME_LEN, MAX_NONCE_LEN,
    MAX_OBJECT_ID_LEN, MAX_PIN_LEN, MAX_PRIVATE_KEY_LEN, MAX_RANDOM_LEN, MIN_NONCE_LEN,
    RSA_KEY_BITS,
};
use phonecsp_protocol::message::{DataObject, Request, program_text, token_flags};
use phonecsp_protocol::noise::fingerprint;
use phonecsp_protocol::pake::AnyPairingCode;
use phonecsp_protocol::{CkRv, Curve, HashAlg, ObjectClass};
use rsa::traits::PublicKeyParts;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedSender;
use zbus::Connection;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zeroize::Zeroizing;

/// Largest message hashed here for a signature or digest.
pub const MAX_HASHED_INPUT: usize = 64 << 20;
/// Largest random request (served in handset-sized pieces).
pub const MAX_RANDOM: u32 = 64 * 1024;

type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone)]
pub(crate) struct KeyInfo {
    pub(crate) id: Vec<u8>,
    pub(crate) public: PublicKey,
}

/// A token's objects and usable public keys, in the session they were
/// read in.
#[derive(Debug, Clone)]
pub(crate) struct TokenCache {
    pub(crate) objects: Vec<ObjectInfo>,
    pub(crate) keys: Vec<KeyInfo>,
}

/// One token's public part in one link session (see [`crate::public`]).
struct PublicEntry {
    generation: u64,
    /// The announced version this is kept under on disk; `None` where
    /// nothing was announced, or once something changed in this session
    /// (the phone's version moved on, to a value not known here).
    version: Option<u64>,
    /// Bumped by every change, so that a read begun before one is not
    /// kept after it.
    epoch: u64,
    data: Public,
}

/// A handset's container list in one link session: as announced, or as
/// last listed; `None` once something changed that its flags show.
struct Listed {
    generation: u64,
    list: Option<Vec<(String, u32)>>,
}

pub struct Provider {
    inner: Arc<Inner>,
}

pub struct Inner {
    config: Config,
    links: BTreeMap<String, LinkHandle>,
    transports: BTreeMap<String, String>,
    state: Arc<State>,
    access: Access,
    callers: Mutex<HashMap<String, Caller>>,
    logins: Arc<Logins>,
    /// Each token's public part in the current session.
    public: Mutex<HashMap<(String, String), PublicEntry>>,
    /// What is kept of it across sessions and restarts.
    public_store: PublicStore,
    listed: Mutex<HashMap<String, Listed>>,
    known: Known,
    disk: DiskTokens,
    agents: Agents,
    /// The bus connection the service runs on, for signals sent from
    /// outside an interface method; unset where no bus is served.
    conn: std::sync::OnceLock<Connection>,
    /// Asks the object tree to look at a handset again (see
    /// [`crate::objects::Tree`]); unset where no tree is served.
    resync: Mutex<Option<UnboundedSender<(String, Resync)>>>,
    /// Held across a PUK login and what it is for (its `+CKSOLOGIN`, the
    /// command, `+CKSOLOGOUT`): the handset keeps one security officer's
    /// login per token for the daemon's session, which two callers'
    /// unblocks must not share.
    so_turn: tokio::sync::Mutex<()>,
}

fn ck(rv: CkRv, detail: impl std::fmt::Display) -> Error {
    Error::token(rv, detail)
}

/// A string the link carries quoted, at most `max` bytes; refused with `rv`.
fn check_string(what: &str, s: &str, max: usize, rv: CkRv) -> Result<()> {
    if s.len() > max || check_text(s).is_err() {
        return Err(ck(rv, format!("invalid {what}")));
    }
    Ok(())
}

fn check_name(what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(ck(CkRv::ARGUMENTS_BAD, format!("invalid {what} name")));
    }
    check_string(
        &format!("{what} name"),
        s,
        MAX_NAME_LEN,
        CkRv::ARGUMENTS_BAD,
    )
}

fn check_label(label: &str) -> Result<()> {
    check_string("label", label, MAX_LABEL_LEN, CkRv::ATTRIBUTE_VALUE_INVALID)
}

fn check_id(id: &[u8]) -> Result<()> {
    if id.len() > MAX_ID_LEN {
        return Err(ck(
            CkRv::ARGUMENTS_BAD,
            format!("key id longer than {MAX_ID_LEN} bytes"),
        ));
    }
    Ok(())
}

fn check_hashed_input(data: &[u8]) -> Result<()> {
    if data.len() > MAX_HASHED_INPUT {
        return Err(ck(
            CkRv::DATA_LEN_RANGE,
            format!(
                "data longer than {} MiB: hash it and sign the digest",
                MAX_HASHED_INPUT >> 20
            ),
        ));
    }
    Ok(())
}

/// Inputs up to this size are hashed where the call runs.
const INLINE_HASH_LIMIT: usize = 64 * 1024;

/// Runs `work` (hashing, above all) over `data`: inline when `data` is
/// small, else on tokio's blocking pool, so that one caller's megabytes
/// never hold up the executor that serves every other caller's calls.
async fn cpu_work<T: Send + 'static>(
    data: Vec<u8>,
    work: impl FnOnce(&[u8]) -> T + Send + 'static,
) -> Result<T> {
    if data.len() <= INLINE_HASH_LIMIT {
        return Ok(work(&data));
    }
    tokio::task::spawn_blocking(move || work(&data))
        .await
        .map_err(|e| ck(CkRv::GENERAL_ERROR, format!("hashing stopped: {e}")))
}

/// An object about to be made: its id and label as the link carries them.
fn check_new_object(id: &[u8], label: &str) -> Result<()> {
    check_id(id)?;
    check_label(label)
}

/// How a new RSA key pair comes to be on the token.
#[derive(Debug, Clone, Copy)]
pub(crate) enum NewKey<'a> {
    /// Generated there, of this many bits.
    Generate { bits: u32 },
    /// Made elsewhere, and moved there (unencrypted PKCS#8 DER), which the
    /// handset checks and records as imported.
    Import { pkcs8: &'a [u8] },
}

fn check_pin(pin: &[u8], min: usize) -> Result<()> {
    if pin.len() < min || pin.len() > MAX_PIN_LEN {
        return Err(ck(
            CkRv::PIN_LEN_RANGE,
            format!("a PIN has {min} to {MAX_PIN_LEN} bytes"),
        ));
    }
    Ok(())
}

fn away(handset: &str) -> Error {
    ck(CkRv::DEVICE_REMOVED, format!("handset '{handset}' is away"))
}

impl Inner {
    pub fn new(config: Config, links: BTreeMap<String, LinkHandle>, state: Arc<State>) -> Inner {
        let transports = config
            .handsets
            .iter()
            .map(|h| {
                let t = h.transport().map(|t| t.to_string()).unwrap_or_default();
                (h.name.clone(), t)
            })
            .collect();
        let known = Known::load(state.dir(), links.keys().map(String::as_str));
        let public_store = PublicStore::new(state.dir());
        Inner {
            known,
            disk: DiskTokens::load(state.dir()),
            access: Access::new(&config),
            config,
            links,
            transports,
            state,
            callers: Mutex::new(HashMap::new()),
            logins: Arc::new(Logins::default()),
            public: Mutex::new(HashMap::new()),
            public_store,
            listed: Mutex::new(HashMap::new()),
            agents: Agents::default(),
            conn: std::sync::OnceLock::new(),
            resync: Mutex::new(None),
            so_turn: tokio::sync::Mutex::new(()),
        }
    }

    /// `token_flags::DISK` if a disk volume was enrolled to the token.
    fn disk_flag(&self, handset: &str, token: &str) -> u32 {
        match self.disk.contains(handset, token) {
            true => token_flags::DISK,
            false => 0,
        }
    }

    pub(crate) fn agents(&self) -> &Agents {
        &self.agents
    }

    pub fn set_connection(&self, conn: Connection) {
        let _ = self.conn.set(conn);
    }

    /// Says (`ApprovalPending`, and in the log) that `call`'s `operation`
    /// waits for the phone's owner, where the token asks them: each use on
    /// a confirm-on-phone token, a login on one that takes its PIN there.
    async fn announce(&self, call: &Call<'_>, operation: &str) {
        let flags = self.known.flags(call.handset, call.token).unwrap_or(0);
        let asks = match operation {
            "login" => flags & token_flags::PROTECTED_PATH != 0,
            _ => flags & token_flags::CONFIRM != 0,
        };
        if !asks {
            return;
        }
        // The module cannot speak to its program's user: this line is
        // where a person finds what a PKCS#11 program waits for.
        let who = match &call.caller.program {
            Some(p) => format!("{p}, bus name {}", call.caller.name),
            None => call.caller.name.clone(),
        };
        log::info!(
            "{who} waits for the owner of '{}' to approve {operation} on '{}'",
            call.handset,
            call.token
        );
        let Some(conn) = self.conn.get() else { return };
        if let Ok(emitter) = SignalEmitter::new(conn, phonecsp::OBJECT_PATH) {
            let (h, t, c) = (call.handset, call.token, call.caller.name.as_str());
            let _ = Provider::approval_pending(&emitter, h, t, operation, c).await;
        }
        // A desktop's agent shows it too, where the user runs one (a
        // login through the agent has already been told, with more).
        if operation != "login" {
            let message = format!(
                "Approve on your phone '{}': {operation} with a key of '{}'",
                call.handset, call.token
            );
            let token = crate::objects::token_path(call.handset, call.token);
            crate::agent::tell(self, conn, &call.caller, &token, message);
        }
    }

    pub(crate) fn set_resync(&self, tx: UnboundedSender<(String, Resync)>) {
        *lock(&self.resync) = Some(tx);
    }

    fn ask_tree(&self, handset: &str, why: Resync) {
        if let Some(tx) = &*lock(&self.resync) {
            let _ = tx.send((handset.to_owned(), why));
        }
    }

    /// Asks the object tree to read `handset`'s tokens and keys again:
    /// something on it changed.
    pub(crate) fn resync(&self, handset: &str) {
        self.ask_tree(handset, Resync::Objects);
    }

    /// Tells the object tree that `handset`'s link or pairing changed; it
    /// reads the handset again only in a link session it has not read.
    pub fn link_changed(&self, handset: &str) {
        self.ask_tree(handset, Resync::Link);
    }

    /// The link session `handset` is in, if connected.
    pub(crate) fn generation_of(&self, handset: &str) -> Option<u64> {
        self.links.get(handset).and_then(|l| l.generation())
    }

    pub(crate) fn is_connected(&self, handset: &str) -> bool {
        self.links
            .get(handset)
            .is_some_and(|l| matches!(l.state(), LinkState::Connected { .. }))
    }

    pub(crate) fn is_paired(&self, handset: &str) -> bool {
        self.state.pinned(handset).ok().flatten().is_some()
    }

    pub(crate) fn transport_of(&self, handset: &str) -> String {
        self.transports.get(handset).cloned().unwrap_or_default()
    }

    pub(crate) fn fingerprint_of(&self, handset: &str) -> String {
        self.state
            .pinned(handset)
            .ok()
            .flatten()
            .map(|k| fingerprint(&k))
            .unwrap_or_default()
    }

    pub(crate) fn statistics_of(&self, handset: &str) -> LinkStatistics {
        self.links
            .get(handset)
            .map(|l| l.stats())
            .unwrap_or_default()
    }

    /// The containers of a handset that is away, as last seen.
    pub(crate) fn known_away(&self, handset: &str) -> Vec<String> {
        self.known
            .away(handset)
            .into_iter()
            .map(|(name, _)| name)
            .collect()
    }

    /// Whether the sender of `hdr` administers the daemon.
    pub(crate) async fn is_admin_caller(&self, hdr: &Header<'_>, conn: &Connection) -> bool {
        match self.caller(hdr, conn).await {
            Ok(c) => self.access.is_admin(&c),
            Err(_) => false,
        }
    }

    /// The containers on a connected handset (remembered for when it is
    /// away), read as the daemon itself; `None` while it is away.
    pub(crate) async fn containers(&self, handset: &str) -> Result<Option<Vec<(String, u32)>>> {
        let link = self.link(handset)?;
        let Some(generation) = link.generation() else {
            return Ok(None);
        };
        self.listing(link, &internal_caller(), generation)
            .await
            .map(Some)
    }

    /// The containers of `link`'s handset in session `generation`, with
    /// the handset's flags: as it announced them when the session opened,
    /// or as last listed in this session, or else asked of it (as
    /// `caller`); remembered for when it is away.
    async fn listing(
        &self,
        link: &LinkHandle,
        caller: &Caller,
        generation: u64,
    ) -> Result<Vec<(String, u32)>> {
        let name = link.name();
        let known = {
            let mut listed = lock(&self.listed);
            let l = listed.entry(name.to_owned()).or_insert(Listed {
                generation: 0,
                list: None,
            });
            if l.generation != generation {
                *l = Listed {
                    generation,
                    list: link.announcement(generation).map(|a| {
                        a.containers
                            .iter()
                            .map(|c| (c.name.clone(), c.flags))
                            .collect()
                    }),
                };
            }
            l.list.clone()
        };
        let seen = match known {
            Some(list) => list,
            None => {
                let list = self
                    .caller_link(link, caller, None)
                    .list_containers()
                    .await?;
                let seen: Vec<_> = list.into_iter().map(|t| (t.name, t.flags)).collect();
                if let Some(l) = lock(&self.listed).get_mut(name)
                    && l.generation == generation
                {
                    l.list = Some(seen.clone());
                }
                seen
            }
        };
        self.known.remember(name, seen.clone());
        Ok(seen)
    }

    /// `f` of `token`'s public part in session `generation`, with the
    /// entry's epoch. The first use in a session takes what was kept
    /// under the version the handset announced for the token, if any.
    fn cached<T>(
        &self,
        handset: &str,
        token: &str,
        generation: u64,
        f: impl FnOnce(&mut Public) -> T,
    ) -> (u64, T) {
        let key = (handset.to_owned(), token.to_owned());
        let mut map = lock(&self.public);
        if let Some(e) = map.get_mut(&key)
            && e.generation == generation
        {
            return (e.epoch, f(&mut e.data));
        }
        let version = self
            .links
            .get(handset)
            .and_then(|l| l.announcement(generation))
            .and_then(|a| a.get(token).map(|c| c.version));
        let data = match (version, self.pinned_key(handset)) {
            (Some(v), Some(k)) => self
                .public_store
                .load(handset, &k, token, v)
                .unwrap_or_default(),
            _ => Public::default(),
        };
        let mut e = PublicEntry {
            generation,
            version,
            epoch: 0,
            data,
        };
        let r = f(&mut e.data);
        map.insert(key, e);
        (0, r)
    }

    /// Keeps what a read in session `generation`, begun at `epoch`, found
    /// (`f` adds it), and writes it down under the announced version.
    fn remember(
        &self,
        handset: &str,
        token: &str,
        generation: u64,
        epoch: u64,
        f: impl FnOnce(&mut Public),
    ) {
        let key = (handset.to_owned(), token.to_owned());
        let mut map = lock(&self.public);
        let Some(e) = map.get_mut(&key) else { return };
        if e.generation != generation || e.epoch != epoch {
            return;
        }
        f(&mut e.data);
        // Written under the lock, so that two writes of one file never
        // cross and the last one is the latest.
        if let (Some(v), Some(k)) = (e.version, self.pinned_key(handset)) {
            self.public_store.save(handset, &k, token, v, &e.data);
        }
    }

    /// Something about `token` changed in this session: forget its
    /// information (and its objects too, if `objects`), and write nothing
    /// more down for it in this session: the phone's version moved on.
    fn public_changed(&self, handset: &str, token: &str, objects: bool) {
        if let Some(e) = lock(&self.public).get_mut(&(handset.to_owned(), token.to_owned())) {
            e.epoch += 1;
            e.version = None;
            e.data.info = None;
            if objects {
                e.data = Public::default();
            }
        }
        if let Some(l) = lock(&self.listed).get_mut(handset) {
            l.list = None;
        }
    }

    /// The phone answered otherwise than what is kept of `token` (it is
    /// gone, or not ours any more, or lacks an object it announced): drop
    /// the kept copy, in memory and on disk, and ask it from now on.
    fn distrust(&self, handset: &str, token: &str) {
        log::info!(
            "handset '{handset}' answered otherwise than kept for '{token}'; reading it again"
        );
        self.public_changed(handset, token, true);
        self.public_store.remove(handset, token);
    }

    fn pinned_key(&self, handset: &str) -> Option<[u8; 32]> {
        self.state.pinned(handset).ok().flatten()
    }

    /// Checks a statement the handset sent inside its authenticated
    /// session: whole, naming the pinned identity and what was asked, and
    /// signed by the pinned attestation key, or, the first time, pins the
    /// key it is signed by (the session vouches for it).
    fn check_statement(
        &self,
        handset: &str,
        token: &str,
        id: &[u8],
        nonce: &[u8],
        bytes: &[u8],
    ) -> Result<()> {
        use phonecsp_protocol::attest::Statement;
        let bad = |why: String| {
            log::warn!("handset '{handset}' sent a statement that does not check: {why}");
            ck(
                CkRv::DEVICE_ERROR,
                format!("the phone's statement does not check: {why}"),
            )
        };
        let s = Statement::verify(bytes).map_err(|e| bad(e.to_string()))?;
        if Some(s.handset_key) != self.pinned_key(handset) {
            return Err(bad("it names another phone".into()));
        }
        if s.container != token || s.id != id || s.nonce != nonce {
            return Err(bad("it is about another key or nonce".into()));
        }
        let pinned = self
            .state
            .attestation_pinned(handset)
            .map_err(|e| bad(e.to_string()))?;
        match pinned {
            Some(k) if k == s.attestation_key => Ok(()),
            Some(_) => Err(bad(
                "it is signed by another attestation key than pinned".into()
            )),
            None => {
                self.state
                    .pin_attestation(handset, &s.attestation_key)
                    .map_err(|e| bad(e.to_string()))?;
                log::info!("pinned the attestation key of handset '{handset}'");
                Ok(())
            }
        }
    }

    /// A call as the daemon itself, which needs no allow list: it reads
    /// what it publishes, and never logs in.
    pub(crate) fn call_internal<'a>(
        &'a self,
        handset: &'a str,
        token: &'a str,
    ) -> Result<Call<'a>> {
        Ok(Call {
            inner: self,
            conn: None,
            caller: internal_caller(),
            link: self.link(handset)?,
            handset,
            token,
        })
    }

    /// Pairs `handset` with the one-time `code`; returns the pinned key's
    /// fingerprint.
    pub(crate) async fn pair(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        handset: &str,
        code: &str,
    ) -> Result<String> {
        let (c, link) = self.admin(hdr, conn, handset, polkit::PAIR).await?;
        let code = AnyPairingCode::parse(code).map_err(|e| ck(CkRv::ARGUMENTS_BAD, e))?;
        let key = link.pair(&c.name, code).await?;
        emit_tokens_changed(conn, handset).await;
        Ok(fingerprint(&key))
    }

    pub(crate) async fn unpair(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        handset: &str,
    ) -> Result<()> {
        let (c, link) = self.admin(hdr, conn, handset, polkit::UNPAIR).await?;
        link.unpair(&c.name).await?;
        self.known.forget(handset);
        self.public_store.forget(handset);
        lock(&self.public).retain(|(h, _), _| h != handset);
        lock(&self.listed).remove(handset);
        Ok(())
    }

    pub fn links(&self) -> &BTreeMap<String, LinkHandle> {
        &self.links
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn logins(&self) -> &Arc<Logins> {
        &self.logins
    }

    pub(crate) async fn caller(&self, hdr: &Header<'_>, conn: &Connection) -> Result<Caller> {
        let sender = hdr
            .sender()
            .ok_or_else(|| ck(CkRv::ARGUMENTS_BAD, "message without sender"))?
            .to_string();
        if let Some(c) = lock(&self.callers).get(&sender) {
            return Ok(c.clone());
        }
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let name = zbus::names::BusName::try_from(sender.as_str()).map_err(Error::Bus)?;
        let creds = dbus.get_connection_credentials(name).await?;
        let uid = creds
            .unix_user_id()
            .ok_or_else(|| ck(CkRv::GENERAL_ERROR, "the bus did not tell the caller's uid"))?;
        let gids = match creds.unix_group_ids() {
            Some(g) => g.clone(),
            None => groups_of(uid),
        };
        let program = creds.process_id().map(program_of);
        let c = Caller {
            name: sender.clone(),
            uid,
            gids,
            program,
        };
        lock(&self.callers).insert(sender, c.clone());
        Ok(c)
    }

    /// The caller left the bus: forget it and its logins, logging out on
    /// the handset where nobody else is logged in.
    pub async fn caller_left(&self, name: &str) {
        lock(&self.callers).remove(name);
        self.agents.caller_left(name);
        for (handset, token, generation) in self.logins.remove_caller(name) {
            log::debug!("caller {name} left; its login to {handset}/{token} is dropped");
            self.logout_if_unused(&handset, &token, generation).await;
        }
    }

    /// Logs the handset session out of `token` unless a caller is logged
    /// in to it in that session, or about to be (see [`Logins`]).
    pub(crate) async fn logout_if_unused(&self, handset: &str, token: &str, generation: u64) {
        if let Some(link) = self.links.get(handset) {
            log_out_if_unused(link, &self.logins, token, generation).await;
        }
    }

    fn link(&self, handset: &str) -> Result<&LinkHandle> {
        check_name("handset", handset)?;
        self.links.get(handset).ok_or_else(|| {
            ck(
                CkRv::TOKEN_NOT_PRESENT,
                format!("no handset '{handset}' is configured"),
            )
        })
    }

    /// Requests as `caller` on `link`, about `token` if given.
    fn caller_link(&self, link: &LinkHandle, caller: &Caller, token: Option<&str>) -> CallerLink {
        // The program is for the owner's prompt: told only where the
        // container asks its owner, as last listed (a policy changed on the
        // phone since is seen at the next listing; until then the prompt
        // goes without it).
        let asks = token.is_some_and(|t| {
            self.known
                .flags(link.name(), t)
                .is_some_and(|f| f & token_flags::CONFIRM != 0)
        });
        CallerLink::new(link.clone(), &caller.name, token, self.logins.clone())
            .for_program(caller.program.clone().filter(|_| asks))
    }

    /// The prologue of the methods that change which handsets are paired:
    /// who calls, if they may do the polkit `action` ([`polkit::authorize`]),
    /// and the handset's link.
    async fn admin(
        &self,
        hdr: &Header<'_>,
        conn: &Connection,
        handset: &str,
        action: &str,
    ) -> Result<(Caller, &LinkHandle)> {
        // A name that is not configured is said so before anyone is asked
        // for an administrator's password.
        let link = self.link(handset)?;
        let caller = self.caller(hdr, conn).await?;
        polkit::authorize(conn, &caller, action).await?;
        Ok((caller, link))
    }

    /// The prologue of every method about a token: who calls (from the
    /// bus), and the token's link if the caller may use it.
    pub(crate) async fn begin<'a>(
        &'a self,
        hdr: &Header<'_>,
        conn: &Connection,
        handset: &'a str,
        token: &'a str,
    ) -> Result<Call<'a>> {
        let caller = self.caller(hdr, conn).await?;
        let mut call = self.call_as(caller, handset, token)?;
        call.conn = Some(conn.clone());
        Ok(call)
    }

    /// [`Inner::begin`] for a caller already known. A token the caller may
    /// not use looks like one that is not there.
    fn call_as<'a>(&'a self, caller: Caller, handset: &'a str, token: &'a str) -> Result<Call<'a>> {
        check_name("handset", handset)?;
        check_name("token", token)?;
        let link = self.link(handset)?;
        if !self.access.allowed(&caller, handset, token) {
            log::info!("uid {} refused token {handset}/{token}", caller.uid);
            return Err(ck(
                CkRv::TOKEN_NOT_PRESENT,
                format!("token '{token}' is not available to uid {}", caller.uid),
            ));
        }
        Ok(Call {
            inner: self,
            conn: None,
            caller,
            link,
            handset,
            token,
        })
    }
}

/// The daemon itself, as the caller of its own reads.
fn internal_caller() -> Caller {
    Caller {
        name: "(phonecspd)".to_owned(),
        uid: 0,
        gids: Vec::new(),
        program: None,
    }
}

/// The program with process id `pid`, as the phone's prompt shows it:
/// its command name (`/proc/PID/comm`, readable for any process, unlike
/// its executable's path) and pid, made printable and short
/// ([`program_text`]). The process sets its own name, so this describes
/// and never proves.
fn program_of(pid: u32) -> String {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    program_text(comm.trim_end_matches('\n'), Some(pid))
}

/// Says on the low-level interface that a handset's tokens or objects
/// changed (for the PKCS#11 module's caches).
async fn emit_tokens_changed(conn: &Connection, handset: &str) {
    if let Ok(emitter) = SignalEmitter::new(conn, phonecsp::OBJECT_PATH) {
        let _ = Provider::tokens_changed(&emitter, handset).await;
    }
}

/// One method's call about one token, past the prologue: what is left for
/// the method is what is particular to it.
pub(crate) struct Call<'a> {
    inner: &'a Inner,
    /// The bus connection the call came on, to say what it changed;
    /// `None` for the daemon's own calls.
    conn: Option<Connection>,
    caller: Caller,
    link: &'a LinkHandle,
    handset: &'a str,
    token: &'a str,
}

impl Call<'_> {
    /// The typed requests, as this caller, about this token.
    fn handset(&self) -> CallerLink {
        self.inner
            .caller_link(self.link, &self.caller, Some(self.token))
    }

    pub(crate) fn caller(&self) -> &Caller {
        &self.caller
    }

    pub(crate) fn handset_name(&self) -> &str {
        self.handset
    }

    pub(crate) fn token_name(&self) -> &str {
        self.token
    }

    pub(crate) fn session(&self) -> Result<u64> {
        self.link.generation().ok_or_else(|| away(self.handset))
    }

    pub(crate) fn logged_in(&self) -> bool {
        self.link.generation().is_some_and(|g| {
            self.inner
                .logins
                .logged_in(&self.caller.name, self.handset, self.token, g)
        })
    }

    /// Once after the link came back, asks the handset whether it kept
    /// this caller's login (the container's grace period, docs/store.md):
    /// a `+CKTINFO`, whose answer [`CallerLink`] records in [`Logins`].
    pub(crate) async fn recheck_login(&self) {
        let Ok(generation) = self.session() else {
            return;
        };
        let logins = &self.inner.logins;
        if !self.logged_in()
            && logins.carried(&self.caller.name, self.handset, self.token, generation)
            && let Err(e) = self.handset().token_info(self.token).await
        {
            log::debug!(
                "asking '{}' about its login to '{}': {e}",
                self.handset,
                self.token
            );
        }
    }

    pub(crate) async fn require_login(&self) -> Result<()> {
        // Say why plainly rather than "not logged in".
        self.session()?;
        self.recheck_login().await;
        let logins = &self.inner.logins;
        if !self.logged_in() && logins.lapsed(&self.caller.name, self.handset, self.token) {
            // The person's program sees CKR_USER_NOT_LOGGED_IN only; this
            // log line says why, and what brings it back.
            let why = format!(
                "the phone '{}' ended the login to '{}' while it was away (for longer \
                 than the container's grace period, or it restarted): log in again \
                 (an ssh-agent: ssh-add -e and ssh-add -s)",
                self.handset, self.token
            );
            log::info!("{why}");
            return Err(ck(CkRv::USER_NOT_LOGGED_IN, why));
        }
        if !self.logged_in() {
            return Err(ck(
                CkRv::USER_NOT_LOGGED_IN,
                format!("log in to '{}' first", self.token),
            ));
        }
        Ok(())
    }

    /// The token's objects changed: read them again next time, and say so
    /// (on the low-level interface and in the object tree).
    async fn changed(&self) {
        self.inner.public_changed(self.handset, self.token, true);
        if let Some(conn) = &self.conn {
            emit_tokens_changed(conn, self.handset).await;
        }
        self.inner.resync(self.handset);
    }

    /// Watches a phone's answer about this token for signs that what is
    /// kept of it is wrong: the token is not there (gone, or this computer
    /// not authorised for it any more), or an object `id` that is kept as
    /// there is not.
    fn watch<T>(&self, r: Result<T>, id: Option<&[u8]>) -> Result<T> {
        if let Err(e) = &r {
            let gone = e.rv() == CkRv::TOKEN_NOT_PRESENT;
            let missing = matches!(
                e.rv(),
                CkRv::KEY_HANDLE_INVALID | CkRv::OBJECT_HANDLE_INVALID
            ) && id.is_some_and(|id| self.kept_object(id));
            if gone || missing {
                self.inner.distrust(self.handset, self.token);
            }
        }
        r
    }

    /// Whether an object of this id is in the kept object list.
    fn kept_object(&self, id: &[u8]) -> bool {
        let Some(generation) = self.link.generation() else {
            return false;
        };
        self.inner
            .cached(self.handset, self.token, generation, |p| {
                p.objects
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|o| o.id == id))
            })
            .1
    }

    /// The token's objects and public keys: kept, or read once.
    pub(crate) async fn objects(&self) -> Result<TokenCache> {
        let generation = self.session()?;
        let read = async || {
            let found = self
                .handset()
                .find_objects(self.token, None, None, None)
                .await;
            let list = self.watch(found, None)?.into_iter().map(|o| ObjectInfo {
                class: o.class.value() as u32,
                id: o.id,
                label: o.label,
            });
            Ok(list.collect())
        };
        let objects = self
            .kept_field(generation, |p| &mut p.objects, read)
            .await?;
        let mut keys = Vec::new();
        let public = ObjectClass::PublicKey.value() as u32;
        for o in objects.iter().filter(|o| o.class == public) {
            let attrs = self
                .attributes_in(generation, ObjectClass::PublicKey, &o.id)
                .await?;
            // A public key of a type not known here is listed, but cannot be
            // used.
            match local::any_public_key_from_attributes(attrs.iter().map(|(t, v)| (t, v))) {
                Ok(public) => keys.push(KeyInfo {
                    id: o.id.clone(),
                    public,
                }),
                Err(rv) => log::debug!("key {:02x?} in '{}': {rv:?}", o.id, self.token),
            }
        }
        Ok(TokenCache { objects, keys })
    }

    /// An object's attributes in session `generation`: kept (for keys and
    /// certificates), or read from the phone.
    async fn attributes_in(
        &self,
        generation: u64,
        class: ObjectClass,
        id: &[u8],
    ) -> Result<Vec<(u32, Vec<u8>)>> {
        let read = async || {
            let read = self.handset().attributes(self.token, class, id).await;
            self.watch(read, Some(id))
        };
        let c = class.value() as u32;
        let key = (c, id.to_vec());
        let kept = |p: &mut Public| p.attributes.get(&key).cloned();
        let keep = public::keeps(c).then_some(|p: &mut Public, a| {
            p.attributes.insert(key.clone(), a);
        });
        self.kept_or_read(generation, kept, read, keep).await
    }

    /// [`Self::kept_or_read`] for a part kept whole in one `field`.
    async fn kept_field<T: Clone>(
        &self,
        generation: u64,
        field: fn(&mut Public) -> &mut Option<T>,
        read: impl AsyncFnOnce() -> Result<T>,
    ) -> Result<T> {
        let keep = move |p: &mut Public, t| *field(p) = Some(t);
        self.kept_or_read(generation, |p| field(p).clone(), read, Some(keep))
            .await
    }

    /// A part of the token's public data in session `generation`: kept
    /// (`kept` finds it), or else read from the phone (`read`) and kept
    /// (`keep` adds it), unless something changed in the meantime. A part
    /// that is not kept at all (`keep` is `None`) is always read.
    async fn kept_or_read<T: Clone>(
        &self,
        generation: u64,
        kept: impl FnOnce(&mut Public) -> Option<T>,
        read: impl AsyncFnOnce() -> Result<T>,
        keep: Option<impl FnOnce(&mut Public, T)>,
    ) -> Result<T> {
        let keeps = keep.is_some();
        let (epoch, kept) = self
            .inner
            .cached(self.handset, self.token, generation, |p| {
                if keeps { kept(p) } else { None }
            });
        if let Some(t) = kept {
            return Ok(t);
        }
        let t = read().await?;
        if let Some(keep) = keep {
            self.inner
                .remember(self.handset, self.token, generation, epoch, |p| {
                    keep(p, t.clone())
                });
        }
        Ok(t)
    }

    async fn key(&self, id: &[u8]) -> Result<PublicKey> {
        check_id(id)?;
        self.objects()
            .await?
            .keys
            .into_iter()
            .find(|k| k.id == id)
            .map(|k| k.public)
            .ok_or_else(|| {
                ck(
                    CkRv::KEY_HANDLE_INVALID,
                    format!("no key with that id in '{}'", self.token),
                )
            })
    }

    /// An object's attributes: kept, or from the handset.
    pub(crate) async fn attributes(
        &self,
        class: ObjectClass,
        id: &[u8],
    ) -> Result<HashMap<u32, Vec<u8>>> {
        check_id(id)?;
        let generation = self.session()?;
        let attributes = self.attributes_in(generation, class, id).await?;
        Ok(attributes.into_iter().collect())
    }

    pub(crate) async fn details(&self) -> Result<TokenDetails> {
        use phonecsp_protocol::message::token_flags::LOGGED_IN;
        let generation = self.session()?;
        let read = async || {
            let read = self.handset().token_info(self.token).await;
            let t = self.watch(read, None)?;
            // The login is the session's, not the token's: not kept.
            Ok(Info {
                flags: t.flags & !LOGGED_IN,
                retries_left: t.retries_left,
                min_pin: t.min_pin,
                max_pin: t.max_pin,
                serial: t.serial,
                so_retries_left: t.so_retries_left,
            })
        };
        let t = self.kept_field(generation, |p| &mut p.info, read).await?;
        // The handset's session is logged in to the token while one of
        // the daemon's callers is, or is logging in.
        let session_login = !self
            .inner
            .logins
            .may_log_out(self.handset, self.token, generation);
        Ok(TokenDetails {
            handset: self.handset.to_owned(),
            token: self.token.to_owned(),
            serial: t.serial,
            flags: t.flags
                | if session_login { LOGGED_IN } else { 0 }
                | self.inner.disk_flag(self.handset, self.token),
            retries_left: t.retries_left,
            min_pin: t.min_pin,
            max_pin: t.max_pin,
            logged_in: self.logged_in(),
            puk_retries_left: t.so_retries_left,
        })
    }

    /// An empty PIN asks the owner to type it on the phone, where the
    /// token has a protected authentication path; the handset decides.
    pub(crate) async fn login(&self, pin: &[u8]) -> Result<()> {
        check_pin(pin, 0)?;
        if pin.is_empty() {
            self.inner.announce(self, "login").await;
        }
        // The caller's login is recorded by the link as the handset accepts it.
        let r = self.handset().login(self.token, pin).await;
        // A wrong PIN spends a try, and a right one after wrong ones gives
        // them back: what is kept of the retry counter is stale then.
        let counted =
            token_flags::PIN_COUNT_LOW | token_flags::PIN_FINAL_TRY | token_flags::PIN_LOCKED;
        let was_low = self
            .link
            .generation()
            .and_then(|g| {
                self.inner
                    .cached(self.handset, self.token, g, |p| {
                        p.info.as_ref().map(|i| i.flags & counted != 0)
                    })
                    .1
            })
            .unwrap_or(true);
        if r.is_err() || was_low {
            self.inner.public_changed(self.handset, self.token, false);
        }
        self.watch(r, None)
    }

    pub(crate) async fn logout(&self) -> Result<()> {
        let generation = self
            .inner
            .logins
            .remove(&self.caller.name, self.handset, self.token)
            .ok_or_else(|| ck(CkRv::USER_NOT_LOGGED_IN, "not logged in"))?;
        // Queued as this caller's, and not waited for: it goes to the
        // phone before anything else the caller asks.
        queue_log_out_if_unused(
            self.link,
            &self.inner.logins,
            &self.caller.name,
            self.token,
            generation,
        )
        .await;
        Ok(())
    }

    /// Changes the token's PIN; the handset ends every session's login.
    pub(crate) async fn change_pin(&self, old_pin: &[u8], new_pin: &[u8]) -> Result<()> {
        check_pin(old_pin, 0)?;
        check_pin(new_pin, 1)?;
        let logins = &self.inner.logins;
        let before = logins.stamp(self.handset, self.token);
        let r = self
            .handset()
            .done(Request::change_pin(self.token, old_pin, new_pin))
            .await;
        // Right or wrong, the old PIN was checked against the counter.
        self.inner.public_changed(self.handset, self.token, false);
        self.watch(r, None)?;
        logins.forget_until(self.handset, self.token, before);
        Ok(())
    }

    /// Logs the daemon's session in to the token with the PUK as its
    /// security officer, runs `then` in that login, and logs it out again
    /// whatever `then` gave: the login is never left behind for another
    /// caller. A wrong PUK's error says the tries left.
    async fn with_puk<T>(
        &self,
        puk: &[u8],
        then: impl AsyncFnOnce(&mut CallerLink) -> Result<T>,
    ) -> Result<T> {
        let _turn = self.inner.so_turn.lock().await;
        let mut handset = self.handset();
        let login = handset.done(Request::so_login(self.token, puk)).await;
        // Right or wrong, the PUK's counter moved, and what `then` does
        // (a new PIN) changes the token: what is kept of it is stale.
        self.inner.public_changed(self.handset, self.token, false);
        if let Err(e) = self.watch(login, None) {
            return Err(self.puk_failure(e).await);
        }
        let r = then(&mut handset).await;
        self.inner.public_changed(self.handset, self.token, false);
        let logout = Request::SoLogout {
            container: self.token.to_owned(),
        };
        if let Err(e) = handset.done(logout).await {
            log::debug!("PUK logout of {}/{}: {e}", self.handset, self.token);
        }
        r
    }

    /// A PUK's error, with what is left of its tries (which the caller
    /// would otherwise have to ask for).
    async fn puk_failure(&self, e: Error) -> Error {
        let rv = e.rv();
        let (handset, token) = (self.handset, self.token);
        match rv {
            CkRv::PIN_INCORRECT => match self.handset().token_info(token).await {
                Ok(t) => ck(
                    rv,
                    format!(
                        "wrong PUK for {handset}/{token}: {} {} left before the PUK locks for good",
                        t.so_retries_left,
                        if t.so_retries_left == 1 {
                            "try"
                        } else {
                            "tries"
                        }
                    ),
                ),
                Err(_) => ck(rv, format!("wrong PUK for {handset}/{token}")),
            },
            CkRv::PIN_LOCKED => ck(
                rv,
                format!(
                    "the PUK of {handset}/{token} is locked for good: nothing in the container \
                     can be used again"
                ),
            ),
            CkRv::USER_TYPE_INVALID => ck(
                rv,
                format!("{handset}/{token} has no PUK (the phone's owner can set one)"),
            ),
            _ => e,
        }
    }

    /// Checks the PUK: a PKCS#11 security officer's `C_Login`. A wrong one
    /// spends a try; no login is kept.
    pub(crate) async fn check_puk(&self, puk: &[u8]) -> Result<()> {
        check_pin(puk, 1)?;
        self.session()?;
        self.with_puk(puk, async |_| Ok(())).await
    }

    /// Sets a new PIN with the PUK, also on a locked token; every login
    /// to it made with the old PIN ends.
    pub(crate) async fn unblock(&self, puk: &[u8], new_pin: &[u8]) -> Result<()> {
        let r = async {
            check_pin(puk, 1)?;
            check_pin(new_pin, 1)?;
            self.session()?;
            let logins = &self.inner.logins;
            let before = logins.stamp(self.handset, self.token);
            let token = self.token;
            self.with_puk(puk, async |h| {
                h.done(Request::init_pin(token, new_pin)).await
            })
            .await?;
            logins.forget_until(self.handset, self.token, before);
            log::info!("{}/{}: a new PIN was set with the PUK", self.handset, token);
            Ok(())
        };
        self.puk_tried(r.await)
    }

    /// Changes the PUK; the old one is the proof.
    pub(crate) async fn change_puk(&self, old_puk: &[u8], new_puk: &[u8]) -> Result<()> {
        let r = async {
            check_pin(old_puk, 1)?;
            check_pin(new_puk, 1)?;
            self.session()?;
            let r = self
                .handset()
                .done(Request::change_puk(self.token, old_puk, new_puk))
                .await;
            self.inner.public_changed(self.handset, self.token, false);
            match self.watch(r, None) {
                Ok(()) => Ok(()),
                Err(e) => Err(self.puk_failure(e).await),
            }
        };
        self.puk_tried(r.await)
    }

    /// `r`, the answer to a method that tried the PUK (Unblock,
    /// ChangePuk), once the object tree is asked to read the handset
    /// again: both counters may have moved, whatever the answer.
    fn puk_tried<T>(&self, r: Result<T>) -> Result<T> {
        self.inner.resync(self.handset);
        r
    }

    /// The handset's statement about the key `id` for `nonce`, checked
    /// against its pinned identity, the request, and its pinned attestation
    /// key, which the first statement pins (docs/attestation.md).
    pub(crate) async fn attest(&self, id: &[u8], nonce: &[u8]) -> Result<Vec<u8>> {
        check_id(id)?;
        if !(MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len()) {
            return Err(ck(
                CkRv::ARGUMENTS_BAD,
                format!("a nonce is {MIN_NONCE_LEN} to {MAX_NONCE_LEN} bytes"),
            ));
        }
        let statement = self.handset().attest(self.token, id, nonce).await?;
        self.inner
            .check_statement(self.handset, self.token, id, nonce, &statement)?;
        Ok(statement)
    }

    /// A new RSA key pair on the token, generated there or imported.
    pub(crate) async fn new_key_pair(
        &self,
        how: NewKey<'_>,
        id: &[u8],
        label: &str,
    ) -> Result<KeyPairInfo> {
        match how {
            NewKey::Generate { bits } if !RSA_KEY_BITS.contains(&bits) => {
                return Err(ck(
                    CkRv::KEY_SIZE_RANGE,
                    format!("RSA keys are {RSA_KEY_BITS:?} bits"),
                ));
            }
            NewKey::Import { pkcs8 } if pkcs8.is_empty() || pkcs8.len() > MAX_PRIVATE_KEY_LEN => {
                return Err(ck(
                    CkRv::ATTRIBUTE_VALUE_INVALID,
                    format!("a private key is 1 to {MAX_PRIVATE_KEY_LEN} bytes of PKCS#8 DER"),
                ));
            }
            _ => {}
        }
        // An EC key has its own method, whose answer carries a point: it is
        // refused here before the phone stores it, not after.
        if let NewKey::Import { pkcs8 } = how
            && let Ok(Some(curve)) = local::pkcs8_curve(pkcs8)
        {
            return Err(ck(
                CkRv::KEY_TYPE_INCONSISTENT,
                format!("a {} key: import it with ImportEcKey", curve.name()),
            ));
        }
        check_new_object(id, label)?;
        let token = self.token;
        let key = self
            .change_objects(async |h| match how {
                NewKey::Generate { bits } => h.generate_key_pair(token, bits, id, label).await,
                NewKey::Import { pkcs8 } => match h.import_key(token, id, label, pkcs8).await? {
                    ImportedKey::Rsa(key) => Ok(key),
                    ImportedKey::Ec { .. } => Err(ck(
                        CkRv::DEVICE_ERROR,
                        "the handset answered an RSA import with an EC key",
                    )),
                },
            })
            .await?;
        Ok(KeyPairInfo {
            id: key.id,
            modulus: key.modulus,
            exponent: key.exponent,
        })
    }

    /// Moves an EC private key made elsewhere (PKCS#8 DER of P-256, P-384
    /// or Ed25519) onto the handset, as [`Self::new_key_pair`] imports an
    /// RSA one.
    pub(crate) async fn import_ec_key(
        &self,
        id: &[u8],
        label: &str,
        pkcs8: &[u8],
    ) -> Result<EcKeyPairInfo> {
        if pkcs8.is_empty() || pkcs8.len() > MAX_PRIVATE_KEY_LEN {
            return Err(ck(
                CkRv::ATTRIBUTE_VALUE_INVALID,
                format!("a private key is 1 to {MAX_PRIVATE_KEY_LEN} bytes of PKCS#8 DER"),
            ));
        }
        let curve = match local::pkcs8_curve(pkcs8) {
            Ok(Some(curve)) => curve,
            Ok(None) => {
                return Err(ck(
                    CkRv::KEY_TYPE_INCONSISTENT,
                    "not an EC key: import it with ImportKey",
                ));
            }
            Err(rv) if rv == CkRv::KEY_TYPE_INCONSISTENT => {
                return Err(ck(rv, "an EC key on a curve the phone does not hold"));
            }
            Err(rv) => return Err(ck(rv, "not a PKCS#8 private key")),
        };
        check_new_object(id, label)?;
        let token = self.token;
        self.change_objects(
            async |h| match h.import_key(token, id, label, pkcs8).await? {
                ImportedKey::Ec { id, point } => {
                    // The phone's point is checked before anyone relies on it.
                    EcPublicKey::new(curve, &point).map_err(|rv| {
                        ck(rv, "the handset answered a public key not on the curve")
                    })?;
                    Ok(EcKeyPairInfo { id, point })
                }
                ImportedKey::Rsa(_) => Err(ck(
                    CkRv::DEVICE_ERROR,
                    "the handset answered an EC import with an RSA key",
                )),
            },
        )
        .await
    }

    /// Generates an EC key pair on `curve` on the handset.
    pub(crate) async fn generate_ec_key_pair(
        &self,
        curve: Curve,
        id: &[u8],
        label: &str,
    ) -> Result<EcKeyPairInfo> {
        check_new_object(id, label)?;
        let token = self.token;
        self.change_objects(async |h| {
            let (id, point) = h.generate_ec_key_pair(token, curve, id, label).await?;
            // The phone's point is checked before anyone relies on it.
            EcPublicKey::new(curve, &point)
                .map_err(|rv| ck(rv, "the handset answered a public key not on the curve"))?;
            Ok(EcKeyPairInfo { id, point })
        })
        .await
    }

    /// ECDH's private step on the handset: Z for `peer`, which is checked
    /// here first (on the key's curve, not the identity), so that a bad
    /// point never reaches the phone.
    pub(crate) async fn derive(&self, key_id: &[u8], peer: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.private_key(key_id).await?;
        let PublicKey::Ec(ec) = &key else {
            return Err(ck(CkRv::KEY_TYPE_INCONSISTENT, "ECDH needs an EC key"));
        };
        if ec.curve == Curve::Ed25519 {
            return Err(ck(
                CkRv::KEY_TYPE_INCONSISTENT,
                "an Ed25519 key signs only; ECDH needs a P-256 or P-384 key",
            ));
        }
        EcPublicKey::new(ec.curve, peer).map_err(|rv| {
            ck(
                rv,
                format!(
                    "the peer's public key is not a point on {}",
                    ec.curve.name()
                ),
            )
        })?;
        let token = self.token;
        self.on_phone("derive", key_id, async |h| {
            h.derive(token, key_id, peer).await
        })
        .await
    }

    /// Stores a certificate (DER) on the token.
    pub(crate) async fn put_certificate(
        &self,
        id: &[u8],
        label: &str,
        certificate: &[u8],
    ) -> Result<()> {
        check_new_object(id, label)?;
        // DER of a certificate is a SEQUENCE (tag 0x30).
        if certificate.len() > MAX_DER_LEN || certificate.first() != Some(&0x30) {
            return Err(ck(CkRv::ATTRIBUTE_VALUE_INVALID, "not a DER certificate"));
        }
        let token = self.token;
        self.change_objects(async |h| h.put_certificate(token, id, label, certificate).await)
            .await
    }

    /// Stores a data object (`CKO_DATA`) on the token.
    pub(crate) async fn put_data(&self, object: DataObject) -> Result<()> {
        check_new_object(&object.id, &object.label)?;
        check_label(&object.application)?;
        if object.oid.len() > MAX_OBJECT_ID_LEN || object.value.len() > MAX_DATA_OBJECT_LEN {
            return Err(ck(CkRv::ATTRIBUTE_VALUE_INVALID, "data object too long"));
        }
        let token = self.token;
        self.change_objects(async |h| h.put_data(token, object).await)
            .await
    }

    /// Deletes an object (a key pair for `CKO_PRIVATE_KEY`).
    pub(crate) async fn delete(&self, class: ObjectClass, id: &[u8]) -> Result<()> {
        check_id(id)?;
        let token = self.token;
        self.change_objects(async |h| h.delete_object(token, class, id).await)
            .await
    }

    /// What every change to the token's objects does around the
    /// handset's part (`store`): the caller must be logged in first, and
    /// after it the objects are read again and the change is said.
    async fn change_objects<T>(
        &self,
        store: impl AsyncFnOnce(&mut CallerLink) -> Result<T>,
    ) -> Result<T> {
        self.require_login().await?;
        let r = store(&mut self.handset()).await?;
        self.changed().await;
        Ok(r)
    }

    /// The key `key_id`, for a private-key operation: the caller must be
    /// logged in.
    async fn private_key(&self, key_id: &[u8]) -> Result<PublicKey> {
        self.require_login().await?;
        self.key(key_id).await
    }

    /// The handset's part of a private-key `operation` with `key_id`
    /// (`run`), its input checked already: said to wait for the owner
    /// where the token asks them, and its failures read as what they say
    /// about the key.
    async fn on_phone<T>(
        &self,
        operation: &str,
        key_id: &[u8],
        run: impl AsyncFnOnce(&mut CallerLink) -> Result<T>,
    ) -> Result<T> {
        self.inner.announce(self, operation).await;
        let r = run(&mut self.handset()).await;
        self.watch(r, Some(key_id))
            .map_err(|e| self.key_failure(e, key_id))
    }

    /// A handset's CKR_DEVICE_ERROR for a private-key operation is a key
    /// it can no longer read (docs/store.md): say which, and where to look.
    fn key_failure(&self, e: Error, key_id: &[u8]) -> Error {
        if e.rv() != CkRv::DEVICE_ERROR {
            return e;
        }
        let id: String = key_id.iter().map(|b| format!("{b:02x}")).collect();
        ck(
            CkRv::DEVICE_ERROR,
            format!(
                "the phone could not use key {id} of '{}': it may be damaged \
                 (`phonecsp-handset container list` on the phone says)",
                self.token
            ),
        )
    }

    /// Signs `data` (hashed here first where the mechanism says so).
    pub(crate) async fn sign(
        &self,
        key_id: &[u8],
        signing: Signing,
        data: Vec<u8>,
    ) -> Result<Vec<u8>> {
        check_hashed_input(&data)?;
        let key = self.private_key(key_id).await?;
        key.check_signing(&signing)?;
        let key_len = key.signature_len();
        let input = cpu_work(data, move |d| SignInput::once(signing, key_len, d)).await??;
        let token = self.token;
        self.on_phone("sign", key_id, async |h| h.sign(token, key_id, input).await)
            .await
    }

    /// Verified here with the public key; never reaches the link.
    pub(crate) async fn verify(
        &self,
        key_id: &[u8],
        signing: Signing,
        data: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool> {
        check_hashed_input(&data)?;
        let key = self.key(key_id).await?;
        Ok(cpu_work(data, move |d| {
            local::verify_any(&key, &signing, d, &signature)
        })
        .await??)
    }

    /// Decrypted on the handset, after the length is checked here.
    pub(crate) async fn decrypt(
        &self,
        key_id: &[u8],
        enc: &Encryption,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let key = self.private_key(key_id).await?;
        enc.check_ciphertext(ciphertext.len(), key.rsa()?.size())?;
        let (token, step) = (self.token, enc.for_handset());
        self.on_phone("decrypt", key_id, async |h| {
            h.decrypt(token, key_id, step, ciphertext).await
        })
        .await
    }

    /// Re-wraps a secret wrapped to the key `key_id` (OAEP with `in_hash`
    /// for RSA, docs/protocol.md section 7.16 for EC) to `public_key`
    /// (OAEP with `out_hash`), on the phone: the secret never reaches the
    /// computer.
    pub(crate) async fn rewrap(
        &self,
        key_id: &[u8],
        in_hash: u32,
        ciphertext: &[u8],
        out_hash: u32,
        public_key: &[u8],
    ) -> Result<Vec<u8>> {
        let hash = |v: u32| {
            HashAlg::from_mechanism(u64::from(v))
                .ok_or_else(|| ck(CkRv::MECHANISM_PARAM_INVALID, "unknown OAEP hash"))
        };
        let (in_hash, out_hash) = (hash(in_hash)?, hash(out_hash)?);
        if public_key.is_empty() || public_key.len() > MAX_DER_LEN {
            return Err(ck(
                CkRv::ARGUMENTS_BAD,
                "public key must be a DER SubjectPublicKeyInfo",
            ));
        }
        let key = self.private_key(key_id).await?;
        match &key {
            // An EC key's secret is its one-time point, then the sealed
            // secret (docs/protocol.md section 7.16).
            PublicKey::Ec(k) if k.curve != Curve::Ed25519 => {
                let min = k.curve.point_len() + phonecsp_protocol::disk_wrap::OVERHEAD;
                if ciphertext.len() < min || ciphertext.len() > MAX_DER_LEN {
                    return Err(ck(
                        CkRv::ENCRYPTED_DATA_LEN_RANGE,
                        "not a secret wrapped to this EC key",
                    ));
                }
            }
            _ => {
                let oaep_in = Encryption::Oaep {
                    hash: in_hash,
                    label: Vec::new(),
                };
                oaep_in.check_ciphertext(ciphertext.len(), key.rsa()?.size())?;
            }
        }
        let mut link = self.handset();
        self.inner.announce(self, "re-wrap a secret").await;
        link.rewrap(
            self.token, key_id, in_hash, ciphertext, out_hash, public_key,
        )
        .await
    }

    /// Encrypted here with the public key; never reaches the link.
    pub(crate) async fn encrypt(
        &self,
        key_id: &[u8],
        enc: &Encryption,
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let key = self.key(key_id).await?;
        Ok(local::encrypt(key.rsa()?, enc, plaintext)?)
    }
}

impl Provider {
    pub fn new(inner: Arc<Inner>) -> Provider {
        Provider { inner }
    }
}

// The interface, from its table (see `crate::interface`): the methods
// about one token open with the caller's call on it ([`Inner::begin`]),
// the listings with the caller; the rest is written out.
interface_table! {
    #[interface(name = "org.phonecsp.CryptoProvider1")] impl Provider;
    methods (self, hdr, conn, handset: String, token: String) {
        let call = self.inner.begin(&hdr, conn, &handset, &token).await?;
    } {
        #[zbus(out_args("info"))]
        fn get_token_info() -> TokenDetails {
            call.details().await
        }

        fn login(pin: Vec<u8> as Zeroizing) {
            call.login(&pin).await
        }

        fn logout() {
            call.logout().await
        }

        fn change_pin(old_pin: Vec<u8> as Zeroizing, new_pin: Vec<u8> as Zeroizing) {
            call.change_pin(&old_pin, &new_pin).await
        }

        /// Checks the token's PUK (the PKCS#11 security officer's login): a
        /// wrong one spends one of its tries. No login is kept.
        fn check_puk(puk: Vec<u8> as Zeroizing) {
            call.check_puk(&puk).await
        }

        /// Sets a new PIN with the PUK, also on a locked token: the PIN gets
        /// every try again, and every login made with the old PIN ends.
        fn unblock(puk: Vec<u8> as Zeroizing, new_pin: Vec<u8> as Zeroizing) {
            call.unblock(&puk, &new_pin).await
        }

        /// Changes the token's PUK; the old one is the proof.
        fn change_puk(old_puk: Vec<u8> as Zeroizing, new_puk: Vec<u8> as Zeroizing) {
            call.change_puk(&old_puk, &new_puk).await
        }

        #[zbus(out_args("objects"))]
        fn list_objects() -> Vec<ObjectInfo> {
            Ok(call.objects().await?.objects)
        }

        #[zbus(out_args("attributes"))]
        fn get_attributes(class: u32, id: Vec<u8>) -> HashMap<u32, Vec<u8>> {
            call.attributes(object_class(class)?, &id).await
        }

        #[zbus(out_args("signature"))]
        fn sign(key_id: Vec<u8>, mechanism: u32, params: MechanismParams, data: Vec<u8>)
            -> Vec<u8>
        {
            call.sign(&key_id, Signing::from_ckm(mechanism, &params)?, data).await
        }

        #[zbus(out_args("valid"))]
        fn verify(key_id: Vec<u8>, mechanism: u32, params: MechanismParams, data: Vec<u8>,
            signature: Vec<u8>) -> bool
        {
            let signing = Signing::from_ckm(mechanism, &params)?;
            call.verify(&key_id, signing, data, signature).await
        }

        #[zbus(out_args("plaintext"))]
        fn decrypt(key_id: Vec<u8>, mechanism: u32, params: MechanismParams,
            ciphertext: Vec<u8>) -> Vec<u8>
        {
            let enc = Encryption::from_ckm(mechanism, &params)?;
            let plaintext = call.decrypt(&key_id, &enc, &ciphertext).await?;
            // zbus needs an owned Vec to send; it is the caller's plaintext.
            Ok(plaintext.to_vec())
        }

        #[zbus(out_args("ciphertext"))]
        fn encrypt(key_id: Vec<u8>, mechanism: u32, params: MechanismParams,
            plaintext: Vec<u8> as Zeroizing) -> Vec<u8>
        {
            let enc = Encryption::from_ckm(mechanism, &params)?;
            call.encrypt(&key_id, &enc, &plaintext).await
        }

        #[zbus(out_args("key"))]
        fn generate_key_pair(bits: u32, id: Vec<u8>, label: String) -> KeyPairInfo {
            call.new_key_pair(NewKey::Generate { bits }, &id, &label).await
        }

        /// An EC key pair on the token; `curve` 1 (P-256), 2 (P-384) or 3
        /// (Ed25519), as `+CKGENEC` numbers them.
        #[zbus(out_args("key"))]
        fn generate_ec_key_pair(curve: u32, id: Vec<u8>, label: String) -> EcKeyPairInfo {
            let curve = Curve::from_number(u64::from(curve)).ok_or_else(|| {
                ck(
                    CkRv::CURVE_NOT_SUPPORTED,
                    "curves are 1 (P-256), 2 (P-384), 3 (Ed25519)",
                )
            })?;
            call.generate_ec_key_pair(curve, &id, &label).await
        }

        /// `CKM_ECDH1_DERIVE`'s private step: Z for the peer's point.
        #[zbus(out_args("secret"))]
        fn derive(key_id: Vec<u8>, mechanism: u32, peer_point: Vec<u8>) -> Vec<u8> {
            if mechanism != mechanism::ckm::ECDH1_DERIVE {
                return Err(ck(CkRv::MECHANISM_INVALID, "only CKM_ECDH1_DERIVE derives"));
            }
            let z = call.derive(&key_id, &peer_point).await?;
            // zbus needs an owned Vec to send; it is the caller's secret.
            Ok(z.to_vec())
        }

        #[zbus(out_args("statement"))]
        fn attest_key(key_id: Vec<u8>, nonce: Vec<u8>) -> Vec<u8> {
            call.attest(&key_id, &nonce).await
        }

        #[zbus(out_args("key"))]
        // A private key: wiped when this call is done with it.
        fn import_key(id: Vec<u8>, label: String, private_key: Vec<u8> as Zeroizing)
            -> KeyPairInfo
        {
            let how = NewKey::Import { pkcs8: &private_key };
            call.new_key_pair(how, &id, &label).await
        }

        /// As `ImportKey`, for an EC key (PKCS#8 of P-256, P-384 or
        /// Ed25519); answered as `GenerateEcKeyPair` is.
        #[zbus(out_args("key"))]
        fn import_ec_key(id: Vec<u8>, label: String, private_key: Vec<u8> as Zeroizing)
            -> EcKeyPairInfo
        {
            call.import_ec_key(&id, &label, &private_key).await
        }

        fn import_certificate(id: Vec<u8>, label: String, certificate: Vec<u8>) {
            call.put_certificate(&id, &label, &certificate).await
        }

        fn import_data(id: Vec<u8>, label: String, application: String, object_id: Vec<u8>,
            value: Vec<u8>)
        {
            let object = DataObject {
                id,
                label,
                application,
                oid: object_id,
                value,
            };
            call.put_data(object).await
        }

        fn delete_object(class: u32, id: Vec<u8>) {
            call.delete(object_class(class)?, &id).await
        }

        #[zbus(out_args("rewrapped"))]
        fn rewrap(key_id: Vec<u8>, in_hash: u32, ciphertext: Vec<u8>, out_hash: u32,
            public_key: Vec<u8>) -> Vec<u8>
        {
            call.rewrap(&key_id, in_hash, &ciphertext, out_hash, &public_key).await
        }
    }

    // The listings are the caller's, as the bus names it.
    methods (self, hdr, conn) {
        let caller = self.inner.caller(&hdr, conn).await?;
    } {
        #[zbus(out_args("handsets"))]
        fn list_handsets() -> Vec<HandsetStatus> {
            let (i, c) = (&self.inner, caller);
            let admin = i.access.is_admin(&c);
            // Where the phone is plugged in and which key it has are the
            // administrator's business.
            let only_admin = |v: String| if admin { v } else { String::new() };
            Ok(i.links
                .values()
                .filter(|l| i.access.may_use_handset(&c, l.name()))
                .map(|l| HandsetStatus {
                    name: l.name().to_owned(),
                    transport: only_admin(i.transport_of(l.name())),
                    fingerprint: only_admin(i.fingerprint_of(l.name())),
                    connected: i.is_connected(l.name()),
                })
                .collect())
        }

        #[zbus(out_args("tokens"))]
        fn list_tokens() -> Vec<TokenEntry> {
            let (i, c) = (&self.inner, caller);
            let mut out = Vec::new();
            for link in i.links.values() {
                // A handset that is away: its containers as last seen.
                let seen = if link.generation().is_none() {
                    i.known.away(link.name())
                } else {
                    let listed = match link.generation() {
                        Some(g) => i.listing(link, &c, g).await,
                        None => Err(away(link.name())),
                    };
                    match listed {
                        Ok(seen) => {
                            // The handset's LOGGED_IN is its session's, shared by
                            // every caller: say it only to a caller logged in.
                            use phonecsp_protocol::message::token_flags::LOGGED_IN;
                            let generation = link.generation();
                            seen.into_iter()
                                .map(|(name, flags)| {
                                    let mine = generation.is_some_and(|g| {
                                        i.logins.logged_in(&c.name, link.name(), &name, g)
                                    });
                                    let flags = flags & !LOGGED_IN | if mine { LOGGED_IN } else { 0 };
                                    (name, flags)
                                })
                                .collect()
                        }
                        Err(e) => {
                            log::debug!("listing tokens of '{}': {e}", link.name());
                            continue;
                        }
                    }
                };
                out.extend(
                    seen.into_iter()
                        .filter(|(name, _)| i.access.allowed(&c, link.name(), name))
                        .map(|(token, flags)| TokenEntry {
                            flags: flags | i.disk_flag(link.name(), &token),
                            handset: link.name().to_owned(),
                            token,
                        }),
                );
            }
            Ok(out)
        }
    }

    others {
        #[zbus(signal)]
        async fn handset_connected(emitter: &SignalEmitter<'_>, handset: &str) -> zbus::Result<()>;

        #[zbus(signal)]
        async fn handset_disconnected(emitter: &SignalEmitter<'_>, handset: &str) -> zbus::Result<()>;

        #[zbus(signal)]
        async fn tokens_changed(emitter: &SignalEmitter<'_>, handset: &str) -> zbus::Result<()>;

        #[zbus(signal)]
        async fn approval_pending(
            emitter: &SignalEmitter<'_>,
            handset: &str,
            token: &str,
            operation: &str,
            caller: &str,
        ) -> zbus::Result<()>;

        #[zbus(out_args("digest"))]
        async fn digest(&self, mechanism: u32, data: Vec<u8>) -> Result<Vec<u8>> {
            let hash = mechanism::digest_alg(mechanism)
                .ok_or_else(|| ck(CkRv::MECHANISM_INVALID, "not a digest mechanism"))?;
            check_hashed_input(&data)?;
            cpu_work(data, move |d| phonecsp::hash::digest(hash, d)).await
        }

        #[zbus(out_args("key"))]
        async fn attestation_key(&self, handset: String) -> Result<Vec<u8>> {
            self.inner.link(&handset)?;
            let key = self
                .inner
                .state
                .attestation_pinned(&handset)
                .map_err(|e| ck(CkRv::DEVICE_ERROR, e.to_string()))?;
            Ok(key.map(|k| k.to_vec()).unwrap_or_default())
        }

        #[zbus(out_args("random"))]
        async fn generate_random(
            &self,
            #[zbus(header)] hdr: Header<'_>,
            #[zbus(connection)] conn: &Connection,
            handset: String,
            length: u32,
        ) -> Result<Vec<u8>> {
            let i = &self.inner;
            let c = i.caller(&hdr, conn).await?;
            let link = i.link(&handset)?;
            if !i.access.may_use_handset(&c, &handset) {
                return Err(ck(
                    CkRv::TOKEN_NOT_PRESENT,
                    format!("handset '{handset}' is not available to uid {}", c.uid),
                ));
            }
            if length == 0 || length > MAX_RANDOM {
                return Err(ck(
                    CkRv::ARGUMENTS_BAD,
                    format!("length must be 1 to {MAX_RANDOM}"),
                ));
            }
            let mut handset = i.caller_link(link, &c, None);
            let mut out = Vec::with_capacity(length as usize);
            while out.len() < length as usize {
                let len = (length - out.len() as u32).min(MAX_RANDOM_LEN);
                let piece = handset.random(len).await?;
                if piece.len() != len as usize {
                    return Err(ck(
                        CkRv::DEVICE_ERROR,
                        format!("asked for {len} random bytes, got {}", piece.len()),
                    ));
                }
                out.extend(piece);
            }
            Ok(out)
        }

        async fn mark_disk_token(
            &self,
            #[zbus(header)] hdr: Header<'_>,
            #[zbus(connection)] conn: &Connection,
            handset: String,
            token: String,
            disk: bool,
        ) -> Result<()> {
            let i = &self.inner;
            let c = i.caller(&hdr, conn).await?;
            check_name("handset", &handset)?;
            check_name("token", &token)?;
            i.link(&handset)?;
            if !i.access.is_admin(&c) {
                return Err(ck(
                    CkRv::FUNCTION_REJECTED,
                    "only root and the daemon's user mark disk tokens",
                ));
            }
            i.disk
                .set(&handset, &token, disk)
                .map_err(|e| ck(CkRv::GENERAL_ERROR, format!("writing the disk tokens: {e}")))?;
            emit_tokens_changed(conn, &handset).await;
            Ok(())
        }

        async fn unpair(
            &self,
            #[zbus(header)] hdr: Header<'_>,
            #[zbus(connection)] conn: &Connection,
            handset: String,
        ) -> Result<()> {
            self.inner.unpair(&hdr, conn, &handset).await?;
            self.inner.link_changed(&handset);
            Ok(())
        }

        // Pair stays the last method: introspection lists the signals after
        // the methods, and busctl (systemd 252) takes a signal's argument that
        // follows a method's input argument in a nested node for an input.
        #[zbus(out_args("fingerprint"))]
        async fn pair(
            &self,
            #[zbus(header)] hdr: Header<'_>,
            #[zbus(connection)] conn: &Connection,
            handset: String,
            code: String,
        ) -> Result<String> {
            let code = Zeroizing::new(code);
            let fingerprint = self.inner.pair(&hdr, conn, &handset, &code).await?;
            self.inner.link_changed(&handset);
            Ok(fingerprint)
        }

        #[zbus(property(emits_changed_signal = "false"))]
        async fn statistics(&self) -> HashMap<String, LinkStatistics> {
            self.inner
                .links
                .values()
                .map(|l| (l.name().to_owned(), l.stats()))
                .collect()
        }

        #[zbus(property(emits_changed_signal = "const"))]
        async fn version(&self) -> String {
            format!("phonecspd {}", env!("CARGO_PKG_VERSION"))
        }
    }
}

/// An object class number (`CKO_*`) from the bus.
fn object_class(class: u32) -> Result<ObjectClass> {
    ObjectClass::from_value(u64::from(class))
        .ok_or_else(|| ck(CkRv::ARGUMENTS_BAD, "unknown object class"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{KEY_ID, PIN, PhoneTasks, Rig, TOKEN, wait_for_state};
    use phonecsp::mechanism::ckm;
    use phonecsp_protocol::message::token_flags::LOGGED_IN;
    use std::path::Path;
    use std::time::Duration;

    /// A daemon without a bus, its one handset "phone" connected to the
    /// unit phone. Requests wait long: the machine may be loaded.
    async fn daemon() -> (Rig, Arc<Inner>) {
        let rig = Rig::new(&["phone"], Duration::from_secs(30));
        let (link, _thread) = rig.spawn(
            "phone",
            Duration::from_secs(600),
            rig.connector(PhoneTasks::default()),
        );
        wait_for_state(&link, "connected", |s| {
            matches!(s, LinkState::Connected { .. })
        })
        .await;
        let config = Config::parse("", Path::new("unit.toml")).expect("config");
        let links = BTreeMap::from([("phone".to_owned(), link)]);
        let inner = Arc::new(Inner::new(config, links, rig.state.clone()));
        (rig, inner)
    }

    fn caller(name: &str) -> Caller {
        Caller {
            name: name.into(),
            uid: 0,
            gids: Vec::new(),
            program: None,
        }
    }

    async fn sign(call: &Call<'_>) -> Result<Vec<u8>> {
        let none = MechanismParams::default();
        let signing = Signing::from_ckm(ckm::SHA256_RSA_PKCS, &none)?;
        call.sign(KEY_ID, signing, b"x".to_vec()).await
    }

    /// One caller's Logout must never end another's login, whatever the
    /// order in which their requests reach the handset.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_callers_logging_in_and_out_of_one_token_always_sign() {
        const ROUNDS: usize = 2000;
        let (_rig, inner) = daemon().await;
        let run = |name: &'static str| {
            let inner = inner.clone();
            tokio::spawn(async move {
                let call = inner.call_as(caller(name), "phone", TOKEN)?;
                for round in 0..ROUNDS {
                    call.login(PIN).await?;
                    sign(&call)
                        .await
                        .map_err(|e| ck(e.rv(), format!("{name}, round {round}: {e}")))?;
                    call.logout().await?;
                }
                Result::Ok(())
            })
        };
        let (a, b) = (run(":1.1"), run(":1.2"));
        a.await.expect("caller a").expect("caller a signs");
        b.await.expect("caller b").expect("caller b signs");
        // Both gone: the handset is logged out.
        let call = inner.call_as(caller(":1.3"), "phone", TOKEN).unwrap();
        assert_eq!(call.details().await.unwrap().flags & LOGGED_IN, 0);
    }

    /// Hashing a large input must not hold up other callers. The runtime
    /// has one thread, as a loaded one effectively does: two signs of the
    /// largest input start first, a small one after them, and the small
    /// one is answered first (before the fix it came last, behind two
    /// inline hashes of 64 MiB).
    #[tokio::test]
    async fn a_small_sign_is_not_held_up_by_large_ones() {
        let (_rig, inner) = daemon().await;
        let call = inner.call_as(caller(":1.1"), "phone", TOKEN).unwrap();
        call.login(PIN).await.unwrap();
        // The key's public half is cached from here on.
        call.key(KEY_ID).await.unwrap();
        let answered = Arc::new(Mutex::new(Vec::new()));
        let run = |what: &'static str, len: usize| {
            let (inner, answered) = (inner.clone(), answered.clone());
            tokio::spawn(async move {
                let call = inner.call_as(caller(":1.1"), "phone", TOKEN)?;
                let none = MechanismParams::default();
                let signing = Signing::from_ckm(ckm::SHA256_RSA_PKCS, &none)?;
                call.sign(KEY_ID, signing, vec![7; len]).await?;
                answered.lock().unwrap().push(what);
                Result::Ok(())
            })
        };
        let large = [
            run("large", MAX_HASHED_INPUT),
            run("large", MAX_HASHED_INPUT),
        ];
        let small = run("small", 32);
        for t in large.into_iter().chain([small]) {
            t.await.expect("task").expect("signed");
        }
        assert_eq!(*answered.lock().unwrap(), ["small", "large", "large"]);
    }

    /// When the handset says it has no login, the daemon's record goes too.
    #[tokio::test]
    async fn a_login_the_handset_forgot_is_not_reported() {
        let (rig, inner) = daemon().await;
        let call = inner.call_as(caller(":1.1"), "phone", TOKEN).unwrap();
        call.login(PIN).await.unwrap();
        sign(&call).await.unwrap();
        assert!(call.details().await.unwrap().logged_in);
        // The login ends on the phone (its owner logged out there).
        rig.token.lock().unwrap().logged_in = false;
        assert_eq!(
            sign(&call).await.unwrap_err().rv(),
            CkRv::USER_NOT_LOGGED_IN
        );
        assert!(!call.details().await.unwrap().logged_in);
        // And the daemon says so itself from now on.
        assert_eq!(
            sign(&call).await.unwrap_err().to_string(),
            ck(CkRv::USER_NOT_LOGGED_IN, "log in to 'ssh' first").to_string()
        );
    }

    /// A daemon over `rig`'s state, its one handset "phone" on `link`.
    fn daemon_on(rig: &Rig, link: &LinkHandle) -> Arc<Inner> {
        let config = Config::parse("", Path::new("unit.toml")).expect("config");
        let links = BTreeMap::from([("phone".to_owned(), link.clone())]);
        Arc::new(Inner::new(config, links, rig.state.clone()))
    }

    /// [`daemon`] whose phone announces `version` for its token, with
    /// what it takes to hang the phone up.
    async fn announcing(version: Option<u64>) -> (Rig, Arc<Inner>, LinkHandle, PhoneTasks) {
        let rig = Rig::new(&["phone"], Duration::from_secs(30));
        rig.token.lock().unwrap().version = version;
        let calls = PhoneTasks::default();
        let (link, _thread) = rig.spawn(
            "phone",
            Duration::from_secs(600),
            rig.connector(calls.clone()),
        );
        wait_for_state(&link, "connected", |s| {
            matches!(s, LinkState::Connected { .. })
        })
        .await;
        let inner = daemon_on(&rig, &link);
        (rig, inner, link, calls)
    }

    /// The phone's requests about the token since the last look.
    fn seen(rig: &Rig) -> Vec<&'static str> {
        std::mem::take(&mut rig.token.lock().unwrap().seen)
    }

    /// Hangs the phone up and waits for the next session.
    async fn reconnect(link: &LinkHandle, calls: &PhoneTasks) {
        let before = link.generation().unwrap();
        for t in calls.lock().unwrap().iter() {
            t.abort();
        }
        wait_for_state(
            link,
            "connected again",
            |s| matches!(s, LinkState::Connected { generation } if *generation > before),
        )
        .await;
    }

    /// What a PKCS#11 application reads before it signs.
    async fn read_public(inner: &Inner) -> Result<Vec<(String, u32)>> {
        let list = inner.containers("phone").await?.unwrap_or_default();
        let call = inner.call_as(caller(":1.1"), "phone", TOKEN)?;
        call.details().await?;
        call.objects().await?;
        call.attributes(ObjectClass::PublicKey, KEY_ID).await?;
        Ok(list)
    }

    const READ: [&str; 3] = ["+CKTINFO", "+CKFIND", "+CKATTR"];

    /// Issue 14, item 1: under an announced version, the token's public
    /// part is read from the phone once, and served from then on: in the
    /// same session, the next one, and by a restarted daemon; a new
    /// version is read again.
    #[tokio::test]
    async fn public_data_is_kept_across_sessions_and_restarts_under_its_version() {
        let (rig, inner, link, calls) = announcing(Some(1)).await;
        assert_eq!(read_public(&inner).await.unwrap(), [(TOKEN.to_owned(), 1)]);
        assert_eq!(seen(&rig), READ, "the container list was announced");
        read_public(&inner).await.unwrap();
        assert!(seen(&rig).is_empty());

        reconnect(&link, &calls).await;
        read_public(&inner).await.unwrap();
        assert!(seen(&rig).is_empty(), "read again after a reconnect");

        let restarted = daemon_on(&rig, &link);
        read_public(&restarted).await.unwrap();
        assert!(seen(&rig).is_empty(), "read again after a restart");

        rig.token.lock().unwrap().version = Some(2);
        reconnect(&link, &calls).await;
        read_public(&restarted).await.unwrap();
        assert_eq!(seen(&rig), READ, "a new version must be read");
    }

    /// Without an announcement (a phone of before it), each session reads
    /// for itself, once.
    #[tokio::test]
    async fn without_an_announcement_each_session_reads_once() {
        let (rig, inner, link, calls) = announcing(None).await;
        read_public(&inner).await.unwrap();
        read_public(&inner).await.unwrap();
        assert_eq!(seen(&rig), ["+CKLIST", "+CKTINFO", "+CKFIND", "+CKATTR"]);
        reconnect(&link, &calls).await;
        read_public(&inner).await.unwrap();
        assert_eq!(seen(&rig), ["+CKLIST", "+CKTINFO", "+CKFIND", "+CKATTR"]);
    }

    /// Issue 14, bad input: an announcement that does not parse, or of a
    /// later format, is no announcement: the session works, and reads
    /// from the phone (nothing kept is trusted).
    #[tokio::test]
    async fn a_malformed_or_future_announcement_is_none() {
        for raw in [
            &b"+CKANN: 1\r\n+CKANC: \"ssh\",1"[..],
            b"+CKANN: 2\r\n+CKANZ: whatever",
            b"\xff\xfe",
        ] {
            let (rig, inner, link, calls) = announcing(Some(1)).await;
            read_public(&inner).await.unwrap();
            seen(&rig);
            rig.token.lock().unwrap().raw_announcement = Some(raw.to_vec());
            reconnect(&link, &calls).await;
            let g = link.generation().unwrap();
            assert!(link.announcement(g).is_none(), "{raw:?}");
            read_public(&inner).await.unwrap();
            assert_eq!(
                seen(&rig),
                ["+CKLIST", "+CKTINFO", "+CKFIND", "+CKATTR"],
                "{raw:?}"
            );
        }
    }

    /// Issue 14, bad input: a token no longer announced (this computer's
    /// authorisation was revoked) is not served from what was kept.
    #[tokio::test]
    async fn a_revoked_token_is_not_served_from_what_was_kept() {
        let (rig, inner, link, calls) = announcing(Some(1)).await;
        read_public(&inner).await.unwrap();
        rig.token.lock().unwrap().revoked = true;
        reconnect(&link, &calls).await;
        assert_eq!(inner.containers("phone").await.unwrap(), Some(Vec::new()));
        let call = inner.call_as(caller(":1.1"), "phone", TOKEN).unwrap();
        assert_eq!(
            call.objects().await.unwrap_err().rv(),
            CkRv::TOKEN_NOT_PRESENT
        );
        assert_eq!(
            call.details().await.unwrap_err().rv(),
            CkRv::TOKEN_NOT_PRESENT
        );
    }

    /// Issue 14, bad input: a phone that announces the version it had but
    /// holds another key. The first answer that shows it (the key kept is
    /// not there) drops what was kept, in memory and on disk, and the
    /// token is read again.
    #[tokio::test]
    async fn a_phone_that_answers_otherwise_than_it_announced_is_read_again() {
        let (rig, inner, link, calls) = announcing(Some(1)).await;
        read_public(&inner).await.unwrap();
        rig.token.lock().unwrap().key_id = Some(vec![2]);
        reconnect(&link, &calls).await;
        seen(&rig);
        let call = inner.call_as(caller(":1.1"), "phone", TOKEN).unwrap();
        call.login(PIN).await.unwrap();
        assert_eq!(
            sign(&call).await.unwrap_err().rv(),
            CkRv::KEY_HANDLE_INVALID
        );
        let path = inner.public_store.path("phone", TOKEN);
        assert!(!path.exists(), "the file that was kept is still there");
        let keys = call.objects().await.unwrap().keys;
        assert_eq!(
            keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
            [vec![2]]
        );
        assert_eq!(seen(&rig), ["+CKLOGIN", "+CKSIGN", "+CKFIND", "+CKATTR"]);
    }

    /// Issue 14, item 2: Logout answers at once, even while the link is
    /// busy, and still reaches the phone before the caller's next request.
    /// (A Login next would make it unneeded, and it would be left out:
    /// see [`Logins::may_log_out`].)
    #[tokio::test]
    async fn logout_does_not_wait_for_the_phone_and_keeps_its_place() {
        let (rig, inner, link, _calls) = announcing(None).await;
        let call = inner.call_as(caller(":1.1"), "phone", TOKEN).unwrap();
        call.login(PIN).await.unwrap();
        seen(&rig);
        // Another caller holds the link for a while.
        let busy = {
            let link = link.clone();
            tokio::spawn(async move {
                let len = crate::testing::SLOW_LEN;
                link.call(":1.2", phonecsp_protocol::Request::GenerateRandom { len })
                    .await
            })
        };
        tokio::time::sleep(crate::testing::SLOW / 4).await;
        let started = std::time::Instant::now();
        call.logout().await.unwrap();
        assert!(
            started.elapsed() < crate::testing::SLOW / 2,
            "Logout waited {:?}",
            started.elapsed()
        );
        let next = phonecsp_protocol::Request::GenerateRandom { len: 1 };
        link.call(":1.1", next).await.unwrap();
        busy.await.unwrap().unwrap();
        assert_eq!(seen(&rig), ["+CKRAND", "+CKLOGOUT", "+CKRAND"]);
        assert!(!rig.token.lock().unwrap().logged_in);
    }
}
