//! A `TlsSession` against an in-memory rustls client, with a CA made by rcgen.

use std::io::{Read, Write};
use std::sync::Arc;

use bytes::Bytes;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

use super::*;

struct Pki {
    ca: CertificateDer<'static>,
    server: Arc<ServerConfig>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(vec![]).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".into()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("uring-chat-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::write(&cert, leaf.pem()).unwrap();
    std::fs::write(&key, leaf_key.serialize_pem()).unwrap();
    let server = load(&cert, &key).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    Pki {
        ca: ca.der().clone(),
        server,
    }
}

fn client(roots: &[CertificateDer<'static>]) -> ClientConnection {
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
    let name = ServerName::try_from("localhost").unwrap();
    ClientConnection::new(Arc::new(config), name).unwrap()
}

/// Moves bytes both ways until neither side has more to say; the server's failure, if any.
fn pump(
    client: &mut ClientConnection,
    server: &mut TlsSession,
    plain: &mut Vec<u8>,
) -> Option<TlsFailure> {
    for _ in 0..10 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        if !wire.is_empty() {
            if let Err(failure) = server.input(&wire, plain) {
                return Some(failure);
            }
        }
        let mut back = Vec::new();
        server.take_output(&mut back);
        if !back.is_empty() {
            client.read_tls(&mut &back[..]).unwrap();
            if client.process_new_packets().is_err() {
                return None;
            }
        }
        if wire.is_empty() && back.is_empty() {
            break;
        }
    }
    None
}

/// Hands `wire` to the client, all of it (read_tls takes 4 KiB at a time).
fn feed(client: &mut ClientConnection, mut wire: &[u8]) {
    while !wire.is_empty() {
        client.read_tls(&mut wire).unwrap();
        client.process_new_packets().unwrap();
    }
}

fn frame(text: &str) -> OutFrame {
    OutFrame::new(Bytes::copy_from_slice(text.as_bytes()))
}

#[test]
fn handshake_then_data_both_ways_in_one_record_per_batch() {
    let pki = pki();
    let mut server = TlsSession::new(pki.server.clone()).unwrap();
    let mut client = client(std::slice::from_ref(&pki.ca));
    let mut plain = Vec::new();
    assert!(pump(&mut client, &mut server, &mut plain).is_none());
    assert!(server.can_seal() && !client.is_handshaking());

    client
        .writer()
        .write_all(b"{\"type\":\"connect\"}\n")
        .unwrap();
    assert!(pump(&mut client, &mut server, &mut plain).is_none());
    assert_eq!(plain, b"{\"type\":\"connect\"}\n");

    let frames: Vec<OutFrame> = (0..1024).map(|i| frame(&format!("line {i}\n"))).collect();
    let expected: Vec<u8> = frames.iter().flat_map(|f| f.as_bytes().to_vec()).collect();
    let mut wire = Vec::new();
    server.seal(&frames, &mut wire);
    let records = wire.len() - expected.len();
    assert!(
        records <= 22,
        "one record (22 bytes of overhead), got {records} bytes over"
    );
    // Delivered in two pieces, as after a short write: the tail is the same ciphertext.
    let (head, tail) = wire.split_at(wire.len() / 3);
    feed(&mut client, head);
    feed(&mut client, tail);
    let mut got = vec![0; expected.len()];
    client.reader().read_exact(&mut got).unwrap();
    assert_eq!(got, expected);

    assert!(server.close());
    assert!(!server.close(), "close_notify goes once");
    let mut wire = Vec::new();
    server.take_output(&mut wire);
    client.read_tls(&mut &wire[..]).unwrap();
    assert!(client.process_new_packets().unwrap().peer_has_closed());
}

#[test]
fn plain_text_is_named_and_answered_with_an_alert() {
    let pki = pki();
    let mut server = TlsSession::new(pki.server).unwrap();
    let failure = server
        .input(
            b"{\"type\":\"connect\",\"content\":\"a\"}\n",
            &mut Vec::new(),
        )
        .unwrap_err();
    assert_eq!(failure.kind, TlsFailureKind::Plaintext);
    let mut alert = Vec::new();
    server.take_output(&mut alert);
    assert_eq!(alert[0], 0x15, "an alert record");
    assert!(!server.can_seal() && !server.close());
}

#[test]
fn a_client_without_the_ca_fails_with_its_alert() {
    let pki = pki();
    let mut server = TlsSession::new(pki.server).unwrap();
    let mut client = client(&[]);
    let mut plain = Vec::new();
    let failure = pump(&mut client, &mut server, &mut plain).or_else(|| {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        server.input(&wire, &mut plain).err()
    });
    assert_eq!(failure.map(|f| f.kind), Some(TlsFailureKind::PeerAlert));
}
