//! phonecspd: owns each handset link ([`link`], over a [`transport`]),
//! keeps its own key and the pinned handset keys ([`state`]), reads its
//! [`config`], and serves the `org.phonecsp.CryptoProvider1` D-Bus API
//! ([`service`]). [`run`] puts it together for the binary and the tests.

pub mod config;
pub mod link;
pub mod run;
pub mod service;
pub mod state;
pub mod transport;
