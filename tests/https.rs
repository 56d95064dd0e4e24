//! TLS on the HTTP port (https, wss) and the metrics port over real sockets: curl with the test
//! CA, a wss client chatting byte for byte with a TLS client of the chat port, frames sent in the
//! same records as the upgrade request, and the ways a handshake fails (plain HTTP, an untrusted
//! client, a slowloris), each closed and counted as on the chat port. The CA is made here (rcgen).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::{ClientConnection, StreamOwned};
use serde_json::json;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;

use common::tls::{connect, https_get, read_to_close, Pki};
use common::ws::{Retrying, WsClient};
use common::{content_of, eventually, READ_TIMEOUT};

/// `curl` over https to `port` on localhost (pinned to 127.0.0.1), trusting the test CA; the
/// body, or the error curl reported.
fn curl(pki: &Pki, port: u16, path: &str) -> Result<String, String> {
    curl_with(pki, port, path, &[])
}

/// [`curl`] with more options.
fn curl_with(pki: &Pki, port: u16, path: &str, extra: &[&str]) -> Result<String, String> {
    let output = Command::new("curl")
        .args(["--silent", "--show-error", "--fail", "--max-time", "30"])
        .args(extra)
        .arg("--cacert")
        .arg(pki.ca_file())
        .args(["--resolve", &format!("localhost:{port}:127.0.0.1")])
        .arg(format!("https://localhost:{port}{path}"))
        .output()
        .expect("curl is installed");
    if output.status.success() {
        Ok(String::from_utf8(output.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A wss client of `/ws` on the HTTP port `http`, logged in as `name`.
fn wss_login(http: SocketAddr, pki: &Pki, name: &str) -> WsClient<Retrying<TlsStream>> {
    let url = format!("wss://localhost:{}/ws", http.port());
    WsClient::over(Retrying(connect(http, &pki.ca)), &url).log_in(name)
}

/// A line client of the chat port over TLS, logged in as `name`; and its userID.
fn tls_login(addr: SocketAddr, pki: &Pki, name: &str) -> (BufReader<TlsStream>, String) {
    let mut client = BufReader::new(connect(addr, &pki.ca));
    send_line(
        &mut client,
        &json!({"type": "connect", "content": name}).to_string(),
    );
    let reply: serde_json::Value = serde_json::from_str(&next_line(&mut client)).unwrap();
    assert_eq!(reply["type"], "connect_response", "{reply}");
    let id = content_of(&reply)["userID"].as_str().unwrap().to_string();
    (client, id)
}

fn send_line(client: &mut BufReader<TlsStream>, line: &str) {
    let stream = client.get_mut();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    stream.flush().unwrap();
}

/// The next line that is not a presence announcement, newline included.
fn next_line(client: &mut BufReader<TlsStream>) -> String {
    loop {
        let mut line = String::new();
        assert!(client.read_line(&mut line).expect("a line") > 0, "closed");
        if !line.starts_with(r#"{"type":"presence""#) {
            return line;
        }
    }
}

#[test]
fn curl_gets_health_metrics_and_the_page_over_https() {
    let _gate = common::shared();
    let pki = Pki::new("https-curl");
    let server = pki.server(|_| {});
    let port = server.http.unwrap().port();
    assert_eq!(curl(&pki, port, "/healthz").as_deref(), Ok("ok\n"));
    for version in [
        ["--tlsv1.2", "--tls-max", "1.2"],
        ["--tlsv1.3", "--tls-max", "1.3"],
    ] {
        let answer = curl_with(&pki, port, "/readyz", &version);
        assert_eq!(answer.as_deref(), Ok("ready\n"), "{version:?}");
    }
    let metrics = curl(&pki, port, "/metrics").unwrap();
    assert!(
        metrics.contains("\nuring_chat_connections_accepted_total "),
        "{metrics}"
    );
    let page = curl(&pki, port, "/").unwrap();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    // Exactly what plain HTTP would send, head included, and a clean close (close_notify).
    let answer = https_get(server.http.unwrap(), &pki.ca, "/healthz");
    assert_eq!(
        answer,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\nCache-Control: no-store\r\n\r\nok\n"
    );
}

#[test]
fn a_wss_client_and_a_tls_chat_client_exchange_broadcasts_exactly() {
    let _gate = common::shared();
    let pki = Pki::new("https-wss");
    let server = pki.server(|c| c.rate_limit = 0);
    let http = server.http.unwrap();
    let mut web = wss_login(http, &pki, "web");
    let (mut line, line_id) = tls_login(server.addr, &pki, "line");

    web.send(r#"{"type":"chat","content":"from wss, \"quoted\""}"#);
    assert_eq!(
        next_line(&mut line),
        format!(
            "{{\"type\":\"chat\",\"senderID\":\"{}\",\"recipientID\":\"\",\"content\":\"from wss, \\\"quoted\\\"\",\"username\":\"web\"}}\n",
            web.user_id
        )
    );
    send_line(&mut line, r#"{"type":"chat","content":"from tls"}"#);
    let text = loop {
        let text = web.next_text();
        if !text.starts_with(r#"{"type":"presence""#) {
            break text;
        }
    };
    assert_eq!(
        text,
        format!(
            r#"{{"type":"chat","senderID":"{line_id}","recipientID":"","content":"from tls","username":"line"}}"#
        )
    );
    // More than one record's worth, in order.
    let long = "z".repeat(900);
    for i in 0..40 {
        send_line(&mut line, &common::chat(&format!("{i:02}{long}")));
    }
    for i in 0..40 {
        let frame = web.next_reply();
        let content = frame["content"].as_str().unwrap_or_default();
        assert!(content.starts_with(&format!("{i:02}z")), "{i}: {frame}");
    }
    web.send(r#"{"type":"disconnect"}"#);
    let closed = web.expect_closed();
    assert_eq!(closed.code, Some(1000));
    assert_eq!(closed.frames[0]["type"], "disconnect_response");
}

#[test]
fn frames_in_the_same_records_as_the_upgrade_request_are_read() {
    let _gate = common::shared();
    let pki = Pki::new("https-early");
    let server = pki.server(|_| {});
    let mut stream = connect(server.http.unwrap(), &pki.ca);
    let mut request = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
    let mut login = Frame::message(
        Bytes::from_static(br#"{"type":"connect","content":"eager"}"#),
        OpCode::Data(Data::Text),
        true,
    );
    login.header_mut().mask = Some([1, 2, 3, 4]);
    login.format(&mut request).unwrap();
    stream.write_all(&request).unwrap();
    stream.flush().unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !got.windows(16).any(|w| w == b"connect_response") {
        let n = match stream.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read.expect("read"),
        };
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{got}"
    );
}

#[test]
fn plain_http_to_the_https_port_gets_an_alert_and_a_close() {
    let _gate = common::shared();
    let pki = Pki::new("https-plain");
    let server = pki.server(|_| {});
    let http = server.http.unwrap();
    let mut stream = TcpStream::connect(http).unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = read_to_close(&mut stream);
    assert_eq!(got.first(), Some(&0x15), "a TLS alert record: {got:?}");
    eventually("the close is counted", || {
        server.metric("uring_chat_connections_closed_total{reason=\"tls_plaintext\"}") == 1.0
    });
}

#[test]
fn an_untrusting_client_fails_and_is_counted() {
    let _gate = common::shared();
    let pki = Pki::new("https-untrusted");
    let other = Pki::new("https-other");
    let server = pki.server(|_| {});
    let http = server.http.unwrap();
    let mut stream = connect(http, &other.ca);
    let error = (stream.write_all(b"GET /healthz HTTP/1.1\r\n\r\n"))
        .and_then(|()| stream.flush())
        .unwrap_err();
    // The other CA has the same name: its key does not check the server's certificate.
    assert!(
        error.to_string().contains("invalid peer certificate"),
        "{error}"
    );
    eventually("the failure is counted", || {
        server.metric("uring_chat_connections_closed_total{reason=\"tls_failed\"}") == 1.0
    });
}

#[test]
fn a_stalled_handshake_on_the_http_port_is_closed_at_the_login_timeout() {
    let _gate = common::shared();
    let pki = Pki::new("https-slowloris");
    let server = pki.server(|c| c.login_timeout = Duration::from_secs(1));
    let http = server.http.unwrap();
    let started = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut stream = TcpStream::connect(http).unwrap();
            stream.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
            stream
        })
        .collect();
    // Others are served meanwhile.
    assert_eq!(curl(&pki, http.port(), "/healthz").as_deref(), Ok("ok\n"));
    for stream in &mut stalled {
        assert!(read_to_close(stream).is_empty(), "closed with nothing sent");
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(10), "closed after {waited:?}");
    eventually("the timeouts are counted", || {
        server.metric("uring_chat_connections_closed_total{reason=\"tls_handshake_timeout\"}")
            == 20.0
    });
}

#[test]
fn the_metrics_port_speaks_tls_too() {
    let _gate = common::shared();
    let pki = Pki::new("https-metrics");
    let server = pki.server(|c| c.metrics_port = Some(0));
    let metrics = server.metrics.expect("the metrics port is on");
    let text = curl(&pki, metrics.port(), "/metrics").unwrap();
    assert!(
        text.contains("uring_chat_connections_closed_total"),
        "{text}"
    );
    assert!(https_get(metrics, &pki.ca, "/healthz").starts_with("HTTP/1.1 404 Not Found\r\n"));
    let mut plain = TcpStream::connect(metrics).unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_to_close(&mut plain).first(), Some(&0x15));
}

#[test]
fn a_reload_changes_the_https_certificate_too() {
    let _gate = common::shared();
    let old = Pki::new("https-reload-old");
    let new = Pki::new("https-reload-new");
    let server = old.server(|_| {});
    let port = server.http.unwrap().port();
    assert_eq!(curl(&old, port, "/healthz").as_deref(), Ok("ok\n"));
    for file in ["server.pem", "server.key"] {
        std::fs::copy(new.dir.join(file), old.dir.join(file)).unwrap();
    }
    server.reload_tls().expect("the new pair loads");
    assert_eq!(curl(&new, port, "/healthz").as_deref(), Ok("ok\n"));
    // Both test CAs bear one name: curl finds the old one and the new signature fails to check.
    assert!(
        curl(&old, port, "/healthz").is_err(),
        "the old CA no longer vouches"
    );
}

/// TLS clients that vanish (a reset) while broadcasts are written to them: a failed write drops
/// what the connection owed, sealed rest of a record included, and the core goes on serving.
/// (It once kept that rest and retried it for ever, the core spinning in its writer.)
#[test]
fn tls_peers_reset_mid_broadcast_leave_the_cores_serving() {
    let _gate = common::shared();
    let pki = Pki::new("https-reset");
    let server = pki.server(|c| {
        c.rate_limit = 0;
        // Every turn is sent inline, where a retry loop would hold the core.
        c.inline_send_min = 1;
    });
    let http = server.http.unwrap();
    let (mut sender, _) = tls_login(server.addr, &pki, "sender");
    // Each victim: a handle on its socket, and the client that owns it.
    let mut victims: Vec<(TcpStream, Box<dyn std::any::Any>)> = Vec::new();
    for i in 0..16 {
        let (line, _) = tls_login(server.addr, &pki, &format!("v{i}"));
        victims.push((line.get_ref().sock.try_clone().unwrap(), Box::new(line)));
        let web = wss_login(http, &pki, &format!("w{i}"));
        let tcp = web.socket.get_ref().0.sock.try_clone().unwrap();
        victims.push((tcp, Box::new(web)));
    }
    // A stuck server stops reading: the sender must not wait for it for ever.
    sender
        .get_ref()
        .sock
        .set_write_timeout(Some(READ_TIMEOUT))
        .unwrap();
    let sending = std::thread::spawn(move || {
        let mut sent = true;
        for i in 0..3000 {
            let line = common::chat(&format!("{i} {}", "b".repeat(300))) + "\n";
            sent = write_line(&mut sender, &line);
            if !sent {
                break;
            }
        }
        (sender, sent)
    });
    for (tcp, owner) in victims {
        socket2::SockRef::from(&tcp)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop((tcp, owner));
        std::thread::sleep(Duration::from_millis(2));
    }
    let (mut sender, mut served) = sending.join().unwrap();
    served &= write_line(&mut sender, "{\"type\":\"ping\",\"content\":\"after\"}\n");
    while served {
        let mut line = String::new();
        match sender.read_line(&mut line) {
            Ok(n) if n > 0 && line.contains(r#""content":"after""#) => break,
            Ok(n) if n > 0 => continue,
            _ => served = false,
        }
    }
    // Every core answers a new client (SO_REUSEPORT spreads them).
    for i in 0..8 {
        if !served {
            break;
        }
        let mut probe = BufReader::new(connect(server.addr, &pki.ca));
        let login = json!({"type": "connect", "content": format!("p{i}")}).to_string() + "\n";
        let mut line = String::new();
        served = write_line(&mut probe, &login) && probe.read_line(&mut line).is_ok_and(|n| n > 0);
    }
    if !served {
        // A core is stuck: stopping the server would wait for it for ever.
        std::mem::forget(server);
        panic!("a core stopped serving after its TLS peers reset");
    }
}

/// Writes `line` as it is; false when the write failed or timed out.
fn write_line(client: &mut BufReader<TlsStream>, line: &str) -> bool {
    let stream = client.get_mut();
    (stream.write_all(line.as_bytes()))
        .and_then(|()| stream.flush())
        .is_ok()
}
