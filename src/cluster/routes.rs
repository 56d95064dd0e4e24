//! The bridge's room paths (docs/CLUSTER.md, "Rooms across nodes"): requests to a room's owner
//! node, the room subjects this node subscribes to while it has members, the rooms bucket's
//! replica, and moving a dead owner's rooms.
//!
//! Every room request of this node's cores passes through here, in the order the cores queued it,
//! so that requests for one room keep their order whichever node owns it: to a local owner core
//! through [`Deliver`], to another node on its subject. A room nobody owns yet is placed first
//! (a `create` in the rooms bucket); its requests wait for the answer, in order.

use std::collections::HashMap;
use std::time::Instant;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::bridge::{Bridge, Task};
use super::bucket::Done;
use super::envelope::{self, Dedup};
use super::names;
use super::owners::{rendezvous, Owner, OwnerValue};
use super::{Deliver, Inbound, NodeTag};

/// A room subject this node is subscribed to.
pub(super) struct RoomSub {
    room: String,
    /// Members' cores, with how many times each asked to watch.
    cores: Vec<(usize, u32)>,
    /// Tells this subscription's messages from those of an earlier one of the same room.
    generation: u64,
    forwarder: tokio::task::JoinHandle<()>,
    /// Per origin: rooms arrive on their own subjects, each in its publisher's order.
    seen: Dedup,
}

impl RoomSub {
    fn cores(&self) -> Vec<usize> {
        self.cores.iter().map(|&(core, _)| core).collect()
    }
}

/// A message on a room subject, from its forwarding task: key, generation, message.
pub(super) type RoomArrival = (String, u64, Bytes);

impl<D: Deliver> Bridge<D> {
    fn room_subject(&self, key: &str) -> String {
        format!("{}.room.{key}", self.settings.subject_prefix)
    }

    /// A request for the owner of `room`.
    pub(super) async fn route_to_owner(
        &mut self,
        room: String,
        kind: u8,
        payload: Bytes,
        tasks: &mut FuturesUnordered<Task>,
    ) {
        let key = names::key(&room);
        if let Some(waiting) = self.placing.get_mut(&key) {
            return waiting.push((kind, payload));
        }
        if let Some(owner) = self.owners.get(&key) {
            return self.send_to_owner(owner.tag, kind, payload).await;
        }
        let store = self.rooms_store.clone().filter(|_| self.connected());
        let live = self.liveness.live_nodes();
        let nodes = live.iter().map(|(name, tag)| (name.as_str(), *tag));
        let (Some(store), Some(pick)) = (store, rendezvous(&key, nodes)) else {
            self.shared.counters.refused.bump();
            return self
                .deliver
                .deliver(Inbound::Unreachable { kind, payload })
                .await;
        };
        let name = (live.iter().find(|(_, tag)| *tag == pick)).map_or("", |(name, _)| name);
        let value = OwnerValue::new(pick, name, 1).encode();
        self.placing.insert(key.clone(), vec![(kind, payload)]);
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let placed = async {
                match store.create(&key, value.clone()).await {
                    Ok(revision) => Some((value, revision)),
                    // Another node placed it first: everyone uses what was written.
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
                        let entry = store.entry(key.clone()).await.ok().flatten()?;
                        Some((entry.value, entry.revision))
                    }
                    Err(_) => None,
                }
            };
            let placed = tokio::time::timeout(limit, placed).await.ok().flatten();
            Done::Placed { key, placed }
        }));
    }

    /// The answer to placing a room: its waiting requests go to the owner, in order.
    pub(super) async fn placed(&mut self, key: String, placed: Option<(Bytes, u64)>) {
        let waiting = self.placing.remove(&key).unwrap_or_default();
        let owner = placed.and_then(|(value, revision)| {
            self.owners.put(&key, &value, revision);
            self.owners.get(&key)
        });
        for (kind, payload) in waiting {
            match owner {
                Some(owner) => self.send_to_owner(owner.tag, kind, payload).await,
                None => {
                    let inbound = Inbound::Unreachable { kind, payload };
                    self.deliver.deliver(inbound).await;
                }
            }
        }
    }

    async fn send_to_owner(&mut self, owner: NodeTag, kind: u8, payload: Bytes) {
        if owner == self.settings.tag {
            return self
                .deliver
                .deliver(Inbound::Message { kind, payload })
                .await;
        }
        if !self.connected() || !self.liveness.is_alive(owner) {
            // Cut off, or the owner died and its rooms have not moved yet.
            self.shared.counters.refused.bump();
            return self
                .deliver
                .deliver(Inbound::Unreachable { kind, payload })
                .await;
        }
        let subject = self.subjects_node(owner);
        self.publish(subject, kind, &payload).await;
    }

    /// A frame of a room this node owns, for the other nodes with members.
    pub(super) async fn room_feed(&mut self, room: &str, kind: u8, payload: &[u8]) {
        let subject = self.room_subject(&names::key(room));
        self.publish(subject, kind, payload).await;
    }

    /// Core `core` starts or stops watching `room`. The subscription is made before any request
    /// the core queued after this one is published, so no frame the owner stamps after it sees
    /// the join is missed.
    pub(super) async fn watch_room(&mut self, room: String, core: usize, watch: bool) {
        let key = names::key(&room);
        if !watch {
            let Some(sub) = self.room_subs.get_mut(&key) else {
                return;
            };
            if let Some(at) = sub.cores.iter().position(|&(c, _)| c == core) {
                sub.cores[at].1 -= 1;
                if sub.cores[at].1 == 0 {
                    sub.cores.swap_remove(at);
                }
            }
            if sub.cores.is_empty() {
                let sub = self.room_subs.remove(&key).expect("looked up above");
                // Dropping the subscriber (with its task) unsubscribes.
                sub.forwarder.abort();
                let subscriptions = self.room_subs.len() as u64;
                self.shared.counters.room_subscriptions.set(subscriptions);
            }
            return;
        }
        if let Some(sub) = self.room_subs.get_mut(&key) {
            match sub.cores.iter_mut().find(|(c, _)| *c == core) {
                Some((_, count)) => *count += 1,
                None => sub.cores.push((core, 1)),
            }
            return;
        }
        let subject = self.room_subject(&key);
        let mut subscriber = match self.client.subscribe(subject).await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                return tracing::warn!(%error, %room, "cannot subscribe to a room's subject")
            }
        };
        self.room_generation += 1;
        let generation = self.room_generation;
        let arrivals = self.room_arrivals.clone();
        let forwarded_key = key.clone();
        let forwarder = tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let arrival = (forwarded_key.clone(), generation, message.payload);
                if arrivals.send(arrival).is_err() {
                    break;
                }
            }
        });
        let sub = RoomSub {
            room,
            cores: vec![(core, 1)],
            generation,
            forwarder,
            seen: Dedup::default(),
        };
        self.room_subs.insert(key, sub);
        let subscriptions = self.room_subs.len() as u64;
        self.shared.counters.room_subscriptions.set(subscriptions);
    }

    /// A message on a room subject: for the local cores with members of the room.
    pub(super) async fn room_arrived(&mut self, (key, generation, message): RoomArrival) {
        let Some(sub) = (self.room_subs.get_mut(&key)).filter(|s| s.generation == generation)
        else {
            return; // From a subscription that has ended.
        };
        let Some(envelope) = envelope::decode(&message) else {
            return;
        };
        if envelope.origin == self.settings.tag {
            return;
        }
        if !sub.seen.first_time(envelope.origin, envelope.seq) {
            return self.shared.counters.duplicates.bump();
        }
        self.shared.counters.room_received.bump();
        self.shared.counters.received.bump();
        let inbound = Inbound::Room {
            kind: envelope.kind,
            payload: envelope.payload,
            cores: sub.cores(),
        };
        self.deliver.deliver(inbound).await;
    }

    /// A change in the rooms bucket. A room this node watches whose owner changed (its owner
    /// died) is told to the cores with members, which join again.
    pub(super) async fn owner_watched(&mut self, entry: kv::Entry) {
        if !matches!(entry.operation, Operation::Put) {
            return self.owners.delete(&entry.key);
        }
        let old = self.owners.put(&entry.key, &entry.value, entry.revision);
        let Some(owner) = self.owners.get(&entry.key) else {
            return;
        };
        self.moving.remove(&entry.key);
        // An owner never heard (it may have died before this node started) gets one window.
        self.liveness.holds_names(owner.tag, Instant::now());
        let Some(old) = old else {
            return;
        };
        if let Some(sub) = self.room_subs.get_mut(&entry.key) {
            sub.seen.forget(old.tag);
            let inbound = Inbound::OwnerMoved {
                room: sub.room.clone(),
                cores: sub.cores(),
            };
            self.deliver.deliver(inbound).await;
        }
    }

    /// Gives the rooms of dead owners a new owner among the live nodes; the caller has checked
    /// that this node is the one to do it. The update expects the revision read, so a second
    /// survivor doing the same changes nothing.
    pub(super) fn move_dead_owners_rooms(&mut self, tasks: &mut FuturesUnordered<Task>) {
        let Some(store) = self.rooms_store.clone() else {
            return;
        };
        let mut dead: Vec<NodeTag> = (self.owners.tags())
            .filter(|&tag| tag != self.settings.tag && !self.liveness.is_alive(tag))
            .collect();
        dead.sort_unstable();
        dead.dedup();
        let live = self.liveness.live_nodes();
        for tag in dead {
            let rooms: Vec<(String, Owner)> = (self.owners.owned_by(tag).into_iter())
                .filter(|(key, _)| !self.moving.contains_key(key))
                .collect();
            tracing::info!(
                tag = format!("{tag:08x}"),
                rooms = rooms.len(),
                "moving a dead node's rooms"
            );
            for (key, owner) in rooms {
                let nodes = live.iter().map(|(name, tag)| (name.as_str(), *tag));
                let Some(pick) = rendezvous(&key, nodes) else {
                    continue;
                };
                let name = (live.iter().find(|(_, t)| *t == pick)).map_or("", |(n, _)| n);
                let value = OwnerValue::new(pick, name, owner.epoch + 1).encode();
                self.moving.insert(key.clone(), Instant::now());
                let (store, limit) = (store.clone(), self.settings.request_timeout);
                let shared = self.shared.clone();
                tasks.push(Box::pin(async move {
                    let update = store.update(&key, value, owner.revision);
                    if let Ok(Ok(_)) = tokio::time::timeout(limit, update).await {
                        shared.counters.rooms_moved.bump();
                    }
                    Done::Nothing
                }));
            }
        }
        // A move whose update failed (lost the race, or NATS was slow) is tried again later.
        let limit = self.settings.request_timeout * 2;
        self.moving.retain(|_, since| since.elapsed() < limit);
    }
}

impl<D: Deliver> Bridge<D> {
    /// After a (re)connect: puts back the keys of the rooms this node owns, should NATS have lost
    /// its store (a key still in place is left as it is). A room another node placed meanwhile is
    /// that node's now; the watch tells this node's members, who join it there.
    pub(super) fn reassert_rooms(&mut self, tasks: &mut FuturesUnordered<Task>) {
        let mine = self.owners.owned_by(self.settings.tag);
        let Some(store) = self.rooms_store.clone().filter(|_| !mine.is_empty()) else {
            return;
        };
        let (tag, name) = (self.settings.tag, self.settings.node_name.clone());
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            for (key, owner) in mine {
                let value = OwnerValue::new(tag, &name, owner.epoch).encode();
                let _ = tokio::time::timeout(limit, store.create(&key, value)).await;
            }
            Done::Nothing
        }));
    }
}

/// Waits for the next entry of the rooms watch, if there is one.
pub(super) async fn next_owner(
    watch: &mut Option<kv::Watch>,
) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// Room subscriptions, by key.
pub(super) type RoomSubs = HashMap<String, RoomSub>;
