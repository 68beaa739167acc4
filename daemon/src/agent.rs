//! PIN prompts the desktop answers, in the manner of BlueZ's
//! `AgentManager1`/`Agent1`: a program of the user's session (the
//! reference one is `phonecsp agent`) registers an object implementing
//! `org.phonecsp.Agent1`, and when a program of the same user calls Sign
//! or Decrypt on a key without having logged in, the daemon asks that
//! agent for the PIN, or has it tell the person to type it (or approve)
//! on the phone, and logs the calling program in with the answer.
//!
//! The agent is trusted as far as its uid: it may only be asked about the
//! calls of programs running as the same user. A prompt that is dismissed,
//! not answered in time, or whose agent leaves the bus ends the call with
//! `org.phonecsp.Error.FunctionCanceled`; nothing is left half done.

use crate::access::Caller;
use crate::lock;
use crate::objects::token_path;
use crate::service::{Call, Inner};
use phonecsp::{Error, TokenDetails};
use phonecsp_protocol::CkRv;
use phonecsp_protocol::message::token_flags;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use zbus::message::Header;
use zbus::{Connection, ObjectPath, OwnedObjectPath, Variant, interface, proxy};
use zeroize::Zeroizing;

/// At most this many agents at once, all users together: each is a few
/// bytes, but a caller must not grow the daemon without bound.
const MAX_AGENTS: usize = 64;

/// How long a Cancel to an agent that did not answer may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(2);

#[proxy(interface = "org.phonecsp.Agent1")]
trait Agent {
    /// The PIN of `token`; `details` say who asks for what.
    fn request_pin(
        &self,
        token: &ObjectPath<'_>,
        details: HashMap<&str, Variant<'_>>,
    ) -> zbus::Result<Vec<u8>>;

    /// Something to show the person (type the PIN on the phone).
    fn display_message(&self, token: &ObjectPath<'_>, message: &str) -> zbus::Result<()>;

    /// The request about `token` is over: close its prompt.
    fn cancel(&self, token: &ObjectPath<'_>) -> zbus::Result<()>;
}

/// A registered agent.
#[derive(Debug, Clone)]
struct Registered {
    owner: String,
    path: OwnedObjectPath,
    uid: u32,
}

/// The registered agents, newest last.
#[derive(Default)]
pub struct Agents {
    list: Mutex<Vec<Registered>>,
}

impl Agents {
    fn register(&self, caller: &Caller, path: OwnedObjectPath) -> Result<(), Error> {
        let mut list = lock(&self.list);
        list.retain(|a| !(a.owner == caller.name && a.path == path));
        if list.len() >= MAX_AGENTS {
            return Err(Error::token(
                CkRv::HOST_MEMORY,
                format!("{MAX_AGENTS} agents are registered already"),
            ));
        }
        list.push(Registered {
            owner: caller.name.clone(),
            path,
            uid: caller.uid,
        });
        Ok(())
    }

    fn unregister(&self, owner: &str, path: &ObjectPath<'_>) -> Result<(), Error> {
        let mut list = lock(&self.list);
        let before = list.len();
        list.retain(|a| !(a.owner == owner && a.path.as_str() == path.as_str()));
        match list.len() < before {
            true => Ok(()),
            false => Err(Error::token(
                CkRv::ARGUMENTS_BAD,
                format!("no agent {path} is registered by this connection"),
            )),
        }
    }

    /// The connection `owner` left the bus: its agents go with it.
    pub fn caller_left(&self, owner: &str) {
        lock(&self.list).retain(|a| a.owner != owner);
    }

    /// The newest agent of `uid`.
    fn for_uid(&self, uid: u32) -> Option<Registered> {
        lock(&self.list)
            .iter()
            .rev()
            .find(|a| a.uid == uid)
            .cloned()
    }
}

/// `org.phonecsp.AgentManager1`, at the object tree's root.
pub struct AgentManager {
    inner: Arc<Inner>,
}

impl AgentManager {
    pub fn new(inner: Arc<Inner>) -> AgentManager {
        AgentManager { inner }
    }
}

#[interface(name = "org.phonecsp.AgentManager1")]
impl AgentManager {
    /// Registers the caller's object `agent` (implementing
    /// org.phonecsp.Agent1) to answer PIN prompts for programs of the
    /// caller's user. The newest agent of a user is asked.
    async fn register_agent(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        agent: OwnedObjectPath,
    ) -> Result<(), Error> {
        let caller = self.inner.caller(&hdr, conn).await?;
        self.inner.agents().register(&caller, agent)?;
        log::info!(
            "PIN agent {} registered for uid {}",
            caller.name,
            caller.uid
        );
        Ok(())
    }

    /// Unregisters an agent the caller registered.
    async fn unregister_agent(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        agent: OwnedObjectPath,
    ) -> Result<(), Error> {
        let owner = self.inner.caller(&hdr, conn).await?.name;
        self.inner.agents().unregister(&owner, &agent)
    }
}

async fn proxy_of(conn: &Connection, agent: &Registered) -> Result<AgentProxy<'static>, Error> {
    let owner = zbus::names::BusName::try_from(agent.owner.clone()).map_err(Error::Bus)?;
    let builder = AgentProxy::builder(conn).destination(owner.to_owned());
    let builder = builder.path(agent.path.clone());
    Ok(builder
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?)
}

/// Shows `message` through the agent of `caller`'s user, if there is one;
/// best effort, and never in the way of the call it is about.
pub(crate) fn tell(
    inner: &Inner,
    conn: &Connection,
    caller: &Caller,
    token: &OwnedObjectPath,
    message: String,
) {
    let Some(agent) = inner.agents().for_uid(caller.uid) else {
        return;
    };
    let (conn, token) = (conn.clone(), token.clone());
    tokio::spawn(async move {
        if let Ok(proxy) = proxy_of(&conn, &agent).await {
            let said = proxy.display_message(&token, &message);
            let _ = tokio::time::timeout(CANCEL_TIMEOUT, said).await;
        }
    });
}

fn canceled(detail: impl std::fmt::Display) -> Error {
    Error::token(CkRv::FUNCTION_CANCELED, detail)
}

/// The calling program's name (from its pid, as the bus reports it), for
/// the prompt.
async fn program_of(conn: &Connection, caller: &Caller) -> String {
    let pid = async {
        let dbus = zbus::fdo::DBusProxy::new(conn).await.ok()?;
        let name = zbus::names::BusName::try_from(caller.name.as_str()).ok()?;
        dbus.get_connection_unix_process_id(name).await.ok()
    };
    match pid.await {
        Some(pid) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{} (pid {pid})", comm.trim())
        }
        None => caller.name.clone(),
    }
}

/// What a prompt tells the person.
fn details<'a>(
    call: &Call<'_>,
    info: &TokenDetails,
    operation: &'a str,
    key: &'a str,
    program: &'a str,
) -> HashMap<&'static str, Variant<'a>> {
    HashMap::from([
        ("handset", Variant::from(call.handset_name().to_owned())),
        ("token", Variant::from(call.token_name().to_owned())),
        ("key", Variant::from(key)),
        ("operation", Variant::from(operation)),
        ("program", Variant::from(program)),
        ("retries-left", Variant::from(info.retries_left)),
        ("min-length", Variant::from(info.min_pin)),
        ("max-length", Variant::from(info.max_pin)),
    ])
}

/// Logs the caller of `call` in through its user's agent, unless it is
/// logged in already. `operation` ("sign") and `key` (its label) are
/// shown to the person.
pub(crate) async fn log_in_if_needed(
    inner: &Inner,
    call: &Call<'_>,
    conn: &Connection,
    operation: &str,
    key: &str,
) -> Result<(), Error> {
    call.recheck_login().await;
    if call.logged_in() {
        return Ok(());
    }
    // Away: say so, rather than ask for a PIN that cannot be used.
    call.session()?;
    let caller = call.caller();
    let Some(agent) = inner.agents().for_uid(caller.uid) else {
        return Err(Error::token(
            CkRv::USER_NOT_LOGGED_IN,
            format!(
                "log in to '{}' first, or run a PIN agent (phonecsp agent)",
                call.token_name()
            ),
        ));
    };
    let info = call.details().await?;
    let program = program_of(conn, caller).await;
    let proxy = proxy_of(conn, &agent).await?;
    let token = token_path(call.handset_name(), call.token_name());
    let timeout = inner.config().daemon.prompt_timeout();
    let result = if info.flags & token_flags::PROTECTED_PATH != 0 {
        let message = format!(
            "Type the PIN of '{}' on your phone '{}' to let {program} {operation} with '{key}'",
            call.token_name(),
            call.handset_name()
        );
        let _ = tokio::time::timeout(CANCEL_TIMEOUT, proxy.display_message(&token, &message)).await;
        call.login(&[]).await
    } else {
        let asked = proxy.request_pin(&token, details(call, &info, operation, key, &program));
        let pin = match tokio::time::timeout(timeout, asked).await {
            Ok(Ok(pin)) => Zeroizing::new(pin),
            Ok(Err(zbus::Error::MethodError(name, ..)))
                if !name.as_str().starts_with("org.freedesktop.DBus.Error.") =>
            {
                return Err(canceled("the PIN prompt was dismissed"));
            }
            Ok(Err(e)) => {
                log::info!("PIN agent {} failed: {e}", agent.owner);
                inner.agents().caller_left(&agent.owner);
                return Err(canceled("the PIN agent went away without answering"));
            }
            Err(_) => {
                let _ = tokio::time::timeout(CANCEL_TIMEOUT, proxy.cancel(&token)).await;
                return Err(canceled(format!(
                    "no answer from the PIN prompt within {} s",
                    timeout.as_secs()
                )));
            }
        };
        call.login(&pin).await
    };
    if result.is_err() {
        // The tries left changed: the token's properties say so.
        inner.resync(call.handset_name());
    }
    result
}
