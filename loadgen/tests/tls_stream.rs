//! loadgen's TLS connection (`tls::TlsConn`) over real sockets against a rustls server that echoes
//! what it reads: one thread writes 1 MiB through the session while another reads the echo, as
//! the sender thread and a receive task share a connection. Socket buffers of 16 KiB make both
//! directions fill up many times, so the writer waits for a writable socket again and again: had it
//! kept the session locked while waiting, the reader could not drain the echo, the server would
//! block writing it and stop reading, and the run would hang (the timeout below is only a guard).

mod common;

use loadgen::tls::{TlsClient, TlsConn};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

const TOTAL: usize = 1 << 20;
const CHUNK: usize = 100_000;
const SOCKET_BUFFER: usize = 16 * 1024;

fn small_buffers(sock: socket2::SockRef<'_>) {
    sock.set_send_buffer_size(SOCKET_BUFFER).unwrap();
    sock.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
}

/// Byte `i` of the stream.
fn byte(i: usize) -> u8 {
    (i % 251) as u8
}

#[test]
fn a_writer_waiting_on_a_full_socket_never_stops_the_reader() {
    let pki = common::pki::Pki::new("stream");
    let config = pki.server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let sock = listener.accept().unwrap().0;
        small_buffers(socket2::SockRef::from(&sock));
        let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut tls = rustls::StreamOwned::new(session, sock);
        let mut buf = vec![0u8; 64 * 1024];
        let mut echoed = 0;
        // Until the client goes away (EOF, with or without close_notify).
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 || tls.write_all(&buf[..n]).is_err() {
                break;
            }
            echoed += n;
        }
        echoed
    });

    // The reader: the runtime that owns the socket, as a worker thread's receive task. It runs on
    // its own thread so that a hang (a thread stuck on the session's lock stops its runtime, timers
    // included) fails the test through `recv_timeout` instead of hanging it.
    let ca = pki.ca_file();
    let (done_tx, done) = std::sync::mpsc::channel();
    let (conn_tx, conn_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = TlsClient::new(std::path::Path::new(&ca), None).unwrap();
        let conn: Arc<TlsConn> = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_send_buffer_size(SOCKET_BUFFER as u32).unwrap();
            sock.set_recv_buffer_size(SOCKET_BUFFER as u32).unwrap();
            let sock = sock.connect(addr).await.unwrap();
            client.handshake(sock, addr.ip()).await.expect("handshake")
        });
        conn_tx.send(conn.clone()).unwrap();
        let got = rt.block_on(async {
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = 0;
            while got < TOTAL {
                let n = conn.read(&mut buf).await.expect("read");
                assert!(n > 0, "the server closed after {got} bytes");
                let want: Vec<u8> = (got..got + n).map(byte).collect();
                assert!(
                    buf[..n] == want[..],
                    "the echo differs within {got}..{}",
                    got + n
                );
                got += n;
            }
            got
        });
        drop(conn);
        let _ = done_tx.send(got);
    });
    let conn = conn_rx.recv().expect("the handshake");

    // The writer: its own thread and runtime, as loadgen's sender thread.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let data: Vec<u8> = (0..TOTAL).map(byte).collect();
        rt.block_on(async {
            for chunk in data.chunks(CHUNK) {
                conn.write_all(chunk).await.expect("write");
            }
        });
    });

    let got = done
        .recv_timeout(Duration::from_secs(60))
        .expect("the echo arrives whole: the reader finished, did not hang");
    assert_eq!(got, TOTAL);
    // The writer's last write is done once the server read it all; both sides then close.
    assert_eq!(server.join().unwrap(), TOTAL);
}
