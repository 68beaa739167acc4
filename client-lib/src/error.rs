//! The one error type of the D-Bus API, shared by the daemon (which sends
//! it) and the clients (which receive it), in the manner of oo7. On the bus
//! it is `org.phonecsp.Error.<Name>`, `<Name>` being the CK_RV's name in
//! CamelCase; its message begins `CKR_NAME (0xXXXXXXXX)` so that values
//! without a name survive the trip too.

use phonecsp_protocol::CkRv;
use zbus::message::{Header, Message};
use zbus::names::ErrorName;

pub const ERROR_PREFIX: &str = "org.phonecsp.Error.";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operation failed with this CK_RV (from the daemon or the handset).
    #[error("{description}")]
    Token { rv: CkRv, description: String },
    /// The bus itself failed, or the daemon is not there.
    #[error("D-Bus: {0}")]
    Bus(zbus::Error),
    /// The bus name's owner is not the configured daemon user.
    #[error(
        "{name} is owned by uid {actual}, not by the configured daemon user (uid {expected}); refusing to send a PIN"
    )]
    Untrusted {
        name: String,
        actual: u32,
        expected: u32,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error carrying `rv`, with a message that names it.
    pub fn token(rv: CkRv, detail: impl std::fmt::Display) -> Error {
        Error::Token {
            rv,
            description: format!("{rv}: {detail}"),
        }
    }

    /// The CK_RV this error means to a PKCS#11 caller.
    pub fn rv(&self) -> CkRv {
        match self {
            Error::Token { rv, .. } => *rv,
            Error::Bus(_) => CkRv::DEVICE_ERROR,
            Error::Untrusted { .. } => CkRv::GENERAL_ERROR,
        }
    }
}

impl From<CkRv> for Error {
    fn from(rv: CkRv) -> Error {
        Error::Token {
            rv,
            description: rv.to_string(),
        }
    }
}

/// `CKR_PIN_INCORRECT` -> `PinIncorrect`.
pub fn error_suffix(rv: CkRv) -> String {
    let name = rv.name();
    if !CkRv::KNOWN.contains(&rv) {
        return "Failed".into();
    }
    name.trim_start_matches("CKR_")
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect()
}

fn rv_from_error(name: &str, description: Option<&str>) -> Option<CkRv> {
    let suffix = name.strip_prefix(ERROR_PREFIX)?;
    if let Some(rv) = CkRv::KNOWN
        .into_iter()
        .find(|rv| error_suffix(*rv) == suffix)
    {
        return Some(rv);
    }
    // `Failed`: the value is in the message, "CKR_... (0xXXXXXXXX)".
    let d = description?;
    let start = d.find("(0x")? + 3;
    let hex = d.get(start..start + 8)?;
    u32::from_str_radix(hex, 16).ok().map(CkRv)
}

impl From<zbus::Error> for Error {
    fn from(e: zbus::Error) -> Error {
        if let zbus::Error::MethodError(name, description, _) = &e
            && let Some(rv) = rv_from_error(name.as_str(), description.as_deref())
        {
            return Error::Token {
                rv,
                description: description.clone().unwrap_or_else(|| rv.to_string()),
            };
        }
        Error::Bus(e)
    }
}

impl From<zbus::fdo::Error> for Error {
    fn from(e: zbus::fdo::Error) -> Error {
        Error::Bus(e.into())
    }
}

impl zbus::DBusError for Error {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.description().unwrap_or(""),))
    }

    fn name(&self) -> ErrorName<'_> {
        let suffix = error_suffix(self.rv());
        // The suffix is made of ASCII letters only, so the name is always valid.
        ErrorName::try_from(format!("{ERROR_PREFIX}{suffix}"))
            .unwrap_or_else(|_| ErrorName::from_static_str_unchecked("org.phonecsp.Error.Failed"))
    }

    fn description(&self) -> Option<&str> {
        match self {
            Error::Token { description, .. } => Some(description),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(error_suffix(CkRv::PIN_INCORRECT), "PinIncorrect");
        assert_eq!(error_suffix(CkRv::DEVICE_REMOVED), "DeviceRemoved");
        assert_eq!(error_suffix(CkRv(0x8000_0001)), "Failed");
        for rv in CkRv::KNOWN {
            let name = format!("{ERROR_PREFIX}{}", error_suffix(rv));
            assert_eq!(rv_from_error(&name, None), Some(rv));
        }
        let vendor = Error::from(CkRv(0x8000_0001));
        let d = vendor.to_string();
        assert_eq!(
            rv_from_error("org.phonecsp.Error.Failed", Some(&d)),
            Some(CkRv(0x8000_0001))
        );
        assert_eq!(
            rv_from_error("org.freedesktop.DBus.Error.Failed", Some(&d)),
            None
        );
    }
}
