//! A test PKI made in the test (rcgen): a CA, a certificate for localhost and 127.0.0.1, and
//! rustls client settings that trust it. Shared by the TLS tests of every port.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};
use uring_chat::config::{Config, TlsFiles};

use super::{TestServer, READ_TIMEOUT};

/// A test CA and a server certificate for localhost and 127.0.0.1, as PEM files in a temp dir.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertificateDer<'static>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        (ca_params.distinguished_name).push(DnType::CommonName, "uring-chat test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, &ca_key);
        let leaf_key = KeyPair::generate().unwrap();
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut leaf_params = CertificateParams::new(names).unwrap();
        (leaf_params.distinguished_name).push(DnType::CommonName, "localhost");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
        let dir =
            std::env::temp_dir().join(format!("uring-chat-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
        std::fs::write(dir.join("server.key"), leaf_key.serialize_pem()).unwrap();
        Pki {
            dir,
            ca: ca.der().clone(),
        }
    }

    pub fn files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("server.pem"),
            key: self.dir.join("server.key"),
        }
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The real server with TLS on its chat port; its `connect` and `login` hand out clients
    /// that trust this CA.
    pub fn server(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let files = self.files();
        let mut server = TestServer::start_with(|config| {
            config.tls = Some(files);
            adjust(config);
        });
        server.tls = Some(client_config(std::slice::from_ref(&self.ca)));
        server
    }
}

impl TestServer {
    /// The real server with TLS on its chat port, on a PKI of its own that lives as long as it.
    pub fn start_tls_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        static SERVERS: AtomicUsize = AtomicUsize::new(0);
        let pki = Pki::new(&format!(
            "server{}",
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut server = pki.server(adjust);
        server.pki = Some(pki);
        server
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn client_config(roots: &[CertificateDer<'static>]) -> Arc<ClientConfig> {
    let mut store = RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    Arc::new(config)
}

/// A rustls client stream to `addr`, for the name localhost, trusting `ca`.
pub fn connect(
    addr: SocketAddr,
    ca: &CertificateDer<'static>,
) -> StreamOwned<ClientConnection, TcpStream> {
    connect_with(addr, client_config(std::slice::from_ref(ca)))
}

/// A rustls client stream to `addr`, for the name localhost, with `config`.
pub fn connect_with(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    StreamOwned::new(ClientConnection::new(config, name).unwrap(), tcp)
}

/// GET `path` over https (the HTTP port with TLS on): the whole answer, once the server closed.
pub fn https_get(addr: SocketAddr, ca: &CertificateDer<'static>, path: &str) -> String {
    https_get_with(addr, client_config(std::slice::from_ref(ca)), path)
}

/// [`https_get`] with client settings of its own.
pub fn https_get_with(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> String {
    let mut stream = connect_with(addr, config);
    write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    stream.flush().unwrap();
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .expect("an answer, then close_notify");
    answer
}

/// Reads until EOF (or a reset); everything that came. A signal's EINTR (the server shares the
/// test process) is retried.
pub fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}
