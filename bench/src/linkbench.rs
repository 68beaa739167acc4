//! The handset behind its link, in one process: the security manager and
//! responder on one end of an in-memory pipe, the host's client on the
//! other. Between the crypto module alone and the full path, this row
//! shows what the protocol, the Noise session and the store cost.

use crate::{Load, Op};
use phonecsp_handset::crypto;
use phonecsp_handset::manager::{Approver, Manager, offer_pairing};
use phonecsp_handset::serve::serve_stream;
use phonecsp_handset::store::{KdfParams, Policy, Store};
use phonecsp_protocol::{
    DecryptMechanism, HashAlg, HostLink, PairingCode, Request, SignMechanism, StaticKeypair,
};
use rsa::Oaep;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

type Error = Box<dyn std::error::Error + Send + Sync>;

pub fn run(load: &Load) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let dir = tempfile::tempdir()?;
        let store = Store::init(dir.path(), "bench")?;
        let mut c = store.create_container("bench", b"123456", Policy::Auto, KdfParams::FAST_FOR_TESTS)?;
        let kek = c.unlock(&store, b"123456")?;
        let key = crypto::generate(2048).map_err(|rv| rv.to_string())?;
        c.add_key(&kek, vec![1], "bench".into(), &key)?;
        store.save_container(&c)?;
        let code = PairingCode::generate();
        offer_pairing(&store, &code, vec!["bench".into()])?;
        let mut m = Manager::new(Store::open(dir.path())?, Approver::default());
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let _ = serve_stream(&mut m, b, 4096).await;
        });
        let (r, w) = tokio::io::split(a);
        let mut l = HostLink::open(r, w).await?;
        l.pair(&StaticKeypair::generate(), &code, "bench").await?;
        l.call(&Request::login("bench", b"123456")).await?;
        let di = [HashAlg::Sha256.digest_info_prefix(), &Sha256::digest(b"m")[..]].concat();
        let ct = key.to_public_key().encrypt(&mut rand::rngs::OsRng, Oaep::new::<sha1::Sha1>(), b"a 32-byte disk key, more or less")?;
        let req = match load.op {
            Op::Sign => Request::Sign { container: "bench".into(), id: vec![1], mechanism: SignMechanism::Pkcs1, data: di },
            Op::Decrypt => Request::Decrypt { container: "bench".into(), id: vec![1], mechanism: DecryptMechanism::Oaep { hash: HashAlg::Sha1, label: vec![] }, data: ct },
            Op::EcdsaSign | Op::EddsaSign | Op::Ecdh => return Err("the link benchmark has RSA keys only".into()),
        };
        for _ in 0..load.warmup {
            l.call(&req).await?;
        }
        let mut lat = Vec::with_capacity(load.ops);
        for _ in 0..load.ops {
            let t = Instant::now();
            l.call(&req).await?;
            lat.push(t.elapsed());
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() as f64 - 1.0) * q).round() as usize].as_secs_f64() * 1e6;
        let mean = lat.iter().map(Duration::as_secs_f64).sum::<f64>() / lat.len() as f64 * 1e6;
        println!(
            "{}",
            serde_json::json!({"what": "handset behind its link, in-process", "op": load.op, "latency_ops": lat.len(),
                "p50_us": p(0.5), "p99_us": p(0.99), "mean_us": mean, "throughput": []})
        );
        Ok::<(), Error>(())
    })
}
