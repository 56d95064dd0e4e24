//! End to end against the REAL uring-chat server, started in-process on a free loopback port:
//! 50 clients, 2 server cores, 50 msg/s for 1 s, broadcast and direct; the report's figures must
//! add up exactly and its JSON must match the schema. Then rooms (protocol v1.1): the same clients
//! in 10 rooms of 10, and in one room of all 50. Then the same broadcast and direct runs, and mixed
//! traffic with churn, over WebSocket (`--transport ws` to `/ws` on the server's HTTP port), and
//! idle WebSocket clients that stay connected only by answering the server's pings.

mod common;

/// The real server on a free loopback port, two cores, no HTTP port, `adjust`ed.
fn start_server(
    adjust: impl FnOnce(&mut uring_chat::config::Config),
) -> uring_chat::server::Server {
    let mut config = uring_chat::config::Config {
        host: "127.0.0.1".into(),
        port: 0,
        http_port: None,
        cores: 2,
        ..Default::default()
    };
    adjust(&mut config);
    uring_chat::server::Server::start(config).expect("uring-chat starts")
}

fn run(port: u16, extra: &[&str]) -> loadgen::Report {
    loadgen::run(&common::small_run(port, extra)).expect("loadgen run")
}

#[test]
fn loadgen_measures_the_real_server() {
    let server = start_server(|_| {});
    let port = server.local_addr().port();

    let b = run(port, &["--senders", "2"]);
    assert_eq!(b.transport, "tcp");
    assert_eq!(b.connect.connected, 50, "{}", b.text());
    assert_eq!(b.messages_sent, 50);
    assert_eq!(b.deliveries_expected, 50 * 49);
    assert_eq!(b.received, b.deliveries_expected, "{}", b.text());
    assert_eq!(
        (b.lost, b.duplicated, b.out_of_order),
        (0, 0, 0),
        "{}",
        b.text()
    );
    assert!(
        b.latency_us.p50 > 0.0 && b.latency_us.max < 1_000_000.0,
        "{}",
        b.text()
    );
    assert_eq!(b.fanout_us.as_ref().unwrap().complete, 50);
    assert!(b.server_errors.is_empty(), "{:?}", b.server_errors);
    let v = serde_json::to_value(&b).unwrap();
    let errs = common::validate(&v, &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    let d = run(
        port,
        &["--pattern", "direct", "--senders", "3", "--rate", "100"],
    );
    assert_eq!(d.deliveries_expected, 100, "{}", d.text());
    assert_eq!(d.received, 100, "{}", d.text());
    assert_eq!(d.lost, 0);
    assert!(d.server_errors.is_empty(), "{:?}", d.server_errors);

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn loadgen_rooms_against_the_real_server() {
    let server = start_server(|c| c.rate_limit = 0);
    let port = server.local_addr().port();

    // 50 clients in 10 rooms, 2 each (client i: rooms 2i, 2i+1 mod 10): 10 members per room, the
    // 5 senders one per room pair. A room message reaches every member, its sender included.
    let r = run(
        port,
        &[
            "--rooms",
            "10",
            "--rooms-per-client",
            "2",
            "--senders",
            "5",
            "--rate",
            "100",
        ],
    );
    assert_eq!(r.connect.connected, 50, "{}", r.text());
    assert_eq!(r.messages_sent, 100);
    assert_eq!(r.deliveries_expected, 100 * 10, "{}", r.text());
    assert_eq!(r.received, r.deliveries_expected, "{}", r.text());
    assert_eq!(
        (r.lost, r.duplicated, r.order_violations),
        (0, 0, Some(0)),
        "{}",
        r.text()
    );
    assert_eq!(r.fanout_us.as_ref().unwrap().complete, 100, "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // One room of all 50, each message its own write.
    let big = run(port, &["--rooms", "1", "--send-tick", "0"]);
    assert_eq!(big.deliveries_expected, 50 * 50, "{}", big.text());
    assert_eq!(big.received, big.deliveries_expected, "{}", big.text());
    assert_eq!(
        (big.lost, big.duplicated, big.order_violations),
        (0, 0, Some(0)),
        "{}",
        big.text()
    );

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn loadgen_mixed_against_the_real_server() {
    let server = start_server(|c| c.rate_limit = 0);
    let port = server.local_addr().port();

    // 200 clients: 10 broadcasts/s to the 199 others, 400 direct messages/s each its own write
    // from every client, 20 extra clients a second logging out and in again.
    let r = run(
        port,
        &[
            "--clients",
            "200",
            "--pattern",
            "mixed",
            "--broadcast-rate",
            "10",
            "--dm-rate",
            "400",
            "--churn",
            "20",
        ],
    );
    assert_eq!(r.connect.connected, 200, "{}", r.text());
    let k = r.kinds.as_ref().expect("kinds section");
    assert_eq!(k.broadcast.messages_sent, 10, "{}", r.text());
    assert_eq!(k.broadcast.deliveries_expected, 10 * 199, "{}", r.text());
    assert_eq!(k.direct.messages_sent, 400, "{}", r.text());
    common::assert_kinds_whole(&r, true);
    assert_eq!(r.received, r.deliveries_expected, "{}", r.text());
    let c = r.churn.as_ref().expect("churn section");
    assert!(c.cycles >= 10 && c.failed == 0, "{}", r.text());
    // Every churned login and logout reaches the others as coalesced presence.
    assert!(k.presence.frames >= 200, "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // The broadcast stream into a room of the first 120 instead (the churning clients join it
    // too); the room's order is checked by its seq.
    let b = run(
        port,
        &[
            "--clients",
            "200",
            "--pattern",
            "mixed",
            "--big-room",
            "120",
            "--broadcast-rate",
            "10",
            "--dm-rate",
            "400",
            "--churn",
            "20",
        ],
    );
    let k = b.kinds.as_ref().expect("kinds section");
    assert_eq!(k.broadcast.deliveries_expected, 10 * 120, "{}", b.text());
    common::assert_kinds_whole(&b, true);
    assert_eq!(b.order_violations, Some(0), "{}", b.text());
    assert!(b.server_errors.is_empty(), "{:?}", b.server_errors);
    let c = b.churn.as_ref().expect("churn section");
    assert!(c.cycles >= 10 && c.failed == 0, "{}", b.text());

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn loadgen_over_websocket_against_the_real_server() {
    let server = start_server(|c| c.http_port = Some(0));
    let port = server.http_addr().expect("the HTTP port is on").port();
    let ws = |extra: &[&str]| run(port, &[&["--transport", "ws"], extra].concat());

    let b = ws(&["--senders", "2"]);
    assert_eq!(b.transport, "ws");
    assert_eq!(b.connect.connected, 50, "{}", b.text());
    assert_eq!(b.messages_sent, 50);
    assert_eq!(b.deliveries_expected, 50 * 49);
    assert_eq!(b.received, b.deliveries_expected, "{}", b.text());
    assert_eq!(
        (b.lost, b.duplicated, b.out_of_order),
        (0, 0, 0),
        "{}",
        b.text()
    );
    assert_eq!(b.fanout_us.as_ref().unwrap().complete, 50);
    assert!(b.server_errors.is_empty(), "{:?}", b.server_errors);
    let errs = common::validate(&serde_json::to_value(&b).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    let d = ws(&["--pattern", "direct", "--senders", "3", "--rate", "100"]);
    assert_eq!(d.deliveries_expected, 100, "{}", d.text());
    assert_eq!(d.received, 100, "{}", d.text());
    assert_eq!(d.lost, 0);
    assert!(d.server_errors.is_empty(), "{:?}", d.server_errors);

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn loadgen_mixed_with_churn_over_websocket() {
    let server = start_server(|c| {
        c.http_port = Some(0);
        c.rate_limit = 0;
    });
    let port = server.http_addr().expect("the HTTP port is on").port();

    // 100 WebSocket clients: 10 broadcasts/s, 200 direct messages/s each its own write, 10 extra
    // clients a second logging out (the server closes the WebSocket) and in again (a new upgrade).
    let r = run(
        port,
        &[
            "--transport",
            "ws",
            "--clients",
            "100",
            "--pattern",
            "mixed",
            "--broadcast-rate",
            "10",
            "--dm-rate",
            "200",
            "--churn",
            "10",
        ],
    );
    assert_eq!(r.connect.connected, 100, "{}", r.text());
    let k = r.kinds.as_ref().expect("kinds section");
    assert_eq!(k.broadcast.deliveries_expected, 10 * 99, "{}", r.text());
    assert_eq!(k.direct.messages_sent, 200, "{}", r.text());
    common::assert_kinds_whole(&r, true);
    let c = r.churn.as_ref().expect("churn section");
    assert!(c.cycles >= 5 && c.failed == 0, "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn idle_websocket_clients_answer_the_servers_pings() {
    // The server pings a connection silent for 500 ms and closes it after 1.5 s without an answer.
    // (Much shorter intervals keep some ping always in flight, and loadgen's settle phase, which
    // waits for 300 ms without a byte after the logins, would wait its 10 s out.)
    let server = start_server(|c| {
        c.http_port = Some(0);
        c.ping_interval = std::time::Duration::from_millis(500);
    });
    let port = server.http_addr().expect("the HTTP port is on").port();

    // 2 msg/s for 3 s: the 49 receivers never send, so only their pongs keep them connected.
    let r = run(
        port,
        &["--transport", "ws", "--rate", "2", "--duration", "3s"],
    );
    assert_eq!(r.deliveries_expected, 6 * 49, "{}", r.text());
    assert_eq!(r.received, r.deliveries_expected, "{}", r.text());
    assert_eq!(r.clients_disconnected, 0, "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn loadgen_logs_in_with_minted_tokens_where_the_server_requires_them() {
    let secret = "a test secret of at least thirty-two bytes";
    let server = start_server(|c| {
        c.auth_key = uring_chat::config::AuthKey::Secret(secret.as_bytes().to_vec());
    });
    let port = server.local_addr().port();
    let without = loadgen::run(&common::small_run(port, &[]));
    assert!(
        without.map_or(true, |report| report.connect.connected == 0),
        "a run without tokens gets no client in"
    );
    let report = run(port, &["--auth-jwt-secret", secret]);
    assert_eq!(report.connect.connected, 50, "{}", report.text());
    assert_eq!(report.lost, 0, "{}", report.text());
    assert!(report.received > 0);
}
