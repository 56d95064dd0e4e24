//! `--tls`: a rustls client session per connection, driven sans-IO over the worker's nonblocking
//! tokio socket.
//!
//! A connection is read by its receive task (on its worker thread) and written by the sender
//! thread (and by the receive task for pongs). With plain TCP the two directions are separate
//! halves; one TLS session is a single state machine, so both hold an `Arc<TlsConn>` and take its
//! lock. The lock is held only for CPU work and nonblocking syscalls (`read_tls` from a `try_read`,
//! `process_new_packets`, copying plaintext out, encrypting into rustls's buffer, `write_tls`
//! through `try_write`); waiting for the socket (`readable`, `writable`) always happens with the
//! lock released, so neither side ever waits on the other's I/O and no worker thread blocks on
//! one client.
//!
//! Every client does a full handshake (session resumption is off): issue 13's "10,000 TLS logins
//! at once" is 10,000 different users, not one user reconnecting.

use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// How every TLS client of a run connects: the trusted roots and the name to verify.
#[derive(Clone, Debug)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    /// `--tls-server-name`, or `None` to verify each target's own address.
    server_name: Option<ServerName<'static>>,
}

impl TlsClient {
    /// Trusts the PEM certificates in `ca_file`; verifies `server_name` if given, else the
    /// address dialled (an IP, checked against the certificate's IP addresses, as curl does).
    pub fn new(ca_file: &Path, server_name: Option<&str>) -> Result<TlsClient, String> {
        let what = ca_file.display();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("--tls-ca {what}: {e}"))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--tls-ca {what}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("--tls-ca {what}: no PEM certificate in it"));
        }
        let mut roots = RootCertStore::empty();
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("--tls-ca {what}: not a usable CA certificate: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS settings: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        let server_name = server_name
            .map(|n| {
                ServerName::try_from(n.to_string())
                    .map_err(|e| format!("--tls-server-name {n:?}: {e}"))
            })
            .transpose()?;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name,
        })
    }

    /// Runs the handshake over `sock` (connected to `ip`) and returns the session.
    pub async fn handshake(&self, sock: TcpStream, ip: IpAddr) -> io::Result<Arc<TlsConn>> {
        let name = self.server_name.clone().unwrap_or(ServerName::from(ip));
        let conn = ClientConnection::new(self.config.clone(), name).map_err(tls_error)?;
        let tls = Arc::new(TlsConn {
            sock,
            session: Mutex::new(conn),
        });
        loop {
            tls.write_all(&[]).await?;
            if !tls.lock().is_handshaking() {
                return Ok(tls);
            }
            match tls.pump_read(&mut [])? {
                Pump::Data(_) => {}
                Pump::Eof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed during the TLS handshake",
                    ))
                }
                Pump::Wait { .. } => tls.sock.readable().await?,
            }
        }
    }
}

/// One TLS connection: the socket and the session, shared by the reading and writing sides.
pub struct TlsConn {
    sock: TcpStream,
    session: Mutex<ClientConnection>,
}

/// What one nonblocking pass of `pump_read` got.
enum Pump {
    /// Plaintext bytes copied out (0 during the handshake, which asks for none).
    Data(usize),
    /// The peer closed (cleanly with close_notify, or the TCP stream ended).
    Eof,
    /// Nothing more without waiting; `flush` says the session also has bytes to send.
    Wait { flush: bool },
}

impl TlsConn {
    fn lock(&self) -> MutexGuard<'_, ClientConnection> {
        // A panic while holding the lock leaves rustls's state usable for nothing: carry on and
        // let the next call fail on it.
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket, for polling its state (slow clients' hang-up check).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// Reads plaintext into `out` (not empty); `Ok(0)` once the server closed the connection.
    /// Cancel-safe: plaintext is copied out only on the way to `Ok`.
    pub async fn read(&self, out: &mut [u8]) -> io::Result<usize> {
        debug_assert!(!out.is_empty());
        loop {
            match self.pump_read(out)? {
                Pump::Data(n) if n > 0 => return Ok(n),
                Pump::Data(_) => {}
                Pump::Eof => return Ok(0),
                Pump::Wait { flush: false } => self.sock.readable().await?,
                // Something to answer (a TLS 1.3 KeyUpdate) and the socket was full: wait for
                // either direction, so the answer goes out without stalling the reads.
                Pump::Wait { flush: true } => {
                    self.sock
                        .ready(Interest::READABLE | Interest::WRITABLE)
                        .await?;
                }
            }
        }
    }

    /// One nonblocking pass: plaintext already decrypted, else one `read_tls` from the socket and
    /// its processing; also sends what the session has queued, as far as the socket takes it.
    fn pump_read(&self, out: &mut [u8]) -> io::Result<Pump> {
        let mut s = self.lock();
        loop {
            if !out.is_empty() {
                match s.reader().read(out) {
                    Ok(0) => return Ok(Pump::Eof),
                    Ok(n) => return Ok(Pump::Data(n)),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Pump::Eof),
                    Err(e) => return Err(e),
                }
            }
            let flush = !flush_now(&mut s, &self.sock)?;
            match s.read_tls(&mut Nonblocking(&self.sock)) {
                // The TCP stream ended: the reader says whether it was clean, after the rest.
                Ok(0) if !out.is_empty() => {}
                Ok(0) => return Ok(Pump::Eof),
                Ok(_) => {
                    if let Err(e) = s.process_new_packets() {
                        // Send the alert that says why, if the socket takes it.
                        let _ = flush_now(&mut s, &self.sock);
                        return Err(tls_error(e));
                    }
                    if out.is_empty() {
                        return Ok(Pump::Data(0));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Pump::Wait { flush }),
                Err(e) => return Err(e),
            }
        }
    }

    /// Encrypts all of `buf` and writes it, with anything already queued, to the socket; returns
    /// once every byte is in the kernel, as a plain TCP `write_all` does. `&[]` flushes the queue.
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        loop {
            {
                let mut s = self.lock();
                loop {
                    if !flush_now(&mut s, &self.sock)? {
                        break;
                    }
                    if buf.is_empty() {
                        return Ok(());
                    }
                    // rustls takes at most its buffer limit (64 KiB) of records at once.
                    let n = s.writer().write(buf)?;
                    if n == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::WriteZero,
                            "TLS session takes no more data",
                        ));
                    }
                    buf = &buf[n..];
                }
            }
            self.sock.writable().await?;
        }
    }
}

/// Writes queued TLS records until none are left (`true`) or the socket is full (`false`).
fn flush_now(s: &mut ClientConnection, sock: &TcpStream) -> io::Result<bool> {
    while s.wants_write() {
        match s.write_tls(&mut Nonblocking(sock)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The socket as `Read`/`Write` for rustls: `try_read`/`try_write`, which clear tokio's readiness
/// on `WouldBlock` so the next `readable()`/`writable()` really waits.
struct Nonblocking<'a>(&'a TcpStream);

impl Read for Nonblocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Nonblocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A rustls error as an I/O error, with a hint where the usual cause is an option.
fn tls_error(e: rustls::Error) -> io::Error {
    use rustls::{CertificateError, Error};
    let hint = match &e {
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            " (the name checked is the target's address unless --tls-server-name gives one, e.g. \
             localhost)"
        }
        // A CA of another name, or of the same name but another key.
        Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        ) => " (is --tls-ca the CA that signed the server's certificate?)",
        _ => "",
    };
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}{hint}"))
}
