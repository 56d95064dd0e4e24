//! Protocol v1 over real sockets: replies byte for byte, framing, and errors that keep the connection.
//! Every test runs twice: over plain TCP (`tcp::`) and through TLS clients (`tls::`).

mod common;

use common::{content_of, Client, Over};
use serde_json::json;

over_tcp_and_tls!(
    login_reply_lists_users_and_names_the_core,
    users_pages_in_login_order,
    login_errors_and_pong_are_exact,
    bad_input_gets_errors_and_the_connection_survives,
    back_to_back_objects_crlf_and_split_writes,
    sender_id_is_set_by_the_server,
    disconnect_replies_then_closes,
);

/// connect_response carries the userID, the capped user list, the count and the core.
fn login_reply_lists_users_and_names_the_core(over: Over) {
    let server = over.start_with(|c| c.user_list_limit = 3);
    let first = server.login("ann");
    let _others: Vec<Client> = ["ben", "cat", "dan"]
        .iter()
        .map(|n| server.login(n))
        .collect();
    let mut client = server.connect();
    client.send(r#"{"type":"connect","content":"eve"}"#);
    let reply = client.next_reply();
    assert_eq!(reply["senderID"], "server");
    let content = content_of(&reply);
    assert_eq!(reply["recipientID"], content["userID"]);
    assert_eq!(content["username"], "eve");
    assert_eq!(content["userCount"], 5);
    let list = content["userList"].as_array().unwrap();
    assert_eq!(list.len(), 3, "capped at --user-list-limit");
    assert_eq!(list[0], json!({"userID": first.user_id, "username": "ann"}));
    assert!(content["core"].as_u64().unwrap() < 2);
}

/// `users` pages through the list in login order; a bad offset is INVALID_MESSAGE.
fn users_pages_in_login_order(over: Over) {
    let server = over.start_with(|c| c.user_list_limit = 2);
    let mut clients: Vec<Client> = ["u0", "u1", "u2"].iter().map(|n| server.login(n)).collect();
    let me = &mut clients[0];
    me.send(r#"{"type":"users","content":"2"}"#);
    let page = me.next_reply();
    assert_eq!(page["type"], "user_list_update");
    let content = content_of(&page);
    assert_eq!(content["offset"], 2);
    assert_eq!(content["userCount"], 3);
    assert_eq!(content["userList"][0]["username"], "u2");
    me.send(r#"{"type":"users","content":"-1"}"#);
    me.expect_error("INVALID_MESSAGE");
}

/// Usernames: rules, uniqueness, a second connect, and the exact bytes of a pong.
fn login_errors_and_pong_are_exact(over: Over) {
    let server = over.start();
    let mut alice = server.login("alice");
    let mut other = server.connect();
    for bad in [
        "",
        " alice",
        "x\u{1}y",
        "0123456789012345678901234567890123",
    ] {
        other.send(&json!({"type": "connect", "content": bad}).to_string());
        other.expect_error("INVALID_USERNAME");
    }
    other.send(r#"{"type":"connect","content":"alice"}"#);
    assert_eq!(
        other.next_reply_line(),
        b"{\"type\":\"error\",\"senderID\":\"server\",\"code\":\"NAME_TAKEN\",\"content\":\"the name `alice` is taken\"}\n"
    );
    alice.send(r#"{"type":"connect","content":"alice2"}"#);
    alice.expect_error("ALREADY_CONNECTED");
    other.send(r#"{"type":"ping","content":"p\"1"}"#);
    assert_eq!(
        other.next_reply_line(),
        b"{\"type\":\"pong\",\"senderID\":\"server\",\"content\":\"p\\\"1\"}\n"
    );
}

/// Bad JSON, wrong types, invalid UTF-8 and unknown types get an error; the connection keeps working.
fn bad_input_gets_errors_and_the_connection_survives(over: Over) {
    let server = over.start();
    let mut client = server.connect();
    let cases: [(&[u8], &str); 9] = [
        (b"not json\n", "INVALID_MESSAGE"),
        (b"{\"type\":\"chat\",\n", "INVALID_MESSAGE"),
        (b"[1,2]\n", "INVALID_MESSAGE"),
        (b"{\"type\":5}\n", "INVALID_MESSAGE"),
        (b"{\"content\":\"no type\"}\n", "INVALID_MESSAGE"),
        (b"{\"type\":\"chat\",\"content\":5}\n", "INVALID_MESSAGE"),
        (
            b"{\"type\":\"chat\",\"content\":\"\xff\xfe\"}\n",
            "INVALID_MESSAGE",
        ),
        (b"{\"type\":\"dance\"}\n", "UNKNOWN_TYPE"),
        (b"{\"type\":\"chat\",\"content\":\"hi\"}\n", "NOT_CONNECTED"),
    ];
    for (input, code) in cases {
        client.send_bytes(input);
        client.expect_error(code);
    }
    client.send(r#"{"type":"users"}"#);
    client.expect_error("NOT_CONNECTED");
    client.send(r#"{"type":"connect","content":"survivor","extra":{"ignored":[1]}}"#);
    assert_eq!(client.next_reply()["type"], "connect_response");
    client.ping("still here");
}

/// Objects back to back with no separator, CRLF endings, and frames split at awkward points.
fn back_to_back_objects_crlf_and_split_writes(over: Over) {
    let server = over.start();
    let mut client = server.connect();
    let stream = b"{\"type\":\"connect\",\"content\":\"old-go-client\"}{\"type\":\"ping\",\"content\":\"a\"}\r\n  {\"type\":\"ping\",\"content\":\"b}{\"}{\"type\":\"ping\",\"content\":\"c\"}";
    for piece in stream.chunks(7) {
        client.send_bytes(piece);
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert_eq!(client.next_reply()["type"], "connect_response");
    for token in ["a", "b}{", "c"] {
        let pong = client.next_reply();
        assert_eq!(
            (pong["type"].as_str(), pong["content"].as_str()),
            (Some("pong"), Some(token))
        );
    }
}

/// A client cannot spoof senderID: the server writes the real one, with the username.
fn sender_id_is_set_by_the_server(over: Over) {
    let server = over.start();
    let mut alice = server.login("alice");
    let mut bob = server.login("bob");
    alice.send(r#"{"type":"chat","senderID":"someone-else","content":"it's me"}"#);
    let frame = bob.next_reply_line();
    let expected = format!(
        "{{\"type\":\"chat\",\"senderID\":\"{}\",\"recipientID\":\"\",\"content\":\"it's me\",\"username\":\"alice\"}}\n",
        alice.user_id
    );
    assert_eq!(String::from_utf8(frame).unwrap(), expected);
}

/// `disconnect` gets disconnect_response, then the server closes; before login too.
fn disconnect_replies_then_closes(over: Over) {
    let server = over.start();
    let mut alice = server.login("alice");
    alice.send(r#"{"type":"disconnect"}"#);
    let reply = alice.next_reply();
    assert_eq!(reply["type"], "disconnect_response");
    assert_eq!(
        content_of(&reply),
        json!({"userID": alice.user_id, "username": "alice"})
    );
    alice.expect_closed();
    let mut anonymous = server.connect();
    anonymous.send(r#"{"type":"disconnect"}"#);
    assert_eq!(
        anonymous.next_reply_line(),
        b"{\"type\":\"disconnect_response\",\"senderID\":\"server\",\"recipientID\":\"\",\"content\":\"{}\"}\n"
    );
    anonymous.expect_closed();
}
