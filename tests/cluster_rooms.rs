//! Rooms across the nodes of a cluster (docs/CLUSTER.md, "Rooms across nodes"): one owner node per
//! room, one order and a gap-free seq for members on every node, replay from the owner's history,
//! traffic only to nodes with members, and a new epoch with `recovered: false` when the owner dies.
//! Each test starts its own nats-server and nodes (tests/common/cluster.rs); without `nats-server`
//! on PATH it prints one `SKIPPED:` line and returns.

mod common;

use common::cluster::{Nats, Node};
use common::Client;
use serde_json::{json, Value};
use uring_chat::cluster::names;
use uring_chat::cluster::owners::rendezvous;

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
        let received = member.room_messages_in_one_order(total);
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

    let subscriptions = "uring_chat_cluster_room_subscriptions";
    assert_eq!(b.metric(subscriptions), 1, "node b has a member");
    assert_eq!(c.metric(subscriptions), 0, "node c has none");

    // The last member on node b leaves: node b's subscription ends with its answer.
    bob.send(&json!({"type": "leave", "room": room}).to_string());
    assert_eq!(bob.next_reply()["type"], "leave_response");
    common::eventually("node b unsubscribes", || b.metric(subscriptions) == 0);
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

/// NATS stopped: a room this node owns goes on among its users, a post to a room another node
/// owns and a join of a room nobody owns yet get CLUSTER_UNAVAILABLE. NATS back: the member on the
/// other node missed a frame of the first room while cut off; the next one shows the gap, and it
/// gets a join_response and the replay of what it missed, never a silent hole.
#[test]
fn losing_nats_keeps_local_rooms_and_a_missed_frame_is_replayed() {
    let Some(mut nats) =
        Nats::start("losing_nats_keeps_local_rooms_and_a_missed_frame_is_replayed")
    else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 1);
    let ours = room_owned_by("a", &["a", "b"]);
    let theirs = room_owned_by("b", &["a", "b"]);
    let mut ann = a.login("ann");
    let mut bob = b.login("bob");
    ann.join(&ours, None);
    bob.join(&ours, None);
    bob.join(&theirs, None);
    ann.join(&theirs, None);
    ann.post(&ours, "before");
    for member in [&mut ann, &mut bob] {
        assert_eq!(member.next_room_chat()["seq"], 1);
    }

    nats.stop();
    common::eventually("node a notices", || a.readyz() == 503);
    common::eventually("node b notices", || b.readyz() == 503);
    ann.post(&ours, "during");
    let frame = ann.next_room_chat();
    assert_eq!(
        (&frame["seq"], &frame["content"]),
        (&json!(2), &json!("during"))
    );
    ann.post(&theirs, "lost?");
    ann.expect_error("CLUSTER_UNAVAILABLE");
    ann.send(&json!({"type": "join", "room": "nobody owns this yet"}).to_string());
    ann.expect_error("CLUSTER_UNAVAILABLE");
    let errors = r#"uring_chat_protocol_errors_total{code="CLUSTER_UNAVAILABLE"}"#;
    assert_eq!(a.metric(errors), 2, "the post and the join");

    nats.restart();
    common::eventually("node a is ready again", || a.readyz() == 200);
    common::eventually("node b is ready again", || b.readyz() == 200);
    ann.post(&ours, "after");
    assert_eq!(ann.next_room_chat()["seq"], 3);
    let frame = bob.next_reply();
    assert_eq!(
        frame["type"], "join_response",
        "the gap is not silent: {frame}"
    );
    let answer = common::content_of(&frame);
    assert_eq!(
        (&answer["seq"], &answer["recovered"]),
        (&json!(3), &json!(true))
    );
    let replay: Vec<Value> = (0..2).map(|_| bob.next_room_chat()).collect();
    assert_eq!(
        (&replay[0]["content"], &replay[1]["content"]),
        (&json!("during"), &json!("after"))
    );
    assert_eq!(
        (&replay[0]["seq"], &replay[1]["seq"]),
        (&json!(2), &json!(3))
    );
    bob.ping("nothing twice");

    // The refused join made ann no member: a post is NOT_IN_ROOM, a leave is answered.
    ann.post("nobody owns this yet", "hello?");
    ann.expect_error("NOT_IN_ROOM");
    ann.send(&json!({"type": "leave", "room": "nobody owns this yet"}).to_string());
    assert_eq!(ann.next_reply()["type"], "leave_response");
}

/// NATS back with an empty store: the owner puts its room's key back, so a node started afterwards
/// finds the room where it is, with its seq and epoch, rather than placing a second room of the
/// same name on a node of its own choosing.
#[test]
fn room_owners_are_reasserted_into_a_fresh_nats() {
    let Some(mut nats) = Nats::start("room_owners_are_reasserted_into_a_fresh_nats") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 1);
    // a's among a and b, but c's once c is there: only the key can send c's join to a.
    let room = (0..)
        .map(|i| format!("room-{i}"))
        .find(|room| {
            let key = names::key(room);
            rendezvous(&key, [("a", 0), ("b", 1)]) == Some(0)
                && rendezvous(&key, [("a", 0), ("b", 1), ("c", 2)]) == Some(2)
        })
        .unwrap();
    let mut ann = a.login("ann");
    let first = ann.join(&room, None);
    ann.post(&room, "kept");
    assert_eq!(ann.next_room_chat()["seq"], 1);

    nats.stop();
    std::fs::remove_dir_all(&nats.store).unwrap();
    common::eventually("node a notices", || a.readyz() == 503);
    nats.restart();
    common::eventually("node a is ready again", || a.readyz() == 200);
    common::eventually("node b is ready again", || b.readyz() == 200);

    let c = Node::start(&nats, "c", 1);
    let mut cid = c.login("cid");
    let answer = cid.join(&room, None);
    assert_eq!(
        (&answer["seq"], &answer["epoch"]),
        (&json!(1), &first["epoch"])
    );
    assert_eq!(c.metric("uring_chat_rooms"), 0, "node a still owns it");
    cid.post(&room, "from c");
    for member in [&mut ann, &mut cid] {
        assert_eq!(member.next_room_chat()["seq"], 2);
    }
}

/// SIGTERM of a room's owner node: it says goodbye as its bridge stops, so the other node counts
/// it gone at once (not dead: no heartbeat was missed) and moves its room; the member there gets a
/// new epoch with `recovered: false`, and the room goes on.
#[test]
fn a_stopped_owner_node_hands_its_rooms_on() {
    let Some(nats) = Nats::start("a_stopped_owner_node_hands_its_rooms_on") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let mut b = Node::start(&nats, "b", 2);
    let room = room_owned_by("b", &["a", "b"]);
    let mut bea = b.login("bea");
    let mut ann = a.login("ann");
    let first = bea.join(&room, None);
    ann.join(&room, None);
    ann.post(&room, "before");
    for member in [&mut ann, &mut bea] {
        assert_eq!(member.next_room_chat()["seq"], 1);
    }

    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
    bea.expect_error("SERVER_SHUTDOWN");
    assert_eq!(b.child.wait().unwrap().code(), Some(0), "a clean exit");
    let frame = ann.next_reply();
    assert_eq!(frame["type"], "join_response", "{frame}");
    let answer = common::content_of(&frame);
    assert_eq!(
        (&answer["seq"], &answer["recovered"]),
        (&json!(0), &json!(false))
    );
    assert_ne!(answer["epoch"], first["epoch"]);
    assert_eq!(a.metric("uring_chat_cluster_rooms_moved_total"), 1);
    assert_eq!(
        a.metric("uring_chat_cluster_dead_nodes_total"),
        0,
        "gone by its goodbye, not by silence"
    );
    ann.post(&room, "after");
    assert_eq!(ann.next_room_chat()["seq"], 1);
}
