//! The server-wide list of rooms and their member counts: what a `rooms` page shows, and where
//! `--max-rooms` is enforced.
//!
//! A member's core admits a new room name before its join leaves for the owner (so the cap is
//! checked where the client can be told at once); owner cores list a room they create, drop it when
//! it expires, and keep its member count. Like the user directory it sits behind a `Mutex` touched
//! at joins, leaves and pages, never per message.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::frames::RoomEntry;
use super::RoomName;

/// `--max-rooms` is reached.
#[derive(Debug, PartialEq, Eq)]
pub struct Full;

pub struct RoomDirectory {
    rooms: Mutex<BTreeMap<RoomName, usize>>,
    max_rooms: usize,
}

impl RoomDirectory {
    pub fn new(max_rooms: usize) -> RoomDirectory {
        RoomDirectory {
            rooms: Mutex::new(BTreeMap::new()),
            max_rooms,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<RoomName, usize>> {
        // A panic elsewhere ends the process, so a poisoned lock never needs recovering from.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a room's name for a join: fine when the room is listed, else listed now (with no
    /// members yet) unless the server holds its maximum.
    pub fn admit(&self, room: &RoomName) -> Result<(), Full> {
        let mut rooms = self.lock();
        if rooms.contains_key(room) {
            return Ok(());
        }
        if rooms.len() >= self.max_rooms {
            return Err(Full);
        }
        rooms.insert(room.clone(), 0);
        Ok(())
    }

    /// Whether a join may go on without taking the name: the room is listed, or the server is
    /// under its maximum. On a node of a cluster, where only the owner node lists a room.
    pub fn may_admit(&self, room: &str) -> Result<(), Full> {
        let rooms = self.lock();
        match rooms.contains_key(room) || rooms.len() < self.max_rooms {
            true => Ok(()),
            false => Err(Full),
        }
    }

    /// Lists a room its owner creates, if it is not listed yet. No cap here: the join that creates
    /// a room was admitted, and a room dropped in between may come back over the cap by a few.
    pub fn list(&self, room: &RoomName) {
        self.lock().entry(room.clone()).or_insert(0);
    }

    pub fn set_member_count(&self, room: &str, count: usize) {
        if let Some(listed) = self.lock().get_mut(room) {
            *listed = count;
        }
    }

    pub fn remove(&self, room: &str) {
        self.lock().remove(room);
    }

    /// Up to `limit` rooms in name order from `offset`, and how many rooms there are.
    pub fn page(&self, offset: usize, limit: usize) -> (Vec<RoomEntry>, usize) {
        let rooms = self.lock();
        let page = rooms
            .iter()
            .skip(offset)
            .take(limit)
            .map(|(room, &member_count)| RoomEntry {
                room: room.to_string(),
                member_count,
            })
            .collect();
        (page, rooms.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_is_capped_and_pages_are_in_name_order() {
        let directory = RoomDirectory::new(2);
        let (b, a): (RoomName, RoomName) = ("b".into(), "a".into());
        directory.admit(&b).unwrap();
        directory.admit(&a).unwrap();
        assert_eq!(directory.admit(&"c".into()), Err(Full));
        assert_eq!(directory.admit(&a), Ok(()), "a listed room is admitted");
        directory.set_member_count("b", 3);
        let (page, count) = directory.page(1, 10);
        assert_eq!(count, 2);
        assert_eq!(
            page,
            [RoomEntry {
                room: "b".into(),
                member_count: 3
            }]
        );
        directory.remove("a");
        assert!(directory.admit(&"c".into()).is_ok());
    }
}
