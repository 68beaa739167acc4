//! The handset: the phone side of phonecsp. A [`store`] keeps containers,
//! their PIN-wrapped keys and the paired hosts; [`crypto`] does the RSA
//! private-key work; [`manager`] is the security manager that answers the
//! link's `+CK` requests; [`serve`] runs it on a serial line, pty, stdio or
//! an RFCOMM Serial Port Profile; [`tty`] asks the owner at a terminal;
//! [`audit`] keeps the owner's record of what was done with the keys;
//! [`pinentry`] asks for a PIN typed on the phone through a pinentry program;
//! [`notify`] asks for approvals through the desktop's notifications.

pub mod audit;
pub mod crypto;
pub mod ec;
pub mod manager;
pub mod notify;
pub mod pinentry;
pub mod serve;
pub mod store;
pub mod tty;
