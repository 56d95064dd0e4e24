//! The core's writer: every connection's writes, driven by one task per core.
//!
//! A connection that has frames queued and no write in flight is scheduled here. The writer task
//! runs after the tasks that queued the frames (so everything queued in that turn leaves together),
//! starts one `writev` per scheduled connection, and when a write completes starts the next one if
//! more was queued meanwhile. The writes are futures in one `FuturesUnordered`, not a task each:
//! spawning and waking a task per write is the per-connection cost the fastest servers avoid, and
//! tasks are 128-byte-aligned allocations that fragment memory. No write is ever dropped before it
//! completes (tokio-uring cannot cancel one): the set owns them until they finish.

use std::cell::RefCell;
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
}

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
                if let Some(batch) = conn.next_batch() {
                    in_flight.push(write(conn, batch));
                }
            }
            tokio::select! {
                Some((conn, result, batch)) = in_flight.next(), if !in_flight.is_empty() => {
                    if let Some(batch) = conn.batch_written(result, batch) {
                        in_flight.push(write(conn, batch));
                    }
                }
                _ = self.wake.notified() => {}
            }
        }
    }
}

/// One `writev` of `batch` on `conn`'s socket.
async fn write(
    conn: Rc<Connection>,
    batch: Vec<OutFrame>,
) -> (Rc<Connection>, io::Result<usize>, Vec<OutFrame>) {
    let (result, batch) = conn.stream().writev(batch).await;
    (conn, result, batch)
}
