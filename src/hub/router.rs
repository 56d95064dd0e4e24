//! Messages between cores: one `flume` channel into each core, carrying batches.
//!
//! Cores share nothing on the message path; whatever one core must tell another goes through here.
//! Messages for another core are collected in a per-destination batch while this core works through
//! its ready tasks, and a flusher task sends each batch with one channel send once those tasks have
//! run. Waking a sleeping core costs microseconds, so it is paid once per batch, never per message.
//! The router is generic over what it carries; the chat layer defines its messages
//! (`chat::ShardMsg`). Between two cores, messages arrive in the order they were sent: the
//! room and drain guarantees rest on that.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use tokio::sync::Notify;

use crate::net::counters::Counter;

/// Messages queued for other cores, above which readers stop reading until the flusher catches up.
pub const CROSS_CORE_BACKLOG: usize = 64 * 1024;
/// Batches a core's inbox holds before senders wait.
pub const INBOX_BATCHES: usize = 1024;

/// What arrives in a core's inbox: a message of the layer above, or one of the two drain signals.
#[derive(Debug)]
pub enum Mail<M> {
    Message(M),
    /// From the server handle: stop taking input and begin the drain.
    Shutdown,
    /// From a draining core, once per drain round: everything it will send in this round was
    /// sent before this.
    Drained {
        from: usize,
    },
}

pub type Batch<M> = Vec<Mail<M>>;
pub type Inbox<M> = flume::Receiver<Batch<M>>;
pub type Outbox<M> = flume::Sender<Batch<M>>;

/// One core's end of the cross-core channels.
pub struct Router<M> {
    me: usize,
    peers: Vec<Outbox<M>>,
    pending: RefCell<Vec<Batch<M>>>,
    queued: Cell<usize>,
    /// Set once the drain is over: nothing sent after it is needed by anyone.
    closed: Cell<bool>,
    flushing: Cell<bool>,
    flush_wanted: Notify,
    room: Notify,
    /// Messages (and drain signals) handed to other cores, counted per batch.
    sent: Arc<Counter>,
}

impl<M> Router<M> {
    /// `peers[i]` is core i's inbox (this core's own included, unused). `sent` counts what this
    /// core sends the others.
    pub fn new(me: usize, peers: Vec<Outbox<M>>, sent: Arc<Counter>) -> Router<M> {
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
            sent,
        }
    }

    pub fn cores(&self) -> usize {
        self.peers.len()
    }

    /// This core's index.
    pub fn me(&self) -> usize {
        self.me
    }

    /// Queues `msg` for `core`; it leaves with the next flush.
    pub fn send(&self, core: usize, msg: M) {
        self.post(core, Mail::Message(msg));
    }

    /// Queues one message for every other core.
    pub fn send_to_others(&self, mut make: impl FnMut() -> M) {
        for core in self.others() {
            self.send(core, make());
        }
    }

    /// Tells every other core that this one has finished a drain round: all it sent in the round
    /// is queued before this.
    pub fn announce_drained(&self) {
        for core in self.others() {
            self.post(core, Mail::Drained { from: self.me });
        }
    }

    /// Drops whatever is sent from now on; what is already queued still leaves.
    pub fn close(&self) {
        self.closed.set(true);
    }

    fn others(&self) -> impl Iterator<Item = usize> {
        let me = self.me;
        (0..self.peers.len()).filter(move |&core| core != me)
    }

    fn post(&self, core: usize, mail: Mail<M>) {
        debug_assert_ne!(core, self.me, "a core does not message itself");
        if self.closed.get() {
            return;
        }
        self.pending.borrow_mut()[core].push(mail);
        if self.queued.replace(self.queued.get() + 1) == 0 {
            self.flush_wanted.notify_one();
        }
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
        let batches: Vec<(usize, Batch<M>)> = {
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
            self.sent.add(batch.len() as u64);
            // A core that has exited drops its inbox; what was meant for it has nowhere to go.
            let _ = self.peers[core].send_async(batch).await;
        }
        self.flushing.set(false);
        self.room.notify_waiters();
    }
}
