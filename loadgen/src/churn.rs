//! `--churn R`: R clients a second leave and log back in, beside the measured traffic.
//!
//! The churning clients are extra connections (`ceil(R)` of them, so each churns about once a
//! second), owned by one thread of their own. They are never senders or expected recipients:
//! whether a message sent while a client is leaving should reach it is a race the server cannot
//! promise either way, and counting those deliveries would make "zero loss" meaningless. What
//! they bring is the server-side work of churn (logouts, logins, presence to everyone, Redis
//! subscription changes) while the measured streams run.
//!
//! uring-chat: a cycle is `{"type":"disconnect"}`, waiting for the server to close, and a new
//! connection logging in under a new name (`lg<run>-ch<i>.<n>`, since the old name is freed
//! asynchronously). Redis: `UNSUBSCRIBE` and `SUBSCRIBE` again on the same connection. A cycle
//! counts once the login answer (the `subscribe` confirmation) is back. With `--transport ws` the
//! churning clients are WebSocket clients too, each login a new upgrade.

use crate::connect::{self, Dial, Login};
use crate::framing::Framer;
use crate::options::{Protocol, Transport};
use crate::redis;
use crate::report::ChurnReport;
use crate::stamp::{LineBuffer, MAX_FRAME};
use crate::stream::Stream;
use crate::tls::TlsClient;
use crate::token;
use crate::ws;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// What the churn thread needs.
pub struct ChurnConfig {
    /// The target, or with `--hosts` every node: churning client `i` uses `targets[i % n]`.
    pub targets: Vec<SocketAddr>,
    /// `--tls`: every login is a new connection with a full handshake.
    pub tls: Option<Arc<TlsClient>>,
    pub protocol: Protocol,
    pub transport: Transport,
    /// Cycles per second over all churning clients.
    pub rate: f64,
    pub clients: usize,
    pub run_id: String,
    /// Redis: the channel churning clients subscribe to (the broadcast stream's).
    pub channel: String,
    /// uring-chat, `--big-room`: the rooms a churning client joins after each login.
    pub join: Vec<u32>,
    pub timeout: Duration,
    /// `--auth-jwt-secret`: each login carries a token minted for its name.
    pub auth_jwt_secret: Option<String>,
}

/// Counters shared with the main thread.
#[derive(Default)]
pub struct ChurnCounts {
    /// Clients logged in (at start, and again after each cycle).
    pub logged_in: AtomicU64,
    /// Completed cycles: left and back in.
    pub cycles: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

/// The running churn thread.
pub struct Churn {
    pub clients: usize,
    pub rate: f64,
    pub counts: Arc<ChurnCounts>,
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Churn {
    /// Starts cycling (the clients are logged in from `spawn` on).
    pub fn start(&self) {
        self.go.store(true, Ordering::Relaxed);
    }

    /// Completed and failed cycles so far.
    pub fn totals(&self) -> (u64, u64) {
        let c = &self.counts;
        (
            c.cycles.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        )
    }

    /// The report of the cycles since `totals()` returned `(cycles, failed)`.
    pub fn report(&self, (cycles, failed): (u64, u64)) -> ChurnReport {
        let (c, f) = self.totals();
        ChurnReport {
            rate: self.rate,
            clients: self.clients as u64,
            cycles: c - cycles,
            failed: f - failed,
            first_error: self.counts.first_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts the churn thread; its clients log in at once, cycling waits for `Churn::start`.
pub fn spawn(cfg: ChurnConfig) -> std::io::Result<Churn> {
    let counts = Arc::new(ChurnCounts::default());
    let go = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (clients, rate) = (cfg.clients, cfg.rate);
    let (c, g, s) = (counts.clone(), go.clone(), stop.clone());
    let handle = std::thread::Builder::new()
        .name("loadgen-churn".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, drive(Rc::new(cfg), c, g, s));
        })?;
    Ok(Churn {
        clients,
        rate,
        counts,
        go,
        stop,
        handle: Some(handle),
    })
}

async fn drive(
    cfg: Rc<ChurnConfig>,
    counts: Arc<ChurnCounts>,
    go: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) {
    let slots: Vec<Rc<Notify>> = (0..cfg.clients).map(|_| Rc::new(Notify::new())).collect();
    for (i, n) in slots.iter().enumerate() {
        tokio::task::spawn_local(client(cfg.clone(), i, n.clone(), counts.clone()));
    }
    let step = Duration::from_secs_f64(1.0 / cfg.rate);
    let mut k = 0usize;
    let mut next: Option<tokio::time::Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = tokio::time::Instant::now();
        match next {
            None if go.load(Ordering::Relaxed) => next = Some(now + step),
            Some(due) if due <= now => {
                // Open loop: a client still reconnecting churns again as soon as it is back.
                slots[k % slots.len()].notify_one();
                k += 1;
                next = Some(due + step);
                continue;
            }
            _ => {}
        }
        let wait = next.map_or(Duration::from_millis(20), |d| d - now);
        tokio::time::sleep(wait.min(Duration::from_millis(20))).await;
    }
}

fn fail(counts: &ChurnCounts, e: String) {
    counts.failed.fetch_add(1, Ordering::Relaxed);
    if let Ok(mut f) = counts.first_error.lock() {
        f.get_or_insert(e);
    }
}

/// One churning client, for the life of the run.
async fn client(cfg: Rc<ChurnConfig>, i: usize, churn: Rc<Notify>, counts: Arc<ChurnCounts>) {
    let mut n = 0u64;
    loop {
        let login = match cfg.protocol {
            Protocol::UringChat => {
                let name = format!("lg{}-ch{i}.{n}", cfg.run_id);
                let token = (cfg.auth_jwt_secret.as_deref()).map(|s| token::mint(s, &name));
                Login::Chat { name, token }
            }
            Protocol::Redis => Login::Subscribe {
                channels: vec![cfg.channel.clone()],
            },
        };
        let dial = Dial {
            target: cfg.targets[i % cfg.targets.len()],
            source: None,
            transport: cfg.transport,
            tls: cfg.tls.clone(),
        };
        let est = match connect::connect(dial, &login, &cfg.join, cfg.timeout).await {
            Ok(e) => e,
            Err(connect::ConnectError::Limit(e) | connect::ConnectError::Failed(e)) => {
                fail(&counts, e);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        counts.logged_in.fetch_add(1, Ordering::Relaxed);
        if n > 0 {
            counts.cycles.fetch_add(1, Ordering::Relaxed);
        }
        n += 1;
        match cfg.protocol {
            Protocol::UringChat => {
                let (stream, left) = (est.stream, est.leftover);
                chat_session(stream, left, cfg.transport, &churn, &counts, cfg.timeout).await
            }
            Protocol::Redis => redis_session(est.stream, &cfg.channel, &churn, &counts).await,
        }
    }
}

/// Reads (and drops) what a logged-in uring-chat client is sent until it is told to churn, then
/// logs out and waits for the server to close. `leftover` is what came with the login reply.
async fn chat_session(
    mut s: Stream,
    leftover: Vec<u8>,
    transport: Transport,
    churn: &Notify,
    counts: &ChurnCounts,
    timeout: Duration,
) {
    let mut buf = LineBuffer::new(16 * 1024, MAX_FRAME);
    buf.extend(&leftover);
    loop {
        let Some(spare) = buf.spare() else {
            return fail(counts, "frame too large for a churning client".into());
        };
        let read = tokio::select! {
            r = s.read(spare) => r,
            _ = churn.notified() => break,
        };
        if !swallow(&mut s, &mut buf, transport, read).await {
            return fail(counts, "server closed a churning client".into());
        }
    }
    let logout = Framer::new(transport).frame(b"{\"type\":\"disconnect\"}\n");
    if s.write_all(&logout).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(timeout, async {
        while let Some(spare) = buf.spare() {
            let read = s.read(spare).await;
            if !swallow(&mut s, &mut buf, transport, read).await {
                break;
            }
        }
    })
    .await;
}

/// Drops what one read of a churning client brought; `false` once the connection is over. Over
/// WebSocket the frames are parsed: pings get their pong, the server's close gets a close back.
async fn swallow(
    s: &mut Stream,
    buf: &mut LineBuffer,
    transport: Transport,
    read: std::io::Result<usize>,
) -> bool {
    match read {
        Ok(0) | Err(_) => return false,
        Ok(n) => buf.advance(n),
    }
    if transport == Transport::Tcp {
        buf.consume(buf.data().len());
        return true;
    }
    let c = ws::drain(buf, |_| {});
    let mut reply = Vec::new();
    if let Some(p) = &c.ping {
        ws::push_pong(&mut reply, p.as_slice());
    }
    if let Some(p) = &c.close {
        ws::push_close(&mut reply, p.as_slice());
    }
    if !reply.is_empty() && s.write_all(&reply).await.is_err() {
        return false;
    }
    c.close.is_none() && c.error.is_none()
}

/// A Redis churning client never reconnects: each cycle is UNSUBSCRIBE + SUBSCRIBE on this
/// connection, complete when the `subscribe` confirmation arrives.
async fn redis_session(mut s: Stream, channel: &str, churn: &Notify, counts: &ChurnCounts) {
    let mut cycle = redis::unsubscribe(channel);
    cycle.extend_from_slice(&redis::subscribe(channel));
    let mut buf = LineBuffer::new(16 * 1024, 4 << 20);
    let mut tmp = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = s.read(&mut tmp) => match r {
                Ok(0) | Err(_) => return fail(counts, "redis closed a churning client".into()),
                Ok(n) => buf.extend(&tmp[..n]),
            },
            _ = churn.notified() => {
                if s.write_all(&cycle).await.is_err() {
                    return fail(counts, "redis write failed".into());
                }
                continue;
            }
        }
        let mut off = 0;
        while let Ok(Some((used, reply))) = redis::parse(&buf.data()[off..]) {
            off += used;
            if reply == redis::Reply::Subscribed {
                counts.cycles.fetch_add(1, Ordering::Relaxed);
            }
        }
        buf.consume(off);
    }
}

/// With `--churn`, logs the churning clients in (cycling starts with `Churn::start`).
pub(crate) fn start_for(
    o: &crate::Options,
    targets: &[SocketAddr],
    tls: Option<Arc<TlsClient>>,
    run_id: &str,
    progress: &mut crate::progress::Progress,
) -> Result<Option<Churn>, crate::Error> {
    let clients = crate::mixed::churn_clients(o);
    if clients == 0 {
        return Ok(None);
    }
    // With --big-room they are in the room, so the room's presence churns too.
    let big = crate::mixed::big_room(o) > 0;
    progress.phase(&format!(
        "churn: {clients} extra clients, {} leave and log back in per second",
        o.churn
    ));
    let churn = spawn(ChurnConfig {
        targets: targets.to_vec(),
        tls,
        protocol: o.protocol,
        transport: o.transport,
        auth_jwt_secret: o.auth_jwt_secret.clone(),
        rate: o.churn,
        clients,
        run_id: run_id.to_string(),
        channel: match big {
            true => crate::rooms::name(0),
            false => redis::broadcast_channel(run_id),
        },
        join: match (big, o.protocol) {
            (true, Protocol::UringChat) => vec![0],
            _ => Vec::new(),
        },
        timeout: o.connect_timeout,
    })?;
    // Wait for their first logins, so the settle phase covers their presence.
    let t0 = std::time::Instant::now();
    while churn.counts.logged_in.load(Ordering::Relaxed) < clients as u64
        && t0.elapsed() < o.connect_timeout
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Some(churn))
}
