//! The core's writer: every connection's writes, driven by one task per core.
//!
//! A connection that has frames queued and no write in progress is scheduled here. The writer task
//! runs after the tasks that queued the frames, so everything queued in that turn leaves together,
//! one write per connection carrying all of its queue. How the writes go out depends on the turn:
//!
//! - A fan-out pass (a turn reaching at least `--inline-send-min` connections, as a broadcast does)
//!   is sent inline, with one nonblocking `sendmsg` per connection. Through io_uring the same pass
//!   was submitted in queue-full chunks whose completions were reaped about once per pass (traced
//!   with the io_uring tracepoints; see docs/ARCHITECTURE.md); inline, broadcast p50 at 1 million
//!   deliveries/s fell from ~190 to ~110 ms.
//! - Smaller turns (direct messages) go through io_uring as one `writev` per connection.
//! - Whatever finds its socket full goes through io_uring too: the `writev` waits in the kernel for
//!   room, and the connection's next writes follow through io_uring until its queue is empty.
//!
//! A pass over thousands of connections takes tens of milliseconds, and the rest of the core must
//! not wait for it. Every `PASS_SLICE` of sending the pass stops at a [`ParkPoint`]: the core's
//! other tasks run, the runtime parks once (re-armed reads reach the kernel, finished reads are
//! reaped), and the writer then serves first what arrived meanwhile: finished io_uring writes,
//! connections newly scheduled by a small turn (direct messages, replies), and connections still
//! waiting for their place in the pass that got a frame of their own, a reply or a direct message
//! (they are *hurried*: their whole queue goes out at once, in order, and their place in the pass
//! finds it empty). A fan-out frame never hurries a connection: thousands of early sends would
//! break up the batching that carries several broadcasts in one write (tried: at 100 broadcasts/s
//! to 10,000 clients the server fell behind, p50 2 s).
//!
//! The io_uring writes are futures in one `FuturesUnordered`, not a task each. No write is ever
//! dropped before it completes (tokio-uring cannot cancel one): the set owns them until they finish.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{FutureExt, LocalBoxFuture};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use crate::net::connection::{Connection, WriteState};
use crate::net::counters::NetCounters;
use crate::net::outbound::OutFrame;
use crate::net::park::ParkPoint;

/// Connections waiting for their queue to be sent.
pub struct Writers {
    /// Turns with at least this many connections are sent inline (`--inline-send-min`).
    inline_send_min: usize,
    scheduled: RefCell<Vec<Rc<Connection>>>,
    /// Connections waiting in the running pass that got more queued: they go out first.
    hurried: RefCell<Vec<Rc<Connection>>>,
    /// Set while a fan-out pass runs.
    passing: Cell<bool>,
    park_point: ParkPoint,
    wake: Notify,
    /// Emptied batch vectors, reused so a write does not cost an allocation for its frame list.
    spare_batches: RefCell<Vec<Vec<OutFrame>>>,
    /// The iovec array of the inline `sendmsg`, reused across calls.
    iovecs: RefCell<Vec<libc::iovec>>,
    /// Writes started and frames they carried: their ratio is the coalescing achieved, the figure
    /// that decides CPU per delivery. Logged when the core stops.
    writes: Cell<u64>,
    frames: Cell<u64>,
    /// The core's counters; the writer times fan-out passes into them.
    pub counters: Arc<NetCounters>,
}

/// The io_uring writes under way.
type InFlight = FuturesUnordered<LocalBoxFuture<'static, Written>>;

/// Spare batch vectors kept per core, and the largest kept (in frames; 8 bytes each).
const SPARE_BATCHES: usize = 1024;
const SPARE_BATCH_CAPACITY: usize = 64;

/// How long a pass sends before it stops at a park point: a pass over thousands of connections
/// takes tens of milliseconds, and readers and direct messages must not wait for all of it. A stop
/// costs four syscalls. A time, not a count: a send costs ~1 µs when the receivers keep up and
/// 10-20 µs when they share the CPUs, and a count fit for one is wrong for the other. Measured
/// (10,000 clients, docs/BENCHMARKS.md "Mixed traffic"): every 64 sends, the probe's direct p99 in
/// the mix was 5.5-6.7 ms; every 16, 3.1-4.3 ms but 1.04-1.06 µs of CPU per broadcast delivery;
/// every 200 µs, 2.8-3.2 ms at 1.01-1.03 µs.
const PASS_SLICE: Duration = Duration::from_micros(200);
/// Sends between two looks at the clock.
const CLOCK_EVERY: usize = 8;

impl Writers {
    /// A writer that sends turns of at least `inline_send_min` connections inline. Smaller turns go
    /// through io_uring, whose batched submission costs less per write when writes come a few at a
    /// time: at 100,000 direct messages/s, 8.6-9.0 µs of server CPU per delivery with the default
    /// 256, 10.4 µs with every write inline, 9.4 µs with 1024. Must be called inside the core's
    /// runtime.
    pub fn new(
        inline_send_min: usize,
        ring: Option<RawFd>,
        counters: Arc<NetCounters>,
    ) -> io::Result<Writers> {
        Ok(Writers {
            inline_send_min,
            scheduled: RefCell::default(),
            hurried: RefCell::default(),
            passing: Cell::new(false),
            park_point: ParkPoint::new(ring)?,
            wake: Notify::new(),
            spare_batches: RefCell::default(),
            iovecs: RefCell::default(),
            writes: Cell::default(),
            frames: Cell::default(),
            counters,
        })
    }

    /// Asks for a write on `conn`, which has frames queued and no write in progress.
    pub fn schedule(&self, conn: Rc<Connection>) {
        let mut scheduled = self.scheduled.borrow_mut();
        if scheduled.is_empty() {
            self.wake.notify_one();
        }
        scheduled.push(conn);
    }

    /// Asks for `conn`, waiting for its turn, to be sent early: true when a pass is running (the
    /// writer will), false otherwise (its turn comes before any yield anyway).
    pub fn hurry(&self, conn: &Rc<Connection>) -> bool {
        if self.passing.get() {
            self.hurried.borrow_mut().push(conn.clone());
        }
        self.passing.get()
    }

    /// Runs for the life of the core.
    pub async fn run(&self) {
        let mut in_flight = InFlight::new();
        loop {
            let turn = std::mem::take(&mut *self.scheduled.borrow_mut());
            if turn.len() >= self.inline_send_min {
                self.pass(turn, &mut in_flight).await;
            } else {
                for conn in turn {
                    self.start_write(conn, &mut in_flight);
                }
            }
            tokio::select! {
                Some(written) = in_flight.next(), if !in_flight.is_empty() => {
                    self.written(written, &mut in_flight);
                }
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Sends a fan-out pass inline, stopping every `PASS_SLICE` to let the core work and
    /// to serve what arrived meanwhile before the rest of the pass.
    async fn pass(&self, turn: Vec<Rc<Connection>>, in_flight: &mut InFlight) {
        let started = Instant::now();
        let mut pass = VecDeque::from(turn);
        self.passing.set(true);
        let mut sends = 0;
        let mut slice_start = Instant::now();
        loop {
            let hurried = self.hurried.borrow_mut().pop();
            if let Some(conn) = hurried {
                if conn.write_state() == WriteState::Hurried {
                    conn.hurried_sent();
                    self.send_early(&conn);
                    sends += 1;
                }
            } else if let Some(conn) = pass.pop_front() {
                if let Some(rest) = self.send_now(&conn) {
                    in_flight.push(self.write(conn, rest));
                }
                sends += 1;
            } else {
                break;
            }
            if sends % CLOCK_EVERY == 0 && slice_start.elapsed() >= PASS_SLICE {
                sends = 0;
                self.park_point.pass().await;
                slice_start = Instant::now();
                while let Some(Some(written)) = in_flight.next().now_or_never() {
                    self.written(written, in_flight);
                }
                // A small turn (direct messages, replies) goes next; another fan-out, after this.
                let arrived = std::mem::take(&mut *self.scheduled.borrow_mut());
                if arrived.len() < self.inline_send_min {
                    for conn in arrived.into_iter().rev() {
                        pass.push_front(conn);
                    }
                } else {
                    pass.extend(arrived);
                }
            }
        }
        self.passing.set(false);
        self.counters.fan_out_passes.observe(started.elapsed());
    }

    /// Starts an io_uring write of `conn`'s queue, if anything is queued.
    fn start_write(&self, conn: Rc<Connection>, in_flight: &mut InFlight) {
        if let Some(batch) = self.take_batch(&conn, self.spare_batch()) {
            in_flight.push(self.write(conn, batch));
        }
    }

    /// Accounts for a finished io_uring write and starts the next, if more was queued meanwhile.
    fn written(&self, (conn, result, batch): Written, in_flight: &mut InFlight) {
        let emptied = conn.batch_written(result, batch);
        if let Some(batch) = self.take_batch(&conn, emptied) {
            in_flight.push(self.write(conn, batch));
        }
    }

    /// (writes, frames written) since the core started.
    pub fn totals(&self) -> (u64, u64) {
        (self.writes.get(), self.frames.get())
    }

    /// Sends `conn`'s queue with nonblocking `sendmsg` calls until it is empty. When the socket is
    /// full, returns the batch still to send, for io_uring to write once there is room.
    fn send_now(&self, conn: &Connection) -> Option<Vec<OutFrame>> {
        loop {
            let batch = self.take_batch(conn, self.spare_batch())?;
            let bytes: usize = batch.iter().map(OutFrame::len).sum();
            let sent = self.send_batch(conn.stream().as_raw_fd(), &batch);
            match sent {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Some(batch),
                Ok(written) if written < bytes => {
                    // The socket filled up: the rest goes back to the queue and waits for room.
                    let emptied = conn.batch_written(Ok(written), batch);
                    return conn.next_batch(emptied).ok();
                }
                result => {
                    let emptied = conn.batch_written(result, batch);
                    self.recycle(emptied);
                }
            }
        }
    }

    /// Sends a hurried connection's queue ahead of its place in the pass. What finds the socket
    /// full goes back to the queue, in order, and waits for that place.
    fn send_early(&self, conn: &Connection) {
        loop {
            let batch = match conn.early_batch(self.spare_batch()) {
                Ok(batch) => batch,
                Err(unused) => return self.recycle(unused),
            };
            let bytes: usize = batch.iter().map(OutFrame::len).sum();
            let sent = match self.send_batch(conn.stream().as_raw_fd(), &batch) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(0),
                result => result,
            };
            let whole = matches!(sent, Ok(written) if written == bytes);
            self.recycle(conn.batch_written(sent, batch));
            if !whole {
                return;
            }
        }
    }

    /// One nonblocking `sendmsg` of `batch` on `fd`, counted.
    fn send_batch(&self, fd: i32, batch: &[OutFrame]) -> io::Result<usize> {
        self.count(batch);
        let mut iovecs = self.iovecs.borrow_mut();
        iovecs.clear();
        iovecs.extend(batch.iter().map(|frame| libc::iovec {
            iov_base: frame.as_ptr() as *mut libc::c_void,
            iov_len: frame.len(),
        }));
        // SAFETY: an all-zero msghdr is valid (no address, no control data).
        let mut message: libc::msghdr = unsafe { std::mem::zeroed() };
        message.msg_iov = iovecs.as_mut_ptr();
        message.msg_iovlen = iovecs.len();
        loop {
            // SAFETY: the iovecs point into frames that `batch` keeps alive for the whole call, and
            // MSG_DONTWAIT keeps the call from blocking the core on a full socket.
            let sent =
                unsafe { libc::sendmsg(fd, &message, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
            if sent >= 0 {
                return Ok(sent as usize);
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// Fills `vector` with `conn`'s next batch. When the queue is empty there is nothing to write,
    /// and the vector goes back to the pool.
    fn take_batch(&self, conn: &Connection, vector: Vec<OutFrame>) -> Option<Vec<OutFrame>> {
        match conn.next_batch(vector) {
            Ok(batch) => Some(batch),
            Err(unused) => {
                self.recycle(unused);
                None
            }
        }
    }

    /// Starts an io_uring `writev` of `batch` on `conn`'s socket. On a full socket it completes
    /// once the kernel has found room for some of it.
    fn write(
        &self,
        conn: Rc<Connection>,
        batch: Vec<OutFrame>,
    ) -> LocalBoxFuture<'static, Written> {
        self.count(&batch);
        write(conn, batch).boxed_local()
    }

    fn count(&self, batch: &[OutFrame]) {
        self.writes.set(self.writes.get() + 1);
        self.frames.set(self.frames.get() + batch.len() as u64);
    }

    fn spare_batch(&self) -> Vec<OutFrame> {
        self.spare_batches.borrow_mut().pop().unwrap_or_default()
    }

    /// Keeps an emptied batch vector for the next write, unless the pool is full or it grew large.
    fn recycle(&self, batch: Vec<OutFrame>) {
        let mut spare = self.spare_batches.borrow_mut();
        if spare.len() < SPARE_BATCHES && batch.capacity() <= SPARE_BATCH_CAPACITY {
            spare.push(batch);
        }
    }
}

/// A finished write: the connection, what `writev` returned, and the batch back.
type Written = (Rc<Connection>, io::Result<usize>, Vec<OutFrame>);

/// One io_uring `writev` of `batch` on `conn`'s socket.
async fn write(conn: Rc<Connection>, batch: Vec<OutFrame>) -> Written {
    let (result, batch) = conn.stream().writev(batch).await;
    (conn, result, batch)
}
