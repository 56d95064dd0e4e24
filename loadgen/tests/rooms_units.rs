//! Unit tests of rooms: the round-robin assignment, senders per room, the per-room seq check, and
//! the bytes of joins, posts, join_responses and delivered room messages.

use loadgen::clock::Rng;
use loadgen::options::Protocol;
use loadgen::room_order::{self, RoomSeqs};
use loadgen::room_wire::{encode_post, join_line, push_join, room_of, seq_of, JoinLine};
use loadgen::rooms::{RoomSend, Rooms};
use loadgen::stamp::{write_payload, Stamp};
use loadgen::stats::{Order, ThreadStats, Window};

#[test]
fn assignment_is_round_robin_and_even() {
    let plan = Rooms::new(7, 3);
    assert_eq!(plan.of_client(0), [0, 1, 2]);
    assert_eq!(plan.of_client(2), [6, 0, 1]);
    let mut members = [0u32; 7];
    for i in 0..100 {
        let mine = plan.of_client(i);
        let mut distinct = mine.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 3, "client {i}: {mine:?}");
        for r in mine {
            members[r as usize] += 1;
        }
    }
    // 300 places over 7 rooms: 42 or 43 each.
    assert!(members.iter().all(|&m| m == 42 || m == 43), "{members:?}");

    // Reading members are counted while their guard lives.
    let a = plan.enter(&[0, 1]);
    let b = plan.enter(&[1]);
    assert_eq!(
        (plan.members(0), plan.members(1), plan.members(2)),
        (1, 2, 0)
    );
    drop(a);
    assert_eq!((plan.members(0), plan.members(1)), (0, 1));
    drop(b);
    assert_eq!(plan.members(1), 0);
}

#[test]
fn senders_cover_every_room_and_post_only_where_they_are_members() {
    let plan = Rooms::new(10, 2);
    let by_room = plan.senders_by_room(5);
    for (r, s) in by_room.iter().enumerate() {
        assert_eq!(s, &vec![(r / 2) as u32], "room {r}");
    }
    let send = RoomSend {
        plan: plan.clone(),
        senders: by_room,
    };
    let mut rng = Rng::new(7);
    let mut seen = [0u32; 10];
    for g in 0..10_000 {
        let (who, room) = send.pick(g, 5, &mut rng);
        assert!(
            plan.of_client(who).contains(&room),
            "{who} posted into {room}"
        );
        seen[room as usize] += 1;
    }
    assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
    // Redis: any publisher, round robin.
    let any = RoomSend {
        plan,
        senders: Vec::new(),
    };
    assert_eq!(any.pick(7, 3, &mut rng).0, 1);
}

#[test]
fn room_seq_must_rise_by_one() {
    let mut s = RoomSeqs::new(vec![(9, 100), (2, 0)]);
    assert_eq!(s.observe(2, 1), Some(Order::InOrder));
    assert_eq!(s.observe(9, 101), Some(Order::InOrder));
    assert_eq!(s.observe(9, 101), Some(Order::Duplicate));
    assert_eq!(s.observe(9, 100), Some(Order::Duplicate));
    assert_eq!(s.observe(9, 104), Some(Order::Gap));
    assert_eq!(s.observe(9, 105), Some(Order::InOrder));
    assert_eq!(s.observe(3, 1), None);
    // Someone else's message moves the room on.
    s.skip(br#"{"type":"chat","senderID":"a","recipientID":"","room":"room-2","content":"hi","username":"b","seq":2}"#);
    assert_eq!(s.observe(2, 3), Some(Order::InOrder));
}

fn room_line(room: &str, seq: &str, stamp: Stamp) -> Vec<u8> {
    let mut l = format!(r#"{{"type":"chat","senderID":"0138f2c4-5b1e-8d3a-9f4e-2a6b7c8d9e0f","recipientID":"","room":"{room}","content":""#).into_bytes();
    write_payload(&mut l, stamp, 64);
    l.extend_from_slice(format!(r#"","username":"lg1-0"{seq}}}"#).as_bytes());
    l
}

#[test]
fn room_messages_are_scanned_and_counted() {
    let st = |s: u64| Stamp {
        sender: 0,
        seq: s,
        intended_ns: 0,
    };
    let line = room_line("room-12", r#","seq":42"#, st(1));
    assert_eq!((room_of(&line), seq_of(&line)), (Some(12), Some(42)));
    assert_eq!(seq_of(br#"{"seq":"7"}"#), Some(7));
    assert_eq!(room_of(&room_line("rust", "", st(1))), None);
    assert_eq!(seq_of(&room_line("room-1", "", st(1))), None);

    let mut stats = ThreadStats::new(Window { start: 0, end: 10 });
    let mut seqs = RoomSeqs::new(vec![(12, 41)]);
    let rec = |stats: &mut ThreadStats, seqs: &mut RoomSeqs, l: &[u8], g| {
        room_order::record(stats, seqs, l, st(g), 1_000_000)
    };
    assert!(rec(&mut stats, &mut seqs, &line, 1));
    assert!(!rec(&mut stats, &mut seqs, &line, 1)); // the same seq again
    assert!(rec(
        &mut stats,
        &mut seqs,
        &room_line("room-12", r#","seq":44"#, st(3)),
        3
    ));
    assert!(!rec(
        &mut stats,
        &mut seqs,
        &room_line("room-5", r#","seq":1"#, st(4)),
        4
    ));
    assert!(rec(
        &mut stats,
        &mut seqs,
        &room_line("room-12", "", st(5)),
        5
    ));
    assert_eq!(
        (stats.received, stats.duplicated, stats.order_violations),
        (3, 1, 1)
    );
    assert_eq!(stats.errors.get("LOADGEN_WRONG_ROOM"), Some(&1));
    assert_eq!(stats.errors.get("LOADGEN_NO_SEQ"), Some(&1));
}

#[test]
fn join_and_post_bytes() {
    let mut out = Vec::new();
    push_join(&mut out, 3);
    assert_eq!(out, b"{\"type\":\"join\",\"room\":\"room-3\"}\n");
    let stamp = Stamp {
        sender: 1,
        seq: 2,
        intended_ns: 3,
    };
    let (mut chat, mut scratch) = (Vec::new(), Vec::new());
    encode_post(&mut chat, &mut scratch, Protocol::UringChat, 7, stamp, 8);
    assert_eq!(
        chat,
        b"{\"type\":\"chat\",\"room\":\"room-7\",\"content\":\"1:2:3:xx\"}\n"
    );
    let v: serde_json::Value = serde_json::from_slice(&chat).unwrap();
    assert_eq!(v["room"], "room-7");
    let mut resp = Vec::new();
    encode_post(&mut resp, &mut scratch, Protocol::Redis, 7, stamp, 8);
    assert_eq!(
        resp,
        b"*3\r\n$7\r\nPUBLISH\r\n$6\r\nroom-7\r\n$8\r\n1:2:3:xx\r\n"
    );
    assert_eq!(
        loadgen::redis::subscribe_all(&["room-0".into(), "room-1".into()]),
        b"*3\r\n$9\r\nSUBSCRIBE\r\n$6\r\nroom-0\r\n$6\r\nroom-1\r\n"
    );
}

#[test]
fn join_responses_and_refusals() {
    let ok = br#"{"type":"join_response","senderID":"server","room":"room-4","content":"{\"room\":\"room-4\",\"epoch\":\"e1\",\"seq\":41,\"recovered\":true,\"memberCount\":3,\"members\":[{\"userID\":\"u\",\"username\":\"n\"}]}"}"#;
    assert_eq!(join_line(ok), JoinLine::Joined { room: 4, seq: 41 });
    let err = br#"{"type":"error","senderID":"server","code":"TOO_MANY_ROOMS","content":"100 rooms at most"}"#;
    assert_eq!(
        join_line(err),
        JoinLine::Refused("TOO_MANY_ROOMS 100 rooms at most".into())
    );
    let presence = br#"{"type":"presence","senderID":"server","room":"room-4","content":"{}"}"#;
    assert_eq!(join_line(presence), JoinLine::Other);
    let foreign = br#"{"type":"join_response","senderID":"server","room":"rust","content":"{\"room\":\"rust\",\"seq\":1}"}"#;
    assert!(matches!(join_line(foreign), JoinLine::Refused(_)));
}
