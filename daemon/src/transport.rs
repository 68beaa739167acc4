//! Opening a handset's transport: a serial line (tokio-serial; also a pty
//! or `/dev/rfcommN`) or a Bluetooth RFCOMM socket (bluer), dialled by
//! channel or found through the Serial Port Profile's SDP record. The
//! dialling itself is `phonecsp_host::bluetooth`, shared with the disk
//! keyscript; here BlueZ (over D-Bus) names the adapter's address.

use crate::config::Transport;
use crate::link::{BoxStream, Connector};
use std::sync::Arc;

pub use phonecsp_host::bluetooth::SPP_UUID;

fn io_err(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

pub fn connector(t: &Transport) -> Connector {
    let t = t.clone();
    Arc::new(move || {
        let t = t.clone();
        Box::pin(async move { open(&t).await })
    })
}

pub async fn open(t: &Transport) -> std::io::Result<BoxStream> {
    match t {
        Transport::Serial { path, baud } => Ok(Box::new(phonecsp_host::serial::open(path, *baud)?)),
        Transport::Bluetooth {
            address,
            channel,
            adapter,
        } => {
            let session = bluer::Session::new().await.map_err(io_err)?;
            let adapter = match adapter {
                Some(a) => session.adapter(a).map_err(io_err)?,
                None => session.default_adapter().await.map_err(io_err)?,
            };
            let local = adapter.address().await.map_err(io_err)?;
            let stream = phonecsp_host::bluetooth::connect(local, *address, *channel).await?;
            Ok(Box::new(stream))
        }
    }
}
