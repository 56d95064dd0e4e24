//! Rooms (protocol v1.1): named groups with one message order each, history, and gap-free recovery.
//!
//! Every room has an **owner core**, a hash of its name. The owner alone gives the room's messages
//! their `seq`, keeps its history and its member list, and knows which cores have members. Every
//! other core keeps only its own members of the room, as a [`Roster`](crate::hub::Roster) to fan out
//! to. So the path of one room message is: the sender's core checks membership and builds the frame
//! without its seq ([`RoomMsg::Post`]); the owner stamps it once into a `Bytes`, appends it to the
//! history, and sends it once to each core with members ([`RoomMsg::Frame`]); each core pushes it
//! onto its members' queues. One order per room follows from one stamping place; exactly once from
//! one hop per core; nothing shared is touched per message.
//!
//! Joining is where recovery is decided. The member's core sends [`RoomMsg::Join`] to the owner,
//! which adds the member, answers with the `join_response` and the replay of what history holds
//! after `since`, and from then on sends the room's frames to that core too. Messages between two
//! cores arrive in the order they were sent, so every frame stamped before the join is in the replay
//! (or was missed and said so with `recovered: false`) and every frame stamped after it arrives after
//! the replay: no gap and no duplicate. Until the answer arrives the member is *pending* on its
//! core and gets no live frames.
//!
//! In a cluster (docs/CLUSTER.md) a room also has an owner node; its owner core does the above for
//! members on every node. Requests reach it through the bridges, and its frames and answers reach
//! each other member node once, in one order, on the room's subject ([`wire`]); member cores check
//! that seqs come gap-free and join their members again if not.
//!
//! - [`local`]: a core's own members of each room, and pending joins. (Each user's list of rooms is
//!   in its session.)
//! - [`owned`]: the rooms this core owns: seq, epoch, members, presence, idle expiry.
//! - [`history`]: each owned room's recent messages, and the core-wide byte budget.
//! - [`directory`]: the server-wide list of rooms with their member counts, for `rooms` pages.
//! - [`frames`]: the room frames of protocol v1.1.
//! - [`routing`]: the shard's room paths: where each request and message goes, and what it does there.
//! - [`requests`]: what the room frames from a client do.
//! - [`wire`]: room messages as they cross between nodes of a cluster (docs/CLUSTER.md).

pub mod directory;
pub mod frames;
pub mod history;
pub mod local;
pub mod owned;
pub mod requests;
pub mod routing;
pub mod wire;

use std::sync::Arc;

use bytes::Bytes;

use crate::chat::user_id::UserId;

/// Longest room name, in characters.
pub const MAX_ROOM_NAME_CHARS: usize = 64;

/// A room's name, shared by every structure and message that names the room.
pub type RoomName = Arc<str>;

/// What cores tell each other about rooms. "Owner" is the room's owner core; "member's core" is
/// the core that owns the user's connection.
#[derive(Debug)]
pub enum RoomMsg {
    /// Member's core to owner: add `user` (or answer again), replaying after `since` if given.
    /// `restart`: the member's node saw the room change owner (docs/CLUSTER.md), so what it had
    /// is of another epoch: the answer says `recovered: false` and replays all history holds.
    Join {
        room: RoomName,
        user: UserId,
        username: Arc<str>,
        since: Option<u64>,
        ticket: u64,
        restart: bool,
    },
    /// Owner to member's core: the join took effect at the room's `seq`; `frames` are the answer
    /// and the replay. A leave may already have undone it: the answer is still delivered, in order.
    Joined {
        room: RoomName,
        user: UserId,
        ticket: u64,
        seq: u64,
        frames: Vec<Bytes>,
    },
    /// Member's core to owner: `user` left (`answer`: send the `leave_response`, which then
    /// follows the answers to the user's earlier requests for the room), or logged out.
    Leave {
        room: RoomName,
        user: UserId,
        username: Arc<str>,
        answer: bool,
    },
    /// Member's core to owner: a message to stamp and send, everything but its seq.
    Post {
        room: RoomName,
        user: UserId,
        body: Bytes,
    },
    /// Owner to a core with members: a stamped message (`seq`) or a presence frame (`seq` 0).
    Frame {
        room: RoomName,
        seq: u64,
        frame: Bytes,
    },
    /// Owner to member's core: `user`'s leave took effect; it gets its `leave_response`.
    LeaveAnswered { room: RoomName, user: UserId },
    /// Cluster to member's core: a request for a room owned by another node could not be sent
    /// (`CLUSTER_UNAVAILABLE`). `ticket`: the join that did not happen; `answer`: a leave whose
    /// answer will not come.
    Refused {
        room: RoomName,
        user: UserId,
        ticket: Option<u64>,
        answer: bool,
    },
    /// Cluster to member's core: the room's owner node died and another took it over; every
    /// member here joins again.
    Rejoin { room: RoomName },
    /// Member's core to owner: a page of the member list for `user`.
    Members {
        room: RoomName,
        user: UserId,
        offset: usize,
    },
    /// Owner to member's core: a frame for one user.
    Reply { user: UserId, frame: Bytes },
}

/// The core that owns `room`: FNV-1a over its bytes, the same on every core and every run.
pub fn owner_core(room: &str, cores: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in room.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % cores as u64) as usize
}

/// Checks the naming rules of docs/PROTOCOL.md; the error is the reason for `INVALID_ROOM`.
pub fn validate_room_name(name: &str) -> Result<(), &'static str> {
    let chars = name.chars().count();
    if chars == 0 {
        return Err("the room name is empty");
    }
    if chars > MAX_ROOM_NAME_CHARS {
        return Err("the room name is longer than 64 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("the room name contains control characters");
    }
    if name.trim() != name {
        return Err("the room name starts or ends with whitespace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_the_rules() {
        assert!(validate_room_name("rust").is_ok());
        assert!(validate_room_name(&"é".repeat(64)).is_ok());
        for bad in ["", " rust", "rust ", "ru\nst", &"x".repeat(65)] {
            assert!(validate_room_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn owners_spread_over_cores_and_stay_put() {
        let owners: Vec<usize> = (0..100)
            .map(|i| owner_core(&format!("room-{i}"), 4))
            .collect();
        assert!(owners.iter().all(|&core| core < 4));
        for core in 0..4 {
            assert!(owners.contains(&core), "every core owns some of 100 rooms");
        }
        assert_eq!(owner_core("rust", 4), owner_core("rust", 4));
    }
}
