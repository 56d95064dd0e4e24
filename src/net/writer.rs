//! The core's writer: every connection's writes, driven by one task per core.
//!
//! A connection that has frames queued and no write in progress is scheduled here. The writer task
//! runs after the tasks that queued the frames, so everything queued in that turn leaves together,
//! one write per connection carrying all of its queue. How the writes go out depends on the turn:
//!
//! - A fan-out pass (a turn reaching at least `--inline-send-min` connections, as a broadcast does)
//!   is sent inline, with one nonblocking `sendmsg` per connection, yielding to the core's other
//!   tasks every `SENDS_PER_TURN`. Through io_uring the same pass is submitted in queue-full chunks, and
//!   tokio-uring reaps their completions only when the ring's fd is reported readable, which under
//!   load happened about once per pass: a sender's next message then waited in its socket for the
//!   whole pass (traced with the io_uring tracepoints; see docs/ARCHITECTURE.md). Inline, the
//!   ring carries only reads, and broadcast p50 at 1 million deliveries/s fell from ~190 to ~110 ms.
//! - Smaller turns (direct messages) go through io_uring as one `writev` per connection.
//! - Whatever finds its socket full goes through io_uring too: the `writev` waits in the kernel for
//!   room, and the connection's next writes follow through io_uring until its queue is empty.
//!
//! The io_uring writes are futures in one `FuturesUnordered`, not a task each. No write is ever
//! dropped before it completes (tokio-uring cannot cancel one): the set owns them until they finish.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use crate::net::connection::Connection;
use crate::net::outbound::OutFrame;

/// Connections waiting for their queue to be sent.
pub struct Writers {
    /// Turns with at least this many connections are sent inline (`--inline-send-min`).
    inline_send_min: usize,
    scheduled: RefCell<Vec<Rc<Connection>>>,
    wake: Notify,
    /// Emptied batch vectors, reused so a write does not cost an allocation for its frame list.
    spare_batches: RefCell<Vec<Vec<OutFrame>>>,
    /// The iovec array of the inline `sendmsg`, reused across calls.
    iovecs: RefCell<Vec<libc::iovec>>,
    /// Writes started and frames they carried: their ratio is the coalescing achieved, the figure
    /// that decides CPU per delivery. Logged when the core stops.
    writes: Cell<u64>,
    frames: Cell<u64>,
}

/// Spare batch vectors kept per core, and the largest kept (in frames; 8 bytes each).
const SPARE_BATCHES: usize = 1024;
const SPARE_BATCH_CAPACITY: usize = 64;

/// Connections the writer sends to before it lets the core's other tasks run: a pass over
/// thousands of connections takes tens of milliseconds, and readers must not wait for all of it.
const SENDS_PER_TURN: usize = 64;

impl Writers {
    /// A writer that sends turns of at least `inline_send_min` connections inline. Smaller turns go
    /// through io_uring, whose batched submission costs less per write when writes come a few at a
    /// time: at 100,000 direct messages/s, 8.6-9.0 µs of server CPU per delivery with the default
    /// 256, 10.4 µs with every write inline, 9.4 µs with 1024.
    pub fn new(inline_send_min: usize) -> Writers {
        Writers {
            inline_send_min,
            scheduled: RefCell::default(),
            wake: Notify::new(),
            spare_batches: RefCell::default(),
            iovecs: RefCell::default(),
            writes: Cell::default(),
            frames: Cell::default(),
        }
    }

    /// Asks for a write on `conn`, which has frames queued and no write in progress.
    pub fn schedule(&self, conn: Rc<Connection>) {
        let mut scheduled = self.scheduled.borrow_mut();
        if scheduled.is_empty() {
            self.wake.notify_one();
        }
        scheduled.push(conn);
    }

    /// Runs for the life of the core.
    pub async fn run(&self) {
        let mut in_flight = FuturesUnordered::new();
        loop {
            let scheduled = std::mem::take(&mut *self.scheduled.borrow_mut());
            let fan_out = scheduled.len() >= self.inline_send_min;
            for (started, conn) in scheduled.into_iter().enumerate() {
                if fan_out {
                    if let Some(rest) = self.send_now(&conn) {
                        in_flight.push(self.write(conn, rest));
                    }
                    if (started + 1) % SENDS_PER_TURN == 0 {
                        tokio::task::yield_now().await;
                    }
                } else if let Some(batch) = self.take_batch(&conn, self.spare_batch()) {
                    in_flight.push(self.write(conn, batch));
                }
            }
            tokio::select! {
                Some((conn, result, batch)) = in_flight.next(), if !in_flight.is_empty() => {
                    let emptied = conn.batch_written(result, batch);
                    if let Some(batch) = self.take_batch(&conn, emptied) {
                        in_flight.push(self.write(conn, batch));
                    }
                }
                _ = self.wake.notified() => {}
            }
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
    ) -> impl std::future::Future<Output = Written> {
        self.count(&batch);
        write(conn, batch)
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
