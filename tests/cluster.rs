//! Several nodes as one server over NATS (docs/CLUSTER.md): each test starts its own nats-server
//! (JetStream on, a free port, a temporary store dir) and nodes as separate processes of the
//! binary, and talks to them over real sockets. Without `nats-server` on PATH each test prints one
//! `SKIPPED:` line and returns.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::cluster::{Nats, Node};
use common::{chat, content_of, eventually, user_count, Client};
use serde_json::{json, Value};

/// What the cluster promises for a dead node's names (docs/CLUSTER.md, "Liveness"): free again
/// within this long of its death. The one time bound these tests check, because it is the contract.
const NAMES_FREED_WITHIN: Duration = Duration::from_secs(10);

fn direct(to: &Client, text: &str) -> String {
    json!({"type": "chat", "content": text, "recipientID": to.user_id}).to_string()
}

/// The next chat frame, skipping presence.
fn next_chat(client: &mut Client) -> Value {
    let frame = client.next_reply();
    assert_eq!(
        frame["type"], "chat",
        "{}: expected a chat, got {frame}",
        client.username
    );
    frame
}

/// Waits until `client` sees `count` users cluster-wide.
fn until_users(client: &mut Client, count: u64) {
    eventually(&format!("{} sees {count} users", client.username), || {
        user_count(client) == count
    });
}

/// Three nodes: lobby broadcasts from users on every node reach every user on every node exactly
/// once and in each sender's order; direct messages cross nodes both ways; a direct message to a
/// user who left, or to a node that does not exist, gets USER_NOT_FOUND; counts and `users` pages
/// are cluster-wide.
#[test]
fn three_nodes_act_as_one_server() {
    let Some(nats) = Nats::start("three_nodes_act_as_one_server") else {
        return;
    };
    let nodes = [
        Node::start(&nats, "a", 2),
        Node::start(&nats, "b", 1),
        Node::start(&nats, "c", 2),
    ];
    let mut users: Vec<Client> = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..3 {
            users.push(node.login(&format!("n{n}-u{i}")));
        }
    }
    for user in users.iter_mut() {
        until_users(user, 9);
    }

    const PER_SENDER: usize = 20;
    for i in 0..PER_SENDER {
        for user in users.iter_mut() {
            let text = format!("{}#{i}", user.username);
            user.send(&chat(&text));
        }
    }
    let names: Vec<String> = users.iter().map(|u| u.username.clone()).collect();
    for user in users.iter_mut() {
        let mut got: HashMap<String, Vec<usize>> = HashMap::new();
        let expected = (names.len() - 1) * PER_SENDER;
        for _ in 0..expected {
            let frame = next_chat(user);
            let text = frame["content"].as_str().unwrap();
            let (sender, i) = text.split_once('#').unwrap();
            assert_eq!(frame["username"], sender);
            assert_ne!(sender, user.username, "nobody gets their own broadcast");
            got.entry(sender.to_string())
                .or_default()
                .push(i.parse().unwrap());
        }
        for name in names.iter().filter(|&name| *name != user.username) {
            let order: Vec<usize> = (0..PER_SENDER).collect();
            assert_eq!(got.get(name), Some(&order), "{} from {name}", user.username);
        }
        user.ping("nothing more");
    }

    // Direct messages across nodes, both ways.
    let (a0, b0) = (0, 3);
    let line = direct(&users[b0], "from a to b");
    users[a0].send(&line);
    let frame = next_chat(&mut users[b0]);
    assert_eq!(frame["content"], "from a to b");
    assert_eq!(frame["senderID"], users[a0].user_id.as_str());
    assert_eq!(frame["recipientID"], users[b0].user_id.as_str());
    let line = direct(&users[a0], "from b to a");
    users[b0].send(&line);
    assert_eq!(next_chat(&mut users[a0])["content"], "from b to a");
    let line = direct(&users[1], "from c to a's second core");
    users[7].send(&line);
    assert_eq!(
        next_chat(&mut users[1])["content"],
        "from c to a's second core"
    );

    // A user of node b leaves: counted out everywhere, and a direct message to it finds nobody.
    let gone = users.remove(4);
    let gone_id = gone.user_id.clone();
    drop(gone);
    for user in users.iter_mut() {
        until_users(user, 8);
    }
    users[a0]
        .send(&json!({"type": "chat", "content": "hello?", "recipientID": gone_id}).to_string());
    users[a0].expect_error("USER_NOT_FOUND");

    // A userID naming a node that does not exist: USER_NOT_FOUND at once.
    let mut fake = users[a0].user_id.clone().into_bytes();
    fake[2..8].copy_from_slice(b"ffffff");
    let fake = String::from_utf8(fake).unwrap();
    users[a0].send(&json!({"type": "chat", "content": "anyone?", "recipientID": fake}).to_string());
    users[a0].expect_error("USER_NOT_FOUND");

    // Pages list the cluster's users.
    let mut seen = HashSet::new();
    let mut offset = 0;
    loop {
        let request = json!({"type": "users", "content": offset.to_string()}).to_string();
        users[5].send(&request);
        let reply = users[5].next_reply();
        let page = content_of(&reply);
        assert_eq!(page["userCount"], 8);
        let list = page["userList"].as_array().unwrap();
        if list.is_empty() {
            break;
        }
        for entry in list {
            seen.insert(entry["username"].as_str().unwrap().to_string());
        }
        offset += list.len();
    }
    let expected: HashSet<String> = users.iter().map(|u| u.username.clone()).collect();
    assert_eq!(seen, expected);
}

/// Two clients ask for the same name on two nodes at the same moment: exactly one gets it.
#[test]
fn one_name_at_once_on_two_nodes_goes_to_exactly_one() {
    let Some(nats) = Nats::start("one_name_at_once_on_two_nodes_goes_to_exactly_one") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 2);
    for round in 0..10 {
        let name = format!("contested-{round}");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let racers: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .map(|addr| {
                let (barrier, name) = (barrier.clone(), name.clone());
                std::thread::spawn(move || {
                    let mut client = Client::connect(addr);
                    barrier.wait();
                    client.send(&json!({"type": "connect", "content": name}).to_string());
                    let reply = client.next_reply();
                    (client, reply)
                })
            })
            .collect();
        let replies: Vec<(Client, Value)> = racers.into_iter().map(|r| r.join().unwrap()).collect();
        let won = replies
            .iter()
            .filter(|(_, r)| r["type"] == "connect_response")
            .count();
        let taken = replies
            .iter()
            .filter(|(_, r)| r["code"] == "NAME_TAKEN")
            .count();
        assert_eq!(
            (won, taken),
            (1, 1),
            "round {round}: {:?}",
            replies.iter().map(|(_, r)| r).collect::<Vec<_>>()
        );
    }
}

/// `kill -9` of a node: the others announce its users as left, their names can be taken again
/// within 10 s, and the others go on chatting.
#[test]
fn a_killed_node_is_announced_gone_and_frees_its_names() {
    let Some(nats) = Nats::start("a_killed_node_is_announced_gone_and_frees_its_names") else {
        return;
    };
    let a = Node::start(&nats, "a", 2);
    let mut b = Node::start(&nats, "b", 1);
    let c = Node::start(&nats, "c", 1);
    let mut alice = a.login("alice");
    let bob = b.login("bob");
    let mut carol = c.login("carol");
    until_users(&mut alice, 3);
    until_users(&mut carol, 3);
    let bob_id = bob.user_id.clone();

    b.kill();
    let killed = Instant::now();
    let left_bob = |frame: &Value| {
        frame["type"] == "presence"
            && content_of(frame)["left"]
                .as_array()
                .is_some_and(|left| left.iter().any(|u| u["userID"] == bob_id.as_str()))
    };
    for watcher in [&mut alice, &mut carol] {
        loop {
            if left_bob(&watcher.next_frame()) {
                break;
            }
        }
    }
    let mut again = Client::connect(a.addr);
    while !again.try_login("bob") {
        assert!(
            killed.elapsed() < NAMES_FREED_WITHIN,
            "bob's name is still taken"
        );
        std::thread::sleep(Duration::from_millis(200));
        again = Client::connect(a.addr);
    }
    until_users(&mut carol, 3); // alice, carol and the new bob

    carol.send(&chat("still here"));
    assert_eq!(next_chat(&mut alice)["content"], "still here");
    assert_eq!(next_chat(&mut again)["content"], "still here");
}

/// SIGTERM of a node: its users get SERVER_SHUTDOWN and are logged out as the drain closes them,
/// which frees their names at once (not after the heartbeats stop: no node is counted dead), and
/// the node exits 0 once its bridge has sent those releases.
#[test]
fn a_stopped_node_releases_its_names_as_it_drains() {
    let Some(nats) = Nats::start("a_stopped_node_releases_its_names_as_it_drains") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let mut b = Node::start(&nats, "b", 2);
    let mut alice = a.login("alice");
    let mut bob = b.login("bob");
    until_users(&mut alice, 2);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
    bob.expect_error("SERVER_SHUTDOWN");
    assert_eq!(b.child.wait().unwrap().code(), Some(0), "a clean exit");
    eventually("bob's name is free", || {
        Client::connect(a.addr).try_login("bob")
    });
    assert_eq!(
        a.metric("uring_chat_cluster_dead_nodes_total"),
        0,
        "freed by the release"
    );
}

/// NATS stopped: local chat goes on, a cross-node send gets CLUSTER_UNAVAILABLE, a new login too,
/// and /readyz says 503. NATS back on the same port and store: the nodes reconnect, chat crosses
/// nodes again, and nothing arrives twice.
#[test]
fn losing_nats_keeps_local_chat_and_reconnects() {
    let Some(mut nats) = Nats::start("losing_nats_keeps_local_chat_and_reconnects") else {
        return;
    };
    let a = Node::start(&nats, "a", 2);
    let b = Node::start(&nats, "b", 1);
    let mut a0 = a.login("a0");
    let mut a1 = a.login("a1");
    let mut b0 = b.login("b0");
    until_users(&mut a0, 3);
    until_users(&mut b0, 3);
    a0.send(&direct(&b0, "before"));
    assert_eq!(next_chat(&mut b0)["content"], "before");

    nats.stop();
    eventually("node a says it is not ready", || a.readyz() == 503);
    eventually("node b says it is not ready", || b.readyz() == 503);
    a0.send(&direct(&b0, "during"));
    a0.expect_error("CLUSTER_UNAVAILABLE");
    a0.send(&direct(&a1, "local direct"));
    assert_eq!(next_chat(&mut a1)["content"], "local direct");
    a0.send(&chat("local lobby"));
    assert_eq!(next_chat(&mut a1)["content"], "local lobby");
    a0.expect_error("CLUSTER_UNAVAILABLE");
    let mut late = Client::connect(a.addr);
    late.send(&json!({"type": "connect", "content": "late"}).to_string());
    late.expect_error("CLUSTER_UNAVAILABLE");
    let errors = r#"uring_chat_protocol_errors_total{code="CLUSTER_UNAVAILABLE"}"#;
    assert_eq!(
        a.metric(errors),
        3,
        "the direct message, the broadcast, the login"
    );
    assert!(a.metric("uring_chat_cluster_unavailable_total") >= 3);
    assert_eq!(a.metric("uring_chat_cluster_connected"), 0);

    nats.restart();
    eventually("node a is ready again", || a.readyz() == 200);
    eventually("node b is ready again", || b.readyz() == 200);
    assert_eq!(user_count(&mut b0), 3, "the names survived the restart");
    a0.send(&direct(&b0, "after"));
    let frame = next_chat(&mut b0);
    assert_eq!(frame["content"], "after");
    for i in 0..5 {
        b0.send(&chat(&format!("again {i}")));
    }
    for watcher in [&mut a0, &mut a1] {
        for i in 0..5 {
            assert_eq!(next_chat(watcher)["content"], format!("again {i}"));
        }
        watcher.ping("no duplicates");
    }
    b0.ping("and nothing of its own");
    let mut fresh = a.login("fresh");
    until_users(&mut fresh, 4);
    assert_eq!(a.metric("uring_chat_cluster_connected"), 1);
    assert_eq!(a.metric("uring_chat_cluster_duplicates_dropped_total"), 0);
}

/// A login on a clustered node waits for the names bucket; frames sent right behind it, in the
/// same write, wait with it and are then acted on as the logged-in user's.
#[test]
fn frames_right_behind_a_login_wait_for_it() {
    let Some(nats) = Nats::start("frames_right_behind_a_login_wait_for_it") else {
        return;
    };
    let a = Node::start(&nats, "a", 2);
    let b = Node::start(&nats, "b", 1);
    let mut watcher = b.login("watcher");
    let mut eager = Client::connect(a.addr);
    let login = json!({"type": "connect", "content": "eager"});
    let both = format!(
        "{login}\n{}\n{}\n",
        chat("right behind"),
        direct(&watcher, "and a DM")
    );
    eager.send_bytes(both.as_bytes());
    assert_eq!(eager.next_reply()["type"], "connect_response");
    let frame = next_chat(&mut watcher);
    assert_eq!(
        (&frame["content"], &frame["username"]),
        (&json!("right behind"), &json!("eager"))
    );
    assert_eq!(next_chat(&mut watcher)["content"], "and a DM");
}

/// NATS back with an empty store (its JetStream data lost): the nodes make the names bucket again
/// and re-assert their users' names, so a node that starts afterwards sees every user, and their
/// names stay taken.
#[test]
fn names_are_reasserted_into_a_fresh_nats() {
    let Some(mut nats) = Nats::start("names_are_reasserted_into_a_fresh_nats") else {
        return;
    };
    let a = Node::start(&nats, "a", 2);
    let b = Node::start(&nats, "b", 1);
    let mut ann = a.login("ann");
    let mut bea = b.login("bea");
    until_users(&mut ann, 2);

    nats.stop();
    std::fs::remove_dir_all(&nats.store).unwrap();
    eventually("node a notices", || a.readyz() == 503);
    nats.restart();
    eventually("node a is ready again", || a.readyz() == 200);
    eventually("node b is ready again", || b.readyz() == 200);

    let c = Node::start(&nats, "c", 1);
    let mut cid = c.login("cid");
    until_users(&mut cid, 3);
    for taken in ["ann", "bea"] {
        let mut again = Client::connect(c.addr);
        again.send(&json!({"type": "connect", "content": taken}).to_string());
        again.expect_error("NAME_TAKEN");
    }
    cid.send(&chat("hello from c"));
    assert_eq!(next_chat(&mut ann)["content"], "hello from c");
    assert_eq!(next_chat(&mut bea)["content"], "hello from c");
}

/// A node frozen (SIGSTOP) long enough to be counted dead loses its users' names to the survivors;
/// when it runs again and finds a name taken by another node's user meanwhile, its own user under
/// that name gets NAME_TAKEN and is disconnected: never two users under one name.
#[test]
fn a_node_counted_dead_gives_up_names_taken_meanwhile() {
    let Some(nats) = Nats::start("a_node_counted_dead_gives_up_names_taken_meanwhile") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 1);
    let mut ann = a.login("ann");
    let mut watcher = b.login("watcher");
    until_users(&mut watcher, 2);
    until_users(&mut ann, 2);

    let pid = a.child.id() as i32;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut usurper = Client::connect(b.addr);
    eventually("ann's name is freed while node a is frozen", || {
        usurper = Client::connect(b.addr);
        usurper.try_login("ann")
    });
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let frame = ann.expect_error("NAME_TAKEN");
    assert!(frame["content"]
        .as_str()
        .unwrap()
        .contains("another node took your name"));
    ann.expect_closed();
    until_users(&mut watcher, 2);
    usurper.send(&chat("the name is mine"));
    assert_eq!(next_chat(&mut watcher)["content"], "the name is mine");
}

/// A clustered node's scrape, with the cluster's series, passes promtool's check.
#[test]
fn promtool_accepts_a_cluster_nodes_scrape() {
    let Ok(version) = std::process::Command::new("promtool")
        .arg("--version")
        .output()
    else {
        println!("SKIPPED: promtool not installed (apt-get install prometheus provides it)");
        return;
    };
    assert!(version.status.success());
    let Some(nats) = Nats::start("promtool_accepts_a_cluster_nodes_scrape") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 1);
    let mut ann = a.login("ann");
    let mut bea = b.login("bea");
    until_users(&mut ann, 2);
    ann.send(&chat("counted"));
    assert_eq!(next_chat(&mut bea)["content"], "counted");
    let answer = a.get("/metrics");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(body.contains("uring_chat_cluster_connected 1"), "{body}");
    common::assert_promtool_accepts(body);
    assert!(
        b.metric("uring_chat_cluster_received_total") >= 1,
        "the broadcast, at least"
    );
}

/// One sender's broadcasts and direct messages to a user of another node travel two NATS subjects
/// (the lobby and the node's own), and still arrive in the order they were sent, as on one node.
#[test]
fn broadcasts_and_direct_messages_keep_their_order_across_nodes() {
    let Some(nats) = Nats::start("broadcasts_and_direct_messages_keep_their_order") else {
        return;
    };
    let a = Node::start(&nats, "a", 1);
    let b = Node::start(&nats, "b", 1);
    let mut reader = b.login("reader");
    let mut sender = a.login("sender");
    until_users(&mut reader, 2);
    // Within the default flood burst (100 frames), so that every frame is acted on.
    let count = 90;
    let mut burst = String::new();
    for i in 0..count {
        match i % 3 {
            0 => burst.push_str(&direct(&reader, &format!("{i}"))),
            _ => burst.push_str(&chat(&format!("{i}"))),
        }
        burst.push('\n');
    }
    sender.send_bytes(burst.as_bytes());
    for i in 0..count {
        let frame = next_chat(&mut reader);
        assert_eq!(frame["content"], format!("{i}"), "frame {i}: {frame}");
    }
}
