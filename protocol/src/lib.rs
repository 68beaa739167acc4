//! The phonecsp link protocol, shared by the computer and the handset.
//!
//! Layers, outermost first: [`at`] frames V.250 command and response lines;
//! [`message`] gives the commands typed form (`AT+CKVER?`, `AT+CKHS`, `AT+CKX`
//! outside, the `+CK...` set inside); [`noise`] authenticates and encrypts;
//! [`responder`] is the handset's sans-I/O state machine and [`host`] the
//! computer's async client. `docs/protocol.md` is the normative text.

pub mod announce;
pub mod at;
pub mod attest;
pub mod ck;
pub mod compact;
pub mod disk_wrap;
pub mod host;
pub mod limits;
pub mod message;
pub mod noise;
pub mod pake;
pub mod responder;
pub mod secret;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use at::ParseError;
pub use ck::{CkRv, Curve, DecryptMechanism, HashAlg, ObjectClass, SignMechanism};
pub use host::{HostLink, LinkError, LinkStats};
pub use message::{Command, InnerOutcome, Reply, Request, VersionInfo};
pub use noise::{PairingCode, Session, StaticKeypair};
pub use responder::{Asker, Handler, Responder};
