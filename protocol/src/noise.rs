//! The Noise layer: static identities, one-time pairing codes, the two
//! handshakes, and the transport session that encrypts every `+CK` command.
//!
//! Pairing is `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s` with a PSK derived from
//! a code of 128 random bits that a person carries between the screens; after
//! it each end pins the other's static key. Every later connection is
//! `Noise_KK_25519_ChaChaPoly_BLAKE2s`. A frame that fails to decrypt
//! (replayed, reordered, altered) poisons the [`Session`] for good.

use crate::secret::SecretCode;
use blake2::{Blake2s256, Digest};
use rand::{Rng, RngCore};
use snow::params::NoiseParams;
use thiserror::Error;
use zeroize::Zeroizing;

pub const PAIRING_PATTERN: &str = "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s";
pub const SESSION_PATTERN: &str = "Noise_KK_25519_ChaChaPoly_BLAKE2s";
/// Binds both handshakes to this protocol and version.
pub const PROLOGUE: &[u8] = b"phonecsp link v1";
/// Largest Noise message (the spec's limit).
pub const MAX_NOISE_MESSAGE: usize = 65535;
/// Largest plaintext one transport frame can carry.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_NOISE_MESSAGE - 16;
/// Random bytes in a pairing code.
pub const PAIRING_CODE_BYTES: usize = 16;
/// Base32 characters in a pairing code (128 bits in 5-bit characters).
pub const PAIRING_CODE_CHARS: usize = 26;

#[derive(Debug, Error)]
pub enum NoiseError {
    #[error("handshake failed")]
    Handshake,
    #[error("frame rejected; the session is over")]
    FrameRejected,
    #[error("the session already ended")]
    SessionEnded,
    #[error("message too long for one Noise frame")]
    TooLong,
    #[error("malformed key: {0}")]
    BadKey(&'static str),
    #[error("malformed pairing code: {0}")]
    BadCode(&'static str),
}

fn params(pattern: &str) -> NoiseParams {
    // Both patterns are constants this crate names, so parsing cannot fail;
    // a typo would be caught by every test.
    pattern
        .parse()
        .unwrap_or_else(|_| unreachable!("valid Noise pattern"))
}

/// A Curve25519 static key pair. The private half is wiped on drop.
#[derive(Clone)]
pub struct StaticKeypair {
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl std::fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &fingerprint(&self.public))
            .finish_non_exhaustive()
    }
}

impl StaticKeypair {
    pub fn generate() -> StaticKeypair {
        let mut private = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(private.as_mut());
        Self::from_private(&private)
    }

    /// Rebuilds the pair from its stored private half.
    pub fn from_private(private: &[u8; 32]) -> StaticKeypair {
        let public = x25519_public(private);
        StaticKeypair {
            private: Zeroizing::new(*private),
            public,
        }
    }

    pub fn from_slice(private: &[u8]) -> Result<StaticKeypair, NoiseError> {
        let arr: [u8; 32] = private
            .try_into()
            .map_err(|_| NoiseError::BadKey("private key is not 32 bytes"))?;
        Ok(Self::from_private(&arr))
    }

    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    pub fn private(&self) -> &[u8; 32] {
        &self.private
    }
}

fn x25519_public(private: &[u8; 32]) -> [u8; 32] {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver
        .resolve_dh(&snow::params::DHChoice::Curve25519)
        .unwrap_or_else(|| unreachable!("the default resolver has Curve25519"));
    dh.set(private);
    let mut out = [0u8; 32];
    out.copy_from_slice(dh.pubkey());
    out
}

/// A short human-comparable form of a public key: the first 8 bytes of its
/// BLAKE2s hash, in hex groups.
pub fn fingerprint(public: &[u8]) -> String {
    let h = Blake2s256::digest(public);
    h[..8]
        .chunks(2)
        .map(|c| format!("{:02x}{:02x}", c[0], c[1]))
        .collect::<Vec<_>>()
        .join(":")
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// A one-time pairing code: 128 random bits, shown as base32 in groups of
/// four (`ABCD-EFGH-...`) so a person can read and type it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PairingCode(SecretCode<PAIRING_CODE_BYTES>);

impl PairingCode {
    pub fn generate() -> PairingCode {
        PairingCode(SecretCode::generate(|rng| rng.r#gen()))
    }

    /// The printable form (26 base32 characters in groups of four).
    pub fn display(&self) -> Zeroizing<String> {
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut chars = Zeroizing::new(String::new());
        for &b in self.0.iter() {
            bits = (bits << 8) | u32::from(b);
            nbits += 8;
            while nbits >= 5 {
                nbits -= 5;
                chars.push(BASE32[((bits >> nbits) & 31) as usize] as char);
            }
        }
        if nbits > 0 {
            chars.push(BASE32[((bits << (5 - nbits)) & 31) as usize] as char);
        }
        let mut out = Zeroizing::new(String::new());
        for (i, c) in chars.chars().enumerate() {
            if i > 0 && i % 4 == 0 {
                out.push('-');
            }
            out.push(c);
        }
        out
    }

    /// Reads a typed code: case, dashes and spaces do not matter; `0`, `1`
    /// and `8` are read as the letters they are mistaken for.
    pub fn parse(s: &str) -> Result<PairingCode, NoiseError> {
        let mut out = Zeroizing::new([0u8; PAIRING_CODE_BYTES]);
        let mut bits: u32 = 0;
        let mut nbits = 0;
        let mut n = 0;
        let mut chars = 0;
        for c in s.chars() {
            if c == '-' || c == ' ' {
                continue;
            }
            chars += 1;
            if chars > PAIRING_CODE_CHARS {
                return Err(NoiseError::BadCode("too long"));
            }
            let c = match c.to_ascii_uppercase() {
                '0' => 'O',
                '1' => 'I',
                '8' => 'B',
                c => c,
            };
            let v = BASE32
                .iter()
                .position(|&b| b as char == c)
                .ok_or(NoiseError::BadCode("character outside A-Z, 2-7"))?;
            bits = (bits << 5) | v as u32;
            nbits += 5;
            if nbits >= 8 {
                nbits -= 8;
                if n == PAIRING_CODE_BYTES {
                    return Err(NoiseError::BadCode("too long"));
                }
                out[n] = (bits >> nbits) as u8;
                n += 1;
            }
            bits &= (1 << nbits) - 1;
        }
        if n != PAIRING_CODE_BYTES {
            return Err(NoiseError::BadCode("too short"));
        }
        if bits != 0 {
            return Err(NoiseError::BadCode("not a code this program made"));
        }
        Ok(PairingCode(out.into()))
    }

    /// The 32-byte PSK the handshake mixes in.
    pub fn psk(&self) -> Zeroizing<[u8; 32]> {
        let mut h = Blake2s256::new();
        h.update(b"phonecsp pairing code v1");
        h.update(self.0.as_ref());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&h.finalize());
        out
    }
}

/// An established transport session. Sending and receiving nonces advance
/// with each frame, so a replayed or reordered frame fails authentication;
/// after any failure the session refuses everything.
pub struct Session {
    transport: Option<snow::TransportState>,
    remote: [u8; 32],
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("remote", &fingerprint(&self.remote))
            .field("alive", &self.transport.is_some())
            .finish()
    }
}

impl Session {
    fn new(transport: snow::TransportState) -> Result<Session, NoiseError> {
        let remote: [u8; 32] = transport
            .get_remote_static()
            .and_then(|r| r.try_into().ok())
            .ok_or(NoiseError::Handshake)?;
        Ok(Session {
            transport: Some(transport),
            remote,
        })
    }

    /// The peer's static public key, authenticated by the handshake.
    pub fn remote_static(&self) -> &[u8; 32] {
        &self.remote
    }

    pub fn is_alive(&self) -> bool {
        self.transport.is_some()
    }

    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, NoiseError> {
        if plaintext.len() > MAX_FRAME_PLAINTEXT {
            return Err(NoiseError::TooLong);
        }
        let t = self.transport.as_mut().ok_or(NoiseError::SessionEnded)?;
        let mut out = vec![0u8; plaintext.len() + 16];
        let written = t.write_message(plaintext, &mut out);
        out.truncate(self.ended_on_error(written, NoiseError::SessionEnded)?);
        Ok(out)
    }

    /// A transport step that failed ends the session: the two ends'
    /// nonces are out of step from then on.
    fn ended_on_error<T, E>(
        &mut self,
        r: Result<T, E>,
        error: NoiseError,
    ) -> Result<T, NoiseError> {
        r.map_err(|_| {
            self.transport = None;
            error
        })
    }

    pub fn decrypt(&mut self, frame: &[u8]) -> Result<Zeroizing<Vec<u8>>, NoiseError> {
        let t = self.transport.as_mut().ok_or(NoiseError::SessionEnded)?;
        if frame.len() < 16 || frame.len() > MAX_NOISE_MESSAGE {
            self.transport = None;
            return Err(NoiseError::FrameRejected);
        }
        let mut out = Zeroizing::new(vec![0u8; frame.len()]);
        let read = t.read_message(frame, &mut out);
        out.truncate(self.ended_on_error(read, NoiseError::FrameRejected)?);
        Ok(out)
    }
}

fn hs_buf() -> Vec<u8> {
    vec![0u8; MAX_NOISE_MESSAGE]
}

/// One handshake message in or out, through a buffer of the largest size.
fn handshake_step(
    step: impl FnOnce(&mut [u8]) -> Result<usize, snow::Error>,
) -> Result<Vec<u8>, NoiseError> {
    let mut buf = hs_buf();
    let n = step(&mut buf).map_err(|_| NoiseError::Handshake)?;
    buf.truncate(n);
    Ok(buf)
}

fn write(hs: &mut snow::HandshakeState, payload: &[u8]) -> Result<Vec<u8>, NoiseError> {
    handshake_step(|buf| hs.write_message(payload, buf))
}

fn read(hs: &mut snow::HandshakeState, msg: &[u8]) -> Result<Vec<u8>, NoiseError> {
    if msg.len() > MAX_NOISE_MESSAGE {
        return Err(NoiseError::Handshake);
    }
    handshake_step(|buf| hs.read_message(msg, buf))
}

/// XXpsk3 with our static key, the PSK in position 3 and the prologue,
/// for either side.
fn pairing_builder<'a>(
    local: &'a StaticKeypair,
    psk: &'a [u8; 32],
) -> Result<snow::Builder<'a>, NoiseError> {
    snow::Builder::new(params(PAIRING_PATTERN))
        .local_private_key(local.private())
        .and_then(|b| b.psk(3, psk))
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|_| NoiseError::Handshake)
}

/// Host side of pairing (initiator of XXpsk3).
pub struct HostPairing {
    hs: snow::HandshakeState,
}

impl HostPairing {
    /// Starts pairing; returns the state and message 1 (`-> e`).
    pub fn start(
        local: &StaticKeypair,
        code: &PairingCode,
    ) -> Result<(HostPairing, Vec<u8>), NoiseError> {
        Self::start_with_psk(local, &code.psk())
    }

    /// [`Self::start`] with the PSK given: a short code's, from the PAKE
    /// (`crate::pake`).
    pub fn start_with_psk(
        local: &StaticKeypair,
        psk: &[u8; 32],
    ) -> Result<(HostPairing, Vec<u8>), NoiseError> {
        let mut hs = pairing_builder(local, psk)?
            .build_initiator()
            .map_err(|_| NoiseError::Handshake)?;
        let m1 = write(&mut hs, &[])?;
        Ok((HostPairing { hs }, m1))
    }

    /// Reads message 2 (the handset's static key and name), writes message 3
    /// carrying `host_name`. The handset is not yet proven to know the code:
    /// call [`HostPairingFinish::confirm`] with its reply.
    pub fn respond(
        mut self,
        m2: &[u8],
        host_name: &str,
    ) -> Result<(HostPairingFinish, Vec<u8>), NoiseError> {
        let name = read(&mut self.hs, m2)?;
        let handset_name = String::from_utf8(name).map_err(|_| NoiseError::Handshake)?;
        let m3 = write(&mut self.hs, host_name.as_bytes())?;
        let transport = self
            .hs
            .into_transport_mode()
            .map_err(|_| NoiseError::Handshake)?;
        Ok((
            HostPairingFinish {
                session: Session::new(transport)?,
                handset_name,
            },
            m3,
        ))
    }
}

/// Pairing after message 3: waiting for the handset's confirmation frame.
pub struct HostPairingFinish {
    session: Session,
    handset_name: String,
}

impl HostPairingFinish {
    /// Checks the handset's first transport frame (empty plaintext). Only a
    /// handset that knew the code can produce it.
    pub fn confirm(mut self, frame: &[u8]) -> Result<(Session, String), NoiseError> {
        let plain = self
            .session
            .decrypt(frame)
            .map_err(|_| NoiseError::Handshake)?;
        if !plain.is_empty() {
            return Err(NoiseError::Handshake);
        }
        Ok((self.session, self.handset_name))
    }
}

/// Handset side of pairing (responder of XXpsk3).
pub struct HandsetPairing {
    hs: snow::HandshakeState,
}

impl HandsetPairing {
    /// Reads message 1 and writes message 2 carrying `handset_name`.
    pub fn accept(
        local: &StaticKeypair,
        psk: &[u8; 32],
        m1: &[u8],
        handset_name: &str,
    ) -> Result<(HandsetPairing, Vec<u8>), NoiseError> {
        let mut hs = pairing_builder(local, psk)?
            .build_responder()
            .map_err(|_| NoiseError::Handshake)?;
        read(&mut hs, m1)?;
        let m2 = write(&mut hs, handset_name.as_bytes())?;
        Ok((HandsetPairing { hs }, m2))
    }

    /// Reads message 3 (fails if the host used another code). Returns the
    /// session, the host's name, and the confirmation frame to send back.
    pub fn finish(mut self, m3: &[u8]) -> Result<(Session, String, Vec<u8>), NoiseError> {
        let name = read(&mut self.hs, m3)?;
        let host_name = String::from_utf8(name).map_err(|_| NoiseError::Handshake)?;
        let transport = self
            .hs
            .into_transport_mode()
            .map_err(|_| NoiseError::Handshake)?;
        let mut session = Session::new(transport)?;
        let confirm = session.encrypt(&[])?;
        Ok((session, host_name, confirm))
    }
}

/// Host side of a KK session handshake.
pub struct HostSessionHandshake {
    hs: snow::HandshakeState,
}

impl HostSessionHandshake {
    pub fn start(local: &StaticKeypair, handset: &[u8; 32]) -> Result<(Self, Vec<u8>), NoiseError> {
        Self::start_with_payload(local, handset, &[])
    }

    /// [`Self::start`] with a payload in message 1 (the host's
    /// capabilities, docs/protocol.md section 5.5).
    pub fn start_with_payload(
        local: &StaticKeypair,
        handset: &[u8; 32],
        payload: &[u8],
    ) -> Result<(Self, Vec<u8>), NoiseError> {
        let mut hs = snow::Builder::new(params(SESSION_PATTERN))
            .local_private_key(local.private())
            .and_then(|b| b.remote_public_key(handset))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_initiator())
            .map_err(|_| NoiseError::Handshake)?;
        let m1 = write(&mut hs, payload)?;
        Ok((HostSessionHandshake { hs }, m1))
    }

    pub fn finish(self, m2: &[u8]) -> Result<Session, NoiseError> {
        self.finish_with_payload(m2).map(|(s, _)| s)
    }

    /// [`Self::finish`], also giving the payload of message 2: the
    /// handset's capabilities (section 5.5) and session announcement
    /// (section 5.9), or nothing.
    pub fn finish_with_payload(mut self, m2: &[u8]) -> Result<(Session, Vec<u8>), NoiseError> {
        let payload = read(&mut self.hs, m2)?;
        let t = self
            .hs
            .into_transport_mode()
            .map_err(|_| NoiseError::Handshake)?;
        Ok((Session::new(t)?, payload))
    }
}

/// Handset side of a KK session handshake. The host does not name itself
/// (that would reveal who is connecting to a listener); the handset tries
/// each pinned host key, which only the right one decrypts.
pub fn handset_accept_session(
    local: &StaticKeypair,
    known_hosts: &[[u8; 32]],
    m1: &[u8],
) -> Result<(Session, Vec<u8>), NoiseError> {
    handset_accept_session_with(local, known_hosts, m1, |_, _| Vec::new())
}

/// [`handset_accept_session`], with message 2's payload made by `reply`
/// from the host's key, once known, and message 1's payload: the
/// capabilities (docs/protocol.md section 5.5) and the session
/// announcement (section 5.9). Message 2 is encrypted to that host's keys,
/// so only the host that proved its key reads it.
pub fn handset_accept_session_with(
    local: &StaticKeypair,
    known_hosts: &[[u8; 32]],
    m1: &[u8],
    reply: impl FnOnce(&[u8; 32], &[u8]) -> Vec<u8>,
) -> Result<(Session, Vec<u8>), NoiseError> {
    for host in known_hosts {
        let Ok(mut hs) = snow::Builder::new(params(SESSION_PATTERN))
            .local_private_key(local.private())
            .and_then(|b| b.remote_public_key(host))
            .and_then(|b| b.prologue(PROLOGUE))
            .and_then(|b| b.build_responder())
        else {
            continue;
        };
        let Ok(payload) = read(&mut hs, m1) else {
            continue;
        };
        let m2 = write(&mut hs, &reply(host, &payload))?;
        let t = hs
            .into_transport_mode()
            .map_err(|_| NoiseError::Handshake)?;
        return Ok((Session::new(t)?, m2));
    }
    Err(NoiseError::Handshake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_matches_snow() {
        let k = snow::Builder::new(params(SESSION_PATTERN))
            .generate_keypair()
            .unwrap();
        let ours = StaticKeypair::from_slice(&k.private).unwrap();
        assert_eq!(&ours.public()[..], &k.public[..]);
    }

    fn pair(
        host_code: &PairingCode,
        handset_code: &PairingCode,
    ) -> Result<(Session, Session), NoiseError> {
        let host = StaticKeypair::generate();
        let handset = StaticKeypair::generate();
        let (hp, m1) = HostPairing::start(&host, host_code)?;
        let (sp, m2) = HandsetPairing::accept(&handset, &handset_code.psk(), &m1, "phone")?;
        let (hf, m3) = hp.respond(&m2, "laptop")?;
        let (hs_session, host_name, confirm) = sp.finish(&m3)?;
        assert_eq!(host_name, "laptop");
        let (host_session, handset_name) = hf.confirm(&confirm)?;
        assert_eq!(handset_name, "phone");
        assert_eq!(host_session.remote_static(), handset.public());
        assert_eq!(hs_session.remote_static(), host.public());
        Ok((host_session, hs_session))
    }

    #[test]
    fn pairing_with_same_code_works_and_transport_rejects_replay() {
        let code = PairingCode::generate();
        let (mut a, mut b) = pair(&code, &code).unwrap();
        let f1 = a.encrypt(b"one").unwrap();
        let f2 = a.encrypt(b"two").unwrap();
        assert_eq!(&b.decrypt(&f1).unwrap()[..], b"one");
        // Replay of f1 fails and ends the session, even for the genuine f2.
        assert!(matches!(b.decrypt(&f1), Err(NoiseError::FrameRejected)));
        assert!(matches!(b.decrypt(&f2), Err(NoiseError::SessionEnded)));
    }

    #[test]
    fn pairing_with_other_code_fails() {
        assert!(pair(&PairingCode::generate(), &PairingCode::generate()).is_err());
    }

    #[test]
    fn kk_session_and_tamper_detection() {
        let host = StaticKeypair::generate();
        let handset = StaticKeypair::generate();
        let stranger = StaticKeypair::generate();
        let (h, m1) = HostSessionHandshake::start(&host, handset.public()).unwrap();
        let (mut hs, m2) =
            handset_accept_session(&handset, &[*stranger.public(), *host.public()], &m1).unwrap();
        let mut hc = h.finish(&m2).unwrap();
        assert_eq!(hs.remote_static(), host.public());
        let mut f = hc.encrypt(b"+CKLIST").unwrap();
        f[3] ^= 1;
        assert!(hs.decrypt(&f).is_err());
        assert!(!hs.is_alive());

        // An unknown host is refused.
        let (_, m1) = HostSessionHandshake::start(&stranger, handset.public()).unwrap();
        assert!(handset_accept_session(&handset, &[*host.public()], &m1).is_err());
    }

    #[test]
    fn reordered_frames_are_rejected() {
        let host = StaticKeypair::generate();
        let handset = StaticKeypair::generate();
        let (h, m1) = HostSessionHandshake::start(&host, handset.public()).unwrap();
        let (mut hs, m2) = handset_accept_session(&handset, &[*host.public()], &m1).unwrap();
        let mut hc = h.finish(&m2).unwrap();
        let _f1 = hc.encrypt(b"a").unwrap();
        let f2 = hc.encrypt(b"b").unwrap();
        assert!(hs.decrypt(&f2).is_err());
    }
}
