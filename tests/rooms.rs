//! Rooms (protocol v1.1) over real sockets, with members on both cores: one order per room, exactly
//! once, isolation, recovery after a reconnect, the bounds on history, and the room requests' replies.
//! Every test runs twice: over plain TCP (`tcp::`) and through TLS clients (`tls::`).

mod common;

use std::collections::HashMap;

use common::{content_of, room_message, Client, Over, TestServer};
use serde_json::json;
use uring_chat::chat::rooms::owner_core;
use uring_chat::config::Config;

const CORES: usize = 2;

over_tcp_and_tls!(
    members_on_both_cores_get_every_message_once_in_one_order,
    rooms_are_isolated_and_the_lobby_is_unchanged,
    a_reconnecting_member_recovers_without_gap_or_duplicate,
    a_since_older_than_history_gets_what_is_held,
    history_is_capped_per_room_and_per_core,
    an_empty_room_keeps_history_until_its_idle_time_passes,
    room_requests_answer_and_errors_keep_the_connection,
    a_disconnect_leaves_every_room_and_members_are_told,
    join_then_leave_at_once_answers_both_in_order,
);

fn start(over: Over, adjust: impl FnOnce(&mut Config)) -> TestServer {
    over.start_with(|c| {
        c.rate_limit = 0;
        adjust(c);
    })
}

/// Every member, on either core, gets every message once, in one order with seq rising by one,
/// its own messages included; each sender's messages keep their order.
fn members_on_both_cores_get_every_message_once_in_one_order(over: Over) {
    let server = start(over, |_| {});
    let mut members = server.login_on_every_core("member", CORES, 3);
    for member in &mut members {
        let joined = member.join("rust", None);
        assert_eq!(joined["seq"], 0, "nobody has posted yet: {joined}");
        assert!(joined.get("recovered").is_none(), "no since, no recovered");
    }
    let posters: Vec<usize> = (0..CORES)
        .map(|core| members.iter().position(|m| m.core == core).unwrap())
        .collect();
    const EACH: usize = 100;
    for n in 0..EACH {
        for &p in &posters {
            members[p].post("rust", &format!("{p}:{n}"));
        }
    }
    let total = EACH * posters.len();
    let mut orders: Vec<Vec<(u64, String, String)>> = Vec::new();
    for member in &mut members {
        let received = member.room_messages_in_one_order(total);
        orders.push(received);
        member.ping("nothing more");
    }
    assert!(
        orders.windows(2).all(|pair| pair[0] == pair[1]),
        "every member saw the same order"
    );
}

/// Non-members get neither a room's messages nor its presence; lobby chat still reaches everyone
/// but the sender, in rooms or not.
fn rooms_are_isolated_and_the_lobby_is_unchanged(over: Over) {
    let server = start(over, |_| {});
    let (mut inside, mut outside) = (Vec::new(), Vec::new());
    for client in server.login_on_every_core("iso", CORES, 2) {
        // One member and one non-member on each core first; the rest stay outside.
        if inside
            .iter()
            .filter(|c: &&Client| c.core == client.core)
            .count()
            == 0
        {
            inside.push(client);
        } else {
            outside.push(client);
        }
    }
    for member in &mut inside {
        member.join("secret", None);
    }
    outside[0].join("other", None);
    inside[0].post("secret", "for members only");
    for member in &mut inside {
        assert_eq!(member.next_room_chat()["content"], "for members only");
    }
    outside[1].send(&common::chat("lobby hello"));
    for member in inside.iter_mut().chain(&mut outside[..1]) {
        let frame = member.next_reply();
        assert_eq!(frame["content"], "lobby hello", "{frame}");
        assert!(frame.get("room").is_none() && frame.get("seq").is_none());
    }
    for member in &mut outside {
        member.send(r#"{"type":"ping","content":"end"}"#);
        loop {
            let frame = member.next_frame();
            assert_ne!(frame["room"], "secret", "a non-member got {frame}");
            if frame["type"] == "pong" {
                break;
            }
        }
    }
}

/// A member that drops, logs in again and joins with `since` gets exactly what it missed, then the
/// live messages, while another member keeps posting.
fn a_reconnecting_member_recovers_without_gap_or_duplicate(over: Over) {
    let server = start(over, |c| c.history_messages = 1000);
    let mut clients = server.login_on_every_core("rec", CORES, 1);
    let mut watcher = clients.pop().unwrap();
    let mut poster = clients.pop().unwrap();
    poster.join("live", None);
    watcher.join("live", None);
    const BEFORE: u64 = 20;
    const AFTER: u64 = 200;
    for n in 1..=BEFORE {
        poster.post("live", &n.to_string());
    }
    for n in 1..=BEFORE {
        assert_eq!(room_message(&watcher.next_room_chat()).0, n);
    }
    drop(watcher);

    let poster_thread = std::thread::spawn(move || {
        for n in BEFORE + 1..=BEFORE + AFTER {
            poster.post("live", &n.to_string());
        }
        poster
    });
    let mut back = server.login("rec-again");
    let mut early = Vec::new();
    let joined = back.join_collecting("live", Some(BEFORE), &mut early);
    assert!(
        early.is_empty(),
        "no live frame before the answer: {early:?}"
    );
    assert_eq!(joined["recovered"], true, "{joined}");
    let mut seen: Vec<u64> = Vec::new();
    while seen.last().copied().unwrap_or(BEFORE) < BEFORE + AFTER {
        let (seq, _, content) = room_message(&back.next_room_chat());
        assert_eq!(content, seq.to_string(), "the message stamped {seq}");
        seen.push(seq);
    }
    let expected: Vec<u64> = (BEFORE + 1..=BEFORE + AFTER).collect();
    assert_eq!(seen, expected, "replay then live: no gap, no duplicate");
    let join_seq = joined["seq"].as_u64().unwrap();
    assert!((BEFORE..=BEFORE + AFTER).contains(&join_seq));
    poster_thread.join().unwrap();
}

/// A `since` older than history holds: `recovered` is false and the member gets what is held.
fn a_since_older_than_history_gets_what_is_held(over: Over) {
    let server = start(over, |c| c.history_messages = 10);
    let mut poster = server.login("old-poster");
    poster.join("old", None);
    for n in 1..=30 {
        poster.post("old", &n.to_string());
    }
    for _ in 0..30 {
        poster.next_room_chat();
    }
    let mut late = server.login("old-late");
    let mut replay = Vec::new();
    let joined = late.join_collecting("old", Some(5), &mut replay);
    assert_eq!(joined["recovered"], false, "{joined}");
    assert_eq!(joined["seq"], 30);
    let seqs: Vec<u64> = (0..10)
        .map(|_| room_message(&late.next_room_chat()).0)
        .collect();
    assert_eq!(seqs, (21..=30).collect::<Vec<_>>(), "the last ten are held");
    let whole = late.join("old", Some(30));
    assert_eq!(
        whole["recovered"], true,
        "nothing after the last seq is missing"
    );
    late.ping("no replay for a since at the last seq");
}

/// Per-room byte cap, and the core-wide budget that evicts the oldest messages of any room.
fn history_is_capped_per_room_and_per_core(over: Over) {
    // Two rooms with the same owner core, so they share one budget.
    let names: Vec<String> = (0..50).map(|i| format!("budget-{i}")).collect();
    let owner = owner_core(&names[0], CORES);
    let (first, second) = (
        names[0].clone(),
        names[1..]
            .iter()
            .find(|n| owner_core(n, CORES) == owner)
            .unwrap()
            .clone(),
    );
    let server = start(over, |c| {
        c.history_bytes = 1000;
        c.history_total_bytes = 2 * 1200; // 1200 bytes per core
    });
    let mut poster = server.login("budget-poster");
    poster.join(&first, None);
    poster.join(&second, None);
    let text = "x".repeat(150);
    let mut sizes = HashMap::new();
    for room in [&first, &second] {
        for _ in 0..6 {
            poster.post(room, &text);
        }
        for _ in 0..6 {
            let frame = poster.next_room_chat();
            sizes.insert(room.clone(), frame.to_string().len() + 1);
        }
    }
    let mut reader = server.login("budget-reader");
    let mut held = HashMap::new();
    for room in [&first, &second] {
        let joined = reader.join(room, Some(0));
        assert_eq!(joined["recovered"], false, "{room}: {joined}");
        let count = joined_replay_len(&mut reader);
        held.insert(room.clone(), count);
    }
    let bytes: usize = [&first, &second].iter().map(|r| held[*r] * sizes[*r]).sum();
    assert!(
        held[&second] * sizes[&second] <= 1000,
        "per-room cap: {held:?}"
    );
    assert!(bytes <= 1200, "core budget: {held:?} of {sizes:?}");
    assert!(
        held[&first] < held[&second],
        "the older room lost more: {held:?}"
    );
}

/// Reads the replay that follows a join_response, up to a pong.
fn joined_replay_len(client: &mut Client) -> usize {
    client.send(r#"{"type":"ping","content":"replay"}"#);
    let mut count = 0;
    loop {
        let frame = client.next_reply();
        if frame["type"] == "pong" {
            return count;
        }
        assert_eq!(frame["type"], "chat", "{frame}");
        count += 1;
    }
}

/// An empty room keeps its history for --room-idle-ttl, then is dropped: a new epoch, seq 0.
fn an_empty_room_keeps_history_until_its_idle_time_passes(over: Over) {
    let server = start(over, |c| {
        c.room_idle_ttl = std::time::Duration::from_millis(300)
    });
    let mut member = server.login("idle");
    let first = member.join("idle-room", None);
    for n in 0..3 {
        member.post("idle-room", &n.to_string());
    }
    for _ in 0..3 {
        member.next_room_chat();
    }
    member.send(r#"{"type":"leave","room":"idle-room"}"#);
    assert_eq!(member.next_reply()["type"], "leave_response");
    let again = member.join("idle-room", Some(0));
    assert_eq!(
        (again["epoch"].clone(), again["recovered"].clone()),
        (first["epoch"].clone(), json!(true))
    );
    assert_eq!(joined_replay_len(&mut member), 3);
    member.send(r#"{"type":"leave","room":"idle-room"}"#);
    assert_eq!(member.next_reply()["type"], "leave_response");
    common::eventually("the idle room is dropped", || {
        member.send(r#"{"type":"rooms"}"#);
        let page = content_of(&member.next_reply());
        page["roomCount"] == 0
    });
    let fresh = member.join("idle-room", Some(3));
    assert_ne!(fresh["epoch"], first["epoch"], "{fresh}");
    assert_eq!(
        (fresh["seq"].clone(), fresh["recovered"].clone()),
        (json!(0), json!(false))
    );
}

/// The replies of v1.1 requests, and their errors, none of which closes the connection.
fn room_requests_answer_and_errors_keep_the_connection(over: Over) {
    let server = start(over, |c| {
        c.max_rooms_per_user = 2;
        c.max_rooms = 3;
    });
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    let joined = alice.join("rust", None);
    assert_eq!(joined["room"], "rust");
    assert!(joined["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert_eq!(joined["memberCount"], 1);
    assert_eq!(
        joined["members"],
        json!([{"userID": alice.user_id, "username": "alice"}])
    );
    assert_eq!(
        alice.join("rust", None)["memberCount"],
        1,
        "joining again answers again"
    );
    assert_eq!(bob.join("rust", None)["memberCount"], 2);

    alice.send(r#"{"type":"members","room":"rust","content":"1"}"#);
    let page = alice.next_reply();
    assert_eq!(
        (page["type"].clone(), page["room"].clone()),
        (json!("member_list"), json!("rust"))
    );
    let page = content_of(&page);
    assert_eq!(
        (page["offset"].clone(), page["memberCount"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(page["members"].as_array().unwrap().len(), 1);

    alice.join("go", None);
    alice.send(r#"{"type":"join","room":"zig"}"#);
    alice.expect_error("TOO_MANY_ROOMS");
    bob.join("c", None);
    bob.send(r#"{"type":"join","room":"d"}"#);
    bob.expect_error("TOO_MANY_ROOMS");

    bob.send(r#"{"type":"rooms","content":"0"}"#);
    let list = bob.next_reply();
    assert_eq!(list["type"], "room_list");
    let list = content_of(&list);
    assert_eq!(list["roomCount"], 3);
    assert_eq!(
        list["rooms"][0],
        json!({"room": "c", "memberCount": 1}),
        "in name order"
    );

    for (request, code) in [
        (r#"{"type":"join","room":" padded"}"#, "INVALID_ROOM"),
        (r#"{"type":"join"}"#, "INVALID_ROOM"),
        (
            r#"{"type":"join","room":"rust","since":"-1"}"#,
            "INVALID_MESSAGE",
        ),
        (
            r#"{"type":"chat","room":"go","recipientID":"x","content":"hi"}"#,
            "INVALID_MESSAGE",
        ),
        (
            r#"{"type":"chat","room":"elsewhere","content":"hi"}"#,
            "NOT_IN_ROOM",
        ),
        (r#"{"type":"members","room":"elsewhere"}"#, "NOT_IN_ROOM"),
        (r#"{"type":"leave","room":"elsewhere"}"#, "NOT_IN_ROOM"),
        (r#"{"type":"rooms","content":"x"}"#, "INVALID_MESSAGE"),
    ] {
        bob.send(request);
        bob.expect_error(code);
    }
    bob.ping("still open after every error");
    let mut stranger = server.connect();
    stranger.send(r#"{"type":"join","room":"rust"}"#);
    stranger.expect_error("NOT_CONNECTED");

    bob.send(r#"{"type":"leave","room":"rust"}"#);
    assert_eq!(
        bob.next_reply_line(),
        b"{\"type\":\"leave_response\",\"senderID\":\"server\",\"room\":\"rust\",\"content\":\"{\\\"room\\\":\\\"rust\\\"}\"}\n"
    );
}

/// A closed socket leaves every room: the others see the count drop and a room presence frame.
fn a_disconnect_leaves_every_room_and_members_are_told(over: Over) {
    let server = start(over, |c| {
        c.presence_interval = std::time::Duration::from_millis(20)
    });
    let mut clients = server.login_on_every_core("gone", CORES, 1);
    let mut stays = clients.pop().unwrap();
    let mut leaves = clients.pop().unwrap();
    stays.join("door", None);
    leaves.join("door", None);
    let leaver = leaves.user_id.clone();
    drop(leaves);
    common::eventually("the room's presence names the leaver", || {
        let frame = stays.next_frame();
        if frame["type"] != "presence" || frame["room"] != "door" {
            return false;
        }
        let content = content_of(&frame);
        content["left"]
            .as_array()
            .is_some_and(|left| left.iter().any(|u| u["userID"] == leaver))
    });
    stays.send(r#"{"type":"members","room":"door"}"#);
    assert_eq!(content_of(&stays.next_reply())["memberCount"], 1);
}

/// A join and a leave sent back to back are both answered, in that order, also when the room's
/// owner is the other core; the leave wins.
fn join_then_leave_at_once_answers_both_in_order(over: Over) {
    let server = start(over, |_| {});
    let mut client = server.login("quick");
    let rooms: Vec<String> = (0..200)
        .map(|i| format!("quick-{i}"))
        .filter(|room| owner_core(room, CORES) != client.core)
        .take(20)
        .collect();
    for room in &rooms {
        client.send(&json!({"type": "join", "room": room}).to_string());
        client.send(&json!({"type": "leave", "room": room}).to_string());
    }
    for room in &rooms {
        for kind in ["join_response", "leave_response"] {
            let frame = client.next_reply();
            assert_eq!(
                (frame["type"].as_str(), frame["room"].as_str()),
                (Some(kind), Some(room.as_str()))
            );
        }
    }
    client.send(&json!({"type": "chat", "room": rooms[0], "content": "am I in?"}).to_string());
    client.expect_error("NOT_IN_ROOM");
}
