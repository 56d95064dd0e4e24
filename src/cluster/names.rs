//! The cluster's usernames in a JetStream key-value bucket, and the replica each node keeps of it.
//!
//! One key per name held; `create` is the compare-and-set that makes names unique cluster-wide.
//! Keys must be subject tokens (`[-/_=.a-zA-Z0-9]`), names are any UTF-8 of up to 32 characters,
//! so a key is the lowercase hex of the name's UTF-8 (at most 256 characters). The value says who
//! holds the name: node tag and name, member ID and the name itself, as JSON, so that `nats kv get`
//! shows an operator something readable.
//!
//! Every node watches the bucket and keeps a [`Replica`]: the cluster's users, from which the chat
//! layer gets the user count, `users` pages and presence, and from which a survivor finds a dead
//! node's names to free.

use std::collections::HashMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{MemberId, NodeTag};

/// The bucket key of `name`.
pub fn key(name: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut key = String::with_capacity(2 * name.len());
    for byte in name.bytes() {
        key.push(HEX[(byte >> 4) as usize] as char);
        key.push(HEX[(byte & 0xf) as usize] as char);
    }
    key
}

/// Who holds a name: the value under its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node's tag, 8 hex digits.
    pub tag: String,
    /// The node's name, for operators.
    pub node: String,
    /// The member's ID, 32 hex digits.
    pub id: String,
    pub name: String,
}

impl Holder {
    pub fn new(tag: NodeTag, node: &str, member: MemberId, name: &str) -> Holder {
        Holder {
            tag: format!("{tag:08x}"),
            node: node.to_string(),
            id: format!("{member:032x}"),
            name: name.to_string(),
        }
    }

    pub fn encode(&self) -> Bytes {
        serde_json::to_vec(self)
            .expect("a holder serialises")
            .into()
    }

    /// The holder in a bucket value, or `None` for a value no node of this version wrote.
    pub fn decode(value: &[u8]) -> Option<(NodeTag, MemberId, String)> {
        let holder: Holder = serde_json::from_slice(value).ok()?;
        let tag = NodeTag::from_str_radix(&holder.tag, 16).ok()?;
        let member = MemberId::from_str_radix(&holder.id, 16).ok()?;
        Some((tag, member, holder.name))
    }
}

/// One name held by another node's member, as the replica knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub tag: NodeTag,
    pub member: MemberId,
    pub name: String,
    /// The bucket revision of the value: deleting with it deletes only this holder's claim.
    pub revision: u64,
}

/// What a change to the bucket means for the chat layer.
#[derive(Debug, PartialEq, Eq)]
pub enum Change {
    Joined(Held),
    Left(Held),
}

/// The names other nodes' members hold, by key. This node's own names are not in it: the chat
/// layer has its own users already.
#[derive(Debug)]
pub struct Replica {
    me: NodeTag,
    held: HashMap<String, Held>,
}

impl Replica {
    pub fn new(me: NodeTag) -> Replica {
        Replica {
            me,
            held: HashMap::new(),
        }
    }

    /// Takes in a put of `value` under `key` at `revision`; says who left and joined.
    pub fn put(&mut self, key: &str, value: &[u8], revision: u64) -> Vec<Change> {
        let mut changes = Vec::new();
        let Some((tag, member, name)) = Holder::decode(value) else {
            tracing::warn!(
                key,
                "a names-bucket value this version cannot read: ignored"
            );
            return changes;
        };
        let old = self.held.remove(key);
        let same = (old.as_ref()).is_some_and(|old| old.member == member && old.name == name);
        if let Some(old) = old.filter(|_| !same) {
            changes.push(Change::Left(old));
        }
        if tag == self.me {
            return changes;
        }
        let held = Held {
            tag,
            member,
            name,
            revision,
        };
        if !same {
            changes.push(Change::Joined(held.clone()));
        }
        self.held.insert(key.to_string(), held);
        changes
    }

    /// Takes in a delete (or purge) of `key`; says who left, if anybody did.
    pub fn delete(&mut self, key: &str) -> Option<Change> {
        self.held.remove(key).map(Change::Left)
    }

    /// The keys (and revisions) of the names `tag`'s members hold.
    pub fn keys_of(&self, tag: NodeTag) -> Vec<(String, u64)> {
        (self.held.iter())
            .filter(|(_, held)| held.tag == tag)
            .map(|(key, held)| (key.clone(), held.revision))
            .collect()
    }

    /// Every node tag that holds a name.
    pub fn tags(&self) -> impl Iterator<Item = NodeTag> + '_ {
        self.held.values().map(|held| held.tag)
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_subject_tokens_for_any_name() {
        assert_eq!(key("bob"), "626f62");
        assert_eq!(key("Zoë 🚀"), "5a6fc3ab20f09f9a80");
        assert!(key("a.b*>").bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_replica_follows_puts_and_deletes_of_other_nodes_only() {
        let mut replica = Replica::new(1);
        let mine = Holder::new(1, "a", 10, "alice").encode();
        assert_eq!(replica.put(&key("alice"), &mine, 1), vec![]);
        let bob = Holder::new(2, "b", 20, "bob").encode();
        let joined = replica.put(&key("bob"), &bob, 2);
        assert!(matches!(&joined[..], [Change::Joined(h)] if h.name == "bob" && h.tag == 2));
        assert_eq!(
            replica.put(&key("bob"), &bob, 3),
            vec![],
            "a re-assert of the same holder is no new join"
        );
        assert_eq!(replica.keys_of(2), vec![(key("bob"), 3)]);
        let other = Holder::new(3, "c", 30, "bob").encode();
        let changes = replica.put(&key("bob"), &other, 4);
        assert!(
            matches!(&changes[..], [Change::Left(l), Change::Joined(j)] if l.member == 20 && j.member == 30)
        );
        assert!(matches!(replica.delete(&key("bob")), Some(Change::Left(h)) if h.member == 30));
        assert_eq!(replica.delete(&key("bob")), None);
        assert!(replica.is_empty());
    }
}
