//! loadgen over real sockets against the in-test mock of the uring-chat protocol: broadcast and
//! direct accounting, pongs, slow clients, thresholds, the binary's `--json` output against the
//! schema, `--plot` and `loadgen plot`.

mod common;

use loadgen::Options;
use std::process::Command;

fn opts(port: u16, extra: &[&str]) -> Options {
    common::small_run(port, extra)
}

#[test]
fn broadcast_counts_every_delivery() {
    let mock = common::mock::start(1 << 30);
    let r = loadgen::run(&opts(mock.addr.port(), &["--senders", "2"])).unwrap();
    assert_eq!(r.connect.connected, 50);
    assert_eq!(r.connect.failed, 0);
    assert_eq!(r.messages_sent, 50);
    // A broadcast reaches every other client: 49 per message.
    assert_eq!(r.deliveries_expected, 50 * 49);
    assert_eq!(r.received, r.deliveries_expected, "{}", r.text());
    assert_eq!((r.lost, r.duplicated, r.out_of_order), (0, 0, 0));
    assert!(r.latency_us.p50 > 0.0 && r.latency_us.p50 <= r.latency_us.p99);
    assert!(r.latency_us.p99 <= r.latency_us.max);
    assert!(r.latency_us.max < 1_000_000.0, "{}", r.text());
    let f = r.fanout_us.as_ref().unwrap();
    assert_eq!((f.complete, f.incomplete), (50, 0));
    assert!(f.p50 >= r.latency_us.p50 * 0.5);
    assert!(r.cpu.loadgen_ns_per_delivery.unwrap() > 0.0);
    assert!(r.thresholds.passed);
    assert!((r.deliveries_per_sec - 2450.0).abs() < 1.0);
    // Every client answered the mock's ping with a pong.
    assert_eq!(mock.pongs.load(std::sync::atomic::Ordering::Relaxed), 50);
}

#[test]
fn direct_expects_one_delivery_per_message() {
    let mock = common::mock::start(1 << 30);
    let r = loadgen::run(&opts(
        mock.addr.port(),
        &["--pattern", "direct", "--senders", "3", "--rate", "200"],
    ))
    .unwrap();
    assert_eq!(r.pattern, "direct");
    assert_eq!(r.messages_sent, 200);
    assert_eq!(r.deliveries_expected, 200);
    assert_eq!(r.received, 200, "{}", r.text());
    assert_eq!(r.lost, 0);
    assert_eq!(r.fanout_us.as_ref().unwrap().complete, 200);
}

#[test]
fn slow_clients_are_excluded_and_disconnections_counted() {
    // 10% of 50 clients never read; the mock kicks a client past 256 KiB queued. A reading
    // client would have to stall for a quarter of a second to be kicked (at 64 KiB, a test run
    // beside compiles on two CPUs kicked 44 readers); a slow one is sent ~1.2 MB, well past the
    // threshold plus what the kernel buffers.
    let mock = common::mock::start(256 * 1024);
    let r = loadgen::run(&opts(
        mock.addr.port(),
        &["--slow-clients", "10", "--rate", "1000", "--size", "1024"],
    ))
    .unwrap();
    assert_eq!(r.slow_clients, 5);
    assert_eq!(r.deliveries_expected, r.messages_sent * 44, "{}", r.text());
    assert_eq!(r.lost, 0, "{}", r.text());
    let kicked = mock.slow_kicked.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(kicked, 5, "the mock should have kicked every slow client");
    assert_eq!(r.slow_disconnected, 5, "{}", r.text());
}

#[test]
fn thresholds_and_limits_make_errors() {
    let mock = common::mock::start(1 << 30);
    let r = loadgen::run(&opts(
        mock.addr.port(),
        &["--max-p99", "1ns", "--max-loss", "0"],
    ))
    .unwrap();
    assert!(r.thresholds.p99_exceeded && !r.thresholds.loss_exceeded && !r.thresholds.passed);

    // More connections than the open-file limit allows: a named limit, no report.
    let e = loadgen::run(&opts(mock.addr.port(), &["--clients", "1000000"])).unwrap_err();
    assert!(matches!(e, loadgen::Error::Limit(_)), "{e}");
    assert!(e.to_string().contains("open-file limit"), "{e}");

    // Nothing listening: clients fail, the sender cannot log in, no report.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let e = loadgen::run(&opts(port, &["--clients", "5"])).unwrap_err();
    assert!(matches!(e, loadgen::Error::Target(_)), "{e}");
}

#[test]
fn find_max_steps_up_and_reports_the_highest_rate_held() {
    let mock = common::mock::start(1 << 30);
    let r = loadgen::run(&opts(
        mock.addr.port(),
        &[
            "--clients",
            "20",
            "--rate",
            "100",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
            "--find-max",
            "--max-p99",
            "2ms",
            "--find-max-steps",
            "1",
            "--drain-quiet",
            "200ms",
        ],
    ))
    .unwrap();
    let fm = r.find_max.as_ref().expect("find_max section");
    assert!(!fm.steps.is_empty());
    assert_eq!(fm.steps[0].rate, 100.0);
    for w in fm.steps.windows(2) {
        if w[0].held {
            assert!(w[1].rate > w[0].rate || !w[1].held);
        }
    }
    let held_max = fm
        .steps
        .iter()
        .filter(|s| s.held)
        .map(|s| s.rate)
        .fold(0.0, f64::max);
    assert_eq!(fm.max_rate, held_max);
}

#[test]
fn binary_json_output_matches_the_schema_and_plots() {
    let mock = common::mock::start(1 << 30);
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("run.svg");
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--port", &mock.addr.port().to_string()])
        .args([
            "--clients",
            "30",
            "--rate",
            "100",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
        ])
        .args(["--json", "--server-pid", &std::process::id().to_string()])
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Progress goes to stderr as plain lines (not a terminal); stdout holds the report alone.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect+login 30/30"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errs = common::validate(&v, &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");
    assert_eq!(v["received"], 100 * 29);
    assert!(v["cpu"]["server_ns_per_delivery"].is_number());
    assert!(std::fs::read_to_string(&svg).unwrap().contains("</svg>"));

    let report = dir.join("a.json");
    std::fs::write(&report, &out.stdout).unwrap();
    let chart = dir.join("cmp.svg");
    let st = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["plot", "--out"])
        .arg(&chart)
        .arg(&report)
        .arg(&report)
        .status()
        .unwrap();
    assert!(st.success());
    let text = std::fs::read_to_string(&chart).unwrap();
    assert_eq!(text.matches("<path").count(), 2);

    // A crossed threshold is exit code 1; bad options are 2.
    let st = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--port",
            &mock.addr.port().to_string(),
            "--clients",
            "5",
            "--rate",
            "20",
        ])
        .args([
            "--duration",
            "200ms",
            "--warmup",
            "0s",
            "--max-p99",
            "1ns",
            "-q",
        ])
        .output()
        .unwrap();
    assert_eq!(
        st.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let st = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(["--host", "10.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn rooms_reach_every_member_in_room_order() {
    let mock = common::mock::start(1 << 30);
    // 50 clients in 10 rooms, 2 each: 10 members per room. Senders 0..5 are in rooms 0..10, one
    // sending member per room. Every member gets each message of its room, the sender included.
    let r = loadgen::run(&opts(
        mock.addr.port(),
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
    ))
    .unwrap();
    assert_eq!(r.pattern, "rooms");
    assert_eq!((r.rooms, r.rooms_per_client), (10, 2));
    assert_eq!(r.messages_sent, 100);
    assert_eq!(r.deliveries_expected, 100 * 10, "{}", r.text());
    assert_eq!(r.received, r.deliveries_expected, "{}", r.text());
    assert_eq!(
        (r.lost, r.duplicated, r.out_of_order, r.order_violations),
        (0, 0, 0, Some(0)),
        "{}",
        r.text()
    );
    let f = r.fanout_us.as_ref().unwrap();
    assert_eq!((f.complete, f.incomplete), (100, 0), "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);
    assert!(r.text().contains("10 rooms, 2 per client"), "{}", r.text());
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // One room of all 50, one write per message: each message reaches all 50.
    let big = loadgen::run(&opts(
        mock.addr.port(),
        &["--rooms", "1", "--send-tick", "0", "--clients", "30"],
    ))
    .unwrap();
    assert_eq!(big.deliveries_expected, 50 * 30, "{}", big.text());
    assert_eq!(big.received, big.deliveries_expected, "{}", big.text());
    assert_eq!(big.order_violations, Some(0));

    // A server that skips a room seq now and then is caught, without counting anything lost.
    let faulty = common::mock::start_with(1 << 30, 7);
    let f = loadgen::run(&opts(
        faulty.addr.port(),
        &["--rooms", "5", "--senders", "5", "--rate", "100"],
    ))
    .unwrap();
    assert!(f.order_violations.unwrap() > 0, "{}", f.text());
    assert_eq!(f.received, f.deliveries_expected, "{}", f.text());
    assert_eq!(f.duplicated, 0);
}

#[test]
fn room_options_that_cannot_work_are_refused() {
    let o = |extra: &[&str]| opts(1, extra);
    // Ten rooms of one per client need ten sending members.
    let e = loadgen::run(&o(&["--rooms", "10"])).unwrap_err();
    assert!(
        e.to_string().contains("--senders ≥") && e.to_string().contains("= 10"),
        "{e}"
    );
    let e = loadgen::run(&o(&["--rooms", "3", "--pattern", "direct"])).unwrap_err();
    assert!(matches!(e, loadgen::Error::Config(_)), "{e}");
    let e = loadgen::run(&o(&["--rooms", "3", "--rooms-per-client", "4"])).unwrap_err();
    assert!(e.to_string().contains("--rooms-per-client"), "{e}");
    let e = loadgen::run(&o(&["--rooms", "60", "--senders", "50"])).unwrap_err();
    assert!(e.to_string().contains("every room needs a member"), "{e}");
}

#[test]
fn mixed_counts_each_kind_and_churns() {
    let mock = common::mock::start(1 << 30);
    // 100 clients: 20 broadcasts/s (to the 99 others) and 500 direct messages/s from every
    // client, while 20 extra clients a second log out and back in.
    let r = loadgen::run(&opts(
        mock.addr.port(),
        &[
            "--clients",
            "100",
            "--pattern",
            "mixed",
            "--broadcast-rate",
            "20",
            "--dm-rate",
            "500",
            "--churn",
            "20",
        ],
    ))
    .unwrap();
    assert_eq!(r.pattern, "mixed");
    assert_eq!(r.rate, 520.0);
    assert_eq!(r.senders, 100, "every reading client sends direct messages");
    let k = r.kinds.as_ref().expect("kinds section");
    assert_eq!(k.broadcast.messages_sent, 20, "{}", r.text());
    assert_eq!(k.broadcast.deliveries_expected, 20 * 99, "{}", r.text());
    assert_eq!(k.direct.messages_sent, 500, "{}", r.text());
    assert_eq!(k.direct.deliveries_expected, 500, "{}", r.text());
    common::assert_kinds_whole(&r, true);
    for x in [&k.broadcast, &k.direct] {
        assert!(x.latency_us.p99 > 0.0 && x.latency_us.count == x.received);
    }
    // The top-level figures are both kinds together.
    assert_eq!(r.deliveries_expected, 20 * 99 + 500);
    assert_eq!(r.received, r.deliveries_expected);
    assert_eq!(r.fanout_us.as_ref().unwrap().complete, 520, "{}", r.text());
    // Churn happened, and every churned login told the others (the mock's presence).
    let c = r.churn.as_ref().expect("churn section");
    assert_eq!(c.clients, 20);
    assert!(c.cycles >= 10, "{}", r.text());
    assert_eq!(c.failed, 0, "{}", r.text());
    assert!(k.presence.frames >= 100 * 10, "{}", r.text());
    assert!(k.presence.bytes > k.presence.frames * 50);
    assert!(r.text().contains("broadcast") && r.text().contains("churn:"));
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");
}

#[test]
fn mixed_options_that_cannot_work_are_refused() {
    let o = |extra: &[&str]| opts(1, extra);
    let e = loadgen::run(&o(&["--dm-rate", "10"])).unwrap_err();
    assert!(e.to_string().contains("--pattern mixed"), "{e}");
    let e = loadgen::run(&o(&["--pattern", "mixed"])).unwrap_err();
    assert!(e.to_string().contains("--dm-rate"), "{e}");
    let e = loadgen::run(&o(&[
        "--pattern",
        "mixed",
        "--dm-rate",
        "1",
        "--rooms",
        "2",
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("--rooms"), "{e}");
    let e = loadgen::run(&o(&[
        "--pattern",
        "mixed",
        "--dm-rate",
        "1",
        "--dm-senders",
        "51",
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("--dm-senders"), "{e}");
}

#[test]
fn mixed_big_room_takes_the_broadcast_stream() {
    let mock = common::mock::start(1 << 30);
    // The first 60 of 100 clients are in room-0; the broadcast stream goes there (the sender
    // gets its own room message back), direct messages go to any of the 100.
    let r = loadgen::run(&opts(
        mock.addr.port(),
        &[
            "--clients",
            "100",
            "--pattern",
            "mixed",
            "--big-room",
            "60",
            "--broadcast-rate",
            "20",
            "--dm-rate",
            "300",
            "--churn",
            "10",
        ],
    ))
    .unwrap();
    let k = r.kinds.as_ref().expect("kinds section");
    assert_eq!(k.big_room, 60);
    assert_eq!(k.broadcast.deliveries_expected, 20 * 60, "{}", r.text());
    assert_eq!(k.direct.deliveries_expected, 300, "{}", r.text());
    common::assert_kinds_whole(&r, true);
    assert_eq!(r.order_violations, Some(0), "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);
    assert!(r.churn.as_ref().unwrap().cycles >= 5, "{}", r.text());
}
