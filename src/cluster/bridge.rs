//! The bridge: one thread per node, not pinned to a core, with its own current-thread tokio
//! runtime and one `async-nats` client. It publishes what the cores queue, hands what arrives to
//! the layer above, keeps the names bucket's replica, beats, and frees dead nodes' names.
//!
//! Everything runs in one `select!` loop on that thread, so the bridge's state needs no lock.
//! Requests to JetStream (claims, releases, clean-ups) run as futures beside the loop, each bounded
//! by `CLUSTER_REQUEST_TIMEOUT`, and their results come back into it. The cores never wait on any
//! of it: they `try_send` into the bridge's queue (see [`super::Cluster`]).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream::kv::{self, Store, Watch};
use async_nats::{Client, ConnectOptions, Event, Subscriber};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;

use super::bucket::{Done, Mine};
use super::envelope::{self, Dedup};
use super::liveness::Liveness;
use super::names::{self, Replica};
use super::owners::OwnerReplica;
use super::routes::{next_owner, RoomArrival, RoomSubs};
use super::{Cluster, Deliver, Inbound, MemberId, NodeTag, Outgoing, Settings, Shared};

/// The kind of a heartbeat (the layer above uses kinds from 1 up; this one is the bridge's own).
const HEARTBEAT: u8 = 0;
/// The last beat of a node that stops cleanly: the others count it gone at once rather than after
/// its silence, so its rooms move at their next tick and requests for them are refused meanwhile.
const GOODBYE: u8 = 255;
/// Longest pause between two reconnect attempts to NATS.
const RECONNECT_DELAY_MAX_MS: u64 = 1000;

/// Starts the bridge thread; `deliver` takes what arrives. The handle's sends fail until the node
/// has reached NATS.
pub fn start<D: Deliver + Send + 'static>(
    settings: Settings,
    deliver: D,
) -> Result<(Cluster, std::thread::JoinHandle<()>), String> {
    let (queue, outgoing) = flume::bounded(settings.queue);
    let shared = Arc::new(Shared::default());
    let cluster = Cluster {
        tag: settings.tag,
        queue,
        shared: shared.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("cluster-bridge".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            runtime.block_on(run(settings, shared, outgoing, deliver));
        })
        .map_err(|e| format!("cannot start the cluster bridge thread: {e}"))?;
    Ok((cluster, thread))
}

/// A request to NATS beside the loop.
pub(super) type Task = Pin<Box<dyn Future<Output = Done>>>;

pub(super) struct Bridge<D> {
    pub(super) settings: Settings,
    pub(super) shared: Arc<Shared>,
    pub(super) deliver: D,
    pub(super) client: Client,
    pub(super) store: Option<Store>,
    /// The rooms bucket, once set up.
    pub(super) rooms_store: Option<Store>,
    /// Every room's owner node (owners.rs).
    pub(super) owners: OwnerReplica,
    /// Requests for rooms being placed (their key being created), in order, by key.
    pub(super) placing: HashMap<String, Vec<(u8, Bytes)>>,
    /// The room subjects this node subscribes to, while local cores have members.
    pub(super) room_subs: RoomSubs,
    pub(super) room_generation: u64,
    /// Where each room subscription's task forwards what arrives.
    pub(super) room_arrivals: flume::Sender<RoomArrival>,
    /// Rooms of dead owners this node is moving, since when.
    pub(super) moving: HashMap<String, Instant>,
    /// Numbers everything this node publishes (envelope.rs).
    pub(super) seq: u64,
    pub(super) lobby_seen: Dedup,
    pub(super) direct_seen: Dedup,
    pub(super) liveness: Liveness,
    pub(super) replica: Replica,
    /// This node's members' names, by key.
    pub(super) mine: HashMap<String, Mine>,
    /// Claims still out, by (key, member): true once the member has been released meanwhile (its
    /// connection closed while its login waited).
    pub(super) claiming: HashMap<(String, MemberId), bool>,
    /// Releases that failed while NATS was away, retried after the next reconnect.
    pub(super) stale: Vec<(String, u64)>,
    pub(super) setting_up: bool,
    /// JetStream refused the last set-up; logged once until it succeeds.
    pub(super) jetstream_failing: bool,
    subjects: Subjects,
}

struct Subjects {
    lobby: String,
    heartbeat: String,
    prefix: String,
}

impl<D> Bridge<D> {
    /// The subject of node `tag`.
    pub(super) fn subjects_node(&self, tag: NodeTag) -> String {
        self.subjects.node(tag)
    }
}

impl Subjects {
    fn node(&self, tag: NodeTag) -> String {
        format!("{}.node.{tag:08x}", self.prefix)
    }
}

async fn run<D: Deliver>(
    settings: Settings,
    shared: Arc<Shared>,
    outgoing: flume::Receiver<Outgoing>,
    deliver: D,
) {
    let (event_tx, events) = flume::unbounded();
    let options = ConnectOptions::new()
        .name(&settings.node_name)
        .retry_on_initial_connect()
        // A node drops what it sent itself anyway; no echo spares the round trip.
        .no_echo()
        .max_reconnects(None)
        .connection_timeout(settings.request_timeout)
        .subscription_capacity(settings.subscription_capacity)
        .reconnect_delay_callback(|attempts| {
            let millis = (attempts as u64 * 100).min(RECONNECT_DELAY_MAX_MS);
            std::time::Duration::from_millis(millis)
        })
        .event_callback(move |event| {
            let event_tx = event_tx.clone();
            async move {
                let _ = event_tx.send(event);
            }
        });
    let client = match options.connect(settings.urls.clone()).await {
        Ok(client) => client,
        Err(error) => {
            // Only an unusable address gets here (retry_on_initial_connect retries the rest).
            return tracing::error!(%error, urls = ?settings.urls, "cannot use the NATS address: this node stays cut off");
        }
    };
    let subjects = Subjects {
        lobby: format!("{}.lobby", settings.subject_prefix),
        heartbeat: format!("{}.heartbeat", settings.subject_prefix),
        prefix: settings.subject_prefix.clone(),
    };
    let subscribe = |subject: String| {
        let client = client.clone();
        async move { client.subscribe(subject).await }
    };
    let subscribed = (
        subscribe(subjects.lobby.clone()).await,
        subscribe(subjects.node(settings.tag)).await,
        subscribe(subjects.heartbeat.clone()).await,
    );
    let (Ok(mut lobby), Ok(mut direct), Ok(mut beats)) = subscribed else {
        return tracing::error!(
            "cannot subscribe to the cluster's subjects: this node stays cut off"
        );
    };
    let window = settings.heartbeat * settings.missed_heartbeats;
    let (room_arrivals, arrived_in_rooms) = flume::unbounded();
    let mut bridge = Bridge {
        liveness: Liveness::new(settings.tag, &settings.node_name, window),
        replica: Replica::new(settings.tag),
        settings,
        shared,
        deliver,
        client,
        store: None,
        rooms_store: None,
        owners: OwnerReplica::default(),
        placing: HashMap::new(),
        room_subs: RoomSubs::new(),
        room_generation: 0,
        room_arrivals,
        moving: HashMap::new(),
        seq: 0,
        lobby_seen: Dedup::default(),
        direct_seen: Dedup::default(),
        mine: HashMap::new(),
        claiming: HashMap::new(),
        stale: Vec::new(),
        setting_up: false,
        jetstream_failing: false,
        subjects,
    };
    tracing::info!(node = %bridge.settings.node_name, tag = format!("{:08x}", bridge.settings.tag), urls = ?bridge.settings.urls, "cluster bridge started");
    let mut tasks: FuturesUnordered<Task> = FuturesUnordered::new();
    let mut watch: Option<Watch> = None;
    let mut owners_watch: Option<Watch> = None;
    let mut tick = tokio::time::interval(bridge.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = outgoing.recv_async() => match out {
                Ok(out) => bridge.outgoing(out, &mut tasks).await,
                Err(_) => break,
            },
            first = next_arrival(&mut lobby, &mut direct) => {
                for (on_lobby, message) in in_publish_order(first, &mut lobby, &mut direct) {
                    bridge.arrived(on_lobby, message).await;
                }
            }
            Some(message) = beats.next() => bridge.beat(&message.payload),
            Ok(arrival) = arrived_in_rooms.recv_async() => bridge.room_arrived(arrival).await,
            entry = next_owner(&mut owners_watch) => match entry {
                Some(Ok(entry)) => bridge.owner_watched(entry).await,
                other => {
                    tracing::warn!(error = ?other.and_then(Result::err), "the rooms watch ended; it restarts");
                    owners_watch = None;
                    bridge.lost();
                }
            },
            entry = next_entry(&mut watch) => match entry {
                Some(Ok(entry)) => bridge.watched(entry, &mut tasks).await,
                other => {
                    tracing::warn!(error = ?other.and_then(Result::err), "the names watch ended; it restarts");
                    watch = None;
                    bridge.lost();
                }
            },
            Ok(event) = events.recv_async() => bridge.event(event, &mut tasks),
            _ = tick.tick() => bridge.tick(&mut tasks).await,
            Some(done) = tasks.next(), if !tasks.is_empty() => {
                if let Some((names, rooms)) = bridge.done(done, &mut tasks).await {
                    watch = Some(names);
                    owners_watch = Some(rooms);
                }
            }
        }
    }
    // The cores have ended: their last releases are queued before this. Let them finish.
    let limit = bridge.settings.request_timeout;
    let finish = async {
        while let Some(done) = tasks.next().await {
            bridge.done(done, &mut tasks).await;
        }
        let subject = bridge.subjects.heartbeat.clone();
        let name = bridge.settings.node_name.clone();
        bridge.publish(subject, GOODBYE, name.as_bytes()).await;
        let _ = bridge.client.flush().await;
    };
    let _ = tokio::time::timeout(limit, finish).await;
    tracing::info!("cluster bridge stopped");
}

/// The next message on the lobby (`true`) or on this node's subject; pending once both end.
async fn next_arrival(lobby: &mut Subscriber, direct: &mut Subscriber) -> (bool, Bytes) {
    tokio::select! {
        Some(message) = lobby.next() => (true, message.payload),
        Some(message) = direct.next() => (false, message.payload),
        else => std::future::pending().await,
    }
}

/// `first` and every message already waiting on either subscription, each origin's in the order
/// it published them. NATS delivers one publisher's messages to one subscriber in order across
/// subjects, and async-nats hands them to the subscriptions in that order, but two subscriptions
/// are two queues: taking whichever is ready could put a sender's direct message before the
/// broadcast it sent first. Anything published earlier than a waiting message is waiting too, so
/// sorting what waits by (origin, seq) restores the order; the sort is stable and cheap (the
/// batch is what arrived during one turn of the loop).
fn in_publish_order(
    first: (bool, Bytes),
    lobby: &mut Subscriber,
    direct: &mut Subscriber,
) -> Vec<(bool, Bytes)> {
    let mut batch = vec![first];
    for (on_lobby, subscription) in [(true, lobby), (false, direct)] {
        while let Some(Some(message)) = subscription.next().now_or_never() {
            batch.push((on_lobby, message.payload));
        }
    }
    if batch.len() > 1 {
        batch.sort_by_key(|(_, message)| envelope::decode(message).map(|e| (e.origin, e.seq)));
    }
    batch
}

async fn next_entry(watch: &mut Option<Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

impl<D: Deliver> Bridge<D> {
    pub(super) fn connected(&self) -> bool {
        self.shared.is_connected()
    }

    /// Publishes in order on this node's one connection. Not while cut off: the client would
    /// buffer, and once its buffer is full the await would stall the whole loop. The cores are
    /// told `CLUSTER_UNAVAILABLE` for sends refused while cut off; what was already queued for the
    /// bridge when NATS dropped is lost (counted as refused).
    pub(super) async fn publish(&mut self, subject: String, kind: u8, payload: &[u8]) {
        if !self.connected() {
            return self.shared.counters.refused.bump();
        }
        self.seq += 1;
        let message = envelope::encode(kind, self.settings.tag, self.seq, payload);
        match self.client.publish(subject, message).await {
            Ok(()) => self.shared.counters.published.bump(),
            Err(error) => {
                self.shared.counters.refused.bump();
                tracing::debug!(%error, "publish failed");
            }
        }
    }

    async fn outgoing(&mut self, out: Outgoing, tasks: &mut FuturesUnordered<Task>) {
        match out {
            Outgoing::All { kind, payload } => {
                let subject = self.subjects.lobby.clone();
                self.publish(subject, kind, &payload).await;
            }
            Outgoing::Node {
                node,
                kind,
                payload,
            } => {
                if !self.liveness.is_alive(node) {
                    let inbound = Inbound::Unreachable { kind, payload };
                    return self.deliver.deliver(inbound).await;
                }
                let subject = self.subjects.node(node);
                self.publish(subject, kind, &payload).await;
            }
            Outgoing::ToOwner {
                room,
                kind,
                payload,
            } => self.route_to_owner(room, kind, payload, tasks).await,
            Outgoing::RoomFeed {
                room,
                kind,
                payload,
            } => self.room_feed(&room, kind, &payload).await,
            Outgoing::WatchRoom { room, core, watch } => self.watch_room(room, core, watch).await,
            Outgoing::Claim {
                name,
                member,
                reply,
            } => self.claim(name, member, reply, tasks),
            Outgoing::Release { name, member } => {
                let key = names::key(&name);
                match self.mine.get(&key) {
                    Some(mine) if mine.member == member => {
                        let revision = mine.revision;
                        self.mine.remove(&key);
                        self.release(key, revision, tasks);
                    }
                    _ => {
                        // Its claim is still out, or the name is not its own any more.
                        if let Some(released) = self.claiming.get_mut(&(key, member)) {
                            *released = true;
                        }
                    }
                }
            }
        }
    }

    /// A message from another node on the lobby (`lobby`) or on this node's subject.
    async fn arrived(&mut self, lobby: bool, message: Bytes) {
        let Some(envelope) = envelope::decode(&message) else {
            return tracing::debug!("a cluster message this version did not write: dropped");
        };
        if envelope.origin == self.settings.tag {
            return;
        }
        let seen = match lobby {
            true => &mut self.lobby_seen,
            false => &mut self.direct_seen,
        };
        if !seen.first_time(envelope.origin, envelope.seq) {
            return self.shared.counters.duplicates.bump();
        }
        self.shared.counters.received.bump();
        let inbound = Inbound::Message {
            kind: envelope.kind,
            payload: envelope.payload,
        };
        self.deliver.deliver(inbound).await;
    }

    fn beat(&mut self, message: &Bytes) {
        let Some(envelope) = envelope::decode(message) else {
            return;
        };
        let name = String::from_utf8_lossy(&envelope.payload);
        if envelope.kind == GOODBYE {
            if self.liveness.left(envelope.origin) {
                tracing::info!(node = %name, tag = format!("{:08x}", envelope.origin), "node left the cluster");
            }
            return;
        }
        if self.liveness.heard(envelope.origin, &name, Instant::now()) {
            tracing::info!(node = %name, tag = format!("{:08x}", envelope.origin), "node joined the cluster");
        }
    }

    fn event(&mut self, event: Event, tasks: &mut FuturesUnordered<Task>) {
        match event {
            Event::Connected => self.set_up(tasks),
            Event::Disconnected => self.lost(),
            Event::SlowConsumer(sid) => {
                // One event per dropped message: log the 1st, 2nd, 4th, 8th... so a flood of them
                // costs a few lines, each with the count so far.
                let events = &self.shared.counters.slow_consumer;
                events.bump();
                if events.get().is_power_of_two() {
                    tracing::warn!(
                        subscription = sid,
                        events = events.get(),
                        "this node fell behind NATS (slow consumer): messages were dropped"
                    );
                }
            }
            other => tracing::info!(event = %other, "NATS"),
        }
    }

    /// Cut off from NATS (or the watch broke): sends fail at once until the node is back.
    pub(super) fn lost(&mut self) {
        if self.connected() {
            tracing::warn!(urls = ?self.settings.urls, "cut off from NATS: local chat goes on, cross-node sends and new logins get CLUSTER_UNAVAILABLE, /readyz says 503");
        }
        self.shared.set_connected(false);
    }

    /// Every heartbeat interval: beat, notice who died, and free the dead's names if it falls to
    /// this node. Also catches a connection state change whose event was missed.
    async fn tick(&mut self, tasks: &mut FuturesUnordered<Task>) {
        let state = self.client.connection_state();
        if state == async_nats::connection::State::Connected {
            self.set_up(tasks);
        } else {
            self.lost();
        }
        if !self.connected() {
            return;
        }
        let subject = self.subjects.heartbeat.clone();
        let name = self.settings.node_name.clone();
        self.publish(subject, HEARTBEAT, name.as_bytes()).await;
        for (tag, name) in self.liveness.sweep(Instant::now()) {
            self.shared.counters.dead_nodes.bump();
            self.lobby_seen.forget(tag);
            self.direct_seen.forget(tag);
            tracing::warn!(node = %name, tag = format!("{tag:08x}"), live = self.liveness.live(), "node missed its heartbeats: counted dead");
        }
        if !self.liveness.cleans_up() {
            return;
        }
        self.move_dead_owners_rooms(tasks);
        let dead: HashSet<NodeTag> = (self.replica.tags())
            .filter(|&tag| !self.liveness.is_alive(tag))
            .collect();
        for tag in dead {
            let keys = self.replica.keys_of(tag);
            tracing::info!(
                tag = format!("{tag:08x}"),
                names = keys.len(),
                "freeing a dead node's names"
            );
            for (key, revision) in keys {
                self.release(key, revision, tasks);
            }
        }
    }
}
