//! One client socket: its outbound queue, its liveness stamps, and how it closes.
//!
//! tokio-uring cannot cancel an operation by dropping its future (../shared/notes/tokio-uring.md), so
//! no read or write ever sits in a `select!` or a timeout. Each connection has exactly one reader
//! task above this layer, which holds the only pending read; its writes are driven by the core's
//! writer ([`crate::net::writer`]), one write in progress at a time. An idle connection therefore
//! costs one task and one small read buffer. Closing is always `shutdown(2)` on the socket, which
//! completes whatever read or write is pending, so everything ends on its own; the fd closes when the
//! last `Rc` goes.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Shutdown};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_uring::net::TcpStream;

use crate::net::counters::{FrameTally, NetCounters, PerTransport};
use crate::net::guards::{Admission, TokenBucket, Verdict};
use crate::net::outbound::{OutFrame, OutQueue, Overflow};
use crate::net::tls::{TlsFailure, TlsFailureKind, TlsSession};
use crate::net::transport::{CloseReason, Transport};
use crate::net::websocket;
use crate::net::writer::Writers;

/// The limits every connection of a server obeys.
#[derive(Clone, Debug)]
pub struct SocketLimits {
    /// Bytes a client may owe (queued plus in flight) before it is cut off as a slow consumer.
    pub max_outbound_bytes: usize,
    /// How long a closing connection may take to flush what it is owed.
    pub drain_timeout: Duration,
    /// Flood control: frames per second on average (0 is off), and the burst above it.
    pub rate_limit: u32,
    pub rate_limit_burst: u32,
}

/// What every connection of one core shares: its writer, the limits, the server-wide connection
/// counts, the core's counters, and the core's clock.
pub struct Sockets {
    pub writers: Writers,
    pub limits: SocketLimits,
    pub admission: Arc<Admission>,
    pub counters: Arc<NetCounters>,
    /// Counts the frames handed to connections, by kinds the layer above names.
    tally: Arc<dyn FrameTally>,
    /// The last frame a slow consumer gets before it is closed; made by the layer that knows frames.
    slow_consumer_notice: Bytes,
    /// Set once the server stops taking input: closes then no longer wait for the peer's FIN.
    stopping: Cell<bool>,
    /// Start of this core's millisecond clock (timeouts and flood control).
    epoch: Instant,
}

impl Sockets {
    pub fn new(
        writers: Writers,
        limits: SocketLimits,
        admission: Arc<Admission>,
        slow_consumer_notice: Bytes,
        tally: Arc<dyn FrameTally>,
    ) -> Rc<Sockets> {
        Rc::new(Sockets {
            counters: writers.counters.clone(),
            writers,
            limits,
            admission,
            tally,
            slow_consumer_notice,
            stopping: Cell::new(false),
            epoch: Instant::now(),
        })
    }

    /// Milliseconds since this core started.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// From now on a closing connection is shut down both ways after its last flush.
    pub fn stop(&self) {
        self.stopping.set(true);
    }

    /// Counts `frame` queued for `sent` connections of each transport (a fan-out, once per pass).
    pub fn count_sent(&self, frame: &[u8], sent: &PerTransport<u64>) {
        for (transport, &count) in sent.iter().filter(|(_, &count)| count > 0) {
            self.tally.sent(transport, frame, count);
        }
    }
}

/// Where a connection stands with its core's writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WriteState {
    /// No write under way and not in the writer's lists.
    Idle,
    /// In the writer's lists, waiting for its turn.
    Waiting,
    /// Waiting for its turn in a fan-out pass when more was queued for it (a direct message, a
    /// reply): the writer sends its queue early rather than at its place in the pass.
    Hurried,
    /// A write is under way; what is queued meanwhile follows when it completes.
    Writing,
}

/// A client connection, owned by the core that accepted it.
pub struct Connection {
    pub id: u64,
    stream: TcpStream,
    transport: Transport,
    sockets: Rc<Sockets>,
    out: RefCell<OutQueue>,
    write_state: Cell<WriteState>,
    /// Set once the connection is on its way out: nothing more is queued or read.
    closing: Cell<bool>,
    close_reason: Cell<Option<CloseReason>>,
    /// How the writer shuts the socket after the last flush: `Write` lingers for the peer's FIN,
    /// `Both` (when the server stops) does not wait for it.
    close_how: Cell<Shutdown>,
    /// Set once the peer has identified itself (logged in): the login timeout no longer applies.
    identified: Cell<bool>,
    /// The peer's address, when it counts against the per-address cap.
    counted_ip: Option<IpAddr>,
    /// Core clock (ms) at accept, for the login timeout.
    accepted_ms: u64,
    /// Core clock (ms) of the last read, for keepalive and flood control.
    last_heard_ms: Cell<u64>,
    pinged: Cell<bool>,
    bucket: Cell<TokenBucket>,
    /// This connection's flood limit, (rate, burst): the server's, or what its login raised it to.
    rate_limit: Cell<(u32, u32)>,
    /// The TLS session on a TLS port (boxed: 8 bytes on a plain connection, ~1.2 KB inline).
    tls: Option<Box<RefCell<TlsSession>>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.sockets.admission.release(self.counted_ip);
        let owed = self.out.get_mut().owed();
        self.sockets.counters.outbound_queued.add(-(owed as i64));
    }
}

impl Connection {
    /// Wraps an accepted socket that [`Admission::admit`] has counted (`counted_ip` as it returned),
    /// with its TLS session when it came in on a TLS port.
    pub fn new(
        sockets: &Rc<Sockets>,
        id: u64,
        stream: TcpStream,
        transport: Transport,
        counted_ip: Option<IpAddr>,
        tls: Option<TlsSession>,
    ) -> Rc<Connection> {
        let now = sockets.now_ms();
        Rc::new(Connection {
            id,
            stream,
            transport,
            out: RefCell::new(OutQueue::default()),
            write_state: Cell::new(WriteState::Idle),
            closing: Cell::new(false),
            close_reason: Cell::new(None),
            close_how: Cell::new(Shutdown::Write),
            identified: Cell::new(false),
            counted_ip,
            accepted_ms: now,
            last_heard_ms: Cell::new(now),
            pinged: Cell::new(false),
            bucket: Cell::new(TokenBucket::new(sockets.limits.rate_limit_burst, now)),
            rate_limit: Cell::new((sockets.limits.rate_limit, sockets.limits.rate_limit_burst)),
            tls: tls.map(|session| Box::new(RefCell::new(session))),
            sockets: sockets.clone(),
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The core's connections in common: its counters, and how fan-outs are counted.
    pub fn sockets(&self) -> &Sockets {
        &self.sockets
    }

    /// Why the connection ended, once it is closing; `None` when the peer closed first.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get()
    }

    fn note_close(&self, reason: CloseReason) {
        if self.close_reason.get().is_none() {
            self.close_reason.set(Some(reason));
        }
    }

    pub fn is_identified(&self) -> bool {
        self.identified.get()
    }

    pub fn set_identified(&self, identified: bool) {
        self.identified.set(identified);
    }

    pub fn accepted_ms(&self) -> u64 {
        self.accepted_ms
    }

    pub fn last_heard_ms(&self) -> u64 {
        self.last_heard_ms.get()
    }

    /// Notes that the peer spoke (a read completed) now.
    pub fn heard(&self) {
        self.last_heard_ms.set(self.sockets.now_ms());
        self.pinged.set(false);
    }

    pub fn was_pinged(&self) -> bool {
        self.pinged.get()
    }

    pub fn mark_pinged(&self) {
        self.pinged.set(true);
    }

    /// Flood control for one inbound frame, timed by the read that brought it (frames of one read
    /// arrived together, and the clock is not read again per frame).
    pub fn take_token(&self) -> Verdict {
        let (rate, burst) = self.rate_limit.get();
        let mut bucket = self.bucket.get();
        let verdict = bucket.take(self.last_heard_ms.get(), rate, burst);
        self.bucket.set(bucket);
        if verdict != Verdict::Allowed {
            self.sockets.counters.rate_limited.add(1);
        }
        verdict
    }

    /// Raises this connection's flood limit to `rate` frames per second (a trusted login's grant),
    /// with the burst scaled by the same factor and a full bucket, as if the connection had been
    /// opened with it. Never lowers it, and leaves flood control off when the server has it off.
    pub fn raise_rate_limit(&self, rate: u32) {
        let (server_rate, server_burst) = (
            self.sockets.limits.rate_limit,
            self.sockets.limits.rate_limit_burst,
        );
        if server_rate == 0 || rate <= server_rate {
            return;
        }
        let burst = u64::from(server_burst) * u64::from(rate) / u64::from(server_rate);
        let burst = u32::try_from(burst).unwrap_or(u32::MAX);
        self.rate_limit.set((rate, burst));
        self.bucket
            .set(TokenBucket::new(burst, self.last_heard_ms.get()));
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Marks a connection whose reader has ended: nothing more is queued for it.
    pub fn set_closed(&self) {
        self.closing.set(true);
    }

    /// Queues a frame that many connections get (a fan-out). It waits for this connection's turn
    /// in the writer: hurrying thousands of connections for one frame would only break up the
    /// batching that carries several broadcasts in one write. The caller counts it, once for the
    /// whole fan-out ([`Sockets::count_sent`]).
    pub fn send(self: &Rc<Self>, frame: OutFrame) {
        self.queue(self.on_wire(frame), false);
    }

    /// Sends a frame of its own (a reply, a direct message) that keeps the connection open. If the
    /// connection is waiting for its place in a fan-out pass, its queue goes out early.
    pub fn reply(self: &Rc<Self>, frame: Bytes) {
        let frame = OutFrame::new(frame);
        if self.queue(self.on_wire(frame.clone()), true) {
            self.sockets.tally.sent(self.transport, frame.as_bytes(), 1);
        }
    }

    /// Sends bytes already in the transport's wire form: the WebSocket upgrade answer, a pong.
    /// They are not protocol frames, and count only as bytes.
    pub fn send_wire(self: &Rc<Self>, bytes: Bytes) {
        self.queue(OutFrame::new(bytes), true);
    }

    /// The keepalive ping of a sweep: `tcp_ping` (a protocol frame) over TCP, a WebSocket ping
    /// over WebSocket, since browsers answer those by themselves. Like a fan-out, it waits for
    /// the connection's turn; the sweep counts it.
    pub fn ping(self: &Rc<Self>, tcp_ping: OutFrame) {
        let frame = match self.transport {
            Transport::Tcp => tcp_ping,
            Transport::WebSocket => OutFrame::new(websocket::ping_frame()),
        };
        self.queue(frame, false);
    }

    /// A protocol frame as this connection's transport carries it.
    fn on_wire(&self, frame: OutFrame) -> OutFrame {
        match self.transport {
            Transport::Tcp => frame,
            Transport::WebSocket => frame.websocket(),
        }
    }

    /// Queues a frame; false when it was not queued. A client that owes more than the bound is cut
    /// off as a slow consumer: its queue is freed at once, it gets the slow-consumer notice if it
    /// ever reads again, and it is closed.
    fn queue(self: &Rc<Self>, frame: OutFrame, hurry: bool) -> bool {
        if self.closing.get() {
            return false;
        }
        let limit = self.sockets.limits.max_outbound_bytes;
        match self.with_queue(|out| out.push(frame, limit)) {
            Ok(()) => {
                self.wake_writer(hurry);
                true
            }
            Err(Overflow) => {
                tracing::debug!(conn = self.id, "slow consumer cut off");
                self.with_queue(OutQueue::clear);
                let notice = self.sockets.slow_consumer_notice.clone();
                self.finish(notice, CloseReason::SlowConsumer);
                false
            }
        }
    }

    /// Changes the queue, keeping the core's count of bytes owed in step.
    fn with_queue<R>(&self, change: impl FnOnce(&mut OutQueue) -> R) -> R {
        let mut out = self.out.borrow_mut();
        let before = out.owed();
        let result = change(&mut out);
        let delta = out.owed() as i64 - before as i64;
        self.sockets.counters.outbound_queued.add(delta);
        result
    }

    /// Queues a last frame past the bound, flushes it and closes: the peer gets the frame and a FIN
    /// (over WebSocket, the frame and then a close frame for `reason`). If the flush has not
    /// finished within the drain timeout, the socket is shut down regardless.
    pub fn finish(self: &Rc<Self>, last: Bytes, reason: CloseReason) {
        if self.is_closing() {
            return;
        }
        self.sockets.tally.sent(self.transport, &last, 1);
        match self.transport {
            Transport::Tcp => self.end([OutFrame::new(last)], reason),
            Transport::WebSocket => self.end(
                [
                    OutFrame::new(websocket::text_frame(&last)),
                    OutFrame::new(websocket::close_frame(reason, "")),
                ],
                reason,
            ),
        }
    }

    /// Like [`Connection::finish`], with a last frame already in wire form (a WebSocket close).
    pub fn finish_wire(self: &Rc<Self>, last: Bytes, reason: CloseReason) {
        self.end([OutFrame::new(last)], reason);
    }

    /// Flushes what is queued and closes, with no last frame (over TLS, close_notify goes last).
    pub fn close_after_flush(self: &Rc<Self>, reason: CloseReason) {
        self.end([], reason);
    }

    /// The TLS session, on a TLS port.
    pub fn tls(&self) -> Option<&RefCell<TlsSession>> {
        self.tls.as_deref()
    }

    /// Has the writer send the TLS session's output (a handshake flight), and what waited for the
    /// handshake to finish.
    pub fn flush_tls(self: &Rc<Self>) {
        self.wake_writer(true);
    }

    /// Closes a connection whose TLS session failed, after its alert (if rustls made one).
    pub fn fail_tls(self: &Rc<Self>, failure: TlsFailure) {
        tracing::debug!(conn = self.id, kind = ?failure.kind, error = %failure.error, "TLS failed");
        let reason = match failure.kind {
            TlsFailureKind::Plaintext => CloseReason::TlsPlaintext,
            TlsFailureKind::PeerAlert | TlsFailureKind::Protocol => CloseReason::TlsFailed,
        };
        self.end([], reason);
    }

    fn end(self: &Rc<Self>, last: impl IntoIterator<Item = OutFrame>, reason: CloseReason) {
        if self.closing.replace(true) {
            return;
        }
        // A TLS session that cannot seal (still handshaking, or failed) has no way to carry a
        // last frame: the plaintext is dropped, and a login timeout is the handshake's.
        let sealable = (self.tls.as_ref()).is_none_or(|tls| tls.borrow().can_seal());
        let reason = match reason {
            CloseReason::LoginTimeout if !sealable => CloseReason::TlsHandshakeTimeout,
            reason => reason,
        };
        self.note_close(reason);
        if self.sockets.stopping.get() {
            self.close_how.set(Shutdown::Both);
        }
        self.with_queue(|out| {
            if !sealable {
                return out.clear();
            }
            for frame in last {
                out.push_unbounded(frame);
            }
        });
        self.wake_writer(true);
        let weak: Weak<Connection> = Rc::downgrade(self);
        let grace = self.sockets.limits.drain_timeout;
        tokio_uring::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(conn) = weak.upgrade() {
                conn.shutdown_now(reason);
            }
        });
    }

    /// Ends both directions now: any pending read or write completes, and both tasks end.
    pub fn shutdown_now(&self, reason: CloseReason) {
        self.note_close(reason);
        self.closing.set(true);
        // ENOTCONN when the peer is already gone is fine: the goal is reached either way.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Hands the connection to the writer if it is idle; `hurry` asks for an early send when it is
    /// already waiting in a fan-out pass.
    fn wake_writer(self: &Rc<Self>, hurry: bool) {
        match self.write_state.get() {
            WriteState::Idle => {
                self.write_state.set(WriteState::Waiting);
                self.sockets.writers.schedule(self.clone());
            }
            WriteState::Waiting if hurry => {
                if self.sockets.writers.hurry(self) {
                    self.write_state.set(WriteState::Hurried);
                }
            }
            WriteState::Waiting | WriteState::Hurried | WriteState::Writing => {}
        }
    }

    pub(crate) fn write_state(&self) -> WriteState {
        self.write_state.get()
    }

    /// A hurried connection whose queue went out early is back to waiting for its place.
    pub(crate) fn hurried_sent(&self) {
        self.write_state.set(WriteState::Waiting);
    }

    /// The socket, for the reader task's reads and the writer's writes.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Fills `batch` (empty) with the frames for the next `writev`, and marks a write under way.
    /// When the queue is empty it hands `batch` back unused: the writer then stops until more is
    /// queued, and a closing connection is shut down (FIN after the last byte).
    pub(crate) fn next_batch(&self, batch: Vec<OutFrame>) -> Result<Vec<OutFrame>, Vec<OutFrame>> {
        let taken = self.early_batch(batch);
        if taken.is_ok() {
            self.write_state.set(WriteState::Writing);
            return taken;
        }
        self.out.borrow_mut().release_memory();
        self.write_state.set(WriteState::Idle);
        if self.closing.get() {
            let _ = self.stream.shutdown(self.close_how.get());
        }
        taken
    }

    /// Fills `batch` (empty) with queued frames, leaving the connection's place with the writer as
    /// it is (an early send uses it as is). Hands `batch` back unused when nothing is queued.
    pub(crate) fn early_batch(
        &self,
        mut batch: Vec<OutFrame>,
    ) -> Result<Vec<OutFrame>, Vec<OutFrame>> {
        let mut out = self.out.borrow_mut();
        if let Some(tls) = &self.tls {
            let before = out.owed();
            self.seal_batch(&mut tls.borrow_mut(), &mut out, &mut batch);
            let delta = out.owed() as i64 - before as i64;
            self.sockets.counters.outbound_queued.add(delta);
            return if batch.is_empty() {
                Err(batch)
            } else {
                Ok(batch)
            };
        }
        if out.is_empty() {
            return Err(batch);
        }
        out.take_batch(&mut batch);
        Ok(batch)
    }

    /// A TLS connection's next batch: the unsent rest of the last record, exactly as it was; or
    /// everything queued sealed into one record (one per 16 KiB); or, while handshaking or after the
    /// last frame of a close, only what rustls has to send (a handshake flight, an alert,
    /// close_notify). Plaintext that cannot be sealed yet stays queued.
    fn seal_batch(&self, tls: &mut TlsSession, out: &mut OutQueue, batch: &mut Vec<OutFrame>) {
        out.take_batch(batch);
        let sealed_lead = batch.iter().take_while(|f| f.is_sealed()).count();
        let mut wire = Vec::new();
        if sealed_lead > 0 {
            out.put_back(batch.drain(sealed_lead..));
            return;
        }
        if tls.can_seal() && !batch.is_empty() {
            let plain: usize = batch.iter().map(OutFrame::len).sum();
            tls.seal(batch, &mut wire);
            batch.clear();
            out.reseal(plain, wire.len());
        } else {
            out.put_back(batch.drain(..));
            if self.closing.get() && out.is_empty() && tls.can_seal() {
                tls.close();
            }
            tls.take_output(&mut wire);
            out.reseal(0, wire.len());
        }
        if !wire.is_empty() {
            batch.push(OutFrame::sealed(Bytes::from(wire)));
        }
    }

    /// Accounts for a finished `writev` and returns the emptied batch vector; a short write is
    /// counted, by whether the connection is TLS. A failed write means the peer is gone: what is
    /// queued is dropped (a TLS record's unsent rest too) and the socket shut down.
    pub(crate) fn batch_written(
        &self,
        result: std::io::Result<usize>,
        mut batch: Vec<OutFrame>,
    ) -> Vec<OutFrame> {
        match result {
            Ok(written) => {
                self.sockets
                    .counters
                    .bytes_out
                    .get(self.transport)
                    .add(written as u64);
                if self.with_queue(|out| out.complete_batch(&mut batch, written)) {
                    self.sockets.counters.short_write(self.tls.is_some());
                }
            }
            Err(error) => {
                tracing::debug!(conn = self.id, %error, "write failed");
                self.with_queue(|out| {
                    out.complete_batch(&mut batch, 0);
                    out.abandon();
                });
                self.shutdown_now(CloseReason::WriteFailed);
            }
        }
        batch
    }
}
