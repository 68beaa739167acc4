//! Latency and throughput of private-key operations (RSA-2048, P-256,
//! Ed25519), through a PKCS#11 module or the handset's crypto modules
//! directly. OAEP uses SHA-1 because SoftHSM2 2.6 (Debian 12) supports no
//! other OAEP hash, and every path must do the same work.

use crate::{Load, Op};
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use rsa::{BigUint, Oaep, RsaPublicKey};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Serialize)]
struct Throughput {
    threads: usize,
    ops: u64,
    seconds: f64,
    ops_per_sec: f64,
}

#[derive(Serialize)]
struct Report {
    what: String,
    op: Op,
    latency_ops: usize,
    p50_us: f64,
    p99_us: f64,
    mean_us: f64,
    throughput: Vec<Throughput>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// Runs `op` for latency on one thread, then for throughput on each thread count.
fn run<F>(what: String, load: &Load, make: impl Fn() -> Result<F, Error>) -> Result<(), Error>
where
    F: FnMut() -> Result<(), Error> + Send + 'static,
{
    let mut one = make()?;
    for _ in 0..load.warmup {
        one()?;
    }
    let mut lat = Vec::with_capacity(load.ops);
    for _ in 0..if load.no_latency { 0 } else { load.ops } {
        let t = Instant::now();
        one()?;
        lat.push(t.elapsed());
    }
    lat.sort();
    let mean = lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len().max(1) as f64 * 1e6;
    let mut throughput = Vec::new();
    for &n in &load.threads {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        let mut ops = Vec::new();
        for _ in 0..n {
            ops.push(make()?);
        }
        let start = Instant::now();
        for mut op in ops {
            let (stop, count) = (stop.clone(), count.clone());
            let limit = load.count;
            workers.push(std::thread::spawn(move || -> Result<(), Error> {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(limit) = limit
                        && count.fetch_add(1, Ordering::Relaxed) >= limit
                    {
                        count.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    op()?;
                    if limit.is_none() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ok(())
            }));
        }
        if load.count.is_none() {
            std::thread::sleep(Duration::from_millis(load.duration_ms));
            stop.store(true, Ordering::Relaxed);
        }
        for w in workers {
            w.join().map_err(|_| "worker panicked")??;
        }
        let seconds = start.elapsed().as_secs_f64();
        let ops = count.load(Ordering::Relaxed);
        throughput.push(Throughput {
            threads: n,
            ops,
            seconds,
            ops_per_sec: ops as f64 / seconds,
        });
    }
    let report = Report {
        what,
        op: load.op,
        latency_ops: lat.len(),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        mean_us: mean,
        throughput,
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn digest_info() -> Vec<u8> {
    let mut di = phonecsp_protocol::HashAlg::Sha256
        .digest_info_prefix()
        .to_vec();
    di.extend_from_slice(&Sha256::digest(b"phonecsp benchmark message"));
    di
}

/// What a disk unlock decrypts: a short secret under RSA-OAEP (SHA-1).
fn disk_key_ciphertext(public: &RsaPublicKey) -> Result<Vec<u8>, Error> {
    Ok(public.encrypt(
        &mut rand::rngs::OsRng,
        Oaep::new::<sha1::Sha1>(),
        b"a 32-byte disk key, more or less",
    )?)
}

/// The peer of the ECDH runs: P-256's base point, a valid public key
/// (SEC1 uncompressed), so every path does one full scalar multiplication.
const P256_PEER: &str = "046b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c2964fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";

/// What an EC signature signs: a SHA-256 digest (ECDSA), the same 32
/// bytes as the message (Ed25519).
fn ec_digest() -> Vec<u8> {
    Sha256::digest(b"phonecsp benchmark message").to_vec()
}

fn hex(s: &str) -> Result<Vec<u8>, Error> {
    if !s.len().is_multiple_of(2) {
        return Err("key id must be hex".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| "key id must be hex".into()))
        .collect()
}

fn op_is_rsa(load: &Load) -> bool {
    load.op.is_rsa()
}

/// The RSA public key of `pubh`, for the OAEP ciphertext.
fn rsa_public(s: &Session, pubh: ObjectHandle) -> Result<RsaPublicKey, Error> {
    let attrs = s.get_attributes(
        pubh,
        &[AttributeType::Modulus, AttributeType::PublicExponent],
    )?;
    let (mut n, mut e) = (Vec::new(), Vec::new());
    for a in attrs {
        match a {
            Attribute::Modulus(v) => n = v,
            Attribute::PublicExponent(v) => e = v,
            _ => {}
        }
    }
    Ok(RsaPublicKey::new(
        BigUint::from_bytes_be(&n),
        BigUint::from_bytes_be(&e),
    )?)
}

pub fn pkcs11(
    module: &str,
    token: Option<&str>,
    pin: &str,
    key_id: &str,
    load: &Load,
) -> Result<(), Error> {
    let ctx = Pkcs11::new(module)?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))?;
    let ctx = Arc::new(ctx);
    let slots = ctx.get_slots_with_token()?;
    let slot = match token {
        None => *slots.first().ok_or("no token")?,
        Some(label) => *slots
            .iter()
            .find(|s| {
                ctx.get_token_info(**s)
                    .map(|i| i.label().trim() == label)
                    .unwrap_or(false)
            })
            .ok_or("no such token")?,
    };
    let id = hex(key_id)?;
    // One login for the application: PKCS#11 login state is per token.
    let login = ctx.open_ro_session(slot)?;
    login.login(UserType::User, Some(&AuthPin::new(pin.to_owned().into())))?;
    let find = |s: &Session, class| -> Result<ObjectHandle, Error> {
        s.find_objects(&[Attribute::Class(class), Attribute::Id(id.clone())])?
            .into_iter()
            .next()
            .ok_or_else(|| "key not found".into())
    };
    let (di, ciphertext) = if op_is_rsa(load) {
        let public = rsa_public(&login, find(&login, ObjectClass::PUBLIC_KEY)?)?;
        (digest_info(), disk_key_ciphertext(&public)?)
    } else {
        (Vec::new(), Vec::new())
    };
    let (digest, peer) = (ec_digest(), hex(P256_PEER)?);
    let op = load.op;
    let what = format!("pkcs11:{module}");
    let result = run(what, load, || {
        let s = ctx.open_ro_session(slot)?;
        let key = find(&s, ObjectClass::PRIVATE_KEY)?;
        let (di, ct, digest, peer) = (di.clone(), ciphertext.clone(), digest.clone(), peer.clone());
        Ok(move || -> Result<(), Error> {
            match op {
                Op::Sign => {
                    s.sign(&Mechanism::RsaPkcs, key, &di)?;
                }
                Op::Decrypt => {
                    let params = PkcsOaepParams::new(
                        MechanismType::SHA1,
                        PkcsMgfType::MGF1_SHA1,
                        PkcsOaepSource::empty(),
                    );
                    s.decrypt(&Mechanism::RsaPkcsOaep(params), key, &ct)?;
                }
                Op::EcdsaSign => {
                    s.sign(&Mechanism::Ecdsa, key, &digest)?;
                }
                Op::EddsaSign => {
                    let params = EddsaParams::new(EddsaSignatureScheme::Pure);
                    s.sign(&Mechanism::Eddsa(params), key, &digest)?;
                }
                Op::Ecdh => {
                    let params = Ecdh1DeriveParams::new(EcKdf::null(), &peer);
                    let template = [
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::GENERIC_SECRET),
                        Attribute::ValueLen(32.into()),
                        Attribute::Token(false),
                        Attribute::Sensitive(false),
                        Attribute::Extractable(true),
                    ];
                    let k = s.derive_key(&Mechanism::Ecdh1Derive(params), key, &template)?;
                    s.destroy_object(k)?;
                }
            }
            Ok(())
        })
    });
    drop(login);
    result
}

pub fn inprocess(load: &Load) -> Result<(), Error> {
    if !load.op.is_rsa() {
        return inprocess_ec(load);
    }
    use phonecsp_handset::crypto;
    use phonecsp_protocol::{DecryptMechanism, HashAlg, SignMechanism};
    let key = Arc::new(crypto::generate(2048).map_err(|rv| rv.to_string())?);
    let public = key.to_public_key();
    let (di, ct) = (digest_info(), disk_key_ciphertext(&public)?);
    let op = load.op;
    run("handset crypto module, in-process".into(), load, || {
        let (key, di, ct) = (key.clone(), di.clone(), ct.clone());
        Ok(move || -> Result<(), Error> {
            match op {
                Op::Sign => {
                    crypto::sign(&key, &SignMechanism::Pkcs1, &di).map_err(|rv| rv.to_string())?;
                }
                Op::Decrypt => {
                    crypto::decrypt(
                        &key,
                        &DecryptMechanism::Oaep {
                            hash: HashAlg::Sha1,
                            label: vec![],
                        },
                        &ct,
                    )
                    .map_err(|rv| rv.to_string())?;
                }
                _ => return Err("not an RSA operation".into()),
            }
            Ok(())
        })
    })
}

/// The handset's EC module called directly: the floor for EC keys.
fn inprocess_ec(load: &Load) -> Result<(), Error> {
    use phonecsp_handset::ec::EcPrivateKey;
    use phonecsp_protocol::Curve;
    let curve = if load.op == Op::EddsaSign {
        Curve::Ed25519
    } else {
        Curve::P256
    };
    let key = Arc::new(EcPrivateKey::generate(curve));
    let (digest, peer) = (ec_digest(), hex(P256_PEER)?);
    let op = load.op;
    run("handset EC module, in-process".into(), load, || {
        let (key, digest, peer) = (key.clone(), digest.clone(), peer.clone());
        Ok(move || -> Result<(), Error> {
            let r = match op {
                Op::EcdsaSign => key.sign_digest(&digest).map(drop),
                Op::EddsaSign => key.sign_message(&digest).map(drop),
                Op::Ecdh => key.derive(&peer).map(drop),
                Op::Sign | Op::Decrypt => return Err("not an EC operation".into()),
            };
            r.map_err(|rv| rv.to_string().into())
        })
    })
}
