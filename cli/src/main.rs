//! `phonecsp`: the command line of the phonecsp daemon. Tables for people,
//! `--json` for scripts; errors on stderr, prefixed `phonecsp: `; the exit
//! codes are listed in `--help`.
//!
//! [`args`] is what may be typed, [`session`] the connection and the login
//! every command shares, [`secret`] where PINs come from, [`output`] how
//! results leave, [`failure`] how errors become exit codes; each command
//! group has a module of its own.

mod agent;
mod args;
mod attest;
mod cert;
mod confirm;
mod crypto;
mod explain;
mod failure;
mod generate;
mod handsets;
mod id;
mod import;
mod keys;
mod luks;
mod output;
mod random;
mod secret;
mod selfsign;
mod session;
mod tokens;

use std::process::ExitCode;

use clap::Parser;
use phonecsp::blocking::Client;
use phonecsp::{Bus, ClientOptions};

use args::{CertCommand, Cli, Command, PinCommand};
use failure::{Failure, report};
use session::Context;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Made from the definitions alone: no daemon needed.
    if let Command::Generate(g) = &cli.command {
        return match generate::run(g) {
            Ok(()) => ExitCode::SUCCESS,
            Err(f) => report(&f, None),
        };
    }
    let bus = match cli.bus.clone().map(Ok).unwrap_or_else(Bus::from_env) {
        Ok(b) => b,
        Err(e) => return report(&Failure::Usage(format!("PHONECSP_BUS: {e}")), None),
    };
    match run(cli, &bus) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => report(&f, Some(&bus)),
    }
}

fn run(cli: Cli, bus: &Bus) -> Result<(), Failure> {
    // The agent serves on a connection of its own, with its own runtime.
    if let Command::Agent { askpass } = cli.command {
        return agent::run(bus, askpass);
    }
    let expected = phonecsp::client::default_daemon_uid().map_err(Failure::Usage)?;
    let client = Client::connect_with(
        bus,
        ClientOptions {
            expected_daemon_uid: Some(expected),
        },
    )?;
    let cx = Context {
        client,
        json: cli.json,
        handset: cli.handset,
    };
    let token = cli.command.token().map(str::to_owned);
    dispatch(&cx, cli.command).map_err(|f| explain::after(&cx, token.as_deref(), f))
}

fn dispatch(cx: &Context, command: Command) -> Result<(), Failure> {
    match command {
        Command::Agent { .. } => Ok(()),
        Command::Status => handsets::status(cx),
        Command::Handsets => handsets::handsets(cx),
        Command::Tokens => tokens::tokens(cx),
        Command::Keys => keys::list(cx),
        Command::Objects { token } => tokens::objects(cx, &token),
        Command::Sign(a) => crypto::sign(cx, &a),
        Command::Verify(a) => crypto::verify(cx, &a),
        Command::Decrypt(a) => crypto::crypt(cx, &a, true),
        Command::Encrypt(a) => crypto::crypt(cx, &a, false),
        Command::Random { length, hex } => random::random(cx, length, hex),
        Command::Keygen {
            token,
            bits,
            key_type,
            id,
            label,
        } => keys::keygen(
            cx,
            &token,
            key_type.unwrap_or(args::KeyType::Rsa(bits)),
            id,
            &label,
        ),
        Command::Pubkey(a) => keys::pubkey(cx, &a),
        Command::Attest {
            verify: Some(file),
            nonce,
            ..
        } => attest::verify(cx, &file, nonce.as_ref()),
        Command::Attest {
            token: Some(token),
            key: Some(key),
            nonce,
            out,
            ..
        } => attest::attest(cx, &token, &key, nonce.as_ref(), &out),
        Command::Attest { .. } => Err(Failure::Usage(
            "attest needs TOKEN and --key, or --verify FILE".into(),
        )),
        Command::Import {
            token,
            file,
            id,
            label,
        } => import::import(cx, &token, &file, id, &label),
        Command::Cert(CertCommand::Import {
            token,
            id,
            label,
            file,
        }) => cert::cert_import(cx, &token, &id, &label, &file),
        Command::Cert(CertCommand::Export {
            token,
            id,
            out,
            pem,
        }) => cert::cert_export(cx, &token, &id, &out, pem),
        Command::Cert(CertCommand::Delete { token, id, yes }) => {
            cert::cert_delete(cx, &token, &id, yes.yes)
        }
        Command::Cert(CertCommand::SelfSign {
            token,
            id,
            subject,
            days,
        }) => cert::cert_self_sign(cx, &token, &id, subject.as_deref(), days),
        Command::Pin(PinCommand::Change { token }) => {
            tokens::change_secret(cx, &token, tokens::SecretChange::Pin)
        }
        Command::Unblock { token } => {
            tokens::change_secret(cx, &token, tokens::SecretChange::Unblock)
        }
        Command::ChangePuk { token } => {
            tokens::change_secret(cx, &token, tokens::SecretChange::Puk)
        }
        Command::Luks(c) => luks::run(cx, &c),
        Command::Pair { code, qr } => handsets::pair(cx, code, qr),
        Command::Unpair { yes } => handsets::unpair(cx, yes.yes),
        Command::Generate(g) => generate::run(&g),
    }
}
