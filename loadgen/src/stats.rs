//! Measurements kept per worker thread and merged at the end of a round.
//!
//! Every client task of a thread records into one `ThreadStats` (shared through `Rc<RefCell>` on
//! that thread alone), so there is one histogram per thread, not per client, and no locking. The
//! few counters the main thread polls while a run goes on (`Shared`) are atomics beside them.

use crate::mixed::Mix;
use crate::stamp::Stamp;
use hdrhistogram::Histogram;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU64;

/// Counters the main thread polls for progress, settling and draining.
#[derive(Default)]
pub struct Shared {
    pub bytes: AtomicU64,
    pub measured: AtomicU64,
    pub connected: AtomicU64,
    pub failed: AtomicU64,
    pub disconnected: AtomicU64,
}

/// A new latency histogram in nanoseconds, 3 significant digits, 1 µs to 1 hour (auto-resizing).
pub fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(1_000, 3_600_000_000_000, 3).expect("histogram bounds");
    h.auto(true);
    h
}

/// The range of global message numbers that a round measures: warmup messages are below `start`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    pub fn contains(&self, seq: u64) -> bool {
        seq >= self.start && seq < self.end
    }
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Fan-out tracking is skipped above this many measured messages (memory: 16 B per message per thread).
pub const FANOUT_MAX_MESSAGES: u64 = 20_000_000;

/// What one worker thread saw during one round.
pub struct ThreadStats {
    pub window: Window,
    /// Delivery latency (receive time minus intended send time), ns.
    pub latency: Histogram<u64>,
    /// Measured deliveries, duplicates excluded.
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// Room seq gaps (uring-chat rooms): deliveries whose seq skipped past the next one.
    pub order_violations: u64,
    /// Per measured message: the latest delivery latency seen on this thread, and how many deliveries.
    pub fanout: Vec<(u64, u32)>,
    /// Error frames by code.
    pub errors: BTreeMap<String, u64>,
    /// Chat frames that were not ours.
    pub foreign: u64,
    /// `--pattern mixed`: how to tell a stamp's kind, and the figures by `mixed::Kind`.
    pub mix: Option<Mix>,
    pub by_kind: [KindStats; 2],
    /// `presence` frames (and their bytes, newline included) reading clients got this round.
    pub presence_frames: u64,
    pub presence_bytes: u64,
    /// Measured deliveries by the receiver's target (index into the `--hosts` list).
    pub received_by_host: Vec<u64>,
}

/// One kind's share of a mixed round's deliveries.
pub struct KindStats {
    pub latency: Histogram<u64>,
    pub received: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
}

impl Default for KindStats {
    fn default() -> Self {
        KindStats {
            latency: new_histogram(),
            received: 0,
            duplicated: 0,
            out_of_order: 0,
        }
    }
}

impl KindStats {
    fn merge(&mut self, o: &KindStats) {
        self.latency.add(&o.latency).expect("histograms merge");
        self.received += o.received;
        self.duplicated += o.duplicated;
        self.out_of_order += o.out_of_order;
    }
}

impl ThreadStats {
    pub fn new(window: Window) -> Self {
        let fanout = if window.len() <= FANOUT_MAX_MESSAGES {
            vec![(0, 0); window.len() as usize]
        } else {
            Vec::new()
        };
        ThreadStats {
            window,
            latency: new_histogram(),
            received: 0,
            duplicated: 0,
            out_of_order: 0,
            order_violations: 0,
            fanout,
            errors: BTreeMap::new(),
            foreign: 0,
            mix: None,
            by_kind: Default::default(),
            presence_frames: 0,
            presence_bytes: 0,
            received_by_host: Vec::new(),
        }
    }

    /// Splits this round's figures by kind as well (`--pattern mixed`).
    pub fn with_mix(mut self, mix: Option<Mix>) -> Self {
        self.mix = mix;
        self
    }

    /// Records one delivery received at `now_ns`; returns whether it counted as a measured delivery.
    pub fn record(&mut self, stamp: Stamp, now_ns: u64, order: &mut SeqTracker) -> bool {
        let verdict = order.observe(stamp.sender, stamp.seq);
        self.count(stamp, now_ns, verdict)
    }

    /// Records one delivery whose order verdict is already known (rooms judge by the room's seq).
    pub fn count(&mut self, stamp: Stamp, now_ns: u64, verdict: Order) -> bool {
        if !self.window.contains(stamp.seq) {
            return false;
        }
        let kind = self.mix.map(|m| m.kind(stamp.seq) as usize);
        match verdict {
            Order::Duplicate => {
                self.duplicated += 1;
                if let Some(k) = kind {
                    self.by_kind[k].duplicated += 1;
                }
                return false;
            }
            Order::OutOfOrder => {
                self.out_of_order += 1;
                if let Some(k) = kind {
                    self.by_kind[k].out_of_order += 1;
                }
            }
            Order::Gap => self.order_violations += 1,
            Order::InOrder => {}
        }
        self.received += 1;
        let lat = now_ns.saturating_sub(stamp.intended_ns).max(1);
        self.latency.saturating_record(lat);
        if let Some(k) = kind {
            self.by_kind[k].received += 1;
            self.by_kind[k].latency.saturating_record(lat);
        }
        if let Some(slot) = self
            .fanout
            .get_mut((stamp.seq - self.window.start) as usize)
        {
            slot.0 = slot.0.max(lat);
            slot.1 += 1;
        }
        true
    }

    /// Adds `n` measured deliveries to the count of target `host`.
    pub fn count_on_host(&mut self, host: usize, n: u64) {
        if self.received_by_host.len() <= host {
            self.received_by_host.resize(host + 1, 0);
        }
        self.received_by_host[host] += n;
    }

    pub fn count_error(&mut self, code: &[u8]) {
        let code = String::from_utf8_lossy(code).into_owned();
        *self.errors.entry(code).or_insert(0) += 1;
    }

    /// Adds another thread's figures to these.
    pub fn merge(&mut self, other: &ThreadStats) {
        self.latency.add(&other.latency).expect("histograms merge");
        self.received += other.received;
        self.duplicated += other.duplicated;
        self.out_of_order += other.out_of_order;
        self.order_violations += other.order_violations;
        self.foreign += other.foreign;
        self.presence_frames += other.presence_frames;
        self.presence_bytes += other.presence_bytes;
        for (a, b) in self.by_kind.iter_mut().zip(&other.by_kind) {
            a.merge(b);
        }
        if self.fanout.len() == other.fanout.len() {
            for (a, b) in self.fanout.iter_mut().zip(&other.fanout) {
                a.0 = a.0.max(b.0);
                a.1 += b.1;
            }
        } else {
            self.fanout.clear();
        }
        for (host, &n) in other.received_by_host.iter().enumerate() {
            self.count_on_host(host, n);
        }
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
    }
}

/// How a delivery relates to the previous one from the same sender on the same connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Order {
    InOrder,
    /// The same sequence number as the last one: delivered twice.
    Duplicate,
    /// Older than the last one seen.
    OutOfOrder,
    /// Past the next one expected: messages in between were skipped (room seq only).
    Gap,
}

/// Last sequence number seen per sender, on one receiving connection. A dense vector for the usual
/// handful of senders, a map when there are many (a vector of 10,000 senders × 10,000 receivers
/// would be 800 MB).
pub enum SeqTracker {
    Dense(Vec<u64>),
    Sparse(HashMap<u32, u64>),
}

const UNSEEN: u64 = u64::MAX;
const DENSE_MAX_SENDERS: usize = 64;

impl SeqTracker {
    pub fn new(senders: usize) -> Self {
        if senders <= DENSE_MAX_SENDERS {
            SeqTracker::Dense(vec![UNSEEN; senders])
        } else {
            SeqTracker::Sparse(HashMap::new())
        }
    }

    pub fn observe(&mut self, sender: u32, seq: u64) -> Order {
        let last = match self {
            SeqTracker::Dense(v) => {
                let i = sender as usize;
                if i >= v.len() {
                    v.resize(i + 1, UNSEEN);
                }
                &mut v[i]
            }
            SeqTracker::Sparse(m) => m.entry(sender).or_insert(UNSEEN),
        };
        if *last == UNSEEN || seq > *last {
            *last = seq;
            Order::InOrder
        } else if seq == *last {
            Order::Duplicate
        } else {
            Order::OutOfOrder
        }
    }
}
