//! Prometheus metrics: every core counts for itself, and a scrape merges the cores' counts.
//!
//! Each core owns one [`CoreMetrics`] and is its only writer; each layer counts what it knows into
//! the part it owns ([`NetCounters`] in the network layer, [`ChatCounters`] in the chat, the
//! router's count of messages between cores, and here what the server's accept loop and readers
//! see). Counting is a single-writer load and store, never a shared atomic read-modify-write, so
//! the message path stays as free of synchronisation as it was (see [`crate::net::counters`]). The
//! server holds every core's `Arc<CoreMetrics>`; whichever core answers `/metrics` reads them all
//! ([`exposition`]).

pub mod exposition;

use std::sync::Arc;

use crate::chat::counters::ChatCounters;
use crate::net::counters::{Counter, Gauge, NetCounters, PerTransport};
use crate::net::guards::Refusal;
use crate::net::{CloseReason, Transport};

pub use exposition::Exposition;

/// Why a connection was turned away at accept, as metrics label it.
pub const REFUSALS: [&str; 2] = ["server_full", "address_full"];

/// One core's counters, written by that core alone.
#[derive(Debug, Default)]
pub struct CoreMetrics {
    pub core: usize,
    pub net: Arc<NetCounters>,
    pub chat: Arc<ChatCounters>,
    /// Messages this core handed to other cores.
    pub cross_core: Arc<Counter>,
    accepted: Counter,
    /// By [`REFUSALS`].
    rejected: [Counter; REFUSALS.len()],
    /// By [`CloseReason::ALL`].
    closed: [Counter; CloseReason::ALL.len()],
    open: PerTransport<Gauge>,
}

impl CoreMetrics {
    pub fn new(core: usize) -> Arc<CoreMetrics> {
        Arc::new(CoreMetrics {
            core,
            ..CoreMetrics::default()
        })
    }

    /// Counts a chat connection the accept loop took: open, or refused for `refusal`.
    pub fn accepted(&self, transport: Transport, refusal: Option<&Refusal>) {
        self.accepted.add(1);
        match refusal {
            None => self.open.get(transport).add(1),
            Some(Refusal::Full(_)) => self.rejected[0].add(1),
            Some(Refusal::AddressFull(_)) => self.rejected[1].add(1),
        }
    }

    /// Counts an open connection that ended.
    pub fn closed(&self, transport: Transport, reason: CloseReason) {
        self.open.get(transport).add(-1);
        self.count_close(reason);
    }

    /// Counts a connection of the HTTP ports that ended for a TLS `reason` (plain text, a failed
    /// or stalled handshake) before it was a chat connection: the same series as the chat port's,
    /// so that one alert watches every port. An answered request is not a close worth counting.
    pub fn tls_closed(&self, reason: CloseReason) {
        self.count_close(reason);
    }

    fn count_close(&self, reason: CloseReason) {
        let at = CloseReason::ALL.iter().position(|&known| known == reason);
        self.closed[at.expect("every reason is listed")].add(1);
    }
}
