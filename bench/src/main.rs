//! `phonecsp-bench`: the measuring half of `bench/run`.
//!
//! - `pkcs11`: drives any PKCS#11 module through cryptoki: RSA-2048
//!   PKCS#1 v1.5 signatures of a SHA-256 DigestInfo, RSA-OAEP
//!   decryptions, P-256 ECDSA signatures and ECDH derivations, Ed25519
//!   signatures; latency percentiles at one thread, throughput at several.
//! - `inprocess`: the handset's crypto module called directly, the floor
//!   for phonecsp's own path.
//! - `relay`: a pty that forwards to the handset's pty at a paced byte rate
//!   and one-way latency, to model a 115200 baud line or Bluetooth RFCOMM.
//!
//! Every command prints one JSON object; `bench/run` collects them into
//! BENCHMARKS.md.

mod linkbench;
mod measure;
mod relay;

use clap::{Parser, Subcommand, ValueEnum};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "phonecsp-bench", about = "phonecsp benchmarks (see bench/run)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// CKM_RSA_PKCS over a SHA-256 DigestInfo.
    Sign,
    /// CKM_RSA_PKCS_OAEP (SHA-256) decryption.
    Decrypt,
    /// CKM_ECDSA over a SHA-256 digest, with a P-256 key.
    EcdsaSign,
    /// CKM_EDDSA (pure Ed25519) over a 32-byte message.
    EddsaSign,
    /// CKM_ECDH1_DERIVE (CKD_NULL) with a P-256 key: a generic secret
    /// session key from a fixed peer point.
    Ecdh,
}

impl Op {
    /// Whether the operation needs an RSA key (else an EC one).
    pub fn is_rsa(self) -> bool {
        matches!(self, Op::Sign | Op::Decrypt)
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct Load {
    #[arg(long, value_enum, default_value_t = Op::Sign)]
    pub op: Op,
    /// Operations measured for latency (one thread).
    #[arg(long, default_value_t = 200)]
    pub ops: usize,
    /// Unmeasured operations first.
    #[arg(long, default_value_t = 20)]
    pub warmup: usize,
    /// Thread counts for throughput.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub threads: Vec<usize>,
    /// How long each throughput run lasts, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub duration_ms: u64,
    /// Instead of a duration, run each throughput test until this many
    /// operations are done (for the memory run).
    #[arg(long)]
    pub count: Option<u64>,
    /// Skip the latency run (throughput only).
    #[arg(long)]
    pub no_latency: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Benchmark a PKCS#11 module.
    Pkcs11 {
        #[arg(long)]
        module: String,
        /// Token label (the first token if omitted).
        #[arg(long)]
        token: Option<String>,
        #[arg(long)]
        pin: String,
        /// CKA_ID of the key, hex.
        #[arg(long)]
        key_id: String,
        #[command(flatten)]
        load: Load,
    },
    /// Benchmark the handset's crypto module in-process.
    Inprocess {
        #[command(flatten)]
        load: Load,
    },
    /// Benchmark the handset behind its link (protocol, Noise, store) in-process.
    Link {
        #[command(flatten)]
        load: Load,
    },
    /// Serve a pty at `--link` that forwards to `--target` with pacing.
    Relay {
        /// Symlink to create for the relay's pty (what the daemon opens).
        #[arg(long)]
        link: std::path::PathBuf,
        /// The handset's pty (or its symlink).
        #[arg(long)]
        target: std::path::PathBuf,
        /// Bytes per second in each direction (115200 baud 8N1 = 11520).
        #[arg(long)]
        bytes_per_sec: u64,
        /// One-way latency in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Pkcs11 {
            module,
            token,
            pin,
            key_id,
            load,
        } => measure::pkcs11(&module, token.as_deref(), &pin, &key_id, &load),
        Cmd::Inprocess { load } => measure::inprocess(&load),
        Cmd::Link { load } => linkbench::run(&load),
        Cmd::Relay {
            link,
            target,
            bytes_per_sec,
            latency_ms,
        } => relay::run(&link, &target, bytes_per_sec, latency_ms),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("phonecsp-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
