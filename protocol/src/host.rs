//! The computer's side of the link: an async client over any byte stream
//! (serial line, pty, RFCOMM socket, in-memory pipe). One call at a time,
//! as a modem handles AT; the daemon serialises callers onto it.

use crate::at::ParseError;
use crate::at::{self, FinalResult, Line, LineSplitter};
use crate::ck::CkRv;
use crate::compact::{self, Direction, Framed};
use crate::message::{
    Command, HandshakeKind, InnerOutcome, Reply, Request, VersionInfo, info_params,
};
use crate::noise::{HostPairing, HostSessionHandshake, NoiseError, Session, StaticKeypair};
use crate::pake::{AnyPairingCode, Pake, ShortCode};
use std::collections::VecDeque;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

/// Longest response line the host accepts; well above any handset's limit.
const HOST_MAX_LINE: usize = 128 * 1024;
/// Longest response (all information lines together) the host accepts:
/// one maximal Noise frame in base64 with line prefixes to spare.
const MAX_RESPONSE_TEXT: usize = 128 * 1024;
/// Unsolicited bytes the host tolerates between two commands before it
/// calls the handset broken: the handset never speaks unasked, but a stray
/// line terminator or a little line noise is no reason to drop the link.
const MAX_IDLE_BYTES: usize = 4096;

#[derive(Debug, Error)]
pub enum LinkError {
    #[error("link I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("the handset closed the link")]
    Closed,
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("the handset answered ERROR")]
    Error,
    #[error("the handset answered +CME ERROR: {0}{meaning}", meaning = cme_meaning(*.0))]
    Cme(u16),
    #[error("Noise: {0}")]
    Noise(#[from] NoiseError),
    #[error("no session: pair or connect first")]
    NoSession,
    #[error("the handset refused: {0}")]
    Token(CkRv),
    #[error("invalid request: {0}")]
    Request(ParseError),
    /// The handset answered an inner command with `ERROR`: it does not
    /// know it (a handset older than the command). The session is whole.
    #[error("{}", unsupported_text(.0))]
    Unsupported(&'static str),
}

/// " (what it means)" for a `+CME ERROR` code this version knows.
fn cme_meaning(n: u16) -> String {
    at::cme::meaning(n).map_or_else(String::new, |m| format!(" ({m})"))
}

/// What a person is told when the handset does not know a command.
pub fn unsupported_text(command: &str) -> String {
    match command {
        "+CKGENEC" | "+CKDERIVE" => format!(
            "the handset does not support EC keys (it does not know {command}); \
             update phonecsp on the phone"
        ),
        _ => format!("the handset does not know {command}; update phonecsp on the phone"),
    }
}

impl LinkError {
    /// Whether the link must be reopened before it can be used again.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            LinkError::Token(_) | LinkError::Request(_) | LinkError::Unsupported(_)
        )
    }
}

impl From<ParseError> for LinkError {
    fn from(e: ParseError) -> Self {
        LinkError::Protocol(e.to_string())
    }
}

/// Bytes moved over the link, counted at the line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub requests: u64,
}

pub struct HostLink<R, W> {
    reader: R,
    writer: W,
    splitter: LineSplitter,
    pending: VecDeque<Line>,
    version: VersionInfo,
    session: Option<Session>,
    /// The handset's payload of KK message 2 in the session that is up:
    /// its capabilities and session announcement, or empty
    /// (docs/protocol.md sections 5.5 and 5.9).
    announcement: Vec<u8>,
    /// Binary mode (docs/protocol.md section 6.7), with the bytes read
    /// past the last frame.
    binary: Option<Vec<u8>>,
    stats: LinkStats,
    /// Bytes [`HostLink::closed`] has discarded since the last command.
    idle_bytes: usize,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> HostLink<R, W> {
    /// Turns echo off and reads the handset's version and line limit.
    pub async fn open(reader: R, writer: W) -> Result<Self, LinkError> {
        let mut link = HostLink {
            reader,
            writer,
            splitter: LineSplitter::new(HOST_MAX_LINE),
            pending: VecDeque::new(),
            version: VersionInfo {
                protocol: 0,
                implementation: String::new(),
                max_line: at::MIN_MAX_LINE,
            },
            session: None,
            announcement: Vec::new(),
            binary: None,
            stats: LinkStats::default(),
            idle_bytes: 0,
        };
        link.exchange(&Command::Echo(false).encode()).await?;
        let lines = link.exchange(&Command::Version.encode()).await?;
        let [line] = lines.as_slice() else {
            return Err(LinkError::Protocol("+CKVER: expected one line".into()));
        };
        let v = VersionInfo::parse(line)?;
        if v.protocol != crate::message::PROTOCOL_VERSION {
            return Err(LinkError::Protocol(format!(
                "handset speaks protocol {}",
                v.protocol
            )));
        }
        if v.max_line < at::MIN_MAX_LINE {
            return Err(LinkError::Protocol("handset line limit too small".into()));
        }
        link.version = v;
        Ok(link)
    }

    pub fn version(&self) -> &VersionInfo {
        &self.version
    }

    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    pub fn in_session(&self) -> bool {
        self.session.as_ref().is_some_and(Session::is_alive)
    }

    /// The handset's static key, once a session is up.
    pub fn handset_key(&self) -> Option<[u8; 32]> {
        self.session.as_ref().map(|s| *s.remote_static())
    }

    /// Pairs with a code the person typed, long or short; returns the
    /// handset's static key (to pin) and name. The session stays up
    /// afterwards. A short code (docs/protocol.md section 5.8) first makes
    /// the PSK with `AT+CKPAKE`; either way the pairing handshake then
    /// proves both ends used the same code.
    pub async fn pair(
        &mut self,
        local: &StaticKeypair,
        code: impl Into<AnyPairingCode>,
        host_name: &str,
    ) -> Result<([u8; 32], String), LinkError> {
        self.session = None;
        self.announcement.clear();
        self.binary = None;
        let psk = match code.into() {
            AnyPairingCode::Long(c) => c.psk(),
            AnyPairingCode::Short(c) => self.pake(&c).await?,
        };
        let (hp, m1) = HostPairing::start_with_psk(local, &psk)?;
        let m2 = self.handshake(HandshakeKind::Pair, &m1).await?;
        let (finish, m3) = hp.respond(&m2, host_name)?;
        let confirm = self.handshake(HandshakeKind::Pair, &m3).await?;
        let (session, name) = finish.confirm(&confirm)?;
        let key = *session.remote_static();
        self.session = Some(session);
        Ok((key, name))
    }

    /// `AT+CKPAKE`: the pairing PSK a short code makes, out of a session.
    async fn pake(&mut self, code: &ShortCode) -> Result<Zeroizing<[u8; 32]>, LinkError> {
        let (pake, mine) = Pake::host(code);
        let lines = self
            .exchange(&Command::Pake { message: mine }.encode())
            .await?;
        let [line] = lines.as_slice() else {
            return Err(LinkError::Protocol("+CKPAKE: expected one line".into()));
        };
        let p = info_params(line, "+CKPAKE")?;
        p.expect_count(1, 1)?;
        Ok(pake.finish(&p.bytes(0)?)?)
    }

    /// Opens a session with a handset whose key was pinned at pairing.
    pub async fn connect(
        &mut self,
        local: &StaticKeypair,
        handset: &[u8; 32],
    ) -> Result<(), LinkError> {
        self.session = None;
        self.announcement.clear();
        self.binary = None;
        let offer = compact::capabilities_line();
        let (h, m1) = HostSessionHandshake::start_with_payload(local, handset, offer.as_bytes())?;
        let m2 = self.handshake(HandshakeKind::Session, &m1).await?;
        let (session, payload) = h.finish_with_payload(&m2)?;
        self.session = Some(session);
        if compact::offers_binary(&payload) {
            self.binary = Some(Vec::new());
        }
        self.announcement = payload;
        Ok(())
    }

    /// Whether the session is in binary mode.
    pub fn is_binary(&self) -> bool {
        self.binary.is_some()
    }

    /// The handset's payload of KK message 2 for the session
    /// [`Self::connect`] opened, as it came (empty: none): its session
    /// announcement is read from it with
    /// [`crate::announce::Announcement::parse`].
    pub fn announcement(&self) -> &[u8] {
        &self.announcement
    }

    /// `AT` -> `OK`: proves the line and the handset are alive, in or out
    /// of a session.
    pub async fn ping(&mut self) -> Result<(), LinkError> {
        if self.binary.is_some() {
            // In binary mode a ping is an empty frame, answered by one.
            return match self.binary_exchange(&[]).await?.is_empty() {
                true => Ok(()),
                false => Err(LinkError::Protocol("a ping answered with data".into())),
            };
        }
        self.exchange(&Command::Attention.encode())
            .await
            .map(|_| ())
    }

    /// Sends one request inside the session and decodes its reply. A
    /// `+CKR` answer is [`LinkError::Token`]; other errors leave the link
    /// unusable (see [`LinkError::is_fatal`]).
    pub async fn call(&mut self, request: &Request) -> Result<Reply, LinkError> {
        self.call_for(request, None).await
    }

    /// Like [`HostLink::call`], naming the program on this computer that
    /// the request is for (section 7.23): the phone's owner sees it when
    /// asked to approve. In the same frame: no round trip of its own.
    pub async fn call_for(
        &mut self,
        request: &Request,
        program: Option<&str>,
    ) -> Result<Reply, LinkError> {
        let line = request
            .encode_for(program.filter(|_| request.takes_program()))
            .map_err(LinkError::Request)?;
        if self.binary.is_some() {
            let compact =
                compact::compact(&line, Direction::ToHandset).map_err(LinkError::Request)?;
            self.stats.requests += 1;
            let answer = self.binary_exchange(&compact).await?;
            let text = compact::expand(&answer, Direction::ToHost)?;
            return Self::outcome(request, &text);
        }
        let session = self.session.as_mut().ok_or(LinkError::NoSession)?;
        let ct = session.encrypt(line.as_bytes())?;
        self.stats.requests += 1;
        // Chunk so that every `AT+CKX="...",1` line fits the handset's limit.
        let per_line = ((self.version.max_line - 11) / 4) * 3;
        let parts: Vec<&[u8]> = ct.chunks(per_line.max(3)).collect();
        let mut lines = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let more = i + 1 < parts.len();
            let cmd = Command::Frame {
                part: part.to_vec(),
                more,
            }
            .encode();
            lines = match self.exchange(&cmd).await {
                Err(LinkError::Cme(n)) => {
                    self.session = None;
                    return Err(LinkError::Cme(n));
                }
                other => other?,
            };
            if more && !lines.is_empty() {
                return Err(LinkError::Protocol(
                    "information line after a partial frame".into(),
                ));
            }
        }
        let mut frame = Vec::new();
        for l in &lines {
            let p = info_params(l, "+CKX")?;
            p.expect_count(1, 1)?;
            frame.extend(p.bytes(0)?);
        }
        let session = self.session.as_mut().ok_or(LinkError::NoSession)?;
        let plain = session.decrypt(&frame)?;
        let text = std::str::from_utf8(&plain)
            .map_err(|_| LinkError::Protocol("inner response is not text".into()))?;
        Self::outcome(request, text)
    }

    fn outcome(request: &Request, text: &str) -> Result<Reply, LinkError> {
        match Reply::decode(request, text)? {
            InnerOutcome::Done(r) => Ok(r),
            InnerOutcome::Failed(rv) => Err(LinkError::Token(rv)),
            InnerOutcome::Rejected => Err(LinkError::Unsupported(request.name())),
        }
    }

    async fn handshake(
        &mut self,
        kind: HandshakeKind,
        message: &[u8],
    ) -> Result<Vec<u8>, LinkError> {
        let cmd = Command::Handshake {
            kind,
            message: message.to_vec(),
        }
        .encode();
        let lines = self.exchange(&cmd).await?;
        let [line] = lines.as_slice() else {
            return Err(LinkError::Protocol("+CKHS: expected one line".into()));
        };
        let p = info_params(line, "+CKHS")?;
        p.expect_count(1, 1)?;
        Ok(p.bytes(0)?)
    }

    /// Waits while the link is idle (between calls) and returns only when it
    /// has ended: [`LinkError::Closed`] at end of stream, the I/O error if
    /// reading fails, or a protocol error if the handset keeps talking
    /// unasked. The session is gone in every case. Nothing is unsolicited
    /// in this protocol, so whatever arrives while idle (and whatever was
    /// left after the last final result) is discarded rather than left to
    /// be taken for part of the next response.
    ///
    /// Cancel-safe, made to be raced against the arrival of work in a
    /// `select!`: each completed read is dealt with before the next await,
    /// and a cancelled read has consumed nothing.
    pub async fn closed(&mut self) -> LinkError {
        self.discard_unread();
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.reader.read(&mut buf).await {
                Ok(0) => {
                    self.session = None;
                    return LinkError::Closed;
                }
                Ok(n) => n,
                Err(e) => {
                    self.session = None;
                    return LinkError::Io(e);
                }
            };
            self.stats.bytes_in += n as u64;
            self.idle_bytes = self.idle_bytes.saturating_add(n);
            if self.idle_bytes > MAX_IDLE_BYTES {
                self.session = None;
                return LinkError::Protocol(format!(
                    "the handset sent more than {MAX_IDLE_BYTES} bytes unasked"
                ));
            }
        }
    }

    /// Drops complete and partial lines received after the last response.
    fn discard_unread(&mut self) {
        self.pending.clear();
        self.splitter = LineSplitter::new(HOST_MAX_LINE);
        if let Some(buf) = &mut self.binary {
            buf.clear();
        }
    }

    /// Sends `plain` encrypted in one binary frame and returns the
    /// decrypted answer. Text where the answer's frame should start means
    /// the handset has left binary mode and ended the session: its final
    /// result is read and returned as the error.
    async fn binary_exchange(&mut self, plain: &[u8]) -> Result<Zeroizing<Vec<u8>>, LinkError> {
        let session = self.session.as_mut().ok_or(LinkError::NoSession)?;
        let ct = session.encrypt(plain)?;
        let frame =
            compact::frame(&ct).ok_or(LinkError::Request(ParseError::Syntax("frame too long")))?;
        self.idle_bytes = 0;
        self.writer.write_all(&frame).await?;
        self.writer.flush().await?;
        self.stats.bytes_out += frame.len() as u64;
        loop {
            let buf = self.binary.as_mut().ok_or(LinkError::NoSession)?;
            match compact::next_frame(buf) {
                Framed::Frame { end } => {
                    let answer: Vec<u8> = buf.drain(..end).skip(3).collect();
                    let session = self.session.as_mut().ok_or(LinkError::NoSession)?;
                    return Ok(session.decrypt(&answer)?);
                }
                Framed::NotAFrame => {
                    let rest = std::mem::take(buf);
                    self.binary = None;
                    self.session = None;
                    self.pending.extend(self.splitter.push(&rest));
                    return Err(self.text_after_binary().await);
                }
                Framed::Partial => {
                    let chunk = self.read_some().await?;
                    if let Some(buf) = &mut self.binary {
                        buf.extend_from_slice(&chunk);
                    }
                }
            }
        }
    }

    /// The final result a handset gave in text on leaving binary mode.
    async fn text_after_binary(&mut self) -> LinkError {
        let unexpected = || LinkError::Protocol("text where a binary frame was due".into());
        match self.next_line().await {
            Err(e) => e,
            Ok(Line::Text(t)) => match FinalResult::parse(&t) {
                Some(FinalResult::CmeError(n)) => LinkError::Cme(n),
                Some(FinalResult::Error) => LinkError::Error,
                Some(FinalResult::Ok) | None => unexpected(),
            },
            Ok(_) => unexpected(),
        }
    }

    /// Writes one command line and collects information lines up to the
    /// final result. Echoed command lines are skipped.
    async fn exchange(&mut self, command: &str) -> Result<Vec<String>, LinkError> {
        let bytes = format!("{command}\r");
        self.idle_bytes = 0;
        self.writer.write_all(bytes.as_bytes()).await?;
        self.writer.flush().await?;
        self.stats.bytes_out += bytes.len() as u64;
        let mut info = Vec::new();
        let mut total = 0usize;
        loop {
            let text = match self.next_line().await? {
                Line::Text(t) => t,
                Line::TooLong | Line::NotText => {
                    return Err(LinkError::Protocol("unreadable response line".into()));
                }
            };
            // `get` rather than slicing: the line may start with a
            // multi-byte character, and a handset's bytes must never panic us.
            if text.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
                continue;
            }
            match FinalResult::parse(&text) {
                Some(FinalResult::Ok) => return Ok(info),
                Some(FinalResult::Error) => return Err(LinkError::Error),
                Some(FinalResult::CmeError(n)) => return Err(LinkError::Cme(n)),
                None => {
                    // A whole response is at most one Noise frame in base64;
                    // a handset that sends more is broken or hostile.
                    total += text.len();
                    if total > MAX_RESPONSE_TEXT {
                        self.session = None;
                        return Err(LinkError::Protocol("response too long".into()));
                    }
                    info.push(text)
                }
            }
        }
    }

    async fn next_line(&mut self) -> Result<Line, LinkError> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                return Ok(l);
            }
            let chunk = self.read_some().await?;
            self.pending.extend(self.splitter.push(&chunk));
        }
    }

    /// The next bytes the handset sent, counted; the end of the stream
    /// ends the session.
    async fn read_some(&mut self) -> Result<Vec<u8>, LinkError> {
        let mut buf = [0u8; 4096];
        let n = self.reader.read(&mut buf).await?;
        if n == 0 {
            self.session = None;
            return Err(LinkError::Closed);
        }
        self.stats.bytes_in += n as u64;
        Ok(buf[..n].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cme_error_says_what_its_code_means_when_known() {
        assert_eq!(
            LinkError::Cme(at::cme::HANDSHAKE_FAILED).to_string(),
            "the handset answered +CME ERROR: 701 (the handshake failed)"
        );
        assert_eq!(
            LinkError::Cme(799).to_string(),
            "the handset answered +CME ERROR: 799"
        );
    }

    /// A handset older than EC keys answers `+CKGENEC` and `+CKDERIVE`
    /// with `ERROR`: the caller is told the handset does not support EC
    /// keys, and the link is not dropped for it (the session is whole).
    #[test]
    fn an_old_handset_says_it_does_not_support_ec_keys() {
        let request = Request::GenerateEcKeyPair {
            container: "ssh".into(),
            curve: crate::ck::Curve::P256,
            id: vec![5],
            label: String::new(),
        };
        let e =
            HostLink::<tokio::io::Empty, tokio::io::Sink>::outcome(&request, "ERROR").unwrap_err();
        assert!(matches!(e, LinkError::Unsupported("+CKGENEC")), "{e:?}");
        assert!(!e.is_fatal());
        assert!(
            e.to_string()
                .starts_with("the handset does not support EC keys"),
            "{e}"
        );
        let derive = Request::Derive {
            container: "ssh".into(),
            id: vec![5],
            peer: vec![4; 65],
        };
        let e =
            HostLink::<tokio::io::Empty, tokio::io::Sink>::outcome(&derive, "ERROR").unwrap_err();
        assert!(e.to_string().contains("does not support EC keys"), "{e}");
    }
    use crate::responder::Responder;
    use crate::testing::TestHandset;
    use std::time::Duration;
    use tokio::io::DuplexStream;
    use tokio::sync::{mpsc, oneshot};

    type TestLink = HostLink<tokio::io::ReadHalf<DuplexStream>, tokio::io::WriteHalf<DuplexStream>>;

    /// Bytes the phone is to send unasked; it acknowledges once they are
    /// in the pipe.
    type Inject = mpsc::UnboundedSender<(Vec<u8>, oneshot::Sender<()>)>;

    /// A link in session with a [`Phone`] served on a task. The phone
    /// hangs up when the returned sender is dropped.
    async fn phone_link() -> (TestLink, Inject) {
        let host_key = StaticKeypair::from_private(&[5; 32]);
        // Knows this host and answers `+CKRAND=n` with n bytes of n.
        let mut phone = TestHandset::new(StaticKeypair::from_private(&[9; 32]))
            .knowing(*host_key.public())
            .answering(|r| match r {
                Request::GenerateRandom { len } => {
                    Ok(Reply::Random(vec![*len as u8; *len as usize]))
                }
                _ => Err(CkRv::FUNCTION_NOT_SUPPORTED),
            });
        let phone_key = *phone.identity.public();
        let (host_end, device_end) = tokio::io::duplex(1 << 16);
        let (inject_tx, mut inject_rx) =
            mpsc::unbounded_channel::<(Vec<u8>, oneshot::Sender<()>)>();
        tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(device_end);
            let mut responder = Responder::new(4096, "unit");
            let mut buf = vec![0u8; 8192];
            loop {
                tokio::select! {
                    n = rd.read(&mut buf) => {
                        let n = n.unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        let out = responder.receive(&mut phone, &buf[..n]);
                        if wr.write_all(&out).await.is_err() {
                            break;
                        }
                    }
                    stray = inject_rx.recv() => {
                        let Some((bytes, done)) = stray else { break };
                        if wr.write_all(&bytes).await.is_err() {
                            break;
                        }
                        let _ = done.send(());
                    }
                }
            }
        });
        let (r, w) = tokio::io::split(host_end);
        let mut link = HostLink::open(r, w).await.unwrap();
        link.connect(&host_key, &phone_key).await.unwrap();
        assert!(link.in_session());
        (link, inject_tx)
    }

    async fn inject(tx: &Inject, bytes: &[u8]) {
        let (done, written) = oneshot::channel();
        tx.send((bytes.to_vec(), done)).unwrap();
        written.await.unwrap();
    }

    async fn random(link: &mut TestLink, len: u32) -> Result<Reply, LinkError> {
        link.call(&Request::GenerateRandom { len }).await
    }

    #[tokio::test]
    async fn closed_returns_when_the_handset_hangs_up() {
        let (mut link, phone) = phone_link().await;
        // Idle and alive: closed() keeps waiting.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), link.closed())
                .await
                .is_err()
        );
        drop(phone);
        let e = tokio::time::timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("closed() did not notice the hang-up");
        assert!(matches!(e, LinkError::Closed), "{e}");
        assert!(!link.in_session());
    }

    #[tokio::test]
    async fn bytes_sent_unasked_are_discarded() {
        let (mut link, phone) = phone_link().await;
        // A well-formed response nobody asked for, and the start of another.
        let stray = b"\r\n+CKX: \"AAAA\"\r\n\r\nOK\r\n\r\n+CKX: \"BB";
        inject(&phone, stray).await;
        let before = link.stats().bytes_in;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), link.closed())
                .await
                .is_err()
        );
        assert_eq!(link.stats().bytes_in - before, stray.len() as u64);
        assert_eq!(
            random(&mut link, 7).await.unwrap(),
            Reply::Random(vec![7; 7])
        );
        assert!(link.in_session());
    }

    #[tokio::test]
    async fn a_chattering_handset_is_dropped() {
        let (mut link, phone) = phone_link().await;
        inject(&phone, &[b'x'; MAX_IDLE_BYTES + 1]).await;
        let e = tokio::time::timeout(Duration::from_secs(5), link.closed())
            .await
            .expect("closed() kept listening");
        assert!(matches!(e, LinkError::Protocol(_)), "{e}");
        assert!(!link.in_session());
    }

    #[tokio::test]
    async fn cancelling_closed_leaves_the_link_usable() {
        let (mut link, _phone) = phone_link().await;
        for len in 1..=3 {
            // Polled (and pending) at least once, then dropped for other work.
            tokio::select! {
                biased;
                e = link.closed() => panic!("closed() returned {e}"),
                () = tokio::task::yield_now() => {}
            }
            tokio::select! {
                e = link.closed() => panic!("closed() returned {e}"),
                () = std::future::ready(()) => {}
            }
            assert_eq!(
                random(&mut link, len).await.unwrap(),
                Reply::Random(vec![len as u8; len as usize])
            );
        }
    }

    /// Regression: a response line starting with a multi-byte character
    /// panicked the echo check (`text[..2]` is not a char boundary).
    #[tokio::test]
    async fn multibyte_response_line_does_not_panic() {
        let (host, mut device) = tokio::io::duplex(4096);
        device
            .write_all("\r\n€\r\n\r\nOK\r\n\r\n+CKVER: 1,\"t\",4096\r\n\r\nOK\r\n".as_bytes())
            .await
            .unwrap();
        let (r, w) = tokio::io::split(host);
        let link = HostLink::open(r, w).await.unwrap();
        assert_eq!(link.version().max_line, 4096);
    }
}
