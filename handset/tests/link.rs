//! Both ends of the link in one process: the handset's security manager
//! served over an in-memory duplex and over a raw pty pair, driven by the
//! host's client. Results are checked independently with the public key.

use phonecsp_handset::crypto;
use phonecsp_handset::manager::{Approver, Manager, offer_pairing};
use phonecsp_handset::serve::{open_pty, serve_stream};
use phonecsp_handset::store::{Container, KdfParams, Policy, Store};
use phonecsp_protocol::at::cme;
use phonecsp_protocol::ck::cka;
use phonecsp_protocol::message::{TokenInfo, token_flags};
use phonecsp_protocol::{
    CkRv, DecryptMechanism, HashAlg, HostLink, LinkError, ObjectClass, PairingCode, Reply, Request,
    SignMechanism, StaticKeypair,
};
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::path::Path;
use tokio::io::{AsyncRead, AsyncWrite};
use zeroize::Zeroizing;

const PIN: &[u8] = b"123456";
const KEY_ID: &[u8] = &[0x01];

/// A handset with an `ssh` container (one RSA-2048 key), a `disk`
/// container, and a pairing code on offer that authorises `ssh`.
fn handset(dir: &Path) -> PairingCode {
    let store = Store::init(dir, "test phone").unwrap();
    let mut c = store
        .create_container("ssh", PIN, Policy::Auto, KdfParams::FAST_FOR_TESTS)
        .unwrap();
    let kek = c.unlock(&store, PIN).unwrap();
    let key = crypto::generate(2048).unwrap();
    c.add_key(&kek, KEY_ID.to_vec(), "ssh key".into(), &key)
        .unwrap();
    store.save_container(&c).unwrap();
    store
        .create_container("disk", PIN, Policy::Auto, KdfParams::FAST_FOR_TESTS)
        .unwrap();
    let code = PairingCode::generate();
    offer_pairing(&store, &code, vec!["ssh".into()]).unwrap();
    code
}

/// Changes the "ssh" container in the store as its owner would; the
/// store is returned for the test's later looks at it.
fn edit_ssh(dir: &Path, change: impl FnOnce(&mut Container)) -> Store {
    let store = Store::open(dir).unwrap();
    let mut c = store.load_container("ssh").unwrap();
    change(&mut c);
    store.save_container(&c).unwrap();
    store
}

/// An approver that asks the owner by running `command` (no terminal, no
/// time limit of its own): its exit status is the answer.
fn prompting(command: String) -> Approver {
    Approver {
        command: Some(command),
        terminal: false,
        timeout: None,
        ..Approver::default()
    }
}

/// The bytes one request took on the line, both ways, between two looks
/// at the link's counters; printed, for the comparison in the test's log.
fn bytes_between(
    before: &phonecsp_protocol::LinkStats,
    after: &phonecsp_protocol::LinkStats,
    binary: bool,
    what: &str,
) -> u64 {
    let out = after.bytes_out - before.bytes_out;
    let inb = after.bytes_in - before.bytes_in;
    let encoding = if binary { "binary" } else { "text" };
    println!(
        "{encoding} {what}: {out} bytes to the handset, {inb} back, {} in all",
        out + inb
    );
    out + inb
}

fn manager(dir: &Path, approver: Approver) -> Manager {
    Manager::new(Store::open(dir).unwrap(), approver)
}

type Duplex = HostLink<
    tokio::io::ReadHalf<tokio::io::DuplexStream>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
>;

/// Starts the handset on one end of a duplex and opens the host link on the other.
async fn duplex(mut m: Manager) -> Duplex {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let _ = serve_stream(&mut m, b, 4096).await;
    });
    let (r, w) = tokio::io::split(a);
    HostLink::open(r, w).await.unwrap()
}

async fn call<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    l: &mut HostLink<R, W>,
    r: Request,
) -> Result<Reply, CkRv> {
    match l.call(&r).await {
        Ok(reply) => Ok(reply),
        Err(LinkError::Token(rv)) => Err(rv),
        Err(e) => panic!("link failed: {e}"),
    }
}

/// Logs in to the `ssh` container with the right PIN.
async fn log_in<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(l: &mut HostLink<R, W>) {
    call(l, Request::login("ssh", PIN)).await.unwrap();
}

/// The `ssh` container's token information.
async fn ssh_info<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    l: &mut HostLink<R, W>,
) -> TokenInfo {
    let container = "ssh".into();
    match call(l, Request::TokenInfo { container }).await {
        Ok(Reply::TokenInfo(t)) => t,
        other => panic!("token info: {other:?}"),
    }
}

fn pubkey(attrs: &[(u32, Vec<u8>)]) -> RsaPublicKey {
    let get = |t| attrs.iter().find(|(a, _)| *a == t).unwrap().1.clone();
    RsaPublicKey::new(
        BigUint::from_bytes_be(&get(cka::MODULUS)),
        BigUint::from_bytes_be(&get(cka::PUBLIC_EXPONENT)),
    )
    .unwrap()
}

/// The `ssh` container's name, as the requests below name it.
fn ssh() -> String {
    "ssh".to_string()
}

fn attributes(class: ObjectClass, id: &[u8]) -> Request {
    let id = id.to_vec();
    Request::GetAttributes {
        container: ssh(),
        class,
        id,
    }
}

fn sign(id: &[u8], mechanism: SignMechanism, data: Vec<u8>) -> Request {
    let id = id.to_vec();
    Request::Sign {
        container: ssh(),
        id,
        mechanism,
        data,
    }
}

fn decrypt(mechanism: DecryptMechanism, data: Vec<u8>) -> Request {
    let id = KEY_ID.to_vec();
    Request::Decrypt {
        container: ssh(),
        id,
        mechanism,
        data,
    }
}

/// Sends `$request` and takes the reply of the kind `$pat`.
macro_rules! answer {
    ($l:expr, $request:expr, $pat:pat => $out:expr) => {
        match call($l, $request).await {
            Ok($pat) => $out,
            other => panic!("unexpected answer: {other:?}"),
        }
    };
}

/// Runs every command's happy path and checks each result independently.
async fn exercise<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(l: &mut HostLink<R, W>) {
    // Only the authorised container is listed.
    let list = answer!(l, Request::ListContainers, Reply::Containers(c) => c);
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "ssh");
    assert_ne!(list[0].flags & token_flags::LOGIN_REQUIRED, 0);
    let info = answer!(l, Request::TokenInfo { container: ssh() }, Reply::TokenInfo(i) => i);
    assert_eq!(info.retries_left, 5);
    assert_eq!(info.serial.len(), 16);

    // Objects: private + public key.
    let find = |class, id: Option<&[u8]>, label: Option<&str>| Request::FindObjects {
        container: ssh(),
        class,
        id: id.map(<[u8]>::to_vec),
        label: label.map(str::to_owned),
    };
    let all = answer!(l, find(None, None, None), Reply::Objects(o) => o);
    assert_eq!(all.len(), 2);
    let private = find(Some(ObjectClass::PrivateKey), Some(KEY_ID), Some("ssh key"));
    assert_eq!(answer!(l, private, Reply::Objects(o) => o).len(), 1);
    let public = attributes(ObjectClass::PublicKey, KEY_ID);
    let pk = pubkey(&answer!(l, public, Reply::Attributes(a) => a));

    // Private-key operations need a login.
    let digest = Sha256::digest(b"message");
    let mut di = HashAlg::Sha256.digest_info_prefix().to_vec();
    di.extend_from_slice(&digest);
    let pkcs1 = sign(KEY_ID, SignMechanism::Pkcs1, di.clone());
    assert_eq!(call(l, pkcs1.clone()).await, Err(CkRv::USER_NOT_LOGGED_IN));
    answer!(l, Request::login("ssh", PIN), Reply::Done => ());

    let sig = answer!(l, pkcs1, Reply::Signature(s) => s);
    pk.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap();
    let pss = SignMechanism::Pss {
        hash: HashAlg::Sha256,
        salt_len: 32,
    };
    let sig = answer!(l, sign(KEY_ID, pss, digest.to_vec()), Reply::Signature(s) => s);
    pk.verify(Pss::new_with_salt::<Sha256>(32), &digest, &sig)
        .unwrap();

    let mut rng = rand::rngs::OsRng;
    let ct = pk
        .encrypt(&mut rng, Pkcs1v15Encrypt, b"pkcs1 secret")
        .unwrap();
    let p = answer!(l, decrypt(DecryptMechanism::Pkcs1, ct), Reply::Plaintext(p) => p);
    assert_eq!(&p[..], b"pkcs1 secret");
    let ct = pk
        .encrypt(&mut rng, Oaep::new::<Sha256>(), b"oaep secret")
        .unwrap();
    let oaep = DecryptMechanism::Oaep {
        hash: HashAlg::Sha256,
        label: vec![],
    };
    let p = answer!(l, decrypt(oaep, ct.clone()), Reply::Plaintext(p) => p);
    assert_eq!(&p[..], b"oaep secret");

    // Re-wrap to a new key: only that key's owner can read the secret now.
    let recovery = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let spki = recovery.to_public_key().to_public_key_der().unwrap();
    let rewrap = Request::Rewrap {
        container: ssh(),
        id: KEY_ID.to_vec(),
        in_hash: HashAlg::Sha256,
        data: ct,
        out_hash: HashAlg::Sha256,
        spki: spki.as_bytes().to_vec(),
    };
    let re = answer!(l, rewrap, Reply::Rewrapped(r) => r);
    let secret = recovery.decrypt(Oaep::new::<Sha256>(), &re).unwrap();
    assert_eq!(secret, b"oaep secret");

    // Random.
    let r = answer!(l, Request::GenerateRandom { len: 64 }, Reply::Random(r) => r);
    assert_eq!(r.len(), 64);
    assert_ne!(r, vec![0u8; 64]);

    // Key generation on the handset; its key signs.
    let generate = Request::GenerateKeyPair {
        container: ssh(),
        bits: 2048,
        id: vec![2],
        label: "new".into(),
    };
    let (id, n, e) =
        answer!(l, generate, Reply::KeyPair { id, modulus, exponent } => (id, modulus, exponent));
    assert_eq!(id, vec![2]);
    let pk2 = RsaPublicKey::new(BigUint::from_bytes_be(&n), BigUint::from_bytes_be(&e)).unwrap();
    let sig = answer!(l, sign(&[2], SignMechanism::Pkcs1, di), Reply::Signature(s) => s);
    pk2.verify(Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
        .unwrap();

    // A key made elsewhere, as large as the handset holds: its PKCS#8
    // crosses in two AT+CKX parts at a line limit of 4096 (docs/protocol.md
    // section 7.24); it is recorded as imported, and its statement says so.
    let made = rsa::RsaPrivateKey::new(&mut rng, 4096).unwrap();
    let pkcs8 = made.to_pkcs8_der().unwrap();
    let import = Request::ImportKey {
        container: ssh(),
        id: vec![3],
        label: "moved".into(),
        pkcs8: Zeroizing::new(pkcs8.as_bytes().to_vec()),
    };
    // More than one line's 3063 bytes of frame (section 6.3).
    assert!(import.encode().unwrap().len() + 16 > 3063);
    let (id, n) = answer!(l, import, Reply::KeyPair { id, modulus, .. } => (id, modulus));
    assert_eq!((id, n), (vec![3], made.n().to_bytes_be()));
    let a = answer!(l, attributes(ObjectClass::PrivateKey, &[3]), Reply::Attributes(a) => a);
    assert!(a.contains(&(cka::LOCAL, vec![0])), "{a:?}");
    let attest = Request::Attest {
        container: ssh(),
        id: vec![3],
        nonce: vec![5; 32],
    };
    let statement = answer!(l, attest, Reply::Attestation(s) => s);
    let s = phonecsp_protocol::attest::Statement::verify(&statement).unwrap();
    assert!(!s.local());
    assert_eq!(
        (s.label.as_str(), s.nonce.as_slice()),
        ("moved", &[5u8; 32][..])
    );
    let destroy = Request::DestroyKey {
        container: ssh(),
        id: vec![3],
    };
    answer!(l, destroy, Reply::Done => ());

    // A certificate for the new key: stored, reported, deleted.
    let der = test_cert();
    let put = Request::PutCertificate {
        container: ssh(),
        id: vec![2],
        label: "new".into(),
        der: der.clone(),
    };
    answer!(l, put, Reply::Done => ());
    let a = answer!(l, attributes(ObjectClass::Certificate, &[2]), Reply::Attributes(a) => a);
    assert!(a.iter().any(|(t, v)| *t == cka::VALUE && *v == der));
    assert!(a.iter().any(|(t, v)| *t == cka::SUBJECT && !v.is_empty()));
    let by_id = |make: fn(String, Vec<u8>) -> Request| make(ssh(), vec![2]);
    let delete = by_id(|container, id| Request::DeleteCertificate { container, id });
    answer!(l, delete, Reply::Done => ());
    let cert = call(l, attributes(ObjectClass::Certificate, &[2])).await;
    assert_eq!(cert, Err(CkRv::OBJECT_HANDLE_INVALID));
    let destroy = by_id(|container, id| Request::DestroyKey { container, id });
    answer!(l, destroy, Reply::Done => ());
    let key = call(l, attributes(ObjectClass::PublicKey, &[2])).await;
    assert_eq!(key, Err(CkRv::OBJECT_HANDLE_INVALID));

    let logout = || Request::Logout { container: ssh() };
    answer!(l, logout(), Reply::Done => ());
    assert_eq!(call(l, logout()).await, Err(CkRv::USER_NOT_LOGGED_IN));
}

/// A self-signed certificate, made by `openssl req` (on every machine
/// that runs these tests: Debian's base has it).
fn test_cert() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = (dir.path().join("k.pem"), dir.path().join("c.der"));
    let made = std::process::Command::new("openssl")
        .args(
            "req -x509 -newkey rsa:2048 -nodes -subj /CN=handset-test -days 1 -outform DER"
                .split(' '),
        )
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    std::fs::read(cert).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn pairing_session_and_every_command_over_a_duplex() {
    let dir = tempfile::tempdir().unwrap();
    let code = handset(dir.path());
    let host = StaticKeypair::generate();
    let mut l = duplex(manager(dir.path(), Approver::default())).await;
    assert_eq!(l.version().protocol, 1);
    let (handset_key, name) = l.pair(&host, &code, "laptop").await.unwrap();
    assert_eq!(name, "test phone");
    assert_eq!(
        &handset_key,
        Store::open(dir.path()).unwrap().identity().public()
    );
    exercise(&mut l).await;

    // The code was one-time; a later connection uses the pinned keys (KK).
    let mut l = duplex(manager(dir.path(), Approver::default())).await;
    assert!(matches!(
        l.pair(&host, &code, "laptop").await,
        Err(LinkError::Cme(cme::NOT_ALLOWED))
    ));
    l.connect(&host, &handset_key).await.unwrap();
    let Reply::Containers(list) = call(&mut l, Request::ListContainers).await.unwrap() else {
        panic!()
    };
    assert_eq!(list.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn pairing_session_and_every_command_over_a_raw_pty() {
    let dir = tempfile::tempdir().unwrap();
    let code = handset(dir.path());
    let pty = open_pty().unwrap();
    let path = pty.slave_path.clone();
    let mut m = manager(dir.path(), Approver::default());
    tokio::spawn(async move {
        let _ = phonecsp_handset::serve::serve_pty(&mut m, &pty, 4096).await;
    });
    let f = tokio::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .await
        .unwrap();
    let (r, w) = tokio::io::split(f);
    let mut l = HostLink::open(r, w).await.unwrap();
    let host = StaticKeypair::generate();
    l.pair(&host, &code, "laptop").await.unwrap();
    exercise(&mut l).await;
}

/// A link to the handset in `dir`, served with `approver`, paired with
/// `code` by a new computer named "laptop".
async fn paired_by(dir: &Path, approver: Approver, code: &PairingCode) -> Duplex {
    let mut l = duplex(manager(dir, approver)).await;
    l.pair(&StaticKeypair::generate(), code, "laptop")
        .await
        .unwrap();
    l
}

/// A handset whose `ssh` container asks its owner to approve each use
/// (the confirm policy), asking by running `command`; paired, and the
/// container logged in.
async fn confirming(dir: &Path, command: String) -> Duplex {
    let code = handset(dir);
    edit_ssh(dir, |c| c.set_policy(Policy::Confirm));
    let mut l = paired_by(dir, prompting(command), &code).await;
    log_in(&mut l).await;
    l
}

async fn paired(dir: &Path) -> (Duplex, StaticKeypair, [u8; 32]) {
    let code = handset(dir);
    let host = StaticKeypair::generate();
    let mut l = duplex(manager(dir, Approver::default())).await;
    let (key, _) = l.pair(&host, &code, "laptop").await.unwrap();
    (l, host, key)
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_pin_lockout_survives_restart_and_pin_change_rewraps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut l, host, key) = paired(dir.path()).await;
    let login = |pin: &[u8]| Request::login("ssh", pin);
    assert_eq!(call(&mut l, login(b"0000")).await, Err(CkRv::PIN_INCORRECT));
    let t = ssh_info(&mut l).await;
    assert_eq!(t.retries_left, 4);
    assert_ne!(t.flags & token_flags::PIN_COUNT_LOW, 0);

    // Change the PIN; the old one fails, the new one works and the key still signs.
    call(&mut l, Request::change_pin("ssh", PIN, b"654321"))
        .await
        .unwrap();
    assert_eq!(call(&mut l, login(PIN)).await, Err(CkRv::PIN_INCORRECT));
    call(&mut l, login(b"654321")).await.unwrap();
    let di = [HashAlg::Sha256.digest_info_prefix(), &[7u8; 32][..]].concat();
    call(&mut l, sign(KEY_ID, SignMechanism::Pkcs1, di))
        .await
        .unwrap();

    // Five wrong PINs lock it.
    for _ in 0..5 {
        let r = call(&mut l, login(b"0000")).await;
        assert!(
            r == Err(CkRv::PIN_INCORRECT) || r == Err(CkRv::PIN_LOCKED),
            "{r:?}"
        );
    }
    assert_eq!(call(&mut l, login(b"654321")).await, Err(CkRv::PIN_LOCKED));
    drop(l);

    // A restarted handset (new manager, store reopened) is still locked.
    let mut l = duplex(manager(dir.path(), Approver::default())).await;
    l.connect(&host, &key).await.unwrap();
    assert_eq!(call(&mut l, login(b"654321")).await, Err(CkRv::PIN_LOCKED));
    let t = ssh_info(&mut l).await;
    assert_ne!(t.flags & token_flags::PIN_LOCKED, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorised_and_revoked_hosts_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut l, host, key) = paired(dir.path()).await;
    // `disk` exists but this host is not authorised: it looks absent.
    assert_eq!(
        call(
            &mut l,
            Request::TokenInfo {
                container: "disk".into()
            }
        )
        .await,
        Err(CkRv::TOKEN_NOT_PRESENT)
    );
    assert_eq!(
        call(&mut l, Request::login("disk", PIN)).await,
        Err(CkRv::TOKEN_NOT_PRESENT)
    );

    // The owner revokes the host for `ssh`: refused at once, same session.
    let store = Store::open(dir.path()).unwrap();
    let mut hosts = store.load_hosts().unwrap();
    hosts.hosts[0].containers.clear();
    store.save_hosts(&hosts).unwrap();
    assert_eq!(
        call(
            &mut l,
            Request::TokenInfo {
                container: "ssh".into()
            }
        )
        .await,
        Err(CkRv::TOKEN_NOT_PRESENT)
    );
    let Reply::Containers(list) = call(&mut l, Request::ListContainers).await.unwrap() else {
        panic!()
    };
    assert!(list.is_empty());

    // The owner unpairs the host: its handshake fails.
    hosts.hosts.clear();
    store.save_hosts(&hosts).unwrap();
    let mut l = duplex(manager(dir.path(), Approver::default())).await;
    assert!(matches!(
        l.connect(&host, &key).await,
        Err(LinkError::Cme(cme::HANDSHAKE_FAILED))
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn approval_policy_asks_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let answer = dir.path().join("answer");
    let command = format!(
        "test \"$PHONECSP_OPERATION\" = sign && test -e {}",
        answer.display()
    );
    let mut l = confirming(dir.path(), command).await;
    let sign = sign(KEY_ID, SignMechanism::Pkcs1, vec![1; 51]);
    assert_eq!(
        call(&mut l, sign.clone()).await,
        Err(CkRv::FUNCTION_REJECTED)
    );
    std::fs::write(&answer, b"yes").unwrap();
    call(&mut l, sign).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_on_the_link_for_one_rsa2048_signature() {
    let dir = tempfile::tempdir().unwrap();
    let (mut l, host, handset_key) = paired(dir.path()).await;
    let di = [
        HashAlg::Sha256.digest_info_prefix(),
        &Sha256::digest(b"x")[..],
    ]
    .concat();
    let attrs = match call(&mut l, attributes(ObjectClass::PublicKey, KEY_ID)).await {
        Ok(Reply::Attributes(a)) => a,
        other => panic!("public key: {other:?}"),
    };
    let ct = pubkey(&attrs)
        .encrypt(&mut rand::rngs::OsRng, Oaep::new::<Sha256>(), &[7; 32])
        .unwrap();
    let decrypt = decrypt(
        DecryptMechanism::Oaep {
            hash: HashAlg::Sha256,
            label: Vec::new(),
        },
        ct,
    );
    // The pairing session stays in text; a KK session offers binary frames.
    let mut measured = Vec::new();
    for binary in [false, true] {
        if binary {
            l.connect(&host, &handset_key).await.unwrap();
        }
        assert_eq!(l.is_binary(), binary);
        log_in(&mut l).await;
        for req in [
            sign(KEY_ID, SignMechanism::Pkcs1, di.clone()),
            decrypt.clone(),
        ] {
            let before = l.stats();
            call(&mut l, req.clone()).await.unwrap();
            let after = l.stats();
            measured.push(bytes_between(&before, &after, binary, req.name()));
        }
    }
    // The payload alone is 51 + 256 bytes for the signature, 256 + 32 for
    // the decryption. Text adds base64 twice and the command text; binary
    // frames (docs/protocol.md section 6.7) the Noise tags and a few bytes.
    let [text_sign, text_dec, bin_sign, bin_dec] = measured[..] else {
        panic!("{measured:?}")
    };
    assert!(text_sign <= 700 && text_dec <= 700, "{measured:?}");
    assert!(bin_sign <= 360, "binary signature: {bin_sign} bytes");
    assert!(bin_dec <= 350, "binary decryption: {bin_dec} bytes");
}

/// Drives the handset's responder line by line, as an attacker on the
/// wire could: frames replayed or altered end the session, and an unpaired
/// peer gets nothing but the handshake.
#[test]
fn replayed_and_tampered_frames_end_the_session() {
    use phonecsp_protocol::Responder;
    use phonecsp_protocol::at::quote_b64;
    use phonecsp_protocol::noise::HostSessionHandshake;

    let dir = tempfile::tempdir().unwrap();
    let code = handset(dir.path());
    let host = StaticKeypair::generate();
    // Pair through a host link first so the handset pins `host`.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let handset_key = rt.block_on(async {
        let mut l = duplex(manager(dir.path(), Approver::default())).await;
        l.pair(&host, &code, "laptop").await.unwrap().0
    });

    let mut m = manager(dir.path(), Approver::default());
    let mut r = Responder::new(4096, "test");
    let mut say =
        |line: &str| String::from_utf8(r.receive(&mut m, format!("{line}\r").as_bytes())).unwrap();
    assert!(say("ATE0").ends_with("\r\nOK\r\n"));

    // Unpaired peer / no session: only the handshake commands are answered.
    assert!(say("AT").ends_with("\r\nOK\r\n"));
    assert!(say("AT+CKVER?").contains("+CKVER: 1,"));
    assert!(say("AT+CKX=\"AAAA\"").ends_with("+CME ERROR: 3\r\n"));
    assert!(say("AT+CKLIST").ends_with("\r\nERROR\r\n"));
    let stranger = StaticKeypair::generate();
    let (_, m1) = HostSessionHandshake::start(&stranger, &handset_key).unwrap();
    assert!(say(&format!("AT+CKHS=2,{}", quote_b64(&m1))).ends_with("+CME ERROR: 701\r\n"));

    // A real session.
    let (h, m1) = HostSessionHandshake::start(&host, &handset_key).unwrap();
    let out = say(&format!("AT+CKHS=2,{}", quote_b64(&m1)));
    let m2 = phonecsp_protocol::at::decode_b64(out.split('"').nth(1).unwrap()).unwrap();
    let mut s = h.finish(&m2).unwrap();
    let f1 = s.encrypt(b"+CKLIST").unwrap();
    assert!(say(&format!("AT+CKX={}", quote_b64(&f1))).contains("+CKX: \""));
    // Replaying the same frame ends the session...
    assert!(say(&format!("AT+CKX={}", quote_b64(&f1))).ends_with("+CME ERROR: 702\r\n"));
    // ...so even a fresh, genuine frame is refused afterwards.
    let f2 = s.encrypt(b"+CKLIST").unwrap();
    assert!(say(&format!("AT+CKX={}", quote_b64(&f2))).ends_with("+CME ERROR: 3\r\n"));

    // A new session; a tampered frame ends it too.
    let (h, m1) = HostSessionHandshake::start(&host, &handset_key).unwrap();
    let out = say(&format!("AT+CKHS=2,{}", quote_b64(&m1)));
    let m2 = phonecsp_protocol::at::decode_b64(out.split('"').nth(1).unwrap()).unwrap();
    let mut s = h.finish(&m2).unwrap();
    let mut f = s.encrypt(b"+CKRAND=8").unwrap();
    f[0] ^= 0x80;
    assert!(say(&format!("AT+CKX={}", quote_b64(&f))).ends_with("+CME ERROR: 702\r\n"));
    let f = s.encrypt(b"+CKRAND=8").unwrap();
    assert!(say(&format!("AT+CKX={}", quote_b64(&f))).ends_with("+CME ERROR: 3\r\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn pin_typed_on_the_phone_never_crosses_the_link() {
    use phonecsp_handset::store::PinEntry;
    let dir = tempfile::tempdir().unwrap();
    let code = handset(dir.path());
    let store = Store::open(dir.path()).unwrap();
    let answer = dir.path().join("typed");
    // The "person": the prompt command prints what they typed, or gives up.
    let approver = prompting(format!(
        "test \"$PHONECSP_OPERATION\" = pin && test -e {a} && cat {a}",
        a = answer.display()
    ));
    let host = StaticKeypair::generate();
    let mut l = duplex(manager(dir.path(), approver)).await;
    l.pair(&host, &code, "laptop").await.unwrap();
    let empty = || Request::login("ssh", b"");

    // Not allowed while the container takes its PIN from the computer.
    assert_eq!(call(&mut l, empty()).await, Err(CkRv::PIN_LEN_RANGE));
    let t = ssh_info(&mut l).await;
    assert_eq!(t.flags & token_flags::PROTECTED_PATH, 0);

    let mut c = store.load_container("ssh").unwrap();
    c.set_pin_entry(PinEntry::Handset);
    store.save_container(&c).unwrap();
    let t = ssh_info(&mut l).await;
    assert_ne!(t.flags & token_flags::PROTECTED_PATH, 0);

    // Nobody answers: cancelled, and no try is used up.
    assert_eq!(call(&mut l, empty()).await, Err(CkRv::FUNCTION_CANCELED));
    assert_eq!(store.load_container("ssh").unwrap().retries_left(), 5);
    // A wrong PIN typed on the phone counts like any other.
    std::fs::write(&answer, b"999999\n").unwrap();
    assert_eq!(call(&mut l, empty()).await, Err(CkRv::PIN_INCORRECT));
    assert_eq!(store.load_container("ssh").unwrap().retries_left(), 4);
    // The right one logs the session in.
    std::fs::write(&answer, [PIN, b"\n"].concat()).unwrap();
    call(&mut l, empty()).await.unwrap();
    let di = [HashAlg::Sha256.digest_info_prefix(), &[1u8; 32][..]].concat();
    call(&mut l, sign(KEY_ID, SignMechanism::Pkcs1, di))
        .await
        .unwrap();
    // A PIN from the computer still works too.
    log_in(&mut l).await;
}

/// The owner's audit log after a scripted session: the pairing, a wrong
/// and a right login, a signature and a refused decryption, and the
/// owner's revocation, each with its computer, container, key and result,
/// read back through `phonecsp-handset log --json`; no PIN in it.
#[tokio::test(flavor = "multi_thread")]
async fn the_audit_log_records_a_session_and_the_owner() {
    let dir = tempfile::tempdir().unwrap();
    let (mut l, _, _) = paired(dir.path()).await;
    let wrong = Request::login("ssh", b"999999");
    assert_eq!(call(&mut l, wrong).await, Err(CkRv::PIN_INCORRECT));
    log_in(&mut l).await;
    let di = [HashAlg::Sha256.digest_info_prefix(), &[3; 32][..]].concat();
    call(&mut l, sign(KEY_ID, SignMechanism::Pkcs1, di))
        .await
        .unwrap();
    let bad = decrypt(DecryptMechanism::Pkcs1, vec![1; 3]);
    assert!(call(&mut l, bad).await.is_err());
    // Reads are not recorded.
    ssh_info(&mut l).await;
    drop(l);
    let handset = env!("CARGO_BIN_EXE_phonecsp-handset");
    let state = dir.path().to_str().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(handset)
            .args(["--state", state])
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    run(&["hosts", "revoke", "laptop", "ssh"]);
    let log = run(&["log", "--json"]);
    let entries: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let brief: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["event"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        brief,
        [
            ("pair", "ok"),
            ("login", "CKR_PIN_INCORRECT"),
            ("login", "ok"),
            ("sign", "ok"),
            ("decrypt", "CKR_ENCRYPTED_DATA_LEN_RANGE"),
            ("owner: revoke", "ok"),
        ],
        "{log}"
    );
    let sign = &entries[3];
    assert_eq!(sign["host"], "laptop");
    assert_eq!(sign["container"], "ssh");
    assert_eq!(sign["key"], "01");
    assert!(sign["fingerprint"].as_str().unwrap().contains(':'));
    assert_eq!(entries[5]["host"], "laptop");
    assert!(!log.contains("999999") && !log.contains("123456"), "{log}");
    // The person's view, and the last entries only.
    let shown = run(&["log", "-n", "1"]);
    assert!(
        shown.contains("owner: revoke") && shown.contains("container 'ssh'"),
        "{shown}"
    );
    assert_eq!(shown.lines().count(), 1);
}

/// A PIN typed on the phone through Debian's real `pinentry-tty`, on a pty
/// where the test plays the person: the right PIN logs in, a wrong one
/// costs a try, and cancelling (Ctrl-D) costs none.
#[tokio::test(flavor = "multi_thread")]
async fn pin_typed_through_the_real_pinentry_tty() {
    use phonecsp_handset::store::PinEntry;
    use std::io::{Read, Write};
    let program = std::path::Path::new("/usr/bin/pinentry-tty");
    assert!(
        program.exists(),
        "pinentry-tty (scripts/install-deps installs it)"
    );
    let pty = nix::pty::openpty(None, None).unwrap();
    let tty = nix::unistd::ttyname(&pty.slave).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let code = handset(dir.path());
    let store = edit_ssh(dir.path(), |c| c.set_pin_entry(PinEntry::Handset));
    let approver = Approver {
        pinentry: Some(program.to_owned()),
        pinentry_tty: Some(tty.display().to_string()),
        timeout: Some(std::time::Duration::from_secs(20)),
        ..Approver::default()
    };
    let mut l = paired_by(dir.path(), approver, &code).await;
    // The person: waits for the prompt on the terminal, then types.
    let master = std::fs::File::from(pty.master);
    let person = |typed: &'static [u8]| {
        let mut m = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut buf = [0u8; 256];
            while !String::from_utf8_lossy(&seen).contains("PIN:") {
                let n = m.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            m.write_all(typed).unwrap();
            String::from_utf8_lossy(&seen).into_owned()
        })
    };
    let empty = || Request::login("ssh", b"");
    let typing = person(b"999999\r");
    assert_eq!(call(&mut l, empty()).await, Err(CkRv::PIN_INCORRECT));
    let shown = typing.join().unwrap();
    assert!(
        shown.contains("laptop") && shown.contains("'ssh'"),
        "{shown}"
    );
    assert_eq!(store.load_container("ssh").unwrap().retries_left(), 4);
    let typing = person(b"\x04");
    assert_eq!(call(&mut l, empty()).await, Err(CkRv::FUNCTION_CANCELED));
    typing.join().unwrap();
    assert_eq!(store.load_container("ssh").unwrap().retries_left(), 4);
    let typing = person(b"123456\r");
    call(&mut l, empty()).await.unwrap();
    typing.join().unwrap();
    let di = [HashAlg::Sha256.digest_info_prefix(), &[1u8; 32][..]].concat();
    call(&mut l, sign(KEY_ID, SignMechanism::Pkcs1, di))
        .await
        .unwrap();
    drop(pty.slave);
}

/// A notification server as the Desktop Notifications specification has
/// it, on a private session bus; it answers each notification as the
/// test scripts: an action, or a close with a reason.
mod notifications {
    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};
    use zbus::OwnedVariant;
    use zbus::object_server::SignalEmitter;

    #[derive(Debug, Clone)]
    pub enum Then {
        Action(&'static str),
        Closed(u32),
    }

    #[derive(Debug, Clone)]
    pub struct Shown {
        pub summary: String,
        pub body: String,
        pub actions: Vec<String>,
        pub urgency: Option<u8>,
    }

    #[derive(Default)]
    pub struct State {
        pub script: VecDeque<Then>,
        pub shown: Vec<Shown>,
    }

    pub struct Server(pub Arc<Mutex<State>>);

    #[zbus::interface(name = "org.freedesktop.Notifications")]
    impl Server {
        #[allow(clippy::too_many_arguments)]
        async fn notify(
            &self,
            #[zbus(signal_emitter)] e: SignalEmitter<'_>,
            _app_name: String,
            _replaces_id: u32,
            _app_icon: String,
            summary: String,
            body: String,
            actions: Vec<String>,
            hints: HashMap<String, OwnedVariant>,
            _expire_timeout: i32,
        ) -> u32 {
            let urgency = hints.get("urgency").and_then(|v| u8::try_from(v).ok());
            let (id, then) = {
                let mut s = self.0.lock().unwrap();
                s.shown.push(Shown {
                    summary,
                    body,
                    actions,
                    urgency,
                });
                (s.shown.len() as u32, s.script.pop_front())
            };
            match then {
                Some(Then::Action(key)) => Self::action_invoked(&e, id, key).await.unwrap(),
                Some(Then::Closed(reason)) => {
                    Self::notification_closed(&e, id, reason).await.unwrap()
                }
                None => {}
            }
            id
        }

        fn close_notification(&self, _id: u32) {}

        fn get_capabilities(&self) -> Vec<String> {
            vec!["actions".into(), "body".into()]
        }

        fn get_server_information(&self) -> (String, String, String, String) {
            ("test".into(), "phonecsp".into(), "1".into(), "1.2".into())
        }

        #[zbus(signal)]
        async fn action_invoked(
            e: &SignalEmitter<'_>,
            id: u32,
            action_key: &str,
        ) -> zbus::Result<()>;

        #[zbus(signal)]
        async fn notification_closed(
            e: &SignalEmitter<'_>,
            id: u32,
            reason: u32,
        ) -> zbus::Result<()>;
    }
}

/// Approvals through the desktop's notifications: a critical notification
/// naming the computer, the operation and the key with Allow, Deny and
/// "Allow for a while"; Deny and a dismissal refuse, an expiry cancels,
/// Allow allows once, and "Allow for" spares the next question.
#[tokio::test(flavor = "multi_thread")]
async fn approvals_through_desktop_notifications() {
    use notifications::{Server, State, Then};
    use phonecsp_handset::notify::Notifier;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let bus = dir.path().join("bus");
    let mut daemon = std::process::Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--nopidfile"])
        .arg(format!("--address=unix:path={}", bus.display()))
        .spawn()
        .expect("dbus-daemon");
    while !bus.exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let address = format!("unix:path={}", bus.display());
    let state = Arc::new(Mutex::new(State::default()));
    let _server = zbus::connection::Builder::address(address.as_str())
        .serve_at("/org/freedesktop/Notifications", Server(state.clone()))
        .name("org.freedesktop.Notifications")
        .build()
        .await
        .unwrap();

    let code = handset(dir.path());
    edit_ssh(dir.path(), |c| c.set_policy(Policy::Confirm));
    let approver = Approver {
        notifier: Some(Notifier {
            address: Some(address),
            allow_for: Some(std::time::Duration::from_secs(3600)),
        }),
        timeout: Some(std::time::Duration::from_secs(20)),
        ..Approver::default()
    };
    let mut l = paired_by(dir.path(), approver, &code).await;
    log_in(&mut l).await;
    let di = [HashAlg::Sha256.digest_info_prefix(), &[5u8; 32][..]].concat();
    let sign = || sign(KEY_ID, SignMechanism::Pkcs1, di.clone());
    state.lock().unwrap().script = [
        Then::Action("deny"),
        Then::Closed(2),
        Then::Closed(1),
        Then::Action("allow"),
        Then::Action("allow-for"),
    ]
    .into();
    assert_eq!(call(&mut l, sign()).await, Err(CkRv::FUNCTION_REJECTED));
    assert_eq!(call(&mut l, sign()).await, Err(CkRv::FUNCTION_REJECTED));
    assert_eq!(call(&mut l, sign()).await, Err(CkRv::FUNCTION_CANCELED));
    call(&mut l, sign()).await.unwrap();
    call(&mut l, sign()).await.unwrap();
    // Allowed for an hour: no more questions for this computer and container.
    call(&mut l, sign()).await.unwrap();
    call(&mut l, sign()).await.unwrap();
    let shown = state.lock().unwrap().shown.clone();
    assert_eq!(shown.len(), 5, "{shown:?}");
    let n = &shown[0];
    assert!(
        n.summary.contains("laptop") && n.summary.contains("sign"),
        "{n:?}"
    );
    assert!(
        n.body.contains("'ssh key'") && n.body.contains("'ssh'"),
        "{n:?}"
    );
    assert_eq!(n.urgency, Some(2));
    let keys: Vec<&str> = n.actions.iter().step_by(2).map(String::as_str).collect();
    assert_eq!(keys, ["allow", "allow-for", "deny"]);
    assert_eq!(n.actions[3], "Allow for 60 min");
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// Pairing with an eight-digit code through the PAKE: the right code
/// pairs and opens a session; a wrong one fails at the handshake's last
/// message and counts, and after three the phone withdraws the offer, so
/// even the right code no longer pairs. The long code stays a fallback.
#[tokio::test(flavor = "multi_thread")]
async fn pairing_with_a_short_code() {
    use phonecsp_handset::manager::offer_short_pairing;
    use phonecsp_protocol::pake::ShortCode;
    let dir = tempfile::tempdir().unwrap();
    let long = handset(dir.path());
    let store = Store::open(dir.path()).unwrap();
    let short = ShortCode::parse("2718-2818").unwrap();
    offer_short_pairing(&store, &long, &short, vec!["ssh".into()]).unwrap();
    let mut l = duplex(manager(dir.path(), Approver::default())).await;
    let host = StaticKeypair::generate();
    let (handset_key, name) = l.pair(&host, &short, "laptop").await.unwrap();
    assert_eq!(name, "test phone");
    log_in(&mut l).await;
    // Used up: the long code of the same offer is gone too.
    assert!(
        l.pair(&StaticKeypair::generate(), &long, "other")
            .await
            .is_err()
    );
    l.connect(&host, &handset_key).await.unwrap();
    log_in(&mut l).await;

    offer_short_pairing(&store, &long, &short, vec!["ssh".into()]).unwrap();
    for guess in ["0000-0001", "0000-0002", "0000-0003"] {
        let wrong = ShortCode::parse(guess).unwrap();
        let e = l.pair(&StaticKeypair::generate(), &wrong, "mallory").await;
        assert!(
            matches!(e, Err(LinkError::Cme(cme::HANDSHAKE_FAILED))),
            "{e:?}"
        );
    }
    let e = l.pair(&StaticKeypair::generate(), &short, "late").await;
    assert!(matches!(e, Err(LinkError::Cme(cme::NOT_ALLOWED))), "{e:?}");
    let names: Vec<String> = store
        .load_hosts()
        .unwrap()
        .hosts
        .iter()
        .map(|h| h.name.clone())
        .collect();
    assert_eq!(names, ["laptop"]);
}

/// EC keys over the link (issue 15): generated with `+CKGENEC`, listed
/// with their curve and point, ECDSA and EdDSA signatures that verify,
/// ECDH that agrees with the computer's own, bad points refused, RSA
/// mechanisms refused for an EC key; and what each EC signature costs on
/// the line in text and in binary frames.
#[tokio::test(flavor = "multi_thread")]
async fn ec_keys_over_the_link_and_their_bytes() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use phonecsp_protocol::Curve;
    let dir = tempfile::tempdir().unwrap();
    let (mut l, host, handset_key) = paired(dir.path()).await;
    log_in(&mut l).await;
    let generate = |curve, id: u8| Request::GenerateEcKeyPair {
        container: ssh(),
        curve,
        id: vec![id],
        label: format!("ec {id}"),
    };
    let point = |r| match r {
        Ok(Reply::EcKeyPair { point, .. }) => point,
        other => panic!("+CKGENEC: {other:?}"),
    };
    let p256_point = point(call(&mut l, generate(Curve::P256, 5)).await);
    let ed_point = point(call(&mut l, generate(Curve::Ed25519, 8)).await);
    assert_eq!((p256_point.len(), ed_point.len()), (65, 32));
    // The same id twice: refused, the first key kept.
    assert_eq!(
        call(&mut l, generate(Curve::P384, 5)).await,
        Err(CkRv::ATTRIBUTE_VALUE_INVALID)
    );
    let attrs = match call(&mut l, attributes(ObjectClass::PublicKey, &[5])).await {
        Ok(Reply::Attributes(a)) => a,
        other => panic!("{other:?}"),
    };
    let get = |t| attrs.iter().find(|(a, _)| *a == t).unwrap().1.clone();
    assert_eq!(get(cka::EC_PARAMS), Curve::P256.ec_params());
    assert_eq!(get(cka::EC_POINT), Curve::ec_point_der(&p256_point));
    assert_eq!(get(cka::KEY_TYPE), 3u64.to_be_bytes());

    let digest = Sha256::digest(b"message").to_vec();
    let vk = p256::ecdsa::VerifyingKey::from_sec1_bytes(&p256_point).unwrap();
    let ed =
        ed25519_dalek::VerifyingKey::from_bytes(&ed_point.clone().try_into().unwrap()).unwrap();
    // RSA's mechanisms with an EC key, and ECDSA with Ed25519: by type.
    for (id, m) in [
        (5, SignMechanism::Pkcs1),
        (5, SignMechanism::Eddsa),
        (8, SignMechanism::Ecdsa),
    ] {
        assert_eq!(
            call(&mut l, sign(&[id], m, digest.clone())).await,
            Err(CkRv::KEY_TYPE_INCONSISTENT)
        );
    }
    assert_eq!(
        call(&mut l, sign(&[5], SignMechanism::Ecdsa, vec![])).await,
        Err(CkRv::DATA_LEN_RANGE)
    );

    // ECDH: Z agrees with the computer's side; bad points are refused.
    let mine = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let my_point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&mine.public_key(), false);
    let derive = |peer: Vec<u8>| Request::Derive {
        container: ssh(),
        id: vec![5],
        peer,
    };
    let z = match call(&mut l, derive(my_point.as_bytes().to_vec())).await {
        Ok(Reply::Derived(z)) => z,
        other => panic!("{other:?}"),
    };
    let peer = p256::PublicKey::from_sec1_bytes(&p256_point).unwrap();
    let want = p256::ecdh::diffie_hellman(mine.to_nonzero_scalar(), peer.as_affine());
    assert_eq!(&z[..], &want.raw_secret_bytes()[..]);
    let mut off = my_point.as_bytes().to_vec();
    off[64] ^= 1;
    assert_eq!(call(&mut l, derive(off)).await, Err(CkRv::DATA_INVALID));
    assert_eq!(call(&mut l, derive(vec![0])).await, Err(CkRv::DATA_INVALID));

    let mut measured = Vec::new();
    for binary in [false, true] {
        if binary {
            l.connect(&host, &handset_key).await.unwrap();
            log_in(&mut l).await;
        }
        assert_eq!(l.is_binary(), binary);
        for (id, m, data) in [
            (5u8, SignMechanism::Ecdsa, digest.clone()),
            (8, SignMechanism::Eddsa, b"message".to_vec()),
        ] {
            let before = l.stats();
            let sig = match call(&mut l, sign(&[id], m, data.clone())).await {
                Ok(Reply::Signature(s)) => s,
                other => panic!("{other:?}"),
            };
            let after = l.stats();
            assert_eq!(sig.len(), 64);
            match m {
                SignMechanism::Ecdsa => vk
                    .verify_prehash(&data, &p256::ecdsa::Signature::from_slice(&sig).unwrap())
                    .unwrap(),
                _ => ed
                    .verify_strict(&data, &ed25519_dalek::Signature::from_slice(&sig).unwrap())
                    .unwrap(),
            }
            measured.push(bytes_between(&before, &after, binary, &format!("{m:?}")));
        }
    }
    // A 64-byte signature against RSA-2048's 256: well under the RSA
    // figures above (676 text, 359 binary).
    let [text_ecdsa, text_eddsa, bin_ecdsa, bin_eddsa] = measured[..] else {
        panic!("{measured:?}")
    };
    assert!(text_ecdsa <= 340 && text_eddsa <= 320, "{measured:?}");
    assert!(bin_ecdsa <= 170 && bin_eddsa <= 150, "{measured:?}");
}

/// EC operations are approved, named and logged as RSA ones are: under
/// the confirm policy the owner is asked, with the operation and the
/// program the computer named; a refusal is CKR_FUNCTION_REJECTED; the
/// audit log records the EC key's generation, signature and ECDH.
#[tokio::test(flavor = "multi_thread")]
async fn ec_operations_are_approved_and_logged_as_rsa_ones() {
    use phonecsp_protocol::Curve;
    let dir = tempfile::tempdir().unwrap();
    let answer = dir.path().join("answer");
    let seen = dir.path().join("seen");
    let command = format!(
        "echo \"$PHONECSP_OPERATION|$PHONECSP_PROGRAM\" >> {} && test -e {}",
        seen.display(),
        answer.display()
    );
    let mut l = confirming(dir.path(), command).await;
    let generate = Request::GenerateEcKeyPair {
        container: ssh(),
        curve: Curve::P256,
        id: vec![5],
        label: "ec".into(),
    };
    // Refused: nothing made.
    assert_eq!(
        ask(&mut l, generate.clone()).await,
        Err(CkRv::FUNCTION_REJECTED)
    );
    std::fs::write(&answer, b"yes").unwrap();
    let Ok(Reply::EcKeyPair { .. }) = ask(&mut l, generate).await else {
        panic!("no key")
    };
    let digest = Sha256::digest(b"m").to_vec();
    ask(&mut l, sign(&[5], SignMechanism::Ecdsa, digest))
        .await
        .unwrap();
    let peer = {
        let k = p256::SecretKey::random(&mut rand::rngs::OsRng);
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&k.public_key(), false)
            .as_bytes()
            .to_vec()
    };
    let derive = Request::Derive {
        container: ssh(),
        id: vec![5],
        peer,
    };
    std::fs::remove_file(&answer).unwrap();
    assert_eq!(
        ask(&mut l, derive.clone()).await,
        Err(CkRv::FUNCTION_REJECTED)
    );
    std::fs::write(&answer, b"yes").unwrap();
    let Ok(Reply::Derived(_)) = ask(&mut l, derive).await else {
        panic!("no secret")
    };
    drop(l);
    let asked = std::fs::read_to_string(&seen).unwrap();
    let asked: Vec<&str> = asked.lines().collect();
    assert_eq!(
        asked,
        [
            "generate a key|ssh (pid 42)",
            "generate a key|ssh (pid 42)",
            "sign|ssh (pid 42)",
            "agree a shared secret (ECDH)|ssh (pid 42)",
            "agree a shared secret (ECDH)|ssh (pid 42)",
        ]
    );
    let handset = env!("CARGO_BIN_EXE_phonecsp-handset");
    let o = std::process::Command::new(handset)
        .args(["--state", dir.path().to_str().unwrap(), "log", "--json"])
        .output()
        .unwrap();
    let log = String::from_utf8(o.stdout).unwrap();
    let brief: Vec<(String, String, String)> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["key"] == "05")
        .map(|e| {
            (
                e["event"].as_str().unwrap().to_owned(),
                e["result"].as_str().unwrap().to_owned(),
                e["program"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want = |ev: &str, r: &str| (ev.to_owned(), r.to_owned(), "ssh (pid 42)".to_owned());
    assert_eq!(
        brief,
        [
            want("generate-key", "CKR_FUNCTION_REJECTED"),
            want("generate-key", "ok"),
            want("sign", "ok"),
            want("derive", "CKR_FUNCTION_REJECTED"),
            want("derive", "ok"),
        ],
        "{log}"
    );
}

/// [`call`], naming the program the request is for.
async fn ask(l: &mut Duplex, r: Request) -> Result<Reply, CkRv> {
    match l.call_for(&r, Some("ssh (pid 42)")).await {
        Ok(reply) => Ok(reply),
        Err(LinkError::Token(rv)) => Err(rv),
        Err(e) => panic!("link failed: {e}"),
    }
}
