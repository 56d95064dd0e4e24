//! `--hosts` against the REAL uring-chat server. Without the cluster (issue 12) the only multi-host
//! target is one server listed twice: the clients then spread over two entries that are the same
//! node, which tests the spreading and the per-host figures, not cross-node delivery.

mod common;

fn start_server() -> uring_chat::server::Server {
    let config = uring_chat::config::Config {
        host: "127.0.0.1".into(),
        port: 0,
        http_port: None,
        cores: 2,
        rate_limit: 0,
        ..Default::default()
    };
    uring_chat::server::Server::start(config).expect("uring-chat starts")
}

/// `common::small_run`'s shape with `--hosts` instead of `--port`.
fn hosts_run(hosts: &str, extra: &[&str]) -> loadgen::Report {
    let opts = common::small_run_against(&["--hosts", hosts], extra);
    loadgen::run(&opts).expect("loadgen run")
}

#[test]
fn hosts_spread_the_clients_and_check_delivery_over_all_of_them() {
    let server = start_server();
    let addr = server.local_addr().to_string();
    let hosts = format!("{addr},{addr}");

    let b = hosts_run(&hosts, &["--senders", "2"]);
    assert_eq!(b.target, hosts);
    assert_eq!(b.hosts.len(), 2, "{}", b.text());
    for h in &b.hosts {
        assert_eq!(h.target, addr);
        // Client i goes to entry i mod 2: 25 each, every one logged in, each entry's clients
        // getting the 49 deliveries of every broadcast but their own.
        assert_eq!((h.clients, h.connected), (25, 25), "{}", b.text());
        assert!(h.received >= 50 * 24, "{}", b.text());
    }
    assert_eq!(b.hosts.iter().map(|h| h.received).sum::<u64>(), b.received);
    assert_eq!(b.deliveries_expected, 50 * 49);
    assert_eq!(b.received, b.deliveries_expected, "{}", b.text());
    assert_eq!((b.lost, b.duplicated), (0, 0), "{}", b.text());
    let errs = common::validate(&serde_json::to_value(&b).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // Direct messages to recipients on either entry.
    let d = hosts_run(
        &hosts,
        &["--pattern", "direct", "--senders", "3", "--rate", "100"],
    );
    assert_eq!((d.received, d.lost), (100, 0), "{}", d.text());
    assert_eq!(d.hosts.iter().map(|h| h.received).sum::<u64>(), 100);

    server.shutdown();
    server.join().expect("server cores exit cleanly");
}

#[test]
fn hosts_options() {
    let parse = |args: &[&str]| {
        <loadgen::Options as clap::Parser>::try_parse_from([&["loadgen"], args].concat())
    };
    let o = parse(&["--hosts", "127.0.0.1:8080, 127.0.0.2:9000"]).unwrap();
    assert_eq!(
        o.targets(),
        vec![
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.2:9000".parse().unwrap()
        ]
    );
    // The single-target form still works and is the default.
    let o = parse(&["--port", "9000"]).unwrap();
    assert_eq!(o.targets(), vec!["127.0.0.1:9000".parse().unwrap()]);
    // One form or the other; addresses with ports; loopback only.
    assert!(parse(&["--hosts", "127.0.0.1:8080", "--port", "8080"]).is_err());
    assert!(parse(&["--hosts", "127.0.0.1:8080", "--host", "127.0.0.1"]).is_err());
    assert!(parse(&["--hosts", "127.0.0.1"]).is_err());
    assert!(parse(&["--hosts", "localhost:8080"]).is_err());
    let remote = parse(&["--hosts", "127.0.0.1:8080,10.0.0.1:8080"]).unwrap();
    let e = loadgen::run(&remote).expect_err("refused").to_string();
    assert!(e.contains("loopback"), "{e}");
}
