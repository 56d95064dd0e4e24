//! The HTTP port over real sockets: health checks, readiness through a drain, and bad requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{chat, eventually, TestServer, READ_TIMEOUT};

/// Sends `request` as is and returns everything the server wrote before it closed.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    try_exchange(addr, request).expect("the server answers and closes")
}

fn try_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.write_all(request)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    Ok(String::from_utf8(answer).unwrap())
}

fn get(addr: SocketAddr, path: &str) -> String {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
    )
}

fn expected(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[test]
fn health_readiness_and_unknown_paths_get_exact_answers() {
    let server = TestServer::start();
    let http = server.http.expect("the HTTP port is on");
    assert_eq!(get(http, "/healthz"), expected("200 OK", "", "ok\n"));
    assert_eq!(
        get(http, "/readyz?full=1"),
        expected("200 OK", "", "ready\n")
    );
    assert_eq!(
        exchange(http, b"HEAD /healthz HTTP/1.1\r\n\r\n"),
        expected("200 OK", "", "ok\n").trim_end_matches("ok\n"),
        "HEAD: the headers GET would send, no body"
    );
    assert_eq!(
        get(http, "/nope"),
        expected("404 Not Found", "", "not found\n")
    );
    assert_eq!(
        exchange(http, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        expected(
            "405 Method Not Allowed",
            "Allow: GET, HEAD\r\n",
            "use GET\n"
        )
    );
    // Every core answers (SO_REUSEPORT spreads the connections); the chat port is untouched.
    for _ in 0..20 {
        assert!(get(http, "/healthz").starts_with("HTTP/1.1 200 OK\r\n"));
    }
    let mut alice = server.login("alice");
    alice.ping("the chat port works beside the HTTP port");
}

#[test]
fn oversized_and_garbage_requests_are_refused() {
    let server = TestServer::start();
    let http = server.http.unwrap();
    let mut huge = b"GET /healthz HTTP/1.1\r\nX-Filler: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 9 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    assert_eq!(
        exchange(http, &huge),
        expected(
            "431 Request Header Fields Too Large",
            "",
            "request head too large\n"
        )
    );
    assert_eq!(
        exchange(http, chat("hello").as_bytes()),
        expected("400 Bad Request", "", "not an HTTP/1.1 request\n")
    );
}

#[test]
fn a_request_that_never_ends_is_closed_at_the_login_timeout() {
    let server = TestServer::start_with(|c| c.login_timeout = Duration::from_millis(300));
    let http = server.http.unwrap();
    let mut slow = TcpStream::connect(http).unwrap();
    slow.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
        .unwrap();
    let mut rest = Vec::new();
    let closed = slow.read_to_end(&mut rest);
    assert!(
        matches!(closed, Ok(0)) || closed.is_err(),
        "closed without an answer, got {rest:?}"
    );
    assert!(rest.is_empty(), "no answer to half a request");
    assert_eq!(get(http, "/healthz"), expected("200 OK", "", "ok\n"));
}

/// While the server drains (a client that does not read holds it up), /readyz says 503 and
/// /healthz still 200; then the server stops.
#[test]
fn readiness_turns_off_while_the_server_drains() {
    let server = TestServer::start_with(|c| {
        c.rate_limit = 0;
        c.max_outbound_bytes = 64 << 20;
        c.drain_timeout = Duration::from_secs(2);
    });
    let http = server.http.unwrap();
    // More than the kernel buffers for a socket nobody reads (its receive buffer pinned small, so
    // loopback autotuning cannot grow it to tens of MB): the flush cannot finish.
    let _stuck = server.login_with_small_receive_buffer("stuck");
    let mut sender = server.login("sender");
    let payload = "x".repeat(60_000);
    for _ in 0..150 {
        sender.send(&chat(&payload));
    }
    sender.ping("every broadcast is queued");
    assert_eq!(get(http, "/readyz"), expected("200 OK", "", "ready\n"));
    server.begin_shutdown();
    // A core whose own connections are gone stops listening: a connection caught in its queue at
    // that moment is reset, and a load balancer (like this loop) tries again.
    eventually("/readyz turns 503", || {
        try_exchange(http, b"GET /readyz HTTP/1.1\r\n\r\n").ok()
            == Some(expected("503 Service Unavailable", "", "draining\n"))
    });
    eventually("/healthz still 200 while draining", || {
        try_exchange(http, b"GET /healthz HTTP/1.1\r\n\r\n").ok()
            == Some(expected("200 OK", "", "ok\n"))
    });
}
