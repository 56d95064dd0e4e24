//! TLS over the io_uring buffers: rustls' buffered `ServerConnection` driven sans-IO.
//!
//! The reader hands each read's ciphertext to [`TlsSession::input`] and frames the plaintext it
//! gets back as it frames a plain socket's bytes. Outbound, frames stay shared plaintext in every
//! queue; the writer seals one connection's whole batch into one record at write time
//! ([`TlsSession::seal`]), so a broadcast is still encoded once and only encrypted per connection.
//! Ciphertext, once made, is resent exactly as it is after a short write, never made again.
//!
//! [`stream`] drives a session over its socket for the HTTP port's one short exchange, until
//! that exchange is answered or becomes a connection like the others.

pub mod stream;

use std::io::{IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, ServerConfig, ServerConnection};

use crate::net::outbound::OutFrame;

/// The certificate every core's new TLS connections start from, replaced whole on a reload (SIGHUP).
/// Read once per accepted connection, never per message; a connection keeps the configuration it
/// started with, so a reload drops nobody.
#[derive(Clone, Debug)]
pub struct Certificate {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Certificate {
    /// Loads `cert` and `key` ([`load`]).
    pub fn load(cert: &Path, key: &Path) -> Result<Certificate, String> {
        Ok(Certificate {
            current: Arc::new(RwLock::new(load(cert, key)?)),
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
        })
    }

    /// The configuration a new connection starts from.
    pub fn current(&self) -> Arc<ServerConfig> {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.clone()
    }

    /// Reads the files again. On success new connections get the new pair; on an error (a file
    /// half written, a key that does not match) the old pair stays and the error says why.
    pub fn reload(&self) -> Result<(), String> {
        let config = load(&self.cert, &self.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }
}

/// The first byte of a TLS handshake record: anything else first is not a TLS client.
const HANDSHAKE_RECORD: u8 = 0x16;

/// Reads `--tls-cert` and `--tls-key` into a server configuration (TLS 1.2 and 1.3, ring). The
/// error names the file and what is wrong with it.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect())
        .map_err(|e| format!("cannot read --tls-cert {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "--tls-cert {} holds no certificate",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read --tls-key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            format!(
                "--tls-cert {} and --tls-key {} do not make a usable pair: {e}",
                cert.display(),
                key.display()
            )
        })?;
    // Resumption would rarely find its session (SO_REUSEPORT spreads clients over cores), and the
    // default cache is a mutex every core would share.
    config.send_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    Ok(Arc::new(config))
}

/// Why a TLS session failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsFailureKind {
    /// The peer's first byte was not a TLS handshake record: plain text on a TLS port.
    Plaintext,
    /// The peer sent a fatal alert (it did not trust the certificate, say).
    PeerAlert,
    /// Anything else the peer got wrong.
    Protocol,
}

/// A failed session; its alert, if any, is still to be sent ([`TlsSession::take_output`]).
#[derive(Debug)]
pub struct TlsFailure {
    pub kind: TlsFailureKind,
    pub error: rustls::Error,
}

/// What one [`TlsSession::input`] brought.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// TLS output is waiting (a handshake flight, a key update answer): wake the writer.
    pub wants_write: bool,
    /// The peer sent close_notify: nothing more will come.
    pub peer_closed: bool,
}

/// One connection's TLS state.
pub struct TlsSession {
    conn: ServerConnection,
    seen_input: bool,
    failed: bool,
    close_sent: bool,
}

impl TlsSession {
    pub fn new(config: Arc<ServerConfig>) -> Result<TlsSession, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // The outbound queue's --max-outbound-bytes is the bound, and output is drained at once.
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn,
            seen_input: false,
            failed: false,
            close_sent: false,
        })
    }

    /// Decrypts `cipher` (all of it), appending the plaintext to `plain`.
    pub fn input(
        &mut self,
        mut cipher: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Progress, TlsFailure> {
        let mut progress = Progress::default();
        if self.failed {
            return Ok(progress);
        }
        let plaintext_peer = !self.seen_input && cipher.first() != Some(&HANDSHAKE_RECORD);
        self.seen_input |= !cipher.is_empty();
        while !cipher.is_empty() {
            if let Err(error) = self.conn.read_tls(&mut cipher) {
                let error = rustls::Error::General(error.to_string());
                return Err(self.fail(TlsFailureKind::Protocol, error));
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(error) => {
                    let kind = match error {
                        _ if plaintext_peer => TlsFailureKind::Plaintext,
                        rustls::Error::AlertReceived(_) => TlsFailureKind::PeerAlert,
                        _ => TlsFailureKind::Protocol,
                    };
                    return Err(self.fail(kind, error));
                }
            };
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plain.len();
                plain.resize(start + ready, 0);
                if let Err(error) = self.conn.reader().read_exact(&mut plain[start..]) {
                    plain.truncate(start);
                    let error = rustls::Error::General(error.to_string());
                    return Err(self.fail(TlsFailureKind::Protocol, error));
                }
            }
            progress.peer_closed |= state.peer_has_closed();
        }
        progress.wants_write = self.conn.wants_write();
        Ok(progress)
    }

    fn fail(&mut self, kind: TlsFailureKind, error: rustls::Error) -> TlsFailure {
        self.failed = true;
        TlsFailure { kind, error }
    }

    /// True once application data can be sealed: the handshake is done and nothing failed.
    pub fn can_seal(&self) -> bool {
        !self.failed && !self.conn.is_handshaking()
    }

    /// TLS output is waiting to be sent.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Encrypts `frames` (one record per 16 KiB of plaintext) and appends the ciphertext, after
    /// any output rustls had waiting, to `out`. Only when [`TlsSession::can_seal`].
    pub fn seal(&mut self, frames: &[OutFrame], out: &mut Vec<u8>) {
        let slices: Vec<IoSlice<'_>> = frames.iter().map(|f| IoSlice::new(f.as_bytes())).collect();
        let total: usize = frames.iter().map(OutFrame::len).sum();
        // With no buffer limit rustls takes everything at once; the loop is for the letter of
        // `write_vectored`, which may take less.
        let mut taken = self.conn.writer().write_vectored(&slices).unwrap_or(0);
        if taken < total {
            for frame in frames {
                let bytes = frame.as_bytes();
                if taken >= bytes.len() {
                    taken -= bytes.len();
                    continue;
                }
                // Writing into rustls' own buffer does not fail with the limit off.
                let _ = self.conn.writer().write_all(&bytes[taken..]);
                taken = 0;
            }
        }
        self.take_output(out);
    }

    /// Appends whatever rustls has to send (handshake flights, alerts, close_notify) to `out`.
    pub fn take_output(&mut self, out: &mut Vec<u8>) {
        while self.conn.wants_write() {
            if self.conn.write_tls(out).is_err() {
                break;
            }
        }
    }

    /// Queues close_notify once, after everything sealed so far; true the first time.
    pub fn close(&mut self) -> bool {
        if self.close_sent || self.failed {
            return false;
        }
        self.close_sent = true;
        self.conn.send_close_notify();
        true
    }
}

#[cfg(test)]
mod tests;
