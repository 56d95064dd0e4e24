//! The core's writer: every connection's writes, driven by one task per core.
//!
//! A connection that has frames queued and no write in flight is scheduled here. The writer task
//! runs after the tasks that queued the frames (so everything queued in that turn leaves together),
//! starts one `writev` per scheduled connection, and when a write completes starts the next one if
//! more was queued meanwhile. The writes are futures in one `FuturesUnordered`, not a task each:
//! spawning and waking a task per write is the per-connection cost the fastest servers avoid, and
//! tasks are 128-byte-aligned allocations that fragment memory. No write is ever dropped before it
//! completes (tokio-uring cannot cancel one): the set owns them until they finish.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::Notify;

use crate::connection::Connection;
use crate::outbound::OutFrame;

/// Connections waiting for their next write to start.
#[derive(Default)]
pub struct Writers {
    scheduled: RefCell<Vec<Rc<Connection>>>,
    wake: Notify,
    /// Emptied batch vectors, reused so a write does not cost an allocation for its iovec list.
    spare_batches: RefCell<Vec<Vec<OutFrame>>>,
    /// `writev` calls started and frames they carried: their ratio is the coalescing achieved,
    /// the figure that decides CPU per delivery. Logged when the core stops.
    writes: Cell<u64>,
    frames: Cell<u64>,
}

/// Spare batch vectors kept per core, and the largest kept (in frames; 8 bytes each).
const SPARE_BATCHES: usize = 1024;
const SPARE_BATCH_CAPACITY: usize = 64;

impl Writers {
    /// Asks for a write on `conn`, which has frames queued and no write in flight.
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
            for conn in scheduled {
                match conn.next_batch(self.spare_batch()) {
                    Ok(batch) => in_flight.push(self.write(conn, batch)),
                    Err(unused) => self.recycle(unused),
                }
            }
            tokio::select! {
                Some((conn, result, batch)) = in_flight.next(), if !in_flight.is_empty() => {
                    let emptied = conn.batch_written(result, batch);
                    match conn.next_batch(emptied) {
                        Ok(batch) => in_flight.push(self.write(conn, batch)),
                        Err(unused) => self.recycle(unused),
                    }
                }
                _ = self.wake.notified() => {}
            }
        }
    }

    /// (`writev` calls, frames written) since the core started.
    pub fn totals(&self) -> (u64, u64) {
        (self.writes.get(), self.frames.get())
    }

    /// Starts one `writev` of `batch` on `conn`'s socket, counting it.
    fn write(
        &self,
        conn: Rc<Connection>,
        batch: Vec<OutFrame>,
    ) -> impl std::future::Future<Output = Written> {
        self.writes.set(self.writes.get() + 1);
        self.frames.set(self.frames.get() + batch.len() as u64);
        write(conn, batch)
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

/// One `writev` of `batch` on `conn`'s socket.
async fn write(conn: Rc<Connection>, batch: Vec<OutFrame>) -> Written {
    let (result, batch) = conn.stream().writev(batch).await;
    (conn, result, batch)
}
