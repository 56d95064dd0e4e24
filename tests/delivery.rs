//! Delivery over real sockets with users on both cores: broadcast, direct messages, presence,
//! and clients that misbehave without costing the others anything. Every test runs twice: over
//! plain TCP (`tcp::`) and through TLS clients (`tls::`).

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{chat, content_of, eventually, Client, Over};
use serde_json::json;
use uring_chat::config::DEFAULT_INLINE_SEND_MIN;

const CORES: usize = 2;

over_tcp_and_tls!(
    broadcast_reaches_every_other_user_once_in_order_across_cores,
    broadcast_sent_inline_reaches_every_other_user_once_in_order,
    broadcast_sent_inline_in_passes_that_yield_stays_once_and_in_order,
    direct_messages_during_passes_that_stop_keep_each_senders_order,
    direct_messages_cross_cores_and_unknown_recipients_are_reported,
    name_is_freed_after_an_abrupt_close,
    joins_and_leaves_are_announced,
    oversized_frame_is_refused_and_others_are_unharmed,
    slow_consumer_is_cut_off_and_others_receive_everything,
    slow_consumer_is_cut_off_when_sends_are_inline,
    short_writes_resend_the_rest,
    short_writes_resend_the_rest_when_sends_are_inline,
);

/// Broadcasts reach every other user exactly once, in per-sender order, across both cores.
fn broadcast_reaches_every_other_user_once_in_order_across_cores(over: Over) {
    broadcast_in_order(over, DEFAULT_INLINE_SEND_MIN, 2);
}

/// The same when every write is sent inline (as a fan-out to thousands of connections is).
fn broadcast_sent_inline_reaches_every_other_user_once_in_order(over: Over) {
    broadcast_in_order(over, 1, 2);
}

/// Inline, with passes long enough to yield (64 connections) and send what was queued meanwhile.
fn broadcast_sent_inline_in_passes_that_yield_stays_once_and_in_order(over: Over) {
    broadcast_in_order(over, 1, 70);
}

fn broadcast_in_order(over: Over, inline_send_min: usize, per_core: usize) {
    let server = over.start_with(|c| {
        c.rate_limit = 0;
        c.inline_send_min = inline_send_min;
    });
    let mut clients = server.login_on_every_core("user", CORES, per_core);
    let senders: Vec<usize> = (0..CORES)
        .map(|core| clients.iter().position(|c| c.core == core).unwrap())
        .collect();
    const MESSAGES: usize = 200;
    for seq in 0..=MESSAGES {
        for &s in &senders {
            let text = if seq == MESSAGES {
                "END".to_string()
            } else {
                seq.to_string()
            };
            clients[s].send(&json!({"type": "chat", "content": text}).to_string());
        }
    }
    let ids: Vec<String> = clients.iter().map(|c| c.user_id.clone()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let mut next: HashMap<String, usize> = senders
            .iter()
            .filter(|&&s| s != i)
            .map(|&s| (ids[s].clone(), 0))
            .collect();
        while next.values().any(|&n| n <= MESSAGES) {
            let frame = client.next_reply();
            assert_eq!(frame["type"], "chat", "{frame}");
            let sender = frame["senderID"].as_str().unwrap();
            assert_ne!(
                sender, ids[i],
                "the sender does not get its own broadcast back"
            );
            let expected = next
                .get_mut(sender)
                .expect("only the two senders broadcast");
            let text = if *expected == MESSAGES {
                "END".to_string()
            } else {
                expected.to_string()
            };
            assert_eq!(
                frame["content"], text,
                "in order, exactly once, from {sender}"
            );
            assert_eq!(frame["recipientID"], "");
            *expected += 1;
        }
        client.ping("no more chat after END");
    }
}

/// In fan-out passes long enough to stop (inline, 400 connections per core), a sender's direct
/// messages and broadcasts reach each recipient once and in the order sent: a recipient that gets a
/// direct message while it waits for its place in a pass has its whole queue sent early, and its
/// place then finds nothing left to send.
fn direct_messages_during_passes_that_stop_keep_each_senders_order(over: Over) {
    let server = over.start_with(|c| {
        c.rate_limit = 0;
        c.inline_send_min = 1;
    });
    let mut clients = server.login_on_every_core("mix", CORES, 400);
    let senders: Vec<usize> = (0..CORES)
        .map(|core| clients.iter().position(|c| c.core == core).unwrap())
        .collect();
    let targets: Vec<usize> = (0..CORES)
        .flat_map(|core| {
            let on_core: Vec<usize> = (0..clients.len())
                .filter(|&i| clients[i].core == core && !senders.contains(&i))
                .collect();
            [
                on_core[0],
                on_core[on_core.len() / 2],
                on_core[on_core.len() - 1],
            ]
        })
        .collect();
    let ids: Vec<String> = clients.iter().map(|c| c.user_id.clone()).collect();
    const MESSAGES: usize = 100;
    for seq in 0..MESSAGES {
        for &s in &senders {
            clients[s].send(&json!({"type": "chat", "content": format!("b{seq}")}).to_string());
            for &t in &targets {
                let direct =
                    json!({"type": "chat", "recipientID": ids[t], "content": format!("d{seq}")});
                clients[s].send(&direct.to_string());
            }
        }
        // Each round its own reads, so that later rounds arrive while earlier passes run.
        std::thread::sleep(Duration::from_micros(200));
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let expected: Vec<String> = (0..MESSAGES)
            .flat_map(|seq| {
                let direct = targets.contains(&i).then(|| format!("d{seq}"));
                std::iter::once(format!("b{seq}")).chain(direct)
            })
            .collect();
        let mut got: HashMap<String, Vec<String>> = HashMap::new();
        let from_others = senders.iter().filter(|&&s| s != i).count();
        while got.values().map(Vec::len).sum::<usize>() < expected.len() * from_others {
            let frame = client.next_reply();
            assert_eq!(frame["type"], "chat", "{frame}");
            let sender = frame["senderID"].as_str().unwrap().to_string();
            got.entry(sender)
                .or_default()
                .push(frame["content"].as_str().unwrap().to_string());
        }
        for (sender, contents) in &got {
            assert!(senders.iter().any(|&s| &ids[s] == sender && s != i));
            assert_eq!(
                contents, &expected,
                "from {sender} to client {i}: once, in order"
            );
        }
        client.ping("nothing more");
    }
}

/// A direct message crosses cores to its recipient alone; unknown recipients get USER_NOT_FOUND.
fn direct_messages_cross_cores_and_unknown_recipients_are_reported(over: Over) {
    let server = over.start();
    let mut clients = server.login_on_every_core("dm", CORES, 1);
    let a = clients.iter().position(|c| c.core == 0).unwrap();
    let b = clients.iter().position(|c| c.core == 1).unwrap();
    let (a_id, b_id) = (clients[a].user_id.clone(), clients[b].user_id.clone());
    clients[a].send(&json!({"type": "chat", "recipientID": b_id, "content": "psst"}).to_string());
    let expected = format!(
        "{{\"type\":\"chat\",\"senderID\":\"{a_id}\",\"recipientID\":\"{b_id}\",\"content\":\"psst\",\"username\":\"{}\"}}\n",
        clients[a].username
    );
    assert_eq!(
        String::from_utf8(clients[b].next_reply_line()).unwrap(),
        expected
    );
    for (i, client) in clients.iter_mut().enumerate() {
        if i != b {
            client.ping("nothing for me");
        }
    }
    let unknown_on_core_1 = format!("01{}", &b_id[2..34]) + "ff";
    for recipient in [
        unknown_on_core_1.as_str(),
        "00000000-0000-8000-8000-000000000000",
        "not-a-user",
        "ff000000-0000-8000-8000-000000000000",
    ] {
        if recipient == b_id {
            continue;
        }
        clients[a].send(
            &json!({"type": "chat", "recipientID": recipient, "content": "hello?"}).to_string(),
        );
        let error = clients[a].expect_error("USER_NOT_FOUND");
        assert!(error["content"].as_str().unwrap().contains(recipient));
    }
}

/// NAME_TAKEN while a name is in use; the name is free again after the holder's socket closes abruptly.
fn name_is_freed_after_an_abrupt_close(over: Over) {
    let server = over.start();
    let holder = server.login("carol");
    let mut rival = server.connect();
    rival.send(r#"{"type":"connect","content":"carol"}"#);
    rival.expect_error("NAME_TAKEN");
    drop(holder);
    eventually("carol's name is released", || {
        rival.send(r#"{"type":"connect","content":"carol"}"#);
        rival.next_reply()["type"] == "connect_response"
    });
}

/// Other users learn of a join, of a leave by `disconnect`, and of a leave by abrupt close.
fn joins_and_leaves_are_announced(over: Over) {
    let server = over.start();
    let mut observer = server.login("observer");
    let leaver = server.login("polite");
    let quitter = server.login("abrupt");
    let mut seen_join = Vec::new();
    let mut seen_left = Vec::new();
    let mut wait_for = |observer: &mut Client, joined: bool, name: &str| loop {
        let seen = if joined { &seen_join } else { &seen_left };
        if seen.iter().any(|n| n == name) {
            return;
        }
        let frame = observer.next_frame();
        if frame["type"] != "presence" {
            continue;
        }
        let content = content_of(&frame);
        assert!(content["userCount"].is_u64());
        for (key, seen) in [("joined", &mut seen_join), ("left", &mut seen_left)] {
            for user in content[key].as_array().unwrap() {
                seen.push(user["username"].as_str().unwrap().to_string());
            }
        }
    };
    wait_for(&mut observer, true, "polite");
    wait_for(&mut observer, true, "abrupt");
    let mut leaver = leaver;
    leaver.send(r#"{"type":"disconnect"}"#);
    wait_for(&mut observer, false, "polite");
    drop(quitter);
    wait_for(&mut observer, false, "abrupt");
}

/// A 1 MiB line gets FRAME_TOO_LARGE and a close, while other clients chat on unharmed.
fn oversized_frame_is_refused_and_others_are_unharmed(over: Over) {
    let server = over.start();
    let mut attacker = server.login("attacker");
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let mut writer = attacker.writer_clone();
    let flood = std::thread::spawn(move || {
        let mut line = br#"{"type":"chat","content":""#.to_vec();
        line.resize(1024 * 1024, b'x');
        line.extend_from_slice(b"\"}\n");
        // The server closes mid-way, so the write may fail: that is the point.
        let _ = writer.write_all(&line);
    });
    attacker.expect_error("FRAME_TOO_LARGE");
    attacker.expect_closed();
    flood.join().unwrap();
    alice.send(r#"{"type":"chat","content":"still fine"}"#);
    assert_eq!(bob.next_reply()["content"], "still fine");
}

/// A client that never reads is cut off as a slow consumer; a fast client receives every message.
fn slow_consumer_is_cut_off_and_others_receive_everything(over: Over) {
    slow_consumer_is_cut_off(over, DEFAULT_INLINE_SEND_MIN);
}

/// The same with inline sends, where the full socket's rest is handed to io_uring.
fn slow_consumer_is_cut_off_when_sends_are_inline(over: Over) {
    slow_consumer_is_cut_off(over, 1);
}

fn slow_consumer_is_cut_off(over: Over, inline_send_min: usize) {
    let server = over.start_with(|c| {
        c.inline_send_min = inline_send_min;
        c.max_outbound_bytes = 256 * 1024;
        c.history_bytes = 64 * 1024; // a replay must fit in half the outbound bound
        c.rate_limit = 0;
        c.drain_timeout = Duration::from_secs(30);
    });
    let mut sender = server.login("sender");
    let mut slow = server.login("slow");
    let mut fast = server.login("fast");
    const MESSAGES: usize = 20_000;
    let payload = "x".repeat(1000);
    // The publisher stays at most WINDOW messages ahead of the fast client, so the fast client never
    // owes the bound however slowly this test thread parses, while the slow one falls behind.
    const WINDOW: usize = 64;
    let received = Arc::new(AtomicUsize::new(0));
    let mut writer = sender.writer_clone();
    let progress = received.clone();
    let publish = std::thread::spawn(move || {
        for seq in 0..MESSAGES {
            while seq >= progress.load(Ordering::Acquire) + WINDOW {
                std::thread::sleep(Duration::from_micros(100));
            }
            let line =
                json!({"type": "chat", "content": format!("{seq}:{payload}")}).to_string() + "\n";
            writer.write_all(line.as_bytes()).unwrap();
        }
    });
    for seq in 0..MESSAGES {
        let frame = fast.next_reply();
        let content = frame["content"].as_str().unwrap();
        assert!(
            content.starts_with(&format!("{seq}:")),
            "message {seq} arrives in order, got {}",
            &content[..content.len().min(40)]
        );
        received.store(seq + 1, Ordering::Release);
    }
    publish.join().unwrap();
    let frames = slow.expect_closed();
    let chats = frames.iter().filter(|f| f["type"] == "chat").count();
    assert!(
        chats < MESSAGES,
        "the slow client was cut off before the end ({chats} arrived)"
    );
    let last = frames
        .last()
        .expect("the slow client got its error before the close");
    assert_eq!(last["code"], "SLOW_CONSUMER", "{last}");
    sender.ping("the sender is unharmed");
}

/// A reader that falls behind (its receive buffer pinned small) makes the server's writes short:
/// the unsent rest must go out first, exactly as it was (over TLS, the tail of a sealed record,
/// which sealed again would fail the client's MAC check), so every frame arrives intact and in
/// order. The scrape proves the short writes happened, on this wire's series alone.
fn short_writes_resend_the_rest(over: Over) {
    short_writes_resend(over, DEFAULT_INLINE_SEND_MIN);
}

/// The same when every write is a nonblocking `sendmsg` first, short whenever the socket fills.
fn short_writes_resend_the_rest_when_sends_are_inline(over: Over) {
    short_writes_resend(over, 1);
}

fn short_writes_resend(over: Over, inline_send_min: usize) {
    let server = over.start_with(|c| {
        c.inline_send_min = inline_send_min;
        c.rate_limit = 0;
        c.max_outbound_bytes = 16 * 1024 * 1024;
        c.metrics_port = Some(0);
    });
    let series = |tls| format!("uring_chat_short_writes_total{{tls=\"{tls}\"}}");
    let other = match over {
        Over::Tcp => Over::Tls,
        Over::Tls => Over::Tcp,
    };
    let mut alice = server.login("alice");
    let mut bob = server.login_with_small_receive_buffer("bob");
    const MESSAGES: usize = 2000;
    let texts: Vec<String> = (0..MESSAGES)
        .map(|i| format!("{i:05}{}", "y".repeat(2000)))
        .collect();
    for text in &texts {
        alice.send(&chat(text));
    }
    // Every broadcast has been read by the server; Bob has read none and his socket is full.
    alice.ping("all sent");
    for (i, text) in texts.iter().enumerate() {
        let frame = bob.next_reply();
        assert!(
            frame["content"] == text.as_str() && frame["senderID"] == alice.user_id.as_str(),
            "frame {i} is not alice's {i}th message intact: {:.100}",
            frame.to_string()
        );
    }
    bob.ping("nothing more");
    let short = server.metric(&series(over.tls_label()));
    assert!(short > 0.0, "no short write on {over:?} to prove anything");
    assert_eq!(server.metric(&series(other.tls_label())), 0.0);
}
