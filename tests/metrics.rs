//! `/metrics` over real sockets: exact counts after real chat traffic on two cores, the separate
//! metrics port, and promtool's verdict on a real scrape.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::ws::WsClient;
use common::{chat, eventually, Client, TestServer, READ_TIMEOUT};

/// One request: the head and the body of the answer.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    (head.to_string(), body.to_string())
}

/// Writes `line` and a newline, adding what was written to `written`.
fn send(client: &mut Client, line: &str, written: &mut usize) {
    client.send(line);
    *written += line.len() + 1;
}

/// The samples of a scrape, by series (`name{labels}`); HELP and TYPE lines are checked here.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    fn from(addr: SocketAddr) -> Scrape {
        Scrape::try_from(addr).expect("the scrape is admitted")
    }

    /// `None` when the server is full (a scrape counts against the connection caps too).
    fn try_from(addr: SocketAddr) -> Option<Scrape> {
        let (head, body) = get(addr, "/metrics");
        if head.starts_with("HTTP/1.1 503 ") {
            return None;
        }
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{head}"
        );
        let mut samples = HashMap::new();
        for line in body.lines().filter(|line| !line.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ').expect("a sample");
            assert!(series.starts_with("uring_chat_"), "{line}");
            let name = series.split('{').next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .filter(|base| body.contains(&format!("# TYPE {base} histogram\n")))
                .unwrap_or(name);
            assert!(
                body.contains(&format!("# HELP {family} ")),
                "no HELP: {line}"
            );
            assert!(
                body.contains(&format!("# TYPE {family} ")),
                "no TYPE: {line}"
            );
            samples.insert(series.to_string(), value.parse().unwrap());
        }
        Some(Scrape(samples))
    }

    /// A series' value; frames by kind are written only once seen, so a missing one is 0.
    fn get(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    fn frames(&self, direction: &str, kind: &str) -> f64 {
        self.get(&format!(
            "uring_chat_frames_{direction}_total{{transport=\"tcp\",kind=\"{kind}\"}}"
        ))
    }

    fn error(&self, code: &str) -> f64 {
        self.get(&format!(
            "uring_chat_protocol_errors_total{{code=\"{code}\"}}"
        ))
    }

    fn closed(&self, reason: &str) -> f64 {
        self.get(&format!(
            "uring_chat_connections_closed_total{{reason=\"{reason}\"}}"
        ))
    }

    /// Chat connections open, summed over the cores.
    fn open(&self) -> f64 {
        (self.0.iter())
            .filter(|(series, _)| series.starts_with("uring_chat_connections{transport=\"tcp\""))
            .map(|(_, value)| value)
            .sum()
    }
}

/// Two cores, presence rare (it adds frames at times of its own), a small flood bucket, and every
/// writer turn sent as a fan-out pass so that the pass histogram fills.
fn quiet_server(adjust: impl FnOnce(&mut uring_chat::config::Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.presence_interval = Duration::from_secs(3600);
        c.rate_limit = 1;
        c.rate_limit_burst = 20;
        c.inline_send_min = 1;
        c.max_frame_bytes = 1024;
        adjust(c);
    })
}

fn login_line(name: &str) -> String {
    serde_json::json!({"type": "connect", "content": name}).to_string() + "\n"
}

#[test]
fn real_traffic_is_counted_exactly() {
    let server = quiet_server(|_| {});
    let http = server.http.unwrap();
    let mut written = 0;
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut carol = server.login("carol");
    let logins: usize = ["alice", "bob", "carol"]
        .iter()
        .map(|name| login_line(name).len())
        .sum();

    send(&mut alice, &chat("hello"), &mut written);
    assert_eq!(bob.next_reply()["content"], "hello");
    assert_eq!(carol.next_reply()["content"], "hello");
    let direct = serde_json::json!({"type": "chat", "recipientID": bob.user_id, "content": "psst"});
    send(&mut alice, &direct.to_string(), &mut written);
    assert_eq!(bob.next_reply()["content"], "psst");
    send(&mut alice, "not json", &mut written);
    alice.expect_error("INVALID_MESSAGE");
    send(&mut alice, r#"{"type":"bogus"}"#, &mut written);
    alice.expect_error("UNKNOWN_TYPE");
    let mut stranger = server.connect();
    send(&mut stranger, &chat("who am I"), &mut written);
    stranger.expect_error("NOT_CONNECTED");
    // 25 pings at once: the bucket holds 20, so 5 are refused.
    let mut flooder = server.connect();
    let pings: String = (0..25)
        .map(|i| format!("{{\"type\":\"ping\",\"content\":\"{i}\"}}\n"))
        .collect();
    flooder.send_bytes(pings.as_bytes());
    written += pings.len();
    let replies: Vec<_> = (0..25)
        .map(|_| flooder.next_reply()["type"].clone())
        .collect();
    assert_eq!(replies.iter().filter(|kind| **kind == "pong").count(), 20);
    // A room: two members, one post, whose stamped frame is all the history holds.
    for client in [&mut alice, &mut bob] {
        send(client, r#"{"type":"join","room":"rust"}"#, &mut written);
        assert_eq!(client.next_reply()["type"], "join_response");
    }
    send(
        &mut alice,
        r#"{"type":"chat","room":"rust","content":"kept"}"#,
        &mut written,
    );
    alice.next_room_chat();
    let history_bytes = bob.next_reply_line().len() as f64;

    let scrape = Scrape::from(http);
    assert_eq!(scrape.frames("received", "connect"), 3.0);
    assert_eq!(
        scrape.frames("received", "chat"),
        4.0,
        "lobby, direct, stranger, room"
    );
    assert_eq!(scrape.frames("received", "join"), 2.0);
    assert_eq!(scrape.frames("received", "invalid"), 1.0);
    assert_eq!(scrape.frames("received", "other"), 1.0);
    assert_eq!(scrape.frames("received", "ping"), 20.0);
    assert_eq!(scrape.frames("received", "rate_limited"), 5.0);
    assert_eq!(scrape.frames("sent", "connect_response"), 3.0);
    assert_eq!(
        scrape.frames("sent", "chat"),
        5.0,
        "2 lobby, 1 direct, 2 room"
    );
    assert_eq!(scrape.frames("sent", "pong"), 20.0);
    assert_eq!(scrape.frames("sent", "join_response"), 2.0);
    assert_eq!(scrape.frames("sent", "error"), 8.0);
    for (code, count) in [
        ("INVALID_MESSAGE", 1.0),
        ("UNKNOWN_TYPE", 1.0),
        ("NOT_CONNECTED", 1.0),
        ("RATE_LIMITED", 5.0),
        ("SLOW_CONSUMER", 0.0),
    ] {
        assert_eq!(scrape.error(code), count, "{code}");
    }
    assert_eq!(scrape.get("uring_chat_rate_limited_frames_total"), 5.0);
    assert_eq!(
        scrape.get("uring_chat_bytes_received_total{transport=\"tcp\"}"),
        (logins + written) as f64
    );
    assert!(scrape.get("uring_chat_bytes_sent_total{transport=\"tcp\"}") > 0.0);
    assert_eq!(scrape.get("uring_chat_connections_accepted_total"), 5.0);
    assert_eq!(scrape.open(), 5.0);
    assert_eq!(scrape.get("uring_chat_rooms"), 1.0);
    assert_eq!(scrape.get("uring_chat_room_memberships"), 2.0);
    assert_eq!(scrape.get("uring_chat_history_bytes"), history_bytes);
    assert!(scrape.get("uring_chat_cross_core_messages_total") >= 1.0);
    let passes = scrape.get("uring_chat_fan_out_pass_duration_seconds_count");
    assert!(passes > 0.0, "every turn is a pass here");
    assert_eq!(
        scrape.get("uring_chat_fan_out_pass_duration_seconds_bucket{le=\"+Inf\"}"),
        passes
    );

    // Three ways to go: asked, too large a frame, and the peer closing.
    alice.send(r#"{"type":"disconnect"}"#);
    alice.expect_closed();
    drop(alice);
    carol.send(&format!(
        "{{\"type\":\"chat\",\"content\":\"{}\"}}",
        "x".repeat(2000)
    ));
    carol.expect_error("FRAME_TOO_LARGE");
    drop(carol);
    drop(stranger);
    eventually("three connections closed", || {
        let scrape = Scrape::from(http);
        scrape.closed("disconnect") == 1.0
            && scrape.closed("frame_too_large") == 1.0
            && scrape.closed("peer_closed") == 1.0
            && scrape.open() == 2.0
    });
    let scrape = Scrape::from(http);
    assert_eq!(scrape.frames("sent", "disconnect_response"), 1.0);
    assert_eq!(scrape.error("FRAME_TOO_LARGE"), 1.0);
    assert_eq!(scrape.get("uring_chat_outbound_queued_bytes"), 0.0);
    assert_eq!(
        scrape.get("uring_chat_connections_rejected_total{reason=\"server_full\"}"),
        0.0
    );
}

#[test]
fn refusals_and_slow_consumers_are_counted_by_reason() {
    let server = quiet_server(|c| {
        c.max_connections = 2;
        c.rate_limit = 0;
        c.max_outbound_bytes = 64 * 1024;
        c.history_bytes = 16 * 1024;
    });
    let http = server.http.unwrap();
    let first = server.login_with_small_receive_buffer("first");
    let second = server.login("second");
    let mut refused = server.connect();
    refused.expect_error("SERVER_FULL");
    refused.expect_closed();
    drop((second, refused));
    // A client that owes more than its bound: it asks for pongs and never reads them.
    let ping = format!(
        "{{\"type\":\"ping\",\"content\":\"{}\"}}\n",
        "y".repeat(900)
    );
    let mut stream = first.writer_clone();
    stream
        .socket()
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    eventually("cut off as a slow consumer", || {
        let _ = stream.write_all(ping.repeat(64).as_bytes());
        Scrape::try_from(http).is_some_and(|scrape| scrape.error("SLOW_CONSUMER") == 1.0)
    });
    drop((first, stream));
    // Both closes are counted when each connection's reader ends, which a busy machine may run
    // after the scrape that saw the other.
    eventually(
        "the slow consumer's and second's closes are counted",
        || {
            Scrape::try_from(http).is_some_and(|scrape| {
                scrape.closed("slow_consumer") == 1.0 && scrape.closed("peer_closed") == 1.0
            })
        },
    );
    let scrape = Scrape::from(http);
    assert_eq!(
        scrape.get("uring_chat_slow_consumer_disconnects_total"),
        1.0
    );
    assert_eq!(scrape.error("SERVER_FULL"), 1.0);
    assert_eq!(
        scrape.get("uring_chat_connections_rejected_total{reason=\"server_full\"}"),
        1.0
    );
    assert_eq!(scrape.get("uring_chat_connections_accepted_total"), 3.0);
    assert_eq!(scrape.closed("peer_closed"), 1.0, "second");
    assert_eq!(scrape.open(), 0.0);
    assert_eq!(scrape.get("uring_chat_outbound_queued_bytes"), 0.0);
}

#[test]
fn a_metrics_port_serves_metrics_alone() {
    let server = TestServer::start_with(|c| c.metrics_port = Some(0));
    let http = server.http.unwrap();
    let metrics = server.metrics.expect("the metrics port is on");
    assert_ne!(metrics, http);
    let mut alice = server.login("alice");
    alice.ping("counted");
    let scrape = Scrape::from(metrics);
    assert_eq!(scrape.frames("received", "ping"), 1.0);
    assert_eq!(scrape.open(), 1.0);
    let (head, _) = get(http, "/metrics");
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    let (head, body) = get(http, "/healthz");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && body == "ok\n");
    let (head, _) = get(metrics, "/healthz");
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    // Every core answers on the metrics port too.
    for _ in 0..10 {
        assert!(get(metrics, "/metrics")
            .0
            .starts_with("HTTP/1.1 200 OK\r\n"));
    }
}

#[test]
fn promtool_accepts_a_real_scrape() {
    let Ok(version) = Command::new("promtool").arg("--version").output() else {
        println!("SKIPPED: promtool not installed (apt-get install prometheus provides it)");
        return;
    };
    assert!(version.status.success());
    let server = quiet_server(|_| {});
    let http = server.http.unwrap();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send(&chat("for promtool"));
    bob.next_reply();
    alice.send("not json");
    alice.expect_error("INVALID_MESSAGE");
    let (_, body) = get(http, "/metrics");
    common::assert_promtool_accepts(&body);
}

/// WebSocket clients are counted under `transport="ws"`: connections open, frames each way by
/// kind, bytes in, and the close by its reason.
#[test]
fn websocket_traffic_is_counted_under_its_transport() {
    let server = quiet_server(|_| {});
    let http = server.http.unwrap();
    let mut web = WsClient::login(http, "web");
    let mut tcp = server.login("tcp");
    web.send(&chat("from the browser"));
    assert_eq!(tcp.next_reply()["content"], "from the browser");
    tcp.send(&chat("to the browser"));
    assert_eq!(web.next_reply()["content"], "to the browser");
    let scrape = Scrape::from(http);
    let ws = |series: &str| scrape.get(series);
    let open_ws: f64 = (scrape.0.iter())
        .filter(|(series, _)| series.starts_with("uring_chat_connections{transport=\"ws\""))
        .map(|(_, value)| value)
        .sum();
    assert_eq!(open_ws, 1.0);
    assert_eq!(scrape.open(), 1.0, "the TCP client");
    assert_eq!(
        ws("uring_chat_frames_received_total{transport=\"ws\",kind=\"connect\"}"),
        1.0
    );
    assert_eq!(
        ws("uring_chat_frames_received_total{transport=\"ws\",kind=\"chat\"}"),
        1.0
    );
    assert_eq!(
        ws("uring_chat_frames_sent_total{transport=\"ws\",kind=\"chat\"}"),
        1.0
    );
    assert_eq!(
        ws("uring_chat_frames_sent_total{transport=\"ws\",kind=\"connect_response\"}"),
        1.0
    );
    assert!(ws("uring_chat_bytes_received_total{transport=\"ws\"}") > 0.0);
    web.close(tungstenite::protocol::frame::coding::CloseCode::Normal);
    eventually("the WebSocket close is counted", || {
        Scrape::from(http).closed("disconnect") == 1.0
    });
}
