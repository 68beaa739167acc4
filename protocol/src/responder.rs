//! The handset's side of the link as a sans-I/O state machine: bytes in,
//! bytes out. It enforces the rule that before a session only `AT`, `ATE`,
//! `AT+CKVER?` and `AT+CKHS` are answered, reassembles chunked frames, and
//! hands each decrypted `+CK` request to a [`Handler`] (the security manager).

use crate::at::ParseError;
use crate::at::{self, FinalResult, Line, LineSplitter, cme};
use crate::ck::CkRv;
use crate::compact::{self, Direction, Framed};
use crate::message::{
    Command, HandshakeKind, PROTOCOL_VERSION, Reply, Request, VersionInfo, ckr_line,
};
use crate::noise::{
    HandsetPairing, MAX_FRAME_PLAINTEXT, MAX_NOISE_MESSAGE, Session, StaticKeypair,
    handset_accept_session_with,
};
use zeroize::Zeroizing;

/// Who asks for a request: the host the session authenticated, and the
/// program on that host the request names. The program is the host's word
/// only: untrusted display text for a prompt (section 7.23 of
/// docs/protocol.md), never a ground for a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Asker<'a> {
    /// The host's static Noise key, as the handshake proved it.
    pub host: [u8; 32],
    /// The program the request names, if it names one.
    pub program: Option<&'a str>,
}

impl Asker<'_> {
    /// `host`, for a request that names no program.
    pub fn host(host: [u8; 32]) -> Asker<'static> {
        Asker {
            host,
            program: None,
        }
    }
}

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
    /// The digits of the short pairing code on offer, if any (section 5.8).
    fn pairing_short_code(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        None
    }
    /// Pins a newly paired host and uses up the code; `false` refuses.
    fn pairing_completed(&mut self, host: [u8; 32], host_name: &str) -> bool;
    /// A pairing attempt failed (likely a wrong code).
    fn pairing_failed(&mut self);
    /// Executes one request for whoever asks (the host and the program on
    /// it the request names).
    fn execute(&mut self, asker: &Asker<'_>, request: Request) -> Result<Reply, CkRv>;
    /// The session with `host` ended: drop its logins (or keep them for a
    /// grace period, section 5.7).
    fn session_ended(&mut self, host: &[u8; 32]);
    /// A line arrived while a session with `host` is up: the host was
    /// there then. A serial line stays open when the computer goes, so
    /// this, not [`Handler::session_ended`], tells when it was last seen.
    fn session_heard(&mut self, host: &[u8; 32]) {
        let _ = host;
    }
    /// The session announcement for `host` (docs/protocol.md section 5.9),
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
    /// In binary mode (section 6.7) after a KK handshake in which both
    /// ends offered it: the bytes of the frame being received.
    binary: Option<Vec<u8>>,
    /// The PSK an `AT+CKPAKE` exchange produced, for the next pairing
    /// handshake only.
    pake_psk: Option<Zeroizing<[u8; 32]>>,
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
            binary: None,
            pake_psk: None,
        }
    }

    /// Whether the line is in binary mode.
    pub fn is_binary(&self) -> bool {
        self.binary.is_some()
    }

    /// Whether part of a binary frame is waiting for the rest: the caller
    /// should then call [`Responder::quiet`] if the line stays silent.
    pub fn frame_pending(&self) -> bool {
        self.binary.as_ref().is_some_and(|b| !b.is_empty())
    }

    /// The line has been silent for a while (section 6.7 gives 2 seconds)
    /// in the middle of a binary frame: the host is gone or has started
    /// over in text, and the frame's length cannot be trusted to find the
    /// next one. The session ends and the line is back in text mode.
    pub fn quiet<H: Handler>(&mut self, handler: &mut H) {
        if self.frame_pending() {
            self.end_session(handler);
        }
    }

    pub fn in_session(&self) -> bool {
        matches!(&self.state, State::Session(s) if s.is_alive())
    }

    /// Feeds received bytes; returns the bytes to send back.
    pub fn receive<H: Handler>(&mut self, handler: &mut H, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut text = bytes.to_vec();
        if let Some(buf) = &mut self.binary {
            buf.extend_from_slice(bytes);
            text = self.frames(handler, &mut out);
        }
        for line in self.splitter.push(&text) {
            if self.binary.is_some() {
                // The host waits for the handshake's final result before
                // its first frame; lines after it are not a frame.
                break;
            }
            self.line(handler, line, &mut out);
        }
        out
    }

    /// Answers every whole frame in the binary buffer. A byte that cannot
    /// start a frame ends binary mode and the session (the host has
    /// started over in text, section 6.7); what follows it is returned,
    /// to be read as text.
    fn frames<H: Handler>(&mut self, handler: &mut H, out: &mut Vec<u8>) -> Vec<u8> {
        loop {
            let Some(buf) = &mut self.binary else {
                return Vec::new();
            };
            match compact::next_frame(buf) {
                Framed::Partial => return Vec::new(),
                Framed::NotAFrame => {
                    let rest = std::mem::take(buf);
                    self.end_session(handler);
                    return rest;
                }
                Framed::Frame { end } => {
                    let frame: Vec<u8> = buf.drain(..end).skip(3).collect();
                    self.binary_frame(handler, &frame, out);
                }
            }
        }
    }

    /// One binary frame: an empty plaintext is a ping, answered with an
    /// empty one; anything else a compact request.
    fn binary_frame<H: Handler>(&mut self, handler: &mut H, frame: &[u8], out: &mut Vec<u8>) {
        let State::Session(session) = &mut self.state else {
            self.end_session(handler);
            return;
        };
        let plain = match session.decrypt(frame) {
            Ok(p) => p,
            Err(_) => {
                // Said in text: a host in binary mode reads the CR as the
                // end of binary mode and the session.
                self.end_session(handler);
                out.extend(at::final_line(FinalResult::CmeError(cme::SESSION_ENDED)));
                return;
            }
        };
        // A frame, or the empty one that is the host's idle probe: the
        // session's host is there (section 5.7).
        handler.session_heard(session.remote_static());
        let response = if plain.is_empty() {
            Zeroizing::new(Vec::new())
        } else {
            let text = compact::expand(&plain, Direction::ToHandset);
            let reply = self.serve(handler, text.as_deref().map(String::as_str).ok());
            compact::compact(&reply, Direction::ToHost)
                .or_else(|_| compact::compact(&ckr_line(CkRv::GENERAL_ERROR), Direction::ToHost))
                .unwrap_or_default()
        };
        let State::Session(session) = &mut self.state else {
            return;
        };
        match session
            .encrypt(&response)
            .ok()
            .and_then(|ct| compact::frame(&ct))
        {
            Some(f) => out.extend(f),
            None => {
                self.end_session(handler);
                out.extend(at::final_line(FinalResult::CmeError(cme::SESSION_ENDED)));
            }
        }
    }

    /// The text answer to a request's text (`None`: not readable).
    fn serve<H: Handler>(&mut self, handler: &mut H, request: Option<&str>) -> Zeroizing<String> {
        let State::Session(session) = &self.state else {
            return Zeroizing::new(ckr_line(CkRv::GENERAL_ERROR));
        };
        let host = *session.remote_static();
        let response = match request.map(Request::parse_for) {
            None | Some(Err(_)) => Zeroizing::new("ERROR".to_owned()),
            Some(Ok((request, program))) => {
                let asker = Asker {
                    host,
                    program: program.as_deref(),
                };
                match handler.execute(&asker, request) {
                    Ok(reply) => reply
                        .encode()
                        .unwrap_or_else(|_| Zeroizing::new(ckr_line(CkRv::GENERAL_ERROR))),
                    Err(rv) => Zeroizing::new(ckr_line(rv)),
                }
            }
        };
        // A reply too big for one Noise message is the module's failure, not
        // the channel's: answer it as such and keep the session.
        if response.len() > MAX_FRAME_PLAINTEXT {
            Zeroizing::new(ckr_line(CkRv::GENERAL_ERROR))
        } else {
            response
        }
    }

    /// The link went away: end any session.
    pub fn disconnected<H: Handler>(&mut self, handler: &mut H) {
        self.end_session(handler);
    }

    fn end_session<H: Handler>(&mut self, handler: &mut H) {
        self.pake_psk = None;
        if let State::Session(s) = std::mem::replace(&mut self.state, State::Idle) {
            handler.session_ended(s.remote_static());
        }
        self.frame.clear();
        self.binary = None;
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
        // The session's host is still there when it sends a frame or the
        // host's idle probe (`AT`). Not when a line opens a link (`ATE0`,
        // `AT+CKVER?`) or starts a session: that may be the host coming
        // back, or another one, and the old session ends unheard.
        if let State::Session(s) = &self.state
            && matches!(cmd, Command::Attention | Command::Frame { .. })
        {
            handler.session_heard(s.remote_static());
        }
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
            Command::Pake { message } => self.pake(handler, &message, out),
            Command::Frame { part, more } => self.frame(handler, part, more, out),
        }
    }

    /// `AT+CKPAKE`: the handset's SPAKE2 answer for the short code on
    /// offer; the PSK waits for the pairing handshake that follows. It
    /// proves nothing yet: a wrong code shows at the handshake's message 3,
    /// which counts as a failed attempt.
    fn pake<H: Handler>(
        &mut self,
        handler: &mut H,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> FinalResult {
        self.pake_psk = None;
        if matches!(self.state, State::Session(_)) {
            self.end_session(handler);
        }
        self.state = State::Idle;
        let Some(digits) = handler.pairing_short_code() else {
            return FinalResult::CmeError(cme::NOT_ALLOWED);
        };
        let (pake, answer) = crate::pake::Pake::handset(&digits);
        match pake.finish(message) {
            Ok(psk) => {
                self.pake_psk = Some(psk);
                out.extend(at::info_line(&format!(
                    "+CKPAKE: {}",
                    at::quote_b64(&answer)
                )));
                FinalResult::Ok
            }
            Err(_) => FinalResult::CmeError(cme::HANDSHAKE_FAILED),
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
                // A short code's PSK if AT+CKPAKE came first, else the
                // long code's.
                let Some(psk) = self.pake_psk.take().or_else(|| handler.pairing_psk()) else {
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
                // Binary frames if the host offers them (section 6.7), and
                // the session announcement (section 5.9) in what room the
                // line leaves.
                let mut binary = false;
                let max = crate::announce::max_payload(self.max_line);
                let hosts = handler.known_hosts();
                let answer = |host: &[u8; 32], payload: &[u8]| {
                    binary = compact::offers_binary(payload);
                    let mut out = match binary {
                        true => compact::capabilities_line().into_bytes(),
                        false => Vec::new(),
                    };
                    let room = match out.is_empty() {
                        true => max,
                        false => max.saturating_sub(out.len() + 2),
                    };
                    let a = handler.session_announcement(host, room);
                    // One that would break the line limit is left out, and
                    // so is one that is not text, which would hide the
                    // capabilities line from the host.
                    if !a.is_empty() && a.len() <= room && std::str::from_utf8(&a).is_ok() {
                        if !out.is_empty() {
                            out.extend_from_slice(b"\r\n");
                        }
                        out.extend_from_slice(&a);
                    }
                    out
                };
                match handset_accept_session_with(&identity, &hosts, message, answer) {
                    Ok((session, m2)) => {
                        self.state = State::Session(session);
                        if binary {
                            self.binary = Some(Vec::new());
                        }
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
        let response = self.serve(handler, std::str::from_utf8(&plain).ok());
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

    /// A responder with lines of `max_line` and echo off, and a handset
    /// as [`handset`] makes it.
    fn linked(max_line: usize) -> (Responder, TestHandset, PairingCode) {
        let (mut h, code) = handset();
        let mut r = Responder::new(max_line, "test");
        exchange(&mut r, &mut h, &Command::Echo(false));
        (r, h, code)
    }

    /// Sends one handshake message; returns the handset's answer to it.
    fn handshake(
        r: &mut Responder,
        h: &mut TestHandset,
        kind: HandshakeKind,
        message: Vec<u8>,
    ) -> Vec<u8> {
        let lines = exchange(r, h, &Command::Handshake { kind, message });
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[1], "OK");
        let p = crate::message::info_params(&lines[0], "+CKHS").unwrap();
        p.bytes(0).unwrap()
    }

    fn pair(r: &mut Responder, h: &mut TestHandset, code: &PairingCode) -> Session {
        let host = StaticKeypair::generate();
        let (hp, m1) = HostPairing::start(&host, code).unwrap();
        let m2 = handshake(r, h, HandshakeKind::Pair, m1);
        let (finish, m3) = hp.respond(&m2, "laptop").unwrap();
        let confirm = handshake(r, h, HandshakeKind::Pair, m3);
        finish.confirm(&confirm).unwrap().0
    }

    /// A responder in a session with a newly paired host, over 4096-byte
    /// lines.
    fn paired() -> (Responder, TestHandset, Session) {
        let (mut r, mut h, code) = linked(4096);
        let session = pair(&mut r, &mut h, &code);
        (r, h, session)
    }

    /// Sends `plain` in one text frame; returns the lines of the answer.
    fn text_call(
        r: &mut Responder,
        h: &mut TestHandset,
        s: &mut Session,
        plain: &[u8],
    ) -> Vec<String> {
        let part = s.encrypt(plain).unwrap();
        exchange(r, h, &Command::Frame { part, more: false })
    }

    /// Regression: message 1 of XXpsk3 is 48 bytes, not 32, so a host that
    /// starts pairing again while one is pending must get a fresh message 2
    /// instead of having its message 1 read as a wrong message 3 (which
    /// counted as a failed pairing attempt).
    #[test]
    fn second_message1_restarts_pairing() {
        let (mut r, mut h, code) = linked(4096);
        let host = StaticKeypair::generate();
        let (_abandoned, m1) = HostPairing::start(&host, &code).unwrap();
        assert_eq!(m1.len(), XX_MESSAGE1_LEN);
        handshake(&mut r, &mut h, HandshakeKind::Pair, m1);
        let _session = pair(&mut r, &mut h, &code);
        assert_eq!((h.paired, h.failed_pairings), (1, 0));
        assert!(r.in_session());
    }

    /// Sections 5.7 and 7.23: a frame and `AT` are the session's host
    /// heard, the lines that open a link or a session are not; a request's
    /// program reaches the handler.
    #[test]
    fn a_host_is_heard_by_frames_and_probes_and_its_program_is_passed_on() {
        let (mut r, mut h, mut session) = paired();
        assert_eq!(h.heard, 0);
        exchange(&mut r, &mut h, &Command::Attention);
        assert_eq!(h.heard, 1);
        let sign = Request::DestroyKey {
            container: "ssh".into(),
            id: vec![1],
        };
        let line = sign.encode_for(Some("ssh-agent (pid 7)")).unwrap();
        let lines = text_call(&mut r, &mut h, &mut session, line.as_bytes());
        assert_eq!(lines.last().map(String::as_str), Some("OK"), "{lines:?}");
        assert_eq!(
            (h.heard, h.program.as_deref()),
            (2, Some("ssh-agent (pid 7)"))
        );
        // Opening a link again (echo, version) is not the old host heard.
        exchange(&mut r, &mut h, &Command::Echo(false));
        exchange(&mut r, &mut h, &Command::Version);
        assert_eq!(h.heard, 2);
    }

    /// A reply too large for one Noise message is answered with
    /// `+CKR: CKR_GENERAL_ERROR`; the session survives.
    #[test]
    fn oversized_reply_is_a_token_error() {
        let (mut r, mut h, mut session) = paired();
        h.answer = Box::new(|_| Ok(Reply::Random(vec![0; MAX_NOISE_MESSAGE])));
        let lines = text_call(&mut r, &mut h, &mut session, b"+CKRAND=1");
        assert_eq!(lines.len(), 2, "{lines:?}");
        let p = crate::message::info_params(&lines[0], "+CKX").unwrap();
        let plain = session.decrypt(&p.bytes(0).unwrap()).unwrap();
        assert_eq!(&plain[..], ckr_line(CkRv::GENERAL_ERROR).as_bytes());
        assert!(r.in_session());
    }

    /// A KK session; `offer`: the host offers binary frames.
    fn kk(r: &mut Responder, h: &mut TestHandset, offer: bool) -> Session {
        use crate::noise::HostSessionHandshake;
        let host = StaticKeypair::generate();
        h.hosts.push(*host.public());
        let payload = if offer {
            compact::capabilities_line()
        } else {
            String::new()
        };
        let (hs, m1) = HostSessionHandshake::start_with_payload(
            &host,
            h.identity.public(),
            payload.as_bytes(),
        )
        .unwrap();
        let m2 = handshake(r, h, HandshakeKind::Session, m1);
        let (session, answer) = hs.finish_with_payload(&m2).unwrap();
        assert_eq!(compact::offers_binary(&answer), offer);
        session
    }

    /// Sends `plain` as a binary frame in pieces of `piece` bytes; returns
    /// the handset's answer, decrypted and expanded.
    fn binary_call(
        r: &mut Responder,
        h: &mut TestHandset,
        s: &mut Session,
        plain: &[u8],
        piece: usize,
    ) -> String {
        let f = compact::frame(&s.encrypt(plain).unwrap()).unwrap();
        let mut out = Vec::new();
        for p in f.chunks(piece) {
            out.extend(r.receive(h, p));
        }
        let Framed::Frame { end } = compact::next_frame(&out) else {
            panic!("not a frame: {out:02x?}");
        };
        assert_eq!(end, out.len());
        let answer = s.decrypt(&out[3..]).unwrap();
        // A ping's answer is an empty frame: no message to expand.
        if answer.is_empty() {
            return String::new();
        }
        compact::expand(&answer, Direction::ToHost)
            .unwrap()
            .to_string()
    }

    #[test]
    fn binary_frames_only_when_the_host_offers_them() {
        let (mut r, mut h, _) = linked(256);
        let _text = kk(&mut r, &mut h, false);
        assert!(r.in_session() && !r.is_binary());
        let mut s = kk(&mut r, &mut h, true);
        assert!(r.in_session() && r.is_binary());
        let req = compact::compact("+CKRAND=4", Direction::ToHandset).unwrap();
        // Whole, then split into single bytes: the same answer.
        for piece in [usize::MAX, 1] {
            assert_eq!(binary_call(&mut r, &mut h, &mut s, &req, piece), "OK");
        }
        // An empty frame is a ping.
        assert!(binary_call(&mut r, &mut h, &mut s, &[], 7).is_empty());
        assert_eq!(h.executed, 2);
    }

    #[test]
    fn text_in_binary_mode_ends_the_session_and_is_read_as_text() {
        let (mut r, mut h, _) = linked(256);
        let _session = kk(&mut r, &mut h, true);
        // Text where a frame should start: read as text.
        let out = r.receive(&mut h, b"AT\r");
        assert!(!r.in_session() && !r.is_binary());
        assert_eq!(h.sessions_ended, 1);
        assert_eq!(String::from_utf8_lossy(&out), "\r\nOK\r\n");
        // Half a frame, then a host that started over: its text is taken
        // for the frame's bytes until the line goes quiet.
        let mut s = kk(&mut r, &mut h, true);
        let f = compact::frame(&s.encrypt(b"x").unwrap()).unwrap();
        assert!(r.receive(&mut h, &f[..1]).is_empty());
        assert!(r.receive(&mut h, b"AT\r").is_empty());
        assert!(r.frame_pending());
        r.quiet(&mut h);
        assert!(!r.in_session() && !r.is_binary());
        assert_eq!(
            String::from_utf8_lossy(&r.receive(&mut h, b"AT\r")),
            "\r\nOK\r\n"
        );
        // A frame that does not decrypt: said in text, session over.
        let mut s = kk(&mut r, &mut h, true);
        let mut f = compact::frame(&s.encrypt(b"x").unwrap()).unwrap();
        f[5] ^= 1;
        let out = r.receive(&mut h, &f);
        assert_eq!(String::from_utf8_lossy(&out), "\r\n+CME ERROR: 702\r\n");
        assert!(!r.in_session() && !r.is_binary());
        // A compact message that does not expand is answered ERROR.
        let mut s = kk(&mut r, &mut h, true);
        let answer = binary_call(&mut r, &mut h, &mut s, &[0xF0, 1, 2], 64);
        assert_eq!(answer, "ERROR");
        assert!(r.in_session());
    }
}
