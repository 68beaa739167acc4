//! The module's state and every PKCS#11 operation, in safe Rust: slots
//! (one per (handset, token) the daemon lets this user see, kept for the
//! life of the process, with IDs derived from the names so they are the
//! same in every process, see `slot_id.rs`), sessions, object
//! handles, login state and the sign/verify/encrypt/decrypt/digest
//! operations. `ffi.rs` calls these and only converts pointers. Tokens,
//! objects and private-key operations are asked of a [`Backend`]: the
//! daemon in the shipped module, an in-memory fake in the unit tests.
//!
//! Locking: the global state is an `RwLock<Option<Arc<Module>>>` held only
//! to clone the `Arc`; inside, each map has its own short-held `Mutex`, and a
//! session's own mutex is held for the length of an operation on it, D-Bus
//! call included, so that different sessions run in parallel.
//!
//! Fork: the pid is remembered at `C_Initialize`; in any other process every
//! call answers `CKR_CRYPTOKI_NOT_INITIALIZED`, and a new `C_Initialize`
//! there forgets (never drops) the parent's state, whose runtime threads do
//! not exist in the child.

use crate::token_filter::TokenFilter;
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Once, RwLock, RwLockWriteGuard};
use std::time::Duration;

use cryptoki_sys::*;
use phonecsp::TokenEntry;
use phonecsp::hash::Hasher;
use phonecsp::local;
use phonecsp::local::PublicKey;
use phonecsp_protocol::ck::cko;
use phonecsp_protocol::limits::{
    MAX_DATA_OBJECT_LEN, MAX_LABEL_LEN, MAX_OBJECT_ID_LEN, RSA_KEY_BITS,
};
use phonecsp_protocol::message::token_flags;
use rsa::traits::PublicKeyParts;
use zeroize::Zeroizing;

use crate::backend::{Backend, DataObject, Dbus, KeyKind, TokenName};
use crate::error::{Error, Result, fail};
use crate::mechanisms::{self, Mechanism};
use crate::objects::{self, AttrMap, Template, Value};
pub use crate::operations::{Cap, KeyUse, Out};
pub use crate::operations::{DecryptOp, DigestOp, EncryptOp, SignOp, VerifyOp};
use crate::operations::{FindOp, Kind, Operations, take_input};
use crate::registry::{ObjKey, Registry};
use crate::session_objects::{PhonePair, SessionObject, SessionObjects};
use crate::slot_id;
use crate::symmetric::{self, Direction, SymOp};

/// How often a blocking `C_WaitForSlotEvent` asks the daemon.
const POLL: Duration = Duration::from_millis(500);
/// The daemon's largest random request.
const MAX_RANDOM_CHUNK: usize = 64 * 1024;

static STATE: RwLock<Option<Arc<Module>>> = RwLock::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn pid() -> i32 {
    std::process::id() as i32
}

thread_local! {
    static FORK_GUARD: RefCell<Option<RwLockWriteGuard<'static, Option<Arc<Module>>>>> =
        const { RefCell::new(None) };
}

/// `pthread_atfork` prepare: hold the state lock across `fork()` so that the
/// child never inherits it held by a thread that does not exist there.
pub fn before_fork() {
    let g = STATE.write().unwrap_or_else(|p| p.into_inner());
    FORK_GUARD.with(|f| *f.borrow_mut() = Some(g));
}

/// `pthread_atfork` parent and child: release it again.
pub fn after_fork() {
    FORK_GUARD.with(|f| drop(f.borrow_mut().take()));
}

static ATFORK: Once = Once::new();

/// What `C_Initialize` was given.
#[derive(Debug, Default, Clone, Copy)]
pub struct InitArgs {
    /// `CKF_LIBRARY_CANT_CREATE_OS_THREADS`. Noted but not refused: the
    /// D-Bus client needs a thread of its own, and GnuTLS (through p11-kit)
    /// sets this flag for every module, so refusing would lock GnuTLS out.
    pub cant_create_threads: bool,
}

pub fn initialize(args: InitArgs, register_atfork: impl FnOnce()) -> Result<()> {
    let _ = args.cant_create_threads;
    ATFORK.call_once(register_atfork);
    install(Box::new(Dbus::default()))
}

/// Makes a module on `backend` this process's initialised one.
fn install(backend: Box<dyn Backend>) -> Result<()> {
    let mut g = STATE.write().unwrap_or_else(|p| p.into_inner());
    if let Some(m) = g.as_ref() {
        if m.pid == pid() {
            return fail(CKR_CRYPTOKI_ALREADY_INITIALIZED);
        }
        // The parent's state, inherited through fork(): its threads are
        // gone, so it is forgotten rather than dropped.
        if let Some(old) = g.take() {
            std::mem::forget(old);
        }
    }
    *g = Some(Arc::new(Module::new(backend)));
    Ok(())
}

/// The tests that initialise this process's module, or check that it is
/// not, take this lock, so that they hold under `cargo test`'s threads.
#[cfg(test)]
pub static GLOBAL: Mutex<()> = Mutex::new(());

/// `C_Initialize` on the fake handset, for the tests of the C boundary;
/// the caller holds [`GLOBAL`].
#[cfg(test)]
pub fn initialize_fake(backend: Box<dyn Backend>) -> Result<()> {
    install(backend)
}

pub fn finalize() -> Result<()> {
    let old = {
        let mut g = STATE.write().unwrap_or_else(|p| p.into_inner());
        match g.as_ref() {
            Some(m) if m.pid == pid() => g.take(),
            _ => return fail(CKR_CRYPTOKI_NOT_INITIALIZED),
        }
    };
    if let Some(m) = old {
        m.finalized.store(true, Ordering::SeqCst);
        m.closed(|_| true);
        // Dropped outside the lock; the client's runtime stops with the
        // last reference.
        drop(m);
    }
    Ok(())
}

/// The initialised module of this process.
pub fn module() -> Result<Arc<Module>> {
    let g = STATE.read().unwrap_or_else(|p| p.into_inner());
    match g.as_ref() {
        Some(m) if m.pid == pid() => Ok(Arc::clone(m)),
        _ => fail(CKR_CRYPTOKI_NOT_INITIALIZED),
    }
}

struct SlotState {
    id: CK_SLOT_ID,
    handset: String,
    token: String,
    present: bool,
    /// Presence as last told by `C_WaitForSlotEvent`.
    reported: bool,
    logged_in: bool,
    /// The security officer's login: the PUK it was made with, held (and
    /// wiped at logout) because the daemon keeps no SO login between calls
    /// and `C_InitPIN` and `C_SetPIN` need it again.
    so_puk: Option<Zeroizing<Vec<u8>>>,
    attrs: HashMap<(CK_OBJECT_CLASS, Vec<u8>), Arc<AttrMap>>,
}

struct Slots {
    list: Vec<SlotState>,
    listed_once: bool,
}

/// One session: its slot, its mode and its operations. The operations'
/// calls take it locked (see [`Module::step`]).
pub struct Session {
    slot: usize,
    rw: bool,
    ops: Operations,
}

type SessionRef = Arc<Mutex<Session>>;

/// A session as the session table holds it: its slot and mode, which never
/// change, readable without waiting for an operation in progress.
struct SessionEntry {
    slot: usize,
    rw: bool,
    session: SessionRef,
}

pub struct Module {
    pid: i32,
    finalized: AtomicBool,
    backend: Box<dyn Backend>,
    slots: Mutex<Slots>,
    sessions: Mutex<HashMap<CK_SESSION_HANDLE, SessionEntry>>,
    next_session: AtomicU64,
    objects: Mutex<Registry>,
    session_objects: Mutex<SessionObjects>,
    /// Session key pairs whose deletion on the phone failed (it was away):
    /// tried again whenever the slots are read, and at `C_Finalize`.
    orphans: Mutex<Vec<PhonePair>>,
    /// Which tokens are offered as slots (read at `C_Initialize`).
    filter: TokenFilter,
}

/// An object a handle names.
enum Found {
    /// On the phone.
    Token(ObjKey),
    /// Kept here.
    Session(Arc<AttrMap>),
}

/// Whether an error means the token went away.
fn is_gone(e: &Error) -> bool {
    matches!(e.rv(), CKR_DEVICE_REMOVED | CKR_TOKEN_NOT_PRESENT)
}

/// Copies `s` into a blank-padded fixed field, cut at a character boundary.
pub fn pad<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut end = s.len().min(N);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out[..end].copy_from_slice(&s.as_bytes()[..end]);
    out
}

const VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

impl Module {
    /// A module whose tokens are `backend`'s.
    pub fn new(backend: Box<dyn Backend>) -> Module {
        Module {
            pid: pid(),
            finalized: AtomicBool::new(false),
            backend,
            slots: Mutex::new(Slots {
                list: Vec::new(),
                listed_once: false,
            }),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
            objects: Mutex::new(Registry::default()),
            session_objects: Mutex::new(SessionObjects::default()),
            orphans: Mutex::new(Vec::new()),
            filter: TokenFilter::from_environment(),
        }
    }

    fn names(&self, slot: usize) -> Result<TokenName> {
        let s = lock(&self.slots);
        let st = s.list.get(slot).ok_or(Error::Rv(CKR_SLOT_ID_INVALID))?;
        Ok(TokenName {
            handset: st.handset.clone(),
            token: st.token.clone(),
        })
    }

    fn logged_in(&self, slot: usize) -> bool {
        lock(&self.slots)
            .list
            .get(slot)
            .is_some_and(|s| s.logged_in)
    }

    fn set_logged_in(&self, slot: usize, v: bool) {
        if let Some(s) = lock(&self.slots).list.get_mut(slot) {
            s.logged_in = v;
        }
    }

    fn so_logged_in(&self, slot: usize) -> bool {
        lock(&self.slots)
            .list
            .get(slot)
            .is_some_and(|s| s.so_puk.is_some())
    }

    fn set_so_puk(&self, slot: usize, puk: Option<Zeroizing<Vec<u8>>>) {
        if let Some(s) = lock(&self.slots).list.get_mut(slot) {
            s.so_puk = puk;
        }
    }

    fn so_puk(&self, slot: usize) -> Option<Zeroizing<Vec<u8>>> {
        lock(&self.slots)
            .list
            .get(slot)
            .and_then(|s| s.so_puk.clone())
    }

    fn forget_attrs(&self, slot: usize) {
        if let Some(s) = lock(&self.slots).list.get_mut(slot) {
            s.attrs.clear();
        }
    }

    /// The token in `slot` went away: its sessions close and its login ends.
    fn token_gone(&self, slot: usize) {
        if let Some(s) = lock(&self.slots).list.get_mut(slot) {
            s.present = false;
            s.logged_in = false;
            s.so_puk = None;
            s.attrs.clear();
        }
        let gone = self.remove_sessions(|_, e| e.slot == slot);
        self.closed(|h| gone.contains(&h));
    }

    /// Removes the sessions `which` names; their handles.
    fn remove_sessions(
        &self,
        which: impl Fn(&CK_SESSION_HANDLE, &SessionEntry) -> bool,
    ) -> Vec<CK_SESSION_HANDLE> {
        let mut gone = Vec::new();
        lock(&self.sessions).retain(|h, e| {
            let drop = which(h, e);
            if drop {
                gone.push(*h);
            }
            !drop
        });
        gone
    }

    /// The sessions `closed` names have closed: their session objects go,
    /// and the key pairs they made as session objects are deleted on the
    /// phone (or noted, to be, once it is back).
    fn closed(&self, closed: impl Fn(CK_SESSION_HANDLE) -> bool) {
        let pairs = lock(&self.session_objects).close(closed);
        let mut orphans = lock(&self.orphans);
        orphans.extend(pairs);
        let pending = std::mem::take(&mut *orphans);
        drop(orphans);
        for p in pending {
            if self.delete_pair(&p).is_err() {
                lock(&self.orphans).push(p);
            }
        }
    }

    fn delete_pair(&self, p: &PhonePair) -> Result<()> {
        let t = self.names(p.slot)?;
        match self.backend.delete_object(&t, cko::PRIVATE_KEY, &p.id) {
            // Already gone is gone.
            Err(e) if e.rv() == phonecsp_protocol::CkRv::KEY_HANDLE_INVALID => {}
            r => r?,
        }
        let mut reg = lock(&self.objects);
        for class in [CKO_PUBLIC_KEY, CKO_PRIVATE_KEY] {
            reg.remove(&ObjKey {
                slot: p.slot,
                class,
                id: p.id.clone(),
            });
        }
        drop(reg);
        self.forget_attrs(p.slot);
        Ok(())
    }

    /// Watches a daemon result for the token going away or a lost login.
    fn check<T>(&self, slot: usize, r: phonecsp::Result<T>) -> Result<T> {
        r.map_err(|e| {
            let e = Error::from(e);
            if is_gone(&e) {
                self.token_gone(slot);
                return Error::Rv(CKR_DEVICE_REMOVED);
            }
            if e.rv() == CKR_USER_NOT_LOGGED_IN {
                self.set_logged_in(slot, false);
            }
            e
        })
    }

    /// Asks the daemon which tokens are there and updates the slots. A
    /// token the daemon lists as away (it remembers the container of a
    /// handset that is not connected) is a slot without a token.
    fn refresh(&self) {
        let listed = self.backend.list_tokens();
        // The program will show no slots: the reason goes to the journal.
        match &listed {
            Ok(_) => crate::journal::listing_worked(),
            Err(e) => crate::journal::listing_failed(e),
        }
        let mut gone = Vec::new();
        {
            let mut s = lock(&self.slots);
            let first = !s.listed_once;
            s.listed_once = true;
            let mut tokens = listed.unwrap_or_default();
            tokens.retain(|t| self.filter.offers(t));
            let away = |t: &TokenEntry| t.flags & token_flags::AWAY != 0;
            for (i, st) in s.list.iter_mut().enumerate() {
                let now = tokens
                    .iter()
                    .any(|t| t.handset == st.handset && t.token == st.token && !away(t));
                if st.present && !now {
                    gone.push(i);
                }
                st.present = now;
            }
            for t in tokens {
                if !s
                    .list
                    .iter()
                    .any(|st| st.handset == t.handset && st.token == t.token)
                {
                    let taken: Vec<CK_SLOT_ID> = s.list.iter().map(|st| st.id).collect();
                    let present = !away(&t);
                    s.list.push(SlotState {
                        id: slot_id::assign(&t.handset, &t.token, &taken),
                        handset: t.handset,
                        token: t.token,
                        present,
                        reported: first && present,
                        logged_in: false,
                        so_puk: None,
                        attrs: HashMap::new(),
                    });
                }
            }
        }
        for slot in gone {
            self.token_gone(slot);
        }
        if !lock(&self.orphans).is_empty() {
            self.closed(|_| false);
        }
    }

    // ---- general -------------------------------------------------------

    pub fn slot_list(&self, present_only: bool, refresh: bool) -> Vec<CK_SLOT_ID> {
        if refresh || !lock(&self.slots).listed_once {
            self.refresh();
        }
        lock(&self.slots)
            .list
            .iter()
            .enumerate()
            .filter(|(_, s)| s.present || !present_only)
            .map(|(_, s)| s.id)
            .collect()
    }

    /// Where the slot `id` is kept. An ID not seen yet in this process is
    /// looked for among the daemon's tokens first: a program may use a
    /// slot ID it remembers right after `C_Initialize`, without listing.
    fn slot_index(&self, id: CK_SLOT_ID) -> Result<usize> {
        let find = || lock(&self.slots).list.iter().position(|s| s.id == id);
        if let Some(i) = find() {
            return Ok(i);
        }
        self.refresh();
        find().ok_or(Error::Rv(CKR_SLOT_ID_INVALID))
    }

    /// The ID of the slot kept at `i`.
    fn slot_id(&self, i: usize) -> CK_SLOT_ID {
        lock(&self.slots)
            .list
            .get(i)
            .map_or(CK_UNAVAILABLE_INFORMATION, |s| s.id)
    }

    fn require_present(&self, slot: usize) -> Result<()> {
        match lock(&self.slots).list.get(slot) {
            Some(s) if s.present => Ok(()),
            Some(_) => fail(CKR_TOKEN_NOT_PRESENT),
            None => fail(CKR_SLOT_ID_INVALID),
        }
    }

    pub fn slot_info(&self, slot: CK_SLOT_ID) -> Result<CK_SLOT_INFO> {
        let i = self.slot_index(slot)?;
        let s = lock(&self.slots);
        let st = &s.list[i];
        let mut flags = CKF_REMOVABLE_DEVICE | CKF_HW_SLOT;
        if st.present {
            flags |= CKF_TOKEN_PRESENT;
        }
        Ok(CK_SLOT_INFO {
            slotDescription: pad(&format!("phonecsp {} / {}", st.handset, st.token)),
            manufacturerID: pad("phonecsp"),
            flags,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
        })
    }

    pub fn token_info(&self, slot: CK_SLOT_ID) -> Result<CK_TOKEN_INFO> {
        let i = self.slot_index(slot)?;
        self.require_present(i)?;
        let name = self.names(i)?;
        let d = self.check(i, self.backend.token_info(&name)).map_err(|e| {
            if e.rv() == CKR_DEVICE_REMOVED {
                Error::Rv(CKR_TOKEN_NOT_PRESENT)
            } else {
                e
            }
        })?;
        let mut flags = CKF_RNG | CKF_TOKEN_INITIALIZED | CKF_USER_PIN_INITIALIZED;
        for (bit, f) in [
            (token_flags::LOGIN_REQUIRED, CKF_LOGIN_REQUIRED),
            (token_flags::PIN_LOCKED, CKF_USER_PIN_LOCKED),
            (token_flags::PIN_COUNT_LOW, CKF_USER_PIN_COUNT_LOW),
            (token_flags::PIN_FINAL_TRY, CKF_USER_PIN_FINAL_TRY),
            (token_flags::SO_PIN_LOCKED, CKF_SO_PIN_LOCKED),
            (token_flags::SO_PIN_COUNT_LOW, CKF_SO_PIN_COUNT_LOW),
            (token_flags::SO_PIN_FINAL_TRY, CKF_SO_PIN_FINAL_TRY),
            (
                token_flags::PROTECTED_PATH,
                CKF_PROTECTED_AUTHENTICATION_PATH,
            ),
        ] {
            if d.flags & bit != 0 {
                flags |= f;
            }
        }
        let (count, rw) = {
            let mut n = (0, 0);
            for e in lock(&self.sessions).values().filter(|e| e.slot == i) {
                n.0 += 1;
                if e.rw {
                    n.1 += 1;
                }
            }
            n
        };
        Ok(CK_TOKEN_INFO {
            label: pad(&name.token),
            manufacturerID: pad("phonecsp"),
            model: pad("phonecsp handset"),
            serialNumber: pad(&d.serial),
            flags,
            ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
            ulSessionCount: count,
            ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
            ulRwSessionCount: rw,
            ulMaxPinLen: CK_ULONG::from(d.max_pin),
            ulMinPinLen: CK_ULONG::from(d.min_pin),
            ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
            ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
            ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
            hardwareVersion: VERSION,
            firmwareVersion: VERSION,
            utcTime: [b' '; 16],
        })
    }

    pub fn mechanism_list(&self, slot: CK_SLOT_ID) -> Result<Vec<CK_MECHANISM_TYPE>> {
        self.slot_index(slot)?;
        Ok(mechanisms::list())
    }

    pub fn mechanism_info(
        &self,
        slot: CK_SLOT_ID,
        mech: CK_MECHANISM_TYPE,
    ) -> Result<CK_MECHANISM_INFO> {
        self.slot_index(slot)?;
        mechanisms::info(mech)
    }

    /// `CKF_DONT_BLOCK`: the first slot whose presence changed since it was
    /// last reported, or `CKR_NO_EVENT`. Otherwise the daemon is asked every
    /// half second until a slot changes or the module is finalised.
    pub fn wait_for_slot_event(&self, flags: CK_FLAGS) -> Result<CK_SLOT_ID> {
        loop {
            if self.finalized.load(Ordering::SeqCst) {
                return fail(CKR_CRYPTOKI_NOT_INITIALIZED);
            }
            self.refresh();
            {
                let mut s = lock(&self.slots);
                if let Some(st) = s.list.iter_mut().find(|st| st.present != st.reported) {
                    st.reported = st.present;
                    return Ok(st.id);
                }
            }
            if flags & CKF_DONT_BLOCK != 0 {
                return fail(CKR_NO_EVENT);
            }
            std::thread::sleep(POLL);
        }
    }

    // ---- sessions --------------------------------------------------------

    pub fn open_session(&self, slot: CK_SLOT_ID, flags: CK_FLAGS) -> Result<CK_SESSION_HANDLE> {
        let i = self.slot_index(slot)?;
        if flags & CKF_SERIAL_SESSION == 0 {
            return fail(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        self.require_present(i)?;
        // PKCS#11 5.6: the SO has only read/write sessions.
        if flags & CKF_RW_SESSION == 0 && self.so_logged_in(i) {
            return fail(CKR_SESSION_READ_WRITE_SO_EXISTS);
        }
        let h = self.next_session.fetch_add(1, Ordering::SeqCst) as CK_SESSION_HANDLE;
        let s = Session {
            slot: i,
            rw: flags & CKF_RW_SESSION != 0,
            ops: Operations::default(),
        };
        let entry = SessionEntry {
            slot: i,
            rw: s.rw,
            session: Arc::new(Mutex::new(s)),
        };
        lock(&self.sessions).insert(h, entry);
        Ok(h)
    }

    fn session(&self, h: CK_SESSION_HANDLE) -> Result<SessionRef> {
        lock(&self.sessions)
            .get(&h)
            .map(|e| Arc::clone(&e.session))
            .ok_or(Error::Rv(CKR_SESSION_HANDLE_INVALID))
    }

    /// Logs out when the last session of a slot closes, as the standard
    /// says login state ends then.
    fn logout_if_unused(&self, slot: usize) {
        let used = lock(&self.sessions).values().any(|e| e.slot == slot);
        if !used {
            self.set_so_puk(slot, None);
        }
        if !used && self.logged_in(slot) {
            self.set_logged_in(slot, false);
            if let Ok(t) = self.names(slot) {
                let _ = self.backend.logout(&t);
            }
        }
    }

    pub fn close_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let e = lock(&self.sessions)
            .remove(&h)
            .ok_or(Error::Rv(CKR_SESSION_HANDLE_INVALID))?;
        self.closed(|o| o == h);
        self.logout_if_unused(e.slot);
        Ok(())
    }

    pub fn close_all_sessions(&self, slot: CK_SLOT_ID) -> Result<()> {
        let i = self.slot_index(slot)?;
        let gone = self.remove_sessions(|_, e| e.slot == i);
        self.closed(|h| gone.contains(&h));
        self.logout_if_unused(i);
        Ok(())
    }

    pub fn session_info(&self, h: CK_SESSION_HANDLE) -> Result<CK_SESSION_INFO> {
        let s = self.session(h)?;
        let (slot, rw) = {
            let g = lock(&s);
            (g.slot, g.rw)
        };
        let user = self.logged_in(slot);
        let state = match (rw, user) {
            // An SO session is always read/write (open_session sees to it).
            (true, false) if self.so_logged_in(slot) => CKS_RW_SO_FUNCTIONS,
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        Ok(CK_SESSION_INFO {
            slotID: self.slot_id(slot),
            state,
            flags: CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 },
            ulDeviceError: 0,
        })
    }

    /// `CKU_USER` with the PIN, or with no PIN on a token whose PIN is
    /// entered on the phone (protected authentication path); `CKU_SO`
    /// with the token's PUK.
    pub fn login(
        &self,
        h: CK_SESSION_HANDLE,
        user: CK_USER_TYPE,
        pin: Option<Zeroizing<Vec<u8>>>,
    ) -> Result<()> {
        let s = self.session(h)?;
        let slot = lock(&s).slot;
        match user {
            CKU_USER => {}
            CKU_SO => return self.so_login(slot, pin),
            // Context-specific login belongs to CKA_ALWAYS_AUTHENTICATE
            // keys, and there are none.
            CKU_CONTEXT_SPECIFIC => return fail(CKR_OPERATION_NOT_INITIALIZED),
            _ => return fail(CKR_USER_TYPE_INVALID),
        }
        if self.logged_in(slot) {
            return fail(CKR_USER_ALREADY_LOGGED_IN);
        }
        if self.so_logged_in(slot) {
            return fail(CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
        }
        let t = self.names(slot)?;
        let pin = match pin {
            Some(p) => p,
            None => {
                let d = self.check(slot, self.backend.token_info(&t))?;
                if d.flags & token_flags::PROTECTED_PATH == 0 {
                    return fail(CKR_ARGUMENTS_BAD);
                }
                Zeroizing::new(Vec::new())
            }
        };
        self.check(slot, self.backend.login(&t, &pin))?;
        self.set_logged_in(slot, true);
        // The attributes read so far stay: a login changes which objects a
        // session may see (the search filters on it), not what any object
        // is, and reading them again cost a round trip each.
        Ok(())
    }

    /// The security officer's login with the PUK, as PKCS#11 5.6 orders
    /// its refusals: no read-only session of the token may be open, nor
    /// anyone logged in. The PUK is checked by the phone (a wrong one
    /// spends a try) and kept for `C_InitPIN` and `C_SetPIN`.
    fn so_login(&self, slot: usize, puk: Option<Zeroizing<Vec<u8>>>) -> Result<()> {
        if self.so_logged_in(slot) {
            return fail(CKR_USER_ALREADY_LOGGED_IN);
        }
        if self.logged_in(slot) {
            return fail(CKR_USER_ANOTHER_ALREADY_LOGGED_IN);
        }
        if lock(&self.sessions)
            .values()
            .any(|e| e.slot == slot && !e.rw)
        {
            return fail(CKR_SESSION_READ_ONLY_EXISTS);
        }
        // The PUK is never typed on the phone.
        let puk = puk.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        let t = self.names(slot)?;
        self.check(slot, self.backend.check_puk(&t, &puk))?;
        self.set_so_puk(slot, Some(puk));
        Ok(())
    }

    /// `C_InitPIN`: in a read/write SO session, a new user PIN, which
    /// also unlocks a token that wrong PINs locked.
    pub fn init_pin(&self, h: CK_SESSION_HANDLE, pin: Option<Zeroizing<Vec<u8>>>) -> Result<()> {
        let s = self.session(h)?;
        let (slot, rw) = {
            let g = lock(&s);
            (g.slot, g.rw)
        };
        let Some(puk) = self.so_puk(slot).filter(|_| rw) else {
            return fail(CKR_USER_NOT_LOGGED_IN);
        };
        let pin = pin.ok_or(Error::Rv(CKR_ARGUMENTS_BAD))?;
        let t = self.names(slot)?;
        let r = self.check(slot, self.backend.unblock(&t, &puk, &pin));
        // The PUK was right at C_Login: a refusal now means it changed
        // since (elsewhere), and this SO login is stale.
        if let Err(e) = &r
            && matches!(e.rv(), CKR_PIN_INCORRECT | CKR_PIN_LOCKED)
        {
            self.set_so_puk(slot, None);
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        r
    }

    pub fn logout(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        let s = self.session(h)?;
        let slot = lock(&s).slot;
        if self.so_logged_in(slot) {
            // The daemon keeps no SO login: forgetting the PUK ends it.
            self.set_so_puk(slot, None);
            return Ok(());
        }
        if !self.logged_in(slot) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        self.set_logged_in(slot, false);
        let t = self.names(slot)?;
        // The daemon may have dropped the login already (a reconnect).
        match self.backend.logout(&t) {
            Ok(()) => Ok(()),
            Err(e) if e.rv() == phonecsp_protocol::CkRv::USER_NOT_LOGGED_IN => Ok(()),
            Err(e) => self.check(slot, Err(e)),
        }
    }

    pub fn set_pin(&self, h: CK_SESSION_HANDLE, old: &[u8], new: &[u8]) -> Result<()> {
        let s = self.session(h)?;
        let (slot, rw) = {
            let g = lock(&s);
            (g.slot, g.rw)
        };
        if !rw {
            return fail(CKR_SESSION_READ_ONLY);
        }
        let t = self.names(slot)?;
        // In an SO session, C_SetPIN changes the SO's PIN: the PUK.
        if self.so_logged_in(slot) {
            self.check(slot, self.backend.change_puk(&t, old, new))?;
            self.set_so_puk(slot, Some(Zeroizing::new(new.to_vec())));
            return Ok(());
        }
        self.check(slot, self.backend.change_pin(&t, old, new))?;
        // The handset ended every login to the token; resume ours.
        if self.logged_in(slot) && self.backend.login(&t, new).is_err() {
            self.set_logged_in(slot, false);
        }
        Ok(())
    }

    // ---- objects ---------------------------------------------------------

    fn visible(&self, slot: usize, class: CK_OBJECT_CLASS) -> bool {
        class != CKO_PRIVATE_KEY || self.logged_in(slot)
    }

    /// Whether a session object may be seen now: a private one only while
    /// the user is logged in.
    fn visible_session(&self, slot: usize, a: &AttrMap) -> bool {
        !objects::is_true(a, CKA_PRIVATE) || self.logged_in(slot)
    }

    /// The phone object behind a handle, if the session may see it.
    fn object(&self, slot: usize, h: CK_OBJECT_HANDLE) -> Result<ObjKey> {
        let key = lock(&self.objects)
            .get(h)
            .cloned()
            .ok_or(Error::Rv(CKR_OBJECT_HANDLE_INVALID))?;
        if key.slot != slot || !self.visible(slot, key.class) {
            return fail(CKR_OBJECT_HANDLE_INVALID);
        }
        Ok(key)
    }

    /// The object behind a handle, on the phone or kept here, if the
    /// session may see it.
    fn found(&self, slot: usize, h: CK_OBJECT_HANDLE) -> Result<Found> {
        let kept = lock(&self.session_objects)
            .get(h)
            .map(|o| (o.slot, Arc::clone(&o.attrs)));
        match kept {
            Some((s, a)) if s == slot && self.visible_session(slot, &a) => Ok(Found::Session(a)),
            Some(_) => fail(CKR_OBJECT_HANDLE_INVALID),
            None => self.object(slot, h).map(Found::Token),
        }
    }

    /// A phone object's attributes as the caller sees them: a key pair
    /// made as session objects says `CKA_TOKEN` false.
    fn as_seen(&self, key: &ObjKey, a: Arc<AttrMap>) -> Arc<AttrMap> {
        if key.class == CKO_CERTIFICATE
            || lock(&self.session_objects)
                .pair_owner(key.slot, &key.id)
                .is_none()
        {
            return a;
        }
        let mut m = (*a).clone();
        m.insert(CKA_TOKEN, Value::Bytes(objects::bbool(false)));
        Arc::new(m)
    }

    fn attrs(&self, key: &ObjKey) -> Result<Arc<AttrMap>> {
        let cache_key = (key.class, key.id.clone());
        if let Some(a) = lock(&self.slots)
            .list
            .get(key.slot)
            .and_then(|s| s.attrs.get(&cache_key))
        {
            return Ok(Arc::clone(a));
        }
        let t = self.names(key.slot)?;
        let class = u32::try_from(key.class).or_else(|_| fail(CKR_OBJECT_HANDLE_INVALID))?;
        let daemon = self.check(key.slot, self.backend.attributes(&t, class, &key.id))?;
        let a = Arc::new(objects::build(key.class, &daemon));
        if let Some(s) = lock(&self.slots).list.get_mut(key.slot) {
            s.attrs.insert(cache_key, Arc::clone(&a));
        }
        Ok(a)
    }

    pub fn get_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
    ) -> Result<Arc<AttrMap>> {
        let s = self.session(h)?;
        let slot = lock(&s).slot;
        match self.found(slot, obj)? {
            Found::Token(key) => Ok(self.as_seen(&key, self.attrs(&key)?)),
            Found::Session(a) => Ok(Arc::new(objects::readable(&a))),
        }
    }

    pub fn object_size(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<CK_ULONG> {
        self.get_attributes(h, obj)?;
        Ok(CK_UNAVAILABLE_INFORMATION)
    }

    /// The phone's objects are read-only here; a session object may have
    /// its label, id and the like changed while `CKA_MODIFIABLE`.
    pub fn set_attributes(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: Template,
    ) -> Result<()> {
        let s = self.session(h)?;
        let slot = lock(&s).slot;
        let Found::Session(a) = self.found(slot, obj)? else {
            return fail(CKR_ACTION_PROHIBITED);
        };
        if !objects::is_true(&a, CKA_MODIFIABLE) {
            return fail(CKR_ACTION_PROHIBITED);
        }
        let new = Arc::new(objects::changed(&a, &template, false)?);
        if let Some(o) = lock(&self.session_objects).get_mut(obj) {
            o.attrs = new;
        }
        Ok(())
    }

    pub fn find_init(&self, h: CK_SESSION_HANDLE, template: Template) -> Result<()> {
        self.with_session(h, |s| {
            let slot = s.slot;
            s.ops.start(|| self.search(slot, &template).map(FindOp))
        })
    }

    /// The handles of the objects in `slot` that match `template` and that
    /// the session may see.
    fn search(&self, slot: usize, template: &Template) -> Result<VecDeque<CK_OBJECT_HANDLE>> {
        let t = self.names(slot)?;
        // Objects may have changed in another process since the last search.
        self.forget_attrs(slot);
        let list = self.check(slot, self.backend.list_objects(&t))?;
        let full = !objects::quick_suffices(template);
        let mut found = VecDeque::new();
        for o in list {
            let class = CK_OBJECT_CLASS::from(o.class);
            if !self.visible(slot, class) {
                continue;
            }
            let key = ObjKey {
                slot,
                class,
                id: o.id,
            };
            let quick = self.as_seen(&key, Arc::new(objects::quick(class, &key.id, &o.label)));
            if !objects::matches(&quick, template) && !full {
                continue;
            }
            if full {
                match self.attrs(&key).map(|a| self.as_seen(&key, a)) {
                    Ok(a) if objects::matches(&a, template) => {}
                    Ok(_) => continue,
                    // Deleted in between.
                    Err(e) if e.rv() == CKR_OBJECT_HANDLE_INVALID => continue,
                    Err(e) => return Err(e),
                }
            }
            found.push_back(lock(&self.objects).handle(key));
        }
        let kept = lock(&self.session_objects).on_slot(slot);
        for (h, a) in kept {
            if self.visible_session(slot, &a) && objects::matches(&objects::readable(&a), template)
            {
                found.push_back(h);
            }
        }
        Ok(found)
    }

    pub fn find(&self, h: CK_SESSION_HANDLE, max: usize) -> Result<Vec<CK_OBJECT_HANDLE>> {
        self.with_session(h, |s| {
            let FindOp(f) = s.ops.active::<FindOp>()?;
            let n = max.min(f.len());
            Ok(f.drain(..n).collect())
        })
    }

    pub fn find_final(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.with_session(h, |s| s.ops.end::<FindOp>().map(drop))
    }

    fn writable_session(&self, h: CK_SESSION_HANDLE) -> Result<usize> {
        let s = self.session(h)?;
        let g = lock(&s);
        if !g.rw {
            return fail(CKR_SESSION_READ_ONLY);
        }
        Ok(g.slot)
    }

    /// The slot and mode of a session.
    fn slot_and_mode(&self, h: CK_SESSION_HANDLE) -> Result<(usize, bool)> {
        lock(&self.sessions)
            .get(&h)
            .map(|e| (e.slot, e.rw))
            .ok_or(Error::Rv(CKR_SESSION_HANDLE_INVALID))
    }

    /// Keeps a session object made by session `h`; its handle.
    fn keep(&self, h: CK_SESSION_HANDLE, slot: usize, attrs: AttrMap) -> CK_OBJECT_HANDLE {
        let handle = lock(&self.objects).fresh();
        lock(&self.session_objects).insert(
            handle,
            SessionObject {
                slot,
                owner: h,
                attrs: Arc::new(attrs),
            },
        );
        handle
    }

    /// `C_CreateObject`: a session object unless the template says
    /// `CKA_TOKEN=TRUE`, as the standard's default is. A read-only session
    /// may make session objects; private ones need the user logged in.
    /// Token objects are X.509 certificates, stored on the handset.
    pub fn create_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let template = objects::Wiped(template);
        objects::check_shape(&template)?;
        if objects::is_token(&template)? {
            return self.create_token_object(h, &template);
        }
        let (slot, _) = self.slot_and_mode(h)?;
        let attrs = objects::from_template(&template)?;
        if objects::is_true(&attrs, CKA_PRIVATE) && !self.logged_in(slot) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        Ok(self.keep(h, slot, attrs))
    }

    /// `C_CopyObject`: a copy of a session object, changed as the template
    /// says. The phone's objects are not copyable (`CKA_COPYABLE` false),
    /// and a copy is never written to the phone.
    pub fn copy_object(
        &self,
        h: CK_SESSION_HANDLE,
        obj: CK_OBJECT_HANDLE,
        template: Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let (slot, _) = self.slot_and_mode(h)?;
        let Found::Session(a) = self.found(slot, obj)? else {
            return fail(CKR_ACTION_PROHIBITED);
        };
        if !objects::is_true(&a, CKA_COPYABLE) {
            return fail(CKR_ACTION_PROHIBITED);
        }
        let copy = objects::changed(&a, &template, true)?;
        if objects::is_true(&copy, CKA_TOKEN) {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        if objects::is_true(&copy, CKA_PRIVATE) && !self.logged_in(slot) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        Ok(self.keep(h, slot, copy))
    }

    /// Imports a private key given by its values onto the handset
    /// (`+CKIMPORT`): the phone keeps it as it keeps a generated one,
    /// marked imported (`CKA_LOCAL` false), and its public key object comes
    /// with it. The values are the caller's; they go to the phone in wiped
    /// buffers and are kept nowhere here.
    fn create_token_private_key(
        &self,
        slot: usize,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let pkcs8 = objects::private_key_pkcs8(template)?;
        self.import_private_key(slot, template, &pkcs8)
    }

    /// Sends `pkcs8` to the phone as the private key `template` names (its
    /// `CKA_ID` and `CKA_LABEL`), for `C_CreateObject` and `C_UnwrapKey`
    /// alike, and answers the handle of the key it became.
    fn import_private_key(
        &self,
        slot: usize,
        template: &Template,
        pkcs8: &[u8],
    ) -> Result<CK_OBJECT_HANDLE> {
        let id = objects::find(template, CKA_ID).unwrap_or_default();
        let label = match objects::find(template, CKA_LABEL) {
            Some(l) => {
                String::from_utf8(l.to_vec()).or_else(|_| fail(CKR_ATTRIBUTE_VALUE_INVALID))?
            }
            None => String::new(),
        };
        if !self.logged_in(slot) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        let t = self.names(slot)?;
        let kp_id = self.check(slot, self.backend.import_key(&t, id, &label, pkcs8))?;
        self.forget_attrs(slot);
        Ok(lock(&self.objects).handle(ObjKey {
            slot,
            class: CKO_PRIVATE_KEY,
            id: kp_id,
        }))
    }

    /// Stores an X.509 certificate on the handset.
    fn create_token_object(
        &self,
        h: CK_SESSION_HANDLE,
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let slot = self.writable_session(h)?;
        let class = objects::find(template, CKA_CLASS)
            .ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))
            .and_then(objects::as_ulong)?;
        match class {
            CKO_CERTIFICATE => {}
            CKO_DATA => return self.create_token_data(slot, template),
            CKO_PRIVATE_KEY => return self.create_token_private_key(slot, template),
            _ => return fail(CKR_ATTRIBUTE_VALUE_INVALID),
        }
        if let Some(t) = objects::find(template, CKA_CERTIFICATE_TYPE)
            && objects::as_ulong(t)? != CKC_X_509
        {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        let der = objects::find(template, CKA_VALUE).ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))?;
        let id = objects::find(template, CKA_ID).ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))?;
        let label = match objects::find(template, CKA_LABEL) {
            Some(l) => {
                String::from_utf8(l.to_vec()).or_else(|_| fail(CKR_ATTRIBUTE_VALUE_INVALID))?
            }
            None => String::new(),
        };
        let t = self.names(slot)?;
        self.check(slot, self.backend.put_certificate(&t, id, &label, der))?;
        self.forget_attrs(slot);
        Ok(lock(&self.objects).handle(ObjKey {
            slot,
            class: CKO_CERTIFICATE,
            id: id.to_vec(),
        }))
    }

    /// Stores a data object on the handset: checked as a session object's
    /// template is, public (a private one: `CKR_ATTRIBUTE_VALUE_INVALID`),
    /// within the phone's limits, under an id the phone's RNG picks.
    fn create_token_data(&self, slot: usize, template: &Template) -> Result<CK_OBJECT_HANDLE> {
        let a = objects::from_template(template)?;
        if objects::is_true(&a, CKA_PRIVATE) {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        let bytes = |t| match a.get(&t) {
            Some(Value::Bytes(v)) => Ok(v.clone()),
            _ => fail(CKR_TEMPLATE_INCOMPLETE),
        };
        let text = |t| {
            let v = bytes(t)?;
            if v.len() > MAX_LABEL_LEN {
                return fail(CKR_ATTRIBUTE_VALUE_INVALID);
            }
            String::from_utf8(v).or_else(|_| fail(CKR_ATTRIBUTE_VALUE_INVALID))
        };
        let (label, application) = (text(CKA_LABEL)?, text(CKA_APPLICATION)?);
        let (oid, value) = (bytes(CKA_OBJECT_ID)?, bytes(CKA_VALUE)?);
        if oid.len() > MAX_OBJECT_ID_LEN || value.len() > MAX_DATA_OBJECT_LEN {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        let t = self.names(slot)?;
        let id = self.check(slot, self.backend.random(&t.handset, 8))?;
        let d = DataObject {
            id: &id,
            label: &label,
            application: &application,
            oid: &oid,
            value: &value,
        };
        self.check(slot, self.backend.put_data(&t, &d))?;
        self.forget_attrs(slot);
        Ok(lock(&self.objects).handle(ObjKey {
            slot,
            class: CKO_DATA,
            id,
        }))
    }

    /// Destroys a session object; on the phone, deletes a data object, a
    /// certificate or a key pair (through either of its keys). A
    /// read-only session may destroy session objects only.
    pub fn destroy_object(&self, h: CK_SESSION_HANDLE, obj: CK_OBJECT_HANDLE) -> Result<()> {
        let (slot, rw) = self.slot_and_mode(h)?;
        let key = match self.found(slot, obj)? {
            Found::Session(a) => {
                if !objects::is_true(&a, CKA_DESTROYABLE) {
                    return fail(CKR_ACTION_PROHIBITED);
                }
                lock(&self.session_objects).remove(obj);
                return Ok(());
            }
            Found::Token(key) => key,
        };
        let pair = key.class != CKO_CERTIFICATE
            && lock(&self.session_objects)
                .pair_owner(slot, &key.id)
                .is_some();
        if !rw && !pair {
            return fail(CKR_SESSION_READ_ONLY);
        }
        if pair {
            lock(&self.session_objects).forget_pair(slot, &key.id);
        }
        let t = self.names(slot)?;
        // A key pair is deleted through its private key.
        let class = match key.class {
            CKO_CERTIFICATE => cko::CERTIFICATE,
            CKO_DATA => cko::DATA,
            _ => cko::PRIVATE_KEY,
        };
        self.check(slot, self.backend.delete_object(&t, class, &key.id))?;
        self.forget_attrs(slot);
        let mut reg = lock(&self.objects);
        if matches!(key.class, CKO_CERTIFICATE | CKO_DATA) {
            reg.remove(&key);
        } else {
            for class in [CKO_PUBLIC_KEY, CKO_PRIVATE_KEY] {
                reg.remove(&ObjKey {
                    class,
                    ..key.clone()
                });
            }
        }
        Ok(())
    }

    /// RSA key generation on the handset.
    pub fn generate_key_pair(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        public: Template,
        private: Template,
    ) -> Result<(CK_OBJECT_HANDLE, CK_OBJECT_HANDLE)> {
        let key_type = match mech.mechanism {
            CKM_RSA_PKCS_KEY_PAIR_GEN => CKK_RSA,
            CKM_EC_KEY_PAIR_GEN => CKK_EC,
            CKM_EC_EDWARDS_KEY_PAIR_GEN => CKK_EC_EDWARDS,
            _ => return fail(CKR_MECHANISM_INVALID),
        };
        if mech.param != mechanisms::Param::None {
            return fail(CKR_MECHANISM_PARAM_INVALID);
        }
        // The pair lives as long as its private key says: a session pair
        // (the default) is made on the phone, whose private keys never
        // leave it, and deleted there when the session closes.
        for t in [&public, &private] {
            objects::check_shape(t)?;
        }
        let token = objects::is_token(&private)?;
        let slot = if token {
            self.writable_session(h)?
        } else {
            self.slot_and_mode(h)?.0
        };
        for (t, class) in [(&public, CKO_PUBLIC_KEY), (&private, CKO_PRIVATE_KEY)] {
            if let Some(c) = objects::find(t, CKA_CLASS)
                && objects::as_ulong(c)? != class
            {
                return fail(CKR_TEMPLATE_INCONSISTENT);
            }
            if let Some(k) = objects::find(t, CKA_KEY_TYPE)
                && objects::as_ulong(k)? != key_type
            {
                return fail(CKR_TEMPLATE_INCONSISTENT);
            }
        }
        if let Some(v) = objects::find(&private, CKA_EXTRACTABLE)
            && objects::as_bool(v)?
        {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        if let Some(v) = objects::find(&private, CKA_SENSITIVE)
            && !objects::as_bool(v)?
        {
            return fail(CKR_ATTRIBUTE_VALUE_INVALID);
        }
        // EC: the curve from the public template's CKA_EC_PARAMS, which
        // PKCS#11 3.0 requires there; one this token does not generate (or
        // the other kind's: a NIST curve for EdDSA) is
        // CKR_CURVE_NOT_SUPPORTED, which 3.0 defines for C_GenerateKeyPair.
        let curve = if key_type == CKK_RSA {
            None
        } else {
            let params =
                objects::find(&public, CKA_EC_PARAMS).ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))?;
            if objects::find(&private, CKA_EC_PARAMS).is_some_and(|p| p != params) {
                return fail(CKR_TEMPLATE_INCONSISTENT);
            }
            match phonecsp_protocol::Curve::from_ec_params(params) {
                Some(c) if u64::from(c.key_type()) == key_type as u64 => Some(c),
                _ => return fail(CKR_CURVE_NOT_SUPPORTED),
            }
        };
        let kind = match curve {
            Some(curve) => KeyKind::Ec(curve),
            None => {
                let bits = objects::find(&public, CKA_MODULUS_BITS)
                    .ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))
                    .and_then(objects::as_ulong)?;
                match RSA_KEY_BITS.iter().find(|b| CK_ULONG::from(**b) == bits) {
                    Some(bits) => KeyKind::Rsa { bits: *bits },
                    None => return fail(CKR_KEY_SIZE_RANGE),
                }
            }
        };
        if let Some(e) = objects::find(&public, CKA_PUBLIC_EXPONENT)
            && curve.is_none()
        {
            let start = e.iter().position(|b| *b != 0).unwrap_or(e.len());
            if e[start..] != [1, 0, 1] {
                // The handset generates with e = 65537 only.
                return fail(CKR_ATTRIBUTE_VALUE_INVALID);
            }
        }
        let pick = |t| match (objects::find(&private, t), objects::find(&public, t)) {
            (Some(a), Some(b)) if a != b => fail(CKR_TEMPLATE_INCONSISTENT),
            (Some(a), _) | (None, Some(a)) => Ok(a.to_vec()),
            (None, None) => Ok(Vec::new()),
        };
        let id = pick(CKA_ID)?;
        let label =
            String::from_utf8(pick(CKA_LABEL)?).or_else(|_| fail(CKR_ATTRIBUTE_VALUE_INVALID))?;
        if !self.logged_in(slot) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        let t = self.names(slot)?;
        let id = self.check(slot, self.backend.generate(&t, kind, &id, &label))?;
        self.forget_attrs(slot);
        if !token {
            lock(&self.session_objects).add_pair(PhonePair {
                slot,
                id: id.clone(),
                owner: h,
            });
        }
        let mut reg = lock(&self.objects);
        let public = reg.handle(ObjKey {
            slot,
            class: CKO_PUBLIC_KEY,
            id: id.clone(),
        });
        let private = reg.handle(ObjKey {
            slot,
            class: CKO_PRIVATE_KEY,
            id,
        });
        Ok((public, private))
    }

    /// `C_UnwrapKey`: the phone decrypts the wrapped key with its private
    /// key (RSA PKCS#1 v1.5 or OAEP, as `C_Decrypt` does), and the module
    /// keeps the result as a session secret key, never sent anywhere. It
    /// is not a token object: the phone stores no secret keys.
    pub fn unwrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        objects::check_shape(&template)?;
        if objects::is_token(&template)?
            && objects::find(&template, CKA_CLASS)
                .map(objects::as_ulong)
                .transpose()?
                == Some(CKO_PRIVATE_KEY)
        {
            return self.unwrap_private_key(h, mech, unwrapping, wrapped, &template);
        }
        let (slot, _) = self.slot_and_mode(h)?;
        let enc = mechanisms::encryption(mech)?;
        let (key, public) = self
            .key_for(slot, unwrapping, &[CKO_PRIVATE_KEY], Some(CKA_UNWRAP))
            .map_err(|e| {
                if e.rv() == CKR_KEY_HANDLE_INVALID {
                    Error::Rv(CKR_UNWRAPPING_KEY_HANDLE_INVALID)
                } else {
                    e
                }
            })?;
        let secret = Self::secret_template(&template)?;
        let public = public.rsa()?;
        if wrapped.len() != public.size() {
            return fail(CKR_WRAPPED_KEY_LEN_RANGE);
        }
        let t = self.names(slot)?;
        let value = self
            .check(slot, self.backend.decrypt(&t, &key.id, &enc, wrapped))
            .map_err(|e| match e.rv() {
                CKR_ENCRYPTED_DATA_INVALID | CKR_ENCRYPTED_DATA_LEN_RANGE => {
                    Error::Rv(CKR_WRAPPED_KEY_INVALID)
                }
                _ => e,
            })?;
        if let Some(len) = objects::find(&template, CKA_VALUE_LEN)
            && objects::as_ulong(len)? != value.len() as CK_ULONG
        {
            return fail(CKR_WRAPPED_KEY_INVALID);
        }
        let mut full = objects::Wiped(secret);
        full.0.push((CKA_VALUE, value.to_vec()));
        let attrs = objects::from_template(&full).map_err(|e| match e.rv() {
            // The unwrapped value does not fit the key type.
            CKR_ATTRIBUTE_VALUE_INVALID if objects::find(&template, CKA_KEY_TYPE).is_some() => {
                Error::Rv(CKR_WRAPPED_KEY_INVALID)
            }
            _ => e,
        })?;
        drop(full);
        Ok(self.keep(h, slot, attrs))
    }

    /// `C_DeriveKey` with `CKM_ECDH1_DERIVE`: the phone does the private
    /// step (Z, the shared x-coordinate), the module checks the peer's
    /// point first and applies the KDF (`CKD_NULL`, `CKD_SHA*_KDF`), and
    /// keeps the result as a session secret key, as `C_UnwrapKey` does.
    /// The key's length is `CKA_VALUE_LEN`, or Z's (`CKD_NULL`) or the
    /// hash's.
    pub fn derive_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        base: CK_OBJECT_HANDLE,
        template: Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let (slot, _) = self.slot_and_mode(h)?;
        if mech.mechanism != CKM_ECDH1_DERIVE {
            return fail(CKR_MECHANISM_INVALID);
        }
        let mechanisms::Param::Ecdh {
            kdf,
            shared,
            public,
        } = &mech.param
        else {
            return fail(CKR_MECHANISM_PARAM_INVALID);
        };
        let kdf = local::EcdhKdf::from_ckd(*kdf).ok_or(Error::Rv(CKR_MECHANISM_PARAM_INVALID))?;
        objects::check_shape(&template)?;
        let (key, public_key) = self.key_for(slot, base, &[CKO_PRIVATE_KEY], Some(CKA_DERIVE))?;
        let PublicKey::Ec(ec) = &public_key else {
            return fail(CKR_KEY_TYPE_INCONSISTENT);
        };
        // The peer's point as a DER OCTET STRING or raw, as PKCS#11 2.40
        // allows; it must lie on the base key's curve.
        let peer = ec
            .curve
            .point_from_der(public)
            .ok_or(Error::Rv(CKR_MECHANISM_PARAM_INVALID))?;
        local::EcPublicKey::new(ec.curve, peer).or_else(|_| fail(CKR_MECHANISM_PARAM_INVALID))?;
        let secret = Self::secret_template(&template)?;
        let len = match objects::find(&template, CKA_VALUE_LEN) {
            Some(v) => usize::try_from(objects::as_ulong(v)?)
                .or_else(|_| fail(CKR_ATTRIBUTE_VALUE_INVALID))?,
            None => 0,
        };
        let t = self.names(slot)?;
        let z = self.check(slot, self.backend.derive(&t, &key.id, peer))?;
        let len = match (len, kdf) {
            (0, local::EcdhKdf::Sha(hash)) => hash.output_len(),
            (n, _) => n,
        };
        let value = local::ecdh_kdf(kdf, &z, shared, len)?;
        let mut full = objects::Wiped(secret);
        full.0.push((CKA_VALUE, value.to_vec()));
        let attrs = objects::from_template(&full)?;
        drop(full);
        Ok(self.keep(h, slot, attrs))
    }

    /// `C_UnwrapKey` into a token private key: a PKCS#8 `PrivateKeyInfo`
    /// encrypted under a session AES key with `CKM_AES_CBC_PAD`, or wrapped
    /// with RFC 5649 (`CKM_AES_KEY_WRAP_KWP`, and `CKM_AES_KEY_WRAP_PAD` as
    /// SoftHSM2 and the cryptoki crate take it), the standard's form of a
    /// wrapped private key, is opened here, and the
    /// key goes to the phone as `C_CreateObject` sends one (`+CKIMPORT`).
    /// Other mechanisms: `CKR_MECHANISM_INVALID` (the phone's RSA keys
    /// cannot unwrap onto the phone: the key would come out of the phone
    /// to go back into it).
    fn unwrap_private_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        unwrapping: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        template: &Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let slot = self.writable_session(h)?;
        if !matches!(
            mech.mechanism,
            CKM_AES_CBC_PAD | CKM_AES_KEY_WRAP_PAD | CKM_AES_KEY_WRAP_KWP
        ) {
            return fail(CKR_MECHANISM_INVALID);
        }
        let (key_type, value) = self
            .secret(slot, unwrapping, CKA_UNWRAP)
            .and_then(|k| k.ok_or(Error::Rv(CKR_UNWRAPPING_KEY_HANDLE_INVALID)))
            .map_err(|e| match e.rv() {
                CKR_KEY_HANDLE_INVALID => Error::Rv(CKR_UNWRAPPING_KEY_HANDLE_INVALID),
                _ => e,
            })?;
        if key_type != CKK_AES {
            return fail(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT);
        }
        let pkcs8 = if mech.mechanism == CKM_AES_CBC_PAD {
            let mut op =
                SymOp::new(mech, key_type, &value, Direction::Decrypt).map_err(|e| {
                    match e.rv() {
                        CKR_KEY_SIZE_RANGE => Error::Rv(CKR_UNWRAPPING_KEY_SIZE_RANGE),
                        _ => e,
                    }
                })?;
            if wrapped.is_empty() || !wrapped.len().is_multiple_of(16) {
                return fail(CKR_WRAPPED_KEY_LEN_RANGE);
            }
            op.complete(wrapped)
                .map_err(|_| Error::Rv(CKR_WRAPPED_KEY_INVALID))?
        } else {
            if mech.param != mechanisms::Param::None {
                return fail(CKR_MECHANISM_PARAM_INVALID);
            }
            symmetric::unwrap_kwp(&value, wrapped)?
        };
        // The template may name the key's type (and an EC key's curve);
        // its values are in the wrapped key, not the template.
        let key_type = objects::find(template, CKA_KEY_TYPE)
            .map(objects::as_ulong)
            .transpose()?;
        if key_type.is_some_and(|k| k != CKK_RSA && k != CKK_EC && k != CKK_EC_EDWARDS) {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        for t in [CKA_MODULUS, CKA_PRIVATE_EXPONENT, CKA_VALUE] {
            if objects::find(template, t).is_some() {
                return fail(CKR_TEMPLATE_INCONSISTENT);
            }
        }
        if let Some(v) = objects::find(template, CKA_EXTRACTABLE)
            && objects::as_bool(v)?
        {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        // A PrivateKeyInfo of some algorithm (the phone checks the rest):
        // a wrong key or IV gives bytes that are none.
        {
            use rsa::pkcs8::der::Decode;
            if phonecsp_protocol::message::MAX_PRIVATE_KEY_LEN < pkcs8.len()
                || rsa::pkcs8::PrivateKeyInfo::from_der(&pkcs8).is_err()
            {
                return fail(CKR_WRAPPED_KEY_INVALID);
            }
        }
        // The key in it must be of the type (and curve) the template names.
        let curve = match phonecsp::local::pkcs8_curve(&pkcs8) {
            Ok(curve) => curve,
            // An EC key on a curve the phone does not hold.
            Err(_) => return fail(CKR_WRAPPED_KEY_INVALID),
        };
        let found = curve.map_or(CKK_RSA, |c| CK_KEY_TYPE::from(c.key_type()));
        if key_type.is_some_and(|k| k != found)
            || objects::find(template, CKA_EC_PARAMS)
                .is_some_and(|p| curve != phonecsp_protocol::Curve::from_ec_params(p))
        {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        self.import_private_key(slot, template, &pkcs8)
            .map_err(|e| match e.rv() {
                // What the phone says of a key that is not one it holds.
                CKR_KEY_SIZE_RANGE | CKR_KEY_TYPE_INCONSISTENT => {
                    Error::Rv(CKR_WRAPPED_KEY_INVALID)
                }
                _ => e,
            })
    }

    /// The template of a secret key the module makes (unwrapped or
    /// generated), without the attributes it decides itself: a session
    /// object of class `CKO_SECRET_KEY` (given or not), with a key type.
    fn secret_template(template: &Template) -> Result<Template> {
        if objects::is_token(template)? {
            // The phone stores no secret keys.
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        if let Some(c) = objects::find(template, CKA_CLASS)
            && objects::as_ulong(c)? != CKO_SECRET_KEY
        {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        if objects::find(template, CKA_KEY_TYPE).is_none() {
            return fail(CKR_TEMPLATE_INCOMPLETE);
        }
        if objects::find(template, CKA_VALUE).is_some() {
            return fail(CKR_TEMPLATE_INCONSISTENT);
        }
        let mut t: Template = template
            .iter()
            .filter(|(a, _)| !matches!(*a, CKA_CLASS | CKA_VALUE_LEN))
            .cloned()
            .collect();
        t.push((CKA_CLASS, objects::ulong(CKO_SECRET_KEY)));
        Ok(t)
    }

    /// `C_GenerateKey`: a session AES key of `CKA_VALUE_LEN` bytes, from
    /// the phone's random number generator (the token's RNG).
    pub fn generate_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        template: Template,
    ) -> Result<CK_OBJECT_HANDLE> {
        let (slot, _) = self.slot_and_mode(h)?;
        if mech.mechanism != CKM_AES_KEY_GEN {
            return fail(CKR_MECHANISM_INVALID);
        }
        if mech.param != mechanisms::Param::None {
            return fail(CKR_MECHANISM_PARAM_INVALID);
        }
        objects::check_shape(&template)?;
        let mut template = template;
        match objects::find(&template, CKA_KEY_TYPE) {
            None => template.push((CKA_KEY_TYPE, objects::ulong(CKK_AES))),
            Some(k) if objects::as_ulong(k)? == CKK_AES => {}
            Some(_) => return fail(CKR_TEMPLATE_INCONSISTENT),
        }
        let secret = Self::secret_template(&template)?;
        let len = objects::find(&template, CKA_VALUE_LEN)
            .ok_or(Error::Rv(CKR_TEMPLATE_INCOMPLETE))
            .and_then(objects::as_ulong)?;
        let len = match len {
            16 | 24 | 32 => len as usize,
            _ => return fail(CKR_ATTRIBUTE_VALUE_INVALID),
        };
        if objects::is_private(&secret)? && !self.logged_in(slot) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        let t = self.names(slot)?;
        let value = Zeroizing::new(self.check(slot, self.backend.random(&t.handset, len as u32))?);
        let mut full = objects::Wiped(secret);
        full.0.push((CKA_VALUE, value.to_vec()));
        let mut attrs = objects::from_template(&full)?;
        drop(full);
        objects::secret_key_facts(&mut attrs, true)?;
        attrs.insert(
            CKA_KEY_GEN_MECHANISM,
            Value::Bytes(objects::ulong(CKM_AES_KEY_GEN)),
        );
        Ok(self.keep(h, slot, attrs))
    }

    /// `C_WrapKey`: a session secret key, extractable, encrypted here to
    /// a public key (RSA PKCS#1 v1.5 or OAEP).
    pub fn wrap_key(
        &self,
        h: CK_SESSION_HANDLE,
        mech: &Mechanism,
        wrapping: CK_OBJECT_HANDLE,
        obj: CK_OBJECT_HANDLE,
        cap: Cap,
    ) -> Result<Out> {
        let (slot, _) = self.slot_and_mode(h)?;
        let enc = mechanisms::encryption(mech)?;
        let public = self
            .public_for(slot, wrapping, &[CKO_PUBLIC_KEY], Some(CKA_WRAP))
            .map_err(|e| match e.rv() {
                CKR_KEY_HANDLE_INVALID => Error::Rv(CKR_WRAPPING_KEY_HANDLE_INVALID),
                _ => e,
            })?;
        let public = public.rsa()?.clone();
        let kept = lock(&self.session_objects)
            .get(obj)
            .filter(|o| o.slot == slot)
            .map(|o| Arc::clone(&o.attrs));
        let a = match kept {
            Some(a) if self.visible_session(slot, &a) => a,
            _ => return fail(CKR_KEY_HANDLE_INVALID),
        };
        if a.get(&CKA_CLASS) != Some(&Value::Bytes(objects::ulong(CKO_SECRET_KEY))) {
            return fail(CKR_KEY_NOT_WRAPPABLE);
        }
        if !objects::is_true(&a, CKA_EXTRACTABLE) {
            return fail(CKR_KEY_UNEXTRACTABLE);
        }
        let n = public.size();
        match cap {
            None => Ok(Out::Len(n)),
            Some(c) if c < n => Err(Error::BufferTooSmall { needed: n }),
            Some(_) => {
                let Some(Value::Bytes(v)) = a.get(&CKA_VALUE) else {
                    return fail(CKR_KEY_NOT_WRAPPABLE);
                };
                let wrapped =
                    local::encrypt(&public, &enc, v).map_err(|e| match Error::from(e).rv() {
                        CKR_DATA_LEN_RANGE => Error::Rv(CKR_KEY_SIZE_RANGE),
                        rv => Error::Rv(rv),
                    })?;
                Ok(Out::Data(Zeroizing::new(wrapped)))
            }
        }
    }

    pub fn generate_random(&self, h: CK_SESSION_HANDLE, len: usize) -> Result<Vec<u8>> {
        let s = self.session(h)?;
        let slot = lock(&s).slot;
        let t = self.names(slot)?;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let n = (len - out.len()).min(MAX_RANDOM_CHUNK) as u32;
            out.extend(self.check(slot, self.backend.random(&t.handset, n))?);
        }
        Ok(out)
    }

    // ---- cryptographic operations -----------------------------------------

    /// A key's public half and modulus length, for an operation.
    fn key_for(
        &self,
        slot: usize,
        obj: CK_OBJECT_HANDLE,
        classes: &[CK_OBJECT_CLASS],
        usage: Option<CK_ATTRIBUTE_TYPE>,
    ) -> Result<(ObjKey, PublicKey)> {
        let key = lock(&self.objects)
            .get(obj)
            .cloned()
            .filter(|k| k.slot == slot && classes.contains(&k.class))
            .ok_or(Error::Rv(CKR_KEY_HANDLE_INVALID))?;
        if !self.visible(slot, key.class) {
            return fail(CKR_USER_NOT_LOGGED_IN);
        }
        let a = self.attrs(&key).map_err(|e| {
            if e.rv() == CKR_OBJECT_HANDLE_INVALID {
                Error::Rv(CKR_KEY_HANDLE_INVALID)
            } else {
                e
            }
        })?;
        if let Some(usage) = usage
            && a.get(&usage) != Some(&Value::Bytes(objects::bbool(true)))
        {
            return fail(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        Ok((key, public_of(&a)?))
    }

    /// The public key for a verification or an encryption: a session
    /// public key, or the phone's.
    fn public_for(
        &self,
        slot: usize,
        obj: CK_OBJECT_HANDLE,
        classes: &[CK_OBJECT_CLASS],
        usage: Option<CK_ATTRIBUTE_TYPE>,
    ) -> Result<PublicKey> {
        let kept = lock(&self.session_objects)
            .get(obj)
            .map(|o| (o.slot, Arc::clone(&o.attrs)));
        let Some((s, a)) = kept else {
            return Ok(self.key_for(slot, obj, classes, usage)?.1);
        };
        let public = Value::Bytes(objects::ulong(CKO_PUBLIC_KEY));
        if s != slot || !self.visible_session(slot, &a) || a.get(&CKA_CLASS) != Some(&public) {
            return fail(CKR_KEY_HANDLE_INVALID);
        }
        if let Some(usage) = usage
            && !objects::is_true(&a, usage)
        {
            return fail(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        public_of(&a)
    }

    /// A session secret key `obj`'s type and value, if it is one the
    /// session may use for `usage`.
    fn secret(
        &self,
        slot: usize,
        obj: CK_OBJECT_HANDLE,
        usage: CK_ATTRIBUTE_TYPE,
    ) -> Result<Option<(CK_KEY_TYPE, Zeroizing<Vec<u8>>)>> {
        let kept = lock(&self.session_objects)
            .get(obj)
            .map(|o| (o.slot, Arc::clone(&o.attrs)));
        let Some((s, a)) = kept else {
            return Ok(None);
        };
        if a.get(&CKA_CLASS) != Some(&Value::Bytes(objects::ulong(CKO_SECRET_KEY))) {
            return Ok(None);
        }
        if s != slot || !self.visible_session(slot, &a) {
            return fail(CKR_KEY_HANDLE_INVALID);
        }
        if !objects::is_true(&a, usage) {
            return fail(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        match (a.get(&CKA_KEY_TYPE), a.get(&CKA_VALUE)) {
            (Some(Value::Bytes(t)), Some(Value::Bytes(v))) => {
                Ok(Some((objects::as_ulong(t)?, Zeroizing::new(v.clone()))))
            }
            _ => fail(CKR_KEY_HANDLE_INVALID),
        }
    }

    /// A secret key's cipher for `mech`, when `obj` is a session secret
    /// key; `None` for the phone's keys. A cipher mechanism with another
    /// key is `CKR_KEY_TYPE_INCONSISTENT`.
    fn cipher(
        &self,
        slot: usize,
        obj: CK_OBJECT_HANDLE,
        mech: &Mechanism,
        dir: Direction,
    ) -> Result<Option<SymOp>> {
        let usage = match dir {
            Direction::Encrypt => CKA_ENCRYPT,
            Direction::Decrypt => CKA_DECRYPT,
        };
        let symmetric = symmetric::key_type_for(mech.mechanism).is_some();
        match self.secret(slot, obj, usage)? {
            Some((kt, value)) if symmetric => Ok(Some(SymOp::new(mech, kt, &value, dir)?)),
            Some(_) if mechanisms::is_known(mech.mechanism) => fail(CKR_KEY_TYPE_INCONSISTENT),
            Some(_) => fail(CKR_MECHANISM_INVALID),
            None if symmetric => {
                // The phone's keys are RSA; a missing key is as invalid.
                self.object(slot, obj)
                    .map_err(|_| Error::Rv(CKR_KEY_HANDLE_INVALID))?;
                fail(CKR_KEY_TYPE_INCONSISTENT)
            }
            None => Ok(None),
        }
    }

    fn with_session<T>(
        &self,
        h: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        let s = self.session(h)?;
        let mut g = lock(&s);
        f(&mut g)
    }

    /// An `*Init` call: `make` builds the operation from the session's slot
    /// and the mechanism (see [`Operations::init`]).
    fn start<T: Kind>(
        &self,
        h: CK_SESSION_HANDLE,
        mech: Option<&Mechanism>,
        make: impl FnOnce(usize, &Mechanism) -> Result<T>,
    ) -> Result<()> {
        self.with_session(h, |s| {
            let slot = s.slot;
            s.ops.init(mech, |mech| make(slot, mech))
        })
    }

    /// One call of the operation of kind `T` in session `h` (an update, a
    /// single-part or a final call): `f` reads the caller's arguments and
    /// does the work, with the session locked throughout; whatever fails
    /// in it, a too-small buffer apart, ends the operation (PKCS#11 2.40
    /// section 5.2, see [`Operations::settle`]).
    pub fn step<T: Kind, R>(
        &self,
        h: CK_SESSION_HANDLE,
        f: impl FnOnce(&mut Session) -> Result<R>,
    ) -> Result<R> {
        self.with_session(h, |s| {
            let r = f(s);
            s.ops.settle::<T, R>(r)
        })
    }

    /// `C_SignInit`, `C_VerifyInit`, `C_EncryptInit` and `C_DecryptInit`:
    /// the mechanism is resolved first, then the key checked for the
    /// classes and the usage flag the operation needs.
    pub fn key_init(
        &self,
        h: CK_SESSION_HANDLE,
        what: KeyUse,
        mech: Option<&Mechanism>,
        obj: CK_OBJECT_HANDLE,
    ) -> Result<()> {
        let (classes, usage): (&[CK_OBJECT_CLASS], _) = match what {
            KeyUse::Sign => (&[CKO_PRIVATE_KEY], Some(CKA_SIGN)),
            // The public half of a private key verifies as well.
            KeyUse::Verify => (&[CKO_PUBLIC_KEY, CKO_PRIVATE_KEY], None),
            KeyUse::Encrypt => (&[CKO_PUBLIC_KEY], Some(CKA_ENCRYPT)),
            KeyUse::Decrypt => (&[CKO_PRIVATE_KEY], Some(CKA_DECRYPT)),
        };
        let key = |slot| self.key_for(slot, obj, classes, usage);
        let public = |slot| self.public_for(slot, obj, classes, usage);
        match what {
            KeyUse::Sign => self.start(h, mech, |slot, m| {
                let signing = mechanisms::signing(m)?;
                Ok(SignOp::new(key(slot)?, signing)?)
            }),
            KeyUse::Verify => self.start(h, mech, |slot, m| {
                let signing = mechanisms::signing(m)?;
                Ok(VerifyOp::new(public(slot)?, signing)?)
            }),
            KeyUse::Encrypt => self.start(h, mech, |slot, m| {
                if let Some(sym) = self.cipher(slot, obj, m, Direction::Encrypt)? {
                    return Ok(EncryptOp::Sym(sym));
                }
                let enc = mechanisms::encryption(m)?;
                Ok(EncryptOp::Rsa {
                    key: public(slot)?.rsa()?.clone(),
                    enc,
                })
            }),
            KeyUse::Decrypt => self.start(h, mech, |slot, m| {
                if let Some(sym) = self.cipher(slot, obj, m, Direction::Decrypt)? {
                    return Ok(DecryptOp::Sym(sym));
                }
                let enc = mechanisms::encryption(m)?;
                Ok(DecryptOp::rsa(key(slot)?, enc)?)
            }),
        }
    }

    // The calls below run inside [`Module::step`], on the locked session.

    /// `data`: `Some` for `C_Sign`, `None` for `C_SignFinal`.
    pub fn sign(&self, s: &mut Session, data: Option<&[u8]>, cap: Cap) -> Result<Out> {
        s.ops.produce(data.is_some(), (cap, 0), |op: &mut SignOp| {
            if let Some(d) = data {
                op.input.update(d)?;
            }
            let input = take_input(&mut op.input).finish()?;
            let t = self.names(op.key.slot)?;
            let sig = self.check(op.key.slot, self.backend.sign(&t, &op.key.id, &input))?;
            Ok(Zeroizing::new(sig))
        })
    }

    pub fn sign_update(&self, s: &mut Session, data: &[u8]) -> Result<()> {
        s.ops.update(|op: &mut SignOp| Ok(op.input.update(data)?))
    }

    /// `data`: `Some` for `C_Verify`, `None` for `C_VerifyFinal`.
    pub fn verify(&self, s: &mut Session, data: Option<&[u8]>, signature: &[u8]) -> Result<()> {
        let mut op = s.ops.finish::<VerifyOp>(data.is_some())?;
        if let Some(d) = data {
            op.input.update(d)?;
        }
        if signature.len() != op.key.signature_len() {
            return fail(CKR_SIGNATURE_LEN_RANGE);
        }
        if local::verify_prepared_any(&op.key, &op.input.finish()?, signature) {
            Ok(())
        } else {
            fail(CKR_SIGNATURE_INVALID)
        }
    }

    pub fn verify_update(&self, s: &mut Session, data: &[u8]) -> Result<()> {
        s.ops.update(|op: &mut VerifyOp| Ok(op.input.update(data)?))
    }

    pub fn encrypt(&self, s: &mut Session, data: &[u8], cap: Cap) -> Result<Out> {
        s.ops
            .produce(true, (cap, data.len()), |op: &mut EncryptOp| match op {
                EncryptOp::Rsa { key, enc } => Ok(Zeroizing::new(local::encrypt(key, enc, data)?)),
                EncryptOp::Sym(sym) => sym.complete(data),
            })
    }

    /// `C_EncryptUpdate`: a secret key's cipher only; RSA is single-part.
    pub fn encrypt_update(&self, s: &mut Session, data: &[u8], cap: Cap) -> Result<Out> {
        s.ops.update_out(
            cap,
            |op: &EncryptOp| match op {
                EncryptOp::Sym(sym) => Ok(sym.update_len(data.len())),
                EncryptOp::Rsa { .. } => fail(CKR_FUNCTION_NOT_SUPPORTED),
            },
            |op| match op {
                EncryptOp::Sym(sym) => sym.update(data),
                EncryptOp::Rsa { .. } => fail(CKR_FUNCTION_NOT_SUPPORTED),
            },
        )
    }

    pub fn encrypt_final(&self, s: &mut Session, cap: Cap) -> Result<Out> {
        if let EncryptOp::Rsa { .. } = s.ops.active::<EncryptOp>()? {
            return fail(CKR_FUNCTION_NOT_SUPPORTED);
        }
        s.ops
            .produce(false, (cap, 0), |op: &mut EncryptOp| match op {
                EncryptOp::Sym(sym) => sym.complete(&[]),
                EncryptOp::Rsa { .. } => fail(CKR_FUNCTION_NOT_SUPPORTED),
            })
    }

    pub fn decrypt(&self, s: &mut Session, data: &[u8], cap: Cap) -> Result<Out> {
        s.ops
            .produce(true, (cap, data.len()), |op: &mut DecryptOp| match op {
                DecryptOp::Sym(sym) => sym.complete(data),
                DecryptOp::Rsa(op) => {
                    // The retry after a too-small buffer gets what was
                    // decrypted.
                    if let Some(plain) = op.result.take() {
                        return Ok(plain);
                    }
                    if data.len() != op.len {
                        return fail(CKR_ENCRYPTED_DATA_LEN_RANGE);
                    }
                    let t = self.names(op.key.slot)?;
                    self.check(
                        op.key.slot,
                        self.backend.decrypt(&t, &op.key.id, &op.enc, data),
                    )
                }
            })
    }

    /// `C_DecryptUpdate`: a secret key's cipher only; RSA is single-part.
    pub fn decrypt_update(&self, s: &mut Session, data: &[u8], cap: Cap) -> Result<Out> {
        s.ops.update_out(
            cap,
            |op: &DecryptOp| match op {
                DecryptOp::Sym(sym) => Ok(sym.update_len(data.len())),
                DecryptOp::Rsa(_) => fail(CKR_FUNCTION_NOT_SUPPORTED),
            },
            |op| match op {
                DecryptOp::Sym(sym) => sym.update(data),
                DecryptOp::Rsa(_) => fail(CKR_FUNCTION_NOT_SUPPORTED),
            },
        )
    }

    pub fn decrypt_final(&self, s: &mut Session, cap: Cap) -> Result<Out> {
        if let DecryptOp::Rsa(_) = s.ops.active::<DecryptOp>()? {
            return fail(CKR_FUNCTION_NOT_SUPPORTED);
        }
        s.ops
            .produce(false, (cap, 0), |op: &mut DecryptOp| match op {
                DecryptOp::Sym(sym) => sym.complete(&[]),
                DecryptOp::Rsa(_) => fail(CKR_FUNCTION_NOT_SUPPORTED),
            })
    }

    pub fn digest_init(&self, h: CK_SESSION_HANDLE, mech: Option<&Mechanism>) -> Result<()> {
        self.start(h, mech, |_, mech| {
            if mech.param != mechanisms::Param::None {
                return fail(CKR_MECHANISM_PARAM_INVALID);
            }
            let hash = u32::try_from(mech.mechanism)
                .ok()
                .and_then(phonecsp::mechanism::digest_alg)
                .ok_or(Error::Rv(CKR_MECHANISM_INVALID))?;
            Ok(DigestOp {
                hasher: Hasher::new(hash),
                hash,
            })
        })
    }

    /// `data`: `Some` for `C_Digest`, `None` for `C_DigestFinal`.
    pub fn digest(&self, s: &mut Session, data: Option<&[u8]>, cap: Cap) -> Result<Out> {
        s.ops
            .produce(data.is_some(), (cap, 0), |op: &mut DigestOp| {
                let mut hasher = std::mem::replace(&mut op.hasher, Hasher::new(op.hash));
                if let Some(d) = data {
                    hasher.update(d);
                }
                Ok(Zeroizing::new(hasher.finish()))
            })
    }

    pub fn digest_update(&self, s: &mut Session, data: &[u8]) -> Result<()> {
        s.ops.update(|op: &mut DigestOp| {
            op.hasher.update(data);
            Ok(())
        })
    }

    /// Keys never leave the handset, so none can be digested.
    pub fn digest_key(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.with_session(h, |s| {
            s.ops.end::<DigestOp>()?;
            fail(CKR_KEY_INDIGESTIBLE)
        })
    }

    /// `C_SessionCancel`: ends the operations `flags` name.
    pub fn cancel(&self, h: CK_SESSION_HANDLE, flags: CK_FLAGS) -> Result<()> {
        self.with_session(h, |s| {
            s.ops.cancel(flags);
            Ok(())
        })
    }

    /// Checks the session handle, for functions that need nothing else.
    pub fn check_session(&self, h: CK_SESSION_HANDLE) -> Result<()> {
        self.session(h).map(|_| ())
    }
}

#[cfg(test)]
mod tests;

/// The public key an object's attributes hold: RSA's modulus and exponent,
/// or an EC key's parameters and point.
fn public_of(a: &AttrMap) -> Result<PublicKey> {
    let bytes = |t| match a.get(&t) {
        Some(Value::Bytes(v)) => Some(v),
        _ => None,
    };
    let mut found: Vec<(u32, &Vec<u8>)> = Vec::new();
    for t in [
        CKA_MODULUS,
        CKA_PUBLIC_EXPONENT,
        CKA_EC_PARAMS,
        CKA_EC_POINT,
    ] {
        if let Some(v) = bytes(t) {
            found.push((t as u32, v));
        }
    }
    local::any_public_key_from_attributes(found.iter().map(|(t, v)| (t, *v)))
        .or_else(|_| fail(CKR_KEY_HANDLE_INVALID))
}
