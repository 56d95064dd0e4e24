//! Hostile clients over real sockets: huge lines, slowloris, silence, slow readers, join storms,
//! floods and connection caps (faults and signals are in tests/faults.rs).
//!
//! No assertion is about speed. Waits are bounded only as hang guards (`common::eventually`, the
//! client read timeout); the few lower bounds on time check that the server did not act *early*.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{alone, chat, content_of, eventually, shared, user_count, Client, TestServer};
use serde_json::{json, Value};

/// Resident memory of this process (the in-process server included), in bytes.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Every frame a raw socket receives until the server closes it (EOF or reset).
fn frames_until_closed(stream: &TcpStream) -> Vec<Value> {
    stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
    let mut reader = BufReader::new(stream);
    let mut frames = Vec::new();
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) => return frames,
            Ok(_) => frames.push(serde_json::from_slice(&line).unwrap_or(Value::Null)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return frames,
            Err(e) => panic!("expected frames then a close, got {e}"),
        }
    }
}

/// 20 parallel 1 MiB runs of non-JSON without a newline each get FRAME_TOO_LARGE and a close; the
/// server's memory does not grow by the size of the attack, and other users chat on.
#[test]
fn huge_lines_are_refused_without_buffering_them() {
    let _alone = alone();
    let server = TestServer::start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    const ATTACKERS: usize = 20;
    const ATTACK_BYTES: usize = 1 << 20;
    let payload: Arc<Vec<u8>> = Arc::new(vec![b'x'; ATTACK_BYTES]);
    let before = rss_bytes();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        thread::spawn(move || {
            let mut peak = rss_bytes();
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_bytes());
                thread::sleep(Duration::from_millis(5));
            }
            peak.max(rss_bytes())
        })
    };
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|_| {
            let payload = payload.clone();
            let addr = server.addr;
            thread::spawn(move || {
                let stream = TcpStream::connect(addr).unwrap();
                let mut writer = stream.try_clone().unwrap();
                // The server stops acting on the stream after 64 KiB; the write may fail: fine.
                let flood = thread::spawn(move || {
                    let _ = writer.write_all(&payload);
                });
                let frames = frames_until_closed(&stream);
                flood.join().unwrap();
                frames
            })
        })
        .collect();
    for attacker in attackers {
        let frames = attacker.join().unwrap();
        assert_eq!(frames.len(), 1, "one error, then the close: {frames:?}");
        assert_eq!(frames[0]["code"], "FRAME_TOO_LARGE", "{}", frames[0]);
    }
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "huge lines: RSS before {} KiB, peak {} KiB, growth {} KiB for {} KiB of attack",
        before / 1024,
        peak / 1024,
        growth / 1024,
        (ATTACKERS * ATTACK_BYTES) / 1024
    );
    assert!(
        growth < 8 << 20,
        "RSS grew by {growth} bytes during {} bytes of attack",
        ATTACKERS * ATTACK_BYTES
    );
    alice.send(&chat("still fine"));
    assert_eq!(bob.next_reply()["content"], "still fine");
}

/// 200 connections that trickle a never-ending `{"type":"...` and never log in each get
/// LOGIN_TIMEOUT and a close once the login timeout has passed, while a normal pair chats.
#[test]
fn slowloris_connections_are_closed_at_the_login_timeout() {
    let _alone = alone();
    const LOGIN_TIMEOUT: Duration = Duration::from_secs(1);
    let server = TestServer::start_with(|c| c.login_timeout = LOGIN_TIMEOUT);
    let started = Instant::now();
    let sockets: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let mut writers: Vec<TcpStream> = sockets.iter().map(|s| s.try_clone().unwrap()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let stop = stop.clone();
        thread::spawn(move || {
            let prefix = b"{\"type\":\"";
            // Bounded: 30 s of trickling at most, whatever happens.
            for step in 0..600 {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let byte = prefix.get(step).copied().unwrap_or(b'a');
                for writer in &mut writers {
                    let _ = writer.write_all(&[byte]);
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    for i in 0..15 {
        alice.send(&chat(&format!("meanwhile {i}")));
        assert_eq!(bob.next_reply()["content"], format!("meanwhile {i}"));
        thread::sleep(Duration::from_millis(100));
    }
    for (i, socket) in sockets.iter().enumerate() {
        let frames = frames_until_closed(socket);
        assert!(
            started.elapsed() >= LOGIN_TIMEOUT,
            "closed before the login timeout"
        );
        assert_eq!(frames.len(), 1, "socket {i}: {frames:?}");
        assert_eq!(frames[0]["code"], "LOGIN_TIMEOUT", "socket {i}");
    }
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    alice.send(&chat("after the slowloris"));
    assert_eq!(bob.next_reply()["content"], "after the slowloris");
    alice.ping("alice was never timed out");
}

/// A silent logged-in client gets the server's ping; one that answers with pongs stays over
/// several intervals; one that never answers is closed after three silent intervals.
#[test]
fn keepalive_pings_silent_clients_and_closes_dead_ones() {
    let _alone = alone();
    const INTERVAL: Duration = Duration::from_millis(300);
    let server = TestServer::start_with(|c| c.ping_interval = INTERVAL);
    let ping_line = b"{\"type\":\"ping\",\"senderID\":\"server\",\"content\":\"\"}\n";
    let addr = server.addr;
    let answering = thread::spawn(move || {
        let mut client = Client::login(addr, "answers");
        let mut pings = 0;
        while pings < 5 {
            if client.next_line() == ping_line {
                pings += 1;
                client.send(r#"{"type":"pong","content":""}"#);
            }
        }
        client.ping("still connected after five intervals");
    });
    let logged_in = Instant::now();
    let mut silent = server.login("silent");
    let frames = silent.expect_closed();
    assert!(
        logged_in.elapsed() >= 3 * INTERVAL,
        "closed before three silent intervals"
    );
    let pings: Vec<&Value> = frames.iter().filter(|f| f["type"] == "ping").collect();
    assert_eq!(pings.len(), 1, "one ping, no repeats: {frames:?}");
    assert_eq!(
        *pings[0],
        json!({"type": "ping", "senderID": "server", "content": ""})
    );
    answering.join().unwrap();
}

/// With 5 of 50 clients never reading, each of them ends with SLOW_CONSUMER and a close after a
/// gap-free prefix of the messages, while the 45 readers receive every message in order.
#[test]
fn slow_consumers_are_cut_off_and_fast_clients_get_everything() {
    let _alone = alone();
    let server = TestServer::start_with(|c| {
        // Not 64 KiB: one read from a fast sender (up to --max-frame-bytes plus the idle read
        // buffer) is queued to every recipient before any writer runs, so a bound that small cuts
        // off every reader however fast it is, although validation allows it. 45 reader threads
        // on 2 CPUs also fall behind by a few hundred KiB now and then.
        c.max_outbound_bytes = 1 << 20;
        c.rate_limit = 0;
        c.drain_timeout = Duration::from_secs(30);
    });
    // The kernel holds ~4 MB for a socket that is not read (send buffer autotuning on loopback),
    // so the slow clients must be owed well over that (10 MB here) before the server's bound applies.
    const MESSAGES: usize = 2500;
    const PAYLOAD: usize = 4000;
    let mut sender = server.login("sender");
    let slow: Vec<Client> = (0..5).map(|i| server.login(&format!("slow{i}"))).collect();
    let fast: Vec<Client> = (0..45).map(|i| server.login(&format!("fast{i}"))).collect();
    let sender_id = sender.user_id.clone();
    // Every reader is running before the first message (a reader thread not yet started would
    // look like a slow consumer).
    let ready = Arc::new(std::sync::Barrier::new(fast.len() + 1));
    let readers: Vec<_> = fast
        .into_iter()
        .map(|mut client| {
            let prefix = format!("{{\"type\":\"chat\",\"senderID\":\"{sender_id}\",");
            let ready = ready.clone();
            thread::spawn(move || {
                ready.wait();
                let mut next = 0;
                while next < MESSAGES {
                    let line = client.next_line();
                    if line.starts_with(b"{\"type\":\"presence\"") {
                        continue;
                    }
                    let text = String::from_utf8(line).unwrap();
                    assert!(
                        text.starts_with(&prefix),
                        "{}: {text:.120}",
                        client.username
                    );
                    let expected = format!("\"content\":\"{next}:");
                    assert!(
                        text.contains(&expected),
                        "{} expected message {next}, got {text:.120}",
                        client.username
                    );
                    next += 1;
                }
                client
            })
        })
        .collect();
    ready.wait();
    let mut writer = sender.writer_clone();
    let publish = thread::spawn(move || {
        let payload = "x".repeat(PAYLOAD);
        for seq in 0..MESSAGES {
            let line = chat(&format!("{seq}:{payload}")) + "\n";
            writer.write_all(line.as_bytes()).unwrap();
            // ~4 MB/s: the fast readers are threads sharing 2 CPUs with the server, and unpaced a
            // release server read the sender faster than some of them read their socket (a third
            // of runs cut one off). The slow clients, who never read, are cut off all the same.
            if seq % 10 == 9 {
                thread::sleep(Duration::from_millis(10));
            }
        }
    });
    publish.join().unwrap();
    for reader in readers {
        let mut client = reader.join().expect("a fast client missed a message");
        client.ping("nothing after the last message");
    }
    for mut client in slow {
        let frames = client.expect_closed();
        let chats: Vec<&str> = frames
            .iter()
            .filter(|f| f["type"] == "chat")
            .map(|f| f["content"].as_str().unwrap())
            .collect();
        for (seq, content) in chats.iter().enumerate() {
            assert!(
                content.starts_with(&format!("{seq}:")),
                "{}: a gap-free prefix",
                client.username
            );
        }
        assert!(chats.len() < MESSAGES, "{} was cut off", client.username);
        let last = frames.last().expect("an error before the close");
        assert_eq!(last["code"], "SLOW_CONSUMER", "{}: {last}", client.username);
    }
    sender.ping("the sender is unharmed");
}

/// 2,000 clients log in at once and all leave; each gets its connect_response, and the presence
/// traffic an observer receives is linear in the number of joins and leaves.
#[test]
fn join_leave_storm_costs_linear_presence_traffic() {
    let _alone = alone();
    const STORM: usize = 2000;
    const THREADS: usize = 8;
    let server = TestServer::start_with(|c| {
        c.presence_limit = 100;
        c.rate_limit = 0;
    });
    let mut observer = server.login("observer");
    let observing = thread::spawn(move || {
        let (mut bytes, mut frames, mut left) = (0usize, 0usize, 0u64);
        let mut named_frames = 0;
        let mut counts_after_leaves = Vec::new();
        while left < STORM as u64 {
            let line = observer.next_line();
            assert!(line.starts_with(b"{\"type\":\"presence\""), "only presence");
            bytes += line.len();
            frames += 1;
            let content = content_of(&serde_json::from_slice(&line).unwrap());
            named_frames += usize::from(content.get("joined").is_some());
            left += content["leftCount"].as_u64().unwrap();
            if left > 0 {
                counts_after_leaves.push(content["userCount"].as_u64().unwrap());
            }
        }
        (observer, bytes, frames, named_frames, counts_after_leaves)
    });
    let started = Instant::now();
    let addr = server.addr;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            thread::spawn(move || {
                let mut clients: Vec<Client> = (t..STORM)
                    .step_by(THREADS)
                    .map(|i| {
                        let mut client = Client::connect(addr);
                        client.send(
                            &json!({"type": "connect", "content": format!("storm{i}")}).to_string(),
                        );
                        client
                    })
                    .collect();
                for client in &mut clients {
                    let reply = client.next_reply();
                    assert_eq!(reply["type"], "connect_response", "{reply}");
                }
                clients
            })
        })
        .collect();
    let clients: Vec<Client> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let logged_in = started.elapsed();
    assert_eq!(
        clients.len(),
        STORM,
        "every client got its connect_response"
    );
    let leaving = Instant::now();
    drop(clients);
    let (mut observer, bytes, frames, named_frames, counts_after_leaves) =
        observing.join().unwrap();
    let left = leaving.elapsed();
    // Every frame reports at least one join or leave of its core, and names each user at most once
    // (at most 100 per list, none above the presence limit). A frame without names is ~150 bytes
    // and a name entry (escaped JSON, UUID and "stormNNNN") ~90, so 250 bytes per join or leave
    // bounds it; the old whole-list-per-join design would send ~2000 × 2000 × 40 = 160 MB here.
    let events = 2 * STORM + 1;
    assert!(frames <= events, "{frames} frames for {events} events");
    assert!(
        bytes <= events * 250,
        "{bytes} presence bytes for {events} joins and leaves"
    );
    assert!(
        counts_after_leaves.contains(&1),
        "the last frames say the observer is alone: {counts_after_leaves:?}"
    );
    eprintln!(
        "storm: {STORM} logins in {logged_in:?}, all leaves announced {left:?} after the close; \
         observer got {frames} presence frames ({named_frames} with names), {bytes} bytes"
    );
    assert_eq!(user_count(&mut observer), 1);
}

/// A client flooding as fast as it can gets RATE_LIMITED and is then disconnected (last frame
/// RATE_LIMITED, then EOF), while another user's broadcasts keep reaching a third.
#[test]
fn a_flooder_is_limited_then_cut_off_and_others_are_unharmed() {
    let _shared = shared();
    let server = TestServer::start_with(|c| {
        c.rate_limit = 50;
        c.rate_limit_burst = 100;
    });
    let mut flooder = server.login("flooder");
    let mut normal = server.login("normal");
    let mut third = server.login("third");
    let mut writer = flooder.writer_clone();
    let flood = thread::spawn(move || {
        let mut burst = String::new();
        for i in 0..5000 {
            burst.push_str(&chat(&format!("flood {i}")));
            burst.push('\n');
        }
        // The server cuts the flooder off part-way; the write may fail: that is the point.
        let _ = writer.write_all(burst.as_bytes());
    });
    const MESSAGES: usize = 30;
    for i in 0..MESSAGES {
        normal.send(&chat(&format!("normal {i}")));
        thread::sleep(Duration::from_millis(10));
    }
    let mut received = 0;
    while received < MESSAGES {
        let frame = third.next_reply();
        if frame["senderID"] == normal.user_id.as_str() {
            assert_eq!(frame["content"], format!("normal {received}"));
            received += 1;
        }
    }
    let frames = flooder.expect_closed();
    flood.join().unwrap();
    let limited = frames
        .iter()
        .filter(|f| f["code"] == "RATE_LIMITED")
        .count();
    assert!(limited > 1, "RATE_LIMITED before the cut-off");
    let last = frames.last().unwrap();
    assert_eq!(last["code"], "RATE_LIMITED", "{last}");
    normal.send(r#"{"type":"ping","content":"never limited"}"#);
    loop {
        let frame = normal.next_reply();
        assert_ne!(
            frame["type"], "error",
            "the normal client was never limited: {frame}"
        );
        if frame["type"] == "pong" {
            break;
        }
    }
}

/// `--max-connections 5`: a 6th client gets SERVER_FULL and a close, the 5 keep working, and once
/// one leaves a new client is admitted.
#[test]
fn max_connections_turns_the_excess_away_and_readmits() {
    let _shared = shared();
    let server = TestServer::start_with(|c| c.max_connections = 5);
    let mut clients: Vec<Client> = (0..5).map(|i| server.login(&format!("in{i}"))).collect();
    let mut extra = server.connect();
    extra.expect_error("SERVER_FULL");
    extra.expect_closed();
    for client in &mut clients {
        client.ping("still served");
    }
    drop(clients.pop());
    let mut next = 0;
    eventually("a new client is admitted after one left", || {
        next += 1;
        Client::connect(server.addr).try_login(&format!("late{next}"))
    });
    for client in &mut clients {
        client.ping("still served after the churn");
    }
}

/// `--max-connections-per-ip 3`: a 4th connection from 127.0.0.1 gets SERVER_FULL and a close, the
/// 3 keep working, and once one leaves the address may connect again.
#[test]
fn max_connections_per_ip_turns_the_excess_away_and_readmits() {
    let _shared = shared();
    let server = TestServer::start_with(|c| c.max_connections_per_ip = 3);
    let mut clients: Vec<Client> = (0..3).map(|i| server.login(&format!("ip{i}"))).collect();
    let mut extra = server.connect();
    extra.expect_error("SERVER_FULL");
    extra.expect_closed();
    for client in &mut clients {
        client.ping("still served");
    }
    drop(clients.remove(0));
    let mut next = 0;
    eventually("the address may connect again after one left", || {
        next += 1;
        Client::connect(server.addr).try_login(&format!("late{next}"))
    });
    for client in &mut clients {
        client.ping("still served after the churn");
    }
}
