//! The zbus proxy of `org.phonecsp.CryptoProvider1`, one method per
//! element of `dbus/org.phonecsp.CryptoProvider1.xml` (the API's source of
//! truth), generated from the list in `calls.rs` that the clients share.
//! Most programs want [`crate::Client`] or [`crate::blocking::Client`]
//! instead, which add the daemon-identity check before a PIN is sent.
//!
//! Methods return [`crate::Result`]: an `org.phonecsp.Error.*` reply comes
//! back as [`crate::Error::Token`] with its CK_RV.

use std::collections::HashMap;

use crate::error::Result;
use crate::types::{
    EcKeyPairInfo, HandsetStatus, KeyPairInfo, LinkStatistics, MechanismParams, ObjectInfo,
    TokenDetails, TokenEntry,
};

/// The interface's methods and properties from the list in `calls.rs`,
/// its signals here.
macro_rules! proxy_trait {
    ($({ [$(#[$doc:meta])*] $via:ident $name:ident($($arg:ident: $ty:ty),*) [$wire:ty] [$ret:ty] [$($emits:literal)?] })*) => {
        #[zbus::proxy(
            interface = "org.phonecsp.CryptoProvider1",
            default_service = "org.phonecsp.CryptoProvider1",
            default_path = "/org/phonecsp/CryptoProvider1"
        )]
        pub trait CryptoProvider {
            $(
                $(#[$doc])*
                $(#[zbus(property(emits_changed_signal = $emits))])?
                #[allow(clippy::too_many_arguments)]
                fn $name(&self, $($arg: $ty),*) -> Result<$wire>;
            )*

            #[zbus(signal)]
            fn handset_connected(&self, handset: String) -> zbus::Result<()>;

            #[zbus(signal)]
            fn handset_disconnected(&self, handset: String) -> zbus::Result<()>;

            #[zbus(signal)]
            fn tokens_changed(&self, handset: String) -> zbus::Result<()>;

            #[zbus(signal)]
            fn approval_pending(
                &self,
                handset: String,
                token: String,
                operation: String,
                caller: String,
            ) -> zbus::Result<()>;
        }
    };
}
crate::calls::for_each_call!(proxy_trait);
