//! The `uring-chat` binary as an operator meets it: signals, a busy port, help, exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use common::Client;

const BINARY: &str = env!("CARGO_BIN_EXE_uring-chat");

/// The binary on loopback with two cores and JSON logs, and no port chosen yet.
fn server_command() -> Command {
    let mut command = Command::new(BINARY);
    command
        .args([
            "--host",
            "127.0.0.1",
            "--http-port",
            "0",
            "--cores",
            "2",
            "--log-format",
            "json",
        ])
        .env_remove("RUST_LOG")
        .env_remove("URING_CHAT_PORT")
        .env_remove("SERVER_PORT")
        .env_remove("URING_CHAT_HTTP_PORT")
        .stderr(Stdio::piped());
    command
}

/// Starts the binary on a free port and returns it with the address from its start-up log line.
fn spawn_server() -> (Child, SocketAddr) {
    let mut command = server_command();
    command.args(["--port", "0"]);
    spawn(command)
}

fn spawn(mut command: Command) -> (Child, SocketAddr) {
    let mut child = command.spawn().expect("the binary starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while stderr.read_line(&mut line).unwrap() > 0 {
        let log: serde_json::Value = serde_json::from_str(&line).expect("JSON log lines");
        if let Some(addr) = log["fields"]["local_addr"].as_str() {
            // Keep draining stderr so the server never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return (child, addr.parse().unwrap());
        }
        line.clear();
    }
    panic!("the server exited before listening: {:?}", child.wait());
}

/// SIGTERM: every client gets SERVER_SHUTDOWN, the connections close, and the process exits 0.
#[test]
fn sigterm_drains_clients_and_exits_zero() {
    let (mut child, addr) = spawn_server();
    let mut clients: Vec<Client> = (0..6)
        .map(|i| Client::login(addr, &format!("user{i}")))
        .collect();
    clients[0].send(r#"{"type":"chat","content":"before the signal"}"#);
    for client in &mut clients[1..] {
        assert_eq!(client.next_reply()["content"], "before the signal");
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for client in &mut clients {
        client.expect_error("SERVER_SHUTDOWN");
        client.expect_closed();
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
}

/// A second server on a port that a live one holds exits 1 with a clear message, despite SO_REUSEPORT.
#[test]
fn a_busy_port_is_refused() {
    let (mut first, addr) = spawn_server();
    let output = Command::new(BINARY)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &addr.port().to_string(),
            "--cores",
            "1",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("already in use"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let mut client = Client::login(addr, "still-served");
    client.ping("the first server keeps its clients");
    first.kill().unwrap();
    first.wait().unwrap();
}

/// `--help` documents every flag with its default and environment variable.
#[test]
fn help_lists_flags_defaults_and_environment() {
    let output = Command::new(BINARY).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for expected in [
        "--port",
        "[env: URING_CHAT_PORT=]",
        "[default: 8080]",
        "--max-frame-bytes",
        "[default: 65536]",
        "--drain-timeout",
        "--config",
    ] {
        assert!(help.contains(expected), "help lacks {expected}:\n{help}");
    }
}

/// The old server's SERVER_PORT is honoured; URING_CHAT_PORT beats it; a flag beats both.
#[test]
fn legacy_environment_and_precedence() {
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (p1, p2, p3) = (free_port(), free_port(), free_port());
    type Case<'a> = (&'a [(&'a str, u16)], Option<u16>, u16);
    let cases: [Case; 3] = [
        (&[("SERVER_PORT", p1)], None, p1),
        (&[("SERVER_PORT", p1), ("URING_CHAT_PORT", p2)], None, p2),
        (
            &[("SERVER_PORT", p1), ("URING_CHAT_PORT", p2)],
            Some(p3),
            p3,
        ),
    ];
    for (env, flag, expected) in cases {
        let mut command = server_command();
        for (name, port) in env {
            command.env(name, port.to_string());
        }
        if let Some(port) = flag {
            command.args(["--port", &port.to_string()]);
        }
        let (mut child, addr) = spawn(command);
        assert_eq!(addr.port(), expected, "env {env:?}, flag {flag:?}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
