//! Rooms (`--rooms N`): who is in which room, who posts into it, and how many reading members
//! each room has right now, which is what every message posted into it is expected to reach.
//!
//! Assignment is round robin over the client index: client `i` is in rooms `(i*K + j) mod N` for
//! `j in 0..K`. Over all clients `i*K + j` counts 0, 1, 2, ..., so every room gets
//! `clients*K/N` members rounded down or up, and a client's K rooms are distinct (K ≤ N).
//! Senders are clients `0..S` as without rooms; sender `s` is in rooms `s*K .. s*K+K-1` (mod N),
//! so `S*K ≥ N` puts a sending member in every room.

use crate::clock::Rng;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// The room plan of a run, shared by the workers (membership counts) and the sender thread.
pub struct Rooms {
    pub count: u32,
    pub per_client: u32,
    /// Reading members with an open connection, per room (slow clients are never counted).
    live: Box<[AtomicU32]>,
}

impl Rooms {
    pub fn new(count: u32, per_client: u32) -> Arc<Self> {
        Arc::new(Rooms {
            count,
            per_client,
            live: (0..count).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// The rooms of client `i`, in join order.
    pub fn of_client(&self, i: usize) -> Vec<u32> {
        let (n, k) = (self.count as usize, self.per_client as usize);
        (0..k).map(|j| ((i * k + j) % n) as u32).collect()
    }

    /// Reading members of room `r` now: the deliveries a message posted into it is expected to make.
    pub fn members(&self, r: u32) -> u32 {
        self.live[r as usize].load(Ordering::Relaxed)
    }

    /// Counts a reading client into its rooms until the returned guard is dropped.
    pub fn enter(self: &Arc<Self>, rooms: &[u32]) -> Membership {
        for &r in rooms {
            self.live[r as usize].fetch_add(1, Ordering::Relaxed);
        }
        Membership {
            plan: self.clone(),
            rooms: rooms.to_vec(),
        }
    }

    /// Per room, the senders (clients `0..senders`) that are members of it.
    pub fn senders_by_room(&self, senders: usize) -> Vec<Vec<u32>> {
        let mut by_room = vec![Vec::new(); self.count as usize];
        for s in 0..senders {
            for r in self.of_client(s) {
                by_room[r as usize].push(s as u32);
            }
        }
        by_room
    }
}

/// A reading client's place in its rooms' member counts, held by its receive task: the
/// connection closing drops it, and later messages no longer expect this client.
pub struct Membership {
    plan: Arc<Rooms>,
    rooms: Vec<u32>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        for &r in &self.rooms {
            self.plan.live[r as usize].fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How the sender thread picks a message's room and its sending connection.
pub struct RoomSend {
    pub plan: Arc<Rooms>,
    /// uring-chat: per room, the senders that are members (a post must come from a member).
    /// Empty for Redis, where any publisher may publish into any channel.
    pub senders: Vec<Vec<u32>>,
}

impl RoomSend {
    /// Message `g`'s room (uniform) and sender: a random sending member of the room, or `g mod s`
    /// when any sender may post (Redis).
    pub fn pick(&self, g: u64, s: usize, rng: &mut Rng) -> (usize, u32) {
        let room = rng.below(self.plan.count as usize) as u32;
        let who = match self.senders.get(room as usize) {
            Some(m) if !m.is_empty() => m[rng.below(m.len())] as usize,
            _ => (g % s as u64) as usize,
        };
        (who, room)
    }
}

/// The name of room `r`: `room-<r>` (a uring-chat room and a Redis channel alike).
pub fn name(r: u32) -> String {
    format!("room-{r}")
}
