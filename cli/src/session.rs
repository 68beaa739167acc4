//! What every command shares: the connection to the daemon, the handset
//! chosen (`--handset`, else the only one), and logging in to a token
//! before a private key is used.

use phonecsp::blocking::Client;
use phonecsp_protocol::CkRv;
use phonecsp_protocol::message::token_flags;

use crate::explain::pin_failure;
use crate::failure::Failure;
use crate::secret::{ENV_PIN, get_secret};

pub(crate) struct Context {
    pub(crate) client: Client,
    pub(crate) json: bool,
    pub(crate) handset: Option<String>,
}

/// `--handset`, else the only configured handset.
impl Context {
    /// Whether `handset` is the one `--handset` chose (any, without it).
    pub(crate) fn chose(&self, handset: &str) -> bool {
        self.handset.as_ref().is_none_or(|h| h == handset)
    }
}

pub(crate) fn handset(cx: &Context) -> Result<String, Failure> {
    if let Some(h) = &cx.handset {
        return Ok(h.clone());
    }
    let list = cx.client.list_handsets()?;
    match list.as_slice() {
        [only] => Ok(only.name.clone()),
        // The daemon lists only the handsets this user may use: the same
        // refusal, and exit code, as a token that is not available.
        [] => Err(Failure::Client(phonecsp::Error::token(
            CkRv::TOKEN_NOT_PRESENT,
            "no handset: none is configured, or they are not available to you \
             (the access lists in /etc/phonecsp/phonecspd.toml do not name you)",
        ))),
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
pub(crate) fn ensure_login(cx: &Context, handset: &str, token: &str) -> Result<(), Failure> {
    let info = cx.client.get_token_info(handset, token)?;
    if info.logged_in || info.flags & token_flags::LOGIN_REQUIRED == 0 {
        return Ok(());
    }
    if info.flags & token_flags::PIN_LOCKED != 0 {
        return Err(crate::explain::locked(handset, token, &info));
    }
    // Refuse before asking for the PIN, not just before sending it.
    cx.client.check_daemon()?;
    if info.flags & token_flags::PROTECTED_PATH != 0 {
        eprintln!("phonecsp: enter the PIN of {handset}/{token} on the phone");
        return cx
            .client
            .login(handset, token, &[])
            .map_err(|e| pin_failure(cx, handset, token, e));
    }
    if info.flags & token_flags::PIN_FINAL_TRY != 0 && std::env::var_os(ENV_PIN).is_none() {
        eprintln!("phonecsp: warning: one more wrong PIN locks {handset}/{token}");
    }
    let pin = get_secret(ENV_PIN, &format!("PIN for {handset}/{token}: "))?;
    cx.client
        .login(handset, token, &pin)
        .map_err(|e| pin_failure(cx, handset, token, e))
}

/// While alive, says on stderr when this connection's call waits for the
/// phone's owner (the daemon's `ApprovalPending` signal), so that a
/// person is not left looking at a silent terminal for up to a minute.
pub(crate) struct ApprovalNotice {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApprovalNotice {
    /// Listens from now on (before the call is sent, so that nothing is
    /// missed). Without signals, says nothing: the call still runs.
    pub(crate) fn start(cx: &Context) -> ApprovalNotice {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let me = cx
            .client
            .as_async()
            .and_then(|c| c.connection().unique_name().map(|n| n.to_string()));
        let thread = match (cx.client.receive_events(), me) {
            (Ok(events), Some(me)) => {
                let stop = stop.clone();
                Some(std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let Some(event) =
                            events.next_timeout(std::time::Duration::from_millis(100))
                        else {
                            continue;
                        };
                        if let phonecsp::client::Event::ApprovalPending {
                            handset,
                            token,
                            operation,
                            caller,
                        } = event
                            && caller == me
                        {
                            eprintln!(
                                "phonecsp: confirm on your phone '{handset}': {operation} with a key of '{token}'..."
                            );
                        }
                    }
                }))
            }
            _ => None,
        };
        ApprovalNotice { stop, thread }
    }
}

impl Drop for ApprovalNotice {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
