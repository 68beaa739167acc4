//! Property tests of the parsers and of the handset's state machine:
//!
//! * no decoder panics, whatever the input;
//! * the line splitter never yields a line over its limit;
//! * every valid typed value survives encode then parse unchanged;
//! * a [`Responder`] fed arbitrary bytes never panics and never writes a line
//!   over the limit it advertises;
//! * a real [`HostLink`] talking to a [`Responder`] keeps every line, both
//!   ways, within the advertised limit, whatever the request and reply sizes.

use phonecsp_protocol::at::{FinalResult, Line, LineSplitter, Params};
use phonecsp_protocol::ck::{Curve, DecryptMechanism, HashAlg, ObjectClass, SignMechanism};
use phonecsp_protocol::message::{
    ContainerEntry, DataObject, HandshakeKind, InnerOutcome, MAX_DATA_LEN, MAX_DATA_OBJECT_LEN,
    MAX_DER_LEN, MAX_ID_LEN, MAX_NONCE_LEN, MAX_OBJECT_ID_LEN, MAX_PIN_LEN, MAX_PRIVATE_KEY_LEN,
    MAX_RANDOM_LEN, MIN_NONCE_LEN, ObjectEntry, TokenInfo, VersionInfo,
};
use phonecsp_protocol::noise::PairingCode;
use phonecsp_protocol::testing::{TestHandset, one_request_of_every_kind};
use phonecsp_protocol::{CkRv, Command, HostLink, Reply, Request, Responder, StaticKeypair};
use proptest::prelude::*;
use zeroize::Zeroizing;

// ---------------------------------------------------------------------------
// Strategies

/// A container name: 1 to 16 characters (at most 64 bytes), none of them
/// `"`, `\` or a control character.
fn name() -> impl Strategy<Value = String> {
    "[^\"\\\\\\p{Cc}]{1,16}"
}

/// A label: like a name, but may be empty.
fn label() -> impl Strategy<Value = String> {
    "[^\"\\\\\\p{Cc}]{0,16}"
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..=max)
}

fn pin() -> impl Strategy<Value = Zeroizing<Vec<u8>>> {
    bytes(MAX_PIN_LEN).prop_map(Zeroizing::new)
}

fn hash() -> impl Strategy<Value = HashAlg> {
    prop::sample::select(HashAlg::ALL.to_vec())
}

fn class() -> impl Strategy<Value = ObjectClass> {
    prop::sample::select(vec![
        ObjectClass::Certificate,
        ObjectClass::PublicKey,
        ObjectClass::PrivateKey,
    ])
}

fn sign_mechanism() -> impl Strategy<Value = SignMechanism> {
    prop_oneof![
        Just(SignMechanism::Pkcs1),
        Just(SignMechanism::Ecdsa),
        Just(SignMechanism::Eddsa),
        (hash(), 0u32..=512).prop_map(|(hash, salt_len)| SignMechanism::Pss { hash, salt_len }),
    ]
}

fn decrypt_mechanism() -> impl Strategy<Value = DecryptMechanism> {
    prop_oneof![
        Just(DecryptMechanism::Pkcs1),
        (hash(), bytes(MAX_DATA_LEN))
            .prop_map(|(hash, label)| DecryptMechanism::Oaep { hash, label }),
    ]
}

/// Every valid [`Request`], within every limit of `Request::validate`.
fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::ListContainers),
        name().prop_map(|container| Request::TokenInfo { container }),
        (name(), pin()).prop_map(|(container, pin)| Request::Login { container, pin }),
        name().prop_map(|container| Request::Logout { container }),
        (name(), pin(), pin()).prop_map(|(container, old, new)| Request::ChangePin {
            container,
            old,
            new
        }),
        (name(), pin()).prop_map(|(container, puk)| Request::SoLogin { container, puk }),
        name().prop_map(|container| Request::SoLogout { container }),
        (name(), pin()).prop_map(|(container, pin)| Request::InitPin { container, pin }),
        (name(), pin(), pin()).prop_map(|(container, old, new)| Request::ChangePuk {
            container,
            old,
            new
        }),
        (
            name(),
            prop::option::of(class()),
            prop::option::of(bytes(MAX_ID_LEN)),
            prop::option::of(label())
        )
            .prop_map(|(container, class, id, label)| Request::FindObjects {
                container,
                class,
                id,
                label
            }),
        (name(), class(), bytes(MAX_ID_LEN)).prop_map(|(container, class, id)| {
            Request::GetAttributes {
                container,
                class,
                id,
            }
        }),
        (
            name(),
            bytes(MAX_ID_LEN),
            sign_mechanism(),
            bytes(MAX_DATA_LEN)
        )
            .prop_map(|(container, id, mechanism, data)| Request::Sign {
                container,
                id,
                mechanism,
                data
            }),
        (
            name(),
            bytes(MAX_ID_LEN),
            decrypt_mechanism(),
            bytes(MAX_DATA_LEN)
        )
            .prop_map(|(container, id, mechanism, data)| Request::Decrypt {
                container,
                id,
                mechanism,
                data
            }),
        (name(), any::<u32>(), bytes(MAX_ID_LEN), label()).prop_map(
            |(container, bits, id, label)| Request::GenerateKeyPair {
                container,
                bits,
                id,
                label
            }
        ),
        (
            name(),
            prop::sample::select(Curve::ALL.to_vec()),
            bytes(MAX_ID_LEN),
            label()
        )
            .prop_map(|(container, curve, id, label)| Request::GenerateEcKeyPair {
                container,
                curve,
                id,
                label
            }),
        (name(), bytes(MAX_ID_LEN), bytes(MAX_DATA_LEN)).prop_map(|(container, id, peer)| {
            Request::Derive {
                container,
                id,
                peer,
            }
        }),
        (1..=MAX_RANDOM_LEN).prop_map(|len| Request::GenerateRandom { len }),
        (
            name(),
            bytes(MAX_ID_LEN),
            label(),
            prop_oneof![bytes(64), bytes(MAX_DER_LEN)]
        )
            .prop_map(|(container, id, label, der)| Request::PutCertificate {
                container,
                id,
                label,
                der
            }),
        (name(), bytes(MAX_ID_LEN))
            .prop_map(|(container, id)| Request::DeleteCertificate { container, id }),
        (name(), bytes(MAX_ID_LEN))
            .prop_map(|(container, id)| Request::DestroyKey { container, id }),
        (
            name(),
            bytes(MAX_ID_LEN),
            label(),
            label(),
            bytes(MAX_OBJECT_ID_LEN),
            bytes(MAX_DATA_OBJECT_LEN)
        )
            .prop_map(|(container, id, label, application, oid, value)| {
                let object = DataObject {
                    id,
                    label,
                    application,
                    oid,
                    value,
                };
                Request::PutData { container, object }
            }),
        (name(), bytes(MAX_ID_LEN))
            .prop_map(|(container, id)| Request::DeleteData { container, id }),
        (
            name(),
            bytes(MAX_ID_LEN),
            hash(),
            bytes(MAX_DATA_LEN),
            hash(),
            bytes(600)
        )
            .prop_map(
                |(container, id, in_hash, data, out_hash, spki)| Request::Rewrap {
                    container,
                    id,
                    in_hash,
                    data,
                    out_hash,
                    spki
                }
            ),
        (
            name(),
            bytes(MAX_ID_LEN),
            label(),
            bytes(MAX_PRIVATE_KEY_LEN - 1)
        )
            .prop_map(|(container, id, label, mut key)| {
                key.push(0x30);
                Request::ImportKey {
                    container,
                    id,
                    label,
                    pkcs8: Zeroizing::new(key),
                }
            }),
        (
            name(),
            bytes(MAX_ID_LEN),
            bytes(MAX_NONCE_LEN - MIN_NONCE_LEN)
        )
            .prop_map(|(container, id, mut nonce)| {
                nonce.extend([7; MIN_NONCE_LEN]);
                Request::Attest {
                    container,
                    id,
                    nonce,
                }
            }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::Attention),
        any::<bool>().prop_map(Command::Echo),
        Just(Command::Version),
        (
            prop::sample::select(vec![HandshakeKind::Pair, HandshakeKind::Session]),
            bytes(200)
        )
            .prop_map(|(kind, message)| Command::Handshake { kind, message }),
        (bytes(300), any::<bool>()).prop_map(|(part, more)| Command::Frame { part, more }),
    ]
}

/// A successful reply of the right shape for `request`, with `size`
/// controlling how big its variable parts are.
fn reply_for(request: &Request, size: usize, seed: u8) -> Reply {
    let blob: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    match request {
        Request::ListContainers => Reply::Containers(
            (0..size % 7)
                .map(|i| ContainerEntry {
                    name: format!("c{i}"),
                    flags: i as u32 * 17,
                })
                .collect(),
        ),
        Request::TokenInfo { container } => Reply::TokenInfo(TokenInfo {
            name: container.clone(),
            flags: size as u32,
            retries_left: 3,
            min_pin: 4,
            max_pin: 64,
            serial: format!("{size:016x}"),
            so_retries_left: 10,
        }),
        Request::FindObjects { .. } => Reply::Objects(
            (0..size % 5)
                .map(|i| ObjectEntry {
                    class: ObjectClass::PrivateKey,
                    id: vec![i as u8; i],
                    label: format!("key {i}"),
                })
                .collect(),
        ),
        Request::GetAttributes { id, .. } => {
            Reply::Attributes(vec![(0x102, id.clone()), (0x011, blob)])
        }
        Request::Sign { .. } => Reply::Signature(blob),
        Request::Decrypt { .. } => Reply::Plaintext(Zeroizing::new(blob)),
        Request::Attest { .. } => Reply::Attestation(blob),
        Request::GenerateKeyPair { id, .. } | Request::ImportKey { id, .. } => Reply::KeyPair {
            id: id.clone(),
            modulus: blob,
            exponent: vec![1, 0, 1],
        },
        Request::GenerateEcKeyPair { id, .. } => Reply::EcKeyPair {
            id: id.clone(),
            point: blob,
        },
        Request::Derive { .. } => Reply::Derived(Zeroizing::new(blob)),
        Request::GenerateRandom { len } => Reply::Random(vec![seed; *len as usize]),
        Request::Rewrap { .. } => Reply::Rewrapped(blob),
        // Every other request is answered with a bare OK (the decoder
        // says which, and refuses any other reply to them).
        _ => Reply::Done,
    }
}

/// Text that looks enough like the protocol to get past the first checks.
fn protocolish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "AT",
        "at",
        "+CK",
        "+CKX",
        "+CKHS",
        "+CKVER",
        "+CKLIST",
        "+CKTINFO",
        "+CKLOGIN",
        "+CKSIGN",
        "+CKDEC",
        "+CKFIND",
        "+CKATTR",
        "+CKGEN",
        "+CKGENEC",
        "+CKDERIVE",
        "+CKRAND",
        "+CKPUTCERT",
        "+CKREWRAP",
        "+CKOBJ",
        "+CKR",
        "+CME ERROR",
        "OK",
        "ERROR",
        "=",
        "?",
        ": ",
        ",",
        "\"",
        "\"\"",
        "\"AAAA\"",
        "\"AQ==\"",
        "\"MDE=\"",
        "1",
        "2",
        "3",
        "9",
        "13",
        "592",
        "1024",
        "4096",
        "99999999999999999999999",
        "\\",
        "\r\n",
        "é",
        "€",
        " ",
        "00000005",
        "E0",
        "E1",
    ]);
    prop::collection::vec(token, 0..16).prop_map(|t| t.concat())
}

// ---------------------------------------------------------------------------
// Handlers

/// A handset that accepts pairing with `code` and answers every request
/// with a reply of the right shape and `size` (or, for seed 0xff, with
/// CKR_PIN_INCORRECT).
fn test_handset(code: Option<PairingCode>, size: usize, seed: u8) -> TestHandset {
    let mut h = TestHandset::new(StaticKeypair::from_private(&[9; 32])).answering(move |request| {
        if seed == 0xff {
            return Err(CkRv::PIN_INCORRECT);
        }
        Ok(reply_for(request, size, seed))
    });
    h.code = code;
    h
}

/// Every line (between CR/LF terminators) of `bytes`.
fn lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes.split(|&b| b == b'\r' || b == b'\n')
}

// ---------------------------------------------------------------------------
// Properties

proptest! {
    #[test]
    fn line_splitter_respects_its_limit(
        data in bytes(2048),
        max in 0usize..300,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        // Feed in arbitrary pieces; the result must not depend on the cuts.
        let mut at_once = LineSplitter::new(max);
        let expected = at_once.push(&data);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(data.len() + 1)).collect();
        cuts.sort_unstable();
        let mut pieces = LineSplitter::new(max);
        let mut got = Vec::new();
        let mut from = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            got.extend(pieces.push(&data[from..c]));
            from = c;
        }
        prop_assert_eq!(&got, &expected);
        for line in got {
            if let Line::Text(t) = line {
                prop_assert!(!t.is_empty());
                prop_assert!(t.len() <= max, "{} > {}", t.len(), max);
                prop_assert!(!t.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn decoders_never_panic(s in prop_oneof![any::<String>(), protocolish()]) {
        let _ = Command::parse(&s);
        let _ = Command::parse(&format!("AT{s}"));
        let _ = Request::parse(&s);
        let _ = Params::parse(&s);
        let _ = VersionInfo::parse(&s);
        let _ = FinalResult::parse(&s);
        let _ = PairingCode::parse(&s);
        for r in one_request_of_every_kind() {
            let _ = Reply::decode(&r, &s);
            let _ = Reply::decode(&r, &format!("{s}\r\nOK"));
        }
    }

    #[test]
    fn request_encode_then_parse_is_identity(r in request()) {
        let line = r.encode().unwrap();
        prop_assert!(!line.contains(['\r', '\n']));
        prop_assert_eq!(Request::parse(&line), Ok(r));
    }

    /// Section 7.19: a key operation with the program it is for reads
    /// back as itself and that program; any other request refuses one.
    #[test]
    fn request_with_a_program_encodes_then_parses_as_itself(
        r in request(),
        program in "[ -~&&[^\"\\\\]]{0,64}",
    ) {
        match r.encode_for(Some(&program)) {
            Ok(line) => {
                prop_assert!(r.takes_program());
                prop_assert_eq!(Request::parse_for(&line), Ok((r, Some(program))));
            }
            Err(_) => prop_assert!(!r.takes_program()),
        }
    }

    #[test]
    fn reply_encode_then_decode_is_identity(
        r in request(),
        size in 0usize..2000,
        seed in any::<u8>(),
    ) {
        let reply = reply_for(&r, size, seed);
        let text = reply.encode().unwrap();
        prop_assert_eq!(Reply::decode(&r, &text), Ok(InnerOutcome::Done(reply)));
    }

    #[test]
    fn command_encode_then_parse_is_identity(c in command()) {
        prop_assert_eq!(Command::parse(&c.encode()), Ok(c));
    }

    #[test]
    fn responder_survives_arbitrary_bytes(
        chunks in prop::collection::vec(
            prop_oneof![
                bytes(400),
                protocolish().prop_map(String::into_bytes),
                protocolish().prop_map(|s| format!("{s}\r").into_bytes()),
            ],
            1..12,
        ),
        max_line in prop::sample::select(vec![0usize, 256, 300, 1024]),
    ) {
        let mut h = test_handset(Some(PairingCode::generate()), 0, 0);
        let mut r = Responder::new(max_line, "proptest");
        let advertised = max_line.max(256);
        for chunk in chunks {
            let out = r.receive(&mut h, &chunk);
            for line in lines(&out) {
                prop_assert!(line.len() <= advertised, "{} > {}", line.len(), advertised);
            }
        }
        r.disconnected(&mut h);
        prop_assert_eq!(h.executed, 0);
    }
}

/// Drives a [`HostLink`] against a [`Responder`] over an in-memory pipe,
/// recording the bytes each side wrote. Returns the host's result.
fn run_link(
    max_line: usize,
    handler: &mut TestHandset,
    request: &Request,
    pair_first: bool,
) -> (Result<Reply, String>, Vec<u8>, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let host_key = StaticKeypair::from_private(&[5; 32]);
    if !pair_first {
        handler.hosts = vec![*host_key.public()];
    }
    let handset_public = *handler.identity.public();
    let code = handler.code.clone().unwrap();
    let (host_end, mut device_end) = tokio::io::duplex(1 << 16);
    let mut responder = Responder::new(max_line, "proptest");
    rt.block_on(async {
        let host = async {
            let (rd, wr) = tokio::io::split(host_end);
            let result = async {
                let mut link = HostLink::open(rd, wr).await.map_err(|e| e.to_string())?;
                if pair_first {
                    link.pair(&host_key, &code, "proptest host")
                        .await
                        .map_err(|e| e.to_string())?;
                } else {
                    link.connect(&host_key, &handset_public)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                link.call(request).await.map_err(|e| e.to_string())
            }
            .await;
            // Dropping the link closes the pipe and ends the device loop.
            result
        };
        let device = async {
            let mut from_host = Vec::new();
            let mut to_host = Vec::new();
            let mut buf = vec![0u8; 8192];
            loop {
                let n = device_end.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                from_host.extend_from_slice(&buf[..n]);
                let out = responder.receive(handler, &buf[..n]);
                to_host.extend_from_slice(&out);
                if device_end.write_all(&out).await.is_err() {
                    break;
                }
            }
            (from_host, to_host)
        };
        let (result, (from_host, to_host)) = tokio::join!(host, device);
        (result, from_host, to_host)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn host_and_responder_keep_every_line_within_the_limit(
        r in request(),
        max_line in 256usize..2048,
        size in 0usize..6000,
        seed in any::<u8>(),
        pair_first in any::<bool>(),
    ) {
        let mut h = test_handset(Some(PairingCode::generate()), size, seed);
        let (result, from_host, to_host) = run_link(max_line, &mut h, &r, pair_first);
        // The limit is the text lines'; a KK session goes on in binary
        // frames (docs/protocol.md section 6.7), which no text line holds.
        let text = |b: &[u8]| b[..b.iter().position(|&x| x == 0).unwrap_or(b.len())].to_vec();
        for line in lines(&text(&from_host)).chain(lines(&text(&to_host))) {
            prop_assert!(line.len() <= max_line, "{} > {}", line.len(), max_line);
        }
        prop_assert_eq!(h.executed, 1);
        if seed == 0xff {
            prop_assert!(result.is_err());
        } else {
            prop_assert_eq!(result, Ok(reply_for(&r, size, seed)));
        }
    }
}
