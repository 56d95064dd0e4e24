//! A short exchange over TLS on a socket whose task does its own reads and writes: the HTTP
//! port's one request per connection, before it is answered or becomes a WebSocket connection.
//!
//! A chat connection's TLS output goes through the core's writer, in batches; this exchange is too
//! short for that, so [`TlsStream`] writes what the session has to send itself, right after the
//! read that made it (a handshake flight), and seals its one answer in one write. Like every
//! socket here, its reads and writes never sit in a `select!` or a timeout: whoever bounds the
//! exchange shuts the socket down, and the pending read or write ends by itself.

use std::io;
use std::rc::Rc;

use bytes::Bytes;
use tokio_uring::net::TcpStream;

use crate::net::outbound::OutFrame;
use crate::net::tls::{TlsFailure, TlsSession};

/// Ciphertext read at a time. A TLS client's first flight fits; a larger record takes more reads.
const CIPHER_READ_BYTES: usize = 4096;

/// A TLS session driven over its socket by the task that owns both.
pub struct TlsStream {
    stream: Rc<TcpStream>,
    session: TlsSession,
    /// The last read's ciphertext; reused.
    cipher: Vec<u8>,
    /// The peer sent close_notify: the next read reports the end without waiting.
    peer_closed: bool,
}

impl TlsStream {
    pub fn new(stream: Rc<TcpStream>, session: TlsSession) -> TlsStream {
        TlsStream {
            stream,
            session,
            cipher: Vec::new(),
            peer_closed: false,
        }
    }

    /// Reads until the peer's plaintext arrives and appends it to `plain`, answering the
    /// handshake on the way. `Ok(0)` is the end: EOF, close_notify, a failed read, or a shutdown.
    /// A failure has sent its alert (if rustls made one) by the time it is returned.
    pub async fn read(&mut self, plain: &mut Vec<u8>) -> Result<usize, TlsFailure> {
        loop {
            if self.peer_closed {
                return Ok(0);
            }
            let mut cipher = std::mem::take(&mut self.cipher);
            cipher.clear();
            cipher.reserve_exact(CIPHER_READ_BYTES);
            let (result, cipher) = self.stream.read(cipher).await;
            let read = match result {
                Ok(0) | Err(_) => return Ok(0),
                Ok(read) => read,
            };
            let before = plain.len();
            let input = self.session.input(&cipher[..read], plain);
            self.cipher = cipher;
            let progress = match input {
                Ok(progress) => progress,
                Err(failure) => {
                    let _ = self.flush().await;
                    return Err(failure);
                }
            };
            self.peer_closed = progress.peer_closed;
            if progress.wants_write && self.flush().await.is_err() {
                return Ok(0);
            }
            if plain.len() > before {
                return Ok(plain.len() - before);
            }
        }
    }

    /// Seals `plain` and sends it, then close_notify, in one write. Only once the handshake is done
    /// (plaintext has been read); before that there is no key to seal with.
    pub async fn write_last(&mut self, plain: Vec<u8>) -> io::Result<()> {
        if !self.session.can_seal() {
            return Err(io::Error::other("the TLS handshake has not finished"));
        }
        let mut wire = Vec::with_capacity(plain.len() + 64);
        self.session
            .seal(&[OutFrame::new(Bytes::from(plain))], &mut wire);
        self.session.close();
        self.session.take_output(&mut wire);
        write_all(&self.stream, wire).await
    }

    /// True until the handshake has finished (and after a failure).
    pub fn is_handshaking(&self) -> bool {
        !self.session.can_seal()
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The socket and the live session, to carry on as a connection of the core (a WebSocket
    /// upgrade): what the peer sends next continues the same session.
    pub fn into_parts(self) -> (Rc<TcpStream>, TlsSession) {
        (self.stream, self.session)
    }

    /// Sends what the session has to say (a handshake flight, an alert).
    async fn flush(&mut self) -> io::Result<()> {
        let mut wire = Vec::new();
        self.session.take_output(&mut wire);
        if wire.is_empty() {
            return Ok(());
        }
        write_all(&self.stream, wire).await
    }
}

async fn write_all(stream: &TcpStream, wire: Vec<u8>) -> io::Result<()> {
    let (result, _) = stream.write_all(wire).await;
    result
}
