//! Opening a handset's serial line (a USB CDC ACM device, `/dev/rfcommN`,
//! or a pty): 8 data bits, no parity, one stop bit, no flow control.

use std::path::Path;
use tokio_serial::SerialPortBuilderExt;

pub use tokio_serial::SerialStream;

/// Opens `path` at `baud` for async I/O (needs a Tokio runtime).
pub fn open(path: &Path, baud: u32) -> std::io::Result<SerialStream> {
    let name = path
        .to_str()
        .ok_or_else(|| std::io::Error::other("serial path is not UTF-8"))?;
    tokio_serial::new(name, baud)
        .data_bits(tokio_serial::DataBits::Eight)
        .parity(tokio_serial::Parity::None)
        .stop_bits(tokio_serial::StopBits::One)
        .flow_control(tokio_serial::FlowControl::None)
        .open_native_async()
        .map_err(|e| std::io::Error::other(format!("{name}: {e}")))
}

/// Discards whatever a previous user of the line left unread.
pub fn discard_input(port: &SerialStream) {
    use tokio_serial::SerialPort;
    let _ = port.clear(tokio_serial::ClearBuffer::Input);
}
