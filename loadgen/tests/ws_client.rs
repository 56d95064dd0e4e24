//! loadgen's WebSocket client over real sockets against tungstenite's server role (which refuses
//! unmasked client frames): the upgrade and the login, a delivery measured, the server's ping
//! answered by a masked pong and its JSON ping by a pong message, the close handshake, over plain
//! TCP and over TLS (wss: tungstenite on a rustls server session, a certificate made in the test);
//! and upgrades that must fail.

mod common;

use loadgen::clock::Clock;
use loadgen::connect::{self, ConnectError, Dial, Login};
use loadgen::receive::{self, Ctx};
use loadgen::stats::{Shared, ThreadStats, Window};
use loadgen::tls::TlsClient;
use loadgen::Transport;
use std::cell::RefCell;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::Message;

fn dial(target: SocketAddr) -> Dial {
    Dial {
        target,
        source: None,
        transport: Transport::Ws,
        tls: None,
    }
}

fn login() -> Login {
    Login::Chat {
        name: "alice".into(),
        token: None,
    }
}

/// The server side of the exchange over `sock`; returns what it read from the client after the
/// login.
fn serve(sock: impl Read + Write) -> Vec<Message> {
    let mut ws = tungstenite::accept(sock).expect("loadgen's upgrade request is valid");
    match ws.read().unwrap() {
        Message::Text(t) => assert_eq!(t.as_str(), r#"{"type":"connect","content":"alice"}"#),
        other => panic!("expected the login, got {other:?}"),
    }
    let reply = r#"{"type":"connect_response","content":"{\"userID\":\"u1\"}"}"#;
    ws.send(Message::text(reply)).unwrap();
    // sender 0, message 1, due at 1 ns on loadgen's clock.
    let chat = r#"{"type":"chat","userID":"u2","content":"0:1:1:xxxx"}"#;
    ws.send(Message::text(chat)).unwrap();
    ws.send(Message::Ping(b"hb"[..].into())).unwrap();
    ws.send(Message::text(r#"{"type":"ping","content":""}"#))
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(ws.read().expect("a masked, valid client frame"));
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    }))
    .unwrap();
    // The close handshake completes only when loadgen answers with its own close.
    loop {
        match ws.read() {
            Ok(_) => {}
            Err(tungstenite::Error::ConnectionClosed) => return got,
            Err(e) => panic!("no close handshake: {e}"),
        }
    }
}

#[test]
fn login_delivery_pings_and_close_over_websocket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || serve(listener.accept().unwrap().0));
    exchange(dial(target), server);
}

#[test]
fn login_delivery_pings_and_close_over_websocket_over_tls() {
    let pki = common::pki::Pki::new("wss");
    let config = pki.server_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let sock = listener.accept().unwrap().0;
        let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        serve(rustls::StreamOwned::new(session, sock))
    });
    let tls = TlsClient::new(std::path::Path::new(&pki.ca_file()), None).unwrap();
    let dial = Dial {
        tls: Some(Arc::new(tls)),
        ..dial(target)
    };
    exchange(dial, server);
}

/// loadgen's side: upgrade and log in through `dial`, then the receive loop until the server's
/// close; checks what the server got and what loadgen measured.
fn exchange(dial: Dial, server: std::thread::JoinHandle<Vec<Message>>) {
    let clock = Clock::new();
    let shared = Arc::new(Shared::default());
    let stats = Rc::new(RefCell::new(ThreadStats::new(Window { start: 0, end: 10 })));
    let ctx = Rc::new(Ctx {
        clock,
        senders: 1,
        read_buffer: 1024,
        transport: Transport::Ws,
        stats: stats.clone(),
        shared: shared.clone(),
        mixed: false,
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, async {
        let est = connect::connect(dial, &login(), &[], Duration::from_secs(5))
            .await
            .expect("upgrade and login");
        assert_eq!(est.id, "u1");
        let (rd, wr) = est.stream.into_split();
        let writer = Arc::new(tokio::sync::Mutex::new(wr));
        let task = receive::chat(rd, writer, est.leftover, ctx, None, None, 0);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the receive loop ends at the server's close");
    });

    let got = server.join().unwrap();
    assert!(got.contains(&Message::Pong(b"hb"[..].into())), "{got:?}");
    assert!(
        got.contains(&Message::text(r#"{"type":"pong","content":""}"#)),
        "{got:?}"
    );
    assert_eq!(shared.measured.load(Ordering::Relaxed), 1);
    assert_eq!(shared.disconnected.load(Ordering::Relaxed), 1);
    let st = stats.borrow();
    assert_eq!(st.received, 1);
    assert!(st.errors.is_empty(), "{:?}", st.errors);
}

/// A server that answers any request with `response`, then closes.
fn answering(response: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut r = BufReader::new(sock.try_clone().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let _ = sock.write_all(response.as_bytes());
    });
    addr
}

#[test]
fn upgrades_that_must_fail() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (response, why) in [
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
            "wrong Sec-WebSocket-Accept",
        ),
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            "HTTP 404",
        ),
        ("{\"type\":\"error\",\"code\":\"BAD_FRAME\"}\n", "HTTP port"),
    ] {
        let target = answering(response);
        let r = rt.block_on(connect::connect(
            dial(target),
            &login(),
            &[],
            Duration::from_secs(5),
        ));
        match r {
            Err(ConnectError::Failed(e)) => assert!(e.contains(why), "{e}"),
            Err(e) => panic!("{e:?}"),
            Ok(_) => panic!("{why}: the upgrade must fail"),
        }
    }
}
