//! The object API end to end, as a desktop program meets it: a real
//! `dbus-daemon`, the handset on a pty, `phonecspd`, and the reference PIN
//! agent (`phonecsp agent`). The tree under the ObjectManager, its
//! signals as the phone comes and goes, named mechanisms, prompts that are
//! answered, dismissed, never answered or whose agent vanishes, and the
//! introspection against the XML in dbus/.

use futures_util::StreamExt;
use phonecsp::BUS_NAME;
use phonecsp_tests::{
    Fixture, KEY_ID, PIN, bin, fixture, fixture_with, wait_connected, wait_for_object,
};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Oaep, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use zbus::fdo::{ObjectManagerProxy, PropertiesProxy};
use zbus::{Connection, OwnedObjectPath, OwnedVariant, Variant};

const ROOT: &str = "/org/phonecsp";
const HANDSET: &str = "/org/phonecsp/handset/phone";
const TOKEN: &str = "/org/phonecsp/handset/phone/ssh";
const KEY: &str = "/org/phonecsp/handset/phone/ssh/key_01";

type Options = HashMap<&'static str, Variant<'static>>;

async fn manager(c: &Connection) -> ObjectManagerProxy<'static> {
    let builder = ObjectManagerProxy::builder(c).destination(BUS_NAME);
    builder.path(ROOT).build().await.unwrap()
}

async fn properties_of(c: &Connection, path: &str) -> PropertiesProxy<'static> {
    let builder = PropertiesProxy::builder(c).destination(BUS_NAME);
    builder.path(path.to_owned()).build().await.unwrap()
}

async fn property(c: &Connection, path: &str, iface: &str, name: &str) -> OwnedVariant {
    let p = properties_of(c, path).await;
    p.get(iface.try_into().unwrap(), name).await.unwrap()
}

/// Logs `c` in to phone/ssh through its Token1 object.
async fn login(c: &Connection) {
    let pin = PIN.as_bytes();
    let r: Result<(), String> = call(c, TOKEN, "org.phonecsp.Token1", "Login", &(pin,)).await;
    r.unwrap();
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Calls `method` of `iface` on `path`; a D-Bus error comes back as its name.
async fn call<B, R>(
    c: &Connection,
    path: &str,
    iface: &str,
    method: &str,
    body: &B,
) -> Result<R, String>
where
    B: serde::Serialize + zbus::Type,
    R: for<'d> serde::Deserialize<'d> + zbus::Type,
{
    match c
        .call_method(Some(BUS_NAME), path, Some(iface), method, body)
        .await
    {
        Ok(m) => Ok(m.body().deserialize().unwrap()),
        Err(zbus::Error::MethodError(name, text, _)) => {
            Err(format!("{}: {}", name.as_str(), text.unwrap_or_default()))
        }
        Err(e) => Err(format!("{e}")),
    }
}

async fn sign(
    c: &Connection,
    mechanism: &str,
    options: Options,
    data: &[u8],
) -> Result<Vec<u8>, String> {
    call(
        c,
        KEY,
        "org.phonecsp.Key1",
        "Sign",
        &(mechanism, options, data),
    )
    .await
}

async fn key_public(c: &Connection) -> RsaPublicKey {
    let der: Vec<u8> = property(c, KEY, "org.phonecsp.Key1", "PublicKey")
        .await
        .try_into()
        .unwrap();
    RsaPublicKey::from_public_key_der(&der).expect("PublicKey is a DER SubjectPublicKeyInfo")
}

async fn ready(f: &Fixture) -> Connection {
    let c = f.client.connection().clone();
    wait_for_object(&c, KEY, true).await;
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_shows_handsets_tokens_and_keys_with_their_properties() {
    let f = fixture("", &[]).await;
    let c = ready(&f).await;
    let om = manager(&c).await;
    let tree: HashMap<String, Vec<String>> = om
        .get_managed_objects()
        .await
        .unwrap()
        .into_iter()
        .map(|(p, i)| {
            (
                p.as_str().to_owned(),
                i.keys().map(|i| i.to_string()).collect(),
            )
        })
        .collect();
    let at = |p: &str| tree.get(p).cloned();
    assert_eq!(at(HANDSET).unwrap(), ["org.phonecsp.Handset1"]);
    assert_eq!(at(TOKEN).unwrap(), ["org.phonecsp.Token1"]);
    assert_eq!(at(KEY).unwrap(), ["org.phonecsp.Key1"]);
    // The manager's own object is not among the objects it manages.
    assert!(at(ROOT).is_none());

    let h = |n| property(&c, HANDSET, "org.phonecsp.Handset1", n);
    assert!(bool::try_from(h("Connected").await).unwrap());
    assert!(bool::try_from(h("Paired").await).unwrap());
    assert_eq!(String::try_from(h("Name").await).unwrap(), "phone");

    let t = |n| property(&c, TOKEN, "org.phonecsp.Token1", n);
    assert_eq!(String::try_from(t("Name").await).unwrap(), "ssh");
    assert!(bool::try_from(t("Present").await).unwrap());
    assert!(!bool::try_from(t("LoggedIn").await).unwrap());
    let flags: Vec<String> = t("PinFlags").await.try_into().unwrap();
    assert!(flags.contains(&"login-required".to_owned()), "{flags:?}");
    assert!(u32::try_from(t("RetriesLeft").await).unwrap() > 0);
    let handset: OwnedObjectPath = t("Handset").await.try_into().unwrap();
    assert_eq!(handset.as_str(), HANDSET);

    let k = |n| property(&c, KEY, "org.phonecsp.Key1", n);
    assert_eq!(String::try_from(k("Type").await).unwrap(), "rsa");
    assert_eq!(u32::try_from(k("Bits").await).unwrap(), 2048);
    assert_eq!(Vec::<u8>::try_from(k("Id").await).unwrap(), KEY_ID);
    // The public key is the one the low-level interface gives.
    let a = f
        .client
        .get_attributes(
            "phone",
            "ssh",
            phonecsp_protocol::ck::cko::PUBLIC_KEY,
            KEY_ID,
        )
        .await
        .unwrap();
    let modulus = &a[&phonecsp_protocol::ck::cka::MODULUS];
    use rsa::traits::PublicKeyParts;
    assert_eq!(&key_public(&c).await.n().to_bytes_be(), modulus);

    // Logged in: this caller reads true, another connection false.
    login(&c).await;
    assert!(bool::try_from(t("LoggedIn").await).unwrap());
    let other = phonecsp_tests::client(&f.bus).await;
    let other = other.connection();
    let seen = property(other, TOKEN, "org.phonecsp.Token1", "LoggedIn").await;
    assert!(!bool::try_from(seen).unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_sign_verify_decrypt_and_encrypt_with_named_mechanisms() {
    let f = fixture("", &[]).await;
    let c = ready(&f).await;
    let public = key_public(&c).await;
    let data = b"a message from the desktop";

    // Not logged in and no agent: the error says what to do.
    let e = sign(&c, "rsa-pkcs1-sha256", Options::new(), data)
        .await
        .unwrap_err();
    assert!(e.starts_with("org.phonecsp.Error.UserNotLoggedIn"), "{e}");
    assert!(e.contains("phonecsp agent"), "{e}");

    login(&c).await;
    let salt = Options::from([("salt-length", Variant::U32(20))]);
    let sig = sign(&c, "rsa-pss-sha256", salt, data).await.unwrap();
    public
        .verify(
            Pss::new_with_salt::<Sha256>(20),
            &Sha256::digest(data),
            &sig,
        )
        .expect("an RSA-PSS SHA-256 signature with a 20-byte salt");
    let salt = Options::from([("salt-length", Variant::U32(20))]);
    let valid: bool = call(
        &c,
        KEY,
        "org.phonecsp.Key1",
        "Verify",
        &("rsa-pss-sha256", salt, &data[..], &sig),
    )
    .await
    .unwrap();
    assert!(valid);

    let label = || Options::from([("label", Variant::from(&b"disk"[..]))]);
    let ciphertext: Vec<u8> = call(
        &c,
        KEY,
        "org.phonecsp.Key1",
        "Encrypt",
        &("rsa-oaep-sha256", label(), &b"secret"[..]),
    )
    .await
    .unwrap();
    let decrypt = |ciphertext: Vec<u8>| {
        let c = c.clone();
        async move {
            let body = ("rsa-oaep-sha256", label(), ciphertext);
            let r: Result<Vec<u8>, String> =
                call(&c, KEY, "org.phonecsp.Key1", "Decrypt", &body).await;
            r.unwrap()
        }
    };
    let plaintext = decrypt(ciphertext).await;
    assert_eq!(plaintext, b"secret");
    // Encrypted independently of the daemon, decrypted by the phone.
    let mut rng = rand::thread_rng();
    let ours = public
        .encrypt(&mut rng, Oaep::new_with_label::<Sha256, _>("disk"), b"two")
        .unwrap();
    let back = decrypt(ours).await;
    assert_eq!(back, b"two");

    // Bad names and options: the standard's values, by name.
    let e = sign(&c, "rsa-pkcs1-md5", Options::new(), data)
        .await
        .unwrap_err();
    assert!(e.starts_with("org.phonecsp.Error.MechanismInvalid"), "{e}");
    assert!(
        e.contains("rsa-pss-sha256"),
        "the error lists the names: {e}"
    );
    let wrong = Options::from([("salt-length", Variant::from("32"))]);
    let e = sign(&c, "rsa-pss-sha256", wrong, data).await.unwrap_err();
    assert!(
        e.starts_with("org.phonecsp.Error.MechanismParamInvalid"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_made_and_deleted_appear_and_vanish() {
    let f = fixture("", &[]).await;
    let c = ready(&f).await;
    let om = manager(&c).await;
    let mut added = om.receive_interfaces_added().await.unwrap();
    let mut removed = om.receive_interfaces_removed().await.unwrap();
    login(&c).await;
    let options = Options::from([
        ("id", Variant::from(&[0x42u8][..])),
        ("label", Variant::from("made on the desktop")),
    ]);
    let path: OwnedObjectPath = call(
        &c,
        TOKEN,
        "org.phonecsp.Token1",
        "GenerateKey",
        &("rsa", options),
    )
    .await
    .unwrap();
    assert_eq!(path.as_str(), format!("{TOKEN}/key_42"));
    let signal = tokio::time::timeout(Duration::from_secs(30), added.next())
        .await
        .expect("InterfacesAdded within 30 s")
        .unwrap();
    let args = signal.args().unwrap();
    assert_eq!(args.object_path().as_str(), path.as_str());
    assert!(
        args.interfaces_and_properties()
            .contains_key("org.phonecsp.Key1")
    );
    let label = property(&c, path.as_str(), "org.phonecsp.Key1", "Label").await;
    assert_eq!(String::try_from(label).unwrap(), "made on the desktop");

    call::<_, ()>(&c, path.as_str(), "org.phonecsp.Key1", "Delete", &())
        .await
        .unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(30), removed.next())
        .await
        .expect("InterfacesRemoved within 30 s")
        .unwrap();
    assert_eq!(signal.args().unwrap().object_path().as_str(), path.as_str());
    // An object that vanished answers like one that never was.
    let e = sign(&c, "rsa-pkcs1-sha256", Options::new(), b"x").await;
    assert!(e.is_ok(), "the first key is still there");
    let gone: Result<Vec<u8>, String> = call(
        &c,
        path.as_str(),
        "org.phonecsp.Key1",
        "Sign",
        &("rsa-pkcs1-sha256", Options::new(), &b"x"[..]),
    )
    .await;
    assert!(gone.unwrap_err().contains("UnknownObject"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tree_follows_the_phone_as_it_goes_and_comes_back() {
    let mut f = fixture("", &[]).await;
    let c = ready(&f).await;
    let handset = properties_of(&c, HANDSET).await;
    let mut changes = handset.receive_properties_changed().await.unwrap();

    f.handset.kill();
    connected_becomes(&mut changes, false).await;
    wait_for_object(&c, KEY, false).await;
    // The token stays, as last seen, not present.
    let present = property(&c, TOKEN, "org.phonecsp.Token1", "Present").await;
    assert!(!bool::try_from(present).unwrap());

    f.handset.start();
    connected_becomes(&mut changes, true).await;
    wait_for_object(&c, KEY, true).await;
    let present = property(&c, TOKEN, "org.phonecsp.Token1", "Present").await;
    assert!(bool::try_from(present).unwrap());
    wait_connected(&f.client, true).await;
}

/// Waits for a PropertiesChanged of Handset1 that sets Connected to `want`.
async fn connected_becomes(changes: &mut zbus::fdo::PropertiesChangedStream, want: bool) {
    loop {
        let s = tokio::time::timeout(Duration::from_secs(30), changes.next())
            .await
            .expect("PropertiesChanged within 30 s")
            .unwrap();
        let args = s.args().unwrap();
        if args.interface_name().as_str() != "org.phonecsp.Handset1" {
            continue;
        }
        if let Some(v) = args.changed_properties().get("Connected")
            && bool::try_from(v).unwrap() == want
        {
            return;
        }
    }
}

/// `phonecsp agent` for the test bus, asking `askpass`.
fn agent(f: &Fixture, askpass: &std::path::Path) -> Child {
    agent_to(f, askpass, Stdio::null())
}

/// [`agent`], its messages to `stderr`.
fn agent_to(f: &Fixture, askpass: &std::path::Path, stderr: Stdio) -> Child {
    Command::new(bin("phonecsp"))
        .arg("--bus")
        .arg(&f.bus.address)
        .arg("agent")
        .arg("--askpass")
        .arg(askpass)
        .env("PHONECSP_DAEMON_USER", nix::unistd::getuid().to_string())
        .stdin(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("phonecsp agent")
}

fn script(f: &Fixture, name: &str, body: &str) -> std::path::PathBuf {
    phonecsp_tests::script_at(&f.root.path().join(name), body)
}

/// Waits until the agent has registered: a Sign then reaches it.
async fn agent_registered(f: &Fixture) {
    let log = f.daemon.log.clone();
    for _ in 0..500 {
        if std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("PIN agent")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the agent never registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_without_login_asks_the_users_agent() {
    let f = fixture_with("prompt_timeout_secs = 3\n", "", &[]).await;
    let c = ready(&f).await;
    let public = key_public(&c).await;
    let data = b"signed after a prompt";

    // The agent answers: the program is logged in and signs.
    let asked = f.root.path().join("asked");
    let answer = script(
        &f,
        "answer",
        &format!("echo \"$1\" > {}\necho {PIN}", asked.display()),
    );
    let a = agent(&f, &answer);
    agent_registered(&f).await;
    let sig = sign(&c, "rsa-pkcs1-sha256", Options::new(), data)
        .await
        .unwrap();
    verify_sha256(&public, data, &sig);
    let prompt = std::fs::read_to_string(&asked).unwrap();
    assert!(prompt.contains("wants to sign with 'ssh key'"), "{prompt}");
    assert!(prompt.contains("on phone 'phone'"), "{prompt}");
    let logged_in = property(&c, TOKEN, "org.phonecsp.Token1", "LoggedIn").await;
    assert!(bool::try_from(logged_in).unwrap());
    stop(a);

    // Another program, not logged in: dismissed, unanswered, vanished.
    let other = phonecsp_tests::client(&f.bus).await;
    let other = other.connection();
    let cases = [
        ("dismiss", "exit 1", "dismissed"),
        (
            "silent",
            "sleep 30",
            "no answer from the PIN prompt within 3 s",
        ),
        ("vanish", "kill -9 $PPID; sleep 5", "went away"),
    ];
    for (name, body, says) in cases {
        let a = agent(&f, &script(&f, name, body));
        // Each agent registers anew; wait until the newest is in place.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = sign(other, "rsa-pkcs1-sha256", Options::new(), data)
            .await
            .unwrap_err();
        assert!(
            e.starts_with("org.phonecsp.Error.FunctionCanceled"),
            "{name}: {e}"
        );
        assert!(e.contains(says), "{name}: {e}");
        let logged_in = property(other, TOKEN, "org.phonecsp.Token1", "LoggedIn").await;
        assert!(!bool::try_from(logged_in).unwrap(), "{name}");
        stop(a);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_matches_the_xml_for_every_object() {
    let f = fixture("", &[]).await;
    let c = ready(&f).await;
    let cases = [
        ("CryptoProvider1", phonecsp::OBJECT_PATH),
        ("Handset1", HANDSET),
        ("Token1", TOKEN),
        ("Key1", KEY),
        ("AgentManager1", ROOT),
    ];
    for (name, path) in cases {
        let live = phonecsp_tests::introspect::live(&c, path).await;
        let file = phonecsp_tests::introspect::file(&format!("org.phonecsp.{name}.xml"));
        let iface = format!("org.phonecsp.{name}");
        let a = phonecsp_tests::introspect::interface(&live, &iface);
        let b = phonecsp_tests::introspect::interface(&file, &iface);
        assert!(!b.is_empty(), "{name}");
        assert_eq!(
            a, b,
            "the running service and dbus/org.phonecsp.{name}.xml differ"
        );
    }
    // busctl reads every object without a complaint.
    for args in [
        vec!["tree", BUS_NAME],
        vec!["introspect", BUS_NAME, "/"],
        vec!["introspect", BUS_NAME, KEY],
        vec!["introspect", BUS_NAME, phonecsp::OBJECT_PATH],
    ] {
        let out = Command::new("busctl")
            .arg(format!("--address={}", f.bus.address))
            .args(&args)
            .output()
            .expect("busctl");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "busctl {args:?}: {stderr}"
        );
    }
}

/// Every method and property in dbus/ says what it is for.
#[test]
fn every_method_and_property_in_the_xml_has_a_doc_annotation() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../dbus");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let xml = std::fs::read_to_string(&path).unwrap();
        let mut lines = xml.lines().map(str::trim).peekable();
        while let Some(l) = lines.next() {
            if (l.starts_with("<method ") || l.starts_with("<property ")) && !l.ends_with("/>") {
                let next = lines.peek().copied().unwrap_or_default();
                assert!(
                    next.starts_with("<annotation name=\"org.gtk.GDBus.DocString\""),
                    "{}: {l} has no doc annotation",
                    path.display()
                );
            } else if l.starts_with("<method ") || l.starts_with("<property ") {
                panic!("{}: {l} has no doc annotation", path.display());
            }
        }
    }
}

/// Builds the command that runs one README example with some arguments.
type RunExample<'a> = dyn Fn(&[&str]) -> Command + 'a;

/// Checks an RSA PKCS#1 v1.5 SHA-256 signature independently of the daemon.
fn verify_sha256(public: &RsaPublicKey, data: &[u8], sig: &[u8]) {
    let scheme = rsa::Pkcs1v15Sign::new::<Sha256>();
    public.verify(scheme, &Sha256::digest(data), sig).unwrap();
}

/// A README example: `program` with `args` on the test bus, stopped if
/// it runs for more than a minute.
fn example(bus: &str, program: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.arg("60")
        .arg(program)
        .args(args)
        .env("PHONECSP_BUS", bus)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The README's examples (examples/desktop.rs and examples/desktop.py):
/// each lists the key, signs through the agent's prompt, and sees the
/// phone go and come back.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_examples_list_keys_sign_with_a_prompt_and_watch_the_phone() {
    use std::io::{BufRead, BufReader, Read};
    let mut f = fixture("", &[]).await;
    let _c = ready(&f).await;
    let a = agent(&f, &script(&f, "answer", &format!("echo {PIN}")));
    agent_registered(&f).await;
    // target/debug/deps/desktop-HASH -> target/debug/examples/desktop
    let exe = std::env::current_exe().unwrap();
    let rust = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/desktop");
    let python = std::path::PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/desktop.py"
    ));
    let bus = f.bus.address.clone();
    let runs: [(&str, Box<RunExample>); 2] = [
        ("rust", Box::new(|args: &[&str]| example(&bus, &rust, args))),
        (
            "python",
            Box::new(|args: &[&str]| {
                let mut all = vec![python.to_str().unwrap()];
                all.extend(args);
                example(&bus, std::path::Path::new("/usr/bin/python3"), &all)
            }),
        ),
    ];
    // The README's own snippet, as it stands there.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let snippet = readme
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a Python block in the README");
    let snippet_file = f.root.path().join("readme.py");
    std::fs::write(&snippet_file, snippet).unwrap();
    let out = example(
        &bus,
        std::path::Path::new("/usr/bin/python3"),
        &[snippet_file.to_str().unwrap()],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("signature: 256 bytes"),
        "README: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (name, run) in &runs {
        let stdout = phonecsp_tests::succeeded(&run(&[]).output().expect(name), name);
        assert!(
            stdout.contains(&format!("key {KEY} 'ssh key' rsa-2048")),
            "{name}: {stdout}"
        );
        assert!(stdout.contains("signature: 256 bytes"), "{name}: {stdout}");
    }
    stop(a);
    // Each watcher signs first too, through a new agent.
    let a = agent(&f, &script(&f, "answer2", &format!("echo {PIN}")));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut watchers = Vec::new();
    for (name, run) in &runs {
        let mut child = run(&["--watch", "2"]).spawn().expect(name);
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the example ended early").unwrap();
            if line == "watching" {
                break;
            }
        }
        watchers.push((name, child, lines));
    }
    f.handset.kill();
    wait_connected(&f.client, false).await;
    f.handset.start();
    wait_connected(&f.client, true).await;
    for (name, mut child, lines) in watchers {
        let seen: Vec<String> = lines.map(|l| l.unwrap()).collect();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        assert!(status.success(), "{name}: {stderr}");
        assert_eq!(
            seen,
            [format!("{HANDSET}: away"), format!("{HANDSET}: connected")],
            "{name}"
        );
    }
    stop(a);
}

/// The client library's typed object API and `phonecsp keys` read the
/// same tree the daemon publishes.
#[tokio::test(flavor = "multi_thread")]
async fn the_client_library_and_the_command_list_keys_from_the_tree() {
    let f = fixture("", &[]).await;
    let c = ready(&f).await;
    let handsets = phonecsp::objects::handsets(&c).await.unwrap();
    assert_eq!(handsets.len(), 1);
    assert_eq!(handsets[0].name, "phone");
    assert!(handsets[0].connected && handsets[0].paired);
    let keys = phonecsp::objects::keys(&c).await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let k = &keys[0];
    assert_eq!(
        (k.path.as_str(), k.handset.as_str(), k.token_name.as_str()),
        (KEY, "phone", "ssh")
    );
    assert_eq!(
        (k.label.as_str(), k.kind.as_str(), k.bits),
        ("ssh key", "rsa", 2048)
    );
    let public = RsaPublicKey::from_public_key_der(&k.public_key).unwrap();
    assert_eq!(public, key_public(&c).await);

    // The typed proxies: log in on the token, sign with the key.
    let token = phonecsp::objects::Token1Proxy::builder(&c)
        .path(k.token.clone())
        .build()
        .await
        .unwrap();
    token.login(PIN.as_bytes()).await.unwrap();
    assert!(token.logged_in().await.unwrap());
    let key = phonecsp::objects::Key1Proxy::builder(&c)
        .path(k.path.clone())
        .build()
        .await
        .unwrap();
    let data = b"through the typed proxy";
    let sig = key
        .sign("rsa-pkcs1-sha256", &Default::default(), data)
        .await
        .unwrap();
    verify_sha256(&public, data, &sig);
    // An error keeps its CK_RV through the typed proxy.
    let e = key
        .sign("rsa-pkcs1-md5", &Default::default(), data)
        .await
        .unwrap_err();
    assert_eq!(e.rv(), phonecsp_protocol::CkRv::MECHANISM_INVALID);

    let out = phonecsp_tests::phonecsp(&f.bus, None, &["--json", "keys"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = serde_json::json!([{
        "handset": "phone", "token": "ssh", "id": "01", "label": "ssh key",
        "type": "rsa", "bits": 2048, "certificate": false, "object": KEY,
    }]);
    assert_eq!(listed, want);
}

/// The handset again with `setting` (a `phonecsp-handset container ...`
/// command) applied, and the tree read again.
async fn restart_with(f: &mut Fixture, c: &Connection, setting: &[&str]) {
    f.handset.kill();
    wait_for_object(c, KEY, false).await;
    f.handset.cli_ok(setting);
    f.handset.start();
    wait_for_object(c, KEY, true).await;
}

/// Signs with an agent asking `askpass` registered; what the agent said.
async fn sign_through_agent(f: &Fixture, c: &Connection, askpass: &std::path::Path) -> String {
    let said = f.root.path().join("agent.log");
    let log = Stdio::from(std::fs::File::create(&said).unwrap());
    let a = agent_to(f, askpass, log);
    agent_registered(f).await;
    let sig = sign(c, "rsa-pkcs1-sha256", Options::new(), b"through the agent");
    assert_eq!(sig.await.unwrap().len(), 256);
    stop(a);
    std::fs::read_to_string(&said).unwrap()
}

/// Where the token takes its PIN on the phone, the agent is not asked for
/// it: it is told to say "type it on your phone", and the phone asks.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_takes_its_pin_on_the_phone_has_the_agent_say_so() {
    let mut f = fixture(
        "",
        &[
            "--prompt-command",
            &format!("test \"$PHONECSP_OPERATION\" = pin && echo {PIN}"),
        ],
    )
    .await;
    let c = ready(&f).await;
    restart_with(&mut f, &c, &["container", "pin-entry", "ssh", "handset"]).await;
    let flags: Vec<String> = property(&c, TOKEN, "org.phonecsp.Token1", "PinFlags")
        .await
        .try_into()
        .unwrap();
    assert!(flags.contains(&"pin-on-phone".to_owned()), "{flags:?}");

    // An askpass that would fail the test if it were asked.
    let never = script(&f, "never", "echo asked >&2; exit 1");
    let said = sign_through_agent(&f, &c, &never).await;
    assert!(
        said.contains("Type the PIN of 'ssh' on your phone 'phone' to let"),
        "{said}"
    );
    assert!(!said.contains("asked"), "{said}");
}

/// On a token whose owner approves each use, the caller's agent is told
/// to say "approve on your phone" while the call waits.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_that_asks_its_owner_has_the_agent_say_approve_on_the_phone() {
    let mut f = fixture("", &["--prompt-command", "sleep 1"]).await;
    let c = ready(&f).await;
    restart_with(&mut f, &c, &["container", "policy", "ssh", "confirm"]).await;
    let answer = script(&f, "answer", &format!("echo {PIN}"));
    let said = sign_through_agent(&f, &c, &answer).await;
    assert!(
        said.contains("Approve on your phone 'phone': sign with a key of 'ssh'"),
        "{said}"
    );
}
