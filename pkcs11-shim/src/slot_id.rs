//! Slot IDs: derived from the token's names (handset, container), so the
//! same token has the same slot ID in every process and after restarts of
//! the daemon, the application and the phone, without a file to keep.
//! Applications keep slot IDs in configuration and in RFC 7512 URIs
//! (`slot-id=`), and may use one right after `C_Initialize`.

use cryptoki_sys::CK_SLOT_ID;

/// The slot ID of `(handset, token)`: FNV-1a (64-bit) of the two names
/// with a NUL between them, cut to 31 bits so that programs that keep it
/// in a signed 32-bit integer (Java's, for one) see it unchanged.
pub fn derive(handset: &str, token: &str) -> CK_SLOT_ID {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let bytes = handset.bytes().chain([0]).chain(token.bytes());
    let h = bytes.fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (h & 0x7fff_ffff) as CK_SLOT_ID
}

/// The slot ID for `(handset, token)` among those already `taken` by other
/// tokens: [`derive`]'s, or on the rare collision the next free one.
pub fn assign(handset: &str, token: &str, taken: &[CK_SLOT_ID]) -> CK_SLOT_ID {
    let mut id = derive(handset, token);
    while taken.contains(&id) {
        id = (id + 1) & 0x7fff_ffff;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_names_give_the_same_id() {
        // Fixed for good: a change here breaks every stored slot ID.
        assert_eq!(derive("phone", "ssh"), derive("phone", "ssh"));
        assert_eq!(derive("phone", "ssh"), 0x6530_7349);
        assert_ne!(derive("phone", "ssh"), derive("phones", "sh"));
        assert_ne!(derive("phone", "ssh"), derive("phone", "luks"));
        assert!(derive("a", "b") <= 0x7fff_ffff);
        let id = derive("phone", "ssh");
        assert_eq!(assign("phone", "ssh", &[]), id);
        assert_eq!(assign("phone", "ssh", &[id]), id + 1);
    }
}
