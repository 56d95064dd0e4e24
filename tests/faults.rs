//! Faults and operator events against the real binary: running out of file descriptors, peers
//! that fail mid-frame, and SIGTERM in the middle of a burst.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{chat, eventually, shared, user_count, Client, TestServer};
use serde_json::{json, Value};
use uring_chat::chat::rooms::owner_core;

const BINARY: &str = env!("CARGO_BIN_EXE_uring-chat");

/// The binary on loopback with two cores and JSON logs, on a free port.
fn server_command(extra: &[&str]) -> Command {
    let mut command = Command::new(BINARY);
    command
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--http-port",
            "0",
            "--cores",
            "2",
            "--log-format",
            "json",
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .env_remove("URING_CHAT_PORT")
        .env_remove("SERVER_PORT")
        .env_remove("URING_CHAT_HTTP_PORT")
        .stderr(Stdio::piped());
    command
}

/// A child server, killed on drop if a test fails before it stops it.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
    /// Every log line so far.
    log: Arc<Mutex<Vec<String>>>,
}

impl ChildServer {
    fn spawn(mut command: Command) -> ChildServer {
        let mut child = command.spawn().expect("the binary starts");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut line = String::new();
        while stderr.read_line(&mut line).unwrap() > 0 {
            let entry: Value = serde_json::from_str(&line).expect("JSON log lines");
            log.lock().unwrap().push(line.clone());
            if let Some(addr) = entry["fields"]["local_addr"].as_str() {
                let addr = addr.parse().unwrap();
                let sink = log.clone();
                thread::spawn(move || {
                    for line in stderr.lines() {
                        let Ok(line) = line else { return };
                        sink.lock().unwrap().push(line);
                    }
                });
                return ChildServer { child, addr, log };
            }
            line.clear();
        }
        panic!("the server exited before listening: {:?}", child.wait());
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit code (bounded wait).
    fn terminate(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.pid(), libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            thread::sleep(Duration::from_millis(20));
        }
        panic!("the server did not exit within 30 s of SIGTERM");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The open-file limit that leaves a process exactly `room` free descriptors: the kernel hands out
/// the lowest free number and refuses numbers at or above the limit, and inherited descriptors may
/// sit anywhere.
fn limit_leaving_room(pid: i32, room: usize) -> u64 {
    let open: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut free = 0;
    let mut fd = 0;
    while free < room {
        if !open.contains(&fd) {
            free += 1;
        }
        fd += 1;
    }
    fd
}

/// Sets a process's open-file limit, soft and hard.
fn set_fd_limit(pid: i32, limit: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: limit,
        rlim_max: limit,
    };
    // SAFETY: prlimit(2) on our own child; the struct lives across the call.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &rlimit, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// Whether a socket has a connect_response waiting (peeked, not consumed).
fn has_connect_response(stream: &TcpStream) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    stream.set_nonblocking(true).unwrap();
    let peeked = stream.peek(&mut buf);
    stream.set_nonblocking(false).unwrap();
    match peeked {
        Ok(n) => {
            let needle = b"{\"type\":\"connect_response\"";
            buf[..n].windows(needle.len()).any(|w| w == needle)
        }
        Err(_) => false,
    }
}

/// Out of file descriptors (EMFILE): the server keeps serving its logged-in clients, leaves the
/// extra connections unserved in the backlog without crashing, and accepts again once fds free up.
///
/// The limit is lowered on the running server (prlimit) rather than before exec: at start-up the
/// server sizes --max-connections to the limit minus 64 reserved fds, so a limit set before exec
/// gives SERVER_FULL (see the next test) and never reaches EMFILE.
#[test]
fn out_of_fds_the_server_keeps_serving_and_recovers() {
    let _shared = shared();
    let mut server = ChildServer::spawn(server_command(&["--rate-limit", "0"]));
    const ROOM: usize = 80;
    set_fd_limit(server.pid(), limit_leaving_room(server.pid(), ROOM));
    let sockets: Vec<TcpStream> = (0..100)
        .map(|i| {
            let mut stream = TcpStream::connect(server.addr).expect("connect into the backlog");
            let login = json!({"type": "connect", "content": format!("fd{i}")}).to_string();
            stream.write_all(format!("{login}\n").as_bytes()).unwrap();
            stream
        })
        .collect();
    // Wait until the served set stops growing for longer than the longest accept backoff (1 s).
    let mut served = vec![false; sockets.len()];
    let (mut count, mut stable_since) = (0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(20);
    while stable_since.elapsed() < Duration::from_millis(2500) && Instant::now() < deadline {
        for (i, socket) in sockets.iter().enumerate() {
            served[i] = served[i] || has_connect_response(socket);
        }
        let now = served.iter().filter(|&&s| s).count();
        if now != count {
            (count, stable_since) = (now, Instant::now());
        }
        thread::sleep(Duration::from_millis(50));
    }
    eprintln!("EMFILE: {count} of 100 connections served with room for {ROOM} fds");
    assert!(count > 40, "the server served what it had fds for");
    assert!(
        count <= ROOM,
        "no more connections than fds: {count} served"
    );
    assert!(server.is_running(), "the server survives EMFILE");
    let log = server.log.lock().unwrap().join("\n");
    assert!(
        log.contains("accept failed") && log.contains("os error 24"),
        "EMFILE is logged:\n{log}"
    );
    let (served_sockets, unserved): (Vec<_>, Vec<_>) = sockets
        .into_iter()
        .zip(&served)
        .partition(|(_, &served)| served);
    let mut served: Vec<Client> = served_sockets
        .into_iter()
        .map(|(s, _)| Client::from_stream(s))
        .collect();
    for client in &mut served {
        assert_eq!(client.next_reply()["type"], "connect_response");
        client.ping("served despite EMFILE");
    }
    // The unserved clients give up, and 40 served ones leave.
    drop(unserved);
    let mut staying = served.split_off(40);
    drop(served);
    let late: Vec<Client> = (0..20)
        .map(|i| Client::login(server.addr, &format!("late{i}")))
        .collect();
    assert_eq!(late.len(), 20);
    for client in &mut staying {
        client.ping("still served after the recovery");
    }
    drop((staying, late));
    assert_eq!(server.terminate(), Some(0), "a clean stop after EMFILE");
}

/// With the open-file limit lowered before exec (hard limit 128), the server sizes its connection
/// cap below the limit (it reserves fds for itself): of 100 clients the excess gets SERVER_FULL and
/// a close, never EMFILE, and those admitted are served.
#[test]
fn a_low_fd_limit_at_start_caps_connections_instead_of_hitting_emfile() {
    let _shared = shared();
    let mut command = server_command(&["--rate-limit", "0"]);
    // SAFETY: setrlimit is async-signal-safe and touches only this (child) process.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = ChildServer::spawn(command);
    let started: Value = server
        .log
        .lock()
        .unwrap()
        .iter()
        .find_map(|line| {
            let entry: Value = serde_json::from_str(line).ok()?;
            entry["fields"]["local_addr"].is_string().then_some(entry)
        })
        .expect("the start-up log line");
    assert_eq!(started["fields"]["open_file_limit"], 128);
    let cap = started["fields"]["max_connections"].as_u64().unwrap() as usize;
    assert!(
        (1..128).contains(&cap),
        "the cap leaves room for the server's own fds: {cap}"
    );
    let mut clients: Vec<Client> = (0..cap)
        .map(|i| Client::login(server.addr, &format!("cap{i}")))
        .collect();
    for _ in 0..100 - cap {
        let mut extra = Client::connect(server.addr);
        extra.expect_error("SERVER_FULL");
        extra.expect_closed();
    }
    for client in &mut clients {
        client.ping("served under the cap");
    }
    assert!(server.is_running());
    drop(clients);
    assert_eq!(server.terminate(), Some(0));
}

/// Peers that reset mid-frame, half-close mid-frame, or vanish while the server writes them a large
/// backlog are cleaned up: each name becomes free again and the user count drops back.
#[test]
fn faults_mid_frame_free_the_connection_state() {
    let _shared = shared();
    let server = TestServer::start_with(|c| {
        c.rate_limit = 0;
        c.max_outbound_bytes = 16 << 20;
    });
    let mut watcher = server.login("watcher");
    let half_frame = br#"{"type":"chat","content":"half a fr"#;
    let reclaim = |name: &str| {
        let mut rival = server.connect();
        eventually(&format!("{name}'s name is released"), || {
            rival.try_login(name)
        });
        rival
    };

    // A reset (SO_LINGER 0, then close) after half a frame.
    let mut reset = server.login("reset");
    reset.send_bytes(half_frame);
    let socket = reset.writer_clone();
    socket2::SockRef::from(socket.socket())
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop((reset, socket));
    let reset_again = reclaim("reset");

    // A half-close after half a frame: the server ends the session and closes its side too.
    let mut half = server.login("half");
    half.send_bytes(half_frame);
    half.shutdown_write();
    let half_again = reclaim("half");
    half.expect_closed();

    // A close while the server is writing a backlog far larger than the kernel's buffers.
    let victim = server.login("victim");
    let mut sender = server.login("sender");
    let mut writer = sender.writer_clone();
    let payload = "y".repeat(4000);
    let publish = thread::spawn(move || {
        for seq in 0..2000 {
            let line = chat(&format!("{seq}:{payload}")) + "\n";
            writer.write_all(line.as_bytes()).unwrap();
        }
    });
    // The watcher reads the whole flood, so the backlog is the victim's alone.
    let mut seen = 0;
    while seen < 2000 {
        if watcher.next_reply()["type"] == "chat" {
            seen += 1;
        }
    }
    publish.join().unwrap();
    sender.ping("the flood has been processed");
    drop(victim);
    let victim_again = reclaim("victim");

    assert_eq!(
        user_count(&mut watcher),
        5,
        "watcher, sender and the three reclaimed names"
    );
    drop((reset_again, half_again, victim_again));
}

/// SIGTERM right after a burst of 2,000 broadcasts: every reader gets the same gap-free prefix of
/// the burst (everything the server accepted before the signal), then SERVER_SHUTDOWN and EOF, and
/// the process exits 0.
#[test]
fn sigterm_mid_burst_delivers_every_accepted_message_then_exits_zero() {
    sigterm_mid_burst(Burst::Lobby);
}

/// The same for a room whose owner core is not the sender's, with readers on both cores: a room
/// message takes two hops between cores (to the owner, then to the members' cores), and the drain
/// must carry both.
#[test]
fn sigterm_mid_room_burst_delivers_every_accepted_message_on_every_core() {
    sigterm_mid_burst(Burst::Room);
}

#[derive(Clone, Copy, PartialEq)]
enum Burst {
    Lobby,
    Room,
}

fn sigterm_mid_burst(burst: Burst) {
    let _shared = shared();
    let mut server = ChildServer::spawn(server_command(&["--rate-limit", "0"]));
    const MESSAGES: usize = 2000;
    let mut sender = Client::login(server.addr, "sender");
    let mut receivers: Vec<Client> = Vec::new();
    for i in 0..200 {
        let cores: Vec<usize> = receivers.iter().map(|c| c.core).collect();
        if (0..2).all(|core| cores.iter().filter(|&&c| c == core).count() >= 2) {
            break;
        }
        receivers.push(Client::login(server.addr, &format!("reader{i}")));
    }
    let room = (0..)
        .map(|i| format!("drain-{i}"))
        .find(|name| owner_core(name, 2) != sender.core)
        .unwrap();
    if burst == Burst::Room {
        for client in receivers.iter_mut().chain([&mut sender]) {
            client.join(&room, None);
        }
    }
    let sender_id = sender.user_id.clone();
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|mut client| {
            let sender_id = sender_id.clone();
            thread::spawn(move || {
                let mut next = 0;
                loop {
                    let frame = client.next_reply();
                    if frame["type"] == "error" {
                        assert_eq!(frame["code"], "SERVER_SHUTDOWN", "{frame}");
                        break;
                    }
                    assert_eq!(frame["type"], "chat", "{frame}");
                    assert_eq!(frame["senderID"], sender_id.as_str());
                    if burst == Burst::Room {
                        assert_eq!(frame["seq"], next as u64 + 1, "{frame}");
                    }
                    let content = frame["content"].as_str().unwrap();
                    assert!(
                        content.starts_with(&format!("{next}:")),
                        "{}: message {next} next, no gap",
                        client.username
                    );
                    next += 1;
                }
                assert!(
                    client.try_next_frame().is_none(),
                    "EOF after SERVER_SHUTDOWN"
                );
                next
            })
        })
        .collect();
    // Small enough that the sender's own copies of a room burst stay within its outbound bound.
    let payload = "z".repeat(if burst == Burst::Room { 100 } else { 500 });
    for seq in 0..MESSAGES {
        let text = format!("{seq}:{payload}");
        match burst {
            Burst::Lobby => sender.send(&chat(&text)),
            Burst::Room => sender.post(&room, &text),
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.pid(), libc::SIGTERM) };
    let received: Vec<usize> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    eprintln!("drain: readers got {received:?} of {MESSAGES} messages sent before SIGTERM");
    assert!(
        received.iter().all(|&k| k == received[0]),
        "every reader got every accepted message: {received:?}"
    );
    let frames = sender.expect_closed();
    assert_eq!(frames.last().unwrap()["code"], "SERVER_SHUTDOWN");
    if burst == Burst::Room {
        let own = frames.iter().filter(|f| f["type"] == "chat").count();
        assert_eq!(
            own, received[0],
            "the sender got its own accepted messages too"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server exits after draining");
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "graceful stop exits 0");
}
