//! The rooms a core owns: where each room's seq is given, its history kept, its members listed,
//! and its presence coalesced. Only the owner core touches any of it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::chat::counters::ChatCounters;
use crate::chat::presence::{PresenceBatch, Scope};
use crate::chat::protocol::{self, ErrorCode, UserEntry};
use crate::chat::user_id::UserId;
use crate::config::Config;

use super::directory::RoomDirectory;
use super::frames::{self, JoinAnswer};
use super::history::{History, Ledger};
use super::RoomName;

/// The limits an owner applies, from the configuration.
#[derive(Clone, Debug)]
pub struct OwnerLimits {
    pub history_messages: usize,
    pub history_bytes: usize,
    /// This core's share of `--history-total-bytes`.
    pub history_budget: usize,
    pub room_idle_ttl: Duration,
    pub list_limit: usize,
    pub presence_names: usize,
    pub presence_limit: usize,
    pub presence_count_interval: Duration,
}

impl OwnerLimits {
    pub fn new(config: &Config) -> OwnerLimits {
        OwnerLimits {
            history_messages: config.history_messages,
            history_bytes: config.history_bytes,
            history_budget: config.history_total_bytes / config.cores,
            room_idle_ttl: config.room_idle_ttl,
            list_limit: config.user_list_limit,
            presence_names: config.presence_names,
            presence_limit: config.presence_limit,
            presence_count_interval: config.presence_count_interval,
        }
    }
}

struct OwnedRoom {
    /// Changes whenever the room's seq restarts: a new room, or the same name after it was dropped.
    epoch: Arc<str>,
    /// The last message's seq; 0 before the first.
    seq: u64,
    history: History,
    /// Member names, for `join_response` and `members` pages. A plain map: the owner never fans
    /// out over it (each core has its own roster for that), and a map entry is half a roster's.
    members: HashMap<UserId, Arc<str>>,
    /// Members per core of this node, and the cores with any: where each message is sent.
    members_on: Vec<u32>,
    cores_with_members: Vec<usize>,
    /// In a cluster: members per other node (by tag). Any at all: each message is published
    /// once on the room's subject.
    members_elsewhere: Vec<(u32, u32)>,
    presence: PresenceBatch,
    presence_sent: Instant,
    /// Set while the room has no members: it is dropped `--room-idle-ttl` after.
    empty_since: Option<Instant>,
    /// Whether the room is in the owner's list of empty rooms to check for expiry.
    listed_empty: bool,
}

/// The answer to a join: the frames for the member (the answer, then the replay).
pub type JoinFrames = Vec<Bytes>;

pub struct OwnedRooms {
    core: usize,
    /// This node's tag: members with another are on other nodes.
    node: u32,
    cores: usize,
    limits: OwnerLimits,
    directory: Arc<RoomDirectory>,
    rooms: HashMap<RoomName, OwnedRoom>,
    ledger: Ledger,
    /// Where the rooms, memberships and history bytes of this core are counted.
    counters: Arc<ChatCounters>,
    /// Rooms with joins or leaves not yet announced, and empty rooms waiting for expiry.
    presence_due: Vec<RoomName>,
    empty: Vec<RoomName>,
    /// Makes epochs unique: the server's start, this core, and a count of rooms it created.
    epoch_prefix: String,
    created: u64,
}

impl OwnedRooms {
    /// `clustered`: epochs name the node too, since rooms move between nodes.
    pub fn new(
        core: usize,
        cores: usize,
        node: (u32, bool),
        limits: OwnerLimits,
        directory: Arc<RoomDirectory>,
        counters: Arc<ChatCounters>,
    ) -> OwnedRooms {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (node, clustered) = node;
        let epoch_prefix = match clustered {
            true => format!("{started:x}-{node:08x}-{core}-"),
            false => format!("{started:x}-{core}-"),
        };
        OwnedRooms {
            core,
            node,
            cores,
            ledger: Ledger::new(limits.history_budget),
            limits,
            directory,
            counters,
            rooms: HashMap::new(),
            presence_due: Vec::new(),
            empty: Vec::new(),
            epoch_prefix,
            created: 0,
        }
    }

    /// Adds `user` (on core `user.core()` of node `user.node()`) to `room`, creating the room on
    /// first join, and returns what the member gets: the `join_response` and the replay after
    /// `since` (all history holds, and `recovered: false`, on a `restart`), with the room's seq.
    /// Repeating a join answers again. (`--max-rooms` was checked on the member's core.)
    pub fn join(
        &mut self,
        room: &RoomName,
        user: UserId,
        username: &Arc<str>,
        since: Option<u64>,
        restart: bool,
    ) -> (JoinFrames, u64) {
        if !self.rooms.contains_key(room) {
            self.create(room);
        }
        let state = self.rooms.get_mut(room).expect("created above");
        if state.members.insert(user, username.clone()).is_none() {
            self.counters.memberships.add(1);
            if user.node() == self.node {
                let core = user.core();
                state.members_on[core] += 1;
                if state.members_on[core] == 1 {
                    state.cores_with_members.push(core);
                }
            } else {
                match (state.members_elsewhere.iter_mut()).find(|(n, _)| *n == user.node()) {
                    Some((_, count)) => *count += 1,
                    None => state.members_elsewhere.push((user.node(), 1)),
                }
            }
            state.empty_since = None;
            if state.presence.is_empty() {
                self.presence_due.push(room.clone());
            }
            state.presence.joined(user, username);
            self.directory.set_member_count(room, state.members.len());
        }
        let (replay, recovered) = match (since, restart) {
            (_, true) => (state.history.after(0, state.seq).0, Some(false)),
            (Some(since), false) => {
                let (frames, recovered) = state.history.after(since, state.seq);
                (frames, Some(recovered))
            }
            (None, false) => (Vec::new(), None),
        };
        let members = page(&state.members, 0, self.limits.list_limit);
        let answer = frames::join_response(&JoinAnswer {
            room,
            epoch: &state.epoch,
            seq: state.seq,
            recovered,
            member_count: state.members.len(),
            members: &members,
        });
        let mut out = Vec::with_capacity(1 + replay.len());
        out.push(answer);
        out.extend(replay);
        (out, state.seq)
    }

    fn create(&mut self, room: &RoomName) {
        self.directory.list(room);
        self.counters.rooms.add(1);
        self.created += 1;
        let epoch = format!("{}{:x}", self.epoch_prefix, self.created);
        self.rooms.insert(
            room.clone(),
            OwnedRoom {
                epoch: epoch.into(),
                seq: 0,
                history: History::default(),
                members: HashMap::new(),
                members_on: vec![0; self.cores],
                cores_with_members: Vec::new(),
                members_elsewhere: Vec::new(),
                presence: PresenceBatch::new(self.limits.presence_names),
                presence_sent: Instant::now(),
                empty_since: None,
                listed_empty: false,
            },
        );
    }

    /// Takes `user` out of `room`, if it is in it.
    pub fn leave(&mut self, room: &RoomName, user: UserId, username: &Arc<str>) {
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        if state.members.remove(&user).is_none() {
            return;
        }
        self.counters.memberships.add(-1);
        if user.node() == self.node {
            let core = user.core();
            state.members_on[core] -= 1;
            if state.members_on[core] == 0 {
                state.cores_with_members.retain(|&c| c != core);
            }
        } else if let Some(at) =
            (state.members_elsewhere.iter()).position(|&(n, _)| n == user.node())
        {
            state.members_elsewhere[at].1 -= 1;
            if state.members_elsewhere[at].1 == 0 {
                state.members_elsewhere.swap_remove(at);
            }
        }
        if state.presence.is_empty() {
            self.presence_due.push(room.clone());
        }
        state.presence.left(user, username);
        self.directory.set_member_count(room, state.members.len());
        if state.members.is_empty() {
            // An empty room may wait minutes for its members to come back: keep it small.
            state.members.shrink_to_fit();
            state.empty_since = Some(Instant::now());
            if !state.listed_empty {
                state.listed_empty = true;
                self.empty.push(room.clone());
            }
        }
    }

    /// Stamps a message from `user` with the room's next seq and keeps it in history; returns the
    /// seq and the frame. `None` when `user` is not a member (a join the owner refused, or a leave
    /// that crossed the post).
    pub fn post(&mut self, room: &RoomName, user: UserId, body: &[u8]) -> Option<(u64, Bytes)> {
        let state = self.rooms.get_mut(room)?;
        if !state.members.contains_key(&user) {
            return None;
        }
        state.seq += 1;
        let seq = state.seq;
        let frame = protocol::stamp_room_chat(body, seq);
        let freed = state.history.push(
            seq,
            frame.clone(),
            self.limits.history_messages,
            self.limits.history_bytes,
        );
        self.ledger.added(room.clone(), seq, frame.len());
        self.ledger.freed(freed);
        self.enforce_budget();
        self.counters.history_bytes.set(self.ledger.bytes() as i64);
        Some((seq, frame))
    }

    /// The cores that have members of `room`.
    pub fn cores_of(&self, room: &str) -> &[usize] {
        self.rooms
            .get(room)
            .map_or(&[], |state| &state.cores_with_members)
    }

    /// Whether `room` has members on other nodes.
    pub fn has_members_elsewhere(&self, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|state| !state.members_elsewhere.is_empty())
    }

    /// A `member_list` page for a member of `room`, or `NOT_IN_ROOM`.
    pub fn members_page(&self, room: &str, user: UserId, offset: usize) -> Bytes {
        let Some(state) = self
            .rooms
            .get(room)
            .filter(|s| s.members.contains_key(&user))
        else {
            return not_in_room(room);
        };
        let members = page(&state.members, offset, self.limits.list_limit);
        frames::member_list(room, offset, &members, state.members.len())
    }

    /// Presence frames now due, with the room they are for; and rooms idle past their time dropped.
    pub fn tick(&mut self, now: Instant) -> Vec<(RoomName, Bytes)> {
        self.expire(now);
        let mut frames = Vec::new();
        let mut still_due = Vec::new();
        for room in std::mem::take(&mut self.presence_due) {
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            let member_count = state.members.len();
            let counts_only = member_count > self.limits.presence_limit;
            let interval = self.limits.presence_count_interval;
            if counts_only && now.duration_since(state.presence_sent) < interval {
                still_due.push(room);
                continue;
            }
            state.presence_sent = now;
            let scope = Scope::Room {
                room: &room,
                member_count,
            };
            if let Some(frame) = state.presence.take_frame(scope, self.limits.presence_limit) {
                frames.push((room, frame));
            }
        }
        self.presence_due = still_due;
        frames
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.limits.room_idle_ttl;
        let mut waiting = Vec::new();
        for room in std::mem::take(&mut self.empty) {
            let Some(state) = self.rooms.get_mut(&room) else {
                continue;
            };
            let Some(since) = state.empty_since else {
                state.listed_empty = false;
                continue;
            };
            if now.duration_since(since) < ttl {
                waiting.push(room);
                continue;
            }
            let state = self.rooms.remove(&room).expect("looked up above");
            self.ledger.freed(super::history::Freed {
                messages: state.history.len(),
                bytes: state.history.bytes(),
            });
            self.directory.remove(&room);
            self.counters.rooms.add(-1);
            self.counters.history_bytes.set(self.ledger.bytes() as i64);
            tracing::debug!(core = self.core, %room, "idle room dropped");
        }
        self.empty = waiting;
    }

    /// Drops the core's oldest messages, whichever rooms hold them, until the budget holds.
    fn enforce_budget(&mut self) {
        while self.ledger.over_budget() {
            let Some((room, seq)) = self.ledger.pop_oldest() else {
                break;
            };
            if let Some(state) = self.rooms.get_mut(&room) {
                if state.history.oldest_seq() == Some(seq) {
                    let bytes = state.history.pop_oldest();
                    self.ledger
                        .freed(super::history::Freed { messages: 1, bytes });
                }
            }
        }
        let rooms = &self.rooms;
        self.ledger
            .sweep(|room, seq| rooms.get(room).is_some_and(|s| s.history.holds(seq)));
    }

    /// Bytes of history this core holds.
    pub fn history_bytes(&self) -> usize {
        self.ledger.bytes()
    }
}

/// Up to `limit` members from `offset`, in the map's order (stable while nobody joins or leaves).
fn page(members: &HashMap<UserId, Arc<str>>, offset: usize, limit: usize) -> Vec<UserEntry> {
    members
        .iter()
        .skip(offset)
        .take(limit)
        .map(|(id, name)| UserEntry::new(*id, name))
        .collect()
}

/// The error for a room request from a non-member.
pub fn not_in_room(room: &str) -> Bytes {
    let shown: String = room.chars().take(64).collect();
    let reason = format!("you are not in the room `{shown}`: join it first");
    protocol::error(ErrorCode::NotInRoom, &reason)
}
