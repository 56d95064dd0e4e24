//! Signed identity over real sockets (docs/SECURITY.md): a server with a key lets a `connect` in
//! only with a valid token for that name, and the token's claims bound the rooms and raise the rate.
//! Keys for the public-key cases are in tests/fixtures/auth (its README says how they were made).

mod common;

use std::io::{Read, Write};

use common::ws::WsClient;
use common::{content_of, eventually, Client, TestServer};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use uring_chat::config::{AuthKey, Config};

const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/auth/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Claims for `sub`, valid for a minute, with `extra` merged in (a `null` removes a claim).
fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "exp": now() + 60});
    for (key, value) in extra.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(key);
        } else {
            claims[key] = value.clone();
        }
    }
    claims
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET).unwrap(),
        claims,
    )
}

fn server_with(key: AuthKey, adjust: impl FnOnce(&mut Config)) -> TestServer {
    TestServer::start_with(|c| {
        c.auth_key = key;
        adjust(c);
    })
}

fn hs256_server() -> TestServer {
    server_with(AuthKey::Secret(SECRET.to_vec()), |_| {})
}

fn connect_frame(name: &str, token: &str) -> String {
    json!({"type": "connect", "content": name, "token": token}).to_string()
}

/// Logs in with `token`; panics unless the reply is a connect_response.
fn login(server: &TestServer, name: &str, token: &str) -> Client {
    let mut client = server.connect();
    client.send(&connect_frame(name, token));
    let reply = client.next_reply();
    assert_eq!(reply["type"], "connect_response", "{reply}");
    client.user_id = content_of(&reply)["userID"].as_str().unwrap().to_string();
    client
}

/// Sends a login with `token` and expects `code`, then the server's close; the error's reason.
fn refused(server: &TestServer, name: &str, token: &str, code: &str) -> String {
    let mut client = server.connect();
    client.send(&connect_frame(name, token));
    let reason = client.expect_error(code);
    assert!(client.expect_closed().is_empty(), "nothing after {reason}");
    reason["content"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_valid_token_logs_in_and_its_user_chats() {
    let server = hs256_server();
    let token = hs256(&claims("user-1", json!({"name": "alice"})));
    let mut alice = login(&server, "alice", &token);
    let mut bob = login(&server, "bob", &hs256(&claims("user-2", json!({}))));
    alice.send(&common::chat("hello"));
    let frame = bob.next_reply();
    assert_eq!(
        (&frame["content"], &frame["username"]),
        (&json!("hello"), &json!("alice"))
    );
}

#[test]
fn a_login_without_a_token_gets_auth_required_and_a_close() {
    let server = hs256_server();
    let mut client = server.connect();
    client.send(r#"{"type":"connect","content":"alice"}"#);
    client.expect_error("AUTH_REQUIRED");
    client.expect_closed();
    refused(&server, "alice", "", "AUTH_REQUIRED");
    let mut other = server.connect();
    other.send(r#"{"type":"chat","content":"hi"}"#);
    other.expect_error("NOT_CONNECTED");
    other.ping("still open: only a login needs a token");
}

#[test]
fn expired_and_not_yet_valid_tokens_fail_outside_the_leeway() {
    let server = hs256_server();
    let expired = claims("u", json!({"exp": now() - 120}));
    let reason = refused(&server, "alice", &hs256(&expired), "AUTH_FAILED");
    assert_eq!(reason, "the token has expired");
    let early = claims("u", json!({"nbf": now() + 120}));
    let reason = refused(&server, "alice", &hs256(&early), "AUTH_FAILED");
    assert_eq!(reason, "the token is not valid yet (nbf)");
    let no_exp = claims("u", json!({"exp": null}));
    let reason = refused(&server, "alice", &hs256(&no_exp), "AUTH_FAILED");
    assert_eq!(reason, "the token has no `exp` claim");
    let no_sub = claims("u", json!({"sub": null}));
    refused(&server, "alice", &hs256(&no_sub), "AUTH_FAILED");
    // Within the 30 s leeway both pass: clocks a few seconds apart still agree.
    let skewed = claims("u", json!({"exp": now() - 5, "nbf": now() + 5}));
    login(&server, "alice", &hs256(&skewed));
}

#[test]
fn forged_tokens_fail_a_wrong_secret_alg_none_and_rs256_against_the_secret() {
    let server = hs256_server();
    let claims = claims("u", json!({}));
    let other = EncodingKey::from_secret(b"another secret, equally long and wrong").unwrap();
    let reason = refused(
        &server,
        "alice",
        &sign(Algorithm::HS256, &other, &claims),
        "AUTH_FAILED",
    );
    assert_eq!(
        reason,
        "the token's signature does not match the server's key"
    );

    // `{"alg":"none","typ":"JWT"}` in base64url, over a valid token's claims, with no signature.
    let valid = hs256(&claims);
    let payload = valid.split('.').nth(1).unwrap();
    let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    refused(&server, "alice", &none, "AUTH_FAILED");

    let rsa = EncodingKey::from_rsa_pem(&fixture("rsa-private.pem")).unwrap();
    refused(
        &server,
        "alice",
        &sign(Algorithm::RS256, &rsa, &claims),
        "AUTH_FAILED",
    );
}

#[test]
fn a_token_for_another_name_fails() {
    let server = hs256_server();
    let token = hs256(&claims("user-1", json!({"name": "alice"})));
    refused(&server, "mallory", &token, "AUTH_FAILED");
}

#[test]
fn the_rooms_claim_allows_names_and_prefixes_and_forbids_the_rest() {
    let server = hs256_server();
    let token = hs256(&claims("u", json!({"rooms": ["rust", "ops-*"]})));
    let mut client = login(&server, "alice", &token);
    client.join("rust", None);
    client.join("ops-east", None);
    for room in ["go", "ops", "rust2"] {
        client.send(&json!({"type": "join", "room": room}).to_string());
        client.expect_error("FORBIDDEN");
    }
    client.ping("the connection stays open");
    client.post("ops-east", "allowed");
    assert_eq!(client.next_room_chat()["content"], "allowed");
}

#[test]
fn a_rate_claim_raises_that_users_flood_limit_only() {
    let server = server_with(AuthKey::Secret(SECRET.to_vec()), |c| {
        c.rate_limit = 5;
        c.rate_limit_burst = 5;
    });
    // 100 frames at once: the raised burst (5 x 100/5), twenty times the server's.
    let pings: String = (0..100)
        .map(|i| format!("{{\"type\":\"ping\",\"content\":\"{i}\"}}\n"))
        .collect();
    let mut bot = login(&server, "bot", &hs256(&claims("bot", json!({"rate": 100}))));
    bot.send_bytes(pings.as_bytes());
    for i in 0..100 {
        let reply = bot.next_reply();
        assert_eq!(
            (&reply["type"], &reply["content"]),
            (&json!("pong"), &json!(i.to_string()))
        );
    }
    let mut person = login(
        &server,
        "person",
        &hs256(&claims("person", json!({"rate": 1}))),
    );
    person.send_bytes(pings.as_bytes());
    let limited = (0..10)
        .map(|_| person.next_reply())
        .filter(|reply| reply["code"] == "RATE_LIMITED")
        .count();
    assert!(
        limited > 0,
        "a rate below the server's does not lower its limit"
    );
}

#[test]
fn public_keys_es256_es384_eddsa_and_rs256_verify_their_own_algorithm_only() {
    let cases = [
        ("es256", Algorithm::ES256),
        ("es384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
        ("rsa", Algorithm::RS256),
    ];
    for (name, algorithm) in cases {
        let public = fixture(&format!("{name}-public.pem"));
        let server = server_with(AuthKey::PublicKeyPem(public.clone()), |_| {});
        let private = fixture(&format!("{name}-private.pem"));
        let key = match algorithm {
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&private),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&private),
            _ => EncodingKey::from_rsa_pem(&private),
        };
        let claims = claims(name, json!({}));
        login(&server, "alice", &sign(algorithm, &key.unwrap(), &claims));
        // Algorithm confusion: an HS256 token keyed with the public key's own bytes.
        let confused = EncodingKey::from_secret(&public).unwrap();
        refused(
            &server,
            "bob",
            &sign(Algorithm::HS256, &confused, &claims),
            "AUTH_FAILED",
        );
        refused(&server, "bob", &hs256(&claims), "AUTH_FAILED");
    }
}

#[test]
fn without_a_key_the_token_field_is_ignored() {
    let server = TestServer::start();
    let mut client = server.connect();
    client.send(r#"{"type":"connect","content":"alice","token":5}"#);
    assert_eq!(client.next_reply()["type"], "connect_response");
    let mut other = server.connect();
    other.send(&connect_frame("bob", "not even a JWT"));
    assert_eq!(other.next_reply()["type"], "connect_response");
}

#[test]
fn over_websocket_a_bad_token_gets_auth_failed_then_close_code_1008() {
    let server = hs256_server();
    let mut client = WsClient::connect(server.http.unwrap());
    let expired = hs256(&claims("u", json!({"exp": now() - 3600})));
    client.send(&connect_frame("alice", &expired));
    let closed = client.expect_closed();
    assert_eq!(closed.code, Some(1008));
    assert_eq!(closed.frames.len(), 1, "{:?}", closed.frames);
    assert_eq!(closed.frames[0]["code"], "AUTH_FAILED");
}

#[test]
fn auth_errors_and_closes_are_counted_in_the_metrics() {
    let server = hs256_server();
    refused(&server, "alice", "", "AUTH_REQUIRED");
    refused(&server, "alice", "not.a.jwt", "AUTH_FAILED");
    let token = hs256(&claims("u", json!({"rooms": ["rust"]})));
    let mut client = login(&server, "alice", &token);
    client.send(r#"{"type":"join","room":"go"}"#);
    client.expect_error("FORBIDDEN");
    let expected = [
        "uring_chat_protocol_errors_total{code=\"AUTH_REQUIRED\"} 1",
        "uring_chat_protocol_errors_total{code=\"AUTH_FAILED\"} 1",
        "uring_chat_protocol_errors_total{code=\"FORBIDDEN\"} 1",
        "uring_chat_connections_closed_total{reason=\"auth_required\"} 1",
        "uring_chat_connections_closed_total{reason=\"auth_failed\"} 1",
    ];
    eventually("the auth counts in /metrics", || {
        let mut stream = std::net::TcpStream::connect(server.http.unwrap()).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut body = String::new();
        stream.read_to_string(&mut body).unwrap();
        expected.iter().all(|line| body.lines().any(|l| l == *line))
    });
}
