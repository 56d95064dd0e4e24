//! One core: its listener, its connections, its inbox from the other cores, and its phase.
//!
//! Each core is an OS thread with its own tokio-uring runtime. It accepts on its own `SO_REUSEPORT`
//! listener and owns every connection it accepted, so all per-connection state is plain
//! `Rc`/`RefCell`/`Cell`. The chat state of the core is its [`Shard`]; this module adds what only a
//! running server has: the accept loop, the admission of new sockets, and the two-phase drain.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_uring::net::{TcpListener, TcpStream};

use crate::chat::protocol::{self, ErrorCode};
use crate::chat::{Shard, ShardMsg};
use crate::config::Config;
use crate::hub::{Inbox, Mail};
use crate::metrics::{CoreMetrics, Exposition};
use crate::net::guards::Refusal;
use crate::net::tls::{Certificate, TlsSession};
use crate::net::{CloseReason, Connection, Sockets, Transport};
use crate::server::{reader, sweeper};

/// First pause after a failed accept (EMFILE and the like); it doubles up to the maximum.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a stopping core waits for force-closed connections to finish after the drain timeout.
const CLOSE_WAIT: Duration = Duration::from_secs(1);
/// Drain rounds: the longest chain of messages between cores that one client frame starts. A room
/// post goes to the room's owner, then to the members' cores; a direct message to nobody goes to
/// the recipient's core, then back. After the first round no core takes input, so no chain starts;
/// after the last, none is still on its way.
const DRAIN_ROUNDS: u8 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Stopped taking input; drain rounds with the other cores until none will send anything more.
    Draining,
    /// Telling clients SERVER_SHUTDOWN and flushing.
    Closing,
}

pub struct Core {
    pub config: Arc<Config>,
    pub shard: Shard,
    pub sockets: Rc<Sockets>,
    /// This core's counters, and every core's for `/metrics`.
    pub metrics: Arc<CoreMetrics>,
    pub exposition: Arc<Exposition>,
    /// The TLS configuration of every port; `None` serves plain text.
    tls: Option<Certificate>,
    connections: RefCell<HashMap<u64, Rc<Connection>>>,
    next_connection: Cell<u64>,
    phase: Cell<Phase>,
    /// Drain rounds this core has announced, and those it has heard from each core.
    rounds_announced: Cell<u8>,
    rounds_heard: RefCell<Vec<u8>>,
    connection_gone: Notify,
}

impl Core {
    pub fn new(
        config: Arc<Config>,
        shard: Shard,
        sockets: Rc<Sockets>,
        metrics: Arc<CoreMetrics>,
        exposition: Arc<Exposition>,
        tls: Option<Certificate>,
    ) -> Rc<Core> {
        let rounds_heard = RefCell::new(vec![0; shard.router.cores()]);
        Rc::new(Core {
            config,
            shard,
            sockets,
            metrics,
            exposition,
            tls,
            connections: RefCell::default(),
            next_connection: Cell::new(0),
            phase: Cell::new(Phase::Running),
            rounds_announced: Cell::new(0),
            rounds_heard,
            connection_gone: Notify::new(),
        })
    }

    pub fn id(&self) -> usize {
        self.shard.id
    }

    /// Every open connection, for sweeps that may close some of them.
    pub fn connections_snapshot(&self) -> Vec<Rc<Connection>> {
        self.connections.borrow().values().cloned().collect()
    }

    /// False once the server is stopping: input read after that is dropped, not acted on.
    pub fn takes_input(&self) -> bool {
        self.phase.get() == Phase::Running
    }

    /// Registers a connection the accept loop took, or turns it away when the server is full.
    fn admit(self: &Rc<Self>, stream: TcpStream, peer: SocketAddr) {
        let (counted_ip, verdict) = self.sockets.admission.admit(peer.ip());
        let tls = match self.new_tls_session().transpose() {
            Ok(tls) => tls,
            Err(error) => {
                // Only a configuration rustls rejects gets here; `load` checked it at start.
                tracing::error!(core = self.id(), %error, "cannot start a TLS session");
                let id = self.next_id();
                let conn =
                    Connection::new(&self.sockets, id, stream, Transport::Tcp, counted_ip, None);
                return conn.shutdown_now(CloseReason::TlsFailed);
            }
        };
        if let Err(refusal) = verdict {
            let id = self.next_id();
            let conn = Connection::new(&self.sockets, id, stream, Transport::Tcp, counted_ip, tls);
            let reason = match refusal {
                Refusal::Full(max) => format!("the server holds its maximum of {max} connections"),
                Refusal::AddressFull(cap) => {
                    format!("your address holds its maximum of {cap} connections")
                }
            };
            self.metrics.accepted(Transport::Tcp, Some(&refusal));
            let frame = protocol::error(ErrorCode::ServerFull, &reason);
            return conn.finish(frame, CloseReason::Refused);
        }
        let conn = self.register(stream, Transport::Tcp, counted_ip, tls);
        tokio_uring::spawn(reader::serve_tcp(self.clone(), conn));
    }

    /// A TLS session for a connection accepted now, on the current certificate; `None` when TLS is
    /// off. Every port of the server speaks TLS when it is on.
    pub fn new_tls_session(&self) -> Option<Result<TlsSession, rustls::Error>> {
        (self.tls.as_ref()).map(|certificate| TlsSession::new(certificate.current()))
    }

    /// Makes an admitted socket one of this core's connections (drains, sweeps, shutdown and the
    /// metrics count it from now on); its reader task is the caller's to start.
    pub fn register(
        &self,
        stream: TcpStream,
        transport: Transport,
        counted_ip: Option<std::net::IpAddr>,
        tls: Option<TlsSession>,
    ) -> Rc<Connection> {
        let id = self.next_id();
        let conn = Connection::new(&self.sockets, id, stream, transport, counted_ip, tls);
        self.metrics.accepted(transport, None);
        tracing::debug!(
            core = self.id(),
            conn = id,
            transport = transport.label(),
            "connected"
        );
        self.connections.borrow_mut().insert(id, conn.clone());
        conn
    }

    fn next_id(&self) -> u64 {
        self.next_connection.replace(self.next_connection.get() + 1)
    }

    /// Drops a connection whose reader has ended.
    pub fn forget(&self, conn: &Connection) {
        tracing::debug!(core = self.id(), conn = conn.id, "disconnected");
        let reason = conn.close_reason().unwrap_or(CloseReason::PeerClosed);
        self.metrics.closed(conn.transport(), reason);
        self.connections.borrow_mut().remove(&conn.id);
        self.connection_gone.notify_waiters();
    }

    fn handle(&self, mail: Mail<ShardMsg>, listener: &TcpListener) {
        match mail {
            Mail::Message(msg) => self.shard.handle(msg),
            Mail::Shutdown => {
                self.phase.set(Phase::Draining);
                self.sockets.stop();
                // Wakes the pending accept with an error; the accept loop sees the phase and ends.
                // SAFETY: shutdown(2) on a listening fd this core owns; no memory is involved.
                unsafe { libc::shutdown(listener.as_raw_fd(), libc::SHUT_RD) };
                self.advance_drain();
            }
            Mail::Drained { from } => {
                self.rounds_heard.borrow_mut()[from] += 1;
                self.advance_drain();
            }
        }
    }

    /// Moves the drain on: once every other core has finished the round this core announced (so
    /// whatever they sent in it has arrived, and what it caused here is queued), announces the
    /// next; after the last round no core will send anything more, so it tells every client and
    /// starts closing.
    fn advance_drain(&self) {
        while self.phase.get() == Phase::Draining {
            let me = self.id();
            let heard = self.rounds_heard.borrow();
            let slowest = (heard.iter().enumerate())
                .filter(|&(core, _)| core != me)
                .map(|(_, &rounds)| rounds)
                .min()
                .unwrap_or(u8::MAX);
            drop(heard);
            let announced = self.rounds_announced.get();
            if announced > 0 && slowest < announced {
                return;
            }
            if announced < DRAIN_ROUNDS {
                self.shard.router.announce_drained();
                self.rounds_announced.set(announced + 1);
                continue;
            }
            self.shard.router.close();
            self.close_all();
        }
    }

    /// Tells every client the server is stopping, and closes them once their output is flushed.
    fn close_all(&self) {
        self.phase.set(Phase::Closing);
        let goodbye = protocol::error(ErrorCode::ServerShutdown, "the server is shutting down");
        for conn in self.connections_snapshot() {
            conn.finish(goodbye.clone(), CloseReason::Shutdown);
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
pub async fn run(core: Rc<Core>, listener: TcpListener, inbox: Inbox<ShardMsg>) {
    let listener = Rc::new(listener);
    tokio_uring::spawn(accept_loop(core.clone(), listener.clone()));
    let flusher = core.clone();
    tokio_uring::spawn(async move { flusher.shard.router.run_flusher().await });
    let writer = core.clone();
    tokio_uring::spawn(async move { writer.sockets.writers.run().await });
    tokio_uring::spawn(presence_ticker(core.clone()));
    tokio_uring::spawn(sweeper::run(core.clone()));

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
        let stuck = core.connections_snapshot();
        tracing::warn!(
            core = core.id(),
            connections = stuck.len(),
            "drain timeout: closing the rest"
        );
        for conn in stuck {
            conn.shutdown_now(CloseReason::Shutdown);
        }
        core.wait_for_connections(tokio::time::Instant::now() + CLOSE_WAIT)
            .await;
    }
    let (writes, frames) = core.sockets.writers.totals();
    let per_write = frames as f64 / writes.max(1) as f64;
    tracing::info!(
        core = core.id(),
        writes,
        frames,
        "stopped; {per_write:.1} frames per write"
    );
    // The last `Drained` (and anything before it) must reach the other cores before this one ends.
    core.shard.router.settle().await;
}

/// Ticks the shard (coalesced presence, idle rooms) every `--presence-interval` while the core
/// takes input.
async fn presence_ticker(core: Rc<Core>) {
    let mut interval = tokio::time::interval(core.config.presence_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !core.takes_input() {
            return;
        }
        core.shard.tick();
    }
}

/// Accepts chat connections until the server stops taking input.
async fn accept_loop(core: Rc<Core>, listener: Rc<TcpListener>) {
    let stopped = || !core.takes_input();
    accept_until(&core, &listener, "chat", stopped, |stream, peer| {
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY failed");
        }
        core.admit(stream, peer);
    })
    .await;
}

/// Accepts on `listener`, handing each connection to `admit`, until `stopped()` holds once an
/// accept has returned (whoever stops it also wakes the pending accept, by shutting the listening
/// socket). Accept errors (EMFILE, ECONNABORTED, ...) are logged and retried after a back-off that
/// doubles from `ACCEPT_BACKOFF_MIN` to `ACCEPT_BACKOFF_MAX`.
pub async fn accept_until(
    core: &Core,
    listener: &TcpListener,
    port: &str,
    stopped: impl Fn() -> bool,
    mut admit: impl FnMut(TcpStream, SocketAddr),
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = listener.accept().await;
        if stopped() {
            return;
        }
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                admit(stream, peer);
            }
            Err(error) => {
                tracing::warn!(core = core.id(), port, %error, retry_in = ?backoff, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
}
