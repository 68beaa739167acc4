//! Replays the fixed test vectors in `tests/vectors/` (format described in
//! `tests/vectors/README.md`):
//!
//! * `transcript.txt`: typed values and their exact encodings, checked both
//!   ways (`encode(typed) == line` and `parse(line) == typed`);
//! * `presession.txt`: the exact bytes a [`Responder`] answers before any
//!   session, fed through it with a small test [`Handler`].

use phonecsp_protocol::at::FinalResult;
use phonecsp_protocol::ck::{Curve, DecryptMechanism, HashAlg, ObjectClass, SignMechanism};
use phonecsp_protocol::message::{
    ContainerEntry, HandshakeKind, InnerOutcome, ObjectEntry, TokenInfo, VersionInfo, ckr_line,
};
use phonecsp_protocol::{
    Asker, CkRv, Command, Handler, ParseError, Reply, Request, Responder, StaticKeypair,
};
use std::collections::VecDeque;
use zeroize::Zeroizing;

const TRANSCRIPT: &str = include_str!("vectors/transcript.txt");
const PRESESSION: &str = include_str!("vectors/presession.txt");

// ---------------------------------------------------------------------------
// Descriptions: `kind Variant key=value ...`

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bytes(Vec<u8>),
    Num(u64),
    Word(String),
}

/// The ordered `key=value` fields of a description line.
struct Fields(VecDeque<(String, Value)>);

impl Fields {
    fn parse(s: &str) -> Fields {
        let mut out = VecDeque::new();
        let mut rest = s.trim_start();
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .unwrap_or_else(|| panic!("no '=' in {rest:?}"));
            let key = rest[..eq].to_owned();
            rest = &rest[eq + 1..];
            let (value, tail) = if let Some(q) = rest.strip_prefix('"') {
                let end = q.find('"').expect("unterminated string");
                (Value::Str(q[..end].to_owned()), &q[end + 1..])
            } else {
                let end = rest.find(' ').unwrap_or(rest.len());
                let tok = &rest[..end];
                let v = if let Some(h) = tok.strip_prefix("hex:") {
                    Value::Bytes(hex(h))
                } else if let Some(h) = tok.strip_prefix("0x") {
                    Value::Num(u64::from_str_radix(h, 16).expect("hex number"))
                } else if tok.bytes().all(|b| b.is_ascii_digit()) {
                    Value::Num(tok.parse().expect("number"))
                } else {
                    Value::Word(tok.to_owned())
                };
                (v, &rest[end..])
            };
            out.push_back((key, value));
            rest = tail.trim_start();
        }
        Fields(out)
    }

    /// Takes the next field, which must be `key`.
    fn take(&mut self, key: &str) -> Value {
        match self.0.pop_front() {
            Some((k, v)) if k == key => v,
            other => panic!("expected field {key}, found {other:?}"),
        }
    }

    /// Takes the next field if it is `key`.
    fn opt(&mut self, key: &str) -> Option<Value> {
        match self.0.front() {
            Some((k, _)) if k == key => self.0.pop_front().map(|(_, v)| v),
            _ => None,
        }
    }

    fn str(&mut self, key: &str) -> String {
        match self.take(key) {
            Value::Str(s) => s,
            v => panic!("{key}: expected a string, found {v:?}"),
        }
    }

    fn bytes(&mut self, key: &str) -> Vec<u8> {
        match self.take(key) {
            Value::Bytes(b) => b,
            v => panic!("{key}: expected hex bytes, found {v:?}"),
        }
    }

    fn num(&mut self, key: &str) -> u64 {
        match self.take(key) {
            Value::Num(n) => n,
            v => panic!("{key}: expected a number, found {v:?}"),
        }
    }

    fn u32(&mut self, key: &str) -> u32 {
        u32::try_from(self.num(key)).expect("u32")
    }

    fn word(&mut self, key: &str) -> String {
        match self.take(key) {
            Value::Word(w) => w,
            v => panic!("{key}: expected a word, found {v:?}"),
        }
    }

    fn flag(&mut self, key: &str) -> bool {
        match self.word(key).as_str() {
            "true" => true,
            "false" => false,
            w => panic!("{key}: expected true or false, found {w}"),
        }
    }

    fn hash(&mut self, key: &str) -> HashAlg {
        let w = self.word(key);
        HashAlg::from_name(&w).unwrap_or_else(|| panic!("unknown hash {w}"))
    }

    fn class(&mut self, key: &str) -> ObjectClass {
        class(&self.word(key))
    }

    fn done(self) {
        assert!(self.0.is_empty(), "unused fields: {:?}", self.0);
    }
}

fn class(w: &str) -> ObjectClass {
    match w {
        "cert" => ObjectClass::Certificate,
        "pubkey" => ObjectClass::PublicKey,
        "privkey" => ObjectClass::PrivateKey,
        _ => panic!("unknown class {w}"),
    }
}

fn hex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}

fn pin(b: Vec<u8>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(b)
}

fn command(variant: &str, mut f: Fields) -> Command {
    let c = match variant {
        "Attention" => Command::Attention,
        "Echo" => Command::Echo(f.flag("on")),
        "Version" => Command::Version,
        "Handshake" => Command::Handshake {
            kind: match f.word("kind").as_str() {
                "pair" => HandshakeKind::Pair,
                "session" => HandshakeKind::Session,
                k => panic!("unknown handshake kind {k}"),
            },
            message: f.bytes("message"),
        },
        "Frame" => Command::Frame {
            part: f.bytes("part"),
            more: f.flag("more"),
        },
        "Pake" => Command::Pake {
            message: f.bytes("message"),
        },
        _ => panic!("unknown command {variant}"),
    };
    f.done();
    c
}

fn request(variant: &str, mut f: Fields) -> Request {
    let r = match variant {
        "ListContainers" => Request::ListContainers,
        // The container alone.
        "TokenInfo" | "Logout" | "SoLogout" => {
            let container = f.str("container");
            match variant {
                "TokenInfo" => Request::TokenInfo { container },
                "Logout" => Request::Logout { container },
                _ => Request::SoLogout { container },
            }
        }
        // The container and a secret: the PIN, or the PUK.
        "Login" | "InitPin" | "SoLogin" => {
            let container = f.str("container");
            match variant {
                "Login" => Request::Login {
                    container,
                    pin: pin(f.bytes("pin")),
                },
                "InitPin" => Request::InitPin {
                    container,
                    pin: pin(f.bytes("pin")),
                },
                _ => Request::SoLogin {
                    container,
                    puk: pin(f.bytes("puk")),
                },
            }
        }
        // The container, the old secret and the new.
        "ChangePin" | "ChangePuk" => {
            let container = f.str("container");
            let (old, new) = (pin(f.bytes("old")), pin(f.bytes("new")));
            if variant == "ChangePin" {
                Request::ChangePin {
                    container,
                    old,
                    new,
                }
            } else {
                Request::ChangePuk {
                    container,
                    old,
                    new,
                }
            }
        }
        "FindObjects" => Request::FindObjects {
            container: f.str("container"),
            class: f.opt("class").map(|v| match v {
                Value::Word(w) => class(&w),
                v => panic!("class: {v:?}"),
            }),
            id: f.opt("id").map(|v| match v {
                Value::Bytes(b) => b,
                v => panic!("id: {v:?}"),
            }),
            label: f.opt("label").map(|v| match v {
                Value::Str(s) => s,
                v => panic!("label: {v:?}"),
            }),
        },
        "GetAttributes" => Request::GetAttributes {
            container: f.str("container"),
            class: f.class("class"),
            id: f.bytes("id"),
        },
        // A private-key operation: the key, the mechanism with its
        // parameters, then the data.
        "Sign" | "Decrypt" => {
            let (container, id) = (f.str("container"), f.bytes("id"));
            let word = f.word("mechanism");
            if variant == "Sign" {
                let mechanism = sign_mechanism(&word, &mut f);
                let data = f.bytes("data");
                Request::Sign {
                    container,
                    id,
                    mechanism,
                    data,
                }
            } else {
                let mechanism = decrypt_mechanism(&word, &mut f);
                let data = f.bytes("data");
                Request::Decrypt {
                    container,
                    id,
                    mechanism,
                    data,
                }
            }
        }
        "GenerateKeyPair" => Request::GenerateKeyPair {
            container: f.str("container"),
            bits: f.u32("bits"),
            id: f.bytes("id"),
            label: f.str("label"),
        },
        "GenerateEcKeyPair" => Request::GenerateEcKeyPair {
            container: f.str("container"),
            curve: {
                let w = f.word("curve");
                Curve::from_name(&w).unwrap_or_else(|| panic!("unknown curve {w}"))
            },
            id: f.bytes("id"),
            label: f.str("label"),
        },
        "Derive" => Request::Derive {
            container: f.str("container"),
            id: f.bytes("id"),
            peer: f.bytes("peer"),
        },
        "GenerateRandom" => Request::GenerateRandom { len: f.u32("len") },
        "PutCertificate" => Request::PutCertificate {
            container: f.str("container"),
            id: f.bytes("id"),
            label: f.str("label"),
            der: f.bytes("der"),
        },
        // An object by its id.
        "DeleteCertificate" | "DestroyKey" => {
            let (container, id) = (f.str("container"), f.bytes("id"));
            if variant == "DeleteCertificate" {
                Request::DeleteCertificate { container, id }
            } else {
                Request::DestroyKey { container, id }
            }
        }
        "Rewrap" => Request::Rewrap {
            container: f.str("container"),
            id: f.bytes("id"),
            in_hash: f.hash("in_hash"),
            data: f.bytes("data"),
            out_hash: f.hash("out_hash"),
            spki: f.bytes("spki"),
        },
        "ImportKey" => Request::ImportKey {
            container: f.str("container"),
            id: f.bytes("id"),
            label: f.str("label"),
            pkcs8: Zeroizing::new(f.bytes("pkcs8")),
        },
        "Attest" => Request::Attest {
            container: f.str("container"),
            id: f.bytes("id"),
            nonce: f.bytes("nonce"),
        },
        _ => panic!("unknown request {variant}"),
    };
    f.done();
    r
}

/// A signature's mechanism, named by `word`, and its parameters.
fn sign_mechanism(word: &str, f: &mut Fields) -> SignMechanism {
    match word {
        "pkcs1" => SignMechanism::Pkcs1,
        "ecdsa" => SignMechanism::Ecdsa,
        "eddsa" => SignMechanism::Eddsa,
        "pss" => SignMechanism::Pss {
            hash: f.hash("hash"),
            salt_len: f.u32("salt"),
        },
        m => panic!("unknown sign mechanism {m}"),
    }
}

/// A decryption's mechanism, named by `word`, and its parameters.
fn decrypt_mechanism(word: &str, f: &mut Fields) -> DecryptMechanism {
    match word {
        "pkcs1" => DecryptMechanism::Pkcs1,
        "oaep" => DecryptMechanism::Oaep {
            hash: f.hash("hash"),
            label: f.bytes("label"),
        },
        m => panic!("unknown decrypt mechanism {m}"),
    }
}

/// A valid request of the named kind: `Reply::decode` only looks at the kind.
fn request_of_kind(kind: &str) -> Request {
    let c = "container=\"c\"";
    let fields = match kind {
        "ListContainers" => String::new(),
        "TokenInfo" | "Logout" | "SoLogout" => c.to_owned(),
        "Login" | "InitPin" => format!("{c} pin=hex:"),
        "SoLogin" => format!("{c} puk=hex:"),
        "ChangePin" | "ChangePuk" => format!("{c} old=hex: new=hex:"),
        "FindObjects" => c.to_owned(),
        "GetAttributes" => format!("{c} class=privkey id=hex:01"),
        "Sign" => format!("{c} id=hex:01 mechanism=pkcs1 data=hex:00"),
        "Decrypt" => format!("{c} id=hex:01 mechanism=pkcs1 data=hex:00"),
        "GenerateKeyPair" => format!("{c} bits=2048 id=hex: label=\"\""),
        "GenerateEcKeyPair" => format!("{c} curve=p256 id=hex: label=\"\""),
        "Derive" => format!("{c} id=hex:01 peer=hex:04"),
        "GenerateRandom" => "len=1".to_owned(),
        "PutCertificate" => format!("{c} id=hex:01 label=\"\" der=hex:3000"),
        "DeleteCertificate" | "DestroyKey" => format!("{c} id=hex:01"),
        "Rewrap" => {
            format!("{c} id=hex:01 in_hash=sha256 data=hex:00 out_hash=sha256 spki=hex:3000")
        }
        "ImportKey" => format!("{c} id=hex:01 label=\"\" pkcs8=hex:3000"),
        "Attest" => format!("{c} id=hex:01 nonce=hex:{}", "00".repeat(16)),
        _ => panic!("unknown request kind {kind}"),
    };
    request(kind, Fields::parse(&fields))
}

fn reply(variant: &str, mut f: Fields) -> Reply {
    let r = match variant {
        "Done" => Reply::Done,
        "Containers" => {
            let mut v = Vec::new();
            while let Some(Value::Str(name)) = f.opt("name") {
                v.push(ContainerEntry {
                    name,
                    flags: f.u32("flags"),
                });
            }
            Reply::Containers(v)
        }
        "TokenInfo" => Reply::TokenInfo(TokenInfo {
            name: f.str("name"),
            flags: f.u32("flags"),
            retries_left: f.u32("retries"),
            min_pin: f.u32("min_pin"),
            max_pin: f.u32("max_pin"),
            serial: f.str("serial"),
            so_retries_left: f.u32("puk_retries"),
        }),
        "Objects" => {
            let mut v = Vec::new();
            while let Some(Value::Word(c)) = f.opt("class") {
                v.push(ObjectEntry {
                    class: class(&c),
                    id: f.bytes("id"),
                    label: f.str("label"),
                });
            }
            Reply::Objects(v)
        }
        "Attributes" => {
            let mut v = Vec::new();
            while let Some(Value::Num(t)) = f.opt("type") {
                v.push((u32::try_from(t).expect("u32"), f.bytes("value")));
            }
            Reply::Attributes(v)
        }
        "Signature" => Reply::Signature(f.bytes("value")),
        "Plaintext" => Reply::Plaintext(Zeroizing::new(f.bytes("value"))),
        "KeyPair" => Reply::KeyPair {
            id: f.bytes("id"),
            modulus: f.bytes("modulus"),
            exponent: f.bytes("exponent"),
        },
        "EcKeyPair" => Reply::EcKeyPair {
            id: f.bytes("id"),
            point: f.bytes("point"),
        },
        "Derived" => Reply::Derived(Zeroizing::new(f.bytes("value"))),
        "Random" => Reply::Random(f.bytes("value")),
        "Rewrapped" => Reply::Rewrapped(f.bytes("value")),
        "Attestation" => Reply::Attestation(f.bytes("value")),
        _ => panic!("unknown reply {variant}"),
    };
    f.done();
    r
}

// ---------------------------------------------------------------------------
// The transcript

/// One vector: its description line, encoded lines and where it starts.
#[derive(Debug)]
struct Vector {
    line_no: usize,
    description: String,
    encoded: Vec<String>,
}

fn vectors(text: &str) -> Vec<Vector> {
    let mut out: Vec<Vector> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(enc) = line.strip_prefix("= ") {
            out.last_mut()
                .unwrap_or_else(|| panic!("line {}: '=' before a description", i + 1))
                .encoded
                .push(enc.to_owned());
        } else {
            out.push(Vector {
                line_no: i + 1,
                description: line.to_owned(),
                encoded: Vec::new(),
            });
        }
    }
    for v in &out {
        assert!(!v.encoded.is_empty(), "line {}: no '=' line", v.line_no);
    }
    out
}

/// Checks one vector; returns its kind for the coverage check.
fn check(v: &Vector) -> String {
    let (kind, rest) = v
        .description
        .split_once(' ')
        .unwrap_or((&v.description, ""));
    let (variant, fields) = rest.split_once(' ').unwrap_or((rest, ""));
    let at = format!("line {}: {}", v.line_no, v.description);
    let single = || {
        assert_eq!(v.encoded.len(), 1, "{at}: expected one '=' line");
        v.encoded[0].as_str()
    };
    match kind {
        "command" => {
            let typed = command(variant, Fields::parse(fields));
            let line = single();
            assert_eq!(typed.encode(), line, "{at}: encode");
            assert_eq!(Command::parse(line), Ok(typed), "{at}: parse");
            format!("command {variant}")
        }
        "request" => {
            // A program the request is for (section 7.23) comes first.
            let mut f = Fields::parse(fields);
            let program = f.opt("program").map(|v| match v {
                Value::Str(s) => s,
                v => panic!("{at}: program: expected a string, found {v:?}"),
            });
            let typed = request(variant, f);
            let line = single();
            let encoded = typed.encode_for(program.as_deref()).unwrap();
            assert_eq!(encoded.as_str(), line, "{at}: encode");
            assert_eq!(
                Request::parse_for(line),
                Ok((typed, program)),
                "{at}: parse"
            );
            format!("request {variant}")
        }
        "reply" => {
            let (reply_variant, fields) = fields.split_once(' ').unwrap_or((fields, ""));
            let req = request_of_kind(variant);
            let typed = reply(reply_variant, Fields::parse(fields));
            let text = v.encoded.join("\r\n");
            assert_eq!(typed.encode().unwrap().as_str(), text, "{at}: encode");
            assert_eq!(
                Reply::decode(&req, &text),
                Ok(InnerOutcome::Done(typed)),
                "{at}: decode"
            );
            format!("reply {variant}")
        }
        "failed" => {
            let req = request_of_kind(variant);
            let mut f = Fields::parse(fields);
            let rv = CkRv(f.u32("rv"));
            f.done();
            let line = single();
            assert_eq!(ckr_line(rv), line, "{at}: encode");
            assert_eq!(
                Reply::decode(&req, line),
                Ok(InnerOutcome::Failed(rv)),
                "{at}: decode"
            );
            kind.to_owned()
        }
        "rejected" => {
            let req = request_of_kind(variant);
            Fields::parse(fields).done();
            let line = single();
            assert_eq!(line, "ERROR", "{at}");
            assert_eq!(
                Reply::decode(&req, line),
                Ok(InnerOutcome::Rejected),
                "{at}: decode"
            );
            kind.to_owned()
        }
        "final" => {
            let mut f = Fields::parse(fields);
            let typed = match variant {
                "Ok" => FinalResult::Ok,
                "Error" => FinalResult::Error,
                "CmeError" => FinalResult::CmeError(u16::try_from(f.num("code")).expect("u16")),
                _ => panic!("{at}: unknown final result"),
            };
            f.done();
            let line = single();
            assert_eq!(typed.as_line(), line, "{at}: encode");
            assert_eq!(FinalResult::parse(line), Some(typed), "{at}: parse");
            kind.to_owned()
        }
        "version" => {
            let mut f = Fields::parse(rest);
            let typed = VersionInfo {
                protocol: f.num("protocol"),
                implementation: f.str("implementation"),
                max_line: usize::try_from(f.num("max_line")).expect("usize"),
            };
            f.done();
            let line = single();
            assert_eq!(typed.encode().unwrap(), line, "{at}: encode");
            assert_eq!(VersionInfo::parse(line), Ok(typed), "{at}: parse");
            kind.to_owned()
        }
        "announcement" => {
            use phonecsp_protocol::announce::{Announced, Announcement};
            let mut f = Fields::parse(rest);
            let mut containers = Vec::new();
            while let Some(name) = f.opt("container") {
                let Value::Str(name) = name else {
                    panic!("{at}: container is a string")
                };
                containers.push(Announced {
                    name,
                    flags: f.u32("flags"),
                    version: f.num("version"),
                });
            }
            f.done();
            let typed = Announcement { containers };
            let text = v.encoded.join("\r\n");
            assert_eq!(typed.encode().unwrap(), text.as_bytes(), "{at}: encode");
            assert_eq!(
                Announcement::parse(text.as_bytes()),
                Ok(Some(typed)),
                "{at}: parse"
            );
            kind.to_owned()
        }
        "invalid" => {
            if variant == "announcement" {
                let text = v.encoded.join("\r\n");
                let r = phonecsp_protocol::announce::Announcement::parse(text.as_bytes());
                assert!(r.is_err(), "{at}: {text:?} parsed");
                return "invalid announcement".to_owned();
            }
            let line = single();
            let err: Result<(), ParseError> = match variant {
                "command" => Command::parse(line).map(drop),
                "request" => Request::parse(line).map(drop),
                _ => panic!("{at}: unknown invalid kind"),
            };
            assert!(err.is_err(), "{at}: {line:?} parsed");
            format!("invalid {variant}")
        }
        _ => panic!("{at}: unknown vector kind"),
    }
}

#[test]
fn transcript_vectors_roundtrip() {
    let vs = vectors(TRANSCRIPT);
    let kinds: std::collections::BTreeSet<String> = vs.iter().map(check).collect();
    // Every command and every request kind has at least one vector, and so
    // does the reply to every request kind.
    for k in ["Attention", "Echo", "Version", "Handshake", "Frame"] {
        assert!(kinds.contains(&format!("command {k}")), "no vector for {k}");
    }
    for k in [
        "ListContainers",
        "TokenInfo",
        "Login",
        "Logout",
        "ChangePin",
        "FindObjects",
        "GetAttributes",
        "Sign",
        "Decrypt",
        "GenerateKeyPair",
        "GenerateEcKeyPair",
        "Derive",
        "GenerateRandom",
        "PutCertificate",
        "DeleteCertificate",
        "DestroyKey",
        "Rewrap",
        "ImportKey",
        "Attest",
    ] {
        assert!(
            kinds.contains(&format!("request {k}")),
            "no request vector for {k}"
        );
        assert!(
            kinds.contains(&format!("reply {k}")),
            "no reply vector for {k}"
        );
    }
    for k in [
        "failed",
        "rejected",
        "final",
        "version",
        "invalid command",
        "invalid request",
        "announcement",
        "invalid announcement",
    ] {
        assert!(kinds.contains(k), "no {k} vector");
    }
}

// ---------------------------------------------------------------------------
// The pre-session byte transcript

/// The handset of `presession.txt`: a fixed identity, no pinned host, and no
/// pairing code on offer. It must never be asked to execute anything.
struct PreSessionHandler;

impl Handler for PreSessionHandler {
    fn identity(&self) -> StaticKeypair {
        StaticKeypair::from_private(&[7; 32])
    }
    fn handset_name(&self) -> String {
        "vectors".into()
    }
    fn known_hosts(&self) -> Vec<[u8; 32]> {
        Vec::new()
    }
    fn pairing_psk(&mut self) -> Option<Zeroizing<[u8; 32]>> {
        None
    }
    fn pairing_completed(&mut self, _host: [u8; 32], _host_name: &str) -> bool {
        panic!("no pairing is open")
    }
    fn pairing_failed(&mut self) {
        panic!("no pairing is open")
    }
    fn execute(&mut self, _asker: &Asker<'_>, _request: Request) -> Result<Reply, CkRv> {
        panic!("no session, nothing to execute")
    }
    fn session_ended(&mut self, _host: &[u8; 32]) {
        panic!("no session to end")
    }
}

/// Undoes the escapes of `presession.txt`: `\r`, `\n`, `\\`, `\xHH`.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            match b.get(i + 1) {
                Some(b'r') => out.push(b'\r'),
                Some(b'n') => out.push(b'\n'),
                Some(b'\\') => out.push(b'\\'),
                Some(b'x') => {
                    out.push(u8::from_str_radix(&s[i + 2..i + 4], 16).expect("\\xHH"));
                    i += 2;
                }
                _ => panic!("bad escape in {s:?}"),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn presession_bytes_replay() {
    let mut max_line = None;
    let mut implementation = None;
    let mut steps: Vec<(usize, Vec<u8>, Vec<u8>)> = Vec::new();
    for (i, line) in PRESESSION.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(v) = line.strip_prefix("@max_line ") {
            max_line = Some(v.parse::<usize>().expect("max_line"));
        } else if let Some(v) = line.strip_prefix("@implementation ") {
            implementation = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("> ") {
            steps.push((i + 1, unescape(v), Vec::new()));
        } else if let Some(v) = line.strip_prefix("< ") {
            steps
                .last_mut()
                .expect("'<' before '>'")
                .2
                .extend(unescape(v));
        } else if line == "<" || line == ">" {
            panic!("line {}: use '< ' / '> ' with a space", i + 1);
        } else {
            panic!("line {}: unknown line {line:?}", i + 1);
        }
    }
    let mut r = Responder::new(
        max_line.expect("@max_line"),
        &implementation.expect("@implementation"),
    );
    let mut h = PreSessionHandler;
    assert!(steps.len() >= 10);
    for (line_no, input, expected) in steps {
        let got = r.receive(&mut h, &input);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&expected),
            "presession.txt line {line_no}"
        );
        assert_eq!(got, expected, "presession.txt line {line_no}");
        assert!(!r.in_session());
    }
}

/// `vectors/compact.txt`: the compact form of every inner request and
/// reply in the transcript, made by an implementation of the spec written
/// apart from this crate's (`vectors/make_compact.py`).
#[test]
fn compact_vectors_both_ways() {
    use phonecsp_protocol::compact::{Direction, compact, expand};
    let text = include_str!("vectors/compact.txt");
    let (mut lines, mut dir, mut checked) = (Vec::new(), Direction::ToHandset, 0);
    for l in text.lines() {
        if let Some(t) = l.strip_prefix("> ") {
            (dir, lines) = (Direction::ToHandset, vec![t]);
        } else if let Some(t) = l.strip_prefix("< ") {
            dir = Direction::ToHost;
            lines.push(t);
        } else if let Some(h) = l.strip_prefix("= ") {
            let want = hex(h);
            let text = lines.join("\r\n");
            assert_eq!(hex_of(&compact(&text, dir).unwrap()), h, "{text}");
            assert_eq!(expand(&want, dir).unwrap().as_str(), text, "{h}");
            lines.clear();
            checked += 1;
        }
    }
    assert!(checked >= 50, "{checked}");
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
