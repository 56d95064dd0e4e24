//! What frames mean: the protocol, sessions, users, presence. Uses [`crate::hub`] to fan out and
//! [`crate::net`] to reach sockets; knows nothing of threads, listeners or the accept loop.
//!
//! - [`protocol`]: protocol frames, parsed and encoded (docs/PROTOCOL.md is the contract).
//! - [`counters`]: what each core's chat counts for the metrics: frames by kind, errors, rooms.
//! - [`session`]: what each inbound frame does: login, chat, users, ping, logout.
//! - [`shard`]: one core's share of the chat: its users, broadcast and direct delivery, and the
//!   messages cores send each other.
//! - [`rooms`]: named rooms with one message order each, history and recovery (protocol v1.1).
//! - [`presence`]: coalesced join and leave announcements.
//! - [`directory`]: the server-wide set of unique usernames (cluster-wide in a cluster).
//! - [`remote`]: the chat side of a cluster: message kinds, payloads, and delivery to the cores.
//! - [`user_id`]: userIDs, which name the core that owns the user.

pub mod counters;
pub mod directory;
pub mod presence;
pub mod protocol;
pub mod remote;
pub mod rooms;
pub mod session;
pub mod shard;
pub mod user_id;

pub use shard::{Shard, ShardMsg};
