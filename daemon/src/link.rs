//! One task per handset link. It opens the transport, runs the Noise
//! handshake with the pinned key, and then serves requests from every
//! caller one at a time (as a modem handles AT), choosing the next request
//! round-robin across callers so that one busy caller cannot starve the
//! rest. It watches an idle link for its end and probes it, reconnects
//! with back-off, and while the handset is away every call fails at once
//! instead of waiting.
//!
//! Each task runs on an OS thread of its own, with its own single-threaded
//! runtime: a transport syscall that blocks in the kernel (a wedged
//! Bluetooth stack can hold RFCOMM locks forever) then stalls that handset
//! only, never the D-Bus service. Callers notice such a stall through the
//! task's progress clock and give up instead of waiting forever.

use crate::state::State;
use phonecsp::{Error, LinkStatistics};
use phonecsp_protocol::announce::Announcement;
use phonecsp_protocol::at::cme;
use phonecsp_protocol::pake::AnyPairingCode;
use phonecsp_protocol::{CkRv, HostLink, LinkError, Reply, Request};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch};

pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}
pub type BoxStream = Box<dyn ByteStream>;

type Link = HostLink<ReadHalf<BoxStream>, WriteHalf<BoxStream>>;

/// Opens the transport (a serial line, an RFCOMM socket, a test pipe).
pub type Connector =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<BoxStream>> + Send>> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkState {
    /// Session up. The generation changes with every new session, since
    /// the handset forgets logins when a session ends.
    Connected { generation: u64 },
    /// The transport answers but no handset key is pinned: pair first.
    Unpaired,
    /// Not reachable (or refused our key); retrying.
    Away { reason: String },
}

#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub name: String,
    pub host_name: String,
    pub request_timeout: Duration,
    pub health_interval: Duration,
    pub max_backoff: Duration,
}

/// Decides, when a request's turn comes, whether it is still wanted in the
/// session of that generation: a decision taken before queueing could be
/// stale by then (see [`LinkHandle::call_if`]).
pub type StillWanted = Box<dyn FnOnce(u64) -> bool + Send>;

/// A request to send only if it is still wanted when the link task comes
/// to it, in between two other requests ([`LinkHandle::call_if`],
/// [`LinkHandle::queue_if`]).
pub struct IfWanted {
    pub request: Request,
    /// Asked with the link's session (generation) at the request's turn.
    pub wanted: StillWanted,
}

impl IfWanted {
    pub fn new(request: Request, wanted: impl FnOnce(u64) -> bool + Send + 'static) -> IfWanted {
        IfWanted {
            request,
            wanted: Box::new(wanted),
        }
    }
}

enum Op {
    /// A request, whether it is still wanted, and the program it is for.
    Call(Request, Option<StillWanted>, Option<String>),
    Pair(AnyPairingCode),
    Unpair,
}

enum Outcome {
    Reply(Reply),
    /// A conditional request that was no longer wanted.
    Dropped,
    Paired([u8; 32]),
    Unpaired,
}

struct Job {
    caller: String,
    op: Op,
    reply: oneshot::Sender<Result<Outcome, Error>>,
}

/// Time beyond the steps' own bounds that a link task may spend between
/// two marks of progress: local file I/O (pinning a key), logging, thread
/// scheduling on a loaded machine.
const PROGRESS_SLACK: Duration = Duration::from_secs(5);

/// How long a link task may go without progress before callers call it
/// stuck. Every step the task takes between two marks is bounded by
/// `request_timeout`, except opening the link with a session, which is two
/// such steps (the transport with `ATE0`/`+CKVER`, then the handshake), as
/// is pairing from scratch (open, then the pairing exchange). A task quiet
/// for longer than that plus [`PROGRESS_SLACK`] is not waiting on its
/// handset any more: it is blocked in a syscall that will not return.
pub fn stuck_after(request_timeout: Duration) -> Duration {
    request_timeout
        .saturating_mul(2)
        .saturating_add(PROGRESS_SLACK)
}

/// A link task's progress clock, shared with its callers.
struct Progress {
    origin: Instant,
    /// Milliseconds from `origin` to the task's last mark of progress, or
    /// [`Progress::WAITING`] while it waits for work (and so takes a new
    /// job at once).
    last: AtomicU64,
}

impl Progress {
    const WAITING: u64 = u64::MAX;

    fn new() -> Progress {
        let p = Progress {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        };
        p.mark();
        p
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(Self::WAITING - 1)
    }

    /// The task has moved on (and may be starting a step that blocks).
    fn mark(&self) {
        self.last.store(self.now(), Ordering::Relaxed);
    }

    /// The task is about to wait for work.
    fn waiting(&self) {
        self.last.store(Self::WAITING, Ordering::Relaxed);
    }

    /// How long the task has been on its current step; `None` while it
    /// waits for work.
    fn busy_for(&self) -> Option<Duration> {
        let last = self.last.load(Ordering::Relaxed);
        (last != Self::WAITING).then(|| Duration::from_millis(self.now().saturating_sub(last)))
    }
}

/// The session announcement of the session of a generation (see
/// [`LinkHandle::announcement`]).
type Announced = Arc<Mutex<(u64, Option<Arc<Announcement>>)>>;

/// The callers' side of a link.
#[derive(Clone)]
pub struct LinkHandle {
    name: String,
    tx: mpsc::Sender<Job>,
    state: watch::Receiver<LinkState>,
    announced: Announced,
    stats: Arc<Mutex<LinkStatistics>>,
    progress: Arc<Progress>,
    stuck_after: Duration,
}

fn removed(name: &str, why: &str) -> Error {
    Error::token(CkRv::DEVICE_REMOVED, format!("handset '{name}' {why}"))
}

/// Why a stuck link's handset is away.
const STUCK: &str = "not responding (its link is stuck)";

impl LinkHandle {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The link's state; a link whose task is stuck is away, whatever it
    /// last said.
    pub fn state(&self) -> LinkState {
        if self.is_stuck() {
            return LinkState::Away {
                reason: STUCK.into(),
            };
        }
        self.state.borrow().clone()
    }

    fn is_stuck(&self) -> bool {
        self.progress
            .busy_for()
            .is_some_and(|d| d > self.stuck_after)
    }

    /// The generation of the session that is up, if one is.
    pub fn generation(&self) -> Option<u64> {
        match self.state() {
            LinkState::Connected { generation } => Some(generation),
            _ => None,
        }
    }

    /// What the handset announced when session `generation` opened
    /// (docs/protocol.md section 5.9): `None` if it announced nothing, or
    /// that session is not the one up.
    pub fn announcement(&self, generation: u64) -> Option<Arc<Announcement>> {
        let a = self.announced.lock().ok()?;
        match &*a {
            (g, Some(a)) if *g == generation => Some(a.clone()),
            _ => None,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.state.clone()
    }

    pub fn stats(&self) -> LinkStatistics {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Hands a job to the link task and waits for its outcome for as long
    /// as the task keeps making progress (other callers' jobs may be ahead
    /// of this one), but no longer: a task stuck in the kernel never answers.
    async fn submit(&self, caller: &str, op: Op) -> Result<Outcome, Error> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            caller: caller.to_owned(),
            op,
            reply: tx,
        };
        let work = async {
            self.tx
                .send(job)
                .await
                .map_err(|_| removed(&self.name, "is shutting down"))?;
            rx.await.map_err(|_| removed(&self.name, "link stopped"))?
        };
        tokio::pin!(work);
        // A task waiting for work takes a job at once; one that stays
        // "waiting" with ours unanswered is as stuck as a busy one.
        let mut waiting_since: Option<Instant> = None;
        loop {
            let stalled = match self.progress.busy_for() {
                Some(d) => {
                    waiting_since = None;
                    d
                }
                None => waiting_since.get_or_insert_with(Instant::now).elapsed(),
            };
            let left = self.stuck_after.saturating_sub(stalled);
            if left.is_zero() {
                log::warn!("handset '{}' is {STUCK}", self.name);
                return Err(removed(&self.name, &format!("is {STUCK}")));
            }
            if let Ok(r) = tokio::time::timeout(left, &mut work).await {
                return r;
            }
        }
    }

    /// Sends one request. Fails at once unless a session is up.
    pub async fn call(&self, caller: &str, request: Request) -> Result<Reply, Error> {
        self.call_for(caller, request, None).await
    }

    /// Like [`LinkHandle::call`], naming the program the request is for
    /// (shown on the phone if its owner is asked; in the same frame).
    pub async fn call_for(
        &self,
        caller: &str,
        request: Request,
        program: Option<String>,
    ) -> Result<Reply, Error> {
        match self.send(caller, request, None, program).await? {
            Some(r) => Ok(r),
            None => Err(Error::from(CkRv::GENERAL_ERROR)),
        }
    }

    /// Sends `request` only if it is still wanted when its turn comes:
    /// `None` if it was not. This is how a decision about the handset's
    /// shared session (such as logging it out) stays true until the
    /// request is on the line.
    pub async fn call_if(&self, caller: &str, r: IfWanted) -> Result<Option<Reply>, Error> {
        self.send(caller, r.request, Some(r.wanted), None).await
    }

    async fn send(
        &self,
        caller: &str,
        request: Request,
        wanted: Option<StillWanted>,
        program: Option<String>,
    ) -> Result<Option<Reply>, Error> {
        match self.state() {
            LinkState::Connected { .. } => {}
            LinkState::Unpaired => {
                return Err(Error::token(
                    CkRv::TOKEN_NOT_PRESENT,
                    format!("handset '{}' is not paired", self.name),
                ));
            }
            LinkState::Away { reason } => {
                return Err(removed(&self.name, &format!("is away: {reason}")));
            }
        }
        match self
            .submit(caller, Op::Call(request, wanted, program))
            .await?
        {
            Outcome::Reply(r) => Ok(Some(r)),
            Outcome::Dropped => Ok(None),
            _ => Err(Error::from(CkRv::GENERAL_ERROR)),
        }
    }

    /// Queues `r` as `caller`'s next request, to be sent if still wanted
    /// at its turn (as [`Self::call_if`]), and returns without waiting for
    /// the handset: the request still goes before any later request of
    /// `caller`, since each caller's requests are served in the order
    /// queued. Its outcome is only logged.
    pub async fn queue_if(&self, caller: &str, r: IfWanted) -> Result<(), Error> {
        if self.generation().is_none() {
            return Err(removed(&self.name, "has no session"));
        }
        let what = r.request.name();
        let (tx, rx) = oneshot::channel();
        let job = Job {
            caller: caller.to_owned(),
            op: Op::Call(r.request, Some(r.wanted), None),
            reply: tx,
        };
        self.tx
            .send(job)
            .await
            .map_err(|_| removed(&self.name, "is shutting down"))?;
        let name = self.name.clone();
        tokio::spawn(async move {
            match rx.await {
                Ok(Ok(Outcome::Dropped)) => log::debug!("{what} to '{name}' no longer wanted"),
                Ok(Ok(_)) => log::debug!("{what} to '{name}' done"),
                Ok(Err(e)) => log::debug!("{what} to '{name}': {e}"),
                Err(_) => log::debug!("{what} to '{name}': the link stopped"),
            }
        });
        Ok(())
    }

    /// Pairs with a one-time code; returns the handset's key, now pinned.
    pub async fn pair(&self, caller: &str, code: AnyPairingCode) -> Result<[u8; 32], Error> {
        match self.submit(caller, Op::Pair(code)).await? {
            Outcome::Paired(k) => Ok(k),
            _ => Err(Error::from(CkRv::GENERAL_ERROR)),
        }
    }

    /// Forgets the pinned key and closes the session.
    pub async fn unpair(&self, caller: &str) -> Result<(), Error> {
        match self.submit(caller, Op::Unpair).await? {
            Outcome::Unpaired => Ok(()),
            _ => Err(Error::from(CkRv::GENERAL_ERROR)),
        }
    }
}

/// Requests waiting for the link, one queue per caller, served round-robin.
#[derive(Default)]
struct FairQueue {
    queues: HashMap<String, VecDeque<Job>>,
    order: VecDeque<String>,
}

impl FairQueue {
    fn push(&mut self, job: Job) {
        let q = self.queues.entry(job.caller.clone()).or_default();
        if q.is_empty() {
            self.order.push_back(job.caller.clone());
        }
        q.push_back(job);
    }

    fn pop(&mut self) -> Option<Job> {
        let caller = self.order.pop_front()?;
        let q = self.queues.get_mut(&caller)?;
        let job = q.pop_front();
        if q.is_empty() {
            self.queues.remove(&caller);
        } else {
            self.order.push_back(caller);
        }
        job
    }

    fn drain(&mut self) -> Vec<Job> {
        self.order.clear();
        self.queues.drain().flat_map(|(_, q)| q).collect()
    }
}

/// A link task's thread, to wait for at shutdown.
pub struct LinkThread {
    name: String,
    done: oneshot::Receiver<()>,
}

impl LinkThread {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits up to `grace` for the task to end (once shutdown is
    /// signalled); `false` if it did not, e.g. because its thread is stuck
    /// in the kernel. Such a thread is left behind: it must not keep the
    /// daemon from exiting.
    pub async fn finish(&mut self, grace: Duration) -> bool {
        // A dropped sender means the thread ended too (it cannot panic by
        // design, but if it did it is over all the same).
        tokio::time::timeout(grace, &mut self.done).await.is_ok()
    }
}

/// Starts a handset's link task on a thread of its own (see the module
/// documentation); fails only if the thread or its runtime cannot be made.
pub fn spawn(
    settings: LinkSettings,
    connector: Connector,
    state: Arc<State>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<(LinkHandle, LinkThread)> {
    let (tx, rx) = mpsc::channel(1024);
    let (state_tx, state_rx) = watch::channel(LinkState::Away {
        reason: "connecting".into(),
    });
    let stats = Arc::new(Mutex::new(LinkStatistics::default()));
    let progress = Arc::new(Progress::new());
    let announced: Announced = Arc::new(Mutex::new((0, None)));
    let name = settings.name.clone();
    let handle = LinkHandle {
        name: name.clone(),
        tx,
        state: state_rx,
        announced: announced.clone(),
        stats: stats.clone(),
        progress: progress.clone(),
        stuck_after: stuck_after(settings.request_timeout),
    };
    let task = LinkTask {
        settings,
        connector,
        state,
        rx,
        state_tx,
        stats,
        announced,
        base: LinkStatistics::default(),
        link: None,
        generation: 0,
        queue: FairQueue::default(),
        shutdown,
        progress,
    };
    // Current-thread: the task and whatever the transport spawns (bluer
    // runs its D-Bus connection as tasks) are driven by this thread alone.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done_tx, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("phonecspd-link".into())
        .spawn(move || {
            runtime.block_on(task.run());
            let _ = done_tx.send(());
        })?;
    Ok((handle, LinkThread { name, done }))
}

struct LinkTask {
    settings: LinkSettings,
    connector: Connector,
    state: Arc<State>,
    rx: mpsc::Receiver<Job>,
    state_tx: watch::Sender<LinkState>,
    stats: Arc<Mutex<LinkStatistics>>,
    announced: Announced,
    /// Traffic of links already closed.
    base: LinkStatistics,
    link: Option<Link>,
    generation: u64,
    queue: FairQueue,
    shutdown: watch::Receiver<bool>,
    progress: Arc<Progress>,
}

/// Resolves when an open link ends (see [`HostLink::closed`]); never
/// without a link.
async fn link_closed(link: &mut Option<Link>) -> LinkError {
    match link {
        Some(l) => l.closed().await,
        None => std::future::pending().await,
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);

impl LinkTask {
    fn set_state(&self, s: LinkState) {
        let changed = *self.state_tx.borrow() != s;
        if changed {
            match &s {
                LinkState::Connected { .. } => {
                    log::info!("handset '{}' connected", self.settings.name)
                }
                LinkState::Unpaired => {
                    log::info!("handset '{}' reachable but not paired", self.settings.name)
                }
                LinkState::Away { reason } => {
                    log::info!("handset '{}' away: {reason}", self.settings.name)
                }
            }
            self.state_tx.send_replace(s);
        }
    }

    /// Records the announcement of the session of the current generation,
    /// before the state says it is up.
    fn announce(&self, a: Option<Arc<Announcement>>) {
        if let Ok(mut g) = self.announced.lock() {
            *g = (self.generation, a);
        }
    }

    fn publish_stats(&self) {
        let cur = self.link.as_ref().map(|l| l.stats()).unwrap_or_default();
        if let Ok(mut s) = self.stats.lock() {
            *s = LinkStatistics {
                requests: self.base.requests + cur.requests,
                bytes_out: self.base.bytes_out + cur.bytes_out,
                bytes_in: self.base.bytes_in + cur.bytes_in,
            };
        }
    }

    fn drop_link(&mut self, reason: String) {
        if let Some(l) = self.link.take() {
            let s = l.stats();
            self.base.requests += s.requests;
            self.base.bytes_out += s.bytes_out;
            self.base.bytes_in += s.bytes_in;
        }
        self.publish_stats();
        self.set_state(LinkState::Away { reason });
    }

    /// Opens the transport and the link, without a session.
    fn open(&self) -> impl Future<Output = Result<Link, String>> + Send + 'static {
        let connector = self.connector.clone();
        let timeout = self.settings.request_timeout;
        async move {
            let fut = async {
                let stream = connector().await.map_err(|e| e.to_string())?;
                let (r, w) = tokio::io::split(stream);
                HostLink::open(r, w).await.map_err(|e| e.to_string())
            };
            tokio::time::timeout(timeout, fut)
                .await
                .map_err(|_| "no answer to ATE0/+CKVER".to_string())?
        }
    }

    /// Opens the link and, if a key is pinned, the session.
    async fn connect(&mut self) -> Result<(), String> {
        let mut link = self.open().await?;
        let pinned = self
            .state
            .pinned(&self.settings.name)
            .map_err(|e| e.to_string())?;
        match pinned {
            None => {
                self.link = Some(link);
                self.set_state(LinkState::Unpaired);
            }
            Some(key) => {
                let identity = self.state.identity().clone();
                let hs = tokio::time::timeout(
                    self.settings.request_timeout,
                    link.connect(&identity, &key),
                )
                .await;
                match hs {
                    Ok(Ok(())) => {}
                    Ok(Err(LinkError::Cme(_))) => {
                        return Err(
                            "the handset refused our key (unpaired or revoked there?)".into()
                        );
                    }
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(_) => return Err("no answer to the handshake".into()),
                }
                let announced = match Announcement::parse(link.announcement()) {
                    Ok(a) => a.map(Arc::new),
                    Err(e) => {
                        // Nothing is kept then: every read asks the phone.
                        log::warn!(
                            "handset '{}' announced its session in a form that does not \
                             parse ({e}); reading everything from it",
                            self.settings.name
                        );
                        None
                    }
                };
                self.link = Some(link);
                self.generation += 1;
                self.announce(announced);
                self.set_state(LinkState::Connected {
                    generation: self.generation,
                });
            }
        }
        self.publish_stats();
        Ok(())
    }

    async fn run(mut self) {
        let mut backoff = MIN_BACKOFF;
        loop {
            self.progress.mark();
            // A dropped sender counts as shutdown: its owner is gone.
            if *self.shutdown.borrow() || self.shutdown.has_changed().is_err() {
                break;
            }
            if self.link.is_none() {
                // While this attempt runs (a silent peer can hold it for a
                // whole timeout), callers hear that it runs, and why the
                // last one failed, not an old reason as if it were current.
                let last = self.state_tx.borrow().clone();
                if let LinkState::Away { reason } = last
                    && !reason.starts_with("connecting")
                {
                    // Not logged: the attempt's own outcome is.
                    let reason = format!("connecting (the last attempt: {reason})");
                    self.state_tx.send_replace(LinkState::Away { reason });
                }
                let connected = self.connect().await;
                self.progress.mark();
                match connected {
                    Ok(()) => backoff = MIN_BACKOFF,
                    Err(reason) => {
                        self.set_state(LinkState::Away { reason });
                        // Wait out the back-off, still answering callers (pairing may
                        // proceed; everything else fails at once), those queued
                        // behind the request that lost the link first.
                        let deadline = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(self.settings.max_backoff);
                        loop {
                            let job = match self.queue.pop() {
                                Some(job) => job,
                                None => {
                                    self.progress.waiting();
                                    tokio::select! {
                                        _ = tokio::time::sleep_until(deadline) => break,
                                        _ = self.shutdown.changed() => break,
                                        job = self.rx.recv() => match job {
                                            None => return,
                                            Some(job) => job,
                                        },
                                    }
                                }
                            };
                            self.progress.mark();
                            if matches!(job.op, Op::Pair(_)) {
                                self.execute(job).await;
                                if self.link.is_some() {
                                    break;
                                }
                            } else {
                                let r = removed(&self.settings.name, "is away");
                                let _ = job.reply.send(Err(r));
                            }
                        }
                        continue;
                    }
                }
            }
            let job = match self.queue.pop() {
                Some(j) => Some(j),
                None => {
                    self.progress.waiting();
                    tokio::select! {
                        job = self.rx.recv() => match job {
                            None => break,
                            Some(j) => Some(j),
                        },
                        _ = self.shutdown.changed() => None,
                        _ = tokio::time::sleep(self.settings.health_interval) => {
                            self.progress.mark();
                            self.probe().await;
                            None
                        }
                        // Nothing else reads an idle link: without this a
                        // handset that vanished would go unnoticed until the
                        // next probe.
                        e = link_closed(&mut self.link) => {
                            self.progress.mark();
                            self.drop_link(e.to_string());
                            None
                        }
                    }
                }
            };
            self.progress.mark();
            let Some(job) = job else { continue };
            // Everyone who queued meanwhile gets a fair place.
            self.queue.push(job);
            while let Ok(j) = self.rx.try_recv() {
                self.queue.push(j);
            }
            if let Some(job) = self.queue.pop() {
                self.execute(job).await;
            }
        }
        // Shutting down: the job in flight has finished; refuse the rest.
        for job in self.queue.drain() {
            let _ = job
                .reply
                .send(Err(removed(&self.settings.name, "daemon is stopping")));
        }
        self.rx.close();
        while let Ok(job) = self.rx.try_recv() {
            let _ = job
                .reply
                .send(Err(removed(&self.settings.name, "daemon is stopping")));
        }
        self.drop_link("daemon stopped".into());
    }

    async fn probe(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        let r = tokio::time::timeout(self.settings.request_timeout, link.ping()).await;
        if !matches!(r, Ok(Ok(()))) {
            self.drop_link("health probe failed".into());
        }
        self.publish_stats();
    }

    async fn execute(&mut self, job: Job) {
        let name = self.settings.name.clone();
        let result = match job.op {
            Op::Call(request, wanted, program) => {
                if wanted.is_some_and(|w| !w(self.generation)) {
                    Ok(Outcome::Dropped)
                } else {
                    // One line per round trip, for counting them by kind
                    // (never a parameter).
                    log::debug!(
                        "handset '{name}' request {} for {}",
                        request.name(),
                        job.caller
                    );
                    let program = program.as_deref();
                    self.call(request, program).await.map(Outcome::Reply)
                }
            }
            Op::Pair(code) => self.pair(code).await.map(Outcome::Paired),
            Op::Unpair => {
                let r = self
                    .state
                    .unpin(&name)
                    .map_err(|e| Error::token(CkRv::DEVICE_ERROR, e));
                if r.is_ok() {
                    self.drop_link("unpaired".into());
                }
                r.map(|()| Outcome::Unpaired)
            }
        };
        self.publish_stats();
        let _ = job.reply.send(result);
    }

    async fn call(&mut self, request: Request, program: Option<&str>) -> Result<Reply, Error> {
        let name = self.settings.name.clone();
        if !matches!(*self.state_tx.borrow(), LinkState::Connected { .. }) {
            return Err(removed(&name, "has no session"));
        }
        let Some(link) = self.link.as_mut() else {
            return Err(removed(&name, "is away"));
        };
        let what = request.name();
        let call = link.call_for(&request, program);
        match tokio::time::timeout(self.settings.request_timeout, call).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(LinkError::Token(rv))) => {
                Err(Error::token(rv, format!("handset refused {what}")))
            }
            Ok(Err(LinkError::Request(e))) => Err(Error::token(CkRv::ARGUMENTS_BAD, e)),
            Ok(Err(e @ LinkError::Unsupported(_))) => {
                Err(Error::token(CkRv::FUNCTION_NOT_SUPPORTED, e.to_string()))
            }
            Ok(Err(e)) => {
                let reason = format!("link failed during {what}: {e}");
                self.drop_link(reason.clone());
                Err(removed(&name, &reason))
            }
            Err(_) => {
                let reason = format!(
                    "no answer to {what} within {:?}",
                    self.settings.request_timeout
                );
                self.drop_link(reason.clone());
                Err(removed(&name, &reason))
            }
        }
    }

    async fn pair(&mut self, code: AnyPairingCode) -> Result<[u8; 32], Error> {
        let name = self.settings.name.clone();
        if self.link.is_none() {
            match self.open().await {
                Ok(l) => self.link = Some(l),
                Err(reason) => return Err(removed(&name, &format!("cannot be reached: {reason}"))),
            }
        }
        let identity = self.state.identity().clone();
        let host_name = self.settings.host_name.clone();
        let Some(link) = self.link.as_mut() else {
            return Err(removed(&name, "is away"));
        };
        let r = tokio::time::timeout(
            self.settings.request_timeout,
            link.pair(&identity, &code, &host_name),
        )
        .await;
        match r {
            Ok(Ok((key, handset_name))) => {
                self.state
                    .pin(&name, &key)
                    .map_err(|e| Error::token(CkRv::DEVICE_ERROR, e))?;
                log::info!(
                    "paired with handset '{name}' ('{handset_name}', key {})",
                    phonecsp_protocol::noise::fingerprint(&key)
                );
                self.generation += 1;
                // A pairing session announces nothing.
                self.announce(None);
                self.set_state(LinkState::Connected {
                    generation: self.generation,
                });
                Ok(key)
            }
            Ok(Err(LinkError::Cme(cme::NOT_ALLOWED))) => {
                self.restore().await;
                Err(Error::token(
                    CkRv::FUNCTION_REJECTED,
                    "the handset has no pairing code on offer (run `phonecsp-handset pair` there)",
                ))
            }
            Ok(Err(LinkError::Cme(_) | LinkError::Noise(_))) => {
                self.restore().await;
                Err(Error::token(
                    CkRv::FUNCTION_REJECTED,
                    "pairing failed: wrong code?",
                ))
            }
            Ok(Err(e)) => {
                let reason = format!("link failed while pairing: {e}");
                self.drop_link(reason.clone());
                Err(removed(&name, &reason))
            }
            Err(_) => {
                self.drop_link("no answer while pairing".into());
                Err(removed(&name, "did not answer while pairing"))
            }
        }
    }

    /// After a failed pairing the old session is gone: reconnect with the
    /// pinned key, if any, on the next turn of the loop.
    async fn restore(&mut self) {
        if self
            .state
            .pinned(&self.settings.name)
            .ok()
            .flatten()
            .is_some()
        {
            self.drop_link("re-establishing the session after a failed pairing".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{HANG_UP_LEN, PhoneTasks, Rig, SLOW, SLOW_LEN, wait_for_state};
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    const REQUEST_TIMEOUT: Duration = Duration::from_millis(200);

    async fn random(h: &LinkHandle, len: u32) -> Result<Reply, Error> {
        h.call("unit", Request::GenerateRandom { len }).await
    }

    /// A silent peer holds a connection attempt for a whole request
    /// timeout; meanwhile callers must not be told the previous attempt's
    /// failure as if it were the current state.
    #[tokio::test]
    async fn a_running_attempt_is_not_told_as_the_last_failure() {
        let rig = Rig::new(&["phone"], Duration::from_secs(30));
        let attempts = Arc::new(AtomicUsize::new(0));
        // Held open and never written: the peer that does not answer.
        let silent = Arc::new(Mutex::new(Vec::new()));
        let connector: Connector = {
            let (attempts, silent) = (attempts.clone(), silent.clone());
            Arc::new(move || {
                let n = attempts.fetch_add(1, Ordering::SeqCst);
                let (host_end, device_end) = tokio::io::duplex(64);
                if let Ok(mut s) = silent.lock() {
                    s.push(device_end);
                }
                Box::pin(async move {
                    if n == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
                    }
                    Ok(Box::new(host_end) as BoxStream)
                })
            })
        };
        let (link, _thread) = rig.spawn("phone", Duration::from_secs(600), connector);
        wait_for_state(
            &link,
            "away after the first attempt",
            |s| matches!(s, LinkState::Away { reason } if reason.contains("not found")),
        )
        .await;
        wait_for_state(
            &link,
            "connecting again",
            |s| matches!(s, LinkState::Away { reason } if reason.starts_with("connecting")),
        )
        .await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        let e = link
            .call("caller", Request::ListContainers)
            .await
            .unwrap_err();
        assert!(
            e.to_string().contains("connecting (the last attempt"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn an_idle_link_that_ends_is_noticed_at_once() {
        let rig = Rig::new(&["phone"], REQUEST_TIMEOUT);
        let calls = PhoneTasks::default();
        // No probe for the length of the test: only reading the idle link
        // can notice.
        let (h, mut thread) = rig.spawn(
            "phone",
            Duration::from_secs(600),
            rig.connector(calls.clone()),
        );
        wait_for_state(&h, "connected", |s| {
            *s == LinkState::Connected { generation: 1 }
        })
        .await;
        assert_eq!(random(&h, 4).await.unwrap(), Reply::Random(vec![4; 4]));
        for t in calls.lock().unwrap().iter() {
            t.abort();
        }
        // Noticed at once (the reconnection is immediate, so "away" may be
        // too short to see): a new session long before any probe.
        wait_for_state(&h, "connected again", |s| {
            *s == LinkState::Connected { generation: 2 }
        })
        .await;
        assert_eq!(random(&h, 5).await.unwrap(), Reply::Random(vec![5; 5]));
        rig.shutdown.send_replace(true);
        assert!(thread.finish(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn callers_queued_behind_a_failing_request_hear_at_once() {
        let rig = Rig::new(&["phone"], REQUEST_TIMEOUT);
        let calls = PhoneTasks::default();
        // The phone does not come back.
        let connector: Connector = {
            let working = rig.connector(calls.clone());
            let connects = AtomicUsize::new(0);
            Arc::new(move || {
                if connects.fetch_add(1, Ordering::SeqCst) == 0 {
                    return working();
                }
                Box::pin(async { Err(std::io::Error::other("gone")) })
            })
        };
        let (h, _thread) = rig.spawn("phone", Duration::from_secs(600), connector);
        wait_for_state(&h, "connected", |s| {
            matches!(s, LinkState::Connected { .. })
        })
        .await;
        let call = |len| {
            let h = h.clone();
            tokio::spawn(async move { random(&h, len).await })
        };
        // While a slow request is on the line, two more queue up: the
        // first of them loses the link, the second is still waiting.
        let slow = call(SLOW_LEN);
        tokio::time::sleep(SLOW / 6).await;
        let fatal = call(HANG_UP_LEN);
        tokio::time::sleep(SLOW / 6).await;
        let queued = call(1);
        // (It may time out on a loaded machine: the others fail the same.)
        let _ = slow.await;
        for (what, task) in [
            ("the failing request", fatal),
            ("the queued request", queued),
        ] {
            let r = tokio::time::timeout(Duration::from_secs(3), task)
                .await
                .unwrap_or_else(|_| panic!("{what} was never answered"))
                .unwrap();
            assert_eq!(r.unwrap_err().rv(), CkRv::DEVICE_REMOVED, "{what}");
        }
    }

    #[tokio::test]
    async fn a_link_stuck_in_the_kernel_fails_its_callers_and_no_one_else() {
        let rig = Rig::new(&["stuck", "healthy"], REQUEST_TIMEOUT);
        let calls = PhoneTasks::default();
        // The first connection works; the next blocks the link's thread in
        // a "syscall" until released, as RFCOMM's close did on a wedged kernel.
        let release = Arc::new(AtomicBool::new(false));
        let connects = Arc::new(AtomicUsize::new(0));
        let stuck_connector: Connector = {
            let working = rig.connector(calls.clone());
            let (release, connects) = (release.clone(), connects.clone());
            Arc::new(move || {
                if connects.fetch_add(1, Ordering::SeqCst) == 0 {
                    return working();
                }
                let release = release.clone();
                Box::pin(async move {
                    let until = Instant::now() + Duration::from_secs(60);
                    while !release.load(Ordering::SeqCst) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(std::io::Error::other("released"))
                })
            })
        };
        let idle = Duration::from_secs(600);
        let (stuck, mut stuck_thread) = rig.spawn("stuck", idle, stuck_connector);
        let (healthy, mut healthy_thread) =
            rig.spawn("healthy", idle, rig.connector(calls.clone()));
        for h in [&stuck, &healthy] {
            wait_for_state(h, "connected", |s| matches!(s, LinkState::Connected { .. })).await;
        }
        assert_eq!(random(&stuck, 3).await.unwrap(), Reply::Random(vec![3; 3]));

        // Unpairing drops the link; reconnecting then blocks the thread.
        stuck.unpair("unit").await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while connects.load(Ordering::SeqCst) < 2 {
            assert!(Instant::now() < deadline, "no second connection");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let bound = stuck_after(REQUEST_TIMEOUT);
        let started = Instant::now();
        let ((stuck_result, waited), ()) = tokio::join!(
            async { (stuck.unpair("unit").await, started.elapsed()) },
            async {
                // The other handset keeps answering all along.
                while started.elapsed() < bound {
                    assert_eq!(
                        random(&healthy, 2).await.unwrap(),
                        Reply::Random(vec![2; 2])
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        );
        let e = stuck_result.unwrap_err();
        assert_eq!(e.rv(), CkRv::DEVICE_REMOVED);
        assert!(e.to_string().contains("'stuck' is not responding"), "{e}");
        assert!(waited <= bound + Duration::from_secs(2), "{waited:?}");
        assert!(
            waited + Duration::from_secs(1) >= bound,
            "gave up early: {waited:?}"
        );

        // From now on its callers hear at once.
        assert!(matches!(stuck.state(), LinkState::Away { reason } if reason.contains("stuck")));
        let t = Instant::now();
        assert_eq!(
            random(&stuck, 1).await.unwrap_err().rv(),
            CkRv::DEVICE_REMOVED
        );
        assert!(stuck.unpair("unit").await.is_err());
        assert!(t.elapsed() < Duration::from_secs(1));

        // Shutdown leaves the stuck thread behind, not the others.
        rig.shutdown.send_replace(true);
        assert!(healthy_thread.finish(Duration::from_secs(5)).await);
        assert!(!stuck_thread.finish(Duration::from_millis(200)).await);
        // Once the syscall returns, that thread ends too.
        release.store(true, Ordering::SeqCst);
        assert!(stuck_thread.finish(Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn a_conditional_request_is_sent_only_if_wanted_at_its_turn() {
        let rig = Rig::new(&["phone"], REQUEST_TIMEOUT);
        let (h, _thread) = rig.spawn(
            "phone",
            Duration::from_secs(600),
            rig.connector(PhoneTasks::default()),
        );
        wait_for_state(&h, "connected", |s| {
            *s == LinkState::Connected { generation: 1 }
        })
        .await;
        let request = || Request::GenerateRandom { len: 2 };
        let asked = Arc::new(Mutex::new(Vec::new()));
        let record = |want: bool| {
            let asked = asked.clone();
            move |generation| {
                asked.lock().unwrap().push(generation);
                want
            }
        };
        let before = h.stats().requests;
        assert_eq!(
            h.call_if("unit", IfWanted::new(request(), record(false)))
                .await
                .unwrap(),
            None
        );
        assert_eq!(h.stats().requests, before, "an unwanted request was sent");
        assert_eq!(
            h.call_if("unit", IfWanted::new(request(), record(true)))
                .await
                .unwrap(),
            Some(Reply::Random(vec![2; 2]))
        );
        // Asked with the session's generation, once each.
        assert_eq!(*asked.lock().unwrap(), [1, 1]);
    }

    fn job(caller: &str) -> (Job, oneshot::Receiver<Result<Outcome, Error>>) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                caller: caller.into(),
                op: Op::Unpair,
                reply: tx,
            },
            rx,
        )
    }

    #[test]
    fn fair_queue_alternates_between_callers() {
        let mut q = FairQueue::default();
        for c in ["a", "a", "a", "b", "c", "b"] {
            q.push(job(c).0);
        }
        let order: Vec<String> = std::iter::from_fn(|| q.pop().map(|j| j.caller)).collect();
        assert_eq!(order, ["a", "b", "c", "a", "b", "a"]);
        assert!(q.pop().is_none());
    }
}
