//! End to end against the REAL uring-chat server, started in-process on a free loopback port:
//! 50 clients, 2 server cores, 50 msg/s for 1 s, broadcast and direct; the report's figures must
//! add up exactly and its JSON must match the schema.

mod common;

fn start_server() -> uring_chat::server::Server {
    let config = uring_chat::config::Config {
        host: "127.0.0.1".into(),
        port: 0,
        cores: 2,
        ..Default::default()
    };
    uring_chat::server::Server::start(config).expect("uring-chat starts")
}

fn run(port: u16, extra: &[&str]) -> loadgen::Report {
    loadgen::run(&common::small_run(port, extra)).expect("loadgen run")
}

#[test]
fn loadgen_measures_the_real_server() {
    let server = start_server();
    let port = server.local_addr().port();

    let b = run(port, &["--senders", "2"]);
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
