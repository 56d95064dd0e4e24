//! Unit tests of the pieces: stamp scanning (split reads, padding), the open-loop schedule, order
//! tracking, option parsing, limits, RESP parsing and the spectrum.

use loadgen::clock::{Rng, Schedule};
use loadgen::options::{parse_duration, parse_loss, parse_source_ips, LossLimit};
use loadgen::stamp::{parse_stamp, scan_line, write_payload, Frame, LineBuffer, Stamp};
use loadgen::stats::{Order, SeqTracker, ThreadStats, Window};
use std::time::Duration;

fn stamp(sender: u32, seq: u64, ns: u64) -> Stamp {
    Stamp {
        sender,
        seq,
        intended_ns: ns,
    }
}

#[test]
fn payload_is_padded_to_size_and_parses_back() {
    let s = stamp(3, 12345, 987_654_321_000);
    let mut out = Vec::new();
    write_payload(&mut out, s, 64);
    assert_eq!(out.len(), 64);
    assert!(out.starts_with(b"3:12345:987654321000:"));
    assert!(out[21..].iter().all(|&b| b == b'x'));
    assert_eq!(parse_stamp(&out), Some(s));

    // A size below the stamp never cuts it.
    let mut short = Vec::new();
    write_payload(&mut short, s, 4);
    assert_eq!(short, b"3:12345:987654321000:");
    assert_eq!(parse_stamp(&short), Some(s));

    // Zeros and the largest values survive.
    let big = stamp(u32::MAX, u64::MAX, u64::MAX);
    let mut b = Vec::new();
    write_payload(&mut b, big, 0);
    assert_eq!(parse_stamp(&b), Some(big));
    let zero = stamp(0, 0, 0);
    let mut z = Vec::new();
    write_payload(&mut z, zero, 10);
    assert_eq!(parse_stamp(&z), Some(zero));
}

#[test]
fn foreign_payloads_are_not_stamps() {
    for p in [
        &b"hello"[..],
        b"",
        b"1:2",
        b"1:2:3",
        b"a:2:3:",
        b":1:2:3:",
        b"1::2:3",
    ] {
        assert_eq!(parse_stamp(p), None, "{:?}", String::from_utf8_lossy(p));
    }
    // Overflow is rejected, not wrapped.
    assert_eq!(parse_stamp(b"1:99999999999999999999999:3:"), None);
}

fn chat_line(s: Stamp, size: usize) -> Vec<u8> {
    let mut l = br#"{"type":"chat","senderID":"0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f","recipientID":"","content":""#.to_vec();
    write_payload(&mut l, s, size);
    l.extend_from_slice(br#"","username":"lg1-0"}"#);
    l
}

#[test]
fn scan_line_classifies_frames() {
    let s = stamp(1, 2, 3);
    assert_eq!(scan_line(&chat_line(s, 64)), Frame::Chat(s));
    assert_eq!(
        scan_line(
            br#"{"type":"chat","senderID":"a","recipientID":"","content":"hi","username":"b"}"#
        ),
        Frame::Foreign
    );
    assert_eq!(
        scan_line(br#"{"type":"ping","senderID":"server","content":""}"#),
        Frame::Ping
    );
    assert_eq!(
        scan_line(br#"{"type":"error","senderID":"server","code":"SLOW_CONSUMER","content":"x"}"#),
        Frame::Error(b"SLOW_CONSUMER")
    );
    assert_eq!(
        scan_line(br#"{"type":"presence","senderID":"server","content":"{}"}"#),
        Frame::Other
    );
}

/// Feeds `stream` through a LineBuffer in chunks of `chunk` bytes and returns the stamps found.
fn feed(stream: &[u8], chunk: usize, initial: usize) -> Vec<Stamp> {
    let mut lb = LineBuffer::new(initial, 1 << 20);
    let mut found = Vec::new();
    for piece in stream.chunks(chunk) {
        let mut rest = piece;
        while !rest.is_empty() {
            let spare = lb.spare().expect("room");
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            lb.advance(n);
            rest = &rest[n..];
            lb.drain_lines(|line| {
                if let Frame::Chat(s) = scan_line(line) {
                    found.push(s)
                }
            });
        }
    }
    found
}

#[test]
fn split_reads_find_every_stamp_at_every_split() {
    let stamps: Vec<Stamp> = (0..50)
        .map(|i| stamp(i % 3, i as u64, 1_000 + i as u64))
        .collect();
    let mut stream = Vec::new();
    for (i, s) in stamps.iter().enumerate() {
        stream.extend_from_slice(&chat_line(*s, 16 + i * 7));
        // Mix LF and CRLF line ends, and a presence frame in between.
        stream.extend_from_slice(if i % 2 == 0 { b"\n" } else { b"\r\n" });
        if i % 5 == 0 {
            stream.extend_from_slice(
                b"{\"type\":\"presence\",\"senderID\":\"server\",\"content\":\"{}\"}\n",
            );
        }
    }
    for chunk in [1, 2, 3, 7, 64, 100, 1000, stream.len()] {
        assert_eq!(feed(&stream, chunk, 64), stamps, "chunk {chunk}");
    }
}

#[test]
fn line_buffer_grows_only_for_a_large_frame() {
    let big = chat_line(stamp(0, 1, 2), 10_000);
    let mut stream = big.clone();
    stream.push(b'\n');
    let mut lb = LineBuffer::new(1024, 1 << 20);
    assert_eq!(lb.capacity(), 1024);
    let mut got = 0;
    let mut rest = &stream[..];
    while !rest.is_empty() {
        let spare = lb.spare().unwrap();
        let n = spare.len().min(rest.len());
        spare[..n].copy_from_slice(&rest[..n]);
        lb.advance(n);
        rest = &rest[n..];
        lb.drain_lines(|l| got += matches!(scan_line(l), Frame::Chat(_)) as usize);
    }
    assert_eq!(got, 1);
    assert!(lb.capacity() >= big.len() && lb.capacity() <= 4 * big.len());
    assert!(lb.data().is_empty());

    // A frame past the maximum is refused rather than buffered without bound.
    let mut small = LineBuffer::new(64, 128);
    let spare = small.spare().unwrap();
    let n = spare.len();
    spare.fill(b'a');
    small.advance(n);
    let spare = small.spare().unwrap();
    let n = spare.len();
    spare.fill(b'a');
    small.advance(n);
    assert!(small.spare().is_none());
}

#[test]
fn schedule_is_open_loop_and_exact() {
    let s = Schedule {
        start_ns: 1_000_000,
        rate: 1000.0,
        first: 10,
        end: 20,
    };
    assert_eq!(s.intended(10), 1_000_000);
    assert_eq!(s.intended(11), 2_000_000);
    assert_eq!(s.intended(19), 10_000_000);
    // Nothing is due before the start; everything up to `now` is due at once after a stall.
    assert_eq!(s.due_until(10, 999_999), 10);
    assert_eq!(s.due_until(10, 1_000_000), 11);
    assert_eq!(s.due_until(10, 5_500_000), 15);
    assert_eq!(s.due_until(15, u64::MAX), 20);
    // Fractional rates keep long-run accuracy.
    let slow = Schedule {
        start_ns: 0,
        rate: 3.0,
        first: 0,
        end: 1000,
    };
    assert_eq!(slow.intended(3), 1_000_000_000);
    assert_eq!(slow.intended(300), 100_000_000_000);
    assert_eq!(Schedule::count_for(50.0, Duration::from_secs(1)), 50);
    assert_eq!(Schedule::count_for(2.5, Duration::from_millis(1000)), 3);
}

#[test]
fn rng_spreads_over_the_range() {
    let mut r = Rng::new(42);
    let mut hits = [0u32; 10];
    for _ in 0..100_000 {
        hits[r.below(10)] += 1;
    }
    for h in hits {
        assert!((9_000..11_000).contains(&h), "{hits:?}");
    }
}

#[test]
fn seq_tracker_counts_duplicates_and_reordering() {
    for senders in [2, 1000] {
        let mut t = SeqTracker::new(senders);
        assert_eq!(t.observe(0, 5), Order::InOrder);
        assert_eq!(t.observe(1, 3), Order::InOrder);
        assert_eq!(t.observe(0, 5), Order::Duplicate);
        assert_eq!(t.observe(0, 9), Order::InOrder); // gaps are normal for direct messages
        assert_eq!(t.observe(0, 7), Order::OutOfOrder);
        assert_eq!(t.observe(1, 4), Order::InOrder);
        assert_eq!(t.observe(500, 1), Order::InOrder); // a sender past the initial size
    }
}

#[test]
fn thread_stats_measure_only_the_window_and_merge() {
    let mut a = ThreadStats::new(Window { start: 10, end: 20 });
    let mut order = SeqTracker::new(1);
    assert!(!a.record(stamp(0, 5, 0), 1_000_000, &mut order)); // warmup
    assert!(a.record(stamp(0, 10, 0), 2_000_000, &mut order));
    assert!(!a.record(stamp(0, 10, 0), 2_000_000, &mut order)); // duplicate
    assert!(a.record(stamp(0, 12, 1_000_000), 4_000_000, &mut order));
    assert!(a.record(stamp(0, 11, 0), 9_000_000, &mut order)); // late, counted, out of order
    assert!(!a.record(stamp(0, 25, 0), 9_000_000, &mut order)); // past the window
    assert_eq!((a.received, a.duplicated, a.out_of_order), (3, 1, 1));
    assert_eq!(a.fanout[0], (2_000_000, 1));
    assert_eq!(a.fanout[2], (3_000_000, 1));

    let mut b = ThreadStats::new(Window { start: 10, end: 20 });
    let mut order_b = SeqTracker::new(1);
    b.record(stamp(0, 10, 0), 5_000_000, &mut order_b);
    b.count_error(b"SLOW_CONSUMER");
    a.merge(&b);
    assert_eq!(a.received, 4);
    assert_eq!(a.fanout[0], (5_000_000, 2));
    assert_eq!(a.errors.get("SLOW_CONSUMER"), Some(&1));
    assert_eq!(a.latency.len(), 4);
}

#[test]
fn option_parsers() {
    assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
    assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
    assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
    assert_eq!(parse_duration("100us").unwrap(), Duration::from_micros(100));
    assert!(parse_duration("ten").is_err());
    assert!(parse_duration("5parsecs").is_err());

    assert_eq!(parse_loss("0").unwrap(), LossLimit::Count(0));
    assert_eq!(parse_loss("0.5%").unwrap(), LossLimit::Percent(0.5));
    assert!(parse_loss("x").is_err());
    assert!(LossLimit::Count(0).crossed(1, 100));
    assert!(!LossLimit::Count(1).crossed(1, 100));
    assert!(LossLimit::Percent(0.5).crossed(6, 1000));
    assert!(!LossLimit::Percent(0.5).crossed(5, 1000));

    let ips = parse_source_ips("127.0.0.2-127.0.0.9").unwrap();
    assert_eq!(ips.0.len(), 8);
    assert_eq!(ips.0[0].to_string(), "127.0.0.2");
    assert_eq!(parse_source_ips("127.0.0.5, 127.0.0.6").unwrap().0.len(), 2);
    assert!(
        parse_source_ips("10.0.0.1").is_err(),
        "non-loopback refused"
    );
    assert!(parse_source_ips("127.0.0.9-127.0.0.2").is_err());

    use clap::Parser;
    let o = loadgen::Options::try_parse_from([
        "loadgen",
        "--clients",
        "10000",
        "--senders",
        "4",
        "--rate",
        "500",
        "--pattern",
        "direct",
        "--protocol",
        "redis",
        "--max-p99",
        "50ms",
        "--max-loss",
        "0.1%",
        "--slow-clients",
        "5",
        "--source-ips",
        "127.0.0.2-127.0.0.3",
        "--find-max",
        "--json",
    ])
    .unwrap();
    assert_eq!(o.clients, 10000);
    assert_eq!(o.senders, 4);
    assert_eq!(o.pattern, loadgen::Pattern::Direct);
    assert_eq!(o.protocol, loadgen::Protocol::Redis);
    assert_eq!(o.max_p99, Some(Duration::from_millis(50)));
    let d = loadgen::Options::default();
    assert_eq!((d.port, d.senders, d.size), (8080, 1, 64));
    assert_eq!(d.transport, loadgen::Transport::Tcp);
    assert_eq!(d.host.to_string(), "127.0.0.1");
}

#[test]
fn websocket_transport_defaults_to_the_http_port() {
    use clap::Parser;
    let parse =
        |args: &[&str]| loadgen::Options::try_parse_from(["loadgen"].iter().chain(args)).unwrap();
    let ws = parse(&["--transport", "ws"]);
    assert_eq!((ws.transport, ws.port), (loadgen::Transport::Ws, 8081));
    assert_eq!(parse(&["--transport", "ws", "--port", "9000"]).port, 9000);
    assert_eq!(parse(&["--port", "9000", "--transport", "ws"]).port, 9000);
    assert_eq!(parse(&["--transport", "tcp"]).port, 8080);
    // Redis has no WebSocket endpoint.
    let e = loadgen::run(&parse(&["--transport", "ws", "--protocol", "redis"]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--transport ws"), "{e}");
}

#[test]
fn limits_are_named() {
    assert!(loadgen::limits::check_fds(19_000, 20_000).is_ok());
    let e = loadgen::limits::check_fds(20_000, 20_000)
        .unwrap_err()
        .to_string();
    assert!(e.contains("open-file limit"), "{e}");
    let e = loadgen::limits::check_ports(40_000, 1)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ephemeral ports") && e.contains("--source-ips"),
        "{e}"
    );
    assert!(loadgen::limits::check_ports(40_000, 2).is_ok());
    let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
    assert!(loadgen::limits::limit_error(&emfile)
        .unwrap()
        .contains("EMFILE"));
    let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
    assert!(loadgen::limits::limit_error(&refused).is_none());
    // /proc/PID/stat with a command name holding spaces and parentheses.
    let stat = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 1 0 0";
    assert_eq!(loadgen::limits::parse_proc_stat(stat), Some(325));
    assert!(loadgen::limits::proc_cpu_ns(std::process::id()).is_ok());
}

#[test]
fn resp_parsing() {
    use loadgen::redis::{parse, publish, subscribe, Reply};
    assert_eq!(subscribe("ch"), b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nch\r\n");
    let mut p = Vec::new();
    publish(&mut p, b"ch", b"1:2:3:xx");
    assert_eq!(p, b"*3\r\n$7\r\nPUBLISH\r\n$2\r\nch\r\n$8\r\n1:2:3:xx\r\n");

    let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$8\r\n1:2:3:xx\r\n";
    assert_eq!(
        parse(msg).unwrap(),
        Some((msg.len(), Reply::Message(b"1:2:3:xx")))
    );
    for cut in 0..msg.len() {
        assert_eq!(parse(&msg[..cut]).unwrap(), None, "cut at {cut}");
    }
    let sub = b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n";
    assert_eq!(parse(sub).unwrap(), Some((sub.len(), Reply::Subscribed)));
    assert_eq!(parse(b":12\r\n").unwrap(), Some((5, Reply::Other)));
    assert_eq!(
        parse(b"-ERR x\r\n").unwrap(),
        Some((8, Reply::Error(b"ERR x")))
    );
    assert!(parse(b"?what\r\n").is_err());
}

#[test]
fn spectrum_and_plot() {
    let mut h = loadgen::stats::new_histogram();
    for i in 1..=10_000u64 {
        h.record(i * 1_000).unwrap(); // 1 µs .. 10 ms
    }
    let sp = loadgen::report::spectrum(&h);
    assert!(sp.len() > 10);
    assert_eq!(sp.last().unwrap()[0], 100.0);
    assert!(sp
        .windows(2)
        .all(|w| w[0][0] < w[1][0] && w[0][1] <= w[1][1]));
    let p50 = sp.iter().find(|p| p[0] >= 50.0).unwrap();
    assert!((4_900.0..5_200.0).contains(&p50[1]), "{p50:?}");

    let svg = loadgen::plot::render(
        "t <&>",
        &[
            loadgen::plot::Series {
                label: "a".into(),
                points: sp.clone(),
                colour: 0,
                dashed: false,
            },
            loadgen::plot::Series {
                label: "b".into(),
                points: sp,
                colour: 0,
                dashed: true,
            },
        ],
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    for tick in ["0%", "90%", "99%", "99.9%", "99.99%"] {
        assert!(svg.contains(&format!(">{tick}<")), "missing tick {tick}");
    }
    assert!(svg.contains("t &lt;&amp;&gt;"));
    assert!(svg.contains("<path d=\"M"));
    assert_eq!(
        svg.matches("stroke-dasharray").count(),
        2,
        "the dashed series' line and its legend entry"
    );
}

#[test]
fn mixed_kinds_follow_their_rates_evenly() {
    use loadgen::mixed::{Kind, Mix};
    let m = Mix {
        broadcast_rate: 2.0,
        dm_rate: 20_000.0,
    };
    // Ten seconds of messages hold 20 broadcasts, one every 10,001 messages.
    let b: Vec<u64> = (0..200_020)
        .filter(|&g| m.kind(g) == Kind::Broadcast)
        .collect();
    assert_eq!(b.len(), 20);
    assert!(b.windows(2).all(|w| w[1] - w[0] == 10_001), "{b:?}");
    // Any window of the same length holds the same count, give or take one.
    let n = (777_777..777_777 + 200_020)
        .filter(|&g| m.kind(g) == Kind::Broadcast)
        .count();
    assert!((19..=21).contains(&n));
    let only_dm = Mix {
        broadcast_rate: 0.0,
        dm_rate: 5.0,
    };
    assert!((0..1000).all(|g| only_dm.kind(g) == Kind::Direct));
    let only_b = Mix {
        broadcast_rate: 3.0,
        dm_rate: 0.0,
    };
    assert!((0..1000).all(|g| only_b.kind(g) == Kind::Broadcast));
}
