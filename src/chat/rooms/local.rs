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

/// The user already holds `--max-rooms-per-user` rooms.
#[derive(Debug, PartialEq, Eq)]
pub struct TooMany;

#[derive(Default)]
pub struct LocalRooms {
    rooms: HashMap<RoomName, LocalRoom>,
    /// The rooms each user of this core is in or joining; only users with rooms are here.
    of_user: HashMap<UserId, Vec<RoomName>>,
    next_ticket: u64,
}

impl LocalRooms {
    /// Records `user`'s join request and returns its ticket. Joining a room one is in (or joining)
    /// is allowed and changes nothing here; a new room past `max_per_user` is refused.
    pub fn request_join(
        &mut self,
        user: UserId,
        room: &RoomName,
        max_per_user: usize,
    ) -> Result<u64, TooMany> {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        // Most users are in one room or a few: start with room for one, not the usual four.
        let rooms = self
            .of_user
            .entry(user)
            .or_insert_with(|| Vec::with_capacity(1));
        if rooms.iter().any(|r| r == room) {
            return Ok(ticket);
        }
        if rooms.len() >= max_per_user {
            if rooms.is_empty() {
                self.of_user.remove(&user);
            }
            return Err(TooMany);
        }
        rooms.push(room.clone());
        let local = self.rooms.entry(room.clone()).or_default();
        local.pending.push((user, ticket));
        Ok(ticket)
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

    /// Takes `user` out of `room`; false when it was not in it.
    pub fn leave(&mut self, user: UserId, room: &str) -> bool {
        let Some(rooms) = self.of_user.get_mut(&user) else {
            return false;
        };
        let Some(at) = rooms.iter().position(|r| &**r == room) else {
            return false;
        };
        rooms.swap_remove(at);
        if rooms.is_empty() {
            self.of_user.remove(&user);
        }
        self.forget(user, room);
        true
    }

    /// Takes `user` out of every room (logout); returns the rooms it was in.
    pub fn leave_all(&mut self, user: UserId) -> Vec<RoomName> {
        let rooms = self.of_user.remove(&user).unwrap_or_default();
        for room in &rooms {
            self.forget(user, room);
        }
        rooms
    }

    /// The room's shared name when `user` is in (or joining) `room`: it may post and ask for
    /// members.
    pub fn room_of(&self, user: UserId, room: &str) -> Option<RoomName> {
        let rooms = self.of_user.get(&user)?;
        rooms.iter().find(|r| &***r == room).cloned()
    }

    /// Queues a room frame for this core's live members of `room`.
    pub fn fan_out(&self, room: &str, frame: &OutFrame) {
        if let Some(local) = self.rooms.get(room) {
            local.live.fan_out(frame, None);
        }
    }

    fn forget(&mut self, user: UserId, room: &str) {
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
    fn rooms_per_user_are_capped_and_rejoining_is_free() {
        let mut rooms = LocalRooms::default();
        let user = UserId::new(0);
        let (a, b): (RoomName, RoomName) = ("a".into(), "b".into());
        assert!(rooms.request_join(user, &a, 1).is_ok());
        assert!(rooms.request_join(user, &a, 1).is_ok(), "a room one is in");
        assert_eq!(rooms.request_join(user, &b, 1), Err(TooMany));
        assert!(rooms.room_of(user, "a").is_some() && rooms.room_of(user, "b").is_none());
        assert!(rooms.leave(user, "a"));
        assert!(!rooms.leave(user, "a"), "not in it any more");
        assert!(rooms.request_join(user, &b, 1).is_ok());
        assert_eq!(rooms.leave_all(user), vec![b]);
        assert!(rooms.rooms.is_empty() && rooms.of_user.is_empty());
    }
}
