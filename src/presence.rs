//! Coalesced presence: who joined and left, sent at most once per interval per core.
//!
//! The old server sent the whole user list to everyone on every join, which is quadratic. Here each
//! core collects its own joins and leaves and, once per `--presence-interval` and only if something
//! changed, broadcasts one frame of bounded size (names capped; counts only above
//! `--presence-limit` users). Presence traffic per user is then at most one small frame per core per
//! interval, whatever the churn.

use std::rc::Rc;

use bytes::Bytes;

use crate::core::Core;
use crate::protocol::{self, PresenceDocument, UserEntry};
use crate::user_id::UserId;

/// One core's joins and leaves since its last presence frame.
#[derive(Default, Debug)]
pub struct PresenceBatch {
    joined: Vec<UserEntry>,
    left: Vec<UserEntry>,
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

    pub fn joined(&mut self, user_id: UserId, username: &str) {
        self.joined_count += 1;
        if self.joined.len() < self.names_cap {
            self.joined.push(entry(user_id, username));
        }
    }

    pub fn left(&mut self, user_id: UserId, username: &str) {
        self.left_count += 1;
        if self.left.len() < self.names_cap {
            self.left.push(entry(user_id, username));
        }
    }

    /// The frame for what changed, if anything did, and a fresh start.
    pub fn take_frame(&mut self, user_count: usize, name_limit: usize) -> Option<Bytes> {
        if self.joined_count == 0 && self.left_count == 0 {
            return None;
        }
        let named = user_count <= name_limit;
        let frame = protocol::presence(&PresenceDocument {
            joined: named.then_some(self.joined.as_slice()),
            left: named.then_some(self.left.as_slice()),
            joined_count: self.joined_count,
            left_count: self.left_count,
            user_count,
        });
        *self = PresenceBatch::new(self.names_cap);
        Some(frame)
    }
}

fn entry(user_id: UserId, username: &str) -> UserEntry {
    UserEntry {
        user_id: user_id.to_string(),
        username: username.to_string(),
    }
}

/// Sends the core's presence frame every interval while the core takes input; counts-only frames
/// (above `--presence-limit` users) only every `--presence-count-interval`.
pub async fn run_ticker(core: Rc<Core>) {
    let mut interval = tokio::time::interval(core.config.presence_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sent = tokio::time::Instant::now();
    loop {
        interval.tick().await;
        if !core.takes_input() {
            return;
        }
        let pending = core.presence.borrow().joined_count + core.presence.borrow().left_count;
        if pending == 0 {
            continue;
        }
        let user_count = core.shared.directory.len();
        let counts_only = user_count > core.config.presence_limit;
        if counts_only && last_sent.elapsed() < core.config.presence_count_interval {
            continue;
        }
        last_sent = tokio::time::Instant::now();
        let frame = core
            .presence
            .borrow_mut()
            .take_frame(user_count, core.config.presence_limit);
        if let Some(frame) = frame {
            core.broadcast(frame, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_name_users_only_below_the_limit_and_cap_names() {
        let mut batch = PresenceBatch::new(2);
        for _ in 0..3 {
            batch.joined(UserId::new(0), "x");
        }
        let named: serde_json::Value = content(&batch.take_frame(10, 1000).unwrap());
        assert_eq!(named["joined"].as_array().unwrap().len(), 2, "names capped");
        assert_eq!(named["joinedCount"], 3);
        assert!(
            batch.take_frame(10, 1000).is_none(),
            "nothing new, no frame"
        );
        batch.left(UserId::new(0), "x");
        let counted = content(&batch.take_frame(5000, 1000).unwrap());
        assert!(counted.get("left").is_none() && counted.get("joined").is_none());
        assert_eq!(counted["leftCount"], 1);
        assert_eq!(counted["userCount"], 5000);
    }

    fn content(frame: &[u8]) -> serde_json::Value {
        let outer: serde_json::Value = serde_json::from_slice(frame).unwrap();
        assert_eq!(outer["type"], "presence");
        serde_json::from_str(outer["content"].as_str().unwrap()).unwrap()
    }
}
