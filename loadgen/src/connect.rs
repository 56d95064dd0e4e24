//! Phase 1: one client's TCP connect, TLS handshake with `--tls`, WebSocket upgrade with
//! `--transport ws`, and login (uring-chat `connect`, then `join` with `--rooms`; or Redis
//! `SUBSCRIBE`).
//!
//! Login replies are parsed with serde_json: it happens once per client, unlike deliveries.

use crate::framing::{next_frame, Framer};
use crate::limits::limit_error;
use crate::options::Transport;
use crate::redis;
use crate::room_wire::{join_line, push_join, JoinLine};
use crate::stamp::{LineBuffer, MAX_FRAME};
use crate::stream::{Stream, WriteHalf};
use crate::tls::TlsClient;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpSocket;

/// A connection's write half, shared by its receive task (pongs) and the sender thread.
pub type Writer = Arc<tokio::sync::Mutex<WriteHalf>>;

/// How a connection logs in.
#[derive(Clone, Debug)]
pub enum Login {
    /// uring-chat `{"type":"connect","content":NAME}`, with `"token":TOKEN` for a server that
    /// requires signed identity.
    Chat { name: String, token: Option<String> },
    /// Redis `SUBSCRIBE channel...` (one channel, or the client's rooms).
    Subscribe { channels: Vec<String> },
    /// Nothing (a Redis publishing connection).
    None,
}

/// A logged-in connection.
pub struct Established {
    pub stream: Stream,
    /// Bytes read after the login reply (e.g. a first presence frame; with WebSocket, raw frame
    /// bytes), to be processed as deliveries.
    pub leftover: Vec<u8>,
    /// The userID (uring-chat) or the (first) subscribed channel (Redis).
    pub id: String,
    /// uring-chat rooms joined, each with its seq at join time (empty without `--rooms`).
    pub rooms: Vec<(u32, u64)>,
}

/// Why a client did not get in.
#[derive(Debug)]
pub enum ConnectError {
    /// A machine limit (EMFILE, EADDRNOTAVAIL, ...): the whole run must stop.
    Limit(String),
    /// This client failed (refused, rejected, timed out): counted as failed.
    Failed(String),
}

impl From<io::Error> for ConnectError {
    fn from(e: io::Error) -> Self {
        match limit_error(&e) {
            Some(l) => ConnectError::Limit(l),
            None => ConnectError::Failed(e.to_string()),
        }
    }
}

/// Where and how a client connects.
#[derive(Clone, Debug)]
pub struct Dial {
    pub target: SocketAddr,
    /// Bind to this loopback address first (`--source-ips`).
    pub source: Option<Ipv4Addr>,
    pub transport: Transport,
    /// `--tls`: the handshake follows the TCP connect.
    pub tls: Option<Arc<TlsClient>>,
}

/// Connects, upgrades to WebSocket if `dial` says so, and logs in, then (uring-chat) joins the
/// rooms `join`, all within `timeout`. Redis subscribes to its rooms through its `Login` instead.
pub async fn connect(
    dial: Dial,
    login: &Login,
    join: &[u32],
    timeout: Duration,
) -> Result<Established, ConnectError> {
    match tokio::time::timeout(timeout, connect_inner(dial, login, join)).await {
        Ok(r) => r,
        Err(_) => Err(ConnectError::Failed(format!(
            "connect + login took longer than {timeout:?}"
        ))),
    }
}

async fn connect_inner(
    dial: Dial,
    login: &Login,
    join: &[u32],
) -> Result<Established, ConnectError> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = dial.source {
        // Let connect() pick the port for the full 4-tuple, so each source address has its own
        // ~28,000 ephemeral ports towards one destination.
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a correctly sized int.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        socket.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
    }
    let tcp = socket.connect(dial.target).await?;
    tcp.set_nodelay(true)?;
    let mut stream = match &dial.tls {
        None => Stream::Plain(tcp),
        Some(tls) => Stream::Tls(tls.handshake(tcp, dial.target.ip()).await?),
    };
    let leftover = match dial.transport {
        Transport::Tcp => Vec::new(),
        Transport::Ws => crate::ws_upgrade::upgrade(&mut stream, dial.target).await?,
    };
    match login {
        Login::None => Ok(Established {
            stream,
            leftover,
            id: String::new(),
            rooms: Vec::new(),
        }),
        Login::Chat { name, token } => {
            let token = match token {
                Some(token) => format!(",\"token\":{}", json_str(token)),
                None => String::new(),
            };
            let frame = format!(
                "{{\"type\":\"connect\",\"content\":{}{token}}}\n",
                json_str(name)
            );
            let frame = Framer::new(dial.transport).frame(frame.as_bytes());
            stream.write_all(&frame).await?;
            let mut est = chat_login_reply(stream, dial.transport, leftover).await?;
            if !join.is_empty() {
                join_rooms(&mut est, dial.transport, join).await?;
            }
            Ok(est)
        }
        Login::Subscribe { channels } => {
            stream.write_all(&redis::subscribe_all(channels)).await?;
            redis_login_reply(stream, channels).await
        }
    }
}

/// With `--rooms`, uring-chat: after the login, join every room of the client and wait for each
/// `join_response`. A room counts as joined only then (the server delivers nothing at or below the
/// response's seq), and that seq is where the member's order check starts.
///
/// Sends one write with every join, then reads until each room has answered. What follows the last
/// `join_response` stays in `est.leftover` for the receive loop.
async fn join_rooms(
    est: &mut Established,
    transport: Transport,
    rooms: &[u32],
) -> Result<(), ConnectError> {
    let mut framer = Framer::new(transport);
    let mut frames = Vec::with_capacity(rooms.len() * 32);
    for &r in rooms {
        framer.push(&mut frames, |b| push_join(b, r));
    }
    est.stream.write_all(&frames).await?;
    // A join_response lists the room's members, so it may be large.
    let mut buf = LineBuffer::new(4096, MAX_FRAME);
    buf.extend(&std::mem::take(&mut est.leftover));
    let mut joined: Vec<(u32, u64)> = Vec::with_capacity(rooms.len());
    read_until(
        &mut est.stream,
        &mut buf,
        transport,
        "join reply",
        |line| match join_line(line) {
            JoinLine::Joined { room, seq } => {
                if rooms.contains(&room) && !joined.iter().any(|j| j.0 == room) {
                    joined.push((room, seq));
                }
                (joined.len() == rooms.len()).then_some(Ok(()))
            }
            JoinLine::Refused(why) => {
                Some(Err(ConnectError::Failed(format!("join refused: {why}"))))
            }
            JoinLine::Other => None,
        },
    )
    .await?;
    est.leftover = buf.data().to_vec();
    est.rooms = joined;
    Ok(())
}

/// Reads protocol frames (lines, or WebSocket text messages) into `buf` until `f` decides on one;
/// the bytes after that frame stay in `buf`. `what` names the reply in errors.
async fn read_until<T>(
    stream: &mut Stream,
    buf: &mut LineBuffer,
    transport: Transport,
    what: &str,
    mut f: impl FnMut(&[u8]) -> Option<Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    loop {
        let mut used = 0;
        let mut outcome = None;
        while outcome.is_none() {
            match next_frame(transport, &buf.data()[used..]) {
                Ok(None) => break,
                Ok(Some((n, frame))) => {
                    used += n;
                    outcome = frame.and_then(&mut f);
                }
                Err(e) => return Err(ConnectError::Failed(format!("{what}: {e}"))),
            }
        }
        buf.consume(used);
        if let Some(r) = outcome {
            return r;
        }
        let spare = buf
            .spare()
            .ok_or_else(|| ConnectError::Failed(format!("{what} too large")))?;
        let n = stream.read(spare).await?;
        if n == 0 {
            return Err(ConnectError::Failed(format!(
                "server closed before the {what}"
            )));
        }
        buf.advance(n);
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("string serializes")
}

/// Reads until the login's answer; bytes after it become `leftover` (a first presence frame...).
async fn chat_login_reply(
    mut stream: Stream,
    transport: Transport,
    leftover: Vec<u8>,
) -> Result<Established, ConnectError> {
    let mut buf = LineBuffer::new(4096, 1 << 20);
    buf.extend(&leftover);
    let id = read_until(&mut stream, &mut buf, transport, "login reply", login_line).await?;
    Ok(Established {
        stream,
        leftover: buf.data().to_vec(),
        id,
        rooms: Vec::new(),
    })
}

/// Looks at one line during login: `Some` once the outcome is known.
fn login_line(line: &[u8]) -> Option<Result<String, ConnectError>> {
    if line.starts_with(br#"{"type":"ping""#) {
        // Answered by the receive loop if it ever matters; the server pings only silent clients.
        return None;
    }
    let v: serde_json::Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(_) => return None,
    };
    match v.get("type").and_then(|t| t.as_str()) {
        Some("connect_response") => {
            let content = v.get("content").and_then(|c| c.as_str()).unwrap_or("");
            let inner: serde_json::Value = serde_json::from_str(content).ok()?;
            match inner.get("userID").and_then(|u| u.as_str()) {
                Some(id) if !id.is_empty() => Some(Ok(id.to_string())),
                _ => Some(Err(ConnectError::Failed(
                    "connect_response without userID".into(),
                ))),
            }
        }
        Some("error") => {
            let code = v.get("code").and_then(|c| c.as_str()).unwrap_or("error");
            let why = v.get("content").and_then(|c| c.as_str()).unwrap_or("");
            Some(Err(ConnectError::Failed(format!(
                "login refused: {code} {why}"
            ))))
        }
        _ => None,
    }
}

/// Waits for one `subscribe` confirmation per channel.
async fn redis_login_reply(
    mut stream: Stream,
    channels: &[String],
) -> Result<Established, ConnectError> {
    let mut buf = LineBuffer::new(1024, 1 << 20);
    let mut pending = channels.len();
    loop {
        let spare = buf
            .spare()
            .ok_or_else(|| ConnectError::Failed("SUBSCRIBE reply too large".into()))?;
        let n = stream.read(spare).await?;
        if n == 0 {
            return Err(ConnectError::Failed("redis closed during SUBSCRIBE".into()));
        }
        buf.advance(n);
        loop {
            match redis::parse(buf.data()) {
                Err(e) => return Err(ConnectError::Failed(e)),
                Ok(None) => break,
                Ok(Some((used, reply))) => {
                    let done = match reply {
                        redis::Reply::Subscribed => {
                            pending = pending.saturating_sub(1);
                            pending == 0
                        }
                        redis::Reply::Error(e) => {
                            return Err(ConnectError::Failed(format!(
                                "SUBSCRIBE refused: {}",
                                String::from_utf8_lossy(e)
                            )))
                        }
                        _ => false,
                    };
                    buf.consume(used);
                    if done {
                        return Ok(Established {
                            stream,
                            leftover: buf.data().to_vec(),
                            id: channels.first().cloned().unwrap_or_default(),
                            rooms: Vec::new(),
                        });
                    }
                }
            }
        }
    }
}
