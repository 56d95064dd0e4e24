//! Rooms across the nodes of a cluster (docs/CLUSTER.md, "Rooms across nodes"): one owner node per
//! room, one order and a gap-free seq for members on every node, replay from the owner's history,
//! traffic only to nodes with members, and a new epoch with `recovered: false` when the owner dies.
//! Each test starts its own nats-server and nodes (tests/common/cluster.rs); without `nats-server`
//! on PATH it prints one `SKIPPED:` line and returns.

mod common;

use std::collections::HashMap;

use common::cluster::{Nats, Node};
use common::Client;
use serde_json::{json, Value};
use uring_chat::cluster::names;
use uring_chat::cluster::owners::rendezvous;

/// (seq, senderID, content) of a room chat frame.
fn message(frame: &Value) -> (u64, String, String) {
    (
        frame["seq"].as_u64().expect("room messages carry a seq"),
        frame["senderID"].as_str().unwrap().to_string(),
        frame["content"].as_str().unwrap().to_string(),
    )
}

/// A room name that the rendezvous hash gives to `winner` among the running `nodes`: it wins
/// among any of them too, so whichever the placing node has heard of yet, the owner is `winner`.
fn room_owned_by(winner: &str, nodes: &[&str]) -> String {
    let tag = |name: &str| nodes.iter().position(|n| *n == name).unwrap() as u32;
    (0..)
        .map(|i| format!("room-{i}"))
        .find(|room| {
            let all = nodes.iter().map(|&n| (n, tag(n)));
            rendezvous(&names::key(room), all) == Some(tag(winner))
        })
        .unwrap()
}

/// Three nodes with members of one room on each, and a poster on each: every member gets every
/// message exactly once, all in the same order, with seqs gap-free from 1; member counts are the
/// room's, cluster-wide.
#[test]
fn a_room_spans_three_nodes_in_one_order() {
    let Some(nats) = Nats::start("a_room_spans_three_nodes_in_one_order") else {
        return;
    };
    let nodes = [
        Node::start(&nats, "a", 2),
        Node::start(&nats, "b", 1),
        Node::start(&nats, "c", 2),
    ];
    let mut members: Vec<Client> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..3 {
            members.push(node.login(&format!("n{n}-m{i}")));
        }
    }
    for (joined, member) in members.iter_mut().enumerate() {
        let answer = member.join("rust", None);
        assert_eq!(answer["seq"], 0, "nobody has posted yet: {answer}");
        assert_eq!(
            answer["memberCount"],
            joined + 1,
            "counted over every node: {answer}"
        );
    }
    let posters = [0, 3, 6];
    const EACH: usize = 30;
    for n in 0..EACH {
        for &p in &posters {
            members[p].post("rust", &format!("{p}:{n}"));
        }
    }
    let total = EACH * posters.len();
    let mut orders = Vec::new();
    for member in &mut members {
        let received: Vec<_> = (0..total)
            .map(|_| message(&member.next_room_chat()))
            .collect();
        let seqs: Vec<u64> = received.iter().map(|m| m.0).collect();
        assert_eq!(
            seqs,
            (1..=total as u64).collect::<Vec<_>>(),
            "{}: gap-free, in order",
            member.username
        );
        let mut next: HashMap<String, usize> = HashMap::new();
        for (_, sender, content) in &received {
            let n: usize = content.split(':').nth(1).unwrap().parse().unwrap();
            let expected = next.entry(sender.clone()).or_default();
            assert_eq!(n, *expected, "per-sender order from {sender}");
            *expected += 1;
        }
        member.ping("nothing more");
        orders.push(received);
    }
    for order in &orders[1..] {
        assert_eq!(order, &orders[0], "every member sees one order");
    }
    let total_owned: u64 = nodes.iter().map(|n| n.metric("uring_chat_rooms")).sum();
    assert_eq!(total_owned, 1, "one owner node holds the room");
}

/// A join with `since` on a node that does not own the room gets the replay from the owner's
/// history; a node without members of a room receives none of its traffic.
#[test]
fn a_join_elsewhere_replays_and_only_member_nodes_get_traffic() {
    let Some(nats) = Nats::start("a_join_elsewhere_replays_and_only_member_nodes_get_traffic")
    else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 2);
    let c = Node::start(&nats, "c", 1);
    let room = room_owned_by("a", &["a", "b", "c"]);
    let mut ann = a.login("ann");
    let mut bob = b.login("bob");
    let mut cid = c.login("cid");
    ann.join(&room, None);
    for i in 1..=5 {
        ann.post(&room, &format!("m{i}"));
    }
    for i in 1..=5 {
        assert_eq!(ann.next_room_chat()["seq"], i);
    }
    assert_eq!(a.metric("uring_chat_rooms"), 1, "node a owns the room");
    assert_eq!(b.metric("uring_chat_rooms"), 0);

    let mut early = Vec::new();
    let answer = bob.join_collecting(&room, Some(2), &mut early);
    assert!(early.is_empty(), "nothing before the answer: {early:?}");
    assert_eq!(
        (&answer["seq"], &answer["recovered"]),
        (&json!(5), &json!(true))
    );
    assert_eq!(answer["memberCount"], 2);
    let replay: Vec<Value> = (0..3).map(|_| bob.next_room_chat()).collect();
    let got: Vec<(u64, String)> = (replay.iter())
        .map(|f| {
            (
                f["seq"].as_u64().unwrap(),
                f["content"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(3, "m3".into()), (4, "m4".into()), (5, "m5".into())],
        "the replay after since"
    );
    bob.post(&room, "from b");
    for member in [&mut ann, &mut bob] {
        let frame = member.next_room_chat();
        assert_eq!(
            (&frame["seq"], &frame["content"]),
            (&json!(6), &json!("from b"))
        );
    }
    let request = json!({"type": "members", "room": room, "content": "0"});
    bob.send(&request.to_string());
    let page = bob.next_reply();
    assert_eq!(page["type"], "member_list", "{page}");

    cid.ping("after the room's traffic");
    assert!(b.metric("uring_chat_cluster_room_received_total") >= 2);
    assert_eq!(
        c.metric("uring_chat_cluster_room_received_total"),
        0,
        "node c has no members of the room"
    );
    assert_eq!(
        c.metric("uring_chat_cluster_received_total"),
        0,
        "and nothing else of it came to node c"
    );

    // The last member on node b leaves: node b's subscription ends with its answer.
    bob.send(&json!({"type": "leave", "room": room}).to_string());
    assert_eq!(bob.next_reply()["type"], "leave_response");
    let before = b.metric("uring_chat_cluster_room_received_total");
    ann.post(&room, "after bob left");
    assert_eq!(ann.next_room_chat()["seq"], 7);
    bob.ping("not in the room");
    ann.ping("and ann's node saw it through");
    assert_eq!(b.metric("uring_chat_cluster_room_received_total"), before);
}

/// `kill -9` of a room's owner node: the members on the other nodes get a `join_response` with a
/// new epoch and `recovered: false` (never a silent gap), and the room goes on among the survivors
/// with a fresh seq.
#[test]
fn a_killed_owner_restarts_its_rooms_on_a_survivor() {
    let Some(nats) = Nats::start("a_killed_owner_restarts_its_rooms_on_a_survivor") else {
        return;
    };
    let a = Node::start(&nats, "a", 2);
    let mut b = Node::start(&nats, "b", 1);
    let c = Node::start(&nats, "c", 1);
    let room = room_owned_by("b", &["a", "b", "c"]);
    let mut bea = b.login("bea");
    let mut ann = a.login("ann");
    let mut cid = c.login("cid");
    bea.join(&room, None);
    let first = ann.join(&room, None);
    cid.join(&room, None);
    assert_eq!(b.metric("uring_chat_rooms"), 1, "node b owns the room");
    for i in 1..=3 {
        ann.post(&room, &format!("before {i}"));
    }
    for member in [&mut ann, &mut cid, &mut bea] {
        for i in 1..=3 {
            assert_eq!(member.next_room_chat()["seq"], i);
        }
    }

    b.kill();
    let mut epochs = Vec::new();
    for member in [&mut ann, &mut cid] {
        let frame = member.next_reply();
        assert_eq!(
            frame["type"], "join_response",
            "{}: {frame}",
            member.username
        );
        let answer = common::content_of(&frame);
        assert_eq!(answer["recovered"], false, "{answer}");
        assert_eq!(answer["seq"], 0, "a fresh seq: {answer}");
        assert_ne!(answer["epoch"], first["epoch"], "a new epoch");
        epochs.push(answer["epoch"].clone());
    }
    assert_eq!(epochs[0], epochs[1], "one new owner for both");
    let moved = a.metric("uring_chat_cluster_rooms_moved_total")
        + c.metric("uring_chat_cluster_rooms_moved_total");
    assert_eq!(moved, 1, "exactly one survivor moved the room");

    cid.post(&room, "after");
    for member in [&mut ann, &mut cid] {
        let frame = member.next_room_chat();
        assert_eq!(
            (&frame["seq"], &frame["content"]),
            (&json!(1), &json!("after"))
        );
    }
    ann.ping("nothing more");
    cid.ping("nothing more");
}
