//! A client connection, plain TCP or TLS (`--tls`), with the few operations loadgen uses: read,
//! write everything, split into the receive task's half and the writers' half.
//!
//! Inherent async methods rather than tokio's `AsyncRead`/`AsyncWrite`: a TLS write is only done
//! when its records are in the kernel (`tls::TlsConn::write_all`), which `poll_write` cannot say
//! without a separate flush every caller would have to remember.

use crate::tls::TlsConn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// A logged-in (or logging-in) connection.
pub enum Stream {
    Plain(TcpStream),
    Tls(Arc<TlsConn>),
}

/// The reading side, owned by the connection's receive task.
pub enum ReadHalf {
    Plain(OwnedReadHalf),
    Tls(Arc<TlsConn>),
}

/// The writing side, shared (behind `connect::Writer`'s lock) by the sender thread and the
/// receive task's pongs.
pub enum WriteHalf {
    Plain(OwnedWriteHalf),
    Tls(Arc<TlsConn>),
}

impl Stream {
    /// Reads what is there into `buf`; `Ok(0)` when the server closed. Cancel-safe.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(t) => t.read(buf).await,
        }
    }

    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(buf).await,
            Stream::Tls(t) => t.write_all(buf).await,
        }
    }

    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Plain(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Stream::Tls(t) => (ReadHalf::Tls(t.clone()), WriteHalf::Tls(t)),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Plain(s) => s.as_raw_fd(),
            Stream::Tls(t) => t.socket().as_raw_fd(),
        }
    }
}

impl ReadHalf {
    /// As `Stream::read`.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(s) => s.read(buf).await,
            ReadHalf::Tls(t) => t.read(buf).await,
        }
    }
}

impl WriteHalf {
    /// Writes all of `buf`; done when every byte is in the kernel.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.write_all(buf).await,
            WriteHalf::Tls(t) => t.write_all(buf).await,
        }
    }
}
