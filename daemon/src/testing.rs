//! A handset for the daemon's unit tests, served over an in-memory pipe
//! through the real link protocol, and a rig that starts link tasks to it.
//! The phone holds one token, [`TOKEN`], with one RSA key pair,
//! [`KEY_ID`], that signs anything once logged in with [`PIN`]; its random
//! numbers are slow or hang up for chosen lengths, for the link's tests.

use crate::link::{BoxStream, Connector, LinkHandle, LinkSettings, LinkState, LinkThread, spawn};
use crate::state::State;
use phonecsp_protocol::ck::cka;
use phonecsp_protocol::message::{ObjectEntry, TokenInfo, token_flags};
use phonecsp_protocol::{
    Asker, CkRv, Handler, ObjectClass, Reply, Request, Responder, StaticKeypair,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use zeroize::Zeroizing;

pub const TOKEN: &str = "ssh";
pub const KEY_ID: &[u8] = &[1];
pub const PIN: &[u8] = b"1234";
/// The phone's key is 2048 bits: any modulus of that size will do, since
/// nothing here checks a signature.
const MODULUS_LEN: usize = 256;

/// Random requests of this length take [`SLOW`] to answer.
pub const SLOW_LEN: u32 = 50;
pub const SLOW: Duration = Duration::from_millis(100);
/// Random requests of this length hang up instead of answering.
pub const HANG_UP_LEN: u32 = 99;

/// What the phone's token knows, shared with the test: whether the daemon's
/// session is logged in to it.
#[derive(Debug, Default)]
pub struct Token {
    pub logged_in: bool,
    /// The version of [`TOKEN`] announced when a session opens; `None`:
    /// no announcement.
    pub version: Option<u64>,
    /// The id of the phone's key, if not [`KEY_ID`]: a phone that changed
    /// without saying so.
    pub key_id: Option<Vec<u8>>,
    /// The token is not there any more for this host (revoked).
    pub revoked: bool,
    /// Sent as the announcement instead of a well-formed one.
    pub raw_announcement: Option<Vec<u8>>,
    /// The name of every request about the token, in order.
    pub seen: Vec<&'static str>,
}

struct Phone {
    identity: StaticKeypair,
    host: [u8; 32],
    token: Arc<Mutex<Token>>,
    last_len: Option<u32>,
}

impl Phone {
    fn logged_in(&self) -> bool {
        self.token.lock().is_ok_and(|t| t.logged_in)
    }

    fn set_logged_in(&self, on: bool) {
        if let Ok(mut t) = self.token.lock() {
            t.logged_in = on;
        }
    }

    fn token_request(&mut self, request: Request) -> Result<Reply, CkRv> {
        let key_id = {
            let Ok(mut t) = self.token.lock() else {
                return Err(CkRv::GENERAL_ERROR);
            };
            t.seen.push(request.name());
            if t.revoked {
                return Err(CkRv::TOKEN_NOT_PRESENT);
            }
            t.key_id.clone().unwrap_or_else(|| KEY_ID.to_vec())
        };
        match request {
            Request::ListContainers => Ok(Reply::Containers(vec![
                phonecsp_protocol::message::ContainerEntry {
                    name: TOKEN.into(),
                    flags: token_flags::LOGIN_REQUIRED,
                },
            ])),
            Request::TokenInfo { container } => Ok(Reply::TokenInfo(TokenInfo {
                name: container,
                flags: token_flags::LOGIN_REQUIRED
                    | if self.logged_in() {
                        token_flags::LOGGED_IN
                    } else {
                        0
                    },
                retries_left: 3,
                min_pin: 4,
                max_pin: 64,
                serial: "unit".into(),
                so_retries_left: 0,
            })),
            Request::Login { pin, .. } if pin.as_slice() == PIN => {
                self.set_logged_in(true);
                Ok(Reply::Done)
            }
            Request::Login { .. } => Err(CkRv::PIN_INCORRECT),
            Request::Logout { .. } if self.logged_in() => {
                self.set_logged_in(false);
                Ok(Reply::Done)
            }
            Request::FindObjects { .. } => Ok(Reply::Objects(vec![ObjectEntry {
                class: ObjectClass::PublicKey,
                id: key_id,
                label: "key".into(),
            }])),
            Request::GetAttributes { id, .. } if id != key_id => Err(CkRv::OBJECT_HANDLE_INVALID),
            Request::Sign { id, .. } if id != key_id => Err(CkRv::KEY_HANDLE_INVALID),
            Request::GetAttributes { .. } => {
                let mut modulus = vec![0xc5; MODULUS_LEN];
                modulus[MODULUS_LEN - 1] = 0x01;
                Ok(Reply::Attributes(vec![
                    (cka::MODULUS, modulus),
                    (cka::PUBLIC_EXPONENT, vec![1, 0, 1]),
                ]))
            }
            Request::Sign { .. } if self.logged_in() => Ok(Reply::Signature(vec![7; MODULUS_LEN])),
            _ => Err(CkRv::USER_NOT_LOGGED_IN),
        }
    }
}

impl Handler for Phone {
    fn execute(&mut self, _asker: &Asker<'_>, request: Request) -> Result<Reply, CkRv> {
        if let Request::GenerateRandom { len } = request {
            if let Ok(mut t) = self.token.lock() {
                t.seen.push(request.name());
            }
            self.last_len = Some(len);
            return Ok(Reply::Random(vec![len as u8; len as usize]));
        }
        self.token_request(request)
    }
    fn session_ended(&mut self, _host: &[u8; 32]) {
        self.set_logged_in(false);
    }
    fn session_announcement(&mut self, _host: &[u8; 32], _max: usize) -> Vec<u8> {
        use phonecsp_protocol::announce::{Announced, Announcement};
        let Ok(t) = self.token.lock() else {
            return Vec::new();
        };
        if let Some(raw) = &t.raw_announcement {
            return raw.clone();
        }
        let Some(version) = t.version else {
            return Vec::new();
        };
        let containers = match t.revoked {
            true => Vec::new(),
            false => vec![Announced {
                name: TOKEN.into(),
                flags: token_flags::LOGIN_REQUIRED,
                version,
            }],
        };
        Announcement { containers }.encode().unwrap_or_default()
    }
    fn known_hosts(&self) -> Vec<[u8; 32]> {
        vec![self.host]
    }
    fn identity(&self) -> StaticKeypair {
        self.identity.clone()
    }
    fn handset_name(&self) -> String {
        "unit phone".into()
    }
    fn pairing_psk(&mut self) -> Option<Zeroizing<[u8; 32]>> {
        None
    }
    fn pairing_failed(&mut self) {}
    fn pairing_completed(&mut self, _host: [u8; 32], _host_name: &str) -> bool {
        false
    }
}

/// Serves a [`Phone`] on a task of the calling runtime (the link thread's,
/// when called from a connector); aborting the task hangs up.
fn phone_stream(phone: Phone) -> (BoxStream, tokio::task::JoinHandle<()>) {
    let (host_end, mut device_end) = tokio::io::duplex(1 << 16);
    let task = tokio::spawn(async move {
        let mut phone = phone;
        let mut responder = Responder::new(4096, "unit");
        let mut buf = vec![0u8; 8192];
        loop {
            let n = device_end.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            let out = responder.receive(&mut phone, &buf[..n]);
            match phone.last_len.take() {
                Some(SLOW_LEN) => tokio::time::sleep(SLOW).await,
                Some(HANG_UP_LEN) => break,
                _ => {}
            }
            if device_end.write_all(&out).await.is_err() {
                break;
            }
        }
    });
    (Box::new(host_end), task)
}

/// The phone's tasks, one per connection, for a test to hang up.
pub type PhoneTasks = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

pub struct Rig {
    _dir: tempfile::TempDir,
    pub state: Arc<State>,
    phone: StaticKeypair,
    pub token: Arc<Mutex<Token>>,
    pub request_timeout: Duration,
    pub shutdown: watch::Sender<bool>,
}

impl Rig {
    /// State with the phone's key pinned for `names`; requests time out
    /// after `request_timeout`.
    pub fn new(names: &[&str], request_timeout: Duration) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = Arc::new(State::open(dir.path()).expect("state"));
        let phone = StaticKeypair::from_private(&[9; 32]);
        for n in names {
            state.pin(n, phone.public()).expect("pin");
        }
        Rig {
            _dir: dir,
            state,
            phone,
            token: Arc::default(),
            request_timeout,
            shutdown: watch::channel(false).0,
        }
    }

    pub fn spawn(
        &self,
        name: &str,
        health_interval: Duration,
        connector: Connector,
    ) -> (LinkHandle, LinkThread) {
        let settings = LinkSettings {
            name: name.into(),
            host_name: "unit host".into(),
            request_timeout: self.request_timeout,
            health_interval,
            max_backoff: Duration::from_millis(200),
        };
        spawn(
            settings,
            connector,
            self.state.clone(),
            self.shutdown.subscribe(),
        )
        .expect("link thread")
    }

    /// A connector to the phone that keeps each phone task in `calls`.
    pub fn connector(&self, calls: PhoneTasks) -> Connector {
        let identity = self.phone.clone();
        let host = *self.state.identity().public();
        let token = self.token.clone();
        Arc::new(move || {
            let (stream, task) = phone_stream(Phone {
                identity: identity.clone(),
                host,
                token: token.clone(),
                last_len: None,
            });
            if let Ok(mut c) = calls.lock() {
                c.push(task);
            }
            Box::pin(async move { Ok(stream) })
        })
    }
}

pub async fn wait_for_state(h: &LinkHandle, what: &str, f: impl Fn(&LinkState) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f(&h.state()) {
        assert!(
            Instant::now() < deadline,
            "{} never became {what}: {:?}",
            h.name(),
            h.state()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
