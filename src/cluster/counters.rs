//! What the cluster counts for `/metrics`. Most counters are written by the bridge thread alone;
//! `refused` and `queue_full` by whichever core was refused, which only happens while the cluster
//! is unreachable or overloaded, never per delivered message.

use std::sync::atomic::{AtomicU64, Ordering};

/// A counter any thread may bump.
#[derive(Debug, Default)]
pub struct Tally(AtomicU64);

impl Tally {
    pub fn bump(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level the bridge sets and any thread reads.
#[derive(Debug, Default)]
pub struct Level(AtomicU64);

impl Level {
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct ClusterCounters {
    /// Room subjects this node is subscribed to now (rooms with local members).
    pub room_subscriptions: Level,
    /// Messages this node published to others (a lobby broadcast counts once, whatever the nodes).
    pub published: Tally,
    /// Messages from other nodes handed to the local cores.
    pub received: Tally,
    /// Messages that arrived on the subjects of rooms this node has members of.
    pub room_received: Tally,
    /// Rooms whose dead owner this node replaced.
    pub rooms_moved: Tally,
    /// Messages dropped on arrival because their (origin, seq) had been seen already.
    pub duplicates: Tally,
    /// Sends the cores could not hand on because NATS was unreachable.
    pub refused: Tally,
    /// Sends refused because the bridge's queue (`CLUSTER_QUEUE`) was full.
    pub queue_full: Tally,
    /// Slow-consumer events from the NATS client: this node fell behind a subscription.
    pub slow_consumer: Tally,
    /// Other nodes this node saw die (missed heartbeats).
    pub dead_nodes: Tally,
}
