//! Messages between cores: one `flume` channel into each core, carrying batches.
//!
//! Cores share nothing on the message path; whatever one core must tell another goes through here.
//! Messages for another core are collected in a per-destination batch while this core works through
//! its ready tasks, and a flusher task sends each batch with one channel send once those tasks have
//! run. Waking a sleeping core costs microseconds, so it is paid once per batch, never per message.
//! A broadcast crosses to each other core once, as one shared `Bytes`.

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use tokio::sync::Notify;

use crate::user_id::UserId;

/// Messages queued for other cores, above which readers stop reading until the flusher catches up.
pub const CROSS_CORE_BACKLOG: usize = 64 * 1024;
/// Batches a core's inbox holds before senders wait.
pub const INBOX_BATCHES: usize = 1024;

/// What one core tells another.
#[derive(Debug)]
pub enum CoreMsg {
    /// A frame for every logged-in user of the receiving core.
    Broadcast(Bytes),
    /// A chat frame for one user of the receiving core, sent by `from`.
    Direct {
        to: UserId,
        from: UserId,
        frame: Bytes,
    },
    /// The direct message `from` sent to `recipient` found nobody; tell `from`.
    NotFound { from: UserId, recipient: UserId },
    /// From the server handle: stop taking input and begin the drain.
    Shutdown,
    /// From a draining core: it will send nothing more.
    Drained,
}

pub type Batch = Vec<CoreMsg>;
pub type Inbox = flume::Receiver<Batch>;
pub type Outbox = flume::Sender<Batch>;

/// One core's end of the cross-core channels.
pub struct Router {
    me: usize,
    peers: Vec<Outbox>,
    pending: RefCell<Vec<Batch>>,
    queued: Cell<usize>,
    /// Set once this core has said `Drained`: it promised to send nothing more.
    closed: Cell<bool>,
    flushing: Cell<bool>,
    flush_wanted: Notify,
    room: Notify,
}

impl Router {
    /// `peers[i]` is core i's inbox (this core's own included, unused).
    pub fn new(me: usize, peers: Vec<Outbox>) -> Router {
        let pending = peers.iter().map(|_| Vec::new()).collect();
        Router {
            me,
            peers,
            pending: RefCell::new(pending),
            queued: Cell::new(0),
            closed: Cell::new(false),
            flushing: Cell::new(false),
            flush_wanted: Notify::new(),
            room: Notify::new(),
        }
    }

    pub fn cores(&self) -> usize {
        self.peers.len()
    }

    /// Queues `msg` for `core`; it leaves with the next flush.
    pub fn send(&self, core: usize, msg: CoreMsg) {
        debug_assert_ne!(core, self.me, "a core does not message itself");
        if self.closed.get() {
            return;
        }
        self.pending.borrow_mut()[core].push(msg);
        if self.queued.replace(self.queued.get() + 1) == 0 {
            self.flush_wanted.notify_one();
        }
    }

    /// Queues one message for every other core.
    pub fn send_to_others(&self, mut make: impl FnMut() -> CoreMsg) {
        for core in 0..self.peers.len() {
            if core != self.me {
                self.send(core, make());
            }
        }
    }

    /// Drops whatever is sent from now on; what is already queued still leaves.
    pub fn close(&self) {
        self.closed.set(true);
    }

    /// True when readers should pause: other cores are not keeping up.
    pub fn congested(&self) -> bool {
        self.queued.get() > CROSS_CORE_BACKLOG
    }

    /// Waits until the backlog has been handed to the other cores.
    pub async fn wait_for_room(&self) {
        while self.congested() {
            self.room.notified().await;
        }
    }

    /// Waits until everything queued so far has been handed to the other cores.
    pub async fn settle(&self) {
        while self.queued.get() > 0 || self.flushing.get() {
            self.room.notified().await;
        }
    }

    /// Sends the pending batches whenever there are some. Runs for the life of the core.
    pub async fn run_flusher(&self) {
        loop {
            self.flush_wanted.notified().await;
            self.flush().await;
        }
    }

    /// Hands every pending batch to its core's inbox, waiting where an inbox is full.
    async fn flush(&self) {
        let batches: Vec<(usize, Batch)> = {
            let mut pending = self.pending.borrow_mut();
            pending
                .iter_mut()
                .enumerate()
                .filter(|(_, batch)| !batch.is_empty())
                .map(|(core, batch)| (core, std::mem::take(batch)))
                .collect()
        };
        self.queued.set(0);
        self.flushing.set(true);
        for (core, batch) in batches {
            // A core that has exited drops its inbox; what was meant for it has nowhere to go.
            let _ = self.peers[core].send_async(batch).await;
        }
        self.flushing.set(false);
        self.room.notify_waiters();
    }
}
