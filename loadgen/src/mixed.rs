//! `--pattern mixed`: a broadcast stream and direct messages at once, on one open-loop schedule.
//!
//! The two streams share the message numbering of every other pattern (so windows, stamps, the
//! fan-out record and the drain need nothing new): at total rate `B + D`, message `g` is a
//! broadcast exactly when `floor((g+1)·B/(B+D)) > floor(g·B/(B+D))`. That spreads the broadcasts
//! evenly (each is at most one message-interval from where its own schedule would put it) and
//! lets every receiver tell a stamp's kind from its number alone, with no extra bytes on the wire.

use crate::options::{Options, Pattern, Protocol};
use crate::rooms::Rooms;
use std::sync::Arc;

/// Which stream a mixed-mode message belongs to (also the index of its per-kind figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Broadcast = 0,
    Direct = 1,
}

/// The two rates of a mixed run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mix {
    pub broadcast_rate: f64,
    pub dm_rate: f64,
}

/// Redis direct senders default to at most this many: each is an extra (unsubscribed)
/// connection, and 10,000 more would not fit beside 10,000 subscribers in one process.
pub const REDIS_DM_SENDERS_MAX: usize = 1000;

impl Mix {
    /// The mix of a `--pattern mixed` run, `None` for any other pattern.
    pub fn of(o: &Options) -> Option<Mix> {
        (o.pattern == Pattern::Mixed).then_some(Mix {
            broadcast_rate: o.broadcast_rate,
            dm_rate: o.dm_rate,
        })
    }

    /// Messages per second over both streams.
    pub fn rate(&self) -> f64 {
        self.broadcast_rate + self.dm_rate
    }

    /// The kind of message `g`.
    #[inline]
    pub fn kind(&self, g: u64) -> Kind {
        let share = self.broadcast_rate / self.rate();
        if ((g + 1) as f64 * share).floor() > (g as f64 * share).floor() {
            Kind::Broadcast
        } else {
            Kind::Direct
        }
    }
}

/// The run's total rate: `--rate`, or the sum of the two mixed rates.
pub fn rate(o: &Options) -> f64 {
    Mix::of(o).map_or(o.rate, |m| m.rate())
}

/// Sending connections: `--senders`, or in mixed mode the direct senders (`--dm-senders`, by
/// default every reading client for uring-chat, and at most `REDIS_DM_SENDERS_MAX` extra
/// connections for Redis). The broadcast stream goes out on sender 0.
pub fn senders(o: &Options) -> usize {
    if o.pattern != Pattern::Mixed {
        return o.senders;
    }
    if o.dm_senders > 0 {
        return o.dm_senders;
    }
    let fast = o.clients - o.slow_count();
    match o.protocol {
        Protocol::UringChat => fast.max(1),
        Protocol::Redis => fast.clamp(1, REDIS_DM_SENDERS_MAX),
    }
}

/// The room plan: `--rooms`, or with `--big-room` one room (`room-0`, so the rooms wire code
/// applies unchanged) that only the first N clients join.
pub fn room_plan(o: &Options) -> Option<Arc<Rooms>> {
    if o.rooms > 0 {
        Some(Rooms::new(o.rooms as u32, o.rooms_per_client as u32))
    } else if big_room(o) > 0 {
        Some(Rooms::new(1, 1))
    } else {
        None
    }
}

/// `--big-room` in a mixed run, else 0.
pub fn big_room(o: &Options) -> usize {
    if o.pattern == Pattern::Mixed {
        o.big_room
    } else {
        0
    }
}

/// The rooms client `i` joins.
pub fn client_rooms(o: &Options, plan: Option<&Arc<Rooms>>, i: usize) -> Vec<u32> {
    match plan {
        Some(_) if big_room(o) > 0 && i >= o.big_room => Vec::new(),
        Some(p) => p.of_client(i),
        None => Vec::new(),
    }
}

/// A Redis client's channels in a mixed run: its own first (the login's id names the direct
/// recipient), then the broadcast channel, or `room-0` for the first `--big-room` clients.
pub fn redis_channels(o: &Options, run_id: &str, i: usize) -> Vec<String> {
    let own = crate::redis::client_channel(run_id, i);
    match big_room(o) {
        0 => vec![own, crate::redis::broadcast_channel(run_id)],
        n if i < n => vec![own, crate::rooms::name(0)],
        _ => vec![own],
    }
}

/// Churning connections: enough that each leaves and logs back in about once a second.
pub fn churn_clients(o: &Options) -> usize {
    if o.pattern == Pattern::Mixed && o.churn > 0.0 {
        o.churn.ceil() as usize
    } else {
        0
    }
}
