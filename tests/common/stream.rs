//! A test client's socket, plain or TLS, as a reading half and a writing half that may live on
//! different threads: several tests flood from one thread while they read on another.
//!
//! Over TLS both halves drive one rustls `ClientConnection` behind a lock, and each half has its
//! own handle to the socket, so a read blocked in the kernel never holds the lock. Whoever sends
//! takes a second lock first, and holds it until the bytes it sealed are written: records reach
//! the socket in the order they were sealed, whichever half sealed them.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

/// Splits `socket` into halves; over TLS (`tls` given) after a complete handshake, so that a
/// certificate the client does not trust fails here, with rustls' reason in the error.
pub fn split(
    socket: TcpStream,
    tls: Option<Arc<ClientConfig>>,
) -> io::Result<(ClientReader, ClientWriter)> {
    let Some(config) = tls else {
        return Ok((
            ClientReader::Tcp(socket.try_clone()?),
            ClientWriter::Tcp(socket),
        ));
    };
    let name = ServerName::try_from("localhost").expect("a valid name");
    let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut &socket)?;
    }
    let shared = Arc::new(Shared {
        conn: Mutex::new(conn),
        sending: Mutex::new(()),
    });
    let reader = TlsReader {
        shared: shared.clone(),
        socket: socket.try_clone()?,
        pending: Vec::new(),
        consumed: 0,
    };
    Ok((
        ClientReader::Tls(reader),
        ClientWriter::Tls(TlsWriter { shared, socket }),
    ))
}

/// What both halves of a TLS connection share.
struct Shared {
    conn: Mutex<ClientConnection>,
    /// Held by whoever writes records to the socket, from sealing to written; taken before `conn`.
    sending: Mutex<()>,
}

impl Shared {
    fn conn(&self) -> MutexGuard<'_, ClientConnection> {
        self.conn.lock().expect("no thread panicked inside rustls")
    }

    /// Seals what `prepare` hands rustls (plaintext, a close_notify) and writes every record that
    /// is waiting to `socket`, in order.
    fn send<R>(
        &self,
        socket: &TcpStream,
        prepare: impl FnOnce(&mut ClientConnection) -> io::Result<R>,
    ) -> io::Result<R> {
        let _order = self.sending.lock().expect("no thread panicked writing");
        let mut wire = Vec::new();
        let result = {
            let mut conn = self.conn();
            let result = prepare(&mut conn)?;
            while conn.wants_write() {
                conn.write_tls(&mut wire)?;
            }
            result
        };
        let mut socket = socket;
        socket.write_all(&wire)?;
        Ok(result)
    }
}

/// The reading half.
pub enum ClientReader {
    Tcp(TcpStream),
    Tls(TlsReader),
}

impl ClientReader {
    /// The socket underneath, for its options (a read timeout).
    pub fn socket(&self) -> &TcpStream {
        match self {
            ClientReader::Tcp(socket) => socket,
            ClientReader::Tls(tls) => &tls.socket,
        }
    }
}

impl Read for ClientReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ClientReader::Tcp(socket) => socket.read(buf),
            ClientReader::Tls(tls) => tls.read(buf),
        }
    }
}

/// The reading half of a TLS connection. Ok(0) means the server sent close_notify; a TCP close
/// without it is `UnexpectedEof`, and a bad record `InvalidData`.
pub struct TlsReader {
    shared: Arc<Shared>,
    socket: TcpStream,
    /// Ciphertext read from the socket, handed to rustls from `consumed` on as it has room.
    pending: Vec<u8>,
    consumed: usize,
}

/// How much ciphertext one read from the socket takes: a full record and its overhead.
const CIPHERTEXT_READ: usize = 16 * 1024 + 256;

impl Read for TlsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let reply_owed = {
                let mut conn = self.shared.conn();
                match conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
                // No plaintext waits: rustls has room for more ciphertext.
                if self.consumed == self.pending.len() {
                    drop(conn);
                    self.read_socket()?;
                    continue;
                }
                let mut input = &self.pending[self.consumed..];
                let taken = conn.read_tls(&mut input)?;
                assert!(taken > 0, "rustls took none of {} bytes", input.len());
                self.consumed += taken;
                conn.process_new_packets()
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                conn.wants_write()
            };
            // A post-handshake message that needs an answer (a key update).
            if reply_owed {
                self.shared.send(&self.socket, |_| Ok(()))?;
            }
        }
    }
}

impl TlsReader {
    /// Reads ciphertext from the socket into `pending`; at EOF tells rustls, which then answers
    /// Ok(0) after close_notify and `UnexpectedEof` without it. A timeout loses nothing.
    fn read_socket(&mut self) -> io::Result<()> {
        self.pending.resize(CIPHERTEXT_READ, 0);
        self.consumed = 0;
        let n = match self.socket.read(&mut self.pending) {
            Ok(n) => n,
            Err(e) => {
                self.pending.clear();
                return Err(e);
            }
        };
        self.pending.truncate(n);
        if n == 0 {
            self.shared.conn().read_tls(&mut &[][..])?;
        }
        Ok(())
    }
}

/// The writing half; clones write to the same connection.
pub enum ClientWriter {
    Tcp(TcpStream),
    Tls(TlsWriter),
}

/// The writing half of a TLS connection.
pub struct TlsWriter {
    shared: Arc<Shared>,
    socket: TcpStream,
}

impl ClientWriter {
    /// The socket underneath, for its options (SO_LINGER, a write timeout). Over TLS a write that
    /// times out may leave a record half sent, after which the connection is broken.
    pub fn socket(&self) -> &TcpStream {
        match self {
            ClientWriter::Tcp(socket) => socket,
            ClientWriter::Tls(tls) => &tls.socket,
        }
    }

    pub fn try_clone(&self) -> io::Result<ClientWriter> {
        Ok(match self {
            ClientWriter::Tcp(socket) => ClientWriter::Tcp(socket.try_clone()?),
            ClientWriter::Tls(tls) => ClientWriter::Tls(TlsWriter {
                shared: tls.shared.clone(),
                socket: tls.socket.try_clone()?,
            }),
        })
    }

    /// Ends the client's direction: a FIN, over TLS after close_notify (TLS 1.3's half-close).
    pub fn shutdown_write(&self) -> io::Result<()> {
        if let ClientWriter::Tls(tls) = self {
            tls.shared.send(&tls.socket, |conn| {
                conn.send_close_notify();
                Ok(())
            })?;
        }
        self.socket().shutdown(Shutdown::Write)
    }
}

impl Write for ClientWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            ClientWriter::Tcp(socket) => socket.write(buf),
            ClientWriter::Tls(tls) => tls
                .shared
                .send(&tls.socket, |conn| conn.writer().write(buf)),
        }
    }

    /// Every write is on the socket when it returns.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
