//! The inner command set and the handset's state machine:
//!
//! * the input as UTF-8 through `Request::parse` (whatever parses must
//!   re-encode and parse to the same request) and through `Reply::decode`
//!   against one request of every kind;
//! * the raw bytes fed to a `Responder` in pieces: it must not panic, and
//!   every line it writes must stay within the limit it advertises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phonecsp_protocol::ck::{DecryptMechanism, HashAlg, ObjectClass, SignMechanism};
use phonecsp_protocol::noise::PairingCode;
use phonecsp_protocol::{CkRv, Handler, Reply, Request, Responder, StaticKeypair};
use zeroize::Zeroizing;

/// One request of every kind, for `Reply::decode`.
fn requests() -> Vec<Request> {
    let c = || "c".to_string();
    vec![
        Request::ListContainers,
        Request::TokenInfo { container: c() },
        Request::Login {
            container: c(),
            pin: Zeroizing::new(vec![]),
        },
        Request::Logout { container: c() },
        Request::ChangePin {
            container: c(),
            old: Zeroizing::new(vec![]),
            new: Zeroizing::new(vec![]),
        },
        Request::FindObjects {
            container: c(),
            class: None,
            id: None,
            label: None,
        },
        Request::GetAttributes {
            container: c(),
            class: ObjectClass::Certificate,
            id: vec![1],
        },
        Request::Sign {
            container: c(),
            id: vec![1],
            mechanism: SignMechanism::Pkcs1,
            data: vec![0],
        },
        Request::Decrypt {
            container: c(),
            id: vec![1],
            mechanism: DecryptMechanism::Oaep {
                hash: HashAlg::Sha256,
                label: vec![],
            },
            data: vec![0],
        },
        Request::GenerateKeyPair {
            container: c(),
            bits: 2048,
            id: vec![],
            label: String::new(),
        },
        Request::GenerateRandom { len: 1 },
        Request::PutCertificate {
            container: c(),
            id: vec![1],
            label: String::new(),
            der: vec![0x30, 0],
        },
        Request::DeleteCertificate {
            container: c(),
            id: vec![1],
        },
        Request::DestroyKey {
            container: c(),
            id: vec![1],
        },
        Request::Rewrap {
            container: c(),
            id: vec![1],
            in_hash: HashAlg::Sha1,
            data: vec![0],
            out_hash: HashAlg::Sha512,
            spki: vec![0x30, 0],
        },
    ]
}

/// A handset with a pairing code on offer and one pinned host, so that
/// handshake messages reach the Noise code.
struct FuzzHandler {
    identity: StaticKeypair,
    code: PairingCode,
}

impl Handler for FuzzHandler {
    fn identity(&self) -> StaticKeypair {
        self.identity.clone()
    }
    fn handset_name(&self) -> String {
        "fuzz".into()
    }
    fn known_hosts(&self) -> Vec<[u8; 32]> {
        vec![*StaticKeypair::from_private(&[3; 32]).public()]
    }
    fn pairing_psk(&mut self) -> Option<Zeroizing<[u8; 32]>> {
        Some(self.code.psk())
    }
    fn pairing_completed(&mut self, _host: [u8; 32], _host_name: &str) -> bool {
        true
    }
    fn pairing_failed(&mut self) {}
    fn execute(&mut self, _host: &[u8; 32], _request: Request) -> Result<Reply, CkRv> {
        Err(CkRv::FUNCTION_NOT_SUPPORTED)
    }
    fn session_ended(&mut self, _host: &[u8; 32]) {}
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(req) = Request::parse(text) {
            let line = req.encode().expect("a parsed request encodes");
            assert_eq!(Request::parse(&line), Ok(req));
        }
        for req in requests() {
            let _ = Reply::decode(&req, text);
        }
    }

    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let max_line = 256 + usize::from(head) * 4;
    let piece = usize::from(head % 32) + 1;
    let mut handler = FuzzHandler {
        identity: StaticKeypair::from_private(&[1; 32]),
        code: PairingCode::parse("AAAA-AAAA-AAAA-AAAA-AAAA-AAAA-AA").expect("code"),
    };
    let mut responder = Responder::new(max_line, "fuzz");
    for chunk in rest.chunks(piece) {
        let out = responder.receive(&mut handler, chunk);
        for line in out.split(|&b| b == b'\r' || b == b'\n') {
            assert!(line.len() <= max_line, "response line over the limit");
        }
    }
    responder.disconnected(&mut handler);
});
