//! The SDP client's decoding of what a handset's SDP server sends back:
//! the input is a list of response PDUs (each prefixed by its length, one
//! byte or three) fed to a `Query` in turn, as `sdp::rfcomm_channel` feeds
//! the L2CAP packets it receives. Every PDU also goes through
//! `parse_response` alone, and every AttributeLists (each piece, and the
//! whole when the query completes) through `parse_data_element`,
//! `rfcomm_channels` and `first_channel`. Nothing may panic; a channel
//! found is 1 to 30; the query asks for each next round with the
//! continuation state it was given and never runs more than its rounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use phonecspd::sdp::{self, MAX_ROUNDS, Query, parse_data_element, parse_response};
use phonecspd::transport::SPP_UUID;

fn attribute_lists(bytes: &[u8]) {
    let _ = parse_data_element(bytes);
    if let Ok(channels) = sdp::rfcomm_channels(bytes) {
        assert!(channels.iter().all(|c| (1..=30).contains(c)));
        assert_eq!(
            sdp::first_channel(bytes, SPP_UUID).ok(),
            channels.first().copied()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&tid, mut rest)) = data.split_first() else {
        return;
    };
    let mut query = Query::with_tid(SPP_UUID, u16::from(tid) << 8 | u16::from(tid));
    let mut rounds = 0;
    while let Some((&n, tail)) = rest.split_first() {
        let (n, tail) = match (n, tail) {
            (255, [a, b, tail @ ..]) => (usize::from(u16::from_be_bytes([*a, *b])), tail),
            (n, tail) => (usize::from(n), tail),
        };
        let (pdu, tail) = tail.split_at(n.min(tail.len()));
        rest = tail;
        let request = query.request();
        assert_eq!(request[0], 0x06, "not a ServiceSearchAttributeRequest");
        let tid = u16::from_be_bytes([request[1], request[2]]);
        if let Ok(r) = parse_response(pdu, tid) {
            assert!(r.continuation.len() <= sdp::MAX_CONTINUATION);
            attribute_lists(r.attribute_lists);
        }
        rounds += 1;
        match query.response(pdu) {
            Ok(Some(lists)) => {
                attribute_lists(&lists);
                return;
            }
            Ok(None) => assert!(rounds < MAX_ROUNDS),
            Err(_) => return,
        }
    }
});
