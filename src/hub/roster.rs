//! A set of connections to fan frames out to: the lobby's logged-in users, or one room's members on
//! this core.
//!
//! Fan-out walks a dense `Vec` of connections and touches nothing else, so a pass over thousands of
//! members reads one pointer each. Lookups and removals go through an index from the key (a userID)
//! to the position in that vector; a removal moves the last member into the hole, so it is O(1) too.

use std::collections::HashMap;
use std::hash::Hash;
use std::rc::Rc;

use crate::net::outbound::OutFrame;
use crate::net::Connection;

pub struct Roster<K> {
    connections: Vec<Rc<Connection>>,
    /// `keys[i]` is the key of `connections[i]`, to fix the index after a removal.
    keys: Vec<K>,
    index: HashMap<K, usize>,
}

impl<K> Default for Roster<K> {
    fn default() -> Self {
        Roster {
            connections: Vec::new(),
            keys: Vec::new(),
            index: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Roster<K> {
    /// Adds `conn` under `key`; false (and no change) when the key is already there.
    pub fn insert(&mut self, key: K, conn: Rc<Connection>) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key, self.connections.len());
        self.connections.push(conn);
        self.keys.push(key);
        true
    }

    pub fn remove(&mut self, key: K) -> Option<Rc<Connection>> {
        let position = self.index.remove(&key)?;
        let conn = self.connections.swap_remove(position);
        self.keys.swap_remove(position);
        if let Some(&moved) = self.keys.get(position) {
            self.index.insert(moved, position);
        }
        Some(conn)
    }

    pub fn get(&self, key: K) -> Option<&Rc<Connection>> {
        self.index
            .get(&key)
            .map(|&position| &self.connections[position])
    }

    pub fn contains(&self, key: K) -> bool {
        self.index.contains_key(&key)
    }

    pub fn len(&self) -> usize {
        self.connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }

    /// Queues `frame` for every member but the connection `except`.
    pub fn fan_out(&self, frame: &OutFrame, except: Option<u64>) {
        for conn in &self.connections {
            if Some(conn.id) != except {
                conn.send(frame.clone());
            }
        }
    }
}
