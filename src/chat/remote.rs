//! The chat's side of a cluster (docs/CLUSTER.md): what the kinds of cluster messages mean, their
//! payloads, and where an arriving one goes ([`CoreLink`], which the bridge thread runs).
//!
//! The cluster layer moves opaque bytes; here they become chat again:
//! - [`LOBBY`]: a lobby frame, exactly as delivered, for every local user.
//! - [`DIRECT`]: recipient and sender userIDs (16 bytes each), then the frame.
//! - [`NOT_FOUND`]: a direct message found nobody: the sender's and the recipient's userIDs.
//! - room requests for a room's owner, and the owner's frames and answers on the room's subject
//!   (`rooms::wire`): to the owner core, or to the member cores.
//!
//! Names other nodes' users hold reach the directory (counts, pages, the local check of a name) and
//! core 0's presence batch, so joins and leaves from other nodes are announced like local ones.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::chat::directory::{Directory, Registration};
use crate::chat::rooms::{owner_core, wire, RoomMsg};
use crate::chat::shard::ShardMsg;
use crate::chat::user_id::UserId;
use crate::cluster::{Deliver, Inbound};
use crate::hub::{Mail, Outbox};

pub const LOBBY: u8 = 1;
pub const DIRECT: u8 = 2;
pub const NOT_FOUND: u8 = 3;

/// The payload of a direct message for another node.
pub fn direct_payload(to: UserId, from: UserId, frame: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(32 + frame.len());
    out.put_u128(to.to_bits());
    out.put_u128(from.to_bits());
    out.put_slice(frame);
    out.freeze()
}

/// The payload of a not-found answer.
pub fn not_found_payload(from: UserId, recipient: UserId) -> Bytes {
    let mut out = BytesMut::with_capacity(32);
    out.put_u128(from.to_bits());
    out.put_u128(recipient.to_bits());
    out.freeze()
}

/// The two userIDs in front of a payload, and what follows them.
fn two_ids(payload: &Bytes) -> Option<(UserId, UserId, Bytes)> {
    if payload.len() < 32 {
        return None;
    }
    let first = u128::from_be_bytes(payload[..16].try_into().expect("16 bytes"));
    let second = u128::from_be_bytes(payload[16..32].try_into().expect("16 bytes"));
    let (first, second) = (UserId::from_bits(first), UserId::from_bits(second));
    Some((first, second, payload.slice(32..)))
}

/// Hands what the bridge receives to this node's cores, and keeps the other nodes' users in the
/// directory. Runs on the bridge thread.
pub struct CoreLink {
    cores: Vec<Outbox<ShardMsg>>,
    /// This node's tag: answers on a room's subject for other nodes' members are not for here.
    node: u32,
    directory: Arc<Directory>,
    /// Other nodes' users listed in the directory, by userID.
    remote: HashMap<UserId, Registration>,
}

impl CoreLink {
    pub fn new(cores: Vec<Outbox<ShardMsg>>, directory: Arc<Directory>, node: u32) -> CoreLink {
        CoreLink {
            cores,
            node,
            directory,
            remote: HashMap::new(),
        }
    }

    /// The core that owns `user` if it is one of this node's; core 0 takes the rest, and finds
    /// nobody.
    fn core_of(&self, user: UserId) -> usize {
        Some(user.core())
            .filter(|&core| core < self.cores.len())
            .unwrap_or(0)
    }

    /// A room message from the room's subject or for this node's owner core.
    async fn room(&self, msg: RoomMsg, cores: &[usize]) {
        match msg {
            RoomMsg::Frame { room, seq, frame } => {
                for &core in cores.iter().filter(|&&core| core < self.cores.len()) {
                    let (room, frame) = (room.clone(), frame.clone());
                    let msg = RoomMsg::Frame { room, seq, frame };
                    self.send(core, ShardMsg::Room(msg)).await;
                }
            }
            RoomMsg::Join { ref room, .. }
            | RoomMsg::Leave { ref room, .. }
            | RoomMsg::Post { ref room, .. }
            | RoomMsg::Members { ref room, .. } => {
                let core = owner_core(room, self.cores.len());
                self.send(core, ShardMsg::Room(msg)).await;
            }
            answer => {
                // An answer for one member: on this node, or not for here.
                let Some(user) = wire::user_of(&answer).filter(|u| u.node() == self.node) else {
                    return;
                };
                let core = self.core_of(user);
                self.send(core, ShardMsg::Room(answer)).await;
            }
        }
    }

    async fn send(&self, core: usize, msg: ShardMsg) {
        // A core that has ended has nobody left to deliver to.
        let _ = self.cores[core].send_async(vec![Mail::Message(msg)]).await;
    }
}

impl Deliver for CoreLink {
    async fn deliver(&mut self, inbound: Inbound) {
        match inbound {
            Inbound::Message {
                kind: LOBBY,
                payload,
            } => {
                for core in 0..self.cores.len() {
                    self.send(core, ShardMsg::Broadcast(payload.clone())).await;
                }
            }
            Inbound::Message {
                kind: DIRECT,
                payload,
            } => {
                if let Some((to, from, frame)) = two_ids(&payload) {
                    let core = self.core_of(to);
                    self.send(core, ShardMsg::Direct { to, from, frame }).await;
                }
            }
            Inbound::Message {
                kind: NOT_FOUND,
                payload,
            } => {
                if let Some((from, recipient, _)) = two_ids(&payload) {
                    let core = self.core_of(from);
                    self.send(core, ShardMsg::NotFound { from, recipient })
                        .await;
                }
            }
            Inbound::Unreachable {
                kind: DIRECT,
                payload,
            } => {
                if let Some((recipient, from, _)) = two_ids(&payload) {
                    let core = self.core_of(from);
                    self.send(core, ShardMsg::NotFound { from, recipient })
                        .await;
                }
            }
            Inbound::Message { kind, payload } if wire::is_request(kind) => {
                if let Some(msg) = wire::decode(kind, payload) {
                    self.room(msg, &[]).await;
                }
            }
            Inbound::Unreachable { kind, payload } if wire::is_request(kind) => {
                let refused = wire::decode(kind, payload).and_then(wire::refused);
                if let Some(refused) = refused {
                    let core = wire::user_of(&refused).map_or(0, |user| self.core_of(user));
                    self.send(core, ShardMsg::Room(refused)).await;
                }
            }
            Inbound::Room {
                kind,
                payload,
                cores,
            } => {
                if let Some(msg) = wire::decode(kind, payload).filter(|_| !wire::is_request(kind)) {
                    self.room(msg, &cores).await;
                }
            }
            Inbound::OwnerMoved { room, cores } => {
                let room: crate::chat::rooms::RoomName = room.into();
                for core in cores.into_iter().filter(|&core| core < self.cores.len()) {
                    let room = room.clone();
                    self.send(core, ShardMsg::Room(RoomMsg::Rejoin { room }))
                        .await;
                }
            }
            Inbound::Message { kind, .. } | Inbound::Unreachable { kind, .. } => {
                tracing::debug!(kind, "a cluster message of an unknown kind: dropped");
            }
            Inbound::Joined { name, member } => {
                let user = UserId::from_bits(member);
                let name: Arc<str> = name.into();
                let registration = self.directory.register_remote(name.clone(), user);
                if let Some(old) = self.remote.insert(user, registration) {
                    self.directory.unregister(old);
                }
                let joined = true;
                self.send(0, ShardMsg::Presence { joined, user, name })
                    .await;
            }
            Inbound::Left { name, member } => {
                let user = UserId::from_bits(member);
                if let Some(registration) = self.remote.remove(&user) {
                    self.directory.unregister(registration);
                    let (joined, name) = (false, name.into());
                    self.send(0, ShardMsg::Presence { joined, user, name })
                        .await;
                }
            }
            Inbound::NameLost { member, .. } => {
                let user = UserId::from_bits(member);
                let core = self.core_of(user);
                self.send(core, ShardMsg::NameLost(user)).await;
            }
        }
    }
}
