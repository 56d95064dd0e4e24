//! uring-chat: a thread-per-core io_uring chat server.
//!
//! Four layers, each using only those below it (docs/ARCHITECTURE.md tells the story with reasons):
//!
//! - [`server`]: the top. Starts one thread per core and stops them on a signal (`Server::start` is
//!   what the tests drive on port 0); each core's accept loop, the reader task that ties a socket to
//!   a session, the sweeper of timeouts, and the start-up checks that turn a missing io_uring or a
//!   busy port into advice.
//! - [`chat`]: what frames mean: protocol v1, sessions, the user directory, presence, and one
//!   core's share of the users (`Shard`), which delivers broadcasts and direct messages.
//! - [`hub`]: fan-out machinery that knows connections and cores but not frames: the roster a
//!   frame is pushed to, and the batched `flume` router between cores.
//! - [`net`]: bytes on sockets: the connection and its bounded outbound queue, the frame splitter,
//!   the per-core writer, flood control and connection caps.
//!
//! [`cluster`] sits below [`chat`], which uses it: several nodes as one server over NATS
//! (docs/CLUSTER.md). It moves opaque bytes with a kind between nodes on one bridge thread per
//! node, keeps the cluster's usernames and each room's owner node in JetStream key-value buckets,
//! subscribes to the rooms a node has members of, and tells which nodes are alive; it knows nothing
//! of chat frames. Off (no thread, no client) unless `--nats` is given.
//!
//! [`config`] sits beside them: flags, environment, TOML file and defaults; every limit is a named
//! constant there.
//!
//! [`auth`] sits beside them too, above [`config`]: it checks the signed token a `connect` carries
//! when the server has a key, and mints one for `uring-chat token`. The chat layer asks it at login.
//!
//! [`metrics`] sits between [`server`] and [`chat`]: each core's counters, which every layer
//! writes into the part it owns (the net layer's `net::counters`, the chat layer's
//! `chat::counters`) with no shared atomic on the message path, and the `/metrics` answer that
//! reads and merges all cores' counters at scrape time. The server layer serves it.

pub mod auth;
pub mod chat;
pub mod cluster;
pub mod config;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod server;
