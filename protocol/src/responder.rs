//! The handset's side of the link as a sans-I/O state machine: bytes in,
//! bytes out. It enforces the rule that before a session only `AT`, `ATE`,
//! `AT+CKVER?` and `AT+CKHS` are answered, reassembles chunked frames, and
//! hands each decrypted `+CK` request to a [`Handler`] (the security manager).

use crate::at::ParseError;
use crate::at::{self, FinalResult, Line, LineSplitter, cme};
use crate::ck::CkRv;
use crate::message::{
    Command, HandshakeKind, PROTOCOL_VERSION, Reply, Request, VersionInfo, ckr_line,
};
use crate::noise::{
    HandsetPairing, MAX_FRAME_PLAINTEXT, MAX_NOISE_MESSAGE, Session, StaticKeypair,
    handset_accept_session_with,
};
use zeroize::Zeroizing;

/// What the responder needs from the handset's security manager.
pub trait Handler {
    /// The handset's static Noise key.
    fn identity(&self) -> StaticKeypair;
    /// The name shown to the computer during pairing.
    fn handset_name(&self) -> String;
    /// Pinned host keys, for the KK handshake.
    fn known_hosts(&self) -> Vec<[u8; 32]>;
    /// The PSK of the one-time pairing code on offer, if any.
    fn pairing_psk(&mut self) -> Option<Zeroizing<[u8; 32]>>;
    /// Pins a newly paired host and uses up the code; `false` refuses.
    fn pairing_completed(&mut self, host: [u8; 32], host_name: &str) -> bool;
    /// A pairing attempt failed (likely a wrong code).
    fn pairing_failed(&mut self);
    /// Executes one request for the authenticated `host`.
    fn execute(&mut self, host: &[u8; 32], request: Request) -> Result<Reply, CkRv>;
    /// The session with `host` ended: drop its logins.
    fn session_ended(&mut self, host: &[u8; 32]);
    /// The session announcement for `host` (docs/protocol.md section 5.7),
    /// at most `max` bytes, for the payload of KK message 2; empty for
    /// none. A handler that makes none keeps this default.
    fn session_announcement(&mut self, host: &[u8; 32], max: usize) -> Vec<u8> {
        let _ = (host, max);
        Vec::new()
    }
}

enum State {
    Idle,
    /// Boxed: a handshake state is several times the size of a session.
    Pairing(Box<HandsetPairing>),
    Session(Session),
}

/// The handset's link endpoint.
pub struct Responder {
    max_line: usize,
    implementation: String,
    echo: bool,
    splitter: LineSplitter,
    state: State,
    frame: Vec<u8>,
}

/// XX message 1 is the host's ephemeral key (32 bytes) and its empty payload,
/// which the psk modifier encrypts (16-byte tag): 48 bytes. Message 3 is at
/// least 64 (encrypted static key, tag of the name). So in `Pairing` state a
/// 48-byte message restarts pairing and anything else is message 3.
const XX_MESSAGE1_LEN: usize = 32 + 16;

impl Responder {
    pub fn new(max_line: usize, implementation: &str) -> Responder {
        let max_line = max_line.max(at::MIN_MAX_LINE);
        Responder {
            max_line,
            implementation: implementation.to_owned(),
            echo: true,
            splitter: LineSplitter::new(max_line),
            state: State::Idle,
            frame: Vec::new(),
        }
    }

    pub fn in_session(&self) -> bool {
        matches!(&self.state, State::Session(s) if s.is_alive())
    }

    /// Feeds received bytes; returns the bytes to send back.
    pub fn receive<H: Handler>(&mut self, handler: &mut H, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for line in self.splitter.push(bytes) {
            self.line(handler, line, &mut out);
        }
        out
    }

    /// The link went away: end any session.
    pub fn disconnected<H: Handler>(&mut self, handler: &mut H) {
        self.end_session(handler);
    }

    fn end_session<H: Handler>(&mut self, handler: &mut H) {
        if let State::Session(s) = std::mem::replace(&mut self.state, State::Idle) {
            handler.session_ended(s.remote_static());
        }
        self.frame.clear();
    }

    fn line<H: Handler>(&mut self, handler: &mut H, line: Line, out: &mut Vec<u8>) {
        let text = match line {
            Line::TooLong => {
                self.frame.clear();
                out.extend(at::final_line(FinalResult::CmeError(cme::LINE_TOO_LONG)));
                return;
            }
            Line::NotText => {
                out.extend(at::final_line(FinalResult::Error));
                return;
            }
            Line::Text(t) => t,
        };
        if self.echo {
            out.extend(text.as_bytes());
            out.push(b'\r');
        }
        let result = match Command::parse(&text) {
            Ok(cmd) => self.command(handler, cmd, out),
            Err(ParseError::Syntax(_)) => FinalResult::CmeError(cme::INCORRECT_PARAMETERS),
            Err(_) => FinalResult::Error,
        };
        out.extend(at::final_line(result));
    }

    fn command<H: Handler>(
        &mut self,
        handler: &mut H,
        cmd: Command,
        out: &mut Vec<u8>,
    ) -> FinalResult {
        match cmd {
            Command::Attention => FinalResult::Ok,
            Command::Echo(on) => {
                self.echo = on;
                FinalResult::Ok
            }
            Command::Version => {
                let info = VersionInfo {
                    protocol: PROTOCOL_VERSION,
                    implementation: self.implementation.clone(),
                    max_line: self.max_line,
                };
                match info.encode() {
                    Ok(l) => {
                        out.extend(at::info_line(&l));
                        FinalResult::Ok
                    }
                    Err(_) => FinalResult::Error,
                }
            }
            Command::Handshake { kind, message } => self.handshake(handler, kind, &message, out),
            Command::Frame { part, more } => self.frame(handler, part, more, out),
        }
    }

    fn handshake<H: Handler>(
        &mut self,
        handler: &mut H,
        kind: HandshakeKind,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> FinalResult {
        let failed = FinalResult::CmeError(cme::HANDSHAKE_FAILED);
        let state = std::mem::replace(&mut self.state, State::Idle);
        let pending = match state {
            State::Pairing(p)
                if kind == HandshakeKind::Pair && message.len() != XX_MESSAGE1_LEN =>
            {
                Some(p)
            }
            State::Session(s) => {
                // A new handshake replaces the session.
                handler.session_ended(s.remote_static());
                None
            }
            _ => None,
        };
        self.frame.clear();
        let identity = handler.identity();
        let reply = match (kind, pending) {
            (HandshakeKind::Pair, Some(p)) => match p.finish(message) {
                Ok((session, host_name, confirm)) => {
                    if !handler.pairing_completed(*session.remote_static(), &host_name) {
                        return failed;
                    }
                    self.state = State::Session(session);
                    confirm
                }
                Err(_) => {
                    handler.pairing_failed();
                    return failed;
                }
            },
            (HandshakeKind::Pair, None) => {
                let Some(psk) = handler.pairing_psk() else {
                    return FinalResult::CmeError(cme::NOT_ALLOWED);
                };
                match HandsetPairing::accept(&identity, &psk, message, &handler.handset_name()) {
                    Ok((p, m2)) => {
                        self.state = State::Pairing(Box::new(p));
                        m2
                    }
                    Err(_) => return failed,
                }
            }
            (HandshakeKind::Session, _) => {
                let max = crate::announce::max_payload(self.max_line);
                let hosts = handler.known_hosts();
                let payload = |host: &[u8; 32]| {
                    let p = handler.session_announcement(host, max);
                    // One that would break the line limit is left out.
                    if p.len() > max { Vec::new() } else { p }
                };
                match handset_accept_session_with(&identity, &hosts, message, payload) {
                    Ok((session, m2)) => {
                        self.state = State::Session(session);
                        m2
                    }
                    Err(_) => return failed,
                }
            }
        };
        out.extend(at::info_line(&format!("+CKHS: {}", at::quote_b64(&reply))));
        FinalResult::Ok
    }

    fn frame<H: Handler>(
        &mut self,
        handler: &mut H,
        part: Vec<u8>,
        more: bool,
        out: &mut Vec<u8>,
    ) -> FinalResult {
        if !self.in_session() {
            self.frame.clear();
            return FinalResult::CmeError(cme::NOT_ALLOWED);
        }
        if self.frame.len() + part.len() > MAX_NOISE_MESSAGE {
            self.frame.clear();
            return FinalResult::CmeError(cme::FRAME_TOO_LONG);
        }
        self.frame.extend_from_slice(&part);
        if more {
            return FinalResult::Ok;
        }
        let frame = std::mem::take(&mut self.frame);
        let State::Session(session) = &mut self.state else {
            return FinalResult::CmeError(cme::NOT_ALLOWED);
        };
        let plain = match session.decrypt(&frame) {
            Ok(p) => p,
            Err(_) => {
                self.end_session(handler);
                return FinalResult::CmeError(cme::SESSION_ENDED);
            }
        };
        let host = *session.remote_static();
        let response: Zeroizing<String> = match std::str::from_utf8(&plain)
            .map_err(|_| ())
            .and_then(|s| Request::parse(s).map_err(|_| ()))
        {
            Err(()) => Zeroizing::new("ERROR".to_owned()),
            Ok(request) => match handler.execute(&host, request) {
                Ok(reply) => reply
                    .encode()
                    .unwrap_or_else(|_| Zeroizing::new(ckr_line(CkRv::GENERAL_ERROR))),
                Err(rv) => Zeroizing::new(ckr_line(rv)),
            },
        };
        // A reply too big for one Noise message is the module's failure, not
        // the channel's: answer it as such and keep the session.
        let response = if response.len() > MAX_FRAME_PLAINTEXT {
            Zeroizing::new(ckr_line(CkRv::GENERAL_ERROR))
        } else {
            response
        };
        let State::Session(session) = &mut self.state else {
            return FinalResult::CmeError(cme::NOT_ALLOWED);
        };
        let Ok(ct) = session.encrypt(response.as_bytes()) else {
            self.end_session(handler);
            return FinalResult::CmeError(cme::SESSION_ENDED);
        };
        // Each +CKX line stays within our own advertised limit.
        let per_line = ((self.max_line - 8) / 4) * 3;
        for chunk in ct.chunks(per_line) {
            out.extend(at::info_line(&format!("+CKX: {}", at::quote_b64(chunk))));
        }
        FinalResult::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::noise::{HostPairing, PairingCode};
    use crate::testing::TestHandset;

    /// A handset offering pairing, answering every request with `Done`.
    fn handset() -> (TestHandset, PairingCode) {
        let code = PairingCode::generate();
        let h = TestHandset::new(StaticKeypair::generate())
            .pairing(code.clone())
            .answering(|_| Ok(Reply::Done));
        (h, code)
    }

    /// Sends one command line; returns the information lines and final line.
    fn exchange(r: &mut Responder, h: &mut TestHandset, cmd: &Command) -> Vec<String> {
        let out = r.receive(h, format!("{}\r", cmd.encode()).as_bytes());
        String::from_utf8(out)
            .unwrap()
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn hs_reply(lines: &[String]) -> Vec<u8> {
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[1], "OK");
        let p = crate::message::info_params(&lines[0], "+CKHS").unwrap();
        p.bytes(0).unwrap()
    }

    fn pair(r: &mut Responder, h: &mut TestHandset, code: &PairingCode) -> Session {
        let host = StaticKeypair::generate();
        let (hp, m1) = HostPairing::start(&host, code).unwrap();
        let m2 = hs_reply(&exchange(
            r,
            h,
            &Command::Handshake {
                kind: HandshakeKind::Pair,
                message: m1,
            },
        ));
        let (finish, m3) = hp.respond(&m2, "laptop").unwrap();
        let confirm = hs_reply(&exchange(
            r,
            h,
            &Command::Handshake {
                kind: HandshakeKind::Pair,
                message: m3,
            },
        ));
        finish.confirm(&confirm).unwrap().0
    }

    /// Regression: message 1 of XXpsk3 is 48 bytes, not 32, so a host that
    /// starts pairing again while one is pending must get a fresh message 2
    /// instead of having its message 1 read as a wrong message 3 (which
    /// counted as a failed pairing attempt).
    #[test]
    fn second_message1_restarts_pairing() {
        let (mut h, code) = handset();
        let mut r = Responder::new(4096, "test");
        exchange(&mut r, &mut h, &Command::Echo(false));
        let host = StaticKeypair::generate();
        let (_abandoned, m1) = HostPairing::start(&host, &code).unwrap();
        assert_eq!(m1.len(), XX_MESSAGE1_LEN);
        hs_reply(&exchange(
            &mut r,
            &mut h,
            &Command::Handshake {
                kind: HandshakeKind::Pair,
                message: m1,
            },
        ));
        let _session = pair(&mut r, &mut h, &code);
        assert_eq!((h.paired, h.failed_pairings), (1, 0));
        assert!(r.in_session());
    }

    /// A reply too large for one Noise message is answered with
    /// `+CKR: CKR_GENERAL_ERROR`; the session survives.
    #[test]
    fn oversized_reply_is_a_token_error() {
        let (mut h, code) = handset();
        let mut r = Responder::new(4096, "test");
        exchange(&mut r, &mut h, &Command::Echo(false));
        let mut session = pair(&mut r, &mut h, &code);
        h.answer = Box::new(|_| Ok(Reply::Random(vec![0; MAX_NOISE_MESSAGE])));
        let ct = session.encrypt(b"+CKRAND=1").unwrap();
        let lines = exchange(
            &mut r,
            &mut h,
            &Command::Frame {
                part: ct,
                more: false,
            },
        );
        assert_eq!(lines.len(), 2, "{lines:?}");
        let p = crate::message::info_params(&lines[0], "+CKX").unwrap();
        let plain = session.decrypt(&p.bytes(0).unwrap()).unwrap();
        assert_eq!(&plain[..], ckr_line(CkRv::GENERAL_ERROR).as_bytes());
        assert!(r.in_session());
    }
}
