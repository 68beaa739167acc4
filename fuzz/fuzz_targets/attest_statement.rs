//! Arbitrary bytes as an attestation statement (`protocol/src/attest.rs`):
//! as they are, and as a body signed with a fixed key, so that the field
//! parser is reached past the signature. Nothing may panic; a body that
//! checks must be the canonical body of the statement it parses to, and
//! signing that statement again must give the same bytes.
#![no_main]

use ed25519_dalek::{Signer, SigningKey};
use libfuzzer_sys::fuzz_target;
use phonecsp_protocol::attest::{Pinned, Statement, check};

fuzz_target!(|data: &[u8]| {
    let _ = Statement::verify(data);
    let key = SigningKey::from_bytes(&[0x42; 32]);
    let mut signed = data.to_vec();
    signed.extend(key.sign(data).to_bytes());
    if let Ok(s) = Statement::verify(&signed) {
        assert_eq!(s.body().expect("a parsed statement encodes"), data);
        if s.attestation_key == key.verifying_key().to_bytes() {
            assert_eq!(s.sign(&key).expect("signs"), signed);
            let pinned = Pinned {
                name: "phone",
                handset_key: s.handset_key,
                attestation_key: s.attestation_key,
            };
            assert_eq!(check(&signed, &pinned, Some(&s.nonce)), Ok(s));
        }
    }
});
