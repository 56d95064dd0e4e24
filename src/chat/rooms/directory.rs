//! The server-wide list of rooms and their member counts: what a `rooms` page shows, and where
//! `--max-rooms` is enforced.
//!
//! Owner cores write it when a room is created or dropped and when its membership changes; readers
//! take `rooms` pages. Like the user directory it sits behind a `Mutex` touched at joins, leaves and
//! pages, never per message.

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

    /// Lists a new room, unless the server holds its maximum.
    pub fn create(&self, room: &RoomName) -> Result<(), Full> {
        let mut rooms = self.lock();
        if rooms.len() >= self.max_rooms {
            return Err(Full);
        }
        rooms.insert(room.clone(), 0);
        Ok(())
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
        directory.create(&b).unwrap();
        directory.create(&a).unwrap();
        assert_eq!(directory.create(&"c".into()), Err(Full));
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
        assert!(directory.create(&"c".into()).is_ok());
    }
}
