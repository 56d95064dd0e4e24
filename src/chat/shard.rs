//! One core's share of the chat: its logged-in users, its presence batch, and how it reaches the
//! users of other cores.
//!
//! Each core owns the users whose connections it accepted, so all of this is plain `Rc`/`RefCell`:
//! no lock and no atomic on the message path. Users of other cores are reached only through the
//! [`Router`]. The path of one broadcast: [`session`](super::session) builds the frame once,
//! [`Shard::broadcast`] hands the same `Bytes` to each other core and queues it for every local
//! member, and each connection's writer sends it with whatever else is queued.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::auth::Verifier;
use crate::chat::counters::ChatCounters;
use crate::chat::directory::Directory;
use crate::chat::presence::{PresenceBatch, Scope};
use crate::chat::protocol::{self, ErrorCode};
use crate::chat::remote;
use crate::chat::rooms::directory::RoomDirectory;
use crate::chat::rooms::local::LocalRooms;
use crate::chat::rooms::owned::{OwnedRooms, OwnerLimits};
use crate::chat::rooms::{RoomMsg, RoomName};
use crate::chat::user_id::UserId;
use crate::cluster::{Cluster, Unavailable};
use crate::config::Config;
use crate::hub::{Roster, Router};
use crate::net::outbound::OutFrame;
use crate::net::{CloseReason, Connection};

/// What a core's chat shares with the other cores of its node.
pub struct Shared {
    /// Unique usernames server-wide (cluster-wide in a cluster).
    pub directory: Arc<Directory>,
    pub room_directory: Arc<RoomDirectory>,
    /// This node's tag, random per start.
    pub node: u32,
    pub cluster: Option<Cluster>,
}

/// What one core's chat tells another.
#[derive(Debug)]
pub enum ShardMsg {
    /// A frame for every logged-in user of the receiving core: from another core's broadcast, or
    /// from another node's (the bridge hands each local core the frame once).
    Broadcast(Bytes),
    /// A chat frame for one user of the receiving core, sent by `from`.
    Direct {
        to: UserId,
        from: UserId,
        frame: Bytes,
    },
    /// The direct message `from` sent to `recipient` found nobody; tell `from`.
    NotFound { from: UserId, recipient: UserId },
    /// Rooms: to or from a room's owner core (see [`crate::chat::rooms`]).
    Room(RoomMsg),
    /// From the cluster bridge: another node's user joined or left; announced with this core's
    /// presence.
    Presence {
        joined: bool,
        user: UserId,
        name: Arc<str>,
    },
    /// From the cluster bridge: another node took this user's name while this node was cut off.
    NameLost(UserId),
}

pub struct Shard {
    pub id: usize,
    pub config: Arc<Config>,
    /// Checks login tokens; `None` when the server is open (no `--auth-jwt-*` setting).
    pub auth: Option<Verifier>,
    /// Unique usernames server-wide; locked at login, logout, `users` pages and presence ticks.
    pub directory: Arc<Directory>,
    pub router: Router<ShardMsg>,
    /// This node's tag, in bytes 1 to 4 of its users' IDs.
    pub node: u32,
    /// The other nodes, when this node is one of a cluster (`--nats`); `None` runs alone.
    pub cluster: Option<Cluster>,
    /// Every room server-wide with its member count; locked at joins, leaves and `rooms` pages.
    pub room_directory: Arc<RoomDirectory>,
    /// Logged-in users of this core, by userID.
    lobby: RefCell<Roster<UserId>>,
    /// This core's members of each room.
    pub(crate) rooms: RefCell<LocalRooms>,
    /// The rooms this core owns: their seq, history and member lists.
    pub(crate) owned: RefCell<OwnedRooms>,
    presence: RefCell<PresenceBatch>,
    /// When this core last sent a presence frame: counts-only frames wait a longer interval.
    presence_sent: Cell<Instant>,
    /// What this core's chat counts for the metrics; written by this core only.
    pub counters: Arc<ChatCounters>,
}

impl Shard {
    pub fn new(
        id: usize,
        config: Arc<Config>,
        auth: Option<Verifier>,
        shared: Shared,
        router: Router<ShardMsg>,
        counters: Arc<ChatCounters>,
    ) -> Shard {
        let Shared {
            directory,
            room_directory,
            node,
            cluster,
        } = shared;
        let owned = OwnedRooms::new(
            id,
            router.cores(),
            (node, cluster.is_some()),
            OwnerLimits::new(&config),
            room_directory.clone(),
            counters.clone(),
        );
        Shard {
            id,
            presence: RefCell::new(PresenceBatch::new(config.presence_names)),
            config,
            auth,
            directory,
            room_directory,
            router,
            node,
            cluster,
            lobby: RefCell::default(),
            rooms: RefCell::default(),
            owned: RefCell::new(owned),
            presence_sent: Cell::new(Instant::now()),
            counters,
        }
    }

    /// Makes `conn` a member of the lobby as `user_id`, and announces the join.
    pub fn add_member(&self, conn: &Rc<Connection>, user_id: UserId, username: &Arc<str>) {
        self.lobby.borrow_mut().insert(user_id, conn.clone());
        self.presence.borrow_mut().joined(user_id, username);
    }

    /// Takes `user_id` out of the lobby and out of its `rooms`, and announces the leave.
    pub fn remove_member(&self, user_id: UserId, username: &Arc<str>, rooms: Vec<RoomName>) {
        self.lobby.borrow_mut().remove(user_id);
        self.presence.borrow_mut().left(user_id, username);
        self.leave_all_rooms(user_id, username, rooms);
    }

    /// The connection of a logged-in user of this core.
    pub(crate) fn user_connection(&self, user_id: UserId) -> Option<Rc<Connection>> {
        self.lobby.borrow().get(user_id).cloned()
    }

    /// A frame for every logged-in user of every core and every node, except the connection
    /// `except`. In a cluster the frame leaves the node once, through the bridge; `Unavailable`
    /// says the other nodes did not get it (this node's users did).
    pub fn broadcast(&self, frame: Bytes, except: Option<u64>) -> Result<(), Unavailable> {
        let sent = match &self.cluster {
            None => Ok(()),
            Some(cluster) => cluster.publish_all(remote::LOBBY, frame.clone()),
        };
        self.broadcast_local(frame, except);
        sent
    }

    /// A frame for every logged-in user of this node's cores except the connection `except`.
    pub fn broadcast_local(&self, frame: Bytes, except: Option<u64>) {
        self.router
            .send_to_others(|| ShardMsg::Broadcast(frame.clone()));
        self.lobby.borrow().fan_out(&OutFrame::new(frame), except);
    }

    /// A chat frame from `from` for `to`, wherever `to` lives. `Unavailable`: `to` is on another
    /// node and the cluster cannot be reached.
    pub fn direct(&self, from: UserId, to: UserId, frame: Bytes) -> Result<(), Unavailable> {
        if to.node() != self.node {
            return self.direct_to_node(from, to, frame);
        }
        if to.core() == self.id {
            self.deliver_direct(from, to, frame);
        } else {
            self.router
                .send(to.core(), ShardMsg::Direct { to, from, frame });
        }
        Ok(())
    }

    /// A direct message for a user of another node: through the bridge, or nowhere when this node
    /// runs alone (then nobody has that userID).
    fn direct_to_node(&self, from: UserId, to: UserId, frame: Bytes) -> Result<(), Unavailable> {
        let Some(cluster) = &self.cluster else {
            self.report_not_found(from, to);
            return Ok(());
        };
        let payload = remote::direct_payload(to, from, &frame);
        cluster.publish_to(to.node(), remote::DIRECT, payload)
    }

    /// Acts on a message from another core.
    pub fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Broadcast(frame) => self.lobby.borrow().fan_out(&OutFrame::new(frame), None),
            ShardMsg::Direct { to, from, frame } => self.deliver_direct(from, to, frame),
            ShardMsg::NotFound { from, recipient } => self.report_not_found(from, recipient),
            ShardMsg::Room(msg) => self.handle_room(msg),
            ShardMsg::Presence { joined, user, name } => match joined {
                true => self.presence.borrow_mut().joined(user, &name),
                false => self.presence.borrow_mut().left(user, &name),
            },
            ShardMsg::NameLost(user) => {
                if let Some(conn) = self.user_connection(user) {
                    let reason = "another node took your name while this node was cut off from the cluster; log in again";
                    let frame = protocol::error(ErrorCode::NameTaken, reason);
                    conn.finish(frame, CloseReason::NameLost);
                }
            }
        }
    }

    /// Called every `--presence-interval`: sends the presence that is due, the lobby's and that of
    /// the rooms this core owns, and drops rooms idle past `--room-idle-ttl`.
    pub fn tick(&self) {
        self.tick_lobby_presence();
        self.tick_rooms();
    }

    /// Sends this core's presence frame if anything changed, at most once per
    /// `--presence-count-interval` when it can carry counts only.
    fn tick_lobby_presence(&self) {
        if self.presence.borrow().is_empty() {
            return;
        }
        let user_count = self.directory.len();
        let counts_only = user_count > self.config.presence_limit;
        if counts_only && self.presence_sent.get().elapsed() < self.config.presence_count_interval {
            return;
        }
        self.presence_sent.set(Instant::now());
        let frame = self
            .presence
            .borrow_mut()
            .take_frame(Scope::Lobby { user_count }, self.config.presence_limit);
        if let Some(frame) = frame {
            // Each node announces to its own users; other nodes learn of joins from the names
            // bucket, not from this frame.
            self.broadcast_local(frame, None);
        }
    }

    fn deliver_direct(&self, from: UserId, to: UserId, frame: Bytes) {
        match self.user_connection(to) {
            Some(conn) => conn.reply(frame),
            None => self.report_not_found(from, to),
        }
    }

    fn report_not_found(&self, from: UserId, recipient: UserId) {
        if from.node() != self.node {
            if let Some(cluster) = &self.cluster {
                let payload = remote::not_found_payload(from, recipient);
                // Unreachable: the sender's node is gone or cut off, and nobody waits for this.
                let _ = cluster.publish_to(from.node(), remote::NOT_FOUND, payload);
            }
            return;
        }
        if from.core() != self.id {
            return self
                .router
                .send(from.core(), ShardMsg::NotFound { from, recipient });
        }
        if let Some(conn) = self.user_connection(from) {
            conn.reply(user_not_found(&recipient.to_string()));
        }
    }
}

/// `CLUSTER_UNAVAILABLE`, saying what did not happen.
pub fn cluster_unavailable(what: &str) -> Bytes {
    let reason = format!("the cluster cannot be reached: {what}");
    protocol::error(ErrorCode::ClusterUnavailable, &reason)
}

/// The error for a direct message to `recipient` that found nobody.
pub fn user_not_found(recipient: &str) -> Bytes {
    let shown: String = recipient.chars().take(64).collect();
    protocol::error(ErrorCode::UserNotFound, &format!("no user with ID {shown}"))
}
