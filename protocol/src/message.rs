//! The commands and responses of the link, typed.
//!
//! [`Command`] is what the host writes on the line (`AT...`). [`Request`] is
//! the `+CK...` command carried encrypted inside `AT+CKX`, and [`Reply`] its
//! answer (information lines plus `OK` or `+CKR: <CK_RV>`). Every decoder is
//! total: malformed text is a [`ParseError`].

use crate::at::ParseError;
use crate::at::{
    Params, check_text, decode_b64, push_b64, quote, quote_b64, split_command, split_extended,
};
use crate::ck::{CkRv, Curve, DecryptMechanism, HashAlg, ObjectClass, SignMechanism, ckm};
use zeroize::Zeroizing;

/// Protocol version this crate speaks.
pub const PROTOCOL_VERSION: u64 = 1;
pub use crate::limits::{
    MAX_DATA_LEN, MAX_DATA_OBJECT_LEN, MAX_DER_LEN, MAX_ID_LEN, MAX_NAME_LEN, MAX_OBJECT_ID_LEN,
    MAX_PIN_LEN, MAX_PROGRAM_LEN, MAX_RANDOM_LEN,
};
pub use crate::limits::{MAX_NONCE_LEN, MAX_PRIVATE_KEY_LEN, MIN_NONCE_LEN};

/// Which Noise handshake an `AT+CKHS` message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeKind {
    /// `Noise_XXpsk3`, authenticated by a one-time pairing code.
    Pair = 1,
    /// `Noise_KK` between already pinned static keys.
    Session = 2,
}

/// A command line written by the host, outside the encryption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `AT`
    Attention,
    /// `ATE0` / `ATE1`
    Echo(bool),
    /// `AT+CKVER?`
    Version,
    /// `AT+CKHS=<kind>,"<message>"`
    Handshake {
        kind: HandshakeKind,
        message: Vec<u8>,
    },
    /// `AT+CKX="<frame part>"[,1]`; `more` says further parts follow.
    Frame { part: Vec<u8>, more: bool },
    /// `AT+CKPAKE="<message>"`: the host's SPAKE2 message for pairing with
    /// a short code (docs/protocol.md section 5.8).
    Pake { message: Vec<u8> },
}

impl Command {
    /// Parses one command line (with its `AT` prefix, without terminator).
    pub fn parse(line: &str) -> Result<Command, ParseError> {
        let body = line
            .get(..2)
            .filter(|p| p.eq_ignore_ascii_case("AT"))
            .map(|_| &line[2..])
            // Not a command line at all: answered `ERROR`, like an unknown
            // command, not `+CME ERROR: 50` (which is for bad parameters).
            .ok_or(ParseError::UnknownCommand)?;
        match body {
            "" => return Ok(Command::Attention),
            "E0" | "e0" => return Ok(Command::Echo(false)),
            "E1" | "e1" | "E" | "e" => return Ok(Command::Echo(true)),
            _ => {}
        }
        let (name, params) = split_command(body).ok_or(ParseError::UnknownCommand)?;
        match (name, params) {
            ("+CKVER", Some("?")) => Ok(Command::Version),
            ("+CKHS", Some(p)) => {
                let p = Params::parse(p)?;
                p.expect_count(2, 2)?;
                let kind = match p.number(0)? {
                    1 => HandshakeKind::Pair,
                    2 => HandshakeKind::Session,
                    _ => return Err(ParseError::Syntax("unknown handshake kind")),
                };
                Ok(Command::Handshake {
                    kind,
                    message: p.bytes(1)?,
                })
            }
            ("+CKPAKE", Some(p)) => {
                let p = Params::parse(p)?;
                p.expect_count(1, 1)?;
                Ok(Command::Pake {
                    message: p.bytes(0)?,
                })
            }
            ("+CKX", Some(p)) => {
                let p = Params::parse(p)?;
                p.expect_count(1, 2)?;
                let more = match p.opt_number(1)? {
                    None | Some(0) => false,
                    Some(1) => true,
                    Some(_) => return Err(ParseError::Syntax("bad continuation flag")),
                };
                Ok(Command::Frame {
                    part: p.bytes(0)?,
                    more,
                })
            }
            _ => Err(ParseError::UnknownCommand),
        }
    }

    /// The command line without terminator.
    pub fn encode(&self) -> String {
        match self {
            Command::Attention => "AT".into(),
            Command::Echo(on) => format!("ATE{}", u8::from(*on)),
            Command::Version => "AT+CKVER?".into(),
            Command::Handshake { kind, message } => {
                format!("AT+CKHS={},{}", *kind as u8, quote_b64(message))
            }
            Command::Pake { message } => format!("AT+CKPAKE={}", quote_b64(message)),
            Command::Frame { part, more } => {
                if *more {
                    format!("AT+CKX={},1", quote_b64(part))
                } else {
                    format!("AT+CKX={}", quote_b64(part))
                }
            }
        }
    }
}

/// What `AT+CKVER?` reports: `+CKVER: <version>,"<implementation>",<max line>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub protocol: u64,
    pub implementation: String,
    pub max_line: usize,
}

impl VersionInfo {
    pub fn encode(&self) -> Result<String, ParseError> {
        Ok(format!(
            "+CKVER: {},{},{}",
            self.protocol,
            quote(&self.implementation)?,
            self.max_line
        ))
    }

    pub fn parse(line: &str) -> Result<VersionInfo, ParseError> {
        let p = info_params(line, "+CKVER")?;
        p.expect_count(3, 3)?;
        Ok(VersionInfo {
            protocol: p.number(0)?,
            implementation: p.text(1)?.to_owned(),
            max_line: usize::try_from(p.number(2)?)
                .map_err(|_| ParseError::Syntax("number out of range"))?,
        })
    }
}

/// Parses `+NAME: params` for a known NAME.
pub fn info_params(line: &str, want: &str) -> Result<Params, ParseError> {
    match split_extended(line) {
        Some((name, Some(p))) if name == want && line.as_bytes().get(want.len()) == Some(&b':') => {
            Params::parse(p)
        }
        _ => Err(ParseError::Syntax("unexpected information line")),
    }
}

/// A PIN on its way across the link; wiped when dropped.
pub type Pin = Zeroizing<Vec<u8>>;

/// A data object (`CKO_DATA`) as `+CKPUTDATA` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataObject {
    /// Its `CKA_ID`, the handset's name for it.
    pub id: Vec<u8>,
    pub label: String,
    /// `CKA_APPLICATION`.
    pub application: String,
    /// `CKA_OBJECT_ID`, DER (may be empty).
    pub oid: Vec<u8>,
    /// `CKA_VALUE`.
    pub value: Vec<u8>,
}

/// A `+CK...` command carried inside the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `+CKLIST`: the containers this host is authorised for.
    ListContainers,
    /// `+CKTINFO="<container>"`
    TokenInfo { container: String },
    /// `+CKLOGIN="<container>","<pin>"`; an empty PIN asks the person on the phone.
    Login { container: String, pin: Pin },
    /// `+CKLOGOUT="<container>"`
    Logout { container: String },
    /// `+CKPIN="<container>","<old>","<new>"`
    ChangePin {
        container: String,
        old: Pin,
        new: Pin,
    },
    /// `+CKSOLOGIN="<container>","<puk>"`: the security officer's login.
    SoLogin { container: String, puk: Pin },
    /// `+CKSOLOGOUT="<container>"`
    SoLogout { container: String },
    /// `+CKINITPIN="<container>","<new PIN>"`: in an SO login, a new PIN.
    InitPin { container: String, pin: Pin },
    /// `+CKPUK="<container>","<old PUK>","<new PUK>"`
    ChangePuk {
        container: String,
        old: Pin,
        new: Pin,
    },
    /// `+CKFIND="<container>"[,<class>[,"<id>"[,"<label>"]]]`; empty fields match all.
    FindObjects {
        container: String,
        class: Option<ObjectClass>,
        id: Option<Vec<u8>>,
        label: Option<String>,
    },
    /// `+CKATTR="<container>",<class>,"<id>"`
    GetAttributes {
        container: String,
        class: ObjectClass,
        id: Vec<u8>,
    },
    /// `+CKSIGN="<container>","<id>",<mechanism>,"<data>"[,<hash>,<salt length>]`
    Sign {
        container: String,
        id: Vec<u8>,
        mechanism: SignMechanism,
        data: Vec<u8>,
    },
    /// `+CKDEC="<container>","<id>",<mechanism>,"<data>"[,<hash>,"<label>"]`
    Decrypt {
        container: String,
        id: Vec<u8>,
        mechanism: DecryptMechanism,
        data: Vec<u8>,
    },
    /// `+CKGEN="<container>",<bits>,"<id>","<label>"`
    GenerateKeyPair {
        container: String,
        bits: u32,
        id: Vec<u8>,
        label: String,
    },
    /// `+CKGENEC="<container>",<curve>,"<id>","<label>"`: an EC key pair
    /// (section 7.24).
    GenerateEcKeyPair {
        container: String,
        curve: Curve,
        id: Vec<u8>,
        label: String,
    },
    /// `+CKDERIVE="<container>","<id>",4176,"<peer point>"`: the private
    /// step of `CKM_ECDH1_DERIVE` (section 7.25).
    Derive {
        container: String,
        id: Vec<u8>,
        peer: Vec<u8>,
    },
    /// `+CKRAND=<length>`
    GenerateRandom { len: u32 },
    /// `+CKPUTCERT="<container>","<id>","<label>","<DER>"`
    PutCertificate {
        container: String,
        id: Vec<u8>,
        label: String,
        der: Vec<u8>,
    },
    /// `+CKDELCERT="<container>","<id>"`
    DeleteCertificate { container: String, id: Vec<u8> },
    /// `+CKPUTDATA="<container>","<id>","<label>","<application>","<object id>","<value>"`:
    /// a data object (`CKO_DATA`), replacing one with the same id.
    PutData {
        container: String,
        object: DataObject,
    },
    /// `+CKDELDATA="<container>","<id>"`
    DeleteData { container: String, id: Vec<u8> },
    /// `+CKDELKEY="<container>","<id>"`: the key pair (private and public).
    DestroyKey { container: String, id: Vec<u8> },
    /// `+CKREWRAP="<container>","<id>",<in hash>,"<data>",<out hash>,"<SPKI>"`:
    /// OAEP-decrypt `data` with the container key and OAEP-encrypt the result
    /// to the RSA public key in `spki`, inside the handset.
    Rewrap {
        container: String,
        id: Vec<u8>,
        in_hash: HashAlg,
        data: Vec<u8>,
        out_hash: HashAlg,
        spki: Vec<u8>,
    },
    /// `+CKIMPORT="<container>","<id>","<label>","<PKCS#8 DER>"`: a private
    /// key made elsewhere, stored like a generated one (recorded as not
    /// made on the phone), answered as `+CKGEN` is. The key is wiped when
    /// the request is dropped.
    ImportKey {
        container: String,
        id: Vec<u8>,
        label: String,
        pkcs8: Zeroizing<Vec<u8>>,
    },
    /// `+CKATTEST="<container>","<id>","<nonce>"`: a statement, signed by
    /// the handset's attestation key, of what it knows of the key `id`
    /// (docs/attestation.md).
    Attest {
        container: String,
        id: Vec<u8>,
        nonce: Vec<u8>,
    },
}

fn check_name(s: &str) -> Result<(), ParseError> {
    if s.is_empty() || s.len() > MAX_NAME_LEN {
        return Err(ParseError::Syntax("name empty or too long"));
    }
    check_text(s)
}

fn check_label(s: &str) -> Result<(), ParseError> {
    if s.len() > MAX_NAME_LEN {
        return Err(ParseError::Syntax("label too long"));
    }
    check_text(s)
}

fn check_len(v: &[u8], max: usize, what: &'static str) -> Result<(), ParseError> {
    if v.len() > max {
        return Err(ParseError::Syntax(what));
    }
    Ok(())
}

/// The mechanism of `+CKSIGN` and `+CKDEC`, which share their layout:
/// container, id, mechanism, data, then, for the mechanism that takes
/// them, a hash and one more parameter. `None` for `plain` (four fields),
/// the hash for `with_hash` (six).
fn key_op_mechanism(p: &Params, plain: u32, with_hash: u32) -> Result<Option<HashAlg>, ParseError> {
    let m = p.number(2)?;
    if m == u64::from(plain) {
        p.expect_count(4, 4)?;
        Ok(None)
    } else if m == u64::from(with_hash) {
        p.expect_count(6, 6)?;
        Ok(Some(hash_param(p, 4)?))
    } else {
        Err(ParseError::Mechanism)
    }
}

/// `+CKSIGN`'s mechanism and its parameters.
fn sign_mechanism(p: &Params) -> Result<SignMechanism, ParseError> {
    p.expect_count(4, 6)?;
    let m = p.number(2)?;
    if m == u64::from(ckm::ECDSA) || m == u64::from(ckm::EDDSA) {
        p.expect_count(4, 4)?;
        return Ok(if m == u64::from(ckm::ECDSA) {
            SignMechanism::Ecdsa
        } else {
            SignMechanism::Eddsa
        });
    }
    Ok(
        match key_op_mechanism(p, ckm::RSA_PKCS, ckm::RSA_PKCS_PSS)? {
            None => SignMechanism::Pkcs1,
            Some(hash) => SignMechanism::Pss {
                hash,
                salt_len: p.u32(5)?,
            },
        },
    )
}

/// `+CKDEC`'s mechanism and its parameters.
fn decrypt_mechanism(p: &Params) -> Result<DecryptMechanism, ParseError> {
    p.expect_count(4, 6)?;
    Ok(
        match key_op_mechanism(p, ckm::RSA_PKCS, ckm::RSA_PKCS_OAEP)? {
            None => DecryptMechanism::Pkcs1,
            Some(hash) => DecryptMechanism::Oaep {
                hash,
                label: p.bytes(5)?,
            },
        },
    )
}

fn hash_param(p: &Params, i: usize) -> Result<HashAlg, ParseError> {
    HashAlg::from_mechanism(p.number(i)?).ok_or(ParseError::Syntax("unknown hash mechanism"))
}

fn class_param(p: &Params, i: usize) -> Result<ObjectClass, ParseError> {
    ObjectClass::from_value(p.number(i)?).ok_or(ParseError::Syntax("unknown object class"))
}

/// One parameter of a command line, written as section 4 has it: text
/// quoted, bytes as quoted base64, numbers bare, and an optional
/// parameter left out as nothing between its commas.
enum Field<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
    Number(u64),
    Absent,
}

/// `+CKSIGN` and `+CKDEC`'s layout: the mechanism's parameters follow
/// the data, so the common case stays short.
fn key_op_fields<'a>(
    container: &'a str,
    id: &'a [u8],
    mechanism: u32,
    data: &'a [u8],
    params: Vec<Field<'a>>,
) -> Vec<Field<'a>> {
    let mut fields = vec![
        Field::Text(container),
        Field::Bytes(id),
        Field::Number(mechanism.into()),
        Field::Bytes(data),
    ];
    fields.extend(params);
    fields
}

impl Field<'_> {
    /// The most room the field takes on the line, with its comma.
    fn room(&self) -> usize {
        match self {
            Field::Text(t) => t.len() + 3,
            Field::Bytes(b) => b.len().div_ceil(3) * 4 + 3,
            Field::Number(_) => 21,
            Field::Absent => 1,
        }
    }

    fn write(&self, line: &mut String) -> Result<(), ParseError> {
        match self {
            Field::Text(t) => {
                check_text(t)?;
                line.push('"');
                line.push_str(t);
                line.push('"');
            }
            Field::Bytes(b) => {
                line.push('"');
                push_b64(b, line);
                line.push('"');
            }
            Field::Number(n) => line.push_str(&n.to_string()),
            Field::Absent => {}
        }
        Ok(())
    }
}

/// The requests that carry a PIN or PUK, made from borrowed bytes: the
/// copy each keeps is wiped when the request is dropped.
impl Request {
    /// `+CKLOGIN`: the user's login; an empty PIN is typed on the phone.
    pub fn login(container: &str, pin: &[u8]) -> Request {
        let (container, pin) = (container.to_owned(), Pin::new(pin.to_vec()));
        Request::Login { container, pin }
    }

    /// `+CKSOLOGIN`: the security officer's login, with the PUK.
    pub fn so_login(container: &str, puk: &[u8]) -> Request {
        let (container, puk) = (container.to_owned(), Pin::new(puk.to_vec()));
        Request::SoLogin { container, puk }
    }

    /// `+CKINITPIN`: in a security officer's login, a new PIN.
    pub fn init_pin(container: &str, pin: &[u8]) -> Request {
        let (container, pin) = (container.to_owned(), Pin::new(pin.to_vec()));
        Request::InitPin { container, pin }
    }

    /// `+CKPIN`: a new PIN, with the old one as proof.
    pub fn change_pin(container: &str, old: &[u8], new: &[u8]) -> Request {
        let (old, new) = (Pin::new(old.to_vec()), Pin::new(new.to_vec()));
        let container = container.to_owned();
        Request::ChangePin {
            container,
            old,
            new,
        }
    }

    /// `+CKPUK`: a new PUK, with the old one as proof.
    pub fn change_puk(container: &str, old: &[u8], new: &[u8]) -> Request {
        let (old, new) = (Pin::new(old.to_vec()), Pin::new(new.to_vec()));
        let container = container.to_owned();
        Request::ChangePuk {
            container,
            old,
            new,
        }
    }
}

impl Request {
    /// The command's name, for logs (never its parameters).
    pub fn name(&self) -> &'static str {
        match self {
            Request::ListContainers => "+CKLIST",
            Request::TokenInfo { .. } => "+CKTINFO",
            Request::Login { .. } => "+CKLOGIN",
            Request::Logout { .. } => "+CKLOGOUT",
            Request::ChangePin { .. } => "+CKPIN",
            Request::SoLogin { .. } => "+CKSOLOGIN",
            Request::SoLogout { .. } => "+CKSOLOGOUT",
            Request::InitPin { .. } => "+CKINITPIN",
            Request::ChangePuk { .. } => "+CKPUK",
            Request::FindObjects { .. } => "+CKFIND",
            Request::GetAttributes { .. } => "+CKATTR",
            Request::Sign { .. } => "+CKSIGN",
            Request::Decrypt { .. } => "+CKDEC",
            Request::GenerateKeyPair { .. } => "+CKGEN",
            Request::GenerateEcKeyPair { .. } => "+CKGENEC",
            Request::Derive { .. } => "+CKDERIVE",
            Request::GenerateRandom { .. } => "+CKRAND",
            Request::PutCertificate { .. } => "+CKPUTCERT",
            Request::DeleteCertificate { .. } => "+CKDELCERT",
            Request::PutData { .. } => "+CKPUTDATA",
            Request::DeleteData { .. } => "+CKDELDATA",
            Request::DestroyKey { .. } => "+CKDELKEY",
            Request::Rewrap { .. } => "+CKREWRAP",
            Request::ImportKey { .. } => "+CKIMPORT",
            Request::Attest { .. } => "+CKATTEST",
        }
    }

    /// Encodes the command line. Fails on values the grammar cannot carry
    /// (over-long names, quotes in labels), so nothing malformed is sent.
    pub fn encode(&self) -> Result<Zeroizing<String>, ParseError> {
        self.validate()?;
        let fields = self.fields();
        // Optional parameters at the end are left out, not sent empty.
        let end = fields
            .iter()
            .rposition(|f| !matches!(f, Field::Absent))
            .map_or(0, |i| i + 1);
        let fields = &fields[..end];
        // Room for the whole line up front: a line may hold a PIN or a
        // private key, and a buffer that grew would leave unwiped copies.
        let room = self.name().len() + fields.iter().map(Field::room).sum::<usize>();
        let mut line = Zeroizing::new(String::with_capacity(room));
        line.push_str(self.name());
        for (i, field) in fields.iter().enumerate() {
            line.push(if i == 0 { '=' } else { ',' });
            field.write(&mut line)?;
        }
        Ok(line)
    }

    /// The command's parameters in the order section 7 gives them.
    fn fields(&self) -> Vec<Field<'_>> {
        use Field::{Absent, Bytes, Number, Text};
        match self {
            Request::ListContainers => vec![],
            Request::GenerateRandom { len } => vec![Number((*len).into())],
            Request::TokenInfo { container }
            | Request::Logout { container }
            | Request::SoLogout { container } => vec![Text(container)],
            Request::Login { container, pin }
            | Request::InitPin { container, pin }
            | Request::SoLogin {
                container,
                puk: pin,
            } => vec![Text(container), Bytes(pin)],
            Request::ChangePin {
                container,
                old,
                new,
            }
            | Request::ChangePuk {
                container,
                old,
                new,
            } => vec![Text(container), Bytes(old), Bytes(new)],
            Request::FindObjects {
                container,
                class,
                id,
                label,
            } => vec![
                Text(container),
                class.map_or(Absent, |c| Number(c.value())),
                id.as_deref().map_or(Absent, Bytes),
                label.as_deref().map_or(Absent, Text),
            ],
            Request::GetAttributes {
                container,
                class,
                id,
            } => vec![Text(container), Number(class.value()), Bytes(id)],
            Request::Sign {
                container,
                id,
                mechanism,
                data,
            } => {
                let (m, params) = match mechanism {
                    SignMechanism::Pkcs1 => (ckm::RSA_PKCS, vec![]),
                    SignMechanism::Ecdsa => (ckm::ECDSA, vec![]),
                    SignMechanism::Eddsa => (ckm::EDDSA, vec![]),
                    SignMechanism::Pss { hash, salt_len } => (
                        ckm::RSA_PKCS_PSS,
                        vec![Number(hash.mechanism()), Number((*salt_len).into())],
                    ),
                };
                key_op_fields(container, id, m, data, params)
            }
            Request::Decrypt {
                container,
                id,
                mechanism,
                data,
            } => {
                let (m, params) = match mechanism {
                    DecryptMechanism::Pkcs1 => (ckm::RSA_PKCS, vec![]),
                    DecryptMechanism::Oaep { hash, label } => (
                        ckm::RSA_PKCS_OAEP,
                        vec![Number(hash.mechanism()), Bytes(label)],
                    ),
                };
                key_op_fields(container, id, m, data, params)
            }
            Request::GenerateKeyPair {
                container,
                bits,
                id,
                label,
            } => vec![
                Text(container),
                Number((*bits).into()),
                Bytes(id),
                Text(label),
            ],
            Request::GenerateEcKeyPair {
                container,
                curve,
                id,
                label,
            } => vec![
                Text(container),
                Number(curve.number().into()),
                Bytes(id),
                Text(label),
            ],
            Request::Derive {
                container,
                id,
                peer,
            } => vec![
                Text(container),
                Bytes(id),
                Number(ckm::ECDH1_DERIVE.into()),
                Bytes(peer),
            ],
            Request::PutCertificate {
                container,
                id,
                label,
                der,
            } => vec![Text(container), Bytes(id), Text(label), Bytes(der)],
            Request::DeleteCertificate { container, id }
            | Request::DeleteData { container, id }
            | Request::DestroyKey { container, id } => vec![Text(container), Bytes(id)],
            Request::PutData { container, object } => vec![
                Text(container),
                Bytes(&object.id),
                Text(&object.label),
                Text(&object.application),
                Bytes(&object.oid),
                Bytes(&object.value),
            ],
            Request::Rewrap {
                container,
                id,
                in_hash,
                data,
                out_hash,
                spki,
            } => vec![
                Text(container),
                Bytes(id),
                Number(in_hash.mechanism()),
                Bytes(data),
                Number(out_hash.mechanism()),
                Bytes(spki),
            ],
            Request::ImportKey {
                container,
                id,
                label,
                pkcs8,
            } => vec![Text(container), Bytes(id), Text(label), Bytes(pkcs8)],
            Request::Attest {
                container,
                id,
                nonce,
            } => vec![Text(container), Bytes(id), Bytes(nonce)],
        }
    }

    /// The container the request names, if it names one.
    pub fn container(&self) -> Option<&str> {
        self.names().0
    }

    /// The container and the object id (`CKA_ID`) the request names or
    /// creates, each if it has one.
    fn names(&self) -> (Option<&str>, Option<&[u8]>) {
        match self {
            Request::ListContainers | Request::GenerateRandom { .. } => (None, None),
            Request::TokenInfo { container }
            | Request::Login { container, .. }
            | Request::Logout { container }
            | Request::ChangePin { container, .. }
            | Request::SoLogin { container, .. }
            | Request::SoLogout { container }
            | Request::InitPin { container, .. }
            | Request::ChangePuk { container, .. } => (Some(container), None),
            Request::FindObjects { container, id, .. } => (Some(container), id.as_deref()),
            Request::PutData { container, object } => (Some(container), Some(&object.id)),
            Request::GetAttributes { container, id, .. }
            | Request::Sign { container, id, .. }
            | Request::Decrypt { container, id, .. }
            | Request::GenerateKeyPair { container, id, .. }
            | Request::GenerateEcKeyPair { container, id, .. }
            | Request::Derive { container, id, .. }
            | Request::PutCertificate { container, id, .. }
            | Request::DeleteCertificate { container, id }
            | Request::DeleteData { container, id }
            | Request::DestroyKey { container, id }
            | Request::Rewrap { container, id, .. }
            | Request::ImportKey { container, id, .. }
            | Request::Attest { container, id, .. } => (Some(container), Some(id)),
        }
    }

    /// Checks the limits every request must respect, on both ends: the
    /// container and id each request names, then what is particular to it.
    pub fn validate(&self) -> Result<(), ParseError> {
        let (container, id) = self.names();
        if let Some(container) = container {
            check_name(container)?;
        }
        if let Some(id) = id {
            check_len(id, MAX_ID_LEN, "id too long")?;
        }
        match self {
            Request::ListContainers
            | Request::TokenInfo { .. }
            | Request::Logout { .. }
            | Request::SoLogout { .. }
            | Request::GetAttributes { .. }
            | Request::DeleteCertificate { .. }
            | Request::DeleteData { .. }
            | Request::DestroyKey { .. } => {}
            Request::GenerateRandom { len } => {
                if *len == 0 || *len > MAX_RANDOM_LEN {
                    return Err(ParseError::Syntax("random length out of range"));
                }
            }
            Request::SoLogin { puk: pin, .. }
            | Request::InitPin { pin, .. }
            | Request::Login { pin, .. } => check_len(pin, MAX_PIN_LEN, "PIN too long")?,
            Request::ChangePuk { old, new, .. } | Request::ChangePin { old, new, .. } => {
                check_len(old, MAX_PIN_LEN, "PIN too long")?;
                check_len(new, MAX_PIN_LEN, "PIN too long")?;
            }
            Request::FindObjects { label, .. } => {
                if let Some(label) = label {
                    check_label(label)?;
                }
            }
            Request::Sign {
                data, mechanism, ..
            } => {
                check_len(data, MAX_DATA_LEN, "data too long")?;
                if let SignMechanism::Pss { salt_len, .. } = mechanism
                    && *salt_len > MAX_DATA_LEN as u32
                {
                    return Err(ParseError::Syntax("salt length out of range"));
                }
            }
            Request::Decrypt {
                data, mechanism, ..
            } => {
                check_len(data, MAX_DATA_LEN, "data too long")?;
                if let DecryptMechanism::Oaep { label, .. } = mechanism {
                    check_len(label, MAX_DATA_LEN, "OAEP label too long")?;
                }
            }
            Request::Derive { peer, .. } => check_len(peer, MAX_DATA_LEN, "peer point too long")?,
            Request::GenerateKeyPair { label, .. } | Request::GenerateEcKeyPair { label, .. } => {
                check_label(label)?
            }
            Request::PutCertificate { label, der, .. } => {
                check_label(label)?;
                check_len(der, MAX_DER_LEN, "certificate too long")?;
            }
            Request::PutData { object, .. } => {
                check_label(&object.label)?;
                check_label(&object.application)?;
                check_len(&object.oid, MAX_OBJECT_ID_LEN, "object id too long")?;
                check_len(&object.value, MAX_DATA_OBJECT_LEN, "data object too long")?;
            }
            Request::Rewrap { data, spki, .. } => {
                check_len(data, MAX_DATA_LEN, "data too long")?;
                check_len(spki, MAX_DER_LEN, "key too long")?;
            }
            Request::ImportKey { label, pkcs8, .. } => {
                check_label(label)?;
                if pkcs8.is_empty() {
                    return Err(ParseError::Syntax("empty private key"));
                }
                check_len(pkcs8, MAX_PRIVATE_KEY_LEN, "private key too long")?;
            }
            Request::Attest { nonce, .. } => {
                if nonce.len() < MIN_NONCE_LEN {
                    return Err(ParseError::Syntax("nonce too short"));
                }
                check_len(nonce, MAX_NONCE_LEN, "nonce too long")?;
            }
        }
        Ok(())
    }

    /// Whether the request may name the program it is for: the operations
    /// the phone's owner may be asked to approve (section 7.23).
    pub fn takes_program(&self) -> bool {
        matches!(
            self,
            Request::Sign { .. }
                | Request::Decrypt { .. }
                | Request::Rewrap { .. }
                | Request::GenerateKeyPair { .. }
                | Request::GenerateEcKeyPair { .. }
                | Request::Derive { .. }
                | Request::DestroyKey { .. }
                | Request::ImportKey { .. }
        )
    }

    /// Encodes the command line with the program it is for as its last
    /// parameter (section 7.23); `None` encodes as [`Request::encode`].
    /// Fails for a request that takes no program, or a description the
    /// grammar cannot carry (see [`program_text`] to make one that fits).
    pub fn encode_for(&self, program: Option<&str>) -> Result<Zeroizing<String>, ParseError> {
        let mut s = self.encode()?;
        if let Some(program) = program {
            if !self.takes_program() {
                return Err(ParseError::Syntax("this command names no program"));
            }
            check_program(program)?;
            s.push(',');
            s.push_str(&quote(program)?);
        }
        Ok(s)
    }

    /// Parses an inner command line; a program it names is left out (see
    /// [`Request::parse_for`]).
    pub fn parse(line: &str) -> Result<Request, ParseError> {
        Request::parse_for(line).map(|(r, _)| r)
    }

    /// Parses an inner command line, with the program it names, if any.
    pub fn parse_for(line: &str) -> Result<(Request, Option<String>), ParseError> {
        let (name, params) = split_command(line).ok_or(ParseError::UnknownCommand)?;
        let mut p = match params {
            None => Params(Vec::new()),
            Some("?") => return Err(ParseError::UnknownCommand),
            Some(p) => Params::parse(p)?,
        };
        let program = take_program(name, &mut p)?;
        let container = || p.text(0).map(str::to_owned);
        // The shapes most commands share: a container alone, or with one
        // or two secrets (PIN, PUK; old and new).
        let only_container = || -> Result<String, ParseError> {
            p.expect_count(1, 1)?;
            container()
        };
        let secret = |i| p.bytes(i).map(Zeroizing::new);
        let one_secret = || -> Result<(String, Pin), ParseError> {
            p.expect_count(2, 2)?;
            Ok((container()?, secret(1)?))
        };
        let two_secrets = || -> Result<(String, Pin, Pin), ParseError> {
            p.expect_count(3, 3)?;
            Ok((container()?, secret(1)?, secret(2)?))
        };
        let object_id = || -> Result<(String, Vec<u8>), ParseError> {
            p.expect_count(2, 2)?;
            Ok((container()?, p.bytes(1)?))
        };
        let req = match name {
            "+CKLIST" => {
                p.expect_count(0, 0)?;
                Request::ListContainers
            }
            "+CKTINFO" => Request::TokenInfo {
                container: only_container()?,
            },
            "+CKLOGIN" => {
                let (container, pin) = one_secret()?;
                Request::Login { container, pin }
            }
            "+CKLOGOUT" => Request::Logout {
                container: only_container()?,
            },
            "+CKPIN" => {
                let (container, old, new) = two_secrets()?;
                Request::ChangePin {
                    container,
                    old,
                    new,
                }
            }
            "+CKSOLOGIN" => {
                let (container, puk) = one_secret()?;
                Request::SoLogin { container, puk }
            }
            "+CKSOLOGOUT" => Request::SoLogout {
                container: only_container()?,
            },
            "+CKINITPIN" => {
                let (container, pin) = one_secret()?;
                Request::InitPin { container, pin }
            }
            "+CKPUK" => {
                let (container, old, new) = two_secrets()?;
                Request::ChangePuk {
                    container,
                    old,
                    new,
                }
            }
            "+CKFIND" => {
                p.expect_count(1, 4)?;
                Request::FindObjects {
                    container: container()?,
                    class: if p.is_empty_at(1) {
                        None
                    } else {
                        Some(class_param(&p, 1)?)
                    },
                    id: p.opt_bytes(2)?,
                    label: p.opt_text(3)?.map(str::to_owned),
                }
            }
            "+CKATTR" => {
                p.expect_count(3, 3)?;
                Request::GetAttributes {
                    container: container()?,
                    class: class_param(&p, 1)?,
                    id: p.bytes(2)?,
                }
            }
            "+CKSIGN" => Request::Sign {
                mechanism: sign_mechanism(&p)?,
                container: container()?,
                id: p.bytes(1)?,
                data: p.bytes(3)?,
            },
            "+CKDEC" => Request::Decrypt {
                mechanism: decrypt_mechanism(&p)?,
                container: container()?,
                id: p.bytes(1)?,
                data: p.bytes(3)?,
            },
            "+CKGEN" => {
                p.expect_count(4, 4)?;
                Request::GenerateKeyPair {
                    container: container()?,
                    bits: p.u32(1)?,
                    id: p.bytes(2)?,
                    label: p.text(3)?.to_owned(),
                }
            }
            "+CKGENEC" => {
                p.expect_count(4, 4)?;
                Request::GenerateEcKeyPair {
                    container: container()?,
                    curve: Curve::from_number(p.number(1)?)
                        .ok_or(ParseError::Syntax("unknown curve"))?,
                    id: p.bytes(2)?,
                    label: p.text(3)?.to_owned(),
                }
            }
            "+CKDERIVE" => {
                p.expect_count(4, 4)?;
                if p.number(2)? != u64::from(ckm::ECDH1_DERIVE) {
                    return Err(ParseError::Mechanism);
                }
                Request::Derive {
                    container: container()?,
                    id: p.bytes(1)?,
                    peer: p.bytes(3)?,
                }
            }
            "+CKRAND" => {
                p.expect_count(1, 1)?;
                Request::GenerateRandom { len: p.u32(0)? }
            }
            "+CKPUTCERT" => {
                p.expect_count(4, 4)?;
                Request::PutCertificate {
                    container: container()?,
                    id: p.bytes(1)?,
                    label: p.text(2)?.to_owned(),
                    der: p.bytes(3)?,
                }
            }
            "+CKDELCERT" => {
                let (container, id) = object_id()?;
                Request::DeleteCertificate { container, id }
            }
            "+CKPUTDATA" => {
                p.expect_count(6, 6)?;
                let object = DataObject {
                    id: p.bytes(1)?,
                    label: p.text(2)?.to_owned(),
                    application: p.text(3)?.to_owned(),
                    oid: p.bytes(4)?,
                    value: p.bytes(5)?,
                };
                Request::PutData {
                    container: container()?,
                    object,
                }
            }
            "+CKDELDATA" => {
                let (container, id) = object_id()?;
                Request::DeleteData { container, id }
            }
            "+CKDELKEY" => {
                let (container, id) = object_id()?;
                Request::DestroyKey { container, id }
            }
            "+CKREWRAP" => {
                p.expect_count(6, 6)?;
                Request::Rewrap {
                    container: container()?,
                    id: p.bytes(1)?,
                    in_hash: hash_param(&p, 2)?,
                    data: p.bytes(3)?,
                    out_hash: hash_param(&p, 4)?,
                    spki: p.bytes(5)?,
                }
            }
            "+CKIMPORT" => {
                p.expect_count(4, 4)?;
                Request::ImportKey {
                    container: container()?,
                    id: p.bytes(1)?,
                    label: p.text(2)?.to_owned(),
                    pkcs8: secret(3)?,
                }
            }
            "+CKATTEST" => {
                p.expect_count(3, 3)?;
                Request::Attest {
                    container: container()?,
                    id: p.bytes(1)?,
                    nonce: p.bytes(2)?,
                }
            }
            _ => return Err(ParseError::UnknownCommand),
        };
        req.validate()?;
        Ok((req, program))
    }
}

/// Checks a program description: text the grammar carries, at most
/// [`MAX_PROGRAM_LEN`] bytes.
fn check_program(s: &str) -> Result<(), ParseError> {
    if s.len() > MAX_PROGRAM_LEN {
        return Err(ParseError::Syntax("program description too long"));
    }
    check_text(s)
}

/// The parameter count of a command that may name a program, without it:
/// `+CKSIGN` and `+CKDEC` by their mechanism (the number in third place).
fn base_count(name: &str, p: &Params) -> Option<usize> {
    match name {
        "+CKDELKEY" => Some(2),
        "+CKGEN" | "+CKGENEC" | "+CKDERIVE" | "+CKIMPORT" => Some(4),
        "+CKREWRAP" => Some(6),
        "+CKSIGN" | "+CKDEC" => match p.number(2).ok()? {
            n if n == u64::from(ckm::RSA_PKCS) => Some(4),
            n if n == u64::from(ckm::RSA_PKCS_PSS) && name == "+CKSIGN" => Some(6),
            n if (n == u64::from(ckm::ECDSA) || n == u64::from(ckm::EDDSA))
                && name == "+CKSIGN" =>
            {
                Some(4)
            }
            n if n == u64::from(ckm::RSA_PKCS_OAEP) && name == "+CKDEC" => Some(6),
            _ => None,
        },
        _ => None,
    }
}

/// Removes the program a command names as its one extra, last parameter
/// (section 7.23), and returns it. Any other count is left for the
/// command's own check to refuse.
fn take_program(name: &str, p: &mut Params) -> Result<Option<String>, ParseError> {
    let Some(base) = base_count(name, p) else {
        return Ok(None);
    };
    if p.len() != base + 1 {
        return Ok(None);
    }
    let program = p.text(base)?.to_owned();
    check_program(&program)?;
    p.0.truncate(base);
    Ok(Some(program))
}

/// A program's name and process id as a description the link carries
/// (section 7.23): `NAME (pid N)`, with every character that is not
/// printable ASCII (and `"` and `\`, which a string cannot hold) as `?`,
/// and the name cut so that the whole fits [`MAX_PROGRAM_LEN`]. The name
/// comes from the caller's process and is not to be trusted.
pub fn program_text(name: &str, pid: Option<u32>) -> String {
    let suffix = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
    let room = MAX_PROGRAM_LEN.saturating_sub(suffix.len());
    let mut out: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '?',
        })
        .take(room)
        .collect();
    if out.is_empty() {
        out.push('?');
    }
    out.push_str(&suffix);
    out
}

/// Token flags reported by `+CKTINFO`, each written once with the name
/// the command and the D-Bus object API show it by.
pub mod token_flags {
    /// Writes each flag's constant and the table of their names.
    macro_rules! flags {
        ($($(#[$doc:meta])* $flag:ident = $bit:literal => $name:literal;)*) => {
            $($(#[$doc])* pub const $flag: u32 = $bit;)*

            /// Each flag's name, as the command and the D-Bus object API
            /// show it.
            pub const NAMES: &[(u32, &str)] = &[$(($flag, $name)),*];
        };
    }

    flags! {
        /// Private-key operations need `+CKLOGIN` first.
        LOGIN_REQUIRED = 0x01 => "login-required";
        /// Too many wrong PINs: the container is locked.
        PIN_LOCKED = 0x02 => "pin-locked";
        /// At least one wrong PIN since the last right one.
        PIN_COUNT_LOW = 0x04 => "pin-count-low";
        /// One more wrong PIN locks the container.
        PIN_FINAL_TRY = 0x08 => "pin-final-try";
        /// A person approves each private-key operation on the phone.
        CONFIRM = 0x10 => "confirm-on-phone";
        /// This session is logged in to the container.
        LOGGED_IN = 0x20 => "logged-in";
        /// The PIN is entered on the phone (protected authentication path).
        PROTECTED_PATH = 0x40 => "pin-on-phone";
        /// Set by the daemon, never by a handset: the handset is away, and the
        /// daemon lists the container as it last saw it.
        AWAY = 0x80 => "away";
        /// Set by the daemon, never by a handset: a disk volume was enrolled
        /// to the container (`phonecsp luks enroll`), so the PKCS#11 module
        /// does not offer it to programs unless asked to (an ssh-agent's PIN
        /// would otherwise spend the disk container's tries).
        DISK = 0x100 => "disk";
        /// The container has a PUK (a security officer): `+CKSOLOGIN` can
        /// unblock it.
        PUK_SET = 0x1000 => "puk-set";
        /// Too many wrong PUKs: the PUK is locked, for good.
        SO_PIN_LOCKED = 0x2000 => "puk-locked";
        /// At least one wrong PUK since the last right one.
        SO_PIN_COUNT_LOW = 0x4000 => "puk-count-low";
        /// One more wrong PUK locks it for good.
        SO_PIN_FINAL_TRY = 0x8000 => "puk-final-try";
        /// This session is logged in to the container as its security officer.
        SO_LOGGED_IN = 0x10000 => "so-logged-in";
    }

    /// The names of the flags set in `flags`.
    pub fn names(flags: u32) -> Vec<&'static str> {
        NAMES
            .iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, n)| *n)
            .collect()
    }
}

/// One container, as `+CKLIST` lists it: `+CKLIST: "<name>",<flags>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEntry {
    pub name: String,
    pub flags: u32,
}

/// `+CKTINFO: "<name>",<flags>,<retries left>,<min PIN>,<max PIN>,"<serial>",<PUK retries left>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    pub name: String,
    pub flags: u32,
    pub retries_left: u32,
    pub min_pin: u32,
    pub max_pin: u32,
    pub serial: String,
    /// Wrong PUKs left before the PUK locks for good; 0 without a PUK
    /// (flag `PUK_SET` clear), and from a handset that sends six fields.
    pub so_retries_left: u32,
}

/// One object, as `+CKFIND` lists it: `+CKOBJ: <class>,"<id>","<label>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEntry {
    pub class: ObjectClass,
    pub id: Vec<u8>,
    pub label: String,
}

/// A successful answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `OK` with no information line.
    Done,
    Containers(Vec<ContainerEntry>),
    TokenInfo(TokenInfo),
    Objects(Vec<ObjectEntry>),
    /// `+CKATTR: <type>,"<value>"` lines, in the handset's order.
    Attributes(Vec<(u32, Vec<u8>)>),
    /// `+CKSIGN: "<signature>"`
    Signature(Vec<u8>),
    /// `+CKDEC: "<plaintext>"`
    Plaintext(Zeroizing<Vec<u8>>),
    /// `+CKGEN: "<id>","<modulus>","<public exponent>"`
    KeyPair {
        id: Vec<u8>,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
    },
    /// `+CKGENEC: "<id>","<public point>"`
    EcKeyPair {
        id: Vec<u8>,
        point: Vec<u8>,
    },
    /// `+CKDERIVE: "<shared secret Z>"`
    Derived(Zeroizing<Vec<u8>>),
    /// `+CKRAND: "<bytes>"`
    Random(Vec<u8>),
    /// `+CKREWRAP: "<ciphertext>"`
    Rewrapped(Vec<u8>),
    /// `+CKATTEST: "<statement>"`
    Attestation(Vec<u8>),
}

/// The final result of an inner response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InnerFinal {
    Ok,
    /// `+CKR: <8 hex digits>`
    Failed(CkRv),
    /// `ERROR`: the handset could not parse the inner command.
    Error,
}

impl Reply {
    /// The response text: information lines and the final `OK`, joined by CRLF.
    pub fn encode(&self) -> Result<Zeroizing<String>, ParseError> {
        let mut lines: Vec<String> = Vec::new();
        match self {
            Reply::Done => {}
            Reply::Containers(list) => {
                for c in list {
                    lines.push(format!("+CKLIST: {},{}", quote(&c.name)?, c.flags));
                }
            }
            Reply::TokenInfo(t) => lines.push(format!(
                "+CKTINFO: {},{},{},{},{},{},{}",
                quote(&t.name)?,
                t.flags,
                t.retries_left,
                t.min_pin,
                t.max_pin,
                quote(&t.serial)?,
                t.so_retries_left
            )),
            Reply::Objects(list) => {
                for o in list {
                    lines.push(format!(
                        "+CKOBJ: {},{},{}",
                        o.class.value(),
                        quote_b64(&o.id),
                        quote(&o.label)?
                    ));
                }
            }
            Reply::Attributes(list) => {
                for (t, v) in list {
                    lines.push(format!("+CKATTR: {t},{}", quote_b64(v)));
                }
            }
            Reply::Signature(s) => lines.push(format!("+CKSIGN: {}", quote_b64(s))),
            Reply::Plaintext(p) => lines.push(format!("+CKDEC: {}", quote_b64(p))),
            Reply::KeyPair {
                id,
                modulus,
                exponent,
            } => lines.push(format!(
                "+CKGEN: {},{},{}",
                quote_b64(id),
                quote_b64(modulus),
                quote_b64(exponent)
            )),
            Reply::EcKeyPair { id, point } => {
                lines.push(format!("+CKGENEC: {},{}", quote_b64(id), quote_b64(point)))
            }
            Reply::Derived(z) => lines.push(format!("+CKDERIVE: {}", quote_b64(z))),
            Reply::Random(r) => lines.push(format!("+CKRAND: {}", quote_b64(r))),
            Reply::Rewrapped(c) => lines.push(format!("+CKREWRAP: {}", quote_b64(c))),
            Reply::Attestation(a) => lines.push(format!("+CKATTEST: {}", quote_b64(a))),
        }
        lines.push("OK".into());
        Ok(Zeroizing::new(lines.join("\r\n")))
    }

    /// Parses the response to `request`; a `+CKR` final result becomes
    /// [`InnerOutcome::Failed`].
    pub fn decode(request: &Request, text: &str) -> Result<InnerOutcome, ParseError> {
        let mut lines: Vec<&str> = text.split("\r\n").collect();
        let last = lines.pop().ok_or(ParseError::Syntax("empty response"))?;
        let fin = match last {
            "OK" => InnerFinal::Ok,
            "ERROR" => InnerFinal::Error,
            _ => {
                let hex = last
                    .strip_prefix("+CKR: ")
                    .ok_or(ParseError::Syntax("missing final result"))?;
                if hex.len() != 8 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ParseError::Syntax("malformed +CKR"));
                }
                let rv = u32::from_str_radix(hex, 16)
                    .map_err(|_| ParseError::Syntax("malformed +CKR"))?;
                InnerFinal::Failed(CkRv(rv))
            }
        };
        match fin {
            InnerFinal::Ok => {}
            InnerFinal::Error => return Ok(InnerOutcome::Rejected),
            InnerFinal::Failed(rv) => {
                if !lines.is_empty() {
                    return Err(ParseError::Syntax("information lines before +CKR"));
                }
                return Ok(InnerOutcome::Failed(rv));
            }
        }
        let one = |name: &str| -> Result<Params, ParseError> {
            match lines.as_slice() {
                [l] => info_params(l, name),
                _ => Err(ParseError::Syntax("expected exactly one information line")),
            }
        };
        // Most answers are one information line, named as the command, of
        // one base64 parameter.
        let value = || -> Result<Vec<u8>, ParseError> {
            let p = one(request.name())?;
            p.expect_count(1, 1)?;
            p.bytes(0)
        };
        let ec_key_pair = || -> Result<Reply, ParseError> {
            let p = one("+CKGENEC")?;
            p.expect_count(2, 2)?;
            Ok(Reply::EcKeyPair {
                id: p.bytes(0)?,
                point: p.bytes(1)?,
            })
        };
        let reply = match request {
            Request::Login { .. }
            | Request::Logout { .. }
            | Request::ChangePin { .. }
            | Request::SoLogin { .. }
            | Request::SoLogout { .. }
            | Request::InitPin { .. }
            | Request::ChangePuk { .. }
            | Request::PutCertificate { .. }
            | Request::DeleteCertificate { .. }
            | Request::PutData { .. }
            | Request::DeleteData { .. }
            | Request::DestroyKey { .. } => {
                if !lines.is_empty() {
                    return Err(ParseError::Syntax("unexpected information line"));
                }
                Reply::Done
            }
            Request::ListContainers => {
                let mut out = Vec::new();
                for l in &lines {
                    let p = info_params(l, "+CKLIST")?;
                    p.expect_count(2, 2)?;
                    out.push(ContainerEntry {
                        name: p.text(0)?.to_owned(),
                        flags: p.u32(1)?,
                    });
                }
                Reply::Containers(out)
            }
            Request::TokenInfo { .. } => {
                let p = one("+CKTINFO")?;
                // Six fields from a handset that predates PUKs.
                p.expect_count(6, 7)?;
                Reply::TokenInfo(TokenInfo {
                    name: p.text(0)?.to_owned(),
                    flags: p.u32(1)?,
                    retries_left: p.u32(2)?,
                    min_pin: p.u32(3)?,
                    max_pin: p.u32(4)?,
                    serial: p.text(5)?.to_owned(),
                    so_retries_left: if p.len() > 6 { p.u32(6)? } else { 0 },
                })
            }
            Request::FindObjects { .. } => {
                let mut out = Vec::new();
                for l in &lines {
                    let p = info_params(l, "+CKOBJ")?;
                    p.expect_count(3, 3)?;
                    out.push(ObjectEntry {
                        class: class_param(&p, 0)?,
                        id: p.bytes(1)?,
                        label: p.text(2)?.to_owned(),
                    });
                }
                Reply::Objects(out)
            }
            Request::GetAttributes { .. } => {
                let mut out = Vec::new();
                for l in &lines {
                    let p = info_params(l, "+CKATTR")?;
                    p.expect_count(2, 2)?;
                    out.push((p.u32(0)?, p.bytes(1)?));
                }
                Reply::Attributes(out)
            }
            Request::Sign { .. } => Reply::Signature(value()?),
            Request::Decrypt { .. } => Reply::Plaintext(Zeroizing::new(value()?)),
            // An imported key is reported as a generated one of its kind
            // is: an RSA key with +CKGEN, an EC key with +CKGENEC.
            Request::ImportKey { .. }
                if lines.first().is_some_and(|l| l.starts_with("+CKGENEC:")) =>
            {
                ec_key_pair()?
            }
            Request::GenerateKeyPair { .. } | Request::ImportKey { .. } => {
                let p = one("+CKGEN")?;
                p.expect_count(3, 3)?;
                Reply::KeyPair {
                    id: p.bytes(0)?,
                    modulus: p.bytes(1)?,
                    exponent: p.bytes(2)?,
                }
            }
            Request::GenerateEcKeyPair { .. } => ec_key_pair()?,
            Request::Derive { .. } => Reply::Derived(Zeroizing::new(value()?)),
            Request::GenerateRandom { .. } => Reply::Random(value()?),
            Request::Rewrap { .. } => Reply::Rewrapped(value()?),
            Request::Attest { .. } => Reply::Attestation(value()?),
        };
        Ok(InnerOutcome::Done(reply))
    }
}

/// How the handset answered an inner request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InnerOutcome {
    Done(Reply),
    /// `+CKR: <rv>`: the handset's module refused with this CK_RV.
    Failed(CkRv),
    /// `ERROR`: the handset did not understand the command.
    Rejected,
}

/// Formats the final result line for a failure.
pub fn ckr_line(rv: CkRv) -> String {
    format!("+CKR: {:08X}", rv.0)
}

/// Decodes base64 that is known to come from a quoted parameter.
pub fn b64(s: &str) -> Result<Vec<u8>, ParseError> {
    decode_b64(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_token_flag_is_a_bit_of_its_own_with_a_name_of_its_own() {
        use token_flags::{NAMES, names};
        let all = NAMES.iter().fold(0, |acc, (bit, _)| {
            assert_eq!(bit.count_ones(), 1, "{bit:#x}");
            assert_eq!(acc & bit, 0, "{bit:#x} twice");
            acc | bit
        });
        let shown = names(all);
        assert_eq!(shown.len(), NAMES.len());
        assert!(
            shown
                .iter()
                .enumerate()
                .all(|(i, n)| !shown[..i].contains(n))
        );
        assert_eq!(
            names(token_flags::LOGIN_REQUIRED | token_flags::PUK_SET),
            ["login-required", "puk-set"]
        );
    }

    fn roundtrip(r: Request) {
        let line = r.encode().unwrap();
        assert_eq!(Request::parse(&line).unwrap(), r, "{}", line.as_str());
    }

    /// A handset from before PUKs sends six fields: the host reads them as
    /// a container without a PUK.
    #[test]
    fn token_info_of_six_fields_reads_as_no_puk() {
        let r = Request::TokenInfo {
            container: "ssh".into(),
        };
        match Reply::decode(&r, "+CKTINFO: \"ssh\",33,3,4,64,\"9f3a61c2e0d4b857\"\r\nOK") {
            Ok(InnerOutcome::Done(Reply::TokenInfo(t))) => {
                assert_eq!((t.retries_left, t.so_retries_left), (3, 0));
                assert_eq!(t.flags & token_flags::PUK_SET, 0);
            }
            other => panic!("{other:?}"),
        }
    }

    /// The longest private key `+CKIMPORT` takes goes in one frame, and
    /// one byte more is refused on both ends.
    #[test]
    fn an_import_fits_a_frame_and_its_limit_holds() {
        let import = |len| Request::ImportKey {
            container: "a".repeat(MAX_NAME_LEN),
            id: vec![7; MAX_ID_LEN],
            label: "l".repeat(MAX_NAME_LEN),
            pkcs8: Zeroizing::new(vec![0x30; len]),
        };
        let longest = import(MAX_PRIVATE_KEY_LEN);
        let line = longest
            .encode_for(Some(&"p".repeat(MAX_PROGRAM_LEN)))
            .unwrap();
        assert!(line.len() < 6 * 1024, "{}", line.len());
        assert!(line.len() <= crate::noise::MAX_FRAME_PLAINTEXT);
        roundtrip(longest);
        assert!(import(MAX_PRIVATE_KEY_LEN + 1).encode().is_err());
        assert!(import(0).encode().is_err());
        let attest = |n| Request::Attest {
            container: "ssh".into(),
            id: vec![1],
            nonce: vec![9; n],
        };
        roundtrip(attest(MIN_NONCE_LEN));
        roundtrip(attest(MAX_NONCE_LEN));
        assert!(attest(MIN_NONCE_LEN - 1).encode().is_err());
        assert!(attest(MAX_NONCE_LEN + 1).encode().is_err());
        assert!(attest(MIN_NONCE_LEN).encode_for(Some("x")).is_err());
    }

    #[test]
    fn every_request_roundtrips() {
        let c = "ssh".to_string();
        roundtrip(Request::ListContainers);
        roundtrip(Request::TokenInfo {
            container: c.clone(),
        });
        roundtrip(Request::Login {
            container: c.clone(),
            pin: Zeroizing::new(b"1234".to_vec()),
        });
        roundtrip(Request::Logout {
            container: c.clone(),
        });
        roundtrip(Request::ChangePin {
            container: c.clone(),
            old: Zeroizing::new(b"1".to_vec()),
            new: Zeroizing::new(vec![]),
        });
        for (class, id, label) in [
            (None, None, None),
            (Some(ObjectClass::PrivateKey), None, None),
            (None, Some(vec![1, 2]), None),
            (None, None, Some("my key".to_string())),
            (
                Some(ObjectClass::Certificate),
                Some(vec![]),
                Some(String::new()),
            ),
        ] {
            roundtrip(Request::FindObjects {
                container: c.clone(),
                class,
                id,
                label,
            });
        }
        roundtrip(Request::GetAttributes {
            container: c.clone(),
            class: ObjectClass::PublicKey,
            id: vec![9],
        });
        let pss = SignMechanism::Pss {
            hash: HashAlg::Sha384,
            salt_len: 48,
        };
        for (mechanism, data) in [(SignMechanism::Pkcs1, vec![7; 51]), (pss, vec![7; 48])] {
            roundtrip(Request::Sign {
                container: c.clone(),
                id: vec![1],
                mechanism,
                data,
            });
        }
        let oaep = DecryptMechanism::Oaep {
            hash: HashAlg::Sha256,
            label: b"l".to_vec(),
        };
        for mechanism in [DecryptMechanism::Pkcs1, oaep] {
            roundtrip(Request::Decrypt {
                container: c.clone(),
                id: vec![1],
                mechanism,
                data: vec![1; 256],
            });
        }
        roundtrip(Request::GenerateKeyPair {
            container: c.clone(),
            bits: 2048,
            id: vec![3],
            label: "k".into(),
        });
        roundtrip(Request::GenerateRandom { len: 32 });
        roundtrip(Request::PutCertificate {
            container: c.clone(),
            id: vec![3],
            label: "k".into(),
            der: vec![0x30, 0],
        });
        roundtrip(Request::DeleteCertificate {
            container: c.clone(),
            id: vec![3],
        });
        roundtrip(Request::PutData {
            container: c.clone(),
            object: DataObject {
                id: vec![4],
                label: "settings".into(),
                application: "mail client".into(),
                oid: vec![0x06, 0x03, 0x2a, 0x03, 0x04],
                value: b"a value".to_vec(),
            },
        });
        roundtrip(Request::DeleteData {
            container: c.clone(),
            id: vec![4],
        });
        roundtrip(Request::DestroyKey {
            container: c.clone(),
            id: vec![3],
        });
        roundtrip(Request::Rewrap {
            container: c,
            id: vec![3],
            in_hash: HashAlg::Sha256,
            data: vec![5; 256],
            out_hash: HashAlg::Sha1,
            spki: vec![0x30, 1, 2],
        });
    }

    /// Issue 13, item 5: the key operations carry the program they are
    /// for; nothing else does, and the description is bounded text.
    #[test]
    fn key_operations_name_their_program() {
        let sign = Request::Sign {
            container: "ssh".into(),
            id: vec![1],
            mechanism: SignMechanism::Pss {
                hash: HashAlg::Sha256,
                salt_len: 32,
            },
            data: vec![0; 32],
        };
        let line = sign.encode_for(Some("ssh-agent (pid 7)")).unwrap();
        assert!(line.ends_with(",592,32,\"ssh-agent (pid 7)\""), "{}", *line);
        assert_eq!(
            Request::parse_for(&line).unwrap(),
            (sign.clone(), Some("ssh-agent (pid 7)".to_owned()))
        );
        // Without one, the line is as before, and parse leaves it out.
        assert_eq!(sign.encode_for(None).unwrap(), sign.encode().unwrap());
        assert_eq!(Request::parse(&line).unwrap(), sign);
        let login = Request::Login {
            container: "ssh".into(),
            pin: Zeroizing::new(b"1234".to_vec()),
        };
        assert!(login.encode_for(Some("x")).is_err());
        assert!(sign.encode_for(Some("a\"b")).is_err());
        assert!(
            sign.encode_for(Some(&"x".repeat(MAX_PROGRAM_LEN + 1)))
                .is_err()
        );
        assert!(sign.encode_for(Some(&"x".repeat(MAX_PROGRAM_LEN))).is_ok());
    }

    /// The compact form (section 6.7) carries the program as it carries
    /// any string: expanded, the line is the text form again.
    #[test]
    fn the_compact_form_carries_the_program() {
        use crate::compact::{Direction, compact, expand};
        let dec = Request::Decrypt {
            container: "disk".into(),
            id: vec![2],
            mechanism: DecryptMechanism::Oaep {
                hash: HashAlg::Sha256,
                label: b"label".to_vec(),
            },
            data: vec![9; 256],
        };
        for r in [
            dec,
            Request::DestroyKey {
                container: "web".into(),
                id: vec![1],
            },
        ] {
            let line = r.encode_for(Some("ssh-agent (pid 7)")).unwrap();
            let packed = compact(&line, Direction::ToHandset).unwrap();
            let text = expand(&packed, Direction::ToHandset).unwrap();
            assert_eq!(*text, *line);
            assert_eq!(
                Request::parse_for(&text).unwrap(),
                (r, Some("ssh-agent (pid 7)".to_owned()))
            );
        }
    }

    #[test]
    fn program_text_is_printable_and_bounded() {
        assert_eq!(program_text("ssh-agent", Some(42)), "ssh-agent (pid 42)");
        assert_eq!(program_text("a\"b\\c\u{7}\u{202e}é", None), "a?b?c???");
        assert_eq!(program_text("", Some(1)), "? (pid 1)");
        let long = program_text(&"x".repeat(200), Some(4_294_967_295));
        assert_eq!(long.len(), MAX_PROGRAM_LEN);
        assert!(long.ends_with(" (pid 4294967295)"));
        check_program(&long).unwrap();
    }

    #[test]
    fn rejects_bad_requests() {
        for bad in [
            "+CKRAND=0",
            "+CKRAND=1025",
            "+CKRAND=\"x\"",
            "+CKSIGN=\"c\",\"AQ==\",99,\"AA==\"",
            "+CKSIGN=\"c\",\"AQ==\",13,\"AA==\"",
            "+CKSIGN=\"c\",\"AQ==\",1,\"!!\"",
            "+CKLOGIN=\"\",\"AA==\"",
            "+CKFIND=\"c\",7",
            "+CKNOPE",
            "+CKLIST=1",
            "CKLIST",
            // The `: ` form is for information lines, not commands.
            "+CKTINFO: \"c\"",
            "+CKLIST: ",
        ] {
            assert!(Request::parse(bad).is_err(), "{bad}");
        }
        let long = "x".repeat(65);
        assert!(Request::TokenInfo { container: long }.encode().is_err());
        assert!(
            Request::TokenInfo {
                container: "a\"b".into()
            }
            .encode()
            .is_err()
        );
    }

    #[test]
    fn commands_roundtrip() {
        for c in [
            Command::Attention,
            Command::Echo(false),
            Command::Echo(true),
            Command::Version,
            Command::Handshake {
                kind: HandshakeKind::Pair,
                message: vec![1, 2, 3],
            },
            Command::Handshake {
                kind: HandshakeKind::Session,
                message: vec![],
            },
            Command::Frame {
                part: vec![9; 10],
                more: true,
            },
            Command::Frame {
                part: vec![9; 10],
                more: false,
            },
        ] {
            assert_eq!(Command::parse(&c.encode()).unwrap(), c);
        }
        assert_eq!(Command::parse("at").unwrap(), Command::Attention);
        assert!(Command::parse("ATD123").is_err());
        assert!(Command::parse("AT+CKHS=3,\"\"").is_err());
        assert!(Command::parse("AT+CKX=\"\",2").is_err());
        assert!(Command::parse("AT+CKX: \"AAAA\"").is_err());
        assert!(Command::parse("AT+CKVER: ?").is_err());
        assert!(Command::parse("").is_err());
        assert!(Command::parse("A").is_err());
        assert_eq!(Command::parse("HELLO"), Err(ParseError::UnknownCommand));
    }

    #[test]
    fn replies_decode() {
        let req = Request::Sign {
            container: "c".into(),
            id: vec![1],
            mechanism: SignMechanism::Pkcs1,
            data: vec![0; 4],
        };
        let text = Reply::Signature(vec![1, 2, 3]).encode().unwrap();
        assert_eq!(
            Reply::decode(&req, &text).unwrap(),
            InnerOutcome::Done(Reply::Signature(vec![1, 2, 3]))
        );
        assert_eq!(
            Reply::decode(&req, &ckr_line(CkRv::PIN_INCORRECT)).unwrap(),
            InnerOutcome::Failed(CkRv::PIN_INCORRECT)
        );
        assert_eq!(
            Reply::decode(&req, "ERROR").unwrap(),
            InnerOutcome::Rejected
        );
        assert!(Reply::decode(&req, "OK").is_err());
        assert!(Reply::decode(&req, "+CKR: 12").is_err());
        assert!(Reply::decode(&req, "").is_err());
        let list = Reply::Containers(vec![
            ContainerEntry {
                name: "a".into(),
                flags: 1,
            },
            ContainerEntry {
                name: "b".into(),
                flags: 17,
            },
        ]);
        assert_eq!(
            Reply::decode(&Request::ListContainers, &list.encode().unwrap()).unwrap(),
            InnerOutcome::Done(list)
        );
    }
}
