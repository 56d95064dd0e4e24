//! A core's own side of rooms: which of its users are in which room, and the rosters it fans room
//! frames out to.
//!
//! A join is *pending* from the request until the owner's answer arrives; a pending member gets no
//! live frames, since everything the owner stamped before the join reaches it through the answer's
//! replay instead. Each join carries a ticket: if a user leaves and joins again before the first
//! answer arrives, that stale answer is recognised and makes nobody a member.

use std::collections::HashMap;
use std::rc::Rc;

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
}

impl LocalRoom {
    fn is_empty(&self) -> bool {
        self.live.is_empty() && self.pending.is_empty()
    }
}

#[derive(Default)]
pub struct LocalRooms {
    rooms: HashMap<RoomName, LocalRoom>,
    next_ticket: u64,
}

impl LocalRooms {
    /// Records `user`'s join request and returns its ticket. A user already in the room (or
    /// joining it) stays as it is: the answer to this join will change nothing.
    pub fn request_join(&mut self, user: UserId, room: &RoomName) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let local = self.rooms.entry(room.clone()).or_default();
        let known = local.live.contains(user) || local.pending.iter().any(|&(u, _)| u == user);
        if !known {
            local.pending.push((user, ticket));
        }
        ticket
    }

    /// The owner answered join `ticket`: if that join is the one `user` is pending on, `user` goes
    /// live on `conn`. An answer to a repeated join, or to a join a leave has undone since, changes
    /// nothing.
    pub fn joined(&mut self, room: &str, user: UserId, ticket: u64, conn: &Rc<Connection>) {
        let Some(local) = self.rooms.get_mut(room) else {
            return;
        };
        if let Some(at) = local.pending.iter().position(|&p| p == (user, ticket)) {
            local.pending.swap_remove(at);
            local.live.insert(user, conn.clone());
        }
    }

    /// Queues a room frame for this core's live members of `room`.
    pub fn fan_out(&self, room: &str, frame: &OutFrame) {
        if let Some(local) = self.rooms.get(room) {
            local.live.fan_out(frame, None);
        }
    }

    /// Takes `user` out of `room`, live or pending.
    pub fn leave(&mut self, user: UserId, room: &str) {
        let Some(local) = self.rooms.get_mut(room) else {
            return;
        };
        local.live.remove(user);
        local.pending.retain(|&(pending, _)| pending != user);
        if local.pending.is_empty() {
            local.pending = Vec::new();
        }
        if local.is_empty() {
            self.rooms.remove(room);
        }
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
        let first = rooms.request_join(user, &room);
        let again = rooms.request_join(user, &room);
        assert_ne!(first, again);
        assert_eq!(
            rooms.rooms["a"].pending,
            vec![(user, first)],
            "pending on the first join"
        );
        rooms.leave(user, "a");
        assert!(rooms.rooms.is_empty(), "an empty room is forgotten");
        rooms.leave(user, "a");
    }
}
