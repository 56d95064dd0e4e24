//! Several nodes acting as one server, over NATS (docs/CLUSTER.md tells the story with reasons).
//!
//! This layer knows nothing of chat frames: it moves opaque `Bytes` with a small kind tag between
//! nodes, keeps the cluster's unique names in a JetStream key-value bucket, and tells which nodes
//! are alive. The chat layer says what the kinds mean and where an arriving message goes
//! ([`Deliver`]).
//!
//! - [`Cluster`]: the cores' handle. Every call is a `try_send` on a bounded `flume` queue: a core
//!   never waits on the network, and a full queue is answered like an unreachable cluster.
//! - [`bridge`]: the one thread per node (`cluster-bridge`, not pinned) with its own current-thread
//!   tokio runtime and one `async-nats` client.
//! - [`envelope`]: origin node, sequence number and kind in front of every message; duplicates and
//!   a node's own messages are dropped on arrival.
//! - [`names`]: the bucket's keys and values, and the replica of the cluster's users each node keeps.
//! - [`owners`]: the rooms bucket: which node owns each room, its replica, and the rendezvous hash.
//! - `routes` (private): the bridge's room paths: requests to a room's owner node, the room
//!   subjects a node subscribes to while it has members, and moving a dead owner's rooms.
//! - [`liveness`]: heartbeats, and which nodes count as dead.
//! - [`counters`]: what the bridge counts for `/metrics`.

pub mod bridge;
mod bucket;
pub mod counters;
pub mod envelope;
pub mod liveness;
pub mod names;
pub mod owners;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

pub use self::counters::ClusterCounters;

/// A node's tag: 32 random bits chosen at each start. It names the node on the wire and in the
/// userIDs of its users, so a restarted node is a new node.
pub type NodeTag = u32;

/// A member's opaque 128-bit ID (the chat layer's userID).
pub type MemberId = u128;

/// What the bridge needs to know; the server builds it from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    pub urls: Vec<String>,
    pub node_name: String,
    pub tag: NodeTag,
    pub subject_prefix: String,
    pub bucket: String,
    /// The key-value bucket of room owners.
    pub rooms_bucket: String,
    pub heartbeat: Duration,
    pub missed_heartbeats: u32,
    pub queue: usize,
    /// Messages a subscription holds before the NATS client drops and reports a slow consumer.
    pub subscription_capacity: usize,
    pub request_timeout: Duration,
}

/// Why a message could not be handed on: NATS is out of reach, or the bridge's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// How a name claim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The name is this member's cluster-wide.
    Claimed,
    /// Another node's member holds it.
    Taken,
    /// The bucket could not be asked in time.
    Unavailable,
}

/// What the cores ask of the bridge.
#[derive(Debug)]
pub enum Outgoing {
    /// For every other node.
    All { kind: u8, payload: Bytes },
    /// For one node.
    Node {
        node: NodeTag,
        kind: u8,
        payload: Bytes,
    },
    /// Claim `name` for `member` cluster-wide; the answer comes on `reply`.
    Claim {
        name: String,
        member: MemberId,
        reply: flume::Sender<ClaimOutcome>,
    },
    /// `member` has gone: free `name` if it is still its own.
    Release { name: String, member: MemberId },
    /// For the node that owns `room` (this one included), placing the room first if nobody owns it.
    ToOwner {
        room: String,
        kind: u8,
        payload: Bytes,
    },
    /// From the room's owner: once on the room's subject, for every node with members.
    RoomFeed {
        room: String,
        kind: u8,
        payload: Bytes,
    },
    /// Local core `core` has members of `room` (`watch`) or has none any more: the node
    /// subscribes to the room's subject while any core has.
    WatchRoom {
        room: String,
        core: usize,
        watch: bool,
    },
}

/// What the bridge hands up to the chat layer.
#[derive(Debug)]
pub enum Inbound {
    /// A message another node sent to all or to this node.
    Message { kind: u8, payload: Bytes },
    /// A message for a node that is not alive: it comes back to its sender's node.
    Unreachable { kind: u8, payload: Bytes },
    /// A member of another node took `name`.
    Joined { name: String, member: MemberId },
    /// A member of another node has gone (logged out, or its node died).
    Left { name: String, member: MemberId },
    /// A member of this node lost its name: while this node was cut off, another took it.
    NameLost { name: String, member: MemberId },
    /// A message on the subject of a room this node watches, for the local cores that watch it.
    Room {
        kind: u8,
        payload: Bytes,
        cores: Vec<usize>,
    },
    /// `room`, which local `cores` watch, has a new owner (its owner died): its members there
    /// must join again.
    OwnerMoved { room: String, cores: Vec<usize> },
}

/// Where the bridge delivers: implemented by the layer above, which knows the cores.
pub trait Deliver {
    /// Hands `inbound` to whichever local cores it is for; may wait for room in their inboxes.
    fn deliver(&mut self, inbound: Inbound) -> impl Future<Output = ()>;
}

/// What the bridge and the cores share: whether NATS is reachable, and the counters.
#[derive(Debug, Default)]
pub struct Shared {
    connected: AtomicBool,
    pub counters: ClusterCounters,
}

impl Shared {
    /// True while the node is connected to NATS and has its names bucket.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    fn set_connected(&self, connected: bool) {
        self.connected.store(connected, Ordering::Relaxed);
    }
}

/// The cores' handle on the cluster: cheap to clone, and every call returns at once.
#[derive(Clone, Debug)]
pub struct Cluster {
    tag: NodeTag,
    queue: flume::Sender<Outgoing>,
    shared: Arc<Shared>,
}

impl Cluster {
    /// This node's tag.
    pub fn tag(&self) -> NodeTag {
        self.tag
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// True while NATS is reachable.
    pub fn is_connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// Sends `payload` to every other node.
    pub fn publish_all(&self, kind: u8, payload: Bytes) -> Result<(), Unavailable> {
        self.push(Outgoing::All { kind, payload })
    }

    /// Sends `payload` to `node`.
    pub fn publish_to(&self, node: NodeTag, kind: u8, payload: Bytes) -> Result<(), Unavailable> {
        self.push(Outgoing::Node {
            node,
            kind,
            payload,
        })
    }

    /// Asks for `name` cluster-wide; the answer arrives on the returned channel.
    pub fn claim(
        &self,
        name: &str,
        member: MemberId,
    ) -> Result<flume::Receiver<ClaimOutcome>, Unavailable> {
        let (reply, answer) = flume::bounded(1);
        let name = name.to_string();
        self.push(Outgoing::Claim {
            name,
            member,
            reply,
        })?;
        Ok(answer)
    }

    /// Sends a room request to the room's owner node, which may be this one. Queued even while
    /// NATS is away: a room this node owns goes on; the others come back `Unreachable`.
    pub fn to_owner(&self, room: &str, kind: u8, payload: Bytes) -> Result<(), Unavailable> {
        let room = room.to_string();
        self.push_always(Outgoing::ToOwner {
            room,
            kind,
            payload,
        })
    }

    /// Publishes a frame of a room this node owns on the room's subject, once for all nodes.
    pub fn room_feed(&self, room: &str, kind: u8, payload: Bytes) -> Result<(), Unavailable> {
        let room = room.to_string();
        self.push(Outgoing::RoomFeed {
            room,
            kind,
            payload,
        })
    }

    /// Local core `core` now has members of `room` (`watch`), or has none any more.
    pub fn watch_room(&self, room: &str, core: usize, watch: bool) {
        let room = room.to_string();
        let _ = self.push_always(Outgoing::WatchRoom { room, core, watch });
    }

    fn push_always(&self, outgoing: Outgoing) -> Result<(), Unavailable> {
        self.queue.try_send(outgoing).map_err(|_| {
            self.shared.counters.queue_full.bump();
            Unavailable
        })
    }

    /// Frees `name` if `member` still holds it. Queued even while NATS is away: the bridge
    /// retries once it is back.
    pub fn release(&self, name: &str, member: MemberId) {
        let name = name.to_string();
        if self
            .queue
            .try_send(Outgoing::Release { name, member })
            .is_err()
        {
            self.shared.counters.queue_full.bump();
        }
    }

    fn push(&self, outgoing: Outgoing) -> Result<(), Unavailable> {
        if !self.is_connected() {
            self.shared.counters.refused.bump();
            return Err(Unavailable);
        }
        self.queue.try_send(outgoing).map_err(|_| {
            self.shared.counters.queue_full.bump();
            Unavailable
        })
    }
}
