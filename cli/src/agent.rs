//! `phonecsp agent`: the reference PIN agent. It registers an
//! `org.phonecsp.Agent1` object with the daemon's `AgentManager1`, and
//! answers the daemon's prompts for programs of this user: at the
//! terminal (without echo), through an askpass program (`--askpass`, as
//! ssh's `SSH_ASKPASS`: it prints the PIN, or exits non-zero to dismiss),
//! or through `systemd-ask-password` where there is no terminal. A GNOME
//! or KDE agent is the same object, answering with the desktop's dialog.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;

use phonecsp::objects::AgentManager1Proxy;
use phonecsp::{Bus, Client};
use zbus::{OwnedObjectPath, OwnedVariant, interface};
use zeroize::Zeroizing;

use crate::failure::{Failure, io_failure};
use crate::secret::read_secret_from_tty;

/// Where the agent's object is served on its connection.
const AGENT_PATH: &str = "/org/phonecsp/agent";

/// The agent's answer when the person does not give a PIN.
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.phonecsp.Agent.Error")]
enum AgentError {
    #[zbus(error)]
    ZBus(zbus::Error),
    /// The person dismissed the prompt, or no prompt could be shown.
    Canceled(String),
}

struct Agent {
    askpass: Option<PathBuf>,
}

fn text(details: &HashMap<String, OwnedVariant>, key: &str) -> String {
    details
        .get(key)
        .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
        .unwrap_or_default()
}

fn number(details: &HashMap<String, OwnedVariant>, key: &str) -> Option<u32> {
    details.get(key).and_then(|v| u32::try_from(v).ok())
}

/// What the person is asked.
fn prompt(details: &HashMap<String, OwnedVariant>) -> String {
    let tries = number(details, "retries-left")
        .map(|n| format!(", {n} tries left"))
        .unwrap_or_default();
    format!(
        "{} wants to {} with '{}' in '{}' on phone '{}'. PIN{tries}: ",
        text(details, "program"),
        text(details, "operation"),
        text(details, "key"),
        text(details, "token"),
        text(details, "handset"),
    )
}

/// Runs `program prompt` and takes the first line it prints as the PIN.
fn ask_program(program: &std::path::Path, prompt: &str) -> Result<Zeroizing<Vec<u8>>, AgentError> {
    let out = std::process::Command::new(program)
        .arg(prompt)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| AgentError::Canceled(format!("{}: {e}", program.display())))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(AgentError::Canceled("the prompt was dismissed".into()));
    }
    let line = stdout.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(Zeroizing::new(line.to_vec()))
}

fn ask(askpass: Option<PathBuf>, prompt: &str) -> Result<Zeroizing<Vec<u8>>, AgentError> {
    if let Some(program) = askpass {
        return ask_program(&program, prompt);
    }
    match read_secret_from_tty(prompt) {
        Ok(Some(pin)) => Ok(pin),
        Ok(None) => ask_program(std::path::Path::new("systemd-ask-password"), prompt),
        Err(_) => Err(AgentError::Canceled(
            "the terminal could not be read".into(),
        )),
    }
}

#[interface(name = "org.phonecsp.Agent1")]
impl Agent {
    async fn request_pin(
        &self,
        token: OwnedObjectPath,
        details: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<u8>, AgentError> {
        let (askpass, prompt) = (self.askpass.clone(), prompt(&details));
        eprintln!("phonecsp: PIN asked for {}", token.as_str());
        let pin = tokio::task::spawn_blocking(move || ask(askpass, &prompt))
            .await
            .map_err(|e| AgentError::Canceled(e.to_string()))??;
        // zbus sends an owned Vec; the reply is the daemon's to zeroize.
        Ok(pin.to_vec())
    }

    async fn display_message(&self, _token: OwnedObjectPath, message: String) {
        eprintln!("phonecsp: {message}");
    }

    async fn cancel(&self, token: OwnedObjectPath) {
        eprintln!(
            "phonecsp: the PIN prompt for {} was cancelled",
            token.as_str()
        );
    }
}

/// Serves the agent until SIGINT or SIGTERM.
pub(crate) fn run(bus: &Bus, askpass: Option<PathBuf>) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| io_failure("starting the agent's runtime", e))?;
    runtime.block_on(async {
        let client = Client::connect(bus).await?;
        let conn = client.connection();
        conn.object_server()
            .at(AGENT_PATH, Agent { askpass })
            .await
            .map_err(phonecsp::Error::Bus)?;
        let path = zbus::ObjectPath::from_static_str_unchecked(AGENT_PATH);
        let manager = AgentManager1Proxy::builder(conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(phonecsp::Error::Bus)?;
        manager.register_agent(&path).await?;
        eprintln!("phonecsp: PIN agent ready; Ctrl-C stops it");
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| io_failure("waiting for SIGTERM", e))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        let _ = manager.unregister_agent(&path).await;
        Ok(())
    })
}
