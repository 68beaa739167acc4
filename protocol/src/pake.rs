//! Pairing with a short code (docs/protocol.md section 5.8): eight digits a
//! person reads off one screen and types on the other. A PSK-only
//! handshake needs a code of 128 bits, because whoever records it can test
//! codes offline; here the code only enters SPAKE2, a balanced PAKE, whose
//! shared key becomes the pairing's Noise PSK. An attacker then learns
//! nothing to test offline and gets one guess per attempt against the
//! phone, which withdraws the code after a few failures.

use crate::noise::NoiseError;
use crate::secret::SecretCode;
use blake2::{Blake2s256, Digest};
use rand::Rng;
use spake2::{Ed25519Group, Identity, Password, Spake2};
use zeroize::Zeroizing;

/// Digits in a short code.
pub const SHORT_CODE_DIGITS: usize = 8;
/// SPAKE2 messages are one group element and a side byte.
pub const PAKE_MESSAGE_LEN: usize = 33;
const HOST_IDENTITY: &[u8] = b"phonecsp host";
const HANDSET_IDENTITY: &[u8] = b"phonecsp handset";
const PSK_LABEL: &[u8] = b"phonecsp pake psk v1";

/// An eight-digit one-time pairing code, shown as `1234-5678`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ShortCode(SecretCode<SHORT_CODE_DIGITS>);

impl ShortCode {
    pub fn generate() -> ShortCode {
        ShortCode(SecretCode::generate(|rng| b'0' + rng.gen_range(0..10u8)))
    }

    /// Eight digits; spaces and `-` anywhere are ignored.
    pub fn parse(s: &str) -> Result<ShortCode, NoiseError> {
        let mut d = Zeroizing::new([0u8; SHORT_CODE_DIGITS]);
        let mut n = 0;
        for c in s.bytes().filter(|c| !matches!(c, b' ' | b'-')) {
            if !c.is_ascii_digit() || n == SHORT_CODE_DIGITS {
                return Err(NoiseError::BadCode("a short code is eight digits"));
            }
            d[n] = c;
            n += 1;
        }
        if n != SHORT_CODE_DIGITS {
            return Err(NoiseError::BadCode("a short code is eight digits"));
        }
        Ok(ShortCode(d.into()))
    }

    pub fn display(&self) -> Zeroizing<String> {
        let d = &self.0;
        let s = std::str::from_utf8(&d[..]).unwrap_or_default();
        Zeroizing::new(format!("{}-{}", &s[..4], &s[4..]))
    }

    /// The digits, as the handset keeps them while the code is on offer.
    pub fn digits(&self) -> &[u8] {
        &self.0[..]
    }
}

/// A pairing code as a person typed it: eight digits are a short code,
/// anything else is read as the long one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyPairingCode {
    Short(ShortCode),
    Long(crate::noise::PairingCode),
}

impl AnyPairingCode {
    pub fn parse(s: &str) -> Result<AnyPairingCode, NoiseError> {
        match ShortCode::parse(s) {
            Ok(c) => Ok(AnyPairingCode::Short(c)),
            Err(_) => crate::noise::PairingCode::parse(s).map(AnyPairingCode::Long),
        }
    }
}

impl From<&ShortCode> for AnyPairingCode {
    fn from(c: &ShortCode) -> AnyPairingCode {
        AnyPairingCode::Short(c.clone())
    }
}

impl From<&crate::noise::PairingCode> for AnyPairingCode {
    fn from(c: &crate::noise::PairingCode) -> AnyPairingCode {
        AnyPairingCode::Long(c.clone())
    }
}

impl From<&AnyPairingCode> for AnyPairingCode {
    fn from(c: &AnyPairingCode) -> AnyPairingCode {
        c.clone()
    }
}

/// One side of the exchange: started with the code, finished with the
/// other side's message, giving the pairing PSK.
pub struct Pake(Spake2<Ed25519Group>);

impl Pake {
    /// The host's side; returns its message.
    pub fn host(code: &ShortCode) -> (Pake, Vec<u8>) {
        let (s, m) = Spake2::<Ed25519Group>::start_a(
            &Password::new(code.digits()),
            &Identity::new(HOST_IDENTITY),
            &Identity::new(HANDSET_IDENTITY),
        );
        (Pake(s), m)
    }

    /// The handset's side, for the digits on offer.
    pub fn handset(digits: &[u8]) -> (Pake, Vec<u8>) {
        let (s, m) = Spake2::<Ed25519Group>::start_b(
            &Password::new(digits),
            &Identity::new(HOST_IDENTITY),
            &Identity::new(HANDSET_IDENTITY),
        );
        (Pake(s), m)
    }

    /// The PSK for the pairing handshake from the other side's message.
    /// Both sides get the same PSK exactly when they used the same code;
    /// nothing here tells whether they did: the handshake's last message
    /// does (docs/protocol.md section 5.8).
    pub fn finish(self, theirs: &[u8]) -> Result<Zeroizing<[u8; 32]>, NoiseError> {
        if theirs.len() != PAKE_MESSAGE_LEN {
            return Err(NoiseError::Handshake);
        }
        let key = Zeroizing::new(self.0.finish(theirs).map_err(|_| NoiseError::Handshake)?);
        let mut h = Blake2s256::new();
        h.update(PSK_LABEL);
        h.update(&key[..]);
        Ok(Zeroizing::new(h.finalize().into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Either kind of code, as shown, parses back as the same code, also
    /// typed in lower case or with spaces for dashes, and is told from
    /// the other kind by its length.
    #[test]
    fn codes_of_either_kind_parse_as_people_type_them() {
        let long = crate::noise::PairingCode::generate();
        let short = ShortCode::generate();
        let (l, s) = (long.display(), short.display());
        assert_eq!((l.replace('-', "").len(), s.len()), (26, 9));
        let typings = |shown: &str| [shown.to_owned(), shown.to_lowercase().replace('-', " ")];
        for typed in typings(&l) {
            let read = AnyPairingCode::parse(&typed).unwrap();
            assert_eq!(read, AnyPairingCode::Long(long.clone()), "{typed}");
        }
        for typed in typings(&s) {
            let read = AnyPairingCode::parse(&typed).unwrap();
            assert_eq!(read, AnyPairingCode::Short(short.clone()), "{typed}");
        }
        for bad in ["ABCD", &format!("{}A", l.as_str()), "!!!!"] {
            assert!(crate::noise::PairingCode::parse(bad).is_err(), "{bad}");
        }
        for bad in ["1234-567", "1234-56789", "1234-567a", "", "IRNP-MD4A"] {
            assert!(ShortCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_code_gives_the_same_psk_and_another_does_not() {
        let code = ShortCode::parse("1234-5678").unwrap();
        let (host, a) = Pake::host(&code);
        let (handset, b) = Pake::handset(code.digits());
        assert_eq!((a.len(), b.len()), (PAKE_MESSAGE_LEN, PAKE_MESSAGE_LEN));
        assert_eq!(host.finish(&b).unwrap(), handset.finish(&a).unwrap());
        let (host, a) = Pake::host(&ShortCode::parse("1234-5679").unwrap());
        let (handset, b) = Pake::handset(code.digits());
        assert_ne!(host.finish(&b).unwrap(), handset.finish(&a).unwrap());
        // A message of the wrong side or length is refused.
        let (h1, a1) = Pake::host(&code);
        assert!(h1.finish(&a1).is_err());
        let (h2, _) = Pake::host(&code);
        assert!(h2.finish(&[1; 5]).is_err());
    }
}
