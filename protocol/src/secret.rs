//! A secret code that never prints: the bytes of a pairing code (long or
//! short), wiped when dropped, whose `Debug` shows `..` in their place.
//! The codes themselves ([`crate::noise::PairingCode`],
//! [`crate::pake::ShortCode`]) wrap it and derive `Debug`, so that they
//! print as `PairingCode(..)` without each writing its own redaction.

use rand::rngs::OsRng;
use std::ops::Deref;
use zeroize::Zeroizing;

/// `N` secret bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretCode<const N: usize>(Zeroizing<[u8; N]>);

impl<const N: usize> SecretCode<N> {
    /// `N` bytes, each drawn by `draw` from the operating system's
    /// generator: a code is only as good as its randomness.
    pub fn generate(mut draw: impl FnMut(&mut OsRng) -> u8) -> SecretCode<N> {
        let mut b = Zeroizing::new([0u8; N]);
        for x in b.iter_mut() {
            *x = draw(&mut OsRng);
        }
        SecretCode(b)
    }
}

impl<const N: usize> From<Zeroizing<[u8; N]>> for SecretCode<N> {
    fn from(b: Zeroizing<[u8; N]>) -> SecretCode<N> {
        SecretCode(b)
    }
}

impl<const N: usize> Deref for SecretCode<N> {
    type Target = [u8; N];
    fn deref(&self) -> &[u8; N] {
        &self.0
    }
}

impl<const N: usize> std::fmt::Debug for SecretCode<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("..")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn a_code_prints_as_dots_and_draws_each_byte() {
        let digits = SecretCode::<8>::generate(|rng| b'0' + rng.gen_range(0..10u8));
        assert!(digits.iter().all(u8::is_ascii_digit));
        assert_eq!(format!("{digits:?}"), "..");
        let fixed = SecretCode::from(Zeroizing::new(*b"12345678"));
        assert_eq!(format!("{fixed:?} {fixed:#?}"), ".. ..");
    }

    #[test]
    fn the_codes_print_their_names_only() {
        let long = crate::noise::PairingCode::generate();
        let short = crate::pake::ShortCode::generate();
        let printed = format!("{long:?} {short:?}");
        assert_eq!(printed, "PairingCode(..) ShortCode(..)");
    }
}
