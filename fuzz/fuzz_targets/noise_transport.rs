//! The Noise transport framing, inside an established session: what
//! `command_decode` cannot reach, because a fuzzer cannot forge a frame
//! that authenticates. Here the target runs the KK handshake itself and
//! then lets the input choose what travels in the frames.
//!
//! The input is a script. Its first byte picks the handset's line limit
//! (256 to 1272) and the mode; the rest is a list of steps.
//!
//! * Mode "host link": a real `HostLink` (the daemon's side) talks to a
//!   real `Responder` (the handset's side) over an in-memory pipe. Steps
//!   send requests parsed from the input with `HostLink::call`, ping, or
//!   spoil the handset's next answer (flip a byte, cut it short, add a
//!   line). While nothing is spoiled, every call must succeed or fail with
//!   the handset's `+CKR`; once something is, nothing may panic.
//! * Mode "frames": the host side is a bare `Session`. Steps encrypt
//!   arbitrary plaintext and send it in `AT+CKX` parts of a chosen size,
//!   with parts dropped or doubled, or with a byte of the ciphertext
//!   flipped, or send raw lines in the session. Each answer's `+CKX` lines
//!   are reassembled and decrypted with the host's session; a frame the
//!   handset accepted must give an answer that decrypts to text, and if the
//!   plaintext was a request, that text must decode as its reply.
//! * Mode "binary frames": as "frames", in the binary frames a KK session
//!   offering them switches to (docs/protocol.md section 6.7), with the
//!   plaintext in compact form; see [`binary_frames`].
#![no_main]

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use phonecsp_protocol::at::{FinalResult, Line, LineSplitter, cme};
use phonecsp_protocol::compact::{self, Direction, Framed};
use phonecsp_protocol::message::{HandshakeKind, InnerOutcome, info_params};
use phonecsp_protocol::noise::HostSessionHandshake;
use phonecsp_protocol::testing::TestHandset;
use phonecsp_protocol::{
    CkRv, Command, HostLink, LinkError, Reply, Request, Responder, Session, StaticKeypair,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The two static key pairs, made once: each costs a scalar
/// multiplication, slow under the sanitizers.
fn keys() -> &'static (StaticKeypair, StaticKeypair) {
    static KEYS: OnceLock<(StaticKeypair, StaticKeypair)> = OnceLock::new();
    KEYS.get_or_init(|| {
        (
            StaticKeypair::from_private(&[1; 32]),
            StaticKeypair::from_private(&[3; 32]),
        )
    })
}

/// Handshakes one input may run, the first included: each costs several
/// scalar multiplications, which bound the speed of this target.
const MAX_HANDSHAKES: u32 = 3;

/// A handset that answers a few requests as a real one would, so that
/// replies of several kinds and sizes (random bytes up to 1024, which take
/// several `+CKX` lines) go back through the frames.
fn handset() -> TestHandset {
    let (handset, host) = keys();
    TestHandset::new(handset.clone())
        .knowing(*host.public())
        .answering(|r| match r {
            Request::GenerateRandom { len } => Ok(Reply::Random(vec![0x5a; *len as usize])),
            Request::ListContainers => Ok(Reply::Containers(Vec::new())),
            Request::Sign { data, .. } => Ok(Reply::Signature(data.clone())),
            Request::Logout { .. } => Ok(Reply::Done),
            _ => Err(CkRv::FUNCTION_NOT_SUPPORTED),
        })
}

/// Runs a future whose I/O is always ready (the pipe below never waits).
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..1_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("an in-memory exchange did not finish");
}

/// A byte cursor over the fuzz input.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// A length-prefixed (one byte, or two if the first is 255) slice.
    fn chunk(&mut self) -> Option<&'a [u8]> {
        let mut n = usize::from(self.byte()?);
        if n == 255 {
            n = usize::from(u16::from_be_bytes([self.byte()?, self.byte()?]));
        }
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

// ---- mode "host link" ------------------------------------------------------

/// How the handset's next answer is spoiled on its way to the host.
#[derive(Clone, Copy)]
enum Spoil {
    Flip(u16),
    Cut(u16),
    Line(u8),
}

struct Wire {
    responder: Responder,
    handset: TestHandset,
    to_host: VecDeque<u8>,
    spoil: Option<Spoil>,
}

#[derive(Clone)]
struct End(Rc<RefCell<Wire>>);

impl AsyncRead for End {
    fn poll_read(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Nothing left to read: the handset has said all it will, so the
        // host reads the end of the stream.
        let mut w = self.0.borrow_mut();
        let n = buf.remaining().min(w.to_host.len());
        let bytes: Vec<u8> = w.to_host.drain(..n).collect();
        buf.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for End {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.0.borrow_mut();
        let w = &mut *guard;
        let mut out = w.responder.receive(&mut w.handset, buf);
        match w.spoil.take() {
            Some(Spoil::Flip(i)) if !out.is_empty() => {
                let i = usize::from(i) % out.len();
                out[i] ^= 1 << (i % 8);
            }
            Some(Spoil::Cut(n)) => out.truncate(usize::from(n)),
            Some(Spoil::Line(k)) => {
                let line: &[u8] = match k % 5 {
                    0 => b"\r\nOK\r\n",
                    1 => b"\r\n+CKX: \"AAAA\"\r\n",
                    2 => b"\r\n+CME ERROR: 702\r\n",
                    3 => b"\r\n\xff\xfe\r\n",
                    _ => b"\r\n+CKHS: \"\"\r\n",
                };
                out.splice(0..0, line.iter().copied());
            }
            _ => {}
        }
        w.to_host.extend(out);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn host_link(max_line: usize, mut input: Input) {
    let wire = End(Rc::new(RefCell::new(Wire {
        responder: Responder::new(max_line, "fuzz"),
        handset: handset(),
        to_host: VecDeque::new(),
        spoil: None,
    })));
    let (handset_key, host) = keys();
    let handset_key = *handset_key.public();
    let mut handshakes = 1;
    let Ok(mut link) = block_on(HostLink::open(wire.clone(), wire.clone())) else {
        panic!("opening an unspoiled link failed");
    };
    block_on(link.connect(host, &handset_key)).expect("connect");
    // Whether the link has been spoiled. It stays so: a spoiled answer can
    // leave lines in the host's buffer that a later exchange reads (the
    // daemon discards them between calls, with `HostLink::closed`).
    let mut spoiled = false;
    while let Some(op) = input.byte() {
        match op % 8 {
            0..=3 => {
                let Some(text) = input.chunk() else { break };
                let Ok(req) = std::str::from_utf8(text).map(Request::parse) else {
                    continue;
                };
                let Ok(req) = req else { continue };
                let r = block_on(link.call(&req));
                if !spoiled {
                    assert!(
                        matches!(
                            r,
                            Ok(_) | Err(LinkError::Token(_)) | Err(LinkError::Request(_))
                        ),
                        "an unspoiled call failed: {r:?}"
                    );
                }
            }
            4 => {
                let r = block_on(link.ping());
                assert!(spoiled || r.is_ok(), "an unspoiled ping failed: {r:?}");
            }
            5 => {
                let (Some(a), Some(b)) = (input.byte(), input.byte()) else {
                    break;
                };
                let n = u16::from_be_bytes([a, b]);
                wire.0.borrow_mut().spoil = Some(match a % 3 {
                    0 => Spoil::Flip(n),
                    1 => Spoil::Cut(n % 512),
                    _ => Spoil::Line(b),
                });
                spoiled = true;
            }
            _ => {
                // Start over: drop what is in flight, reconnect.
                if handshakes == MAX_HANDSHAKES {
                    return;
                }
                handshakes += 1;
                let mut w = wire.0.borrow_mut();
                w.to_host.clear();
                w.spoil = None;
                drop(w);
                let r = block_on(link.connect(host, &handset_key));
                assert!(
                    spoiled || r.is_ok(),
                    "an unspoiled reconnection failed: {r:?}"
                );
            }
        }
    }
}

// ---- mode "frames" ---------------------------------------------------------

/// Sends one line and reads the answer: its information lines and final
/// result.
fn exchange(
    responder: &mut Responder,
    handset: &mut TestHandset,
    line: &[u8],
) -> (Vec<String>, Option<FinalResult>) {
    let mut bytes = line.to_vec();
    bytes.push(b'\r');
    let out = responder.receive(handset, &bytes);
    let mut info = Vec::new();
    let mut splitter = LineSplitter::new(1 << 20);
    for l in splitter.push(&out) {
        let Line::Text(t) = l else {
            panic!("the handset wrote a line that is not text");
        };
        // A raw `ATE1` may have turned echo back on.
        if t.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("AT")) {
            continue;
        }
        match FinalResult::parse(&t) {
            Some(f) => return (info, Some(f)),
            None => info.push(t),
        }
    }
    (info, None)
}

fn connect(responder: &mut Responder, handset: &mut TestHandset) -> Session {
    connect_offering(responder, handset, false)
}

/// A KK session; `binary`: the host offers binary frames, and the
/// handset must take them up.
fn connect_offering(responder: &mut Responder, handset: &mut TestHandset, binary: bool) -> Session {
    let (_, host) = keys();
    let offer = if binary {
        compact::capabilities_line()
    } else {
        String::new()
    };
    let (hs, m1) =
        HostSessionHandshake::start_with_payload(host, handset.identity.public(), offer.as_bytes())
            .expect("m1");
    let cmd = Command::Handshake {
        kind: HandshakeKind::Session,
        message: m1,
    }
    .encode();
    let (info, fin) = exchange(responder, handset, cmd.as_bytes());
    assert_eq!(fin, Some(FinalResult::Ok), "handshake refused");
    let [line] = info.as_slice() else {
        panic!("handshake answer: {info:?}");
    };
    let m2 = info_params(line, "+CKHS")
        .and_then(|p| p.bytes(0))
        .expect("m2");
    let (session, answer) = hs.finish_with_payload(&m2).expect("finish");
    assert_eq!(compact::offers_binary(&answer), binary);
    assert_eq!(responder.is_binary(), binary);
    session
}

/// A new session after the handset dropped or refused the last, or `None`
/// once an input has used its handshakes (they bound the speed).
fn reconnect(
    responder: &mut Responder,
    handset: &mut TestHandset,
    handshakes: &mut u32,
) -> Option<Session> {
    if *handshakes == MAX_HANDSHAKES {
        return None;
    }
    *handshakes += 1;
    Some(connect(responder, handset))
}

fn frames(max_line: usize, mut input: Input) {
    let mut handset = handset();
    let mut responder = Responder::new(max_line, "fuzz");
    let (_, fin) = exchange(&mut responder, &mut handset, b"ATE0");
    assert_eq!(fin, Some(FinalResult::Ok));
    let mut session = connect(&mut responder, &mut handset);
    let mut handshakes = 1;
    // Whether this session has seen a spoiled frame or a raw line (which
    // may hold half a frame): from then on the handset may refuse frames.
    let mut dirty = false;
    // The largest frame part that fits a line: `AT+CKX="<base64>",1`.
    let per_line = ((max_line - 11) / 4) * 3;
    while let Some(op) = input.byte() {
        match op % 8 {
            0..=4 => {
                let Some(plain) = input.chunk() else { break };
                let Some(how) = input.byte() else { break };
                let Ok(mut frame) = session.encrypt(plain) else {
                    continue;
                };
                // Low bits: the part size; bit 5: flip a ciphertext byte;
                // bit 6: send the first part twice; bit 7: drop the last.
                let part = (usize::from(how & 0x1f) * per_line / 31).clamp(1, per_line);
                dirty |= how & 0xe0 != 0;
                if how & 0x20 != 0 {
                    let i = usize::from(how) % frame.len();
                    frame[i] ^= 0x80;
                }
                let mut parts: Vec<&[u8]> = frame.chunks(part).collect();
                if how & 0x40 != 0 {
                    parts.insert(0, parts[0]);
                }
                if how & 0x80 != 0 && parts.len() > 1 {
                    parts.pop();
                }
                let mut answer = (Vec::new(), None);
                for (i, p) in parts.iter().enumerate() {
                    let cmd = Command::Frame {
                        part: p.to_vec(),
                        more: i + 1 < parts.len() || how & 0x80 != 0,
                    }
                    .encode();
                    answer = exchange(&mut responder, &mut handset, cmd.as_bytes());
                }
                let (info, fin) = answer;
                if !dirty {
                    assert_eq!(fin, Some(FinalResult::Ok), "an authentic frame was refused");
                    assert!(
                        !info.is_empty() || how & 0x80 != 0,
                        "no answer to a whole frame"
                    );
                }
                if fin != Some(FinalResult::Ok) || info.is_empty() {
                    if !responder.in_session() {
                        let Some(s) = reconnect(&mut responder, &mut handset, &mut handshakes)
                        else {
                            return;
                        };
                        session = s;
                        dirty = false;
                    }
                    continue;
                }
                let mut reply = Vec::new();
                for l in &info {
                    let p = info_params(l, "+CKX").expect("a +CKX line");
                    reply.extend(p.bytes(0).expect("base64"));
                }
                let Ok(text) = session.decrypt(&reply) else {
                    assert!(dirty, "the handset's answer does not decrypt");
                    let Some(s) = reconnect(&mut responder, &mut handset, &mut handshakes) else {
                        return;
                    };
                    session = s;
                    dirty = false;
                    continue;
                };
                let text = std::str::from_utf8(&text).expect("the answer is text");
                if let Ok(req) = std::str::from_utf8(plain).map(Request::parse)
                    && let Ok(req) = req
                {
                    let outcome = Reply::decode(&req, text);
                    assert!(
                        matches!(outcome, Ok(InnerOutcome::Done(_) | InnerOutcome::Failed(_))),
                        "the reply to {req:?} does not decode: {outcome:?} from {text:?}"
                    );
                }
            }
            5 | 6 => {
                // A raw line in the session.
                let Some(line) = input.chunk() else { break };
                let (_, fin) = exchange(&mut responder, &mut handset, line);
                dirty = true;
                if fin == Some(FinalResult::CmeError(cme::SESSION_ENDED)) || !responder.in_session()
                {
                    let Some(s) = reconnect(&mut responder, &mut handset, &mut handshakes) else {
                        return;
                    };
                    session = s;
                    dirty = false;
                }
            }
            _ => {
                responder.disconnected(&mut handset);
                let Some(s) = reconnect(&mut responder, &mut handset, &mut handshakes) else {
                    return;
                };
                session = s;
                dirty = false;
            }
        }
    }
    responder.disconnected(&mut handset);
}

// ---- mode "binary frames" ---------------------------------------------------

/// Steps in binary mode (docs/protocol.md section 6.7): frames of
/// arbitrary compact plaintext (the handset's expander meets the input),
/// or of a request compacted from text, sent whole or in pieces, with a
/// ciphertext byte flipped or the frame cut short and the line gone
/// quiet; raw text where a frame should start; the link dropped.
fn binary_frames(max_line: usize, mut input: Input) {
    let mut handset = handset();
    let mut responder = Responder::new(max_line, "fuzz");
    let (_, fin) = exchange(&mut responder, &mut handset, b"ATE0");
    assert_eq!(fin, Some(FinalResult::Ok));
    let mut session = connect_offering(&mut responder, &mut handset, true);
    let mut handshakes = 1;
    while let Some(op) = input.byte() {
        let restart = match op % 8 {
            0..=5 => {
                let Some(chunk) = input.chunk() else { break };
                let Some(how) = input.byte() else { break };
                // Bit 0: the chunk is text to compact, else compact bytes.
                let text = std::str::from_utf8(chunk).ok().filter(|_| how & 1 != 0);
                let plain = match text.map(|t| compact::compact(t, Direction::ToHandset)) {
                    Some(Ok(c)) => c.to_vec(),
                    Some(Err(_)) => continue,
                    None => chunk.to_vec(),
                };
                let Ok(ct) = session.encrypt(&plain) else {
                    continue;
                };
                let Some(mut frame) = compact::frame(&ct) else {
                    continue;
                };
                let (flip, cut) = (how & 0x40 != 0, how & 0x80 != 0);
                if flip {
                    let i = 3 + usize::from(how) % ct.len();
                    frame[i] ^= 0x01;
                }
                if cut {
                    frame.pop();
                }
                let piece = usize::from((how >> 1) & 0x1f) + 1;
                let mut out = Vec::new();
                for p in frame.chunks(piece) {
                    out.extend(responder.receive(&mut handset, p));
                }
                if cut {
                    assert!(
                        out.is_empty() && responder.frame_pending(),
                        "a cut frame was answered"
                    );
                    responder.quiet(&mut handset);
                    assert!(!responder.in_session() && !responder.is_binary());
                    true
                } else if flip {
                    assert_eq!(out, b"\r\n+CME ERROR: 702\r\n", "a flipped frame");
                    assert!(!responder.in_session() && !responder.is_binary());
                    true
                } else {
                    let Framed::Frame { end } = compact::next_frame(&out) else {
                        panic!("no frame in answer to a whole frame: {out:02x?}");
                    };
                    assert_eq!(end, out.len(), "bytes after the answer's frame");
                    let answer = session.decrypt(&out[3..]).expect("the answer decrypts");
                    if plain.is_empty() {
                        assert!(answer.is_empty(), "a ping answered with data");
                    } else {
                        let reply = compact::expand(&answer, Direction::ToHost)
                            .expect("the answer expands");
                        let request = compact::expand(&plain, Direction::ToHandset)
                            .ok()
                            .and_then(|t| Request::parse(&t).ok());
                        if let Some(req) = request {
                            let outcome = Reply::decode(&req, &reply);
                            assert!(
                                matches!(
                                    outcome,
                                    Ok(InnerOutcome::Done(_) | InnerOutcome::Failed(_))
                                ),
                                "the reply to {req:?} does not decode: {outcome:?}"
                            );
                        } else {
                            assert_eq!(reply.as_str(), "ERROR", "an unreadable request");
                        }
                    }
                    false
                }
            }
            6 => {
                // Text where a frame should start.
                let Some(line) = input.chunk() else { break };
                let mut bytes = line.to_vec();
                bytes.push(b'\r');
                let _ = responder.receive(&mut handset, &bytes);
                match bytes.first() {
                    Some(&compact::FRAME_MARK) => {
                        responder.quiet(&mut handset);
                    }
                    _ => assert!(!responder.is_binary(), "text left binary mode on"),
                }
                !responder.is_binary()
            }
            _ => {
                responder.disconnected(&mut handset);
                true
            }
        };
        if restart {
            responder.disconnected(&mut handset);
            let _ = exchange(&mut responder, &mut handset, b"ATE0");
            if handshakes == MAX_HANDSHAKES {
                return;
            }
            handshakes += 1;
            session = connect_offering(&mut responder, &mut handset, true);
        }
    }
    responder.disconnected(&mut handset);
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(head) = input.byte() else { return };
    let max_line = 256 + usize::from(head >> 1) * 8;
    match head & 3 {
        0 | 2 => host_link(max_line, input),
        1 => frames(max_line, input),
        _ => binary_frames(max_line, input),
    }
});
