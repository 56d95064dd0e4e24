//! One client socket: its reader task, its outbound queue, and how it closes.
//!
//! tokio-uring cannot cancel an operation by dropping its future (../shared/notes/tokio-uring.md), so
//! no read or write here ever sits in a `select!` or a timeout. Each connection has exactly one reader
//! task, which holds the only pending read; its writes are driven by the core's writer
//! ([`crate::writer`]), one write in progress at a time. An idle connection therefore costs one task
//! and one small read buffer. Closing is always `shutdown(2)` on the socket, which completes whatever
//! read or write is pending, so everything ends on its own; the fd closes when the last `Rc` goes.

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Shutdown};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::codec::{Event, FrameDecoder};
use crate::core::Core;
use crate::guards::{TokenBucket, Verdict};
use crate::outbound::{OutFrame, OutQueue, Overflow};
use crate::protocol::{self, ErrorCode};
use crate::session::{self, Session};

/// A client connection, owned by the core that accepted it.
pub struct Connection {
    pub id: u64,
    stream: TcpStream,
    out: RefCell<OutQueue>,
    writing: Cell<bool>,
    /// Set once the connection is on its way out: nothing more is queued or read.
    closing: Cell<bool>,
    /// How the writer shuts the socket after the last flush: `Write` lingers for the peer's FIN,
    /// `Both` (when the server stops) does not wait for it.
    close_how: Cell<Shutdown>,
    /// The logged-in user, if any.
    pub(crate) session: RefCell<Option<Session>>,
    /// Position in the core's member list while logged in.
    pub(crate) member_index: Cell<usize>,
    /// The peer's address, when it counts against `--max-connections-per-ip`.
    counted_ip: Option<IpAddr>,
    /// Core clock (ms) at accept, for the login timeout.
    accepted_ms: u64,
    /// Core clock (ms) of the last read, for keepalive.
    last_heard_ms: Cell<u64>,
    pinged: Cell<bool>,
    bucket: Cell<TokenBucket>,
    shared: std::sync::Arc<crate::core::Shared>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared.connections.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.counted_ip {
            self.shared.per_address.release(ip);
        }
    }
}

impl Connection {
    /// Wraps an accepted socket; the caller has already counted it in `core.shared.connections`.
    /// `counted_ip` is set when the caller counted the peer in `core.shared.per_address`.
    pub fn new(
        core: &Core,
        id: u64,
        stream: TcpStream,
        counted_ip: Option<IpAddr>,
    ) -> Rc<Connection> {
        let now = core.now_ms();
        Rc::new(Connection {
            id,
            stream,
            out: RefCell::new(OutQueue::default()),
            writing: Cell::new(false),
            closing: Cell::new(false),
            close_how: Cell::new(Shutdown::Write),
            session: RefCell::new(None),
            member_index: Cell::new(usize::MAX),
            counted_ip,
            accepted_ms: now,
            last_heard_ms: Cell::new(now),
            pinged: Cell::new(false),
            bucket: Cell::new(TokenBucket::new(core.config.rate_limit_burst, now)),
            shared: core.shared.clone(),
        })
    }

    pub fn is_logged_in(&self) -> bool {
        self.session.borrow().is_some()
    }

    pub fn accepted_ms(&self) -> u64 {
        self.accepted_ms
    }

    pub fn last_heard_ms(&self) -> u64 {
        self.last_heard_ms.get()
    }

    pub fn was_pinged(&self) -> bool {
        self.pinged.get()
    }

    pub fn mark_pinged(&self) {
        self.pinged.set(true);
    }

    /// Flood control for one inbound frame, timed by the read that brought it (frames of one read
    /// arrived together, and the clock is not read again per frame).
    pub fn take_token(&self, core: &Core) -> Verdict {
        let mut bucket = self.bucket.get();
        let verdict = bucket.take(
            self.last_heard_ms.get(),
            core.config.rate_limit,
            core.config.rate_limit_burst,
        );
        self.bucket.set(bucket);
        verdict
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Queues a frame. A client that owes more than the bound is cut off as a slow consumer: its
    /// queue is freed at once, it gets `SLOW_CONSUMER` if it ever reads again, and it is closed.
    pub fn send(self: &Rc<Self>, core: &Core, frame: OutFrame) {
        if self.closing.get() {
            return;
        }
        let pushed = self
            .out
            .borrow_mut()
            .push(frame, core.config.max_outbound_bytes);
        match pushed {
            Ok(()) => self.wake_writer(core),
            Err(Overflow) => {
                tracing::debug!(conn = self.id, "slow consumer cut off");
                self.out.borrow_mut().clear();
                let reason = "you did not read fast enough: your outbound queue passed its bound";
                self.fail(core, ErrorCode::SlowConsumer, reason);
            }
        }
    }

    /// Sends a reply that keeps the connection open.
    pub fn reply(self: &Rc<Self>, core: &Core, frame: Bytes) {
        self.send(core, OutFrame::new(frame));
    }

    /// Sends a closing error, then closes.
    pub fn fail(self: &Rc<Self>, core: &Core, code: ErrorCode, reason: &str) {
        self.finish(core, protocol::error(code, reason));
    }

    /// Queues a last frame past the bound, flushes it and closes: the peer gets the frame and a FIN.
    /// If the flush has not finished within the drain timeout, the socket is shut down regardless.
    pub fn finish(self: &Rc<Self>, core: &Core, last: Bytes) {
        if self.closing.replace(true) {
            return;
        }
        if !core.takes_input() {
            self.close_how.set(Shutdown::Both);
        }
        self.out.borrow_mut().push_unbounded(OutFrame::new(last));
        self.wake_writer(core);
        let weak: Weak<Connection> = Rc::downgrade(self);
        let grace: Duration = core.config.drain_timeout;
        tokio_uring::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(conn) = weak.upgrade() {
                conn.shutdown_now();
            }
        });
    }

    /// Ends both directions now: any pending read or write completes, and both tasks end.
    pub fn shutdown_now(&self) {
        self.closing.set(true);
        // ENOTCONN when the peer is already gone is fine: the goal is reached either way.
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    fn wake_writer(self: &Rc<Self>, core: &Core) {
        if !self.writing.replace(true) {
            core.writers.schedule(self.clone());
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Fills `batch` (empty) with the frames for the next `writev`. When the queue is empty it
    /// hands `batch` back unused: the writer then stops until more is queued, and a closing
    /// connection is shut down (FIN after the last byte).
    pub(crate) fn next_batch(
        &self,
        mut batch: Vec<OutFrame>,
    ) -> Result<Vec<OutFrame>, Vec<OutFrame>> {
        let mut out = self.out.borrow_mut();
        if out.is_empty() {
            out.release_memory();
            self.writing.set(false);
            if self.closing.get() {
                let _ = self.stream.shutdown(self.close_how.get());
            }
            return Err(batch);
        }
        out.take_batch(&mut batch);
        Ok(batch)
    }

    /// Accounts for a finished `writev` and returns the emptied batch vector. A failed write means
    /// the peer is gone: what is queued is dropped and the socket shut down.
    pub(crate) fn batch_written(
        &self,
        result: std::io::Result<usize>,
        mut batch: Vec<OutFrame>,
    ) -> Vec<OutFrame> {
        let mut out = self.out.borrow_mut();
        match result {
            Ok(written) => out.complete_batch(&mut batch, written),
            Err(error) => {
                tracing::debug!(conn = self.id, %error, "write failed");
                out.complete_batch(&mut batch, 0);
                out.clear();
                drop(out);
                self.shutdown_now();
            }
        }
        batch
    }
}

/// The reader task: reads, splits frames, hands them to the session, and cleans up at the end.
///
/// The read buffer adapts: it starts (and idles) at `--read-buffer-bytes`, doubles when a read fills
/// it (a busy sender, or a frame bigger than the buffer) up to the frame limit plus one idle buffer,
/// and goes back to the idle size once a read comes in small. An idle connection, the common case,
/// holds only the small buffer of its pending read.
pub async fn serve(core: Rc<Core>, conn: Rc<Connection>) {
    let mut buf: Vec<u8> = Vec::with_capacity(core.config.read_buffer_bytes);
    let mut decoder = FrameDecoder::new(core.config.max_frame_bytes);
    let mut small_reads = 0u8;
    loop {
        let (len, capacity) = (buf.len(), buf.capacity());
        let (result, slice) = conn.stream.read(buf.slice(len..capacity)).await;
        buf = slice.into_inner();
        let read = match result {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let filled = read == capacity - len;
        conn.last_heard_ms.set(core.now_ms());
        conn.pinged.set(false);
        if conn.is_closing() || !core.takes_input() {
            // A lingering close or a drain: read to keep the peer's writes from failing, ignore it.
            session::logout(&core, &conn);
            buf.clear();
            resize(&mut buf, &core, read, filled, &mut small_reads);
            continue;
        }
        while let Some(event) = decoder.next(&buf) {
            match event {
                Event::Frame(range) => session::handle_frame(&core, &conn, &buf[range]),
                Event::Invalid => conn.reply(
                    &core,
                    protocol::error(
                        ErrorCode::InvalidMessage,
                        "a line that is not one JSON object",
                    ),
                ),
                Event::TooLarge => {
                    let reason = format!(
                        "frames are limited to {} bytes",
                        core.config.max_frame_bytes
                    );
                    conn.fail(&core, ErrorCode::FrameTooLarge, &reason);
                }
            }
            if conn.is_closing() {
                break;
            }
        }
        if conn.is_closing() {
            session::logout(&core, &conn);
            buf.clear();
            decoder = FrameDecoder::new(core.config.max_frame_bytes);
        } else {
            decoder.discard_consumed(&mut buf);
        }
        resize(&mut buf, &core, read, filled, &mut small_reads);
        core.router.wait_for_room().await;
    }
    session::logout(&core, &conn);
    conn.closing.set(true);
    core.forget(&conn);
}

/// Sizes the read buffer for the next read from how much the last one brought (see [`serve`]).
/// A grown buffer shrinks only after `SMALL_READS_BEFORE_SHRINK` small reads in a row, so a busy
/// sender whose reads vary does not reallocate back and forth.
fn resize(buf: &mut Vec<u8>, core: &Core, last_read: usize, filled: bool, small_reads: &mut u8) {
    let idle = core.config.read_buffer_bytes;
    let capacity = buf.capacity();
    if filled || buf.len() == capacity {
        *small_reads = 0;
        let target = (capacity * 2).min(core.config.max_frame_bytes + idle);
        buf.reserve_exact(target.saturating_sub(buf.len()));
    } else if capacity > idle && last_read < idle / 2 && buf.len() <= idle / 2 {
        *small_reads += 1;
        if *small_reads >= SMALL_READS_BEFORE_SHRINK {
            *small_reads = 0;
            let mut small = Vec::with_capacity(idle);
            small.extend_from_slice(buf);
            *buf = small;
        }
    } else {
        *small_reads = 0;
    }
}

/// Consecutive small reads after which a grown read buffer goes back to its idle size.
const SMALL_READS_BEFORE_SHRINK: u8 = 8;
