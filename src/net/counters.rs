//! Counters that one core writes and any core reads: the metrics of the message path.
//!
//! Each core owns its counters, and only that core's thread ever writes them. An update is
//! therefore a plain load and store (`store(load + n)`, both `Relaxed`): on x86 a `mov`, no `lock`
//! prefix, and no cache line bounced between cores, so counting costs what incrementing a local
//! does. A `fetch_add` on a counter shared by all cores would cost a locked instruction and a
//! contended cache line per message. The scraping core reads every core's counters and sums them;
//! a read may miss updates in flight, never tear a value.
//!
//! [`NetCounters`] holds what this layer counts itself. Frames sent are counted by kind, which only
//! the layer above can name: it hands the connections a [`FrameTally`], as it hands them the
//! slow-consumer notice.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::net::Transport;

/// A count that only its owning core adds to.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning core may call this: two writers would lose updates.
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A level that only its owning core moves (connections open, bytes queued).
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Moves the level by `delta`; owning core only, as [`Counter::add`].
    pub fn add(&self, delta: i64) {
        self.0
            .store(self.0.load(Relaxed).wrapping_add(delta), Relaxed);
    }

    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Every transport, in the order [`PerTransport`] keeps them.
pub const TRANSPORTS: [Transport; 2] = [Transport::Tcp, Transport::WebSocket];

/// One value per transport, found without a lookup.
#[derive(Debug, Default)]
pub struct PerTransport<T>([T; 2]);

impl<T> PerTransport<T> {
    pub fn get(&self, transport: Transport) -> &T {
        &self.0[transport as usize]
    }

    pub fn get_mut(&mut self, transport: Transport) -> &mut T {
        &mut self.0[transport as usize]
    }

    pub fn iter(&self) -> impl Iterator<Item = (Transport, &T)> {
        TRANSPORTS.into_iter().zip(&self.0)
    }
}

/// Upper bounds (seconds) of the fan-out pass histogram: a pass to a few hundred connections takes
/// ~100 µs, one to the ~5,000 a core holds of a 10,000-user lobby 35-100 ms, and one that ends past
/// a second means the core is overloaded.
pub const PASS_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Durations by bucket, written by the owning core only.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Per bucket of [`PASS_BUCKETS`], not cumulative; the last counts what is past every bound.
    buckets: [Counter; PASS_BUCKETS.len() + 1],
    sum_nanos: Counter,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = PASS_BUCKETS.partition_point(|&bound| bound < seconds);
        self.buckets[bucket].add(1);
        self.sum_nanos.add(took.as_nanos() as u64);
    }

    /// Counts per bucket (the last past every bound) and the sum of durations in seconds.
    pub fn snapshot(&self) -> ([u64; PASS_BUCKETS.len() + 1], f64) {
        let counts = std::array::from_fn(|i| self.buckets[i].get());
        (counts, self.sum_nanos.get() as f64 / 1e9)
    }
}

/// What the network layer of one core counts.
#[derive(Debug, Default)]
pub struct NetCounters {
    pub bytes_in: PerTransport<Counter>,
    pub bytes_out: PerTransport<Counter>,
    /// Bytes owed to clients (queued or being written), over all connections of the core.
    pub outbound_queued: Gauge,
    /// Frames flood control refused.
    pub rate_limited: Counter,
    /// Writes that sent some of what they offered, not all (the socket filled up), by whether the
    /// connection is TLS ([`NetCounters::short_write`]). The rest goes out first next time, exactly
    /// as it was: over TLS, the tail of a sealed record.
    short_writes: [Counter; 2],
    /// How long each fan-out pass of the writer took.
    pub fan_out_passes: Histogram,
}

impl NetCounters {
    /// Counts a short write on a plain (`tls` false) or TLS connection.
    pub fn short_write(&self, tls: bool) {
        self.short_writes[usize::from(tls)].add(1);
    }

    /// Short writes on plain (`tls` false) or TLS connections.
    pub fn short_writes(&self, tls: bool) -> u64 {
        self.short_writes[usize::from(tls)].get()
    }
}

/// Counts frames handed to connections. The layer above names their kinds; it is called once per
/// reply and once per fan-out (with the number of recipients), never once per recipient.
pub trait FrameTally {
    fn sent(&self, transport: Transport, frame: &[u8], count: u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(100));
        histogram.observe(Duration::from_micros(101));
        histogram.observe(Duration::from_secs(2));
        let (counts, sum) = histogram.snapshot();
        assert_eq!((counts[0], counts[1], counts[13]), (1, 1, 1));
        assert_eq!(counts.iter().sum::<u64>(), 3);
        assert!((sum - 2.000201).abs() < 1e-9, "{sum}");
    }
}
