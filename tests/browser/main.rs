//! The web chat page in a real browser: two headless Chromium users (over WebDriver, through
//! Debian's chromium-driver) and one TCP client chat in the lobby and in a room and send each
//! other direct messages; the test reads what each page shows. Without chromium and chromedriver
//! it prints one `SKIPPED:` line. `URING_CHAT_SCREENSHOT=path.png` saves the first user's window.

#[path = "../common/mod.rs"]
mod common;
mod https;
mod token;
mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::{json, Value};

use common::{content_of, Client, TestServer};
use webdriver::{find_program, Browser, Driver, ENTER};

/// What a page shows, in one round trip: the conversation in view, its messages as
/// `[text, own, author]`, the member list, the unread marks by conversation, the connection.
const SNAPSHOT: &str = r#"
const all = (css) => [...document.querySelectorAll(css)];
const active = document.querySelector('[data-test=conv].active');
return {
  conv: active ? active.dataset.conv : null,
  title: document.querySelector('[data-test=conv-title]').textContent,
  messages: all('#messages [data-test=message]').map((m) => [
    m.querySelector('[data-test=message-text]').textContent,
    m.dataset.own === 'true',
    m.dataset.author,
  ]),
  times: all('#messages [data-test=message-time]').map((t) => t.textContent),
  members: all('[data-test=member]').map((m) => m.dataset.name),
  unread: Object.fromEntries(all('[data-test=conv]').map((c) => [
    c.dataset.conv,
    Number(c.querySelector('[data-test=unread]')?.textContent ?? 0),
  ])),
  notices: all('#messages [data-test=notice]').map((n) => n.textContent),
  status: document.querySelector('[data-test=status]').dataset.state,
  loginError: document.querySelector('[data-test=login-error]').textContent,
};
"#;

/// `--max-frame-bytes` of the browser test's server.
const FRAME_LIMIT: usize = 1024;

/// A chat user in a browser window.
struct Page<'a> {
    browser: Browser<'a>,
    name: &'static str,
}

impl<'a> Page<'a> {
    /// A laptop-sized window on the page, not logged in yet.
    fn visit(driver: &'a Driver, http: SocketAddr, name: &'static str) -> Page<'a> {
        let page = Page {
            browser: driver.session(1280, 800),
            name,
        };
        page.browser.navigate(&format!("http://{http}/"));
        page
    }

    fn log_in(&self) {
        self.submit_name(self.name);
        self.until("logged in", |s| {
            s["status"] == "online" && s["conv"] == "lobby"
        });
    }

    fn submit_name(&self, name: &str) {
        self.browser
            .type_into("[data-test=login-name]", &format!("{name}{ENTER}"));
    }

    /// Waits until the snapshot passes `check`, and returns it.
    fn until(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let what = format!("{what} (for {})", self.name);
        self.browser.wait_for(&what, SNAPSHOT, check)
    }

    fn say(&self, text: &str) {
        self.browser
            .type_into("[data-test=composer-input]", &format!("{text}{ENTER}"));
    }

    fn open(&self, conv: &str) {
        self.browser
            .click(&format!("[data-test=conv][data-conv=\"{conv}\"]"));
        self.until(&format!("{conv} in view"), |s| s["conv"] == conv);
    }

    fn join(&self, room: &str) {
        self.browser
            .type_into("[data-test=room-input]", &format!("{room}{ENTER}"));
        let conv = format!("room:{room}");
        let title = format!("# {room}");
        self.until(&format!("{conv} joined"), |s| {
            s["conv"] == conv.as_str()
                && s["title"] == title.as_str()
                && s["members"].as_array().is_some_and(|m| !m.is_empty())
        });
    }

    /// Opens the direct conversation with a member by clicking the name in the member list.
    fn message_member(&self, name: &str) {
        self.browser
            .click(&format!("[data-test=member][data-name=\"{name}\"]"));
        let conv = format!("dm:{name}");
        self.until(&format!("{conv} in view"), |s| s["conv"] == conv.as_str());
    }

    /// Waits until the conversation in view is `conv` and shows exactly `expected`, in order.
    fn shows(&self, conv: &str, expected: &[(&str, bool, &str)]) -> Value {
        let expected: Vec<Value> = (expected.iter())
            .map(|(text, own, author)| json!([text, own, author]))
            .collect();
        self.until(&format!("{conv} with {expected:?}"), |s| {
            s["conv"] == conv && s["messages"].as_array() == Some(&expected)
        })
    }
}

fn members(names: &[&str]) -> Value {
    json!(names)
}

/// The next frame the TCP client gets but presence, which must be a chat message.
fn next_chat(client: &mut Client) -> Value {
    let frame = client.next_reply();
    assert_eq!(frame["type"], "chat", "{frame}");
    frame
}

/// Panics unless the next chat frame is the room message `text` with `seq`.
fn expect_room_message(client: &mut Client, text: &str, seq: u64) {
    let frame = next_chat(client);
    let got = (
        frame["room"].as_str(),
        frame["content"].as_str(),
        frame["seq"].as_u64(),
    );
    assert_eq!(got, (Some("rust"), Some(text), Some(seq)), "{frame}");
}

#[test]
fn two_browsers_and_a_tcp_client_chat_in_the_lobby_a_room_and_directly() {
    let (Some(chromedriver), Some(chromium)) = (
        find_program(&["chromedriver"]),
        find_program(&["chromium", "chromium-browser", "google-chrome"]),
    ) else {
        println!("SKIPPED: the browser test needs chromium and chromedriver in PATH (Debian: apt-get install chromium chromium-driver)");
        return;
    };
    // A small frame limit, so that the page can be made to lose its connection.
    let server = TestServer::start_with(|config| config.max_frame_bytes = FRAME_LIMIT);
    let http = server.http.expect("the HTTP port is on");
    let driver = Driver::start(&chromedriver, chromium);

    let mut carol = server.login("carol");
    let alice = Page::visit(&driver, http, "alice");
    alice.log_in();
    let bob = Page::visit(&driver, http, "bob");
    bob.submit_name("alice");
    bob.until("NAME_TAKEN explained", |s| {
        s["loginError"] == "Someone is already using the name alice. Try another one."
    });
    bob.browser
        .run("document.querySelector('[data-test=login-name]').value = ''");
    bob.log_in();
    for page in [&alice, &bob] {
        page.until("everyone in the lobby's member list", |s| {
            s["members"] == members(&["alice", "bob", "carol"])
        });
    }

    // The lobby: browser to everyone, TCP to the browsers.
    let hello = "Morning all! Did anyone try the new build?";
    alice.say(hello);
    let frame = next_chat(&mut carol);
    assert_eq!(
        (frame["username"].as_str(), frame["content"].as_str()),
        (Some("alice"), Some(hello))
    );
    assert_eq!(frame["recipientID"], "");
    // Markup in a message is text: were it parsed, the page would show "running " and no tag.
    let bench = "Morning! Benchmarks are <b>running</b> <img src=x onerror=alert(1)> now.";
    carol.send(&common::chat(bench));
    bob.shows("lobby", &[(hello, false, "alice"), (bench, false, "carol")]);
    let joining = "Looks good here. Let's move to #rust";
    bob.say(joining);
    let lobby = [
        (hello, true, "alice"),
        (bench, false, "carol"),
        (joining, false, "bob"),
    ];
    let seen = alice.shows("lobby", &lobby);
    assert!(
        seen["times"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.contains(':'))),
        "every message has a time: {seen}"
    );
    bob.shows(
        "lobby",
        &[
            (hello, false, "alice"),
            (bench, false, "carol"),
            (joining, true, "bob"),
        ],
    );
    assert_eq!(next_chat(&mut carol)["content"], joining);

    // A room: both browsers join through the form, carol over TCP.
    alice.join("rust");
    bob.join("rust");
    carol.join("rust", None);
    for page in [&alice, &bob] {
        page.until("the room's members", |s| {
            s["members"] == members(&["alice", "bob", "carol"])
        });
    }
    let flame = "Flamegraph from last night: the writer is down to 40% of a core";
    alice.say(flame);
    expect_room_message(&mut carol, flame, 1);
    let sendmsg = "That's the sendmsg path. Expected at 10k clients";
    carol.post("rust", sendmsg);
    bob.shows(
        "room:rust",
        &[(flame, false, "alice"), (sendmsg, false, "carol")],
    );
    let p99 = "And p99 went down too, nice";
    bob.say(p99);
    let room = [
        (flame, true, "alice"),
        (sendmsg, false, "carol"),
        (p99, false, "bob"),
    ];
    alice.shows("room:rust", &room);
    bob.shows(
        "room:rust",
        &[
            (flame, false, "alice"),
            (sendmsg, false, "carol"),
            (p99, true, "bob"),
        ],
    );
    expect_room_message(&mut carol, sendmsg, 2);
    expect_room_message(&mut carol, p99, 3);

    // An unread mark on the room bob is not looking at.
    bob.open("lobby");
    let review = "Bob, could you review the writer PR after lunch?";
    alice.say(review);
    bob.until("one unread message in #rust", |s| {
        s["unread"]["room:rust"] == 1 && s["unread"]["lobby"] == 0
    });
    bob.open("room:rust");
    let with_review = [
        (flame, false, "alice"),
        (sendmsg, false, "carol"),
        (p99, true, "bob"),
        (review, false, "alice"),
    ];
    let seen = bob.shows("room:rust", &with_review);
    assert_eq!(
        seen["unread"]["room:rust"], 0,
        "opening the room clears its mark"
    );
    expect_room_message(&mut carol, review, 4);

    // Direct messages: browser to browser, browser to TCP, TCP to browser.
    alice.message_member("bob");
    let meetup = "Are you coming to the meetup tonight?";
    alice.say(meetup);
    alice.shows("dm:bob", &[(meetup, true, "alice")]);
    bob.until("an unread direct message from alice", |s| {
        s["unread"]["dm:alice"] == 1
    });
    bob.open("dm:alice");
    bob.shows("dm:alice", &[(meetup, false, "alice")]);
    let reply = "Yes! See you there";
    bob.say(reply);
    alice.shows("dm:bob", &[(meetup, true, "alice"), (reply, false, "bob")]);

    bob.open("room:rust");
    bob.message_member("carol");
    let numbers = "carol, can you send me the numbers when they're in?";
    bob.say(numbers);
    let frame = next_chat(&mut carol);
    assert_eq!(
        frame["recipientID"].as_str(),
        Some(carol.user_id.as_str()),
        "{frame}"
    );
    assert_eq!(
        (frame["username"].as_str(), frame["content"].as_str()),
        (Some("bob"), Some(numbers))
    );
    bob.shows("dm:carol", &[(numbers, true, "bob")]);

    // More of the room, with alice looking at it.
    alice.open("room:rust");
    bob.open("room:rust");
    let lunch = "Sure. Is that the one that parks the writer every 200 µs?";
    bob.say(lunch);
    expect_room_message(&mut carol, lunch, 5);
    let pr = "That's it. Numbers are in the description";
    carol.post("rust", pr);
    expect_room_message(&mut carol, pr, 6);
    let mut so_far = room.to_vec();
    so_far.extend([
        (review, true, "alice"),
        (lunch, false, "bob"),
        (pr, false, "carol"),
    ]);
    alice.shows("room:rust", &so_far);

    let alice_id = user_id(&mut carol, "alice");
    let svg = "Sending you the flamegraph SVG, it's too big for the room";
    carol.send(&json!({"type": "chat", "recipientID": alice_id, "content": svg}).to_string());
    alice.until("an unread direct message from carol", |s| {
        s["unread"]["dm:carol"] == 1
    });
    if let Some(path) = std::env::var_os("URING_CHAT_SCREENSHOT") {
        std::fs::write(&path, alice.browser.screenshot()).expect("the screenshot is written");
    }
    alice.open("dm:carol");
    alice.shows("dm:carol", &[(svg, false, "carol")]);

    // A dropped connection: bob sends a frame over the server's limit and is cut off; the page
    // logs in again and rejoins #rust with `since`, and what carol posted once bob was gone shows
    // exactly once, in order, with no gap notice.
    bob.say(&"x".repeat(FRAME_LIMIT + 100));
    wait_until_left(&mut carol, "rust", "bob");
    let away = "Posted while bob's page was reconnecting";
    carol.post("rust", away);
    expect_room_message(&mut carol, away, 7);
    let mut caught_up = with_review.to_vec();
    caught_up.extend([
        (lunch, true, "bob"),
        (pr, false, "carol"),
        (away, false, "carol"),
    ]);
    let seen = bob.shows("room:rust", &caught_up);
    assert_eq!(
        seen["notices"],
        json!([]),
        "everything was recovered: {seen}"
    );
    bob.until("online again", |s| s["status"] == "online");
    bob.open("lobby");
    bob.until("the reconnect noted in the lobby", |s| {
        s["notices"]
            .as_array()
            .is_some_and(|n| n.len() == 1 && n[0].as_str().unwrap().starts_with("Reconnected"))
    });

    // A phone-sized screen: one column; the conversations are a drawer behind a button.
    alice.browser.viewport(390, 844);
    let sidebar = "const r = document.getElementById('sidebar').getBoundingClientRect(); return [r.left, r.right];";
    alice
        .browser
        .wait_for("the sidebar tucked away", sidebar, |r| {
            r[1].as_f64() <= Some(0.0)
        });
    alice.browser.click("#toggle-sidebar");
    alice
        .browser
        .wait_for("the sidebar drawn out", sidebar, |r| {
            r[0].as_f64() == Some(0.0)
        });
    alice.open("room:rust");
    alice
        .browser
        .wait_for("the drawer closed on a pick", sidebar, |r| {
            r[1].as_f64() <= Some(0.0)
        });
    so_far.push((away, false, "carol"));
    alice.shows("room:rust", &so_far);
}

/// Reads `client`'s frames until a presence frame of `room` says `name` left.
fn wait_until_left(client: &mut Client, room: &str, name: &str) {
    loop {
        let frame = client.next_frame();
        if frame["type"] == "presence" && frame["room"] == room {
            let left = content_of(&frame)["left"].clone();
            if (left.as_array().unwrap().iter()).any(|user| user["username"] == name) {
                return;
            }
        }
        assert_eq!(frame["type"], "presence", "{frame}");
    }
}

/// The userID of the user called `name`, from a `users` page.
fn user_id(client: &mut Client, name: &str) -> String {
    client.send(r#"{"type":"users","content":"0"}"#);
    let reply = loop {
        let frame = client.next_reply();
        if frame["type"] == "user_list_update" {
            break frame;
        }
    };
    let users = content_of(&reply)["userList"].as_array().unwrap().clone();
    let user = users
        .iter()
        .find(|u| u["username"] == name)
        .expect("the user is listed");
    user["userID"].as_str().unwrap().to_string()
}

/// The page and its files: `/` is the page, each file with its type, `no-cache`, and 405 for
/// other methods. Runs without a browser.
#[test]
fn the_page_is_served_from_the_http_port() {
    let server = TestServer::start();
    let http = server.http.expect("the HTTP port is on");
    let get = |request: &str| {
        let mut stream = TcpStream::connect(http).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let page = get("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        page.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"),
        "{page}"
    );
    assert!(
        page.contains("\r\nCache-Control: no-cache\r\n")
            && page.contains("<script type=\"module\" src=\"/app.js\">")
    );
    for (path, content_type) in [("/app.js", "text/javascript"), ("/style.css", "text/css")] {
        let answer = get(&format!("GET {path} HTTP/1.1\r\n\r\n"));
        assert!(
            answer.contains(&format!("Content-Type: {content_type}; charset=utf-8\r\n")),
            "{answer}"
        );
        let head = get(&format!("HEAD {path} HTTP/1.1\r\n\r\n"));
        let (head_only, body) = answer.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            format!("{head_only}\r\n\r\n"),
            "HEAD: GET's headers, no body"
        );
        assert!(!body.is_empty());
    }
    let post = get("POST /app.js HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(get("GET /missing.js HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 Not Found\r\n"));
}
