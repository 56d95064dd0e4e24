//! The same scenarios against Redis pub/sub, when `redis-server` is on PATH (skipped otherwise,
//! with the reason printed). The server is started here on a free loopback port and stopped after.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Redis(Child);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Option<(Redis, u16)> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = match Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--daemonize", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!(
                "SKIPPED: redis-server is not runnable here ({e}); apt-get install -y redis-server"
            );
            return None;
        }
    };
    let redis = Redis(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "redis-server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((redis, port))
}

fn run(port: u16, extra: &[&str]) -> loadgen::Report {
    let mut flags = vec!["--protocol", "redis"];
    flags.extend_from_slice(extra);
    loadgen::run(&common::small_run(port, &flags)).expect("loadgen run")
}

#[test]
fn redis_pubsub_broadcast_and_direct() {
    let Some((_redis, port)) = start_redis() else {
        return;
    };
    // Publishers are extra connections in Redis mode: a broadcast reaches all 50 subscribers.
    let b = run(port, &["--senders", "2"]);
    assert_eq!(b.protocol, "redis");
    assert_eq!(b.connect.connected, 52, "{}", b.text());
    assert_eq!(b.deliveries_expected, 50 * 50, "{}", b.text());
    assert_eq!(b.received, b.deliveries_expected, "{}", b.text());
    assert_eq!((b.lost, b.duplicated, b.out_of_order), (0, 0, 0));
    let errs = common::validate(&serde_json::to_value(&b).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    let d = run(
        port,
        &["--pattern", "direct", "--senders", "3", "--rate", "100"],
    );
    assert_eq!(d.deliveries_expected, 100, "{}", d.text());
    assert_eq!(d.received, 100, "{}", d.text());
}

#[test]
fn redis_rooms_are_channels() {
    let Some((_redis, port)) = start_redis() else {
        return;
    };
    // 50 subscribers in 10 channels room-0..room-9, 3 each: 15 per channel. The 2 publishers are
    // extra connections that publish into any channel.
    let r = run(
        port,
        &[
            "--rooms",
            "10",
            "--rooms-per-client",
            "3",
            "--senders",
            "2",
            "--rate",
            "100",
        ],
    );
    assert_eq!(r.pattern, "rooms");
    assert_eq!((r.rooms, r.rooms_per_client), (10, 3));
    assert_eq!(r.connect.connected, 52, "{}", r.text());
    assert_eq!(r.messages_sent, 100);
    assert_eq!(r.deliveries_expected, 100 * 15, "{}", r.text());
    assert_eq!(r.received, r.deliveries_expected, "{}", r.text());
    assert_eq!(
        (r.lost, r.duplicated, r.out_of_order),
        (0, 0, 0),
        "{}",
        r.text()
    );
    // Redis numbers nothing: order is checked per publisher (out_of_order), not per room.
    assert_eq!(r.order_violations, None);
    assert_eq!(r.fanout_us.as_ref().unwrap().complete, 100, "{}", r.text());
    assert!(r.server_errors.is_empty(), "{:?}", r.server_errors);
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // One channel that everyone is in, one write per message.
    let big = run(port, &["--rooms", "1", "--send-tick", "0"]);
    assert_eq!(big.deliveries_expected, 50 * 50, "{}", big.text());
    assert_eq!(big.received, big.deliveries_expected, "{}", big.text());
}

#[test]
fn redis_mixed_with_churn() {
    let Some((_redis, port)) = start_redis() else {
        return;
    };
    // 200 subscribers, each on the broadcast channel and its own; the direct senders are 20
    // extra publishing connections; 20 extra subscribers a second UNSUBSCRIBE and SUBSCRIBE.
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
            "--dm-senders",
            "20",
            "--churn",
            "20",
        ],
    );
    assert_eq!(r.connect.connected, 220, "{}", r.text());
    let k = r.kinds.as_ref().expect("kinds section");
    assert_eq!(k.broadcast.deliveries_expected, 10 * 200, "{}", r.text());
    assert_eq!(k.direct.deliveries_expected, 400, "{}", r.text());
    common::assert_kinds_whole(&r, true);
    // Redis has no presence.
    assert_eq!(k.presence.frames, 0);
    let c = r.churn.as_ref().expect("churn section");
    assert!(c.cycles >= 10 && c.failed == 0, "{}", r.text());
    let errs = common::validate(&serde_json::to_value(&r).unwrap(), &common::report_schema());
    assert!(errs.is_empty(), "{errs:#?}");

    // --big-room: the first 120 subscribe to room-0 instead of the broadcast channel.
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
            "--dm-senders",
            "20",
            "--churn",
            "20",
        ],
    );
    let k = b.kinds.as_ref().expect("kinds section");
    assert_eq!(k.broadcast.deliveries_expected, 10 * 120, "{}", b.text());
    common::assert_kinds_whole(&b, false);
    assert_eq!(b.order_violations, None);
}
