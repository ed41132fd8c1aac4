//! Reading and writing whole frames on a TCP stream.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::BytesMut;

use super::wire::{Envelope, WireError};

/// Receive buffer growth per read.
const READ_CHUNK_BYTES: usize = 256 * 1024;

/// Why a stream stopped yielding frames.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a frame.
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Reads frames from a socket, keeping a partial one until it is whole.
pub struct FrameReader {
    socket: TcpStream,
    buf: BytesMut,
}

impl FrameReader {
    /// Reads from `socket`.
    pub fn new(socket: TcpStream) -> FrameReader {
        FrameReader {
            socket,
            buf: BytesMut::new(),
        }
    }

    /// The next frame, or `None` at a clean end of stream.
    pub fn next(&mut self) -> Result<Option<Envelope>, StreamError> {
        loop {
            if let Some(total) = Envelope::frame_len(&self.buf)? {
                if self.buf.len() >= total {
                    let bytes = self.buf.split_to(total).freeze();
                    return match Envelope::decode(&bytes)? {
                        Some((envelope, _)) => Ok(Some(envelope)),
                        None => Err(WireError::Malformed("short").into()),
                    };
                }
            }
            let old = self.buf.len();
            self.buf.resize(old + READ_CHUNK_BYTES, 0);
            let n = match self.socket.read(&mut self.buf[old..]) {
                Ok(n) => n,
                Err(err) => {
                    self.buf.truncate(old);
                    return Err(err.into());
                }
            };
            self.buf.truncate(old + n);
            if n == 0 {
                return Ok(None);
            }
        }
    }
}

/// Writes `envelope` whole.
pub fn write_frame(mut socket: &TcpStream, envelope: &Envelope) -> std::io::Result<()> {
    socket.write_all(&envelope.to_bytes())
}
