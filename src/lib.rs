//! uring-chat: a thread-per-core io_uring chat server.
//!
//! Module map, in the order one message travels (docs/ARCHITECTURE.md tells the story with reasons):
//!
//! - [`config`]: flags, environment, TOML file and defaults; every limit is a named constant there.
//! - [`server`]: starts one thread per core and stops them on a signal; `Server::start` is what the
//!   tests drive on port 0.
//! - [`startup`]: the checks that turn a missing io_uring, a busy port or a low fd limit into advice.
//! - [`core`]: one core's listener, connections and users; local fan-out; its inbox from other cores.
//! - [`connection`]: one socket's reader task, on-demand writer, and how it closes.
//! - [`codec`]: splits the inbound byte stream into frames (newline, CRLF or back to back).
//! - [`protocol`]: protocol v1 frames, parsed and encoded (docs/PROTOCOL.md is the contract).
//! - [`session`]: what each frame does: login, chat, users, ping, logout.
//! - [`outbound`]: a connection's bounded queue of shared frames, drained in batches (one write each).
//! - [`writer`]: one task per core that drives every connection's writes: a fan-out inline with
//!   `sendmsg`, the rest through io_uring.
//! - [`router`]: batched `flume` messages between cores.
//! - [`presence`]: coalesced join and leave announcements.
//! - [`guards`]: login timeout, keepalive, flood control and per-address caps.
//! - [`directory`]: the server-wide set of unique usernames.
//! - [`user_id`]: userIDs, which name the core that owns the user.

pub mod codec;
pub mod config;
pub mod connection;
pub mod core;
pub mod directory;
pub mod guards;
pub mod outbound;
pub mod presence;
pub mod protocol;
pub mod router;
pub mod server;
pub mod session;
pub mod startup;
pub mod user_id;
pub mod writer;
