//! A core's own side of rooms: which of its users are in which room, and the rosters it fans room
//! frames out to.
//!
//! A join is *pending* from the request until the owner's answer arrives; a pending member gets no
//! live frames, since everything the owner stamped before the join reaches it through the answer's
//! replay instead. Each join carries a ticket: if a user leaves and joins again before the first
//! answer arrives, that stale answer is recognised and makes nobody a member.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::chat::user_id::UserId;
use crate::hub::Roster;
use crate::net::outbound::OutFrame;
use crate::net::Connection;

use super::RoomName;

/// This core's members of one room.
#[derive(Default)]
struct LocalRoom {
    live: Roster<UserId>,
    /// Users waiting for the owner's answer, with the ticket of the join that made them members.
    pending: Vec<(UserId, u64)>,
    /// Answers from the owner still due (joins, and leaves that are answered): the room stays
    /// here until they have come, so that on a cluster node its subject stays subscribed for them.
    awaiting: u32,
    /// In a cluster: every member's name, to join them again when the owner changes or a frame
    /// went missing (docs/CLUSTER.md). Empty on a single node.
    names: HashMap<UserId, Arc<str>>,
    /// In a cluster: the seq of the last frame handed to the live members; `None` while none is
    /// live.
    last: Option<u64>,
}

impl LocalRoom {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty() && self.awaiting == 0
    }
}

/// What a room frame from another node's owner means here (cluster only; see [`LocalRooms::take`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next frame: deliver it.
    Deliver,
    /// Already delivered, or before the members' join point: drop it.
    Drop,
    /// Frames went missing before this one: the live members must join again after `since`.
    Gap { since: u64 },
}

/// A member to join again: who, under which name, with which ticket.
pub type Rejoin = (UserId, Arc<str>, u64);
/// Members to join again, and the last seq they got (`since`), if any.
pub type Rejoins = (Option<u64>, Vec<Rejoin>);

#[derive(Default)]
pub struct LocalRooms {
    rooms: HashMap<RoomName, LocalRoom>,
    next_ticket: u64,
}

impl LocalRooms {
    /// Records `user`'s join request and returns its ticket, and whether the room is new on this
    /// core. A user already in the room (or joining it) stays as it is: the answer to this join
    /// will change nothing. `name` is kept in a cluster only.
    pub fn request_join(
        &mut self,
        user: UserId,
        room: &RoomName,
        name: Option<&Arc<str>>,
    ) -> (u64, bool) {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let new = !self.rooms.contains_key(room);
        let local = self.rooms.entry(room.clone()).or_default();
        local.awaiting += 1;
        let known = local.live.contains(user) || local.pending.iter().any(|&(u, _)| u == user);
        if !known {
            local.pending.push((user, ticket));
            if let Some(name) = name {
                local.names.insert(user, name.clone());
            }
        }
        (ticket, new)
    }

    /// The owner answered join `ticket`, with the room's seq `seq` at the join: if that join is the
    /// one `user` is pending on, `user` goes live on `conn`. An answer to a repeated join, or to a
    /// join a leave has undone since, changes nothing. In a cluster (`tracked`), a join point
    /// past the last frame delivered means frames went missing: the other live members are returned
    /// to be joined again. True in the second value when the room is gone from this core.
    pub fn joined(
        &mut self,
        room: &str,
        user: UserId,
        ticket: u64,
        seq: u64,
        conn: &Rc<Connection>,
        tracked: bool,
    ) -> (Rejoins, bool) {
        let Some(local) = self.rooms.get_mut(room) else {
            return ((None, Vec::new()), false);
        };
        local.awaiting = local.awaiting.saturating_sub(1);
        if let Some(at) = local.pending.iter().position(|&p| p == (user, ticket)) {
            local.pending.swap_remove(at);
            if tracked {
                match local.last {
                    Some(last) if seq > last => {
                        let rejoin = self.rejoin(room, false);
                        let local = self.rooms.get_mut(room).expect("looked up above");
                        local.last = Some(seq);
                        local.live.insert(user, conn.clone());
                        return (rejoin, false);
                    }
                    Some(_) => {}
                    None => local.last = Some(seq),
                }
            }
            local.live.insert(user, conn.clone());
        }
        ((None, Vec::new()), self.forget_if_empty(room))
    }

    /// A room frame from another node's owner with seq `seq` (0: presence, no seq): whether to
    /// deliver it, and the next one expected then.
    pub fn take(&mut self, room: &str, seq: u64) -> Arrival {
        let Some(local) = self.rooms.get_mut(room) else {
            return Arrival::Drop;
        };
        if seq == 0 {
            return Arrival::Deliver;
        }
        match local.last {
            None => Arrival::Drop,
            Some(last) if seq <= last => Arrival::Drop,
            Some(last) if seq == last + 1 => {
                local.last = Some(seq);
                Arrival::Deliver
            }
            Some(last) => Arrival::Gap { since: last },
        }
    }

    /// Makes every live member of `room` (and every pending one, if `all`) pending again with a
    /// new ticket, and returns them to be joined again: the owner changed, or frames went missing.
    /// Nothing is delivered to them until the answers come.
    pub fn rejoin(&mut self, room: &str, all: bool) -> Rejoins {
        let Some(local) = self.rooms.get_mut(room) else {
            return (None, Vec::new());
        };
        let mut users: Vec<UserId> = local.live.page(0, usize::MAX).map(|(u, _)| u).collect();
        for user in &users {
            local.live.remove(*user);
        }
        if all {
            users.extend(local.pending.drain(..).map(|(user, _)| user));
            local.awaiting = 0;
        }
        let since = local.last.take();
        let mut out = Vec::with_capacity(users.len());
        for user in users {
            let Some(name) = local.names.get(&user) else {
                continue;
            };
            self.next_ticket += 1;
            local.pending.push((user, self.next_ticket));
            local.awaiting += 1;
            out.push((user, name.clone(), self.next_ticket));
        }
        (since, out)
    }

    /// Whether this core has members of `room` (live or pending) or waits for answers about it.
    pub fn has(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Queues a room frame for this core's live members of `room`.
    pub fn fan_out(&self, room: &str, frame: &OutFrame) {
        if let Some(local) = self.rooms.get(room) {
            local.live.fan_out(frame, None);
        }
    }

    /// Takes `user` out of `room`, live or pending; `answered`: the owner will answer the leave.
    /// True when the room is gone from this core.
    pub fn leave(&mut self, user: UserId, room: &str, answered: bool) -> bool {
        let Some(local) = self.rooms.get_mut(room) else {
            return false;
        };
        local.live.remove(user);
        local.pending.retain(|&(pending, _)| pending != user);
        local.names.remove(&user);
        if local.pending.is_empty() {
            local.pending = Vec::new();
        }
        if answered {
            local.awaiting += 1;
        }
        self.forget_if_empty(room)
    }

    /// An answer that makes nobody a member came (a leave's, or a refusal); `ticket`: the join it
    /// refused, whose member is no longer pending. True when the room is gone from this core.
    pub fn answered(&mut self, room: &str, user: UserId, ticket: Option<u64>) -> bool {
        let Some(local) = self.rooms.get_mut(room) else {
            return false;
        };
        local.awaiting = local.awaiting.saturating_sub(1);
        if let Some(ticket) = ticket {
            if let Some(at) = local.pending.iter().position(|&p| p == (user, ticket)) {
                local.pending.swap_remove(at);
                local.names.remove(&user);
            }
        }
        self.forget_if_empty(room)
    }

    fn forget_if_empty(&mut self, room: &str) -> bool {
        let empty = self.rooms.get(room).is_some_and(LocalRoom::is_empty);
        if empty {
            self.rooms.remove(room);
        }
        empty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_join_keeps_the_first_ticket_and_leaving_forgets_the_room() {
        let mut rooms = LocalRooms::default();
        let user = UserId::new(0, 0);
        let room: RoomName = "a".into();
        let (first, new) = rooms.request_join(user, &room, None);
        let (again, again_new) = rooms.request_join(user, &room, None);
        assert!(new && !again_new);
        assert_ne!(first, again);
        assert_eq!(
            rooms.rooms["a"].pending,
            vec![(user, first)],
            "pending on the first join"
        );
        assert!(!rooms.leave(user, "a", false), "two answers are due");
        assert!(!rooms.answered("a", user, Some(first)));
        assert!(rooms.answered("a", user, None), "the last answer came");
        assert!(rooms.rooms.is_empty(), "an empty room is forgotten");
        assert!(!rooms.leave(user, "a", false));
    }

    #[test]
    fn frames_must_follow_the_last_one_delivered() {
        let mut rooms = LocalRooms::default();
        let room: RoomName = "a".into();
        rooms.request_join(UserId::new(0, 0), &room, None);
        assert_eq!(rooms.take("a", 3), Arrival::Drop, "nobody live yet");
        rooms.rooms.get_mut("a").unwrap().last = Some(3);
        assert_eq!(rooms.take("a", 3), Arrival::Drop, "seen already");
        assert_eq!(rooms.take("a", 4), Arrival::Deliver);
        assert_eq!(rooms.take("a", 0), Arrival::Deliver, "presence has no seq");
        assert_eq!(
            rooms.take("a", 6),
            Arrival::Gap { since: 4 },
            "5 went missing"
        );
        assert_eq!(rooms.take("b", 1), Arrival::Drop, "no members of b here");
    }
}
