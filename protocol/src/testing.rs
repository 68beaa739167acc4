//! Test doubles for the link, shared by this crate's unit and property
//! tests, the fuzz targets and the daemon's tests (feature `testing`): a
//! handset whose answers the test scripts, and one request of every kind.
//! Nothing here is built into the product.

use zeroize::Zeroizing;

use crate::ck::{CkRv, DecryptMechanism, HashAlg, ObjectClass, SignMechanism};
use crate::message::{DataObject, Reply, Request};
use crate::noise::{PairingCode, StaticKeypair};
use crate::responder::{Asker, Handler};

/// How a [`TestHandset`] answers a request.
pub type Answer = Box<dyn FnMut(&Request) -> Result<Reply, CkRv> + Send>;

/// A handset for tests: its key, the hosts it knows, the pairing code it
/// offers, a scripted answer, and counts of what happened.
pub struct TestHandset {
    pub identity: StaticKeypair,
    pub name: String,
    /// Pinned hosts; a completed pairing adds one.
    pub hosts: Vec<[u8; 32]>,
    pub code: Option<PairingCode>,
    pub answer: Answer,
    pub paired: u32,
    pub failed_pairings: u32,
    pub executed: usize,
    pub sessions_ended: u32,
    /// Lines by which a session's host was heard (`session_heard`).
    pub heard: u32,
    /// The program the last request named (section 7.23).
    pub program: Option<String>,
}

impl TestHandset {
    /// A handset that knows no host, offers no pairing and supports no
    /// request.
    pub fn new(identity: StaticKeypair) -> TestHandset {
        TestHandset {
            identity,
            name: "test handset".into(),
            hosts: Vec::new(),
            code: None,
            answer: Box::new(|_| Err(CkRv::FUNCTION_NOT_SUPPORTED)),
            paired: 0,
            failed_pairings: 0,
            executed: 0,
            sessions_ended: 0,
            heard: 0,
            program: None,
        }
    }

    /// Pins `host`, as after a pairing.
    pub fn knowing(mut self, host: [u8; 32]) -> TestHandset {
        self.hosts.push(host);
        self
    }

    /// Offers pairing with `code`.
    pub fn pairing(mut self, code: PairingCode) -> TestHandset {
        self.code = Some(code);
        self
    }

    pub fn answering(
        mut self,
        answer: impl FnMut(&Request) -> Result<Reply, CkRv> + Send + 'static,
    ) -> TestHandset {
        self.answer = Box::new(answer);
        self
    }
}

impl Handler for TestHandset {
    fn identity(&self) -> StaticKeypair {
        self.identity.clone()
    }
    fn handset_name(&self) -> String {
        self.name.clone()
    }
    fn known_hosts(&self) -> Vec<[u8; 32]> {
        self.hosts.clone()
    }
    fn pairing_psk(&mut self) -> Option<Zeroizing<[u8; 32]>> {
        self.code.as_ref().map(PairingCode::psk)
    }
    fn pairing_completed(&mut self, host: [u8; 32], _host_name: &str) -> bool {
        self.paired += 1;
        self.hosts.push(host);
        true
    }
    fn pairing_failed(&mut self) {
        self.failed_pairings += 1;
    }
    fn execute(&mut self, asker: &Asker<'_>, request: Request) -> Result<Reply, CkRv> {
        self.executed += 1;
        self.program = asker.program.map(str::to_owned);
        (self.answer)(&request)
    }
    fn session_ended(&mut self, _host: &[u8; 32]) {
        self.sessions_ended += 1;
    }
    fn session_heard(&mut self, _host: &[u8; 32]) {
        self.heard += 1;
    }
}

/// One request of every kind, with small valid arguments.
pub fn one_request_of_every_kind() -> Vec<Request> {
    let c = || "c".to_string();
    let by_id = |make: fn(String, Vec<u8>) -> Request| make(c(), vec![1]);
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
        Request::SoLogin {
            container: c(),
            puk: Zeroizing::new(vec![]),
        },
        Request::SoLogout { container: c() },
        Request::InitPin {
            container: c(),
            pin: Zeroizing::new(vec![]),
        },
        Request::ChangePuk {
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
            class: ObjectClass::PrivateKey,
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
        Request::GenerateEcKeyPair {
            container: c(),
            curve: crate::ck::Curve::P256,
            id: vec![],
            label: String::new(),
        },
        Request::Derive {
            container: c(),
            id: vec![1],
            peer: vec![4; 65],
        },
        Request::GenerateRandom { len: 1 },
        Request::PutCertificate {
            container: c(),
            id: vec![1],
            label: String::new(),
            der: vec![0x30, 0],
        },
        by_id(|container, id| Request::DeleteCertificate { container, id }),
        by_id(|container, id| Request::DestroyKey { container, id }),
        Request::PutData {
            container: c(),
            object: DataObject {
                id: vec![1],
                label: String::new(),
                application: String::new(),
                oid: vec![],
                value: vec![0],
            },
        },
        by_id(|container, id| Request::DeleteData { container, id }),
        Request::Rewrap {
            container: c(),
            id: vec![1],
            in_hash: HashAlg::Sha1,
            data: vec![0],
            out_hash: HashAlg::Sha512,
            spki: vec![0x30, 0],
        },
        Request::ImportKey {
            container: c(),
            id: vec![1],
            label: String::new(),
            pkcs8: Zeroizing::new(vec![0x30, 0]),
        },
        Request::Attest {
            container: c(),
            id: vec![1],
            nonce: vec![0; crate::limits::MIN_NONCE_LEN],
        },
    ]
}
