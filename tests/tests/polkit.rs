//! Pairing and unpairing by a user other than root, as polkit decides
//! (daemon/src/polkit.rs). A stand-in for polkit's authority, served on the
//! test bus under polkit's name, answers yes or no and keeps what it was
//! asked; the caller is the `phonecsp` command run as uid 65534 (through
//! `setpriv`, so as root only: as anyone else the test would be the
//! daemon's own user, whom polkit is never asked about).

use phonecsp::Client;
use phonecsp_tests::{Daemon, Handset, TestBus, is_root, phonecsp, shared_root};
use std::collections::HashMap;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

const AUTHORITY: &str = "org.freedesktop.PolicyKit1";
const AUTHORITY_PATH: &str = "/org/freedesktop/PolicyKit1/Authority";
const OUTSIDER: u32 = 65534;

/// One `CheckAuthorization` call, as the stand-in received it.
#[derive(Debug, Clone)]
struct Asked {
    subject_kind: String,
    subject_name: String,
    /// The uid the bus says owns `subject_name`, looked up during the call.
    subject_uid: Option<u32>,
    action: String,
    details: HashMap<String, String>,
    flags: u32,
    cancellation_id: String,
}

/// The stand-in authority: says `yes` or not, and records every question.
#[derive(Clone, Default)]
struct StandIn {
    yes: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<Asked>>>,
}

impl StandIn {
    fn asked(&self) -> Vec<Asked> {
        self.asked.lock().unwrap().clone()
    }
}

#[zbus::interface(name = "org.freedesktop.PolicyKit1.Authority")]
impl StandIn {
    /// polkit's signature: `(sa{sv})sa{ss}us` in, one `(bba{ss})` out.
    async fn check_authorization(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        subject: (String, HashMap<String, zbus::OwnedVariant>),
        action_id: String,
        details: HashMap<String, String>,
        flags: u32,
        cancellation_id: String,
    ) -> ((bool, bool, HashMap<String, String>),) {
        let (subject_kind, subject_details) = subject;
        let subject_name = subject_details
            .get("name")
            .and_then(|v| <&str>::try_from(&**v).ok().map(str::to_owned))
            .unwrap_or_default();
        let subject_uid = match zbus::names::BusName::try_from(subject_name.as_str()) {
            Ok(name) => match zbus::fdo::DBusProxy::new(conn).await {
                Ok(dbus) => dbus.get_connection_unix_user(name).await.ok(),
                Err(_) => None,
            },
            Err(_) => None,
        };
        self.asked.lock().unwrap().push(Asked {
            subject_kind,
            subject_name,
            subject_uid,
            action: action_id,
            details,
            flags,
            cancellation_id,
        });
        ((self.yes.load(Ordering::SeqCst), false, HashMap::new()),)
    }
}

/// `phonecsp --handset phone ARGS` as [`OUTSIDER`], off the runtime's
/// worker. The handset is named: the outsider may use none of its tokens,
/// so it is not listed to it.
fn outsider(bus: &TestBus, args: &[&str]) -> Output {
    let args = [&["--handset", "phone"], args].concat();
    tokio::task::block_in_place(|| phonecsp(bus, Some(OUTSIDER), &args, &[]))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Refused with `CKR_FUNCTION_REJECTED` (the command's exit 4), saying `why`.
fn assert_refused(o: &Output, why: &str) {
    assert_eq!(o.status.code(), Some(4), "{}", stderr(o));
    assert!(stderr(o).contains("CKR_FUNCTION_REJECTED"), "{}", stderr(o));
    assert!(stderr(o).contains(why), "{}", stderr(o));
}

/// The one question the stand-in was asked since `before` questions.
fn asked_once(authority: &StandIn, before: usize) -> Asked {
    let asked = authority.asked();
    assert_eq!(asked.len(), before + 1, "{asked:?}");
    asked[before].clone()
}

/// Checks that polkit was asked about `action` for the outsider's call:
/// its connection (the subject's bus name belongs to uid 65534, not to
/// the daemon), with no details, interaction allowed, no cancellation id.
fn assert_asked(a: &Asked, action: &str) {
    assert_eq!(a.action, action, "{a:?}");
    assert_eq!(a.subject_kind, "system-bus-name", "{a:?}");
    assert!(a.subject_name.starts_with(':'), "a unique name: {a:?}");
    assert_eq!(a.subject_uid, Some(OUTSIDER), "{a:?}");
    assert!(a.details.is_empty(), "{a:?}");
    assert_eq!(a.flags, 1, "AllowUserInteraction: {a:?}");
    assert_eq!(a.cancellation_id, "", "{a:?}");
}

/// The pinned key's fingerprint, as root sees it ("" when not paired).
async fn fingerprint(c: &Client) -> String {
    let handsets = c.list_handsets().await.expect("handsets");
    handsets
        .iter()
        .find(|h| h.name == "phone")
        .map(|h| h.fingerprint.clone())
        .expect("phone")
}

#[tokio::test(flavor = "multi_thread")]
async fn polkit_decides_for_users_other_than_root() {
    if !is_root() {
        eprintln!("SKIPPED: calling as another uid needs root (setpriv)");
        return;
    }
    let root = shared_root();
    let bus = TestBus::start();
    let mut handset = Handset::create(root.path());
    let code = handset.offer_pairing(&["ssh"]);
    handset.start();
    let daemon = Daemon::start(&bus, root.path(), &handset, "");
    let client = phonecsp_tests::client(&bus).await;

    let authority = StandIn::default();
    let authority_conn = zbus::connection::Builder::address(bus.address.as_str())
        .serve_at(AUTHORITY_PATH, authority.clone())
        .name(AUTHORITY)
        .build()
        .await
        .expect("the stand-in authority on the test bus");

    // polkit says no: the outsider may not pair, even with the right code,
    // nor unpair.
    let o = outsider(&bus, &["pair", "--code", &code]);
    assert_refused(&o, "polkit refused org.phonecsp.pair to uid 65534");
    assert_asked(&asked_once(&authority, 0), "org.phonecsp.pair");
    assert_eq!(fingerprint(&client).await, "", "refused, yet paired");
    let o = outsider(&bus, &["unpair", "--yes"]);
    assert_refused(&o, "polkit refused org.phonecsp.unpair to uid 65534");
    assert_asked(&asked_once(&authority, 1), "org.phonecsp.unpair");

    // Root is not polkit's business: it unpairs while polkit says no, and
    // polkit is not asked.
    client.unpair("phone").await.expect("root unpairs");
    assert_eq!(authority.asked().len(), 2);

    // polkit says yes: the outsider's calls go past the authorization to
    // the pairing itself. A malformed code is then the argument check's
    // business, a wrong one the handset's.
    authority.yes.store(true, Ordering::SeqCst);
    let o = outsider(&bus, &["pair", "--code", "not a code"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("CKR_ARGUMENTS_BAD"), "{}", stderr(&o));
    assert_asked(&asked_once(&authority, 2), "org.phonecsp.pair");
    let wrong = format!(
        "{}{}",
        if code.starts_with('A') { 'B' } else { 'A' },
        &code[1..]
    );
    let o = outsider(&bus, &["pair", "--code", &wrong]);
    assert_refused(&o, "pairing failed: wrong code?");
    assert!(!stderr(&o).contains("polkit"), "{}", stderr(&o));
    assert_asked(&asked_once(&authority, 3), "org.phonecsp.pair");
    // The right code pairs: the handset's key is pinned.
    let o = outsider(&bus, &["pair", "--code", &code]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_asked(&asked_once(&authority, 4), "org.phonecsp.pair");
    assert!(!fingerprint(&client).await.is_empty());
    // And unpairing forgets the key.
    let o = outsider(&bus, &["unpair", "--yes"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_asked(&asked_once(&authority, 5), "org.phonecsp.unpair");
    assert_eq!(fingerprint(&client).await, "");

    // No polkit on the bus (the bus has answered the release when it
    // returns): the outsider is refused, and told why; root still may.
    authority_conn
        .release_name(AUTHORITY)
        .await
        .expect("release polkit's name");
    let o = outsider(&bus, &["unpair", "--yes"]);
    assert_refused(
        &o,
        "polkit is not running, so only root may do org.phonecsp.unpair",
    );
    assert_eq!(authority.asked().len(), 6);
    client
        .unpair("phone")
        .await
        .expect("root unpairs without polkit");

    // The pairing codes went to the daemon, never to its log.
    let log = daemon.log();
    assert!(!log.contains(&code) && !log.contains(&wrong), "{log}");
    assert!(log.contains("polkit"), "{log}");
}
