//! Reader ports: the byte stream a reader task reads and writes, and how
//! it is opened (tokio-serial in production; in-memory pipes in tests and
//! in `replay --check`). Its own module so that the reader tasks
//! (`serial`, `library`) and the capture wrapper (`capture`) share these
//! types without importing each other.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_serial::{ClearBuffer, SerialPort, SerialPortBuilderExt};

use crate::config::{Parity, ReaderConfig};

/// A reader's byte stream.
pub trait PortIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PortIo for T {}

/// An open reader port.
pub type Port = Box<dyn PortIo>;

/// Opens reader ports.
pub trait OpenPort: Send + Sync + 'static {
    /// Opens the port of `cfg`, with stale input discarded.
    fn open(&self, cfg: &ReaderConfig) -> std::io::Result<Port>;

    /// For a `mode = "library"` reader: `None` to run the vendor library
    /// in a helper process (production), or a port whose lines stand for
    /// the library's answers (in-memory tests, `replay --check`).
    fn library_port(&self, _cfg: &ReaderConfig) -> Option<std::io::Result<Port>> {
        None
    }
}

/// Real serial ports (tokio-serial).
#[derive(Debug, Clone, Copy, Default)]
pub struct SerialPorts;

impl OpenPort for SerialPorts {
    fn open(&self, cfg: &ReaderConfig) -> std::io::Result<Port> {
        let parity = match cfg.parity {
            Parity::None => tokio_serial::Parity::None,
            Parity::Even => tokio_serial::Parity::Even,
            Parity::Odd => tokio_serial::Parity::Odd,
        };
        let port = tokio_serial::new(cfg.path.to_string_lossy(), cfg.baud)
            .parity(parity)
            .data_bits(tokio_serial::DataBits::Eight)
            .stop_bits(tokio_serial::StopBits::One)
            .flow_control(tokio_serial::FlowControl::None)
            .open_native_async()?;
        // Whatever the reader sent while nobody listened is stale.
        port.clear(ClearBuffer::Input)?;
        Ok(Box::new(port))
    }
}
