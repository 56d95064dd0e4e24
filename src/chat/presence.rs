//! Coalesced presence: who joined and left, sent at most once per interval per core.
//!
//! The old server sent the whole user list to everyone on every join, which is quadratic. Here each
//! core collects its own joins and leaves and, once per `--presence-interval` and only if something
//! changed, broadcasts one frame of bounded size (names capped; counts only above
//! `--presence-limit` users). Presence traffic per user is then at most one small frame per core per
//! interval, whatever the churn.

use bytes::Bytes;

use std::sync::Arc;

use crate::chat::protocol::{self, PresenceDocument, UserEntry};
use crate::chat::user_id::UserId;

/// Whose presence a frame tells: the lobby's (with the server-wide user count) or one room's.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    Lobby { user_count: usize },
    Room { room: &'a str, member_count: usize },
}

/// Joins and leaves since the last presence frame: one core's users, or one room's members.
#[derive(Default, Debug)]
pub struct PresenceBatch {
    /// Who joined and left, up to the names cap: the user's ID and shared name, so a batch costs
    /// 32 bytes per name until the frame is made.
    joined: Vec<(UserId, Arc<str>)>,
    left: Vec<(UserId, Arc<str>)>,
    joined_count: usize,
    left_count: usize,
    names_cap: usize,
}

impl PresenceBatch {
    pub fn new(names_cap: usize) -> PresenceBatch {
        PresenceBatch {
            names_cap,
            ..PresenceBatch::default()
        }
    }

    pub fn joined(&mut self, user_id: UserId, username: &Arc<str>) {
        self.joined_count += 1;
        if self.joined.len() < self.names_cap {
            self.joined.push((user_id, username.clone()));
        }
    }

    pub fn left(&mut self, user_id: UserId, username: &Arc<str>) {
        self.left_count += 1;
        if self.left.len() < self.names_cap {
            self.left.push((user_id, username.clone()));
        }
    }

    /// True when nobody joined or left since the last frame.
    pub fn is_empty(&self) -> bool {
        self.joined_count == 0 && self.left_count == 0
    }

    /// The frame for what changed, if anything did, and a fresh start. Names are left out when
    /// more than `name_limit` users are in the scope.
    pub fn take_frame(&mut self, scope: Scope<'_>, name_limit: usize) -> Option<Bytes> {
        if self.is_empty() {
            return None;
        }
        let (room, count) = match scope {
            Scope::Lobby { user_count } => (None, user_count),
            Scope::Room { room, member_count } => (Some(room), member_count),
        };
        let named = count <= name_limit;
        let entries = |users: &[(UserId, Arc<str>)]| -> Vec<UserEntry> {
            users
                .iter()
                .map(|(id, name)| UserEntry::new(*id, name))
                .collect()
        };
        let (joined, left) = match named {
            true => (entries(&self.joined), entries(&self.left)),
            false => (Vec::new(), Vec::new()),
        };
        let frame = protocol::presence(
            room,
            &PresenceDocument {
                joined: named.then_some(joined.as_slice()),
                left: named.then_some(left.as_slice()),
                joined_count: self.joined_count,
                left_count: self.left_count,
                user_count: room.is_none().then_some(count),
                member_count: room.is_some().then_some(count),
            },
        );
        *self = PresenceBatch::new(self.names_cap);
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_name_users_only_below_the_limit_and_cap_names() {
        let mut batch = PresenceBatch::new(2);
        let x: Arc<str> = "x".into();
        for _ in 0..3 {
            batch.joined(UserId::new(0, 0), &x);
        }
        let lobby = |user_count| Scope::Lobby { user_count };
        let named: serde_json::Value = content(&batch.take_frame(lobby(10), 1000).unwrap());
        assert_eq!(named["joined"].as_array().unwrap().len(), 2, "names capped");
        assert_eq!(named["joinedCount"], 3);
        assert!(
            batch.take_frame(lobby(10), 1000).is_none(),
            "nothing new, no frame"
        );
        batch.left(UserId::new(0, 0), &x);
        let counted = content(&batch.take_frame(lobby(5000), 1000).unwrap());
        assert!(counted.get("left").is_none() && counted.get("joined").is_none());
        assert_eq!(counted["leftCount"], 1);
        assert_eq!(counted["userCount"], 5000);
        batch.joined(UserId::new(1, 0), &"y".into());
        let room = Scope::Room {
            room: "rust",
            member_count: 3,
        };
        let frame = batch.take_frame(room, 1000).unwrap();
        let outer: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(outer["room"], "rust");
        let counted = content(&frame);
        assert_eq!(counted["memberCount"], 3);
        assert!(counted.get("userCount").is_none());
    }

    fn content(frame: &[u8]) -> serde_json::Value {
        let outer: serde_json::Value = serde_json::from_slice(frame).unwrap();
        assert_eq!(outer["type"], "presence");
        serde_json::from_str(outer["content"].as_str().unwrap()).unwrap()
    }
}
