//! One core's fan-out machinery: who to push a frame to, and how to reach the other cores. It
//! knows connections and cores, not what the frames mean.
//!
//! - [`roster`]: a set of connections keyed by an ID, dense for fan-out, indexed for lookups; the
//!   lobby and every room are one each.
//! - [`router`]: batched `flume` channels between cores, generic over the message, with the
//!   drain signals every layer above relies on.

pub mod roster;
pub mod router;

pub use roster::Roster;
pub use router::{Inbox, Mail, Outbox, Router};
