//! A minimal SDP client (Bluetooth Core spec, Vol 3 Part B): finds the
//! RFCOMM channel of a handset's service, such as the Serial Port Profile
//! (UUID 0x1101). It sends ServiceSearchAttributeRequests for the
//! ProtocolDescriptorList over an L2CAP connection to PSM 1, as `sdptool`
//! and BlueZ's libsdp do.
//!
//! Why not BlueZ's `Device.ConnectProfile`: it needs a client profile
//! registered for the UUID, and bluetoothd allows one registration per
//! UUID. Registration fails with "UUID already registered" whenever
//! anything else on the computer has registered SPP (as the handset
//! emulator in our VM test does). It also needs the device to be known to
//! bluetoothd. Asking the handset's SDP server directly needs neither.
//!
//! Use, where the configuration gives no channel:
//!
//! ```text
//! let channel = sdp::rfcomm_channel(local_addr, remote, SPP_UUID, timeout).await?;
//! // then connect a bluer::rfcomm::Socket to SocketAddr::new(remote, channel)
//! ```
//!
//! The `?` works in a function that returns `io::Result`: [`SdpError`]
//! converts to [`std::io::Error`] and keeps the socket's own OS error
//! (e.g. EHOSTDOWN).
//!
//! The remote is untrusted. Everything that reads its bytes is sans-I/O
//! and bounds-checked: [`parse_response`], [`parse_data_element`],
//! [`rfcomm_channels`] and the request/response loop [`Query`]. Bad input
//! gives an [`SdpError`], never a panic.

use bluer::{Address, AddressType, Uuid};
use std::time::Duration;

/// The L2CAP PSM of SDP.
pub const SDP_PSM: u16 = 0x0001;
/// The RFCOMM protocol UUID (0x0003).
pub const RFCOMM_UUID: Uuid = Uuid::from_u128(0x00000003_0000_1000_8000_00805f9b34fb);
/// The ProtocolDescriptorList attribute ID.
pub const PROTOCOL_DESCRIPTOR_LIST: u16 = 0x0004;
/// The longest continuation state the spec allows.
pub const MAX_CONTINUATION: usize = 16;
/// The MaximumAttributeByteCount we ask for, per response. The server
/// still splits by its L2CAP MTU.
pub const MAX_ATTRIBUTE_BYTE_COUNT: u16 = 0xFFFF;
/// A cap on the reassembled AttributeLists over all rounds (an SPP
/// record's ProtocolDescriptorList is about 20 bytes).
pub const MAX_TOTAL_BYTES: usize = 64 * 1024;
/// A cap on the number of request/response rounds.
pub const MAX_ROUNDS: usize = 128;
/// The deepest nesting of data element sequences/alternatives accepted.
/// The AttributeLists is at depth 1, so the protocol descriptors in its
/// records' ProtocolDescriptorLists are at depth 4 (5 in a DEA).
pub const MAX_DEPTH: usize = 16;

const SERVICE_SEARCH_ATTRIBUTE_REQUEST: u8 = 0x06;
const SERVICE_SEARCH_ATTRIBUTE_RESPONSE: u8 = 0x07;
const ERROR_RESPONSE: u8 = 0x01;
/// The Bluetooth Base UUID, 00000000-0000-1000-8000-00805F9B34FB.
const BASE_UUID: u128 = 0x00000000_0000_1000_8000_00805f9b34fb;
/// The L2CAP minimum MTU for BR/EDR, which an SDP PDU fits in.
const MIN_MTU: usize = 48;

/// Why the SDP query failed.
#[derive(Debug, thiserror::Error)]
pub enum SdpError {
    #[error("SDP: the PDU or data element ends early")]
    Truncated,
    #[error("SDP: the PDU's parameter length is {declared} but {actual} bytes follow")]
    BadLength { declared: u16, actual: usize },
    #[error("SDP: the response's transaction ID is {got:#06x}, expected {expected:#06x}")]
    WrongTransaction { expected: u16, got: u16 },
    #[error("SDP: unexpected PDU ID {0:#04x}")]
    UnexpectedPdu(u8),
    #[error("SDP: a continuation state of {0} bytes (at most 16 allowed)")]
    ContinuationTooLong(usize),
    #[error(
        "the handset's SDP server refused the query: error {0:#06x} ({text})",
        text = error_code_text(*.0)
    )]
    ServerError(u16),
    #[error("SDP: invalid data element descriptor {0:#04x}")]
    BadDescriptor(u8),
    #[error("SDP: data elements nested deeper than {max}", max = MAX_DEPTH)]
    TooDeep,
    #[error("SDP: {0}")]
    Malformed(&'static str),
    #[error("the handset's SDP response is longer than {max} bytes", max = MAX_TOTAL_BYTES)]
    TooLarge,
    #[error("the handset's SDP response takes more than {max} rounds", max = MAX_ROUNDS)]
    TooManyRounds,
    #[error("{}", no_record_text(*.0))]
    NoRecord(Uuid),
    #[error("the handset's SDP server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the handset closed the SDP connection")]
    Closed,
    #[error("SDP connection: {0}")]
    Io(#[from] std::io::Error),
}

fn error_code_text(code: u16) -> &'static str {
    match code {
        0x0001 => "invalid or unsupported SDP version",
        0x0002 => "invalid service record handle",
        0x0003 => "invalid request syntax",
        0x0004 => "invalid PDU size",
        0x0005 => "invalid continuation state",
        0x0006 => "insufficient resources",
        _ => "unknown error code",
    }
}

fn no_record_text(uuid: Uuid) -> String {
    if uuid16(uuid) == Some(0x1101) {
        "the handset offers no Serial Port Profile record".to_owned()
    } else {
        format!("the handset offers no service record for {uuid} with an RFCOMM channel")
    }
}

impl From<SdpError> for std::io::Error {
    /// The socket's own errors come back unchanged, so callers still see
    /// their kind and OS error code.
    fn from(e: SdpError) -> Self {
        use std::io::ErrorKind;
        let kind = match e {
            SdpError::Io(e) => return e,
            SdpError::Timeout(_) => ErrorKind::TimedOut,
            SdpError::NoRecord(_) => ErrorKind::NotFound,
            SdpError::Closed => ErrorKind::UnexpectedEof,
            _ => ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// The 16-bit short form of a UUID built on the Bluetooth Base UUID.
fn uuid16(uuid: Uuid) -> Option<u16> {
    let v = uuid.as_u128();
    if v & ((1u128 << 96) - 1) == BASE_UUID {
        u16::try_from(v >> 96).ok()
    } else {
        None
    }
}

/// The full UUID for a 16- or 32-bit short form.
fn uuid_from_short(short: u32) -> Uuid {
    Uuid::from_u128(BASE_UUID | (u128::from(short) << 96))
}

/// A ServiceSearchAttributeRequest (PDU 0x06) for the records of `uuid`
/// (as UUID16 if it is built on the Base UUID, otherwise as UUID128). It
/// asks for their ProtocolDescriptorList (0x0004). `continuation` is the
/// state from the previous response, empty at first. It is at most 16
/// bytes, which [`parse_response`] ensures; anything longer is cut.
pub fn service_search_attribute_request(tid: u16, uuid: Uuid, continuation: &[u8]) -> Vec<u8> {
    let continuation = continuation.get(..MAX_CONTINUATION).unwrap_or(continuation);
    let mut params = Vec::with_capacity(43);
    // ServiceSearchPattern: a DES of one UUID.
    match uuid16(uuid) {
        Some(short) => {
            params.extend_from_slice(&[0x35, 3, 0x19]);
            params.extend_from_slice(&short.to_be_bytes());
        }
        None => {
            params.extend_from_slice(&[0x35, 17, 0x1c]);
            params.extend_from_slice(uuid.as_bytes());
        }
    }
    params.extend_from_slice(&MAX_ATTRIBUTE_BYTE_COUNT.to_be_bytes());
    // AttributeIDList: a DES of one uint16 attribute ID.
    params.extend_from_slice(&[0x35, 3, 0x09]);
    params.extend_from_slice(&PROTOCOL_DESCRIPTOR_LIST.to_be_bytes());
    // ContinuationState: a length byte and that many bytes (at most 16).
    params.push(continuation.len() as u8);
    params.extend_from_slice(continuation);

    let mut pdu = Vec::with_capacity(5 + params.len());
    pdu.push(SERVICE_SEARCH_ATTRIBUTE_REQUEST);
    pdu.extend_from_slice(&tid.to_be_bytes());
    pdu.extend_from_slice(&(params.len() as u16).to_be_bytes());
    pdu.extend_from_slice(&params);
    pdu
}

/// A ServiceSearchAttributeResponse (PDU 0x07): one piece of the
/// AttributeLists, and the continuation state to send back for the next
/// piece (empty on the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    pub attribute_lists: &'a [u8],
    pub continuation: &'a [u8],
}

/// Reads a ServiceSearchAttributeResponse that answers transaction
/// `expected_tid`. An ErrorResponse (PDU 0x01) becomes
/// [`SdpError::ServerError`].
pub fn parse_response(pdu: &[u8], expected_tid: u16) -> Result<Response<'_>, SdpError> {
    let mut r = Reader::new(pdu);
    let [id] = r.array()?;
    let tid = u16::from_be_bytes(r.array()?);
    let declared = u16::from_be_bytes(r.array()?);
    if usize::from(declared) != r.rest.len() {
        return Err(SdpError::BadLength {
            declared,
            actual: r.rest.len(),
        });
    }
    if tid != expected_tid {
        return Err(SdpError::WrongTransaction {
            expected: expected_tid,
            got: tid,
        });
    }
    match id {
        // An ErrorCode; any ErrorInfo after it is ignored.
        ERROR_RESPONSE => Err(SdpError::ServerError(u16::from_be_bytes(r.array()?))),
        SERVICE_SEARCH_ATTRIBUTE_RESPONSE => {
            // AttributeListsByteCount is a u16, so it cannot exceed our
            // MaximumAttributeByteCount of 0xFFFF.
            let count = u16::from_be_bytes(r.array()?);
            let attribute_lists = r.take(usize::from(count))?;
            let [len] = r.array()?;
            let len = usize::from(len);
            if len > MAX_CONTINUATION {
                return Err(SdpError::ContinuationTooLong(len));
            }
            let continuation = r.take(len)?;
            if !r.rest.is_empty() {
                return Err(SdpError::Malformed(
                    "bytes after the response's continuation state",
                ));
            }
            Ok(Response {
                attribute_lists,
                continuation,
            })
        }
        other => Err(SdpError::UnexpectedPdu(other)),
    }
}

/// A bounds-checked cursor over untrusted bytes.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], SdpError> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(SdpError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SdpError> {
        self.take(N)?.try_into().map_err(|_| SdpError::Truncated)
    }

    /// Data whose length is in the next 1, 2 or 4 bytes (size index 5, 6
    /// or 7).
    fn variable(&mut self, size_index: u8) -> Result<&'a [u8], SdpError> {
        let len = match size_index {
            5 => usize::from(u8::from_be_bytes(self.array()?)),
            6 => usize::from(u16::from_be_bytes(self.array()?)),
            _ => usize::try_from(u32::from_be_bytes(self.array()?))
                .map_err(|_| SdpError::Truncated)?,
        };
        self.take(len)
    }
}

/// An SDP data element. Strings and URLs are left as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataElement<'a> {
    Nil,
    Unsigned(u128),
    Signed(i128),
    Uuid(Uuid),
    Text(&'a [u8]),
    Bool(bool),
    Sequence(Vec<DataElement<'a>>),
    Alternative(Vec<DataElement<'a>>),
    Url(&'a [u8]),
}

/// Parses exactly one data element filling `bytes`. Sequences and
/// alternatives may nest at most [`MAX_DEPTH`] deep.
pub fn parse_data_element(bytes: &[u8]) -> Result<DataElement<'_>, SdpError> {
    let mut r = Reader::new(bytes);
    let element = data_element(&mut r, 1)?;
    if !r.rest.is_empty() {
        return Err(SdpError::Malformed("bytes after the data element"));
    }
    Ok(element)
}

/// One data element at nesting `depth` (1 at the top).
fn data_element<'a>(r: &mut Reader<'a>, depth: usize) -> Result<DataElement<'a>, SdpError> {
    let [descriptor] = r.array()?;
    let (kind, size_index) = (descriptor >> 3, descriptor & 0x07);
    // Size indexes 0-4 give 1, 2, 4, 8 or 16 bytes of data; 5, 6 and 7 give
    // the data's length in the next 1, 2 or 4 bytes.
    let fixed = 1usize << size_index;
    Ok(match (kind, size_index) {
        (0, 0) => DataElement::Nil,
        (1, 0..=4) => DataElement::Unsigned(be_unsigned(r.take(fixed)?)),
        (2, 0..=4) => DataElement::Signed(be_signed(r.take(fixed)?)),
        (3, 1) => DataElement::Uuid(uuid_from_short(u16::from_be_bytes(r.array()?).into())),
        (3, 2) => DataElement::Uuid(uuid_from_short(u32::from_be_bytes(r.array()?))),
        (3, 4) => DataElement::Uuid(Uuid::from_bytes(r.array()?)),
        (4, 5..=7) => DataElement::Text(r.variable(size_index)?),
        (5, 0) => DataElement::Bool(u8::from_be_bytes(r.array()?) != 0),
        (6 | 7, 5..=7) => {
            if depth > MAX_DEPTH {
                return Err(SdpError::TooDeep);
            }
            let mut inner = Reader::new(r.variable(size_index)?);
            let mut items = Vec::new();
            while !inner.rest.is_empty() {
                items.push(data_element(&mut inner, depth + 1)?);
            }
            if kind == 6 {
                DataElement::Sequence(items)
            } else {
                DataElement::Alternative(items)
            }
        }
        (8, 5..=7) => DataElement::Url(r.variable(size_index)?),
        _ => return Err(SdpError::BadDescriptor(descriptor)),
    })
}

/// A big-endian unsigned integer of at most 16 bytes.
fn be_unsigned(bytes: &[u8]) -> u128 {
    bytes
        .iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

/// A big-endian two's-complement integer of 1 to 16 bytes.
fn be_signed(bytes: &[u8]) -> i128 {
    let shift = 128 - 8 * bytes.len().clamp(1, 16) as u32;
    ((be_unsigned(bytes) as i128) << shift) >> shift
}

/// The RFCOMM channels of the records in a (reassembled)
/// ServiceSearchAttributeResponse's AttributeLists, in record order. The
/// AttributeLists is a DES of per-record DESes of (uint16 attribute ID,
/// value). Each record contributes the channel (1..=30) of the protocol
/// descriptor in its ProtocolDescriptorList that starts with the RFCOMM
/// UUID, if it has one. A record that has none adds nothing.
pub fn rfcomm_channels(attribute_lists: &[u8]) -> Result<Vec<u8>, SdpError> {
    let DataElement::Sequence(records) = parse_data_element(attribute_lists)? else {
        return Err(SdpError::Malformed(
            "the attribute lists are not a sequence",
        ));
    };
    let mut channels = Vec::new();
    for record in &records {
        let DataElement::Sequence(attributes) = record else {
            return Err(SdpError::Malformed("an attribute list is not a sequence"));
        };
        let mut pairs = attributes.chunks_exact(2);
        let mut channel = None;
        for pair in pairs.by_ref() {
            let [id, value] = pair else { continue };
            let DataElement::Unsigned(id) = id else {
                return Err(SdpError::Malformed(
                    "an attribute ID is not an unsigned integer",
                ));
            };
            if *id == u128::from(PROTOCOL_DESCRIPTOR_LIST) && channel.is_none() {
                channel = rfcomm_in_protocol_list(value);
            }
        }
        if !pairs.remainder().is_empty() {
            return Err(SdpError::Malformed("an attribute ID without a value"));
        }
        channels.extend(channel);
    }
    Ok(channels)
}

/// A ProtocolDescriptorList is a DES of protocol descriptors, or a DEA
/// of such DESes (alternative stacks).
fn rfcomm_in_protocol_list(value: &DataElement) -> Option<u8> {
    let in_stack = |stack: &DataElement| match stack {
        DataElement::Sequence(descriptors) => descriptors.iter().find_map(rfcomm_in_descriptor),
        _ => None,
    };
    match value {
        DataElement::Alternative(stacks) => stacks.iter().find_map(in_stack),
        other => in_stack(other),
    }
}

/// A protocol descriptor is a DES of the protocol's UUID and its
/// parameters; RFCOMM's one parameter is the server channel (a uint8;
/// wider unsigned encodings are accepted if the value fits).
fn rfcomm_in_descriptor(descriptor: &DataElement) -> Option<u8> {
    let DataElement::Sequence(items) = descriptor else {
        return None;
    };
    let (Some(DataElement::Uuid(protocol)), Some(DataElement::Unsigned(channel))) =
        (items.first(), items.get(1))
    else {
        return None;
    };
    if *protocol != RFCOMM_UUID {
        return None;
    }
    u8::try_from(*channel).ok().filter(|c| (1..=30).contains(c))
}

/// The first RFCOMM channel in an AttributeLists, or
/// [`SdpError::NoRecord`] naming `uuid`.
pub fn first_channel(attribute_lists: &[u8], uuid: Uuid) -> Result<u8, SdpError> {
    rfcomm_channels(attribute_lists)?
        .first()
        .copied()
        .ok_or(SdpError::NoRecord(uuid))
}

/// The request/response loop, sans I/O: send [`Query::request`], feed the
/// answer to [`Query::response`], and repeat until it returns the whole
/// AttributeLists. It follows the continuation state, uses a fresh
/// transaction ID each round, and caps the total bytes and the rounds.
#[derive(Debug, Clone)]
pub struct Query {
    uuid: Uuid,
    tid: u16,
    continuation: Vec<u8>,
    collected: Vec<u8>,
    rounds: usize,
}

impl Query {
    pub fn new(uuid: Uuid) -> Self {
        Self::with_tid(uuid, 1)
    }

    /// Starts at transaction ID `tid` instead of 1.
    pub fn with_tid(uuid: Uuid, tid: u16) -> Self {
        Query {
            uuid,
            tid,
            continuation: Vec::new(),
            collected: Vec::new(),
            rounds: 0,
        }
    }

    /// The request PDU to send for this round.
    pub fn request(&self) -> Vec<u8> {
        service_search_attribute_request(self.tid, self.uuid, &self.continuation)
    }

    /// Takes the response to this round's request. Returns the complete
    /// AttributeLists, or `None` if [`Query::request`] must be sent again
    /// with the new continuation state.
    pub fn response(&mut self, pdu: &[u8]) -> Result<Option<Vec<u8>>, SdpError> {
        let response = parse_response(pdu, self.tid)?;
        if self.collected.len() + response.attribute_lists.len() > MAX_TOTAL_BYTES {
            return Err(SdpError::TooLarge);
        }
        self.collected.extend_from_slice(response.attribute_lists);
        self.rounds += 1;
        if response.continuation.is_empty() {
            return Ok(Some(std::mem::take(&mut self.collected)));
        }
        if self.rounds >= MAX_ROUNDS {
            return Err(SdpError::TooManyRounds);
        }
        self.continuation = response.continuation.to_vec();
        self.tid = self.tid.wrapping_add(1);
        Ok(None)
    }
}

/// Finds the RFCOMM channel of `remote`'s service `uuid` (e.g.
/// `bluetooth::SPP_UUID`) by asking its SDP server. `local` is the adapter
/// address to connect from; [`Address::any`] lets the kernel choose. The
/// L2CAP connect and each request/response round must finish within
/// `timeout`. Returns the channel of the first matching record that has
/// one, or [`SdpError::NoRecord`] ("the handset offers no Serial Port
/// Profile record").
pub async fn rfcomm_channel(
    local: Address,
    remote: Address,
    uuid: Uuid,
    timeout: Duration,
) -> Result<u8, SdpError> {
    let lists = attribute_lists(local, remote, uuid, timeout).await?;
    let channel = first_channel(&lists, uuid)?;
    log::debug!("SDP: {remote} offers {uuid} on RFCOMM channel {channel}");
    Ok(channel)
}

async fn attribute_lists(
    local: Address,
    remote: Address,
    uuid: Uuid,
    timeout: Duration,
) -> Result<Vec<u8>, SdpError> {
    use bluer::l2cap::{Socket, SocketAddr};
    let socket = Socket::new_seq_packet()?;
    socket.bind(SocketAddr::new(local, AddressType::BrEdr, 0))?;
    let connect = socket.connect(SocketAddr::new(remote, AddressType::BrEdr, SDP_PSM));
    let conn = within(timeout, connect).await??;
    // A buffer of the incoming MTU, so no PDU is cut short.
    let mut buf = vec![0; conn.recv_mtu()?.clamp(MIN_MTU, usize::from(u16::MAX))];
    let mut query = Query::new(uuid);
    loop {
        let request = query.request();
        let round = async {
            conn.send(&request).await?;
            conn.recv(&mut buf).await
        };
        let n = within(timeout, round).await??;
        if n == 0 {
            return Err(SdpError::Closed);
        }
        let pdu = buf.get(..n).ok_or(SdpError::Truncated)?;
        if let Some(lists) = query.response(pdu)? {
            return Ok(lists);
        }
    }
}

async fn within<T>(timeout: Duration, f: impl Future<Output = T>) -> Result<T, SdpError> {
    tokio::time::timeout(timeout, f)
        .await
        .map_err(|_| SdpError::Timeout(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SPP: Uuid = Uuid::from_u128(0x00001101_0000_1000_8000_00805f9b34fb);

    /// A BlueZ-style SPP record as the AttributeLists of a response: one
    /// record with ServiceClassIDList, ProtocolDescriptorList
    /// [L2CAP], [RFCOMM, 3] and ServiceName "Serial Port".
    #[rustfmt::skip]
    const SPP_LISTS: [u8; 45] = [
        0x35, 0x2b,                               // AttributeLists: DES, 43 bytes
          0x35, 0x29,                             // record: DES, 41 bytes
            0x09, 0x00, 0x01,                     // uint16 0x0001 ServiceClassIDList
            0x35, 0x03, 0x19, 0x11, 0x01,         //   DES { UUID16 0x1101 }
            0x09, 0x00, 0x04,                     // uint16 0x0004 ProtocolDescriptorList
            0x35, 0x0c,                           //   DES, 12 bytes
              0x35, 0x03, 0x19, 0x01, 0x00,       //     DES { UUID16 0x0100 L2CAP }
              0x35, 0x05, 0x19, 0x00, 0x03,       //     DES { UUID16 0x0003 RFCOMM,
                0x08, 0x03,                       //           uint8 3 }
            0x09, 0x01, 0x00,                     // uint16 0x0100 ServiceName
            0x25, 0x0b,                           //   text, 11 bytes
              b'S', b'e', b'r', b'i', b'a', b'l', b' ', b'P', b'o', b'r', b't',
    ];

    /// A ServiceSearchAttributeResponse PDU.
    fn response_pdu(tid: u16, lists: &[u8], continuation: &[u8]) -> Vec<u8> {
        let mut params = (lists.len() as u16).to_be_bytes().to_vec();
        params.extend_from_slice(lists);
        params.push(continuation.len() as u8);
        params.extend_from_slice(continuation);
        let mut pdu = vec![0x07];
        pdu.extend_from_slice(&tid.to_be_bytes());
        pdu.extend_from_slice(&(params.len() as u16).to_be_bytes());
        pdu.extend_from_slice(&params);
        pdu
    }

    /// A DES around `body` (with a 16-bit length, so any size fits).
    fn des(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x36];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// A DEA around `body`.
    fn dea(body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x3e];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn the_spp_request_is_as_the_spec_assembles_it() {
        #[rustfmt::skip]
        let expected = [
            0x06,                         // ServiceSearchAttributeRequest
            0x12, 0x34,                   // TransactionID
            0x00, 0x0d,                   // ParameterLength: 13
            0x35, 0x03, 0x19, 0x11, 0x01, // ServiceSearchPattern: DES { UUID16 0x1101 }
            0xff, 0xff,                   // MaximumAttributeByteCount
            0x35, 0x03, 0x09, 0x00, 0x04, // AttributeIDList: DES { uint16 0x0004 }
            0x00,                         // ContinuationState: none
        ];
        assert_eq!(service_search_attribute_request(0x1234, SPP, &[]), expected);
    }

    #[test]
    fn a_request_carries_the_continuation_state() {
        let pdu = service_search_attribute_request(7, SPP, &[0xaa, 0xbb, 0xcc]);
        assert_eq!(&pdu[3..5], &[0x00, 0x10]);
        assert_eq!(&pdu[pdu.len() - 4..], &[0x03, 0xaa, 0xbb, 0xcc]);
    }

    #[test]
    fn a_uuid_outside_the_base_is_sent_as_uuid128() {
        let uuid = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        let pdu = service_search_attribute_request(1, uuid, &[]);
        assert_eq!(&pdu[3..5], &[0x00, 0x1b]);
        assert_eq!(&pdu[5..8], &[0x35, 0x11, 0x1c]);
        assert_eq!(&pdu[8..24], uuid.as_bytes());
        assert_eq!(pdu.len(), 5 + 0x1b);
        // The longest request fits the L2CAP minimum MTU.
        let longest = service_search_attribute_request(1, uuid, &[0; 16]);
        assert!(longest.len() <= MIN_MTU, "{}", longest.len());
    }

    #[test]
    fn a_bluez_spp_record_gives_channel_3() {
        let pdu = response_pdu(0x0001, &SPP_LISTS, &[]);
        let response = parse_response(&pdu, 0x0001).unwrap();
        assert_eq!(response.attribute_lists, SPP_LISTS);
        assert!(response.continuation.is_empty());
        assert_eq!(rfcomm_channels(response.attribute_lists).unwrap(), vec![3]);

        let mut query = Query::new(SPP);
        assert_eq!(
            query.request(),
            service_search_attribute_request(1, SPP, &[])
        );
        let lists = query.response(&pdu).unwrap().unwrap();
        assert_eq!(first_channel(&lists, SPP).unwrap(), 3);
    }

    #[test]
    fn a_response_split_by_continuation_is_reassembled() {
        let (first, second) = SPP_LISTS.split_at(20);
        let state = [0x02, 0x00, 0x14];
        let mut query = Query::with_tid(SPP, 0xffff);
        assert_eq!(query.request()[1..3], [0xff, 0xff]);
        let got = query
            .response(&response_pdu(0xffff, first, &state))
            .unwrap();
        assert_eq!(got, None);
        // The next request uses a new transaction ID and sends the state back.
        assert_eq!(
            query.request(),
            service_search_attribute_request(0, SPP, &state)
        );
        // A late answer to the old transaction is refused.
        assert!(matches!(
            query.response(&response_pdu(0xffff, second, &[])),
            Err(SdpError::WrongTransaction {
                expected: 0,
                got: 0xffff
            })
        ));
        let lists = query
            .response(&response_pdu(0, second, &[]))
            .unwrap()
            .unwrap();
        assert_eq!(lists, SPP_LISTS);
        assert_eq!(first_channel(&lists, SPP).unwrap(), 3);
    }

    #[test]
    fn an_error_response_is_an_error() {
        let pdu = [0x01, 0x00, 0x05, 0x00, 0x02, 0x00, 0x03];
        let e = parse_response(&pdu, 5).unwrap_err();
        assert!(matches!(e, SdpError::ServerError(3)), "{e:?}");
        assert!(e.to_string().contains("invalid request syntax"), "{e}");
        // With ErrorInfo after the code.
        let pdu = [0x01, 0x00, 0x05, 0x00, 0x04, 0x00, 0x06, 0xaa, 0xbb];
        assert!(matches!(
            parse_response(&pdu, 5),
            Err(SdpError::ServerError(6))
        ));
        // Without a code.
        let pdu = [0x01, 0x00, 0x05, 0x00, 0x01, 0x00];
        assert!(matches!(parse_response(&pdu, 5), Err(SdpError::Truncated)));
        let mut query = Query::with_tid(SPP, 5);
        assert!(matches!(
            query.response(&[0x01, 0x00, 0x05, 0x00, 0x02, 0x00, 0x04]),
            Err(SdpError::ServerError(4))
        ));
    }

    #[test]
    fn every_truncation_of_a_response_is_an_error() {
        let pdu = response_pdu(9, &SPP_LISTS, &[1, 2, 3, 4]);
        parse_response(&pdu, 9).unwrap();
        for n in 0..pdu.len() {
            assert!(parse_response(&pdu[..n], 9).is_err(), "prefix of {n}");
        }
        for n in 0..SPP_LISTS.len() {
            assert!(rfcomm_channels(&SPP_LISTS[..n]).is_err(), "prefix of {n}");
        }
    }

    #[test]
    fn inconsistent_lengths_are_errors() {
        let mut pdu = response_pdu(9, &SPP_LISTS, &[]);
        pdu.push(0);
        // Parameter length one short of the bytes that follow.
        assert!(matches!(
            parse_response(&pdu, 9),
            Err(SdpError::BadLength {
                declared: 48,
                actual: 49
            })
        ));
        // Parameter length right, but a byte after the continuation state.
        pdu[4] = 49;
        assert!(matches!(
            parse_response(&pdu, 9),
            Err(SdpError::Malformed(_))
        ));
        // AttributeListsByteCount past the end.
        let mut pdu = response_pdu(9, &SPP_LISTS, &[]);
        pdu[6] += 1;
        assert!(matches!(parse_response(&pdu, 9), Err(SdpError::Truncated)));
    }

    #[test]
    fn a_continuation_state_over_16_bytes_is_refused() {
        let pdu = response_pdu(9, &SPP_LISTS[..10], &[0; 17]);
        assert!(matches!(
            parse_response(&pdu, 9),
            Err(SdpError::ContinuationTooLong(17))
        ));
        parse_response(&response_pdu(9, &SPP_LISTS[..10], &[0; 16]), 9).unwrap();
    }

    #[test]
    fn a_wrong_transaction_id_or_pdu_is_refused() {
        let pdu = response_pdu(9, &SPP_LISTS, &[]);
        assert!(matches!(
            parse_response(&pdu, 8),
            Err(SdpError::WrongTransaction {
                expected: 8,
                got: 9
            })
        ));
        let mut pdu = pdu;
        pdu[0] = 0x05; // a ServiceAttributeResponse
        assert!(matches!(
            parse_response(&pdu, 9),
            Err(SdpError::UnexpectedPdu(0x05))
        ));
    }

    #[test]
    fn nesting_is_limited() {
        let mut ok = vec![0x35, 0x00];
        for _ in 1..MAX_DEPTH {
            ok = des(&ok);
        }
        parse_data_element(&ok).unwrap();
        let too_deep = des(&ok);
        assert!(matches!(
            parse_data_element(&too_deep),
            Err(SdpError::TooDeep)
        ));
        // 100,000 levels (DESes with 32-bit lengths): refused without
        // recursing that deep.
        let levels = 100_000u32;
        let very_deep: Vec<u8> = (0..levels)
            .flat_map(|i| {
                let mut header = vec![0x37];
                header.extend_from_slice(&(5 * (levels - 1 - i)).to_be_bytes());
                header
            })
            .collect();
        assert!(matches!(
            parse_data_element(&very_deep),
            Err(SdpError::TooDeep)
        ));
        assert!(matches!(
            rfcomm_channels(&very_deep),
            Err(SdpError::TooDeep)
        ));
    }

    #[test]
    fn data_elements_of_every_kind_parse() {
        #[rustfmt::skip]
        let bytes = [
            0x35, 0x2f,
              0x00,                                     // nil
              0x08, 0xfe,                               // uint8
              0x11, 0xff, 0xfe,                         // int16 -2
              0x12, 0x80, 0x00, 0x00, 0x00,             // int32 min
              0x1a, 0x00, 0x00, 0x11, 0x01,             // UUID32 0x1101
              0x28, 0x01,                               // bool true
              0x3f, 0x00, 0x00, 0x00, 0x01, 0x00,       // DEA (32-bit length) { nil }
              0x46, 0x00, 0x03, b'u', b'r', b'l',       // URL (16-bit length)
              0x1c, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x10, 0x00,
              0x80, 0x00, 0x00, 0x80, 0x5f, 0x9b, 0x34, 0xfb, // UUID128 RFCOMM
              0x0b, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // uint64 42
        ];
        let DataElement::Sequence(items) = parse_data_element(&bytes[..bytes.len() - 9]).unwrap()
        else {
            panic!("not a sequence")
        };
        assert_eq!(
            items,
            [
                DataElement::Nil,
                DataElement::Unsigned(0xfe),
                DataElement::Signed(-2),
                DataElement::Signed(i32::MIN.into()),
                DataElement::Uuid(SPP),
                DataElement::Bool(true),
                DataElement::Alternative(vec![DataElement::Nil]),
                DataElement::Url(b"url"),
                DataElement::Uuid(RFCOMM_UUID),
            ]
        );
        // The sequence's length excludes the trailing uint64.
        assert!(matches!(
            parse_data_element(&bytes),
            Err(SdpError::Malformed(_))
        ));
        assert_eq!(
            parse_data_element(&bytes[bytes.len() - 9..]).unwrap(),
            DataElement::Unsigned(42)
        );
        // Reserved types and invalid size indexes.
        for bad in [0x01, 0x0d, 0x18, 0x1b, 0x20, 0x29, 0x30, 0x48, 0xf8] {
            assert!(
                matches!(
                    parse_data_element(&[bad, 0, 0, 0, 0, 0, 0, 0, 0]),
                    Err(SdpError::BadDescriptor(b)) if b == bad
                ),
                "{bad:#04x}"
            );
        }
    }

    /// A protocol descriptor: DES { UUID16, params }.
    fn descriptor(uuid16: u16, params: &[u8]) -> Vec<u8> {
        des(&[&[0x19][..], &uuid16.to_be_bytes(), params].concat())
    }

    /// A record with just a ProtocolDescriptorList.
    fn record(protocol_list: &[u8]) -> Vec<u8> {
        des(&[&[0x09, 0x00, 0x04][..], protocol_list].concat())
    }

    #[test]
    fn a_record_without_rfcomm_gives_no_channel() {
        // An A2DP-like stack: L2CAP (PSM 0x19), AVDTP version 1.3.
        let l2cap = descriptor(0x0100, &[0x09, 0x00, 0x19]);
        let avdtp = descriptor(0x0019, &[0x09, 0x01, 0x03]);
        let lists = des(&record(&des(&[l2cap, avdtp].concat())));
        assert_eq!(rfcomm_channels(&lists).unwrap(), Vec::<u8>::new());
        let e = first_channel(&lists, SPP).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the handset offers no Serial Port Profile record"
        );
        assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::NotFound);
        // No records at all: the usual answer when there is no SPP service.
        assert!(matches!(
            first_channel(&[0x35, 0x00], SPP),
            Err(SdpError::NoRecord(_))
        ));
        let other = Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert!(
            first_channel(&[0x35, 0x00], other)
                .unwrap_err()
                .to_string()
                .contains("01234567-89ab-cdef-0123-456789abcdef"),
        );
    }

    #[test]
    fn channels_come_from_every_record_in_order() {
        let l2cap = descriptor(0x0100, &[]);
        let rfcomm = |ch: u8| descriptor(0x0003, &[0x08, ch]);
        let lists = des(&[
            // Channels outside 1..=30 are skipped.
            record(&des(&[l2cap.clone(), rfcomm(0)].concat())),
            record(&des(&[l2cap.clone(), rfcomm(31)].concat())),
            record(&des(&[l2cap.clone(), rfcomm(12)].concat())),
            // A DEA of one stack without RFCOMM.
            record(&dea(&des(
                &[l2cap.clone(), descriptor(0x0019, &[])].concat()
            ))),
            // RFCOMM as a UUID128, its channel as a uint16.
            record(&des(&[
                l2cap.clone(),
                des(&[&[0x1c][..], RFCOMM_UUID.as_bytes(), &[0x09, 0x00, 0x1e]].concat()),
            ]
            .concat())),
            // Other attributes around it; a record with none at all.
            des(&[
                &[0x09, 0x00, 0x00, 0x0a, 0x00, 0x01, 0x00, 0x05][..],
                &[0x09, 0x00, 0x04],
                &des(&rfcomm(7)),
                &[0x09, 0x01, 0x00, 0x25, 0x02, b'h', b'i'],
            ]
            .concat()),
            des(&[]),
        ]
        .concat());
        assert_eq!(rfcomm_channels(&lists).unwrap(), vec![12, 30, 7]);
        assert_eq!(first_channel(&lists, SPP).unwrap(), 12);
    }

    #[test]
    fn a_dea_of_protocol_stacks_is_searched() {
        let stack =
            |ch: u8| des(&[descriptor(0x0100, &[]), descriptor(0x0003, &[0x08, ch])].concat());
        let alternatives = dea(&[stack(0), stack(9)].concat());
        assert_eq!(
            rfcomm_channels(&des(&record(&alternatives))).unwrap(),
            vec![9]
        );
    }

    #[test]
    fn a_malformed_attribute_list_is_an_error() {
        // Not a sequence at the top or for a record.
        assert!(rfcomm_channels(&[0x08, 0x03]).is_err());
        assert!(rfcomm_channels(&des(&[0x08, 0x03])).is_err());
        // An attribute ID without a value, or not an integer.
        assert!(rfcomm_channels(&des(&des(&[0x09, 0x00, 0x04]))).is_err());
        assert!(rfcomm_channels(&des(&des(&[0x19, 0x00, 0x04, 0x08, 0x03]))).is_err());
        // Bytes after the AttributeLists.
        let mut lists = SPP_LISTS.to_vec();
        lists.push(0x00);
        assert!(rfcomm_channels(&lists).is_err());
    }

    #[test]
    fn io_errors_keep_their_os_error() {
        let e = SdpError::from(std::io::Error::from_raw_os_error(nix::libc::EHOSTDOWN));
        assert_eq!(
            std::io::Error::from(e).raw_os_error(),
            Some(nix::libc::EHOSTDOWN)
        );
        let e = std::io::Error::from(SdpError::Timeout(Duration::from_secs(5)));
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("within 5s"), "{e}");
    }

    #[test]
    fn rounds_and_total_bytes_are_capped() {
        // A server that never ends its continuation.
        let mut query = Query::new(SPP);
        let mut rounds = 0;
        let e = loop {
            let tid = u16::from_be_bytes([query.request()[1], query.request()[2]]);
            match query.response(&response_pdu(tid, &[0x00], &[1])) {
                Ok(None) => rounds += 1,
                Ok(Some(_)) => panic!("finished"),
                Err(e) => break e,
            }
        };
        assert!(matches!(e, SdpError::TooManyRounds), "{e:?}");
        assert_eq!(rounds, MAX_ROUNDS - 1);
        // Nor may it send more than MAX_TOTAL_BYTES.
        let mut query = Query::new(SPP);
        let chunk = vec![0; 60_000];
        assert_eq!(
            query.response(&response_pdu(1, &chunk, &[1])).unwrap(),
            None
        );
        assert!(matches!(
            query.response(&response_pdu(2, &chunk, &[])),
            Err(SdpError::TooLarge)
        ));
    }

    proptest! {
        #[test]
        fn random_responses_never_panic(pdu in proptest::collection::vec(any::<u8>(), 0..300), tid: u16) {
            let _ = parse_response(&pdu, tid);
            let mut query = Query::with_tid(SPP, tid);
            let _ = query.response(&pdu);
        }

        #[test]
        fn random_attribute_lists_never_panic(lists in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = rfcomm_channels(&lists);
            let _ = parse_data_element(&lists);
        }

        /// Random bytes behind a plausible header and DES prefix, to get
        /// past the first checks more often.
        #[test]
        fn plausible_responses_never_panic(
            body in proptest::collection::vec(any::<u8>(), 0..200),
            cont in proptest::collection::vec(any::<u8>(), 0..=16),
            prefix in prop::sample::select(vec![0x35u8, 0x36, 0x37, 0x3d, 0x09, 0x19, 0x1c]),
        ) {
            let mut lists = vec![prefix];
            lists.extend_from_slice(&body);
            let pdu = response_pdu(3, &lists, &cont);
            let response = parse_response(&pdu, 3).unwrap();
            prop_assert_eq!(response.attribute_lists, &lists[..]);
            prop_assert_eq!(response.continuation, &cont[..]);
            let _ = rfcomm_channels(response.attribute_lists);
        }

        /// Any split of a valid response into continuation rounds gives
        /// back the same channel.
        #[test]
        fn any_split_reassembles(cuts in proptest::collection::vec(0usize..=45, 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut query = Query::new(SPP);
            let mut start = 0;
            let mut tid = 1u16;
            let mut result = None;
            for (i, end) in cuts.iter().copied().chain([SPP_LISTS.len()]).enumerate() {
                let last = i == cuts.len();
                let state: &[u8] = if last { &[] } else { &[0x5a, i as u8] };
                let piece = &SPP_LISTS[start..end];
                result = query.response(&response_pdu(tid, piece, state)).unwrap();
                prop_assert_eq!(result.is_some(), last);
                start = end;
                tid = tid.wrapping_add(1);
            }
            prop_assert_eq!(first_channel(&result.unwrap(), SPP).unwrap(), 3);
        }
    }
}
