//! Bytes on sockets: the bottom layer. It knows connections, queues and writes, and nothing of chat.
//!
//! - [`codec`]: splits an inbound byte stream into frames (newline, CRLF or back to back).
//! - [`connection`]: one client socket with its bounded outbound queue and how it closes; and
//!   [`Sockets`], what every connection of one core shares (its writer, limits, clock).
//! - [`counters`]: what each core counts for the metrics, written by that core alone.
//! - [`outbound`]: a connection's queue of shared frames, drained in batches (one write each).
//! - [`writer`]: one task per core that drives every connection's writes.
//! - [`park`]: the writer's yield in a long pass, which lets the runtime submit io_uring work.
//! - [`guards`]: per-connection defences: flood control and the connection caps.
//! - [`http`]: HTTP request heads (parsed with httparse, bounded) and plain responses, sans-IO.
//! - [`tls`]: TLS sans-IO over rustls: ciphertext in, plaintext out; batches sealed per connection.
//! - [`transport`]: TCP or WebSocket: how a connection's frames go on the wire, and why it closes.
//! - [`websocket`]: RFC 6455 sans-IO over tungstenite: the upgrade answer, inbound messages, and
//!   the server's frames as bytes.
//!
//! What a frame means is decided above, in the chat layer; the few frames this layer must send on
//! its own (the slow-consumer notice) are handed to it ready-made.

pub mod codec;
pub mod connection;
pub mod counters;
pub mod guards;
pub mod http;
pub mod outbound;
pub mod park;
pub mod tls;
pub mod transport;
pub mod websocket;
pub mod writer;

pub use connection::{Connection, SocketLimits, Sockets};
pub use transport::{CloseReason, Transport};
