//! One core: its listener, its connections, its users, and its inbox from the other cores.
//!
//! Each core is an OS thread with its own tokio-uring runtime. It accepts on its own `SO_REUSEPORT`
//! listener and owns every connection it accepted, so all per-connection state is plain
//! `Rc`/`RefCell`: no lock and no atomic on the message path. Users of other cores are reached only
//! through the [`Router`]. The path of one broadcast: [`session`] builds the frame once,
//! [`Core::broadcast`] hands the same `Bytes` to each other core and queues it for every local
//! member, and each connection's writer sends it with whatever else is queued.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_uring::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::connection::{self, Connection};
use crate::directory::Directory;
use crate::guards::{self, PerAddress};
use crate::outbound::OutFrame;
use crate::presence::{self, PresenceBatch};
use crate::protocol::{self, ErrorCode};
use crate::router::{CoreMsg, Inbox, Router};
use crate::session;
use crate::user_id::UserId;
use crate::writer::Writers;

/// First pause after a failed accept (EMFILE and the like); it doubles up to the maximum.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a stopping core waits for force-closed connections to finish after the drain timeout.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// State shared by all cores, none of it on the message path.
pub struct Shared {
    pub directory: Directory,
    /// Open client sockets server-wide, for `--max-connections`.
    pub connections: AtomicUsize,
    pub max_connections: usize,
    /// Connections per client address, when `--max-connections-per-ip` is set.
    pub per_address: PerAddress,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopped taking input; waiting until every other core has said it will send nothing more.
    Draining,
    /// Telling clients SERVER_SHUTDOWN and flushing.
    Closing,
}

/// Logged-in users of this core: a list to fan out over, an index to find one.
#[derive(Default)]
struct Members {
    list: Vec<Rc<Connection>>,
    by_id: HashMap<UserId, Rc<Connection>>,
}

pub struct Core {
    pub id: usize,
    pub config: Arc<Config>,
    pub shared: Arc<Shared>,
    pub router: Router,
    pub presence: RefCell<PresenceBatch>,
    pub writers: Writers,
    members: RefCell<Members>,
    connections: RefCell<HashMap<u64, Rc<Connection>>>,
    next_connection: Cell<u64>,
    phase: Cell<Phase>,
    drained_peers: Cell<usize>,
    connection_gone: Notify,
    /// Start of this core's millisecond clock (timeouts and flood control).
    epoch: Instant,
}

impl Core {
    pub fn new(id: usize, config: Arc<Config>, shared: Arc<Shared>, router: Router) -> Rc<Core> {
        Rc::new(Core {
            id,
            presence: RefCell::new(PresenceBatch::new(config.presence_names)),
            writers: Writers::new(config.inline_send_min),
            config,
            shared,
            router,
            members: RefCell::default(),
            connections: RefCell::default(),
            next_connection: Cell::new(0),
            phase: Cell::new(Phase::Running),
            drained_peers: Cell::new(0),
            connection_gone: Notify::new(),
            epoch: Instant::now(),
        })
    }

    /// Milliseconds since this core started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Every open connection, for sweeps that may close some of them.
    pub fn connections_snapshot(&self) -> Vec<Rc<Connection>> {
        self.connections.borrow().values().cloned().collect()
    }

    /// False once the server is stopping: input read after that is dropped, not acted on.
    pub fn takes_input(&self) -> bool {
        self.phase.get() == Phase::Running
    }

    pub fn add_member(&self, conn: &Rc<Connection>, user_id: UserId) {
        let mut members = self.members.borrow_mut();
        conn.member_index.set(members.list.len());
        members.list.push(conn.clone());
        members.by_id.insert(user_id, conn.clone());
    }

    pub fn remove_member(&self, conn: &Rc<Connection>, user_id: UserId) {
        let mut members = self.members.borrow_mut();
        let index = conn.member_index.replace(usize::MAX);
        members.list.swap_remove(index);
        if let Some(moved) = members.list.get(index) {
            moved.member_index.set(index);
        }
        members.by_id.remove(&user_id);
    }

    /// A frame for every logged-in user of every core except the connection `except`.
    pub fn broadcast(&self, frame: Bytes, except: Option<u64>) {
        self.router
            .send_to_others(|| CoreMsg::Broadcast(frame.clone()));
        self.deliver_to_members(OutFrame::new(frame), except);
    }

    fn deliver_to_members(&self, frame: OutFrame, except: Option<u64>) {
        let members = self.members.borrow();
        for member in &members.list {
            if Some(member.id) != except {
                member.send(self, frame.clone());
            }
        }
    }

    /// A chat frame from `from` for `to`, wherever `to` lives.
    pub fn direct(&self, from: UserId, to: UserId, frame: Bytes) {
        if to.core() == self.id {
            self.deliver_direct(from, to, frame);
        } else {
            self.router
                .send(to.core(), CoreMsg::Direct { to, from, frame });
        }
    }

    fn deliver_direct(&self, from: UserId, to: UserId, frame: Bytes) {
        let recipient = self.members.borrow().by_id.get(&to).cloned();
        match recipient {
            Some(conn) => conn.send(self, OutFrame::new(frame)),
            None => self.report_not_found(from, to),
        }
    }

    fn report_not_found(&self, from: UserId, recipient: UserId) {
        if from.core() != self.id {
            return self
                .router
                .send(from.core(), CoreMsg::NotFound { from, recipient });
        }
        let sender = self.members.borrow().by_id.get(&from).cloned();
        if let Some(conn) = sender {
            session::user_not_found(self, &conn, &recipient.to_string());
        }
    }

    /// Registers a connection the accept loop took, or turns it away when the server is full.
    fn admit(self: &Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        let open = self.shared.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let id = self.next_connection.replace(self.next_connection.get() + 1);
        let per_ip = self.config.max_connections_per_ip;
        let counted = per_ip == 0 || self.shared.per_address.try_acquire(peer.ip(), per_ip);
        let counted_ip = (per_ip > 0 && counted).then_some(peer.ip());
        let conn = Connection::new(self, id, stream, counted_ip);
        if open > self.shared.max_connections {
            let max = self.shared.max_connections;
            let reason = format!("the server holds its maximum of {max} connections");
            return conn.fail(self, ErrorCode::ServerFull, &reason);
        }
        if !counted {
            let reason = format!("your address holds its maximum of {per_ip} connections");
            return conn.fail(self, ErrorCode::ServerFull, &reason);
        }
        tracing::debug!(core = self.id, conn = id, "connected");
        self.connections.borrow_mut().insert(id, conn.clone());
        tokio_uring::spawn(connection::serve(self.clone(), conn));
    }

    /// Drops a connection whose reader has ended.
    pub fn forget(&self, conn: &Connection) {
        tracing::debug!(core = self.id, conn = conn.id, "disconnected");
        self.connections.borrow_mut().remove(&conn.id);
        self.connection_gone.notify_waiters();
    }

    fn handle(self: &Rc<Self>, msg: CoreMsg, listener: &TcpListener) {
        match msg {
            CoreMsg::Broadcast(frame) => self.deliver_to_members(OutFrame::new(frame), None),
            CoreMsg::Direct { to, from, frame } => self.deliver_direct(from, to, frame),
            CoreMsg::NotFound { from, recipient } => self.report_not_found(from, recipient),
            CoreMsg::Shutdown => {
                self.phase.set(Phase::Draining);
                // Wakes the pending accept with an error; the accept loop sees the phase and ends.
                // SAFETY: shutdown(2) on a listening fd this core owns; no memory is involved.
                unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
                self.router.send_to_others(|| CoreMsg::Drained);
                self.router.close();
                self.maybe_close();
            }
            CoreMsg::Drained => {
                self.drained_peers.set(self.drained_peers.get() + 1);
                self.maybe_close();
            }
        }
    }

    /// Once this core drains and no other core will send more, tells every client and starts closing.
    fn maybe_close(&self) {
        if self.phase.get() != Phase::Draining || self.drained_peers.get() + 1 < self.router.cores()
        {
            return;
        }
        self.phase.set(Phase::Closing);
        let connections: Vec<Rc<Connection>> =
            self.connections.borrow().values().cloned().collect();
        let goodbye = protocol::error(ErrorCode::ServerShutdown, "the server is shutting down");
        for conn in connections {
            conn.finish(self, goodbye.clone());
        }
    }

    /// Waits until every connection has gone, or until `deadline`.
    async fn wait_for_connections(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            if self.connections.borrow().is_empty() {
                return true;
            }
            let gone = self.connection_gone.notified();
            tokio::select! {
                _ = gone => {}
                _ = tokio::time::sleep_until(deadline) => return self.connections.borrow().is_empty(),
            }
        }
    }
}

/// Runs one core until the server has stopped and its connections are closed.
pub async fn run(core: Rc<Core>, listener: TcpListener, inbox: Inbox) {
    let listener = Rc::new(listener);
    tokio_uring::spawn(accept_loop(core.clone(), listener.clone()));
    let flusher = core.clone();
    tokio_uring::spawn(async move { flusher.router.run_flusher().await });
    let writer = core.clone();
    tokio_uring::spawn(async move { writer.writers.run().await });
    tokio_uring::spawn(presence::run_ticker(core.clone()));
    tokio_uring::spawn(guards::run_sweeper(core.clone()));

    while core.phase.get() != Phase::Closing {
        let Ok(batch) = inbox.recv_async().await else {
            break;
        };
        for msg in batch {
            core.handle(msg, &listener);
        }
    }
    let deadline = tokio::time::Instant::now() + core.config.drain_timeout;
    if !core.wait_for_connections(deadline).await {
        let stuck: Vec<Rc<Connection>> = core.connections.borrow().values().cloned().collect();
        tracing::warn!(
            core = core.id,
            connections = stuck.len(),
            "drain timeout: closing the rest"
        );
        for conn in stuck {
            conn.shutdown_now();
        }
        core.wait_for_connections(tokio::time::Instant::now() + CLOSE_WAIT)
            .await;
    }
    let (writes, frames) = core.writers.totals();
    let per_write = frames as f64 / writes.max(1) as f64;
    tracing::info!(
        core = core.id,
        writes,
        frames,
        "stopped; {per_write:.1} frames per write"
    );
    // The `Drained` promise (and anything before it) must reach the other cores before this one ends.
    core.router.settle().await;
}

/// Accepts until the server stops. Accept errors (EMFILE, ECONNABORTED, ...) back off and retry.
async fn accept_loop(core: Rc<Core>, listener: Rc<TcpListener>) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = listener.accept().await;
        if !core.takes_input() {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                if let Err(error) = stream.set_nodelay(true) {
                    tracing::debug!(%error, "TCP_NODELAY failed");
                }
                core.admit(stream, peer);
            }
            Err(error) => {
                tracing::warn!(core = core.id, %error, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}
