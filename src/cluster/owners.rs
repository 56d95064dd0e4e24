//! Which node owns each room: the `rooms` key-value bucket's keys and values, the replica each node
//! keeps of it, and the rendezvous hash that picks an owner (docs/CLUSTER.md, "Rooms across
//! nodes").
//!
//! One key per room, the lowercase hex of its name (as for usernames, [`super::names::key`]). The
//! value says which node owns the room and how many times it changed hands (`epoch`), as JSON. The
//! first join of a room `create`s the key with the owner the rendezvous hash picks over the live
//! nodes: `create` is the compare-and-set, so of two nodes racing exactly one writes it and both
//! use what was written. Ownership is sticky: only the death of the owner moves a room, and the
//! survivor that moves it updates the key with the revision it read, so two survivors cannot both.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::NodeTag;

/// The value under a room's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnerValue {
    /// The owner's tag, 8 hex digits.
    pub tag: String,
    /// The owner's name, for operators and the rendezvous hash.
    pub node: String,
    /// 1 when the room was first placed; one more each time a dead owner's room moved.
    pub epoch: u64,
}

impl OwnerValue {
    pub fn new(tag: NodeTag, node: &str, epoch: u64) -> OwnerValue {
        OwnerValue {
            tag: format!("{tag:08x}"),
            node: node.to_string(),
            epoch,
        }
    }

    pub fn encode(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("an owner serialises")
            .into()
    }

    /// The owner's tag and the epoch, or `None` for a value no node of this version wrote.
    pub fn decode(value: &[u8]) -> Option<Owner> {
        let value: OwnerValue = serde_json::from_slice(value).ok()?;
        let tag = NodeTag::from_str_radix(&value.tag, 16).ok()?;
        Some(Owner {
            tag,
            epoch: value.epoch,
            revision: 0,
        })
    }
}

/// A room's owner as the replica knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub tag: NodeTag,
    pub epoch: u64,
    /// The bucket revision of the value: a move updates only the value it read.
    pub revision: u64,
}

/// The node that should own `room_key` among `nodes` (name, tag): the highest hash of room and
/// node name. Every node computes the same answer from the same list, and a node that joins or
/// leaves changes the answer only for the rooms it wins or owned.
pub fn rendezvous<'n>(
    room_key: &str,
    nodes: impl IntoIterator<Item = (&'n str, NodeTag)>,
) -> Option<NodeTag> {
    nodes
        .into_iter()
        .map(|(name, tag)| (weight(room_key, name), name, tag))
        .max()
        .map(|(_, _, tag)| tag)
}

/// FNV-1a over the room key, a separator and the node name, then a final mix so that close names
/// spread.
fn weight(room_key: &str, node: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = room_key.bytes().chain([0xff]).chain(node.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

/// Every room's owner, by key, as the bucket's watch reports it.
#[derive(Debug, Default)]
pub struct OwnerReplica {
    owners: HashMap<String, Owner>,
}

impl OwnerReplica {
    /// Takes in a put; returns the owner it replaced, if it was another node.
    pub fn put(&mut self, key: &str, value: &[u8], revision: u64) -> Option<Owner> {
        let Some(mut owner) = OwnerValue::decode(value) else {
            tracing::warn!(
                key,
                "a rooms-bucket value this version cannot read: ignored"
            );
            return None;
        };
        owner.revision = revision;
        let old = self.owners.insert(key.to_string(), owner)?;
        (old.tag != owner.tag || old.epoch != owner.epoch).then_some(old)
    }

    pub fn delete(&mut self, key: &str) {
        self.owners.remove(key);
    }

    pub fn get(&self, key: &str) -> Option<Owner> {
        self.owners.get(key).copied()
    }

    /// The rooms `tag` owns, with their owner records.
    pub fn owned_by(&self, tag: NodeTag) -> Vec<(String, Owner)> {
        (self.owners.iter())
            .filter(|(_, owner)| owner.tag == tag)
            .map(|(key, owner)| (key.clone(), *owner))
            .collect()
    }

    /// Every node that owns a room.
    pub fn tags(&self) -> impl Iterator<Item = NodeTag> + '_ {
        self.owners.values().map(|owner| owner.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_agrees_spreads_and_moves_only_what_it_must() {
        let three = [("a", 1), ("b", 2), ("c", 3)];
        let keys: Vec<String> = (0..300).map(|i| format!("room-{i}")).collect();
        let owners: Vec<NodeTag> = (keys.iter())
            .map(|key| rendezvous(key, three).unwrap())
            .collect();
        for tag in [1, 2, 3] {
            let won = owners.iter().filter(|&&o| o == tag).count();
            assert!(won > 50, "node {tag} owns {won} of 300 rooms");
        }
        let reversed = [("c", 3), ("b", 2), ("a", 1)];
        assert_eq!(
            rendezvous(&keys[0], reversed),
            Some(owners[0]),
            "order does not matter"
        );
        for (key, &owner) in keys.iter().zip(&owners) {
            let without_b = rendezvous(key, [("a", 1), ("c", 3)]).unwrap();
            if owner != 2 {
                assert_eq!(without_b, owner, "a room not b's stays put when b goes");
            }
        }
        assert_eq!(rendezvous("x", []), None);
    }

    #[test]
    fn the_replica_reports_a_change_of_owner() {
        let mut replica = OwnerReplica::default();
        let first = OwnerValue::new(1, "a", 1).encode();
        assert_eq!(replica.put("72", &first, 5), None);
        assert_eq!(replica.put("72", &first, 6), None, "the same owner again");
        assert_eq!(replica.get("72").unwrap().revision, 6);
        let moved = OwnerValue::new(2, "b", 2).encode();
        assert_eq!(replica.put("72", &moved, 7).map(|o| o.tag), Some(1));
        assert_eq!(replica.owned_by(2).len(), 1);
        assert!(replica.owned_by(1).is_empty());
        replica.delete("72");
        assert_eq!(replica.get("72"), None);
    }
}
