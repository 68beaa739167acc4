//! Test doubles for the link, shared by this crate's unit and property
//! tests, the fuzz targets and the daemon's tests (feature `testing`): a
//! handset whose answers the test scripts, and one request of every kind.
//! Nothing here is built into the product.

use zeroize::Zeroizing;

use crate::ck::CkRv;
use crate::message::{Reply, Request};
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

/// A line of each command of the inner set (docs/protocol.md section 7),
/// with small valid arguments: container `c`, key id 01, empty PINs.
const ONE_OF_EACH: &str = r#"
+CKLIST
+CKTINFO="c"
+CKLOGIN="c",""
+CKLOGOUT="c"
+CKPIN="c","",""
+CKSOLOGIN="c",""
+CKSOLOGOUT="c"
+CKINITPIN="c",""
+CKPUK="c","",""
+CKFIND="c"
+CKATTR="c",3,"AQ=="
+CKSIGN="c","AQ==",1,"AA=="
+CKDEC="c","AQ==",9,"AA==",592,""
+CKGEN="c",2048,"",""
+CKGENEC="c",1,"",""
+CKDERIVE="c","AQ==",4176,"BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ="
+CKRAND=1
+CKPUTCERT="c","AQ==","","MAA="
+CKDELCERT="c","AQ=="
+CKDELKEY="c","AQ=="
+CKPUTDATA="c","AQ==","","","","AA=="
+CKDELDATA="c","AQ=="
+CKREWRAP="c","AQ==",544,"AA==",624,"MAA="
+CKIMPORT="c","AQ==","","MAA="
+CKATTEST="c","AQ==","AAAAAAAAAAAAAAAAAAAAAA=="
"#;

/// One request of every kind, as [`Request::parse`] reads [`ONE_OF_EACH`].
/// For the tests of what is answered to a request (`Reply::decode`, the
/// responder), not of the request decoder itself.
pub fn one_request_of_every_kind() -> Vec<Request> {
    ONE_OF_EACH
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| Request::parse(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each line is a different command, and each reads back as itself:
    /// the table says what it means to say.
    #[test]
    fn one_request_of_every_kind_is_one_of_each_and_encodes_as_written() {
        let requests = one_request_of_every_kind();
        let names: std::collections::BTreeSet<_> = requests.iter().map(Request::name).collect();
        assert_eq!(names.len(), requests.len());
        let written: Vec<_> = ONE_OF_EACH.lines().filter(|l| !l.is_empty()).collect();
        for (r, line) in requests.iter().zip(written) {
            assert_eq!(&*r.encode().unwrap(), line);
        }
    }
}
