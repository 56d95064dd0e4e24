//! A minimal uring-chat protocol server for tests: connect/connect_response, broadcast and direct
//! chat, ping/pong, a server ping after each login (so loadgen's pong path runs), presence after
//! each login (to every user), `disconnect` (a close), and SLOW_CONSUMER disconnects when a client's queue passes a bound. Rooms as in
//! protocol v1.1: join/join_response with the room's seq, room messages numbered per room and
//! delivered to every member (the sender included), room presence on each join, NOT_IN_ROOM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub struct Mock {
    pub addr: SocketAddr,
    /// Pongs received from clients.
    pub pongs: Arc<AtomicU64>,
    /// Clients disconnected for SLOW_CONSUMER.
    pub slow_kicked: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Client {
    tx: mpsc::UnboundedSender<Arc<[u8]>>,
    queued: Arc<AtomicUsize>,
    writer: tokio::task::AbortHandle,
}

type Users = Arc<Mutex<HashMap<String, Client>>>;

#[derive(Default)]
struct Room {
    seq: u64,
    members: Vec<String>,
}

/// The rooms, and a fault to inject: every `skip_seq_every`-th room message skips a seq number.
struct Rooms {
    map: Mutex<HashMap<String, Room>>,
    skip_seq_every: u64,
}

/// Starts the mock on 127.0.0.1:0; `max_outbound` bytes queued per client before SLOW_CONSUMER.
pub fn start(max_outbound: usize) -> Mock {
    start_with(max_outbound, 0)
}

/// As `start`, with every `skip_seq_every`-th room message numbered one too high (0: never).
pub fn start_with(max_outbound: usize, skip_seq_every: u64) -> Mock {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let pongs = Arc::new(AtomicU64::new(0));
    let slow_kicked = Arc::new(AtomicU64::new(0));
    let (p, k) = (pongs.clone(), slow_kicked.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            let users: Users = Arc::new(Mutex::new(HashMap::new()));
            let rooms = Arc::new(Rooms {
                map: Mutex::new(HashMap::new()),
                skip_seq_every,
            });
            let next_id = Arc::new(AtomicU64::new(1));
            let accept = async {
                loop {
                    let (sock, _) = listener.accept().await.unwrap();
                    let (users, rooms) = (users.clone(), rooms.clone());
                    let next_id = next_id.clone();
                    let (p, k) = (p.clone(), k.clone());
                    tokio::spawn(conn(sock, users, rooms, next_id, max_outbound, p, k));
                }
            };
            tokio::select! {
                _ = accept => {}
                _ = stop_rx => {}
            }
        });
    });
    Mock {
        addr: addr_rx.recv().unwrap(),
        pongs,
        slow_kicked,
        stop: Some(stop_tx),
        thread: Some(thread),
    }
}

fn push(users: &Users, id: &str, frame: &Arc<[u8]>, max: usize, kicked: &AtomicU64) {
    let mut map = users.lock().unwrap();
    let over = match map.get(id) {
        Some(c) => {
            let q = c.queued.fetch_add(frame.len(), Ordering::Relaxed) + frame.len();
            if q > max {
                true
            } else {
                let _ = c.tx.send(frame.clone());
                false
            }
        }
        None => false,
    };
    if over {
        if let Some(c) = map.remove(id) {
            // Dropping the write half sends FIN (queued behind the unread data).
            c.writer.abort();
            kicked.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn conn(
    sock: tokio::net::TcpStream,
    users: Users,
    rooms: Arc<Rooms>,
    next_id: Arc<AtomicU64>,
    max: usize,
    pongs: Arc<AtomicU64>,
    kicked: Arc<AtomicU64>,
) {
    // A small send buffer makes a never-reading client's queue grow quickly (SLOW_CONSUMER tests).
    let size: libc::c_int = 8192;
    // SAFETY: setsockopt on a socket we own, with a correctly sized int.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&sock),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    let (rd, mut wr) = sock.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Arc<[u8]>>();
    let queued = Arc::new(AtomicUsize::new(0));
    let q2 = queued.clone();
    let writer = tokio::spawn(async move {
        let mut batch = Vec::new();
        while let Some(f) = rx.recv().await {
            batch.clear();
            batch.extend_from_slice(&f);
            while let Ok(more) = rx.try_recv() {
                batch.extend_from_slice(&more);
            }
            if wr.write_all(&batch).await.is_err() {
                break;
            }
            q2.fetch_sub(batch.len(), Ordering::Relaxed);
        }
    });
    let mut me: Option<String> = None;
    let mut lines = BufReader::new(rd).lines();
    let send_self = |f: String| {
        queued.fetch_add(f.len(), Ordering::Relaxed);
        let _ = tx.send(Arc::from(f.into_bytes().into_boxed_slice()));
    };
    while let Ok(Some(line)) = lines.next_line().await {
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let content = v["content"].as_str().unwrap_or("").to_string();
        match v["type"].as_str().unwrap_or("") {
            "connect" => {
                let id = format!(
                    "00000000-0000-4000-8000-{:012x}",
                    next_id.fetch_add(1, Ordering::Relaxed)
                );
                let inner = serde_json::json!({"userID": id, "username": content, "userList": [], "userCount": 1, "core": 0});
                send_self(format!(
                    "{}\n",
                    serde_json::json!({"type":"connect_response","senderID":"server","recipientID":id,"content":inner.to_string()})
                ));
                // Presence of this login to everyone already in (the real server coalesces it).
                let presence: Arc<[u8]> = Arc::from(&b"{\"type\":\"presence\",\"senderID\":\"server\",\"content\":\"{\\\"joinedCount\\\":1,\\\"leftCount\\\":0,\\\"userCount\\\":1}\"}\n"[..]);
                let ids: Vec<String> = users.lock().unwrap().keys().cloned().collect();
                for other in ids {
                    push(&users, &other, &presence, max, &kicked);
                }
                send_self(String::from_utf8(presence.to_vec()).unwrap());
                send_self("{\"type\":\"ping\",\"senderID\":\"server\",\"content\":\"\"}\n".into());
                users.lock().unwrap().insert(
                    id.clone(),
                    Client {
                        tx: tx.clone(),
                        queued: queued.clone(),
                        writer: writer.abort_handle(),
                    },
                );
                me = Some(id);
            }
            // Log out: the connection closes once what is queued was written.
            "disconnect" => break,
            "pong" => {
                pongs.fetch_add(1, Ordering::Relaxed);
            }
            "ping" => send_self(format!(
                "{}\n",
                serde_json::json!({"type":"pong","senderID":"server","content":content})
            )),
            "join" => {
                let Some(me) = me.clone() else { continue };
                let name = v["room"].as_str().unwrap_or("").to_string();
                let mut map = rooms.map.lock().unwrap();
                let room = map.entry(name.clone()).or_default();
                if !room.members.contains(&me) {
                    room.members.push(me.clone());
                }
                let inner = serde_json::json!({"room": name, "epoch": "1", "seq": room.seq, "recovered": false, "memberCount": room.members.len(), "members": []});
                send_self(format!(
                    "{{\"type\":\"join_response\",\"senderID\":\"server\",\"room\":{},\"content\":{}}}\n",
                    serde_json::to_string(&name).unwrap(),
                    serde_json::to_string(&inner.to_string()).unwrap()
                ));
                let presence: Arc<[u8]> = Arc::from(format!("{{\"type\":\"presence\",\"senderID\":\"server\",\"room\":{},\"content\":\"{{}}\"}}\n", serde_json::to_string(&name).unwrap()).into_bytes().into_boxed_slice());
                for m in room.members.clone() {
                    push(&users, &m, &presence, max, &kicked);
                }
            }
            "chat" if v["room"].is_string() => {
                let Some(from) = me.clone() else { continue };
                let name = v["room"].as_str().unwrap().to_string();
                // One lock over numbering and fan-out: one order per room, as the server promises.
                let mut map = rooms.map.lock().unwrap();
                match map.get_mut(&name).filter(|r| r.members.contains(&from)) {
                    None => send_self(
                        "{\"type\":\"error\",\"senderID\":\"server\",\"code\":\"NOT_IN_ROOM\",\"content\":\"\"}\n".into(),
                    ),
                    Some(room) => {
                        room.seq += 1;
                        if rooms.skip_seq_every > 0 && room.seq % rooms.skip_seq_every == 0 {
                            room.seq += 1;
                        }
                        let frame = format!(
                            "{{\"type\":\"chat\",\"senderID\":\"{from}\",\"recipientID\":\"\",\"room\":{},\"content\":{},\"username\":\"x\",\"seq\":{}}}\n",
                            serde_json::to_string(&name).unwrap(),
                            serde_json::to_string(&content).unwrap(),
                            room.seq
                        );
                        let frame: Arc<[u8]> = Arc::from(frame.into_bytes().into_boxed_slice());
                        for m in &room.members {
                            push(&users, m, &frame, max, &kicked);
                        }
                    }
                }
            }
            "chat" => {
                let Some(from) = me.clone() else { continue };
                let to = v["recipientID"].as_str().unwrap_or("").to_string();
                // Field order as the real server writes it: `type` first (serde_json's json! sorts keys).
                let frame = format!(
                    "{{\"type\":\"chat\",\"senderID\":\"{from}\",\"recipientID\":\"{to}\",\"content\":{},\"username\":\"x\"}}\n",
                    serde_json::to_string(&content).unwrap()
                );
                let frame: Arc<[u8]> = Arc::from(frame.into_bytes().into_boxed_slice());
                if to.is_empty() {
                    let ids: Vec<String> = users
                        .lock()
                        .unwrap()
                        .keys()
                        .filter(|k| **k != from)
                        .cloned()
                        .collect();
                    for id in ids {
                        push(&users, &id, &frame, max, &kicked);
                    }
                } else {
                    push(&users, &to, &frame, max, &kicked);
                }
            }
            _ => {}
        }
    }
    if let Some(id) = me {
        users.lock().unwrap().remove(&id);
        for room in rooms.map.lock().unwrap().values_mut() {
            room.members.retain(|m| *m != id);
        }
    }
}
