//! Asking the phone's owner to approve an operation through the desktop's
//! notifications (the freedesktop Desktop Notifications specification,
//! `org.freedesktop.Notifications` on the user's session bus), as Phosh,
//! Plasma Mobile and every desktop show them: a critical notification
//! naming the computer, the program, the operation and the key, with the
//! actions Allow, Deny and, if the owner allows it, Allow for a while.
//! Closing it, or letting it time out, is a refusal.
//!
//! The caller is the handset's synchronous security manager, inside the
//! link's async runtime; the D-Bus conversation runs on a thread of its
//! own with a runtime of its own, so it neither blocks nor re-enters the
//! caller's.

use futures_util::StreamExt;
use std::collections::HashMap;
use std::time::Duration;
use thiserror::Error;
use zbus::Variant;

#[derive(Debug, Error)]
pub enum NotifyError {
    #[error("no notification service: {0}")]
    Bus(#[from] zbus::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the notification thread failed")]
    Thread,
}

/// What the owner did with the notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Allow,
    /// Allow, and the same computer's later operations on the same
    /// container for the owner's set period.
    AllowForAWhile,
    Deny,
    /// Closed, expired, or not answered in time: a refusal too, but the
    /// caller may say so differently.
    NoAnswer,
}

const ALLOW: &str = "allow";
const ALLOW_FOR: &str = "allow-for";
const DENY: &str = "deny";

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Variant<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;
    fn close_notification(&self, id: u32) -> zbus::Result<()>;
    #[zbus(signal)]
    fn action_invoked(&self, id: u32, action_key: String) -> zbus::Result<()>;
    #[zbus(signal)]
    fn notification_closed(&self, id: u32, reason: u32) -> zbus::Result<()>;
}

/// Where notifications go, and what they offer.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// A D-Bus address; `None`: the user's session bus.
    pub address: Option<String>,
    /// Offer "Allow for N minutes" with this period.
    pub allow_for: Option<Duration>,
}

impl Notifier {
    /// Shows the question and waits for the answer, at most `timeout`.
    pub fn ask(&self, summary: &str, body: &str, timeout: Duration) -> Result<Answer, NotifyError> {
        let me = self.clone();
        let (summary, body) = (summary.to_owned(), body.to_owned());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(me.conversation(&summary, &body, timeout))
        })
        .join()
        .map_err(|_| NotifyError::Thread)?
    }

    async fn conversation(
        &self,
        summary: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<Answer, NotifyError> {
        let conn = match &self.address {
            Some(a) => {
                zbus::connection::Builder::address(a.as_str())
                    .build()
                    .await?
            }
            None => zbus::Connection::session().await?,
        };
        let proxy = NotificationsProxy::new(&conn).await?;
        // Listening before asking, so that a quick answer is not missed.
        let mut invoked = proxy.receive_action_invoked().await?;
        let mut closed = proxy.receive_notification_closed().await?;
        let allow_for = self
            .allow_for
            .map(|d| format!("Allow for {} min", d.as_secs().div_ceil(60)));
        let mut actions = vec![ALLOW, "Allow"];
        if let Some(label) = &allow_for {
            actions.extend([ALLOW_FOR, label.as_str()]);
        }
        actions.extend([DENY, "Deny"]);
        let hints = HashMap::from([
            ("urgency", Variant::from(2u8)),
            ("category", Variant::from("device")),
            ("desktop-entry", Variant::from("phonecsp-handset")),
        ]);
        let expire = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        let id = proxy
            .notify(
                "phonecsp",
                0,
                "security-high",
                summary,
                body,
                &actions,
                hints,
                expire,
            )
            .await?;
        let answer = async {
            loop {
                tokio::select! {
                    Some(s) = invoked.next() => {
                        let Ok(a) = s.args() else { continue };
                        if a.id != id {
                            continue;
                        }
                        return match a.action_key.as_str() {
                            ALLOW => Answer::Allow,
                            ALLOW_FOR if self.allow_for.is_some() => Answer::AllowForAWhile,
                            _ => Answer::Deny,
                        };
                    }
                    Some(s) = closed.next() => {
                        let Ok(a) = s.args() else { continue };
                        if a.id == id {
                            // 1: expired; 2: dismissed by the person.
                            return if a.reason == 2 { Answer::Deny } else { Answer::NoAnswer };
                        }
                    }
                    else => return Answer::NoAnswer,
                }
            }
        };
        match tokio::time::timeout(timeout, answer).await {
            Ok(a) => {
                // An answered notification may stay on screen; it is done.
                let _ = proxy.close_notification(id).await;
                Ok(a)
            }
            Err(_) => {
                let _ = proxy.close_notification(id).await;
                Ok(Answer::NoAnswer)
            }
        }
    }
}
