//! `phonecspd`: the phonecsp daemon. Started by systemd (Type=dbus) on the
//! system bus; `--bus session` or an address for tests and the demo.

use clap::Parser;
use phonecspd::config::{Config, DEFAULT_CONFIG};
use phonecspd::run::{BusChoice, run};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "phonecspd",
    version,
    about = "phonecsp daemon: serves the handset's keys on D-Bus as org.phonecsp.CryptoProvider1"
)]
struct Args {
    /// Configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// Bus: system, session, or a D-Bus address (unix:path=...).
    #[arg(long, default_value = "system")]
    bus: BusChoice,
    /// Override the state directory from the configuration.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
    /// Log more (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

struct StderrLogger;

impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) && r.target().starts_with("phonecsp") {
            eprintln!(
                "phonecspd: {}: {}",
                r.level().as_str().to_lowercase(),
                r.args()
            );
        }
    }
    fn flush(&self) {}
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => log::LevelFilter::Info,
        1 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    // Under systemd, stderr goes to the journal too, but structured records
    // keep the priority.
    let journal = systemd_journal_logger::connected_to_journal()
        .then(|| systemd_journal_logger::JournalLog::new().ok())
        .flatten();
    match journal {
        Some(j) => {
            let _ = j.with_syslog_identifier("phonecspd".into()).install();
        }
        None => {
            let _ = log::set_logger(&StderrLogger);
        }
    }
    log::set_max_level(level);
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    let mut config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("phonecspd: {e}");
            return ExitCode::from(78); // EX_CONFIG
        }
    };
    if let Some(d) = args.state_dir {
        config.daemon.state_dir = d;
    }
    if args.check {
        println!(
            "{}: ok ({} handsets)",
            args.config.display(),
            config.handsets.len()
        );
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("phonecspd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    match rt.block_on(run(config, args.bus, stop_rx, true)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("phonecspd: {e}");
            ExitCode::FAILURE
        }
    }
}
