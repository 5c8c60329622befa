//! Minimal blocking KISS-over-TCP client for tests.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use skywave::wire::kiss::{encode_data, KissDecoder};

/// Minimal blocking KISS-over-TCP client for tests.
pub struct KissTcp {
    stream: TcpStream,
    decoder: KissDecoder,
}

impl KissTcp {
    /// Connects to a KISS TCP port.
    pub fn connect(addr: SocketAddr) -> io::Result<KissTcp> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Ok(KissTcp {
            stream,
            decoder: KissDecoder::new(),
        })
    }

    /// Sends one AX.25 frame as a KISS data frame on port 0.
    pub fn send(&mut self, ax25_frame: &[u8]) -> io::Result<()> {
        let mut out = Vec::new();
        encode_data(0, ax25_frame, &mut out);
        self.stream.write_all(&out)
    }

    /// Next data frame payload, or `None` once `timeout` has passed.
    pub fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            while let Some(r) = self.decoder.next_frame() {
                match r {
                    Ok(f) if f.command == 0 => return Ok(Some(f.payload)),
                    _ => continue,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(e),
            }
        }
    }
}
