//! The names bucket's side of the bridge: claims, releases and re-asserts of this node's names,
//! the watch that keeps the replica, and setting the bucket up after each (re)connect. Every request
//! runs beside the bridge's loop as a [`Task`], bounded by `CLUSTER_REQUEST_TIMEOUT`, and its
//! [`Done`] comes back into the loop, which alone touches the bridge's state.

use std::time::Instant;

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, Store, Watch};
use futures_util::stream::FuturesUnordered;

use super::bridge::{Bridge, Task};
use super::names::{self, Change, Holder};
use super::{ClaimOutcome, Deliver, Inbound, MemberId};

/// A name of this node's member, as claimed in the bucket.
#[derive(Debug, Clone)]
pub(super) struct Mine {
    pub(super) member: MemberId,
    pub(super) name: String,
    pub(super) revision: u64,
}

/// What a request beside the loop came back with.
pub(super) enum Done {
    /// Both buckets are there and watched (after a connect or reconnect): names, then rooms.
    Ready(Result<Box<Buckets>, String>),
    /// A room placed in the rooms bucket (by this node or the winner of a race): the value and
    /// its revision; `None` if the bucket did not answer.
    Placed {
        key: String,
        placed: Option<(bytes::Bytes, u64)>,
    },
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

/// The names bucket and its watch, the rooms bucket and its watch.
pub(super) type Buckets = (Store, Watch, Store, Watch);

/// The stream behind a bucket (names or rooms), as `create_key_value` would make it: one value per
/// key, deletes as markers, file storage so that a NATS restart keeps them.
fn bucket_stream(bucket: &str) -> async_nats::jetstream::stream::Config {
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

impl<D: Deliver> Bridge<D> {
    pub(super) fn claim(
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
        self.claiming.insert((key.clone(), member), false);
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

    pub(super) fn release(
        &mut self,
        key: String,
        revision: u64,
        tasks: &mut FuturesUnordered<Task>,
    ) {
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

    pub(super) async fn watched(&mut self, entry: kv::Entry, tasks: &mut FuturesUnordered<Task>) {
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

    pub(super) async fn lose(&mut self, mine: Mine) {
        tracing::warn!(name = %mine.name, "another node holds the name of a user of this node: disconnecting the user");
        let inbound = Inbound::NameLost {
            name: mine.name,
            member: mine.member,
        };
        self.deliver.deliver(inbound).await;
    }

    /// Deletes `key` if `member` holds it: the clean-up after a claim whose answer did not come.
    fn forget_if_ours(
        &mut self,
        key: String,
        member: MemberId,
        tasks: &mut FuturesUnordered<Task>,
    ) {
        let Some(store) = self.store.clone() else {
            return;
        };
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let forget = async {
                let entry = store.entry(key.clone()).await.ok().flatten()?;
                let (_, holder, _) = Holder::decode(&entry.value)?;
                let revision = Some(entry.revision);
                (holder == member).then_some(store.delete_expect_revision(&key, revision).await)
            };
            let _ = tokio::time::timeout(limit, forget).await;
            Done::Nothing
        }));
    }

    pub(super) fn reassert(&mut self, key: String, mine: Mine, tasks: &mut FuturesUnordered<Task>) {
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
                    Err(error) => {
                        tracing::warn!(%error, "re-asserting a name failed");
                        Some(mine.revision)
                    }
                }
            };
            let kept = tokio::time::timeout(limit, asserted)
                .await
                .unwrap_or(Some(mine.revision));
            Done::Reasserted { key, mine, kept }
        }));
    }

    /// After a (re)connect: finds or makes the names and rooms buckets and watches them.
    pub(super) fn set_up(&mut self, tasks: &mut FuturesUnordered<Task>) {
        if self.setting_up || self.connected() {
            return;
        }
        self.setting_up = true;
        let jetstream = async_nats::jetstream::new(self.client.clone());
        let buckets = [
            self.settings.bucket.clone(),
            self.settings.rooms_bucket.clone(),
        ];
        let limit = self.settings.request_timeout;
        tasks.push(Box::pin(async move {
            let open = |bucket: String| {
                let jetstream = jetstream.clone();
                async move {
                    let store = match jetstream.get_key_value(&bucket).await {
                        Ok(store) => store,
                        Err(_) => {
                            // Made as a plain stream: `create_key_value` first asks for account
                            // details that nats-server 2.9 answers in a form this client rejects.
                            let config = bucket_stream(&bucket);
                            let made = jetstream.get_or_create_stream(config).await;
                            made.map_err(|e| format!("cannot create the bucket {bucket}: {e}"))?;
                            (jetstream.get_key_value(&bucket).await).map_err(|e| e.to_string())?
                        }
                    };
                    // Every key's latest value (or delete marker) first, then what changes:
                    // `watch_all` would start at new changes only, and miss what was held before.
                    let watch = store
                        .watch_with_history(">")
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((store, watch))
                }
            };
            let ready = async {
                let [names, rooms] = buckets;
                let (names, names_watch) = open(names).await?;
                let (rooms, rooms_watch) = open(rooms).await?;
                Ok(Box::new((names, names_watch, rooms, rooms_watch)))
            };
            let ready = tokio::time::timeout(limit, ready).await;
            Done::Ready(ready.unwrap_or_else(|_| Err("JetStream did not answer in time".into())))
        }));
    }

    /// Acts on a request that came back; a new watch is the caller's to keep.
    pub(super) async fn done(
        &mut self,
        done: Done,
        tasks: &mut FuturesUnordered<Task>,
    ) -> Option<(Watch, Watch)> {
        match done {
            Done::Ready(Ok(ready)) => {
                let (store, watch, rooms, rooms_watch) = *ready;
                self.setting_up = false;
                self.jetstream_failing = false;
                self.store = Some(store);
                self.rooms_store = Some(rooms);
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
                self.reassert_rooms(tasks);
                return Some((watch, rooms_watch));
            }
            Done::Ready(Err(error)) => {
                self.setting_up = false;
                if !self.jetstream_failing {
                    self.jetstream_failing = true;
                    tracing::warn!(%error, "NATS is reachable but its JetStream is not: this node stays cut off and retries");
                }
            }
            Done::Claim {
                key,
                mut mine,
                reply,
                result,
            } => {
                let member = mine.member;
                let released = self.claiming.remove(&(key.clone(), member));
                let outcome = match result {
                    Ok(revision) => {
                        mine.revision = revision;
                        if released == Some(true) {
                            self.release(key, revision, tasks);
                        } else {
                            self.mine.insert(key, mine);
                        }
                        ClaimOutcome::Claimed
                    }
                    Err(Some(CreateErrorKind::AlreadyExists)) => ClaimOutcome::Taken,
                    Err(None) => {
                        // Timed out: the create may still have happened. The login is refused,
                        // so the name must not stay this member's.
                        self.forget_if_ours(key, member, tasks);
                        ClaimOutcome::Unavailable
                    }
                    Err(Some(_)) => ClaimOutcome::Unavailable,
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
            Done::Placed { key, placed } => self.placed(key, placed).await,
            Done::Nothing => {}
        }
        None
    }
}
