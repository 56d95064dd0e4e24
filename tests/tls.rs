//! TLS on the chat port over real sockets: a rustls client chatting, `openssl s_client` and
//! Python's `ssl` as outside clients, and the ways a handshake fails (plain text, an untrusted
//! client, a slowloris), each closed and counted. The CA and certificate are made here (rcgen).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use serde_json::{json, Value};
use uring_chat::config::{Config, TlsFiles};
use uring_chat::server::Server;

use common::tls::{client_config, closed, Pki};
use common::{chat, content_of, eventually, READ_TIMEOUT};

/// A line client over rustls (blocking).
struct TlsClient {
    stream: BufReader<StreamOwned<ClientConnection, TcpStream>>,
    user_id: String,
}

impl TlsClient {
    fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsClient {
        let tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).unwrap();
        TlsClient {
            stream: BufReader::new(StreamOwned::new(conn, tcp)),
            user_id: String::new(),
        }
    }

    fn login(addr: SocketAddr, config: Arc<ClientConfig>, name: &str) -> TlsClient {
        let mut client = TlsClient::connect(addr, config);
        client.send(&json!({"type": "connect", "content": name}).to_string());
        let reply = client.next_reply();
        assert_eq!(
            reply["type"], "connect_response",
            "login of {name}: {reply}"
        );
        client.user_id = content_of(&reply)["userID"].as_str().unwrap().into();
        client
    }

    fn send(&mut self, line: &str) {
        let stream = self.stream.get_mut();
        stream.write_all(format!("{line}\n").as_bytes()).unwrap();
        stream.flush().unwrap();
    }

    fn next_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stream.read_line(&mut line).expect("read a frame");
        assert!(n > 0, "the server closed the connection");
        line
    }

    fn next_reply(&mut self) -> Value {
        loop {
            let frame: Value = serde_json::from_str(&self.next_line()).unwrap();
            if frame["type"] != "presence" {
                return frame;
            }
        }
    }
}

/// Reads until EOF (or a reset); everything that came.
fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut got = Vec::new();
    let mut chunk = [0; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
}

#[test]
fn tls_clients_log_in_and_chat() {
    let _gate = common::shared();
    let pki = Pki::new("chat");
    let server = pki.server(|_| {});
    let config = client_config(std::slice::from_ref(&pki.ca));
    let mut alice = TlsClient::login(server.addr, config.clone(), "alice");
    let mut bob = TlsClient::login(server.addr, config, "bob");

    // A broadcast, byte for byte as over plain TCP (protocol.rs's sender_id case).
    alice.send(r#"{"type":"chat","senderID":"someone-else","content":"it's me"}"#);
    let expected = format!(
        "{{\"type\":\"chat\",\"senderID\":\"{}\",\"recipientID\":\"\",\"content\":\"it's me\",\"username\":\"alice\"}}\n",
        alice.user_id
    );
    loop {
        let line = bob.next_line();
        if !line.starts_with("{\"type\":\"presence\"") {
            assert_eq!(line, expected);
            break;
        }
    }
    // Replies and a run of broadcasts, more than one record's worth.
    bob.send(r#"{"type":"ping","content":"t1"}"#);
    assert_eq!(bob.next_reply()["type"], "pong");
    let text = "x".repeat(900);
    for _ in 0..40 {
        alice.send(&chat(&text));
    }
    for _ in 0..40 {
        let frame = bob.next_reply();
        assert_eq!(frame["content"], text.as_str(), "{frame}");
    }
    // disconnect: the reply, then close_notify and EOF.
    bob.send(r#"{"type":"disconnect"}"#);
    assert_eq!(bob.next_reply()["type"], "disconnect_response");
    let mut rest = String::new();
    assert_eq!(
        bob.stream.read_to_string(&mut rest).unwrap(),
        0,
        "a clean TLS close"
    );
}

#[test]
fn plain_text_to_the_tls_port_gets_an_alert_and_a_close() {
    let _gate = common::shared();
    let pki = Pki::new("plain");
    let server = pki.server(|_| {});
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .write_all(b"{\"type\":\"connect\",\"content\":\"alice\"}\n")
        .unwrap();
    let got = read_to_close(&mut stream);
    assert_eq!(got.first(), Some(&0x15), "a TLS alert record: {got:?}");
    let http = server.http.unwrap();
    eventually("the close is counted", || {
        closed(http, &pki.ca, "tls_plaintext") == 1.0
    });
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_and_is_counted() {
    let _gate = common::shared();
    let pki = Pki::new("untrusted");
    let server = pki.server(|_| {});
    let mut client = TlsClient::connect(server.addr, client_config(&[]));
    let stream = client.stream.get_mut();
    let written = (stream.write_all(b"{\"type\":\"ping\"}\n")).and_then(|()| stream.flush());
    let error = written.unwrap_err();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    let http = server.http.unwrap();
    eventually("the failure is counted", || {
        closed(http, &pki.ca, "tls_failed") == 1.0
    });
}

#[test]
fn a_stalled_handshake_is_closed_at_the_login_timeout() {
    let _gate = common::shared();
    let pki = Pki::new("slowloris");
    let server = pki.server(|c| c.login_timeout = Duration::from_secs(1));
    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut stream = TcpStream::connect(server.addr).unwrap();
            stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            stream
        })
        .collect();
    // A real client still logs in meanwhile.
    let config = client_config(std::slice::from_ref(&pki.ca));
    TlsClient::login(server.addr, config, "patient");
    for stream in &mut stalled {
        assert!(read_to_close(stream).is_empty(), "closed with nothing sent");
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    let http = server.http.unwrap();
    eventually("the timeouts are counted", || {
        closed(http, &pki.ca, "tls_handshake_timeout") == 50.0
    });
}

/// Runs `command` with `input` on stdin; its stdout.
fn run_with_input(command: &mut Command, input: &str) -> String {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the tool is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn openssl_s_client_logs_in() {
    let _gate = common::shared();
    let pki = Pki::new("openssl");
    let server = pki.server(|_| {});
    for version in ["-tls1_2", "-tls1_3"] {
        let login = "{\"type\":\"connect\",\"content\":\"ossl\"}\n{\"type\":\"disconnect\"}\n";
        let out = run_with_input(
            Command::new("openssl")
                .args(["s_client", "-quiet", "-verify_return_error", version])
                .arg("-connect")
                .arg(server.addr.to_string())
                .args(["-servername", "localhost", "-CAfile"])
                .arg(pki.ca_file()),
            login,
        );
        assert!(out.contains("\"connect_response\""), "{version}: {out}");
        assert!(out.contains("\"disconnect_response\""), "{version}: {out}");
    }
}

#[test]
fn python_ssl_logs_in() {
    let _gate = common::shared();
    let pki = Pki::new("python");
    let server = pki.server(|_| {});
    let script = r#"
import json, socket, ssl, sys
port, cafile = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=cafile)
with socket.create_connection(("127.0.0.1", port)) as raw:
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b'{"type":"connect","content":"py"}\n')
        reader = tls.makefile("rb")
        while True:
            frame = json.loads(reader.readline())
            if frame["type"] != "presence":
                break
        print(tls.version(), frame["type"])
"#;
    let out = run_with_input(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(server.addr.port().to_string())
            .arg(pki.ca_file()),
        "",
    );
    assert_eq!(out.trim(), "TLSv1.3 connect_response");
}

#[test]
fn a_bad_certificate_file_stops_the_start() {
    let pki = Pki::new("bad");
    let garbage = pki.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let start = |cert: &Path, key: &Path| {
        let config = Config {
            host: "127.0.0.1".into(),
            port: 0,
            http_port: None,
            cores: 1,
            tls: Some(TlsFiles {
                cert: cert.into(),
                key: key.into(),
            }),
            ..Config::default()
        };
        Server::start(config).err().expect("the start fails")
    };
    let files = pki.files();
    let error = start(&garbage, &files.key);
    assert!(
        error.contains("garbage.pem") && error.contains("no certificate"),
        "{error}"
    );
    let error = start(&files.cert, &pki.dir.join("missing.key"));
    assert!(error.contains("missing.key"), "{error}");
    // The CA's certificate with the server's key: not a pair.
    let error = start(&pki.ca_file(), &files.key);
    assert!(error.contains("usable pair"), "{error}");

    let error = Config::from_args(["uring-chat", "--tls-cert", "x.pem"]).err();
    assert!(format!("{error:?}").contains("--tls-key"), "{error:?}");
}

/// A reader that falls behind makes the writer's sends short: the unsent rest of a record must go
/// out exactly as it was sealed, so every frame arrives intact and in order.
#[test]
fn short_writes_resend_the_sealed_rest() {
    let _gate = common::shared();
    let pki = Pki::new("short");
    let server = pki.server(|c| {
        c.rate_limit = 0;
        c.max_outbound_bytes = 16 * 1024 * 1024;
    });
    let config = client_config(std::slice::from_ref(&pki.ca));
    let mut alice = TlsClient::login(server.addr, config.clone(), "alice");
    let mut bob = TlsClient::login(server.addr, config, "bob");
    let count = 2000;
    for i in 0..count {
        alice.send(&chat(&format!("{i:05}{}", "y".repeat(2000))));
    }
    // Bob has not read: his socket is full and the server's sends were short.
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..count {
        let frame = bob.next_reply();
        let content = frame["content"].as_str().unwrap_or_default();
        assert!(
            content.starts_with(&format!("{i:05}")),
            "frame {i}: {frame}"
        );
    }
}

/// Whether a new client trusting only `ca` completes a handshake and logs in.
fn trusted_by(addr: SocketAddr, ca: &CertificateDer<'static>, name: &str) -> bool {
    let mut client = TlsClient::connect(addr, client_config(std::slice::from_ref(ca)));
    let login = json!({"type": "connect", "content": name}).to_string() + "\n";
    let stream = client.stream.get_mut();
    if (stream.write_all(login.as_bytes()))
        .and_then(|()| stream.flush())
        .is_err()
    {
        return false;
    }
    let mut line = String::new();
    client.stream.read_line(&mut line).is_ok_and(|n| n > 0)
}

/// A reload (SIGHUP) while messages flow: connections open before it keep chatting on the old
/// certificate and lose nothing, new ones get the new one, and a bad file keeps the last good pair.
#[test]
fn a_certificate_reload_under_load_drops_nobody() {
    let _gate = common::shared();
    let old = Pki::new("reload-old");
    let new = Pki::new("reload-new");
    let server = old.server(|c| c.rate_limit = 0);
    let config = client_config(std::slice::from_ref(&old.ca));
    const MESSAGES: usize = 300;
    let mut sender = TlsClient::login(server.addr, config.clone(), "sender");
    let receivers: Vec<_> = (0..8)
        .map(|i| TlsClient::login(server.addr, config.clone(), &format!("r{i}")))
        .map(|mut client| {
            std::thread::spawn(move || {
                for seq in 0..MESSAGES {
                    let frame = client.next_reply();
                    assert_eq!(frame["content"], seq.to_string(), "in order, nothing lost");
                }
                client
            })
        })
        .collect();
    let sending = std::thread::spawn(move || {
        for seq in 0..MESSAGES {
            sender.send(&chat(&seq.to_string()));
            std::thread::sleep(Duration::from_millis(3));
        }
        sender
    });

    std::thread::sleep(Duration::from_millis(300));
    for file in ["server.pem", "server.key"] {
        std::fs::copy(new.dir.join(file), old.dir.join(file)).unwrap();
    }
    server.reload_tls().expect("the new pair loads");
    assert!(
        trusted_by(server.addr, &new.ca, "after-reload"),
        "new connections get the new certificate"
    );
    assert!(
        !trusted_by(server.addr, &old.ca, "old-trust"),
        "and no longer the old one"
    );

    std::fs::write(old.dir.join("server.pem"), "not a certificate").unwrap();
    let error = server.reload_tls().unwrap_err();
    assert!(error.contains("server.pem"), "{error}");
    assert!(
        trusted_by(server.addr, &new.ca, "after-bad-file"),
        "a bad file keeps the last good pair"
    );

    let mut sender = sending.join().unwrap();
    for receiver in receivers {
        let mut client = receiver.join().expect("every receiver got every message");
        client.send(r#"{"type":"ping","content":"still here"}"#);
        assert_eq!(client.next_reply()["content"], "still here");
    }
    sender.send(r#"{"type":"ping","content":"sender too"}"#);
    assert_eq!(sender.next_reply()["content"], "sender too");
}
