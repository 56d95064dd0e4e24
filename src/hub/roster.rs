//! A keyed set kept dense for walking: the connections to fan a frame out to (the lobby's logged-in
//! users, one room's members on this core), or a room's member names on its owner core.
//!
//! Fan-out walks a dense `Vec` of values and touches nothing else, so a pass over thousands of
//! members reads one pointer each. Lookups and removals go through an index from the key (a userID)
//! to the position in that vector; a removal moves the last member into the hole, so it is O(1) too,
//! and the order of the members is not kept.

use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use crate::net::counters::PerTransport;
use crate::net::outbound::OutFrame;
use crate::net::Connection;

pub struct Roster<K, V = Rc<Connection>> {
    values: Vec<V>,
    /// `keys[i]` is the key of `values[i]`, to fix the index after a removal.
    keys: Vec<K>,
    index: HashMap<K, usize>,
}

impl<K, V> Default for Roster<K, V> {
    fn default() -> Self {
        Roster {
            values: Vec::new(),
            keys: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash, V> Roster<K, V> {
    /// Adds `value` under `key`; false (and no change) when the key is already there.
    pub fn insert(&mut self, key: K, value: V) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key, self.values.len());
        self.values.push(value);
        self.keys.push(key);
        true
    }

    pub fn remove(&mut self, key: K) -> Option<V> {
        let position = self.index.remove(&key)?;
        let value = self.values.swap_remove(position);
        self.keys.swap_remove(position);
        if let Some(&moved) = self.keys.get(position) {
            self.index.insert(moved, position);
        }
        Some(value)
    }

    pub fn get(&self, key: K) -> Option<&V> {
        let position = *self.index.get(&key)?;
        Some(&self.values[position])
    }

    pub fn contains(&self, key: K) -> bool {
        self.index.contains_key(&key)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Up to `limit` members from position `offset`, in the roster's (unordered) order.
    pub fn page(&self, offset: usize, limit: usize) -> impl Iterator<Item = (K, &V)> {
        let end = offset.saturating_add(limit).min(self.values.len());
        let start = offset.min(end);
        self.keys[start..end]
            .iter()
            .copied()
            .zip(&self.values[start..end])
    }
}

impl<K> Roster<K, Rc<Connection>> {
    /// Queues `frame` for every member but the connection `except`, and counts the deliveries once
    /// per transport, not once per member.
    pub fn fan_out(&self, frame: &OutFrame, except: Option<u64>) {
        let mut sent = PerTransport::<u64>::default();
        for conn in &self.values {
            if Some(conn.id) != except {
                conn.send(frame.clone());
                *sent.get_mut(conn.transport()) += 1;
            }
        }
        if let Some(conn) = self.values.first() {
            conn.sockets().count_sent(frame.as_bytes(), &sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_keeps_the_index_true() {
        let mut roster: Roster<u32, &str> = Roster::default();
        for (key, value) in [(1, "a"), (2, "b"), (3, "c")] {
            assert!(roster.insert(key, value));
        }
        assert!(!roster.insert(2, "again"), "a key is held once");
        assert_eq!(roster.remove(1), Some("a"));
        assert_eq!(roster.get(3), Some(&"c"), "the moved member is still found");
        assert_eq!(roster.get(2), Some(&"b"));
        assert_eq!(roster.remove(1), None);
        assert_eq!(roster.len(), 2);
        let page: Vec<u32> = roster.page(1, 5).map(|(key, _)| key).collect();
        assert_eq!(page.len(), 1);
        assert_eq!(
            roster.page(7, 5).count(),
            0,
            "an offset past the end is an empty page"
        );
    }
}
