//! A worker thread: one current-thread tokio runtime (epoll) owning a shard of the clients.
//!
//! Thread-per-core with no work stealing: a client task never migrates, its histogram is the
//! thread's, and nothing is locked on the delivery path. The main thread drives the phases through
//! a command channel and reads progress from a few atomics.

use crate::clock::Clock;
use crate::connect::{self, ConnectError, Dial, Login, Writer};
use crate::limits::current_thread_clock;
use crate::mixed::Mix;
use crate::options::{Protocol, Transport};
use crate::receive::{self, Ctx};
use crate::room_order::RoomSeqs;
use crate::rooms::Rooms;
use crate::stats::{new_histogram, Shared, ThreadStats, Window};
use crate::stream::Stream;
use crate::tls::TlsClient;
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Duration;
use tokio::sync::{mpsc as tmpsc, Semaphore};

/// What a client does once logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads and measures every delivery (and, for uring-chat, may also be a sender).
    Receiver,
    /// Logs in, then never reads.
    Slow,
    /// A Redis publishing connection (not subscribed).
    Publisher,
}

/// One client to connect.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub idx: usize,
    pub role: Role,
    pub login: Login,
    pub source: Option<Ipv4Addr>,
    /// Which target (`--hosts` entry) it connects to: an index into `WorkerConfig::targets`.
    pub host: usize,
    /// Hand this connection's writer to the sender thread.
    pub sends: bool,
    /// Its rooms with `--rooms` (uring-chat joins them after login; Redis subscribes through `login`).
    pub rooms: Vec<u32>,
}

/// Settings every worker shares.
pub struct WorkerConfig {
    /// The target, or with `--hosts` every node; clients name theirs by `ClientSpec::host`.
    pub targets: Vec<SocketAddr>,
    /// `--tls`: how every client's handshake goes.
    pub tls: Option<Arc<TlsClient>>,
    pub protocol: Protocol,
    pub transport: Transport,
    pub senders: usize,
    pub connect_timeout: Duration,
    pub read_buffer: usize,
    pub clock: Clock,
    /// Bounds the handshakes in flight over all workers (`--connect-concurrency`).
    pub handshakes: Arc<Semaphore>,
    /// The room plan with `--rooms`: reading clients are counted in their rooms while connected.
    pub rooms: Option<Arc<Rooms>>,
    /// `--pattern mixed`: receivers split their figures by kind.
    pub mix: Option<Mix>,
}

pub enum Cmd {
    /// Start a round measuring these message numbers.
    Begin(Window),
    /// Hand over the round's stats.
    Collect,
    /// Count disconnected slow clients, then close everything and exit.
    Shutdown,
}

/// The outcome of one client's connect + login.
pub struct Outcome {
    pub idx: usize,
    pub role: Role,
    /// Its target (`ClientSpec::host`).
    pub host: usize,
    /// userID (uring-chat) or channel (Redis); `None` if it failed.
    pub id: Option<String>,
    pub error: Option<String>,
    pub writer: Option<Writer>,
}

pub enum Reply {
    Connected {
        outcomes: Vec<Outcome>,
        login: Histogram<u64>,
        limit: Option<String>,
        cpu_clock: libc::clockid_t,
    },
    Begun,
    Stats(Box<ThreadStats>),
    Finished {
        slow_disconnected: u64,
    },
}

/// Starts a worker thread for `clients`; it connects them at once and reports `Reply::Connected`.
pub fn spawn(
    id: usize,
    cfg: Arc<WorkerConfig>,
    clients: Vec<ClientSpec>,
    shared: Arc<Shared>,
    replies: mpsc::Sender<(usize, Reply)>,
) -> std::io::Result<(std::thread::JoinHandle<()>, tmpsc::UnboundedSender<Cmd>)> {
    let (tx, rx) = tmpsc::unbounded_channel();
    let handle = std::thread::Builder::new()
        .name(format!("loadgen-w{id}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, worker(id, cfg, clients, shared, replies, rx));
        })?;
    Ok((handle, tx))
}

async fn worker(
    id: usize,
    cfg: Arc<WorkerConfig>,
    clients: Vec<ClientSpec>,
    shared: Arc<Shared>,
    replies: mpsc::Sender<(usize, Reply)>,
    mut cmds: tmpsc::UnboundedReceiver<Cmd>,
) {
    let cpu_clock = current_thread_clock();
    let stats = Rc::new(RefCell::new(ThreadStats::new(Window::default())));
    let ctx = Rc::new(Ctx {
        clock: cfg.clock,
        senders: cfg.senders,
        read_buffer: cfg.read_buffer,
        transport: cfg.transport,
        stats: stats.clone(),
        shared: shared.clone(),
        mixed: cfg.mix.is_some(),
    });

    // Phase 1: connect everything, bounded by the shared handshake semaphore.
    let mut handles = Vec::with_capacity(clients.len());
    for spec in clients {
        let cfg = cfg.clone();
        let shared = shared.clone();
        handles.push(tokio::task::spawn_local(async move {
            let Ok(_permit) = cfg.handshakes.clone().acquire_owned().await else {
                return (spec, Err(ConnectError::Failed("aborted".into())), 0);
            };
            let t0 = cfg.clock.now_ns();
            let dial = Dial {
                target: cfg.targets[spec.host],
                source: spec.source,
                transport: cfg.transport,
                tls: cfg.tls.clone(),
            };
            let r = connect::connect(dial, &spec.login, &spec.rooms, cfg.connect_timeout).await;
            let dt = cfg.clock.now_ns() - t0;
            match &r {
                Ok(_) => shared.connected.fetch_add(1, Ordering::Relaxed),
                Err(ConnectError::Limit(_)) => {
                    // A machine limit ends the run: stop the other handshakes quickly.
                    cfg.handshakes.close();
                    shared.failed.fetch_add(1, Ordering::Relaxed)
                }
                Err(_) => shared.failed.fetch_add(1, Ordering::Relaxed),
            };
            (spec, r, dt)
        }));
    }
    let mut outcomes = Vec::with_capacity(handles.len());
    let mut login = new_histogram();
    let mut limit = None;
    let mut slow: Vec<Stream> = Vec::new();
    for h in handles {
        let (spec, r, dt) = h.await.expect("connect task");
        match r {
            Err(ConnectError::Limit(l)) => {
                limit.get_or_insert(l);
                outcomes.push(failed(&spec, "machine limit".into()));
            }
            Err(ConnectError::Failed(e)) => outcomes.push(failed(&spec, e)),
            Ok(est) => {
                login.saturating_record(dt.max(1));
                let id = Some(est.id.clone());
                match spec.role {
                    Role::Slow => {
                        slow.push(est.stream);
                        outcomes.push(Outcome {
                            idx: spec.idx,
                            role: spec.role,
                            host: spec.host,
                            id,
                            error: None,
                            writer: None,
                        });
                    }
                    Role::Receiver | Role::Publisher => {
                        let (rd, wr) = est.stream.into_split();
                        let writer: Writer = Arc::new(tokio::sync::Mutex::new(wr));
                        let task_writer = writer.clone();
                        let ctx = ctx.clone();
                        let publisher = spec.role == Role::Publisher;
                        let member = cfg
                            .rooms
                            .as_ref()
                            .filter(|_| !publisher)
                            .map(|plan| plan.enter(&spec.rooms));
                        match cfg.protocol {
                            Protocol::UringChat => {
                                let seqs = member.is_some().then(|| RoomSeqs::new(est.rooms));
                                tokio::task::spawn_local(receive::chat(
                                    rd,
                                    task_writer,
                                    est.leftover,
                                    ctx,
                                    seqs,
                                    member,
                                    spec.host,
                                ))
                            }
                            Protocol::Redis => tokio::task::spawn_local(receive::redis(
                                rd,
                                task_writer,
                                est.leftover,
                                ctx,
                                publisher,
                                member,
                                spec.host,
                            )),
                        };
                        outcomes.push(Outcome {
                            idx: spec.idx,
                            role: spec.role,
                            host: spec.host,
                            id,
                            error: None,
                            writer: spec.sends.then_some(writer),
                        });
                    }
                }
            }
        }
    }
    let _ = replies.send((
        id,
        Reply::Connected {
            outcomes,
            login,
            limit,
            cpu_clock,
        },
    ));

    while let Some(cmd) = cmds.recv().await {
        match cmd {
            Cmd::Begin(window) => {
                *stats.borrow_mut() = ThreadStats::new(window).with_mix(cfg.mix);
                shared.measured.store(0, Ordering::Relaxed);
                let _ = replies.send((id, Reply::Begun));
            }
            Cmd::Collect => {
                let s = std::mem::replace(
                    &mut *stats.borrow_mut(),
                    ThreadStats::new(Window::default()),
                );
                let _ = replies.send((id, Reply::Stats(Box::new(s))));
            }
            Cmd::Shutdown => {
                let slow_disconnected = count_closed(std::mem::take(&mut slow)).await;
                let _ = replies.send((id, Reply::Finished { slow_disconnected }));
                break;
            }
        }
    }
}

fn failed(spec: &ClientSpec, error: String) -> Outcome {
    Outcome {
        idx: spec.idx,
        role: spec.role,
        host: spec.host,
        id: None,
        error: Some(error),
        writer: None,
    }
}

/// How many of these never-read sockets the server has closed. A server's FIN queues behind the
/// data the slow client never read (a zero window holds it back), so each socket is drained until
/// it reports EOF or a reset (closed), or stays quiet for a moment (still open). Runs after the
/// measurement, so this reading costs the results nothing.
pub async fn count_closed(streams: Vec<Stream>) -> u64 {
    let mut tasks = Vec::with_capacity(streams.len());
    for mut s in streams {
        tasks.push(tokio::task::spawn_local(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let quiet = Duration::from_millis(300);
                match tokio::time::timeout_at(
                    deadline.min(tokio::time::Instant::now() + quiet),
                    s.read(&mut buf),
                )
                .await
                {
                    Ok(Ok(0)) | Ok(Err(_)) => return true,
                    Ok(Ok(_)) => continue,
                    Err(_) => return hung_up(&s),
                }
            }
        }));
    }
    let mut closed = 0;
    for t in tasks {
        closed += t.await.unwrap_or(false) as u64;
    }
    closed
}

/// Whether the peer has shut down or reset this socket (POLLRDHUP / POLLHUP / POLLERR).
fn hung_up(s: &Stream) -> bool {
    let mut p = libc::pollfd {
        fd: s.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one valid pollfd, timeout 0.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}
