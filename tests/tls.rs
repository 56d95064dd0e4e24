//! TLS on the chat port over real sockets: a rustls client chatting, `openssl s_client` and
//! Python's `ssl` as outside clients, and the ways a handshake fails (plain text, an untrusted
//! client, a slowloris), each closed and counted. The CA and certificate are made here (rcgen).

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use uring_chat::config::{Config, TlsFiles};
use uring_chat::server::Server;

use common::tls::{client_config, read_to_close, Pki};
use common::{chat, eventually, Client, TestServer};

/// `uring_chat_connections_closed_total{reason}` from a scrape.
fn closed(server: &TestServer, reason: &str) -> f64 {
    server.metric(&format!(
        "uring_chat_connections_closed_total{{reason=\"{reason}\"}}"
    ))
}

#[test]
fn tls_clients_log_in_and_chat() {
    let _gate = common::shared();
    let pki = Pki::new("chat");
    let server = pki.server(|_| {});
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    // A run of broadcasts, more than one record's worth (tests/protocol.rs, rooms.rs and
    // delivery.rs run whole over TLS too).
    let text = "x".repeat(900);
    for _ in 0..40 {
        alice.send(&chat(&text));
    }
    for _ in 0..40 {
        let frame = bob.next_reply();
        assert_eq!(frame["content"], text.as_str(), "{frame}");
    }
    // disconnect: the reply, then close_notify (expect_closed refuses a close without it).
    bob.send(r#"{"type":"disconnect"}"#);
    assert_eq!(bob.next_reply()["type"], "disconnect_response");
    assert!(bob.expect_closed().is_empty());
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
    eventually("the close is counted", || {
        closed(&server, "tls_plaintext") == 1.0
    });
}

#[test]
fn a_client_that_does_not_trust_the_certificate_fails_and_is_counted() {
    let _gate = common::shared();
    let pki = Pki::new("untrusted");
    let server = pki.server(|_| {});
    let socket = TcpStream::connect(server.addr).unwrap();
    let error = Client::over(socket, Some(client_config(&[])))
        .err()
        .unwrap();
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
    eventually("the failure is counted", || {
        closed(&server, "tls_failed") == 1.0
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
    server.login("patient");
    for stream in &mut stalled {
        assert!(read_to_close(stream).is_empty(), "closed with nothing sent");
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
    eventually("the timeouts are counted", || {
        closed(&server, "tls_handshake_timeout") == 50.0
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

/// Whether a new client trusting only `ca` completes a handshake and logs in.
fn trusted_by(server: &TestServer, ca: &CertificateDer<'static>, name: &str) -> bool {
    let socket = TcpStream::connect(server.addr).unwrap();
    let config = client_config(std::slice::from_ref(ca));
    Client::over(socket, Some(config)).is_ok_and(|mut client| client.try_login(name))
}

/// A reload (SIGHUP) while messages flow: connections open before it keep chatting on the old
/// certificate and lose nothing, new ones get the new one, and a bad file keeps the last good pair.
#[test]
fn a_certificate_reload_under_load_drops_nobody() {
    let _gate = common::shared();
    let old = Pki::new("reload-old");
    let new = Pki::new("reload-new");
    let server = old.server(|c| c.rate_limit = 0);
    const MESSAGES: usize = 300;
    let mut sender = server.login("sender");
    let receivers: Vec<_> = (0..8)
        .map(|i| server.login(&format!("r{i}")))
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
        trusted_by(&server, &new.ca, "after-reload"),
        "new connections get the new certificate"
    );
    assert!(
        !trusted_by(&server, &old.ca, "old-trust"),
        "and no longer the old one"
    );

    std::fs::write(old.dir.join("server.pem"), "not a certificate").unwrap();
    let error = server.reload_tls().unwrap_err();
    assert!(error.contains("server.pem"), "{error}");
    assert!(
        trusted_by(&server, &new.ca, "after-bad-file"),
        "a bad file keeps the last good pair"
    );

    let mut sender = sending.join().unwrap();
    for receiver in receivers {
        let mut client = receiver.join().expect("every receiver got every message");
        client.ping("still here");
    }
    sender.ping("sender too");
}

/// A client that vanishes (a reset) while the rest of a sealed record waits for room in its
/// socket: the failed write drops that rest with everything else owed to it, and the core, sending
/// inline where a retry would never yield, goes on serving. (A kept rest was once retried forever,
/// each retry failing the same way, and the core spun.)
#[test]
fn a_client_that_vanishes_mid_record_is_let_go() {
    let _gate = common::shared();
    let pki = Pki::new("vanish");
    let server = pki.server(|c| {
        c.rate_limit = 0;
        c.inline_send_min = 1;
        c.max_outbound_bytes = 16 * 1024 * 1024;
        c.metrics_port = Some(0);
    });
    let mut sender = server.login("sender");
    let victim = server.login_with_small_receive_buffer("victim");
    let text = "z".repeat(2000);
    eventually("a write to the victim comes up short", || {
        for _ in 0..100 {
            sender.send(&chat(&text));
        }
        server.metric("uring_chat_short_writes_total{tls=\"true\"}") > 0.0
    });
    let socket = victim.writer_clone();
    socket2::SockRef::from(socket.socket())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop((victim, socket));
    sender.send(&chat("after the reset"));
    eventually("nothing is owed to anyone", || {
        server.metric("uring_chat_outbound_queued_bytes") == 0.0
    });
    sender.ping("still served");
    for mut client in server.login_on_every_core("after", 2, 1) {
        client.ping("every core serves");
    }
}
