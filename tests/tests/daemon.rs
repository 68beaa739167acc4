//! The daemon end to end: a real `dbus-daemon`, the handset on a pty, and
//! `phonecspd`, called through the client library and the `phonecsp`
//! command. Every result is checked independently of the daemon.

use phonecsp::mechanism::ckm;
use phonecsp::{Client, MechanismParams};
use phonecsp_protocol::CkRv;
use phonecsp_protocol::ck::{cka, cko};
use phonecsp_protocol::message::token_flags::LOGGED_IN;
use phonecsp_tests::{
    KEY_ID, PIN, TestBus, client, fixture, fixture_with, is_root, phonecsp, wait_connected,
    wait_until,
};
use rsa::pkcs8::EncodePublicKey;
use rsa::{BigUint, Oaep, Pkcs1v15Encrypt, Pkcs1v15Sign, Pss, RsaPublicKey};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// A `SHA256_RSA_PKCS` signature of `data` by the key `id` of phone/ssh.
async fn sign_sha256(c: &Client, id: &[u8], data: &[u8]) -> phonecsp::Result<Vec<u8>> {
    let none = MechanismParams::default();
    c.sign("phone", "ssh", id, ckm::SHA256_RSA_PKCS, &none, data)
        .await
}

/// Whether phone/ssh's key [`KEY_ID`] signed `data` as `signature`.
async fn verifies(
    c: &Client,
    mechanism: u32,
    params: &MechanismParams,
    data: &[u8],
    signature: &[u8],
) -> bool {
    c.verify("phone", "ssh", KEY_ID, mechanism, params, data, signature)
        .await
        .expect("verify")
}

/// `ciphertext`, decrypted by phone/ssh's key [`KEY_ID`].
async fn decrypts(
    c: &Client,
    mechanism: u32,
    params: &MechanismParams,
    ciphertext: &[u8],
) -> Vec<u8> {
    c.decrypt("phone", "ssh", KEY_ID, mechanism, params, ciphertext)
        .await
        .expect("decrypt")
        .to_vec()
}

fn rv<T: std::fmt::Debug>(r: phonecsp::Result<T>) -> CkRv {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.rv(),
    }
}

async fn public_key(c: &Client, id: &[u8]) -> RsaPublicKey {
    let a = c
        .get_attributes("phone", "ssh", cko::PUBLIC_KEY, id)
        .await
        .expect("attributes");
    RsaPublicKey::new(
        BigUint::from_bytes_be(&a[&cka::MODULUS]),
        BigUint::from_bytes_be(&a[&cka::PUBLIC_EXPONENT]),
    )
    .expect("key")
}

fn self_signed_cert(dir: &std::path::Path) -> Vec<u8> {
    const REQUEST: &str = "req -x509 -newkey rsa:2048 -nodes -subj /CN=phonecsp-e2e -days 1";
    let o = std::process::Command::new("openssl")
        .args(REQUEST.split(' '))
        .args(["-outform", "DER"])
        .arg("-keyout")
        .arg(dir.join("cert.key"))
        .arg("-out")
        .arg(dir.join("cert.der"))
        .output()
        .expect("openssl");
    assert!(o.status.success());
    std::fs::read(dir.join("cert.der")).expect("cert")
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_end_to_end() {
    let mut f = fixture("", &[]).await;
    let c = &f.client;
    let none = MechanismParams::default();

    let hs = c.list_handsets().await.unwrap();
    assert_eq!(hs.len(), 1);
    assert_eq!(hs[0].name, "phone");
    assert!(hs[0].transport.starts_with("serial:"));
    assert!(hs[0].connected);
    assert!(c.version().await.unwrap().starts_with("phonecspd "));

    // Only the authorised container is a token.
    let tokens = c.list_tokens().await.unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
        ["ssh"]
    );
    let info = c.get_token_info("phone", "ssh").await.unwrap();
    assert_eq!(info.retries_left, 5);
    assert!(!info.logged_in);
    assert_eq!(
        rv(c.get_token_info("phone", "disk").await),
        CkRv::TOKEN_NOT_PRESENT
    );

    let objects = c.list_objects("phone", "ssh").await.unwrap();
    assert_eq!(objects.len(), 2);
    assert!(
        objects
            .iter()
            .all(|o| o.id == KEY_ID && o.label == "ssh key")
    );
    let pk = public_key(c, KEY_ID).await;

    // Private-key work needs a login; the wrong PIN counts.
    assert_eq!(
        rv(sign_sha256(c, KEY_ID, b"hi").await),
        CkRv::USER_NOT_LOGGED_IN
    );
    assert_eq!(
        rv(c.login("phone", "ssh", b"000000").await),
        CkRv::PIN_INCORRECT
    );
    assert_eq!(
        c.get_token_info("phone", "ssh").await.unwrap().retries_left,
        4
    );
    c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
    assert!(c.get_token_info("phone", "ssh").await.unwrap().logged_in);

    // Signatures verify with the public key, outside the daemon.
    let msg = b"hello phonecsp";
    let sig = sign_sha256(c, KEY_ID, msg).await.unwrap();
    pk.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), &sig)
        .unwrap();
    assert!(verifies(c, ckm::SHA256_RSA_PKCS, &none, msg, &sig).await);
    assert!(!verifies(c, ckm::SHA256_RSA_PKCS, &none, b"forged", &sig).await);
    let di = [
        phonecsp_protocol::HashAlg::Sha256.digest_info_prefix(),
        &Sha256::digest(msg)[..],
    ]
    .concat();
    let sig = c
        .sign("phone", "ssh", KEY_ID, ckm::RSA_PKCS, &none, &di)
        .await
        .unwrap();
    pk.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), &sig)
        .unwrap();
    let pss = MechanismParams {
        hash: ckm::SHA256,
        salt_len: 32,
        label: vec![],
    };
    let sig = c
        .sign("phone", "ssh", KEY_ID, ckm::SHA256_RSA_PKCS_PSS, &pss, msg)
        .await
        .unwrap();
    pk.verify(Pss::new_with_salt::<Sha256>(32), &Sha256::digest(msg), &sig)
        .unwrap();
    assert!(verifies(c, ckm::SHA256_RSA_PKCS_PSS, &pss, msg, &sig).await);

    // Decryption: encrypted outside, decrypted on the phone; and the daemon's encrypt.
    let mut rng = rand::rngs::OsRng;
    let oaep = MechanismParams {
        hash: ckm::SHA256,
        salt_len: 0,
        label: vec![],
    };
    let ct = pk
        .encrypt(&mut rng, Oaep::new::<Sha256>(), b"oaep secret")
        .unwrap();
    assert_eq!(
        decrypts(c, ckm::RSA_PKCS_OAEP, &oaep, &ct).await.as_slice(),
        b"oaep secret"
    );
    let ct = pk
        .encrypt(&mut rng, Pkcs1v15Encrypt, b"pkcs1 secret")
        .unwrap();
    assert_eq!(
        decrypts(c, ckm::RSA_PKCS, &none, &ct).await.as_slice(),
        b"pkcs1 secret"
    );
    let ct = c
        .encrypt(
            "phone",
            "ssh",
            KEY_ID,
            ckm::RSA_PKCS_OAEP,
            &oaep,
            b"round trip",
        )
        .await
        .unwrap();
    assert_eq!(ct.len(), 256);
    assert_eq!(
        decrypts(c, ckm::RSA_PKCS_OAEP, &oaep, &ct).await.as_slice(),
        b"round trip"
    );

    // Digest, computed here.
    assert_eq!(
        c.digest(ckm::SHA256, b"abc").await.unwrap(),
        Sha256::digest(b"abc").to_vec()
    );

    // Random, more than one handset request's worth.
    let r = c.generate_random("phone", 2500).await.unwrap();
    assert_eq!(r.len(), 2500);
    assert!(r.iter().any(|b| *b != 0));

    // Key generation on the phone, with a TokensChanged signal.
    use futures_util::StreamExt;
    let mut changed = c.receive_tokens_changed().await.unwrap();
    let kp = c
        .generate_key_pair("phone", "ssh", 2048, &[2], "second")
        .await
        .unwrap();
    assert_eq!(kp.id, vec![2]);
    let signalled = tokio::time::timeout(Duration::from_secs(10), changed.next())
        .await
        .unwrap();
    assert_eq!(signalled.as_deref(), Some("phone"));
    let pk2 = RsaPublicKey::new(
        BigUint::from_bytes_be(&kp.modulus),
        BigUint::from_bytes_be(&kp.exponent),
    )
    .unwrap();
    let sig = sign_sha256(c, &[2], msg).await.unwrap();
    pk2.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(msg), &sig)
        .unwrap();

    // Certificates.
    let der = self_signed_cert(f.root.path());
    c.import_certificate("phone", "ssh", &[2], "second", &der)
        .await
        .unwrap();
    let objects = c.list_objects("phone", "ssh").await.unwrap();
    assert!(
        objects
            .iter()
            .any(|o| o.class == cko::CERTIFICATE && o.id == [2])
    );
    let a = c
        .get_attributes("phone", "ssh", cko::CERTIFICATE, &[2])
        .await
        .unwrap();
    assert_eq!(a[&cka::VALUE], der);
    c.delete_object("phone", "ssh", cko::CERTIFICATE, &[2])
        .await
        .unwrap();
    assert_eq!(
        rv(c.get_attributes("phone", "ssh", cko::CERTIFICATE, &[2])
            .await),
        CkRv::OBJECT_HANDLE_INVALID
    );
    c.delete_object("phone", "ssh", cko::PRIVATE_KEY, &[2])
        .await
        .unwrap();
    assert_eq!(
        rv(sign_sha256(c, &[2], msg).await),
        CkRv::KEY_HANDLE_INVALID
    );

    // Re-wrap a secret to a recovery key: only the recovery key opens it.
    let recovery = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let spki = recovery.to_public_key().to_public_key_der();
    let spki = spki.expect("SubjectPublicKeyInfo").into_vec();
    let ct = pk
        .encrypt(&mut rng, Oaep::new::<Sha256>(), b"disk key")
        .unwrap();
    let re = c
        .rewrap("phone", "ssh", KEY_ID, ckm::SHA256, &ct, ckm::SHA256, &spki)
        .await
        .unwrap();
    assert_eq!(
        recovery.decrypt(Oaep::new::<Sha256>(), &re).unwrap(),
        b"disk key"
    );

    // PIN change; logout.
    c.change_pin("phone", "ssh", PIN.as_bytes(), b"654321")
        .await
        .unwrap();
    assert_eq!(
        rv(c.login("phone", "ssh", PIN.as_bytes()).await),
        CkRv::PIN_INCORRECT
    );
    c.login("phone", "ssh", b"654321").await.unwrap();
    c.logout("phone", "ssh").await.unwrap();
    assert_eq!(
        rv(sign_sha256(c, KEY_ID, msg).await),
        CkRv::USER_NOT_LOGGED_IN
    );

    let stats = c.statistics().await.unwrap();
    assert!(stats["phone"].requests > 10);
    assert!(stats["phone"].bytes_out > 0 && stats["phone"].bytes_in > 0);

    // Unpair: the key is forgotten and the handset is no longer usable.
    c.unpair("phone").await.unwrap();
    let hs = c.list_handsets().await.unwrap();
    assert!(hs[0].fingerprint.is_empty());
    let after = rv(c.get_token_info("phone", "ssh").await);
    assert!(
        after == CkRv::TOKEN_NOT_PRESENT || after == CkRv::DEVICE_REMOVED,
        "{after}"
    );
    assert!(f.daemon.is_running());
    let _ = &f.handset;
    let _ = &f.bus;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_digest_crosses_the_link() {
    let f = fixture("", &[]).await;
    let c = &f.client;
    c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
    c.list_objects("phone", "ssh").await.unwrap();
    let before = c.statistics().await.unwrap()["phone"];
    let big = vec![0x5a; 1 << 20];
    let sig = c
        .sign(
            "phone",
            "ssh",
            KEY_ID,
            ckm::SHA256_RSA_PKCS,
            &MechanismParams::default(),
            &big,
        )
        .await
        .unwrap();
    let after = c.statistics().await.unwrap()["phone"];
    let pk = public_key(c, KEY_ID).await;
    pk.verify(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(&big), &sig)
        .unwrap();
    assert_eq!(after.requests - before.requests, 1);
    // The 1 MiB message stayed here: a DigestInfo (51 bytes) in base64
    // inside one encrypted frame, plus health probes (`AT`, 3 bytes each).
    let sent = after.bytes_out - before.bytes_out;
    assert!(sent < 400, "{sent} bytes sent to the handset");
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_arguments_get_clear_errors_and_never_reach_the_link() {
    let f = fixture("", &[]).await;
    let c = &f.client;
    let none = MechanismParams::default();
    c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
    c.list_objects("phone", "ssh").await.unwrap();
    let requests = || async { c.statistics().await.unwrap()["phone"].requests };
    let before = requests().await;

    let sign = |id: &'static [u8], mechanism: u32, params: MechanismParams, data: &'static [u8]| async move {
        rv(c.sign("phone", "ssh", id, mechanism, &params, data).await)
    };
    let none = &none;
    let decrypt = |mechanism: u32, ciphertext: &'static [u8]| async move {
        rv(
            c.decrypt("phone", "ssh", KEY_ID, mechanism, none, ciphertext)
                .await,
        )
    };
    let params = |hash, salt_len| MechanismParams {
        hash,
        salt_len,
        label: vec![],
    };
    use ckm::{RSA_PKCS, RSA_PKCS_PSS, SHA_1, SHA256, SHA256_RSA_PKCS, SHA256_RSA_PKCS_PSS};
    let refusals = [
        (
            sign(KEY_ID, 0x9999, params(0, 0), b"x").await,
            CkRv::MECHANISM_INVALID,
        ),
        (
            sign(KEY_ID, RSA_PKCS, params(0, 0), &[1; 300]).await,
            CkRv::DATA_LEN_RANGE,
        ),
        (
            sign(&[9], SHA256_RSA_PKCS, params(0, 0), b"x").await,
            CkRv::KEY_HANDLE_INVALID,
        ),
        (
            sign(&[1; 100], SHA256_RSA_PKCS, params(0, 0), b"x").await,
            CkRv::ARGUMENTS_BAD,
        ),
        (
            sign(KEY_ID, SHA256_RSA_PKCS_PSS, params(SHA_1, 20), b"x").await,
            CkRv::MECHANISM_PARAM_INVALID,
        ),
        (
            sign(KEY_ID, RSA_PKCS_PSS, params(SHA256, 32), &[0; 31]).await,
            CkRv::DATA_LEN_RANGE,
        ),
        (
            decrypt(RSA_PKCS, &[1; 10]).await,
            CkRv::ENCRYPTED_DATA_LEN_RANGE,
        ),
        (decrypt(SHA256, &[1; 256]).await, CkRv::MECHANISM_INVALID),
        (
            rv(c.get_token_info("phone", "s\"sh").await),
            CkRv::ARGUMENTS_BAD,
        ),
        (
            rv(c.get_token_info("nope", "ssh").await),
            CkRv::TOKEN_NOT_PRESENT,
        ),
        (rv(c.generate_random("phone", 0).await), CkRv::ARGUMENTS_BAD),
        (
            rv(c.generate_random("phone", 10_000_000).await),
            CkRv::ARGUMENTS_BAD,
        ),
        (
            rv(c.generate_key_pair("phone", "ssh", 1024, &[5], "x").await),
            CkRv::KEY_SIZE_RANGE,
        ),
        (
            rv(c.login("phone", "ssh", &[b'1'; 100]).await),
            CkRv::PIN_LEN_RANGE,
        ),
        (
            rv(c.import_certificate("phone", "ssh", &[1], "x", b"not DER")
                .await),
            CkRv::ATTRIBUTE_VALUE_INVALID,
        ),
        (rv(c.digest(RSA_PKCS, b"x").await), CkRv::MECHANISM_INVALID),
        (
            rv(
                c.rewrap("phone", "ssh", KEY_ID, 7, &[0; 256], SHA256, b"\x30")
                    .await,
            ),
            CkRv::MECHANISM_PARAM_INVALID,
        ),
    ];
    for (i, (got, want)) in refusals.into_iter().enumerate() {
        assert_eq!(got, want, "refusal #{i}");
    }

    // A call whose arguments do not match the signature is refused, the
    // same way for every method: too few, and too many for a method that
    // takes none.
    let raw = |method: &'static str, args: &'static str| async move {
        c.connection()
            .call_method(
                Some(phonecsp::BUS_NAME),
                phonecsp::OBJECT_PATH,
                Some(phonecsp::INTERFACE),
                method,
                &(args,),
            )
            .await
    };
    for method in ["Sign", "ListHandsets", "ListTokens"] {
        match raw(method, "phone").await {
            Err(zbus::Error::FDO(e)) if matches!(*e, zbus::fdo::Error::InvalidArgs(_)) => {}
            other => panic!("{method} with a stray argument: {other:?}"),
        }
    }

    assert_eq!(
        requests().await,
        before,
        "a malformed call reached the link"
    );
    // And the daemon is still serving.
    sign_sha256(c, KEY_ID, b"x").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_caller_that_leaves_the_bus_loses_its_login() {
    let f = fixture("", &[]).await;
    {
        let a = client(&f.bus).await;
        a.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
        sign_sha256(&a, KEY_ID, b"x").await.unwrap();
        // The handset sees the session logged in.
        assert_ne!(
            f.client.get_token_info("phone", "ssh").await.unwrap().flags & LOGGED_IN,
            0
        );
        a.connection().clone().close().await.unwrap();
    }
    // Same uid, another connection: not logged in.
    let b = client(&f.bus).await;
    assert_eq!(
        rv(sign_sha256(&b, KEY_ID, b"x").await),
        CkRv::USER_NOT_LOGGED_IN
    );
    // And the daemon logged the handset out, since nobody else was logged in.
    for _ in 0..250 {
        if f.client.get_token_info("phone", "ssh").await.unwrap().flags & LOGGED_IN == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the handset session stayed logged in");
}

/// Two connections log in to one token, sign and log out, over and over:
/// one's logout never ends the other's login, whatever order their requests
/// reach the handset in, and the handset is logged out once both are done.
#[tokio::test(flavor = "multi_thread")]
async fn two_callers_logging_in_and_out_of_one_token_always_sign() {
    const ROUNDS: usize = 200;
    let f = fixture("", &[]).await;
    let run = |c: Client, who: &'static str| {
        tokio::spawn(async move {
            for round in 0..ROUNDS {
                c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
                if let Err(e) = sign_sha256(&c, KEY_ID, b"x").await {
                    panic!("{who}, round {round}: {e}");
                }
                c.logout("phone", "ssh").await.unwrap();
            }
        })
    };
    let a = run(client(&f.bus).await, "a");
    let b = run(client(&f.bus).await, "b");
    a.await.expect("caller a");
    b.await.expect("caller b");
    let info = f.client.get_token_info("phone", "ssh").await.unwrap();
    assert_eq!(info.flags & LOGGED_IN, 0);
    assert!(!info.logged_in);
}

#[tokio::test(flavor = "multi_thread")]
async fn callers_are_told_apart_by_uid() {
    if !is_root() {
        eprintln!("SKIPPED: calling as other uids needs root (setpriv)");
        return;
    }
    // uid 65534 may use ssh; uid 1 (daemon) may not (nor anything else).
    let f = fixture("[[token]]\nname = \"ssh\"\nusers = [\"65534\"]\n", &[]).await;
    let pin = [("PHONECSP_PIN", PIN)];
    let allowed = phonecsp(&f.bus, Some(65534), &["--json", "tokens"], &[]);
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    assert!(String::from_utf8_lossy(&allowed.stdout).contains("\"ssh\""));
    let refused = phonecsp(&f.bus, Some(1), &["--json", "tokens"], &[]);
    assert!(
        refused.status.success(),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("\"ssh\""));

    let msg = f.root.path().join("msg");
    std::fs::write(&msg, b"signed by nobody").unwrap();
    let msg = msg.to_str().unwrap();
    let sig = f.root.path().join("sig");
    let sig = sig.to_str().unwrap();
    let sign_as = |uid| {
        let args = ["sign", "ssh", "--key", "01", "--in", msg, "--out", "-"];
        phonecsp(&f.bus, Some(uid), &args, &pin)
    };
    let ok = sign_as(65534);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "{stderr}");
    assert_eq!(ok.stdout.len(), 256);
    std::fs::write(sig, &ok.stdout).unwrap();
    let no = sign_as(1);
    assert_eq!(
        no.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&no.stderr)
    );
    assert!(no.stdout.is_empty());
    assert!(String::from_utf8_lossy(&no.stderr).contains("not available"));
    // The signature made by the allowed uid verifies (here, as root).
    let v = phonecsp(
        &f.bus,
        None,
        &[
            "verify",
            "ssh",
            "--key",
            "01",
            "--in",
            msg,
            "--signature",
            sig,
        ],
        &[],
    );
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    // Only root may pair.
    let p = phonecsp(
        &f.bus,
        Some(65534),
        &["pair", "--code", "AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AA"],
        &[],
    );
    assert_eq!(
        p.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&p.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn handset_killed_mid_request_then_back() {
    // A container whose owner takes a long time to approve: the request is
    // in flight on the handset when it dies.
    let mut f = fixture("", &["--prompt-command", "sleep 30"]).await;
    f.handset.cli_ok(&["container", "policy", "ssh", "confirm"]);
    let c = f.client.clone();
    c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
    c.list_objects("phone", "ssh").await.unwrap();
    let pending = {
        let c = c.clone();
        tokio::spawn(async move {
            c.sign(
                "phone",
                "ssh",
                KEY_ID,
                ckm::SHA256_RSA_PKCS,
                &MechanismParams::default(),
                b"x",
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.handset.kill();
    // The caller hears back well within the request timeout (5 s here).
    let r = tokio::time::timeout(Duration::from_secs(15), pending)
        .await
        .expect("the call hung")
        .unwrap();
    assert_eq!(rv(r), CkRv::DEVICE_REMOVED);
    wait_connected(&c, false).await;
    // While it is away, calls fail at once.
    let t = std::time::Instant::now();
    assert_eq!(
        rv(sign_sha256(&c, KEY_ID, b"x").await),
        CkRv::DEVICE_REMOVED
    );
    assert!(t.elapsed() < Duration::from_secs(5));

    // Back (with automatic approval): the daemon reconnects by itself.
    f.handset.cli_ok(&["container", "policy", "ssh", "auto"]);
    f.handset.set_serve_args(&[]);
    f.handset.start();
    wait_connected(&c, true).await;
    signs_in_a_new_session(&c).await;
    assert!(f.daemon.is_running());
    assert!(!f.daemon.log().contains("panicked"));
}

/// After a reconnection: a new session, so the handset forgot the login
/// and so did the daemon; a new login signs.
async fn signs_in_a_new_session(c: &Client) {
    assert_eq!(
        rv(sign_sha256(c, KEY_ID, b"x").await),
        CkRv::USER_NOT_LOGGED_IN
    );
    c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
    sign_sha256(c, KEY_ID, b"x").await.unwrap();
}

/// `phonecsp --json handsets`: whether `phone` is connected.
fn cli_says_connected(bus: &TestBus) -> bool {
    let o = phonecsp(bus, None, &["--json", "handsets"], &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    v[0]["connected"].as_bool().expect("connected")
}

#[tokio::test(flavor = "multi_thread")]
async fn handset_gone_while_idle_is_noticed_at_once() {
    // No health probe within the test: only the daemon watching the idle
    // link can notice that the handset went away.
    let mut f = fixture_with("health_interval_secs = 600", "", &[]).await;
    let c = f.client.clone();
    c.login("phone", "ssh", PIN.as_bytes()).await.unwrap();
    assert!(cli_says_connected(&f.bus));
    use futures_util::StreamExt;
    let mut removed = c.receive_handset_disconnected().await.unwrap();
    // Let the link settle into idleness.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let t = std::time::Instant::now();
    f.handset.kill();
    let signalled = tokio::time::timeout(Duration::from_secs(20), removed.next())
        .await
        .expect("no HandsetDisconnected signal within 20 s");
    assert_eq!(signalled.as_deref(), Some("phone"));
    assert!(!cli_says_connected(&f.bus));
    eprintln!("handset gone noticed after {:?}", t.elapsed());
    assert!(f.daemon.log().contains("away"), "{}", f.daemon.log());

    // Back: the daemon reconnects by itself, to a new session.
    f.handset.start();
    let bus = &f.bus;
    wait_until("the handset reconnected", Duration::from_secs(20), || {
        cli_says_connected(bus)
    });
    signs_in_a_new_session(&c).await;
    assert!(f.daemon.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn introspection_matches_the_xml() {
    let f = fixture("", &[]).await;
    let live = phonecsp_tests::introspect::live(f.client.connection(), phonecsp::OBJECT_PATH).await;
    let file = phonecsp_tests::introspect::file("org.phonecsp.CryptoProvider1.xml");
    let a = phonecsp_tests::introspect::interface(&live, phonecsp::INTERFACE);
    let b = phonecsp_tests::introspect::interface(&file, phonecsp::INTERFACE);
    assert!(!b.is_empty());
    assert_eq!(
        a, b,
        "the running service and dbus/org.phonecsp.CryptoProvider1.xml differ"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_the_daemon_cleanly() {
    let mut f = fixture("", &[]).await;
    let status = f.daemon.terminate();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_bad_configuration_is_refused_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("phonecspd.toml");
    let check = |text: &str| {
        std::fs::write(&cfg, text).unwrap();
        std::process::Command::new(phonecsp_tests::bin("phonecspd"))
            .arg("--config")
            .arg(&cfg)
            .arg("--check")
            .output()
            .unwrap()
    };
    let o = check("[daemon]\nstate_dir = \"/tmp/x\"\nrequest_timeout = 5\n");
    assert_eq!(o.status.code(), Some(78));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("phonecspd.toml:3:"), "{err}");
    assert!(err.contains("request_timeout"), "{err}");
    let o = check("[[handset]]\nname = \"p\"\nserial = \"/dev/null\"\n");
    assert!(o.status.success());
}
