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

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, Watch};
use async_nats::{Client, ConnectOptions, Event};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::envelope::{self, Dedup};
use super::liveness::Liveness;
use super::names::{self, Change, Holder, Replica};
use super::{
    ClaimOutcome, Cluster, Deliver, Inbound, MemberId, NodeTag, Outgoing, Settings, Shared,
};

/// The kind of a heartbeat (the layer above uses kinds from 1 up; this one is the bridge's own).
const HEARTBEAT: u8 = 0;
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

/// A name of this node's member, as claimed in the bucket.
#[derive(Debug, Clone)]
struct Mine {
    member: MemberId,
    name: String,
    revision: u64,
}

/// What a request beside the loop came back with.
enum Done {
    /// The bucket is there and watched (after a connect or reconnect).
    Ready(Result<(Store, Watch), String>),
    Claim {
        key: String,
        mine: Mine,
        reply: flume::Sender<ClaimOutcome>,
        result: Result<u64, Option<CreateErrorKind>>,
    },
    /// A re-assert after a reconnect: `Some(revision)` kept the name, `None` lost it.
    Reasserted {
        key: String,
        mine: Mine,
        kept: Option<u64>,
    },
    /// A release that failed: retried after the next reconnect.
    ReleaseFailed {
        key: String,
        revision: u64,
    },
    Nothing,
}

type Task = Pin<Box<dyn Future<Output = Done>>>;

struct Bridge<D> {
    settings: Settings,
    shared: Arc<Shared>,
    deliver: D,
    client: Client,
    store: Option<Store>,
    /// Numbers everything this node publishes (envelope.rs).
    seq: u64,
    lobby_seen: Dedup,
    direct_seen: Dedup,
    liveness: Liveness,
    replica: Replica,
    /// This node's members' names, by key.
    mine: HashMap<String, Mine>,
    /// Releases that arrived while their claim was still out: (key, member).
    released_early: HashSet<(String, MemberId)>,
    /// Releases that failed while NATS was away, retried after the next reconnect.
    stale: Vec<(String, u64)>,
    setting_up: bool,
    subjects: Subjects,
}

struct Subjects {
    lobby: String,
    heartbeat: String,
    prefix: String,
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
        .max_reconnects(None)
        .connection_timeout(settings.request_timeout)
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
    let mut bridge = Bridge {
        liveness: Liveness::new(settings.tag, &settings.node_name, window),
        replica: Replica::new(settings.tag),
        settings,
        shared,
        deliver,
        client,
        store: None,
        seq: 0,
        lobby_seen: Dedup::default(),
        direct_seen: Dedup::default(),
        mine: HashMap::new(),
        released_early: HashSet::new(),
        stale: Vec::new(),
        setting_up: false,
        subjects,
    };
    tracing::info!(node = %bridge.settings.node_name, tag = format!("{:08x}", bridge.settings.tag), urls = ?bridge.settings.urls, "cluster bridge started");
    let mut tasks: FuturesUnordered<Task> = FuturesUnordered::new();
    let mut watch: Option<Watch> = None;
    let mut tick = tokio::time::interval(bridge.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            out = outgoing.recv_async() => match out {
                Ok(out) => bridge.outgoing(out, &mut tasks).await,
                Err(_) => break,
            },
            Some(message) = lobby.next() => bridge.arrived(true, message.payload).await,
            Some(message) = direct.next() => bridge.arrived(false, message.payload).await,
            Some(message) = beats.next() => bridge.beat(&message.payload),
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
                if let Some(new_watch) = bridge.done(done, &mut tasks).await {
                    watch = Some(new_watch);
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
        let _ = bridge.client.flush().await;
    };
    let _ = tokio::time::timeout(limit, finish).await;
    tracing::info!("cluster bridge stopped");
}

/// The stream behind the names bucket, as `create_key_value` would make it: one value per key,
/// deletes as markers, file storage so that a NATS restart keeps the names.
fn names_stream(bucket: &str) -> async_nats::jetstream::stream::Config {
    use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType};
    Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        storage: StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    }
}

async fn next_entry(watch: &mut Option<Watch>) -> Option<Result<kv::Entry, kv::WatcherError>> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

impl<D: Deliver> Bridge<D> {
    fn connected(&self) -> bool {
        self.shared.is_connected()
    }

    async fn publish(&mut self, subject: String, kind: u8, payload: &[u8]) {
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
                        self.released_early.insert((key, member));
                    }
                }
            }
        }
    }

    fn claim(
        &mut self,
        name: String,
        member: MemberId,
        reply: flume::Sender<ClaimOutcome>,
        tasks: &mut FuturesUnordered<Task>,
    ) {
        let Some(store) = self.store.clone().filter(|_| self.connected()) else {
            let _ = reply.try_send(ClaimOutcome::Unavailable);
            return;
        };
        let key = names::key(&name);
        let holder = Holder::new(self.settings.tag, &self.settings.node_name, member, &name);
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let created = tokio::time::timeout(limit, store.create(&key, holder.encode())).await;
            let result = match created {
                Ok(Ok(revision)) => Ok(revision),
                Ok(Err(error)) => Err(Some(error.kind())),
                Err(_) => Err(None),
            };
            let mine = Mine {
                member,
                name,
                revision: 0,
            };
            Done::Claim {
                key,
                mine,
                reply,
                result,
            }
        }));
    }

    fn release(&mut self, key: String, revision: u64, tasks: &mut FuturesUnordered<Task>) {
        let Some(store) = self.store.clone().filter(|_| self.connected()) else {
            return self.stale.push((key, revision));
        };
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let deleted = store.delete_expect_revision(&key, Some(revision));
            match tokio::time::timeout(limit, deleted).await {
                Ok(Ok(())) => Done::Nothing,
                // Someone else's now (a survivor freed it, another node took it): not ours to free.
                Ok(Err(error)) if error.kind() == kv::DeleteErrorKind::Other => Done::Nothing,
                _ => Done::ReleaseFailed { key, revision },
            }
        }));
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
        if self.liveness.heard(envelope.origin, &name, Instant::now()) {
            tracing::info!(node = %name, tag = format!("{:08x}", envelope.origin), "node joined the cluster");
        }
    }

    async fn watched(&mut self, entry: kv::Entry, tasks: &mut FuturesUnordered<Task>) {
        let key = entry.key;
        let changes = match entry.operation {
            Operation::Put => {
                if let Some(mine) = self.mine.get(&key) {
                    let ours = Holder::decode(&entry.value).is_some_and(|(tag, member, _)| {
                        tag == self.settings.tag && member == mine.member
                    });
                    if !ours {
                        let mine = self.mine.remove(&key).expect("looked up above");
                        self.lose(mine).await;
                    }
                }
                self.replica.put(&key, &entry.value, entry.revision)
            }
            Operation::Delete | Operation::Purge => {
                if let Some(mine) = self.mine.get(&key).filter(|m| m.revision < entry.revision) {
                    // A survivor thought this node dead and freed the name: take it back.
                    tracing::warn!(name = %mine.name, "a name of this node was freed by another; re-asserting it");
                    let mine = mine.clone();
                    self.reassert(key.clone(), mine, tasks);
                }
                self.replica.delete(&key).into_iter().collect()
            }
        };
        let now = Instant::now();
        for change in changes {
            let inbound = match change {
                Change::Joined(held) => {
                    self.liveness.holds_names(held.tag, now);
                    Inbound::Joined {
                        name: held.name,
                        member: held.member,
                    }
                }
                Change::Left(held) => Inbound::Left {
                    name: held.name,
                    member: held.member,
                },
            };
            self.deliver.deliver(inbound).await;
        }
    }

    async fn lose(&mut self, mine: Mine) {
        tracing::warn!(name = %mine.name, "another node holds the name of a user of this node: disconnecting the user");
        let inbound = Inbound::NameLost {
            name: mine.name,
            member: mine.member,
        };
        self.deliver.deliver(inbound).await;
    }

    fn reassert(&mut self, key: String, mine: Mine, tasks: &mut FuturesUnordered<Task>) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let value = Holder::new(
            self.settings.tag,
            &self.settings.node_name,
            mine.member,
            &mine.name,
        );
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let asserted = async {
                match store.create(&key, value.encode()).await {
                    Ok(revision) => Some(revision),
                    Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {
                        let entry = store.entry(key.clone()).await.ok().flatten()?;
                        let holder = Holder::decode(&entry.value)?;
                        (holder.1 == mine.member).then_some(entry.revision)
                    }
                    Err(_) => Some(mine.revision),
                }
            };
            let kept = tokio::time::timeout(limit, asserted)
                .await
                .unwrap_or(Some(mine.revision));
            Done::Reasserted { key, mine, kept }
        }));
    }

    fn event(&mut self, event: Event, tasks: &mut FuturesUnordered<Task>) {
        match event {
            Event::Connected => self.set_up(tasks),
            Event::Disconnected => self.lost(),
            Event::SlowConsumer(sid) => {
                self.shared.counters.slow_consumer.bump();
                tracing::warn!(
                    subscription = sid,
                    "this node fell behind NATS (slow consumer): messages were dropped"
                );
            }
            other => tracing::info!(event = %other, "NATS"),
        }
    }

    /// Cut off from NATS (or the watch broke): sends fail at once until the node is back.
    fn lost(&mut self) {
        if self.connected() {
            tracing::warn!(urls = ?self.settings.urls, "cut off from NATS: local chat goes on, cross-node sends and new logins get CLUSTER_UNAVAILABLE, /readyz says 503");
        }
        self.shared.set_connected(false);
    }

    /// After a (re)connect: finds or makes the names bucket and watches it.
    fn set_up(&mut self, tasks: &mut FuturesUnordered<Task>) {
        if self.setting_up || self.connected() {
            return;
        }
        self.setting_up = true;
        let jetstream = async_nats::jetstream::new(self.client.clone());
        let bucket = self.settings.bucket.clone();
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let ready = async {
                let store = match jetstream.get_key_value(&bucket).await {
                    Ok(store) => store,
                    Err(_) => {
                        // Made as a plain stream: `create_key_value` first asks for account
                        // details that nats-server 2.9 answers in a form this client rejects.
                        let config = names_stream(&bucket);
                        let made = jetstream.get_or_create_stream(config).await;
                        made.map_err(|e| format!("cannot create the names bucket {bucket}: {e}"))?;
                        (jetstream.get_key_value(&bucket).await).map_err(|e| e.to_string())?
                    }
                };
                let watch = store.watch_all().await.map_err(|e| e.to_string())?;
                Ok((store, watch))
            };
            let ready = tokio::time::timeout(limit, ready).await;
            Done::Ready(ready.unwrap_or_else(|_| Err("JetStream did not answer in time".into())))
        }));
    }

    /// Acts on a request that came back; a new watch is the caller's to keep.
    async fn done(&mut self, done: Done, tasks: &mut FuturesUnordered<Task>) -> Option<Watch> {
        match done {
            Done::Ready(Ok((store, watch))) => {
                self.setting_up = false;
                self.store = Some(store);
                self.shared.set_connected(true);
                self.liveness.restart_clocks(Instant::now());
                tracing::info!(
                    names = self.mine.len(),
                    "connected to NATS: the cluster is reachable"
                );
                let mine: Vec<(String, Mine)> = self
                    .mine
                    .iter()
                    .map(|(k, m)| (k.clone(), m.clone()))
                    .collect();
                for (key, mine) in mine {
                    self.reassert(key, mine, tasks);
                }
                for (key, revision) in std::mem::take(&mut self.stale) {
                    self.release(key, revision, tasks);
                }
                return Some(watch);
            }
            Done::Ready(Err(error)) => {
                self.setting_up = false;
                tracing::warn!(%error, "NATS is reachable but its JetStream is not: this node stays cut off and retries");
            }
            Done::Claim {
                key,
                mut mine,
                reply,
                result,
            } => {
                let member = mine.member;
                let outcome = match result {
                    Ok(revision) => {
                        mine.revision = revision;
                        if self.released_early.remove(&(key.clone(), member)) {
                            self.release(key, revision, tasks);
                        } else {
                            self.mine.insert(key, mine);
                        }
                        ClaimOutcome::Claimed
                    }
                    other => {
                        self.released_early.remove(&(key, member));
                        match other {
                            Err(Some(CreateErrorKind::AlreadyExists)) => ClaimOutcome::Taken,
                            _ => ClaimOutcome::Unavailable,
                        }
                    }
                };
                let _ = reply.try_send(outcome);
            }
            Done::Reasserted {
                key,
                mut mine,
                kept,
            } => match kept {
                Some(revision) => {
                    if let Some(current) =
                        self.mine.get_mut(&key).filter(|m| m.member == mine.member)
                    {
                        current.revision = revision;
                    }
                }
                None => {
                    if self.mine.get(&key).is_some_and(|m| m.member == mine.member) {
                        self.mine.remove(&key);
                        mine.revision = 0;
                        self.lose(mine).await;
                    }
                }
            },
            Done::ReleaseFailed { key, revision } => self.stale.push((key, revision)),
            Done::Nothing => {}
        }
        None
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
