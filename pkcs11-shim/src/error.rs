//! The module's one error type. Every inner function returns
//! `Result<T, Error>`; [`Error::rv`] is where an error becomes the `CK_RV`
//! a PKCS#11 caller sees. What the daemon, the bus or the handset mean is
//! decided once, by [`phonecsp::Error::rv`]; only the failures this module
//! finds itself are its own. Messages never hold a PIN.

use cryptoki_sys::CK_RV;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A PKCS#11 failure decided here (bad handle, wrong state, ...).
    #[error("CK_RV 0x{0:08X}")]
    Rv(CK_RV),
    /// The output buffer is too small; `needed` bytes would do. The
    /// operation stays active.
    #[error("buffer too small: {needed} bytes needed")]
    BufferTooSmall { needed: usize },
    /// The daemon, the bus or the handset failed.
    #[error(transparent)]
    Client(#[from] phonecsp::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The `CK_RV` this error means.
    pub fn rv(&self) -> CK_RV {
        match self {
            Error::Rv(rv) => *rv,
            Error::BufferTooSmall { .. } => cryptoki_sys::CKR_BUFFER_TOO_SMALL,
            Error::Client(e) => CK_RV::from(e.rv().0),
        }
    }
}

impl From<phonecsp_protocol::CkRv> for Error {
    fn from(rv: phonecsp_protocol::CkRv) -> Error {
        Error::Rv(CK_RV::from(rv.0))
    }
}

/// Shorthand for `Err(Error::Rv(rv))`.
pub fn fail<T>(rv: CK_RV) -> Result<T> {
    Err(Error::Rv(rv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use phonecsp_protocol::CkRv;

    #[test]
    fn maps_in_one_place() {
        assert_eq!(Error::Rv(0x82).rv(), 0x82);
        assert_eq!(Error::BufferTooSmall { needed: 3 }.rv(), 0x150);
        assert_eq!(
            Error::Client(phonecsp::Error::from(CkRv::PIN_INCORRECT)).rv(),
            0xA0
        );
        assert_eq!(Error::from(CkRv::DEVICE_REMOVED).rv(), 0x32);
        // The client library decides what its own failures mean.
        let untrusted = phonecsp::Error::Untrusted {
            name: "org.phonecsp".into(),
            actual: 1,
            expected: 2,
        };
        assert_eq!(Error::Client(untrusted).rv(), 0x05);
    }
}
