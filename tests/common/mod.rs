//! Test harness: the real server in-process on port 0, and a line-oriented client over plain TCP
//! or TLS.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use serde_json::Value;
use uring_chat::config::Config;
use uring_chat::server::Server;

pub mod cluster;
pub mod stream;
pub mod tls;
pub mod ws;

use stream::{ClientReader, ClientWriter};

/// How long a client waits for a frame before the test fails (not a timing goal: a hang guard).
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// The real server on 127.0.0.1, a free port, two cores; stopped and joined on drop.
pub struct TestServer {
    server: Option<Server>,
    pub addr: SocketAddr,
    /// The HTTP port (a free one, unless a test turns it off).
    pub http: Option<SocketAddr>,
    /// The metrics port, when a test gives `/metrics` one of its own.
    pub metrics: Option<SocketAddr>,
    /// The client settings when the chat port speaks TLS: `connect` and `login` then hand out TLS
    /// clients.
    pub tls: Option<Arc<ClientConfig>>,
    /// The certificate files of a server that made its own ([`TestServer::start_tls_with`]).
    pki: Option<tls::Pki>,
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config {
            host: "127.0.0.1".into(),
            port: 0,
            http_port: Some(0),
            cores: 2,
            ..Config::default()
        };
        adjust(&mut config);
        let server = Server::start(config).expect("server starts");
        let addr = server.local_addr();
        let http = server.http_addr();
        let metrics = server.metrics_addr();
        TestServer {
            server: Some(server),
            addr,
            http,
            metrics,
            tls: None,
            pki: None,
        }
    }

    /// A client on the chat port, over TLS when the server speaks it (handshake done).
    pub fn connect(&self) -> Client {
        let socket = TcpStream::connect(self.addr).expect("connect");
        Client::over(socket, self.tls.clone()).expect("TLS handshake")
    }

    /// A client logged in as `name`; panics unless the reply is a connect_response.
    pub fn login(&self, name: &str) -> Client {
        self.connect().logged_in(name)
    }

    /// A client logged in as `name` whose receive buffer is pinned small, so that loopback
    /// autotuning (up to 32 MB here) cannot absorb what it does not read.
    pub fn login_with_small_receive_buffer(&self, name: &str) -> Client {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(SMALL_RECEIVE_BUFFER).unwrap();
        socket.connect(&self.addr.into()).unwrap();
        let client = Client::over(socket.into(), self.tls.clone()).expect("TLS handshake");
        client.logged_in(name)
    }

    /// The value of one series in a `/metrics` scrape (from the metrics port if the server has
    /// one, else the HTTP port; over https when the server speaks TLS, as all its ports then
    /// do), 0 when absent. `series` is the name with its labels, as written:
    /// `uring_chat_short_writes_total{tls="true"}`.
    pub fn metric(&self, series: &str) -> f64 {
        let addr = (self.metrics.or(self.http)).expect("a port that serves /metrics");
        let answer = match &self.tls {
            Some(config) => tls::https_get_with(addr, config.clone(), "/metrics"),
            None => {
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
                write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer
            }
        };
        let prefix = format!("{series} ");
        (answer.lines())
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0.0, |value| value.parse().unwrap())
    }

    /// Logs users in (named `{prefix}{i}`) until every core holds at least `per_core` of them.
    pub fn login_on_every_core(&self, prefix: &str, cores: usize, per_core: usize) -> Vec<Client> {
        let mut clients = Vec::new();
        let mut counts = vec![0; cores];
        let attempts = (per_core * cores * 3).max(200);
        for i in 0..attempts {
            if counts.iter().all(|&n| n >= per_core) {
                return clients;
            }
            let client = self.login(&format!("{prefix}{i}"));
            counts[client.core] += 1;
            clients.push(client);
        }
        panic!("SO_REUSEPORT never spread {attempts} connections over {cores} cores: {counts:?}");
    }
}

impl TestServer {
    /// Reloads the TLS certificate and key from their files, as SIGHUP does.
    pub fn reload_tls(&self) -> Result<(), String> {
        self.server.as_ref().expect("running").reload_tls()
    }

    /// Starts the drain (as SIGTERM does) without waiting for it; drop waits.
    pub fn begin_shutdown(&self) {
        if let Some(server) = &self.server {
            server.shutdown();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
            server.join().expect("cores exit cleanly");
        }
    }
}

/// What [`TestServer::login_with_small_receive_buffer`] pins SO_RCVBUF to (the kernel doubles it).
pub const SMALL_RECEIVE_BUFFER: usize = 4096;

/// Which wire a suite's test body talks over; [`over_tcp_and_tls!`] runs a body over both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Over {
    Tcp,
    /// TLS on the chat port, with clients that trust the test CA.
    Tls,
}

impl Over {
    pub fn start(self) -> TestServer {
        self.start_with(|_| {})
    }

    pub fn start_with(self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        match self {
            Over::Tcp => TestServer::start_with(adjust),
            Over::Tls => TestServer::start_tls_with(adjust),
        }
    }

    /// The `tls` label of the metrics that tell the two apart.
    pub fn tls_label(self) -> &'static str {
        match self {
            Over::Tcp => "false",
            Over::Tls => "true",
        }
    }
}

/// Emits two tests for each test body named (a `fn name(over: Over)`): `tcp::name` over plain TCP
/// and `tls::name` through TLS clients. The protocol does not depend on the wire, so the same
/// suite proves both. A body left out of the list is dead code, which the lints refuse.
#[macro_export]
macro_rules! over_tcp_and_tls {
    ($($name:ident),+ $(,)?) => {
        mod tcp {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Over::Tcp)
            })+
        }
        mod tls {
            $(#[test]
            fn $name() {
                super::$name($crate::common::Over::Tls)
            })+
        }
    };
}

/// A protocol client over a real socket, plain or TLS.
pub struct Client {
    writer: ClientWriter,
    reader: BufReader<ClientReader>,
    pub user_id: String,
    pub username: String,
    pub core: usize,
}

impl Client {
    /// A plain TCP client (whatever the server speaks: some tests send plain text to TLS).
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A plain TCP client, logged in; panics unless the reply is a connect_response.
    pub fn login(addr: SocketAddr, name: &str) -> Client {
        Client::connect(addr).logged_in(name)
    }

    /// Logs in as `name`; panics unless the reply is a connect_response.
    pub fn logged_in(mut self, name: &str) -> Client {
        self.send(&serde_json::json!({"type": "connect", "content": name}).to_string());
        let reply = self.next_reply();
        assert_eq!(
            reply["type"], "connect_response",
            "login of {name}: {reply}"
        );
        self.take_identity(name, &reply);
        self
    }

    fn take_identity(&mut self, name: &str, reply: &Value) {
        let content = content_of(reply);
        self.user_id = content["userID"].as_str().unwrap().to_string();
        self.username = name.to_string();
        self.core = content["core"].as_u64().unwrap() as usize;
    }

    /// Writes `line` and a newline.
    pub fn send(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    /// The next line the server sends, exactly, newline included.
    pub fn next_line(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .expect("read a frame");
        assert!(n > 0, "the server closed the connection");
        line
    }

    /// The next frame, parsed.
    pub fn next_frame(&mut self) -> Value {
        let line = self.next_line();
        assert_eq!(line.last(), Some(&b'\n'), "frames end with a newline");
        serde_json::from_slice(&line).expect("the server sends JSON")
    }

    /// The next frame that is not a presence announcement.
    pub fn next_reply(&mut self) -> Value {
        loop {
            let frame = self.next_frame();
            if frame["type"] != "presence" {
                return frame;
            }
        }
    }

    /// The next frame that is not presence, as exact bytes.
    pub fn next_reply_line(&mut self) -> Vec<u8> {
        loop {
            let line = self.next_line();
            if !line.starts_with(b"{\"type\":\"presence\"") {
                return line;
            }
        }
    }

    /// Panics unless the next non-presence frame is an error with `code`.
    pub fn expect_error(&mut self, code: &str) -> Value {
        let frame = self.next_reply();
        assert_eq!(frame["type"], "error", "expected {code}, got {frame}");
        assert_eq!(frame["code"], code, "got {frame}");
        assert_eq!(frame["senderID"], "server");
        frame
    }

    /// Round trip: everything the server queued for us before the pong has been read after this.
    pub fn ping(&mut self, token: &str) {
        self.send(&serde_json::json!({"type": "ping", "content": token}).to_string());
        let frame = self.next_reply();
        assert_eq!(frame["type"], "pong", "expected the pong, got {frame}");
        assert_eq!(frame["content"], token);
    }

    /// Reads and discards until the server closes; panics if it does not within the read timeout,
    /// and over TLS if the close comes without close_notify (a reset is a close on either wire).
    pub fn expect_closed(&mut self) -> Vec<Value> {
        let mut frames = Vec::new();
        loop {
            let mut line = Vec::new();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => return frames,
                Ok(_) => frames.push(serde_json::from_slice(&line).unwrap_or(Value::Null)),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return frames,
                Err(e) => panic!("expected a close, got {e}"),
            }
        }
    }

    /// A second handle for writing from another thread while this one reads (over TLS, to the
    /// same session).
    pub fn writer_clone(&self) -> ClientWriter {
        self.writer.try_clone().unwrap()
    }

    /// A half-close (over TLS, close_notify and then the FIN).
    pub fn shutdown_write(&self) {
        let _ = self.writer.shutdown_write();
    }

    /// Reads whatever arrives within `window` without parsing it; for tests that count bytes.
    pub fn drain_for(&mut self, window: Duration) -> usize {
        let deadline = Instant::now() + window;
        let mut total = 0;
        let mut buf = [0u8; 65536];
        self.reader
            .get_ref()
            .socket()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        while Instant::now() < deadline {
            match self.reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => {}
            }
        }
        self.reader
            .get_ref()
            .socket()
            .set_read_timeout(Some(READ_TIMEOUT))
            .unwrap();
        total
    }
}

/// The JSON document inside a frame's string `content`.
pub fn content_of(frame: &Value) -> Value {
    serde_json::from_str(frame["content"].as_str().expect("string content")).expect("JSON content")
}

/// Waits (bounded) until `check` holds; for state that settles asynchronously, not for timing.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + READ_TIMEOUT;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("never happened: {what}");
}

impl Client {
    /// Wraps a plain socket that was connected (and perhaps configured) by the test itself.
    pub fn from_stream(stream: TcpStream) -> Client {
        Client::over(stream, None).expect("a plain socket splits")
    }

    /// Wraps a connected socket, over TLS when `tls` is given: the handshake is done here, and
    /// its failure (an untrusted certificate) is the error.
    pub fn over(stream: TcpStream, tls: Option<Arc<ClientConfig>>) -> std::io::Result<Client> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let (reader, writer) = stream::split(stream, tls)?;
        Ok(Client {
            reader: BufReader::new(reader),
            writer,
            user_id: String::new(),
            username: String::new(),
            core: usize::MAX,
        })
    }

    /// The next frame, or `None` once the server has closed the connection (EOF or reset).
    /// Panics on a read timeout: that is a hang, not a close.
    pub fn try_next_frame(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        match self.reader.read_until(b'\n', &mut line) {
            Ok(0) => None,
            Ok(_) => Some(serde_json::from_slice(&line).expect("the server sends JSON")),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("expected a frame or a close, got {e}"),
        }
    }

    /// Tries to log in as `name` on this connection: true on `connect_response` (and the client
    /// takes the identity), false on an error reply or a close.
    pub fn try_login(&mut self, name: &str) -> bool {
        let line = serde_json::json!({"type": "connect", "content": name}).to_string() + "\n";
        if self.writer.write_all(line.as_bytes()).is_err() {
            return false;
        }
        loop {
            let Some(frame) = self.try_next_frame() else {
                return false;
            };
            match frame["type"].as_str() {
                Some("presence") => continue,
                Some("connect_response") => {
                    self.take_identity(name, &frame);
                    return true;
                }
                _ => return false,
            }
        }
    }
}

/// Tests that measure the whole process (RSS) or depend on prompt scheduling run alone; the rest
/// of a test binary shares the machine.
static GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

pub fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    GATE.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub fn alone() -> std::sync::RwLockWriteGuard<'static, ()> {
    GATE.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A broadcast chat frame.
pub fn chat(content: &str) -> String {
    serde_json::json!({"type": "chat", "content": content}).to_string()
}

/// Users logged in server-wide, as a `users` page reports it.
pub fn user_count(client: &mut Client) -> u64 {
    client.send(r#"{"type":"users","content":"0"}"#);
    let reply = client.next_reply();
    assert_eq!(reply["type"], "user_list_update", "{reply}");
    content_of(&reply)["userCount"].as_u64().unwrap()
}

/// Room (protocol v1.1) requests.
impl Client {
    /// Joins `room` (replaying after `since` if given) and returns the join_response's content.
    /// Room chat that arrives first (a rejoin while others post) is returned in `early`.
    pub fn join(&mut self, room: &str, since: Option<u64>) -> Value {
        self.join_collecting(room, since, &mut Vec::new())
    }

    pub fn join_collecting(
        &mut self,
        room: &str,
        since: Option<u64>,
        early: &mut Vec<Value>,
    ) -> Value {
        let mut request = serde_json::json!({"type": "join", "room": room});
        if let Some(since) = since {
            request["since"] = Value::String(since.to_string());
        }
        self.send(&request.to_string());
        loop {
            let frame = self.next_reply();
            if frame["type"] == "join_response" {
                assert_eq!(frame["room"], room, "{frame}");
                return content_of(&frame);
            }
            assert_eq!(frame["type"], "chat", "expected join_response, got {frame}");
            early.push(frame);
        }
    }

    pub fn post(&mut self, room: &str, text: &str) {
        let request = serde_json::json!({"type": "chat", "room": room, "content": text});
        self.send(&request.to_string());
    }

    /// The next room chat frame; panics on anything else but presence.
    pub fn next_room_chat(&mut self) -> Value {
        let frame = self.next_reply();
        assert_eq!(frame["type"], "chat", "{frame}");
        assert!(frame["room"].is_string(), "a room message: {frame}");
        frame
    }

    /// The next `count` room messages as (seq, senderID, content), asserting what every member of
    /// a room must see: seqs gap-free from 1, and each sender's `"<poster>:<n>"` contents in order.
    pub fn room_messages_in_one_order(&mut self, count: usize) -> Vec<(u64, String, String)> {
        let who = self.username.clone();
        let received: Vec<_> = (0..count)
            .map(|_| room_message(&self.next_room_chat()))
            .collect();
        let seqs: Vec<u64> = received.iter().map(|m| m.0).collect();
        assert_eq!(
            seqs,
            (1..=count as u64).collect::<Vec<_>>(),
            "{who}: gap-free, in order"
        );
        let mut next: std::collections::HashMap<&str, usize> = Default::default();
        for (_, sender, content) in &received {
            let n: usize = content.split(':').nth(1).unwrap().parse().unwrap();
            let expected = next.entry(sender).or_default();
            assert_eq!(n, *expected, "{who}: per-sender order from {sender}");
            *expected += 1;
        }
        received
    }
}

/// (seq, senderID, content) of a room chat frame.
pub fn room_message(frame: &Value) -> (u64, String, String) {
    (
        frame["seq"].as_u64().expect("room messages carry a seq"),
        frame["senderID"].as_str().unwrap().to_string(),
        frame["content"].as_str().unwrap().to_string(),
    )
}

/// Asserts that `promtool check metrics` (Debian's `prometheus`) finds nothing to say about a
/// scrape's body.
pub fn assert_promtool_accepts(body: &str) {
    use std::process::{Command, Stdio};
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (apt-get install prometheus)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let outcome = check.wait_with_output().unwrap();
    assert!(
        outcome.status.success() && outcome.stdout.is_empty() && outcome.stderr.is_empty(),
        "promtool check metrics: {}{}\n{body}",
        String::from_utf8_lossy(&outcome.stdout),
        String::from_utf8_lossy(&outcome.stderr)
    );
}
