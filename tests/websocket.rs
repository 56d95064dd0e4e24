//! WebSocket clients on `/ws` over real sockets: users like any other, RFC 6455 close codes, the
//! handshake's refusals, server pings, and the echo mode the Autobahn suite runs against.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::Bytes;
use common::ws::WsClient;
use common::{chat, content_of, TestServer, READ_TIMEOUT};
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

#[test]
fn websocket_and_tcp_users_share_the_lobby_direct_messages_and_rooms() {
    let server = TestServer::start();
    let http = server.http.unwrap();
    let mut alice = WsClient::login(http, "alice");
    let mut bob = server.login("bob");
    let mut carol = WsClient::login(http, "carol");

    alice.send(&chat("hello from a browser"));
    for frame in [bob.next_reply(), carol.next_reply()] {
        assert_eq!(frame["type"], "chat");
        assert_eq!(frame["content"], "hello from a browser");
        assert_eq!(frame["senderID"], alice.user_id.as_str());
    }
    bob.send(&chat("hello from TCP"));
    for client in [&mut alice, &mut carol] {
        let frame = client.next_reply();
        assert_eq!(
            (frame["type"].as_str(), frame["content"].as_str()),
            (Some("chat"), Some("hello from TCP"))
        );
    }

    let direct = |to: &str, text: &str| {
        serde_json::json!({"type": "chat", "recipientID": to, "content": text}).to_string()
    };
    alice.send(&direct(&bob.user_id, "psst, bob"));
    let got = bob.next_reply();
    assert_eq!(
        (got["content"].as_str(), got["recipientID"].as_str()),
        (Some("psst, bob"), Some(bob.user_id.as_str()))
    );
    bob.send(&direct(&carol.user_id, "psst, carol"));
    assert_eq!(carol.next_reply()["content"], "psst, carol");
    carol.send(&direct(&alice.user_id, "psst, alice"));
    assert_eq!(alice.next_reply()["content"], "psst, alice");

    alice.send(r#"{"type":"join","room":"ops"}"#);
    assert_eq!(alice.next_reply()["type"], "join_response");
    bob.join("ops", None);
    alice.send(r#"{"type":"chat","room":"ops","content":"in the room"}"#);
    let posted = bob.next_reply();
    assert_eq!(
        (posted["room"].as_str(), posted["content"].as_str()),
        (Some("ops"), Some("in the room"))
    );
    assert_eq!(posted["seq"], 1);
}

#[test]
fn each_server_frame_is_one_text_message_holding_the_tcp_line_without_its_newline() {
    let server = TestServer::start();
    let mut ws = WsClient::login(server.http.unwrap(), "web");
    let mut tcp = server.login("tcp");
    let mut sender = server.login("sender");
    sender.send(&chat("same bytes"));
    let line = tcp.next_reply_line();
    let text = loop {
        let text = ws.next_text();
        if !text.starts_with("{\"type\":\"presence\"") {
            break text;
        }
    };
    assert_eq!(text.as_bytes(), &line[..line.len() - 1]);
}

#[test]
fn fragmented_messages_and_frames_sent_right_behind_the_handshake_are_read() {
    let server = TestServer::start();
    let http = server.http.unwrap();
    // The handshake and the first frame in one write: the frame must not be lost with the head.
    let mut raw = TcpStream::connect(http).unwrap();
    raw.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut request = b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n".to_vec();
    let mut frame = Vec::new();
    let mut login = Frame::message(
        Bytes::from_static(br#"{"type":"connect","content":"eager"}"#),
        OpCode::Data(Data::Text),
        true,
    );
    login.header_mut().mask = Some([1, 2, 3, 4]);
    login.format(&mut frame).unwrap();
    request.extend_from_slice(&frame);
    raw.write_all(&request).unwrap();
    let answer = read_until(&mut raw, b"connect_response");
    assert!(answer.starts_with("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"), "{answer}");

    let mut alice = WsClient::login(http, "alice");
    let mut bob = server.login("bob");
    let parts: [&[u8]; 3] = [
        br#"{"type":"chat","#,
        br#""content":"in "#,
        br#"three parts"}"#,
    ];
    for (i, part) in parts.iter().enumerate() {
        let opcode = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        alice.send_frame(Frame::message(Bytes::copy_from_slice(part), opcode, i == 2));
    }
    assert_eq!(bob.next_reply()["content"], "in three parts");
}

/// Reads from a raw socket until `marker` has arrived.
fn read_until(stream: &mut TcpStream, marker: &[u8]) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(marker.len()).any(|w| w == marker) {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "closed before {:?}", String::from_utf8_lossy(marker));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn protocol_errors_close_with_the_rfc_6455_codes() {
    let server = TestServer::start_with(|c| c.max_frame_bytes = 1024);
    let http = server.http.unwrap();

    // An unmasked client frame: 1002.
    let mut raw = WsClient::connect(http);
    let stream = &mut raw.socket.get_mut().0;
    stream.write_all(&[0x81, 0x02, b'{', b'}']).unwrap();
    assert_eq!(raw.expect_closed().code, Some(1002));

    // Invalid UTF-8 in a text message: 1007.
    let mut client = WsClient::login(http, "utf8");
    client.send_frame(Frame::message(
        Bytes::from_static(b"{\"type\":\"chat\",\"content\":\"\xff\"}"),
        OpCode::Data(Data::Text),
        true,
    ));
    assert_eq!(client.expect_closed().code, Some(1007));

    // A reserved opcode: 1002.
    let mut client = WsClient::connect(http);
    client.send_frame(Frame::message(
        Bytes::from_static(b"x"),
        OpCode::Data(Data::Reserved(3)),
        true,
    ));
    assert_eq!(client.expect_closed().code, Some(1002));

    // Past --max-frame-bytes, also when fragmented: FRAME_TOO_LARGE, then 1009.
    let mut client = WsClient::login(http, "big");
    let half = Bytes::from(vec![b' '; 600]);
    client.send_frame(Frame::message(
        half.clone(),
        OpCode::Data(Data::Text),
        false,
    ));
    client.send_frame(Frame::message(half, OpCode::Data(Data::Continue), true));
    let closed = client.expect_closed();
    assert_eq!(closed.code, Some(1009));
    assert_eq!(closed.frames.last().unwrap()["code"], "FRAME_TOO_LARGE");

    // A binary message is not a frame: INVALID_MESSAGE, and the connection stays.
    let mut client = WsClient::login(http, "binary");
    client.socket.send(Message::binary(b"{}".to_vec())).unwrap();
    assert_eq!(client.next_reply()["code"], "INVALID_MESSAGE");
    client.send(r#"{"type":"ping","content":"still here"}"#);
    assert_eq!(client.next_reply()["content"], "still here");

    // The client closes: the server answers with the same code and closes the TCP connection.
    client.close(CloseCode::Normal);
    let closed = client.expect_closed_after_own_close();
    assert_eq!(closed, Some(1000));
}

impl WsClient {
    /// After the client's own close: the server's close reply's code.
    fn expect_closed_after_own_close(&mut self) -> Option<u16> {
        loop {
            match self.read() {
                Ok(Message::Close(close)) => return close.map(|c| u16::from(c.code)),
                Ok(_) => continue,
                Err(tungstenite::Error::ConnectionClosed) => return Some(1000),
                Err(error) => panic!("expected the close reply, got {error}"),
            }
        }
    }
}

#[test]
fn policy_and_shutdown_closes_carry_the_error_frame_then_their_code() {
    let server = TestServer::start_with(|c| {
        c.login_timeout = Duration::from_millis(300);
        c.rate_limit = 5;
        c.rate_limit_burst = 5;
    });
    let http = server.http.unwrap();
    let mut idle = WsClient::connect(http);
    let closed = idle.expect_closed();
    assert_eq!(
        (closed.code, closed.frames[0]["code"].as_str()),
        (Some(1008), Some("LOGIN_TIMEOUT"))
    );

    let mut flooder = WsClient::login(http, "flooder");
    for i in 0..200 {
        if flooder
            .socket
            .send(Message::text(chat(&i.to_string())))
            .is_err()
        {
            break;
        }
    }
    let closed = flooder.expect_closed();
    assert_eq!(closed.code, Some(1008));
    assert_eq!(closed.frames.last().unwrap()["code"], "RATE_LIMITED");

    let mut stayer = WsClient::login(http, "stayer");
    server.begin_shutdown();
    let closed = stayer.expect_closed();
    assert_eq!(closed.code, Some(1001));
    assert_eq!(closed.frames.last().unwrap()["code"], "SERVER_SHUTDOWN");
}

#[test]
fn the_server_pings_idle_websocket_clients_and_keeps_those_that_answer() {
    let server = TestServer::start_with(|c| c.ping_interval = Duration::from_millis(200));
    let mut client = WsClient::login(server.http.unwrap(), "quiet");
    let mut pings = 0;
    client
        .socket
        .get_ref()
        .0
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_millis(1500);
    while std::time::Instant::now() < deadline {
        match client.read() {
            Ok(Message::Ping(payload)) => {
                assert!(payload.is_empty());
                pings += 1; // tungstenite queues the pong; the next read or flush sends it
                client.socket.flush().unwrap();
            }
            Ok(other) => assert!(
                matches!(&other, Message::Text(t) if t.contains("presence")),
                "{other:?}"
            ),
            Err(tungstenite::Error::Io(e))
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(error) => panic!("the server closed a client that answered its pings: {error}"),
        }
    }
    assert!(
        pings >= 2,
        "pinged {pings} times in 1.5 s at a 200 ms interval"
    );
    client
        .socket
        .get_ref()
        .0
        .set_read_timeout(Some(READ_TIMEOUT))
        .unwrap();
    client.send(r#"{"type":"ping","content":"alive"}"#);
    assert_eq!(client.next_reply()["content"], "alive");
}

#[test]
fn the_handshake_refuses_bad_requests_with_a_status_that_says_why() {
    let server =
        TestServer::start_with(|c| c.ws_allowed_origins = vec!["https://chat.example".into()]);
    let http = server.http.unwrap();
    let ask = |extra: &str| {
        let mut stream = TcpStream::connect(http).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        write!(stream, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n").unwrap();
        let mut answer = String::new();
        let mut buf = [0u8; 1024];
        let n = stream.read(&mut buf).unwrap();
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
        answer
    };
    let status = |answer: &str| answer.lines().next().unwrap().to_string();
    assert_eq!(
        status(&ask(
            "Sec-WebSocket-Version: 13\r\nOrigin: https://chat.example\r\n"
        )),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        status(&ask(
            "Sec-WebSocket-Version: 13\r\nOrigin: HTTPS://CHAT.EXAMPLE\r\n"
        )),
        "HTTP/1.1 101 Switching Protocols"
    );
    assert_eq!(
        status(&ask("Sec-WebSocket-Version: 13\r\n")),
        "HTTP/1.1 101 Switching Protocols",
        "no Origin: not a browser page"
    );
    assert_eq!(
        status(&ask(
            "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\n"
        )),
        "HTTP/1.1 403 Forbidden"
    );
    let old = ask("Sec-WebSocket-Version: 8\r\n");
    assert_eq!(status(&old), "HTTP/1.1 426 Upgrade Required");
    assert!(old.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{old}");

    let mut stream = TcpStream::connect(http).unwrap();
    stream
        .write_all(b"POST /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 405 Method Not Allowed\r\n")
            && answer.contains("\r\nAllow: GET\r\n"),
        "{answer}"
    );

    let mut stream = TcpStream::connect(http).unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "a plain GET of /ws: {answer}"
    );
}

#[test]
fn echo_mode_sends_every_message_back_as_it_came() {
    let server = TestServer::start_with(|c| {
        c.ws_echo = true;
        c.login_timeout = Duration::from_millis(200);
    });
    let mut client = WsClient::connect(server.http.unwrap());
    client.send("not even JSON");
    assert_eq!(client.next_text(), "not even JSON");
    client
        .socket
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .unwrap();
    match client.read().unwrap() {
        Message::Binary(bytes) => assert_eq!(&bytes[..], &[0u8, 159, 146, 150]),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(500));
    client.send("still open after the login timeout");
    assert_eq!(client.next_text(), "still open after the login timeout");
    let _ = content_of; // shared harness
}

/// A WebSocket client that never reads is cut off like a TCP one: a gap-free prefix, then
/// SLOW_CONSUMER and close code 1008, while a reading client gets every message.
#[test]
fn a_websocket_client_that_never_reads_is_cut_off_as_a_slow_consumer() {
    let server = TestServer::start_with(|c| {
        c.max_outbound_bytes = 1 << 20;
        c.rate_limit = 0;
        c.drain_timeout = Duration::from_secs(30);
    });
    // Loopback holds ~4 MB for a socket nobody reads; 10 MB is well past that plus the bound.
    const MESSAGES: usize = 2500;
    let mut sender = server.login("sender");
    let mut slow = WsClient::login(server.http.unwrap(), "slow");
    let mut reader = server.login("reader");
    let counting = std::thread::spawn(move || {
        let mut next = 0;
        while next < MESSAGES {
            let frame = reader.next_reply();
            let content = frame["content"].as_str().unwrap();
            assert!(
                content.starts_with(&format!("{next}:")),
                "expected {next}, got {content:.20}"
            );
            next += 1;
        }
    });
    let payload = "x".repeat(4000);
    for seq in 0..MESSAGES {
        sender.send(&chat(&format!("{seq}:{payload}")));
        if seq % 10 == 9 {
            std::thread::sleep(Duration::from_millis(10)); // ~4 MB/s, as in tests/hardening.rs
        }
    }
    counting
        .join()
        .expect("the reading client got every message in order");
    let closed = slow.expect_closed();
    assert_eq!(closed.code, Some(1008));
    let chats: Vec<&str> = (closed.frames.iter())
        .filter(|f| f["type"] == "chat")
        .map(|f| f["content"].as_str().unwrap())
        .collect();
    assert!(chats.len() < MESSAGES, "cut off before the end");
    for (seq, content) in chats.iter().enumerate() {
        assert!(content.starts_with(&format!("{seq}:")), "a gap-free prefix");
    }
    assert_eq!(closed.frames.last().unwrap()["code"], "SLOW_CONSUMER");
}
