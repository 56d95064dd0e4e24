//! Which nodes are alive: each node publishes a heartbeat every `CLUSTER_HEARTBEAT`; one unheard
//! for `CLUSTER_MISSED_HEARTBEATS` beats is dead. Of the survivors, the one with the lowest name
//! frees a dead node's names, so that exactly one node does it and the others see it as leaves.
//!
//! A node's clock of silence only runs while it is connected itself: after its own reconnect every
//! peer gets a fresh window, or a NATS restart would make the first node back declare all the
//! others dead.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::NodeTag;

#[derive(Debug)]
struct Peer {
    name: String,
    last_heard: Instant,
    /// False for a node known only from the names it holds: its name is not known yet.
    heard: bool,
}

#[derive(Debug)]
pub struct Liveness {
    me: NodeTag,
    my_name: String,
    /// Silence after which a peer is dead.
    window: Duration,
    peers: HashMap<NodeTag, Peer>,
    dead: HashSet<NodeTag>,
}

impl Liveness {
    pub fn new(me: NodeTag, my_name: &str, window: Duration) -> Liveness {
        Liveness {
            me,
            my_name: my_name.to_string(),
            window,
            peers: HashMap::new(),
            dead: HashSet::new(),
        }
    }

    /// A heartbeat from `tag`. A node thought dead that beats again (it was cut off, not gone) is
    /// alive again; true when it is new or back.
    pub fn heard(&mut self, tag: NodeTag, name: &str, now: Instant) -> bool {
        if tag == self.me {
            return false;
        }
        let back = self.dead.remove(&tag);
        let peer = Peer {
            name: name.to_string(),
            last_heard: now,
            heard: true,
        };
        self.peers.insert(tag, peer).is_none() || back
    }

    /// `tag` said goodbye (it stopped cleanly): gone from now on, as if dead, without waiting for
    /// its silence. True if it was alive.
    pub fn left(&mut self, tag: NodeTag) -> bool {
        let known = self.peers.remove(&tag).is_some();
        self.dead.insert(tag);
        known
    }

    /// A node that holds names but was never heard (it may have died before this node started)
    /// gets one window to beat, like any other.
    pub fn holds_names(&mut self, tag: NodeTag, now: Instant) {
        if tag == self.me || self.dead.contains(&tag) || self.peers.contains_key(&tag) {
            return;
        }
        let name = format!("{tag:08x}");
        let peer = Peer {
            name,
            last_heard: now,
            heard: false,
        };
        self.peers.insert(tag, peer);
    }

    /// Whether a message for `tag` can reach a live node.
    pub fn is_alive(&self, tag: NodeTag) -> bool {
        self.peers.contains_key(&tag)
    }

    /// Every peer gets a fresh window: this node was itself cut off and heard nobody.
    pub fn restart_clocks(&mut self, now: Instant) {
        for peer in self.peers.values_mut() {
            peer.last_heard = now;
        }
    }

    /// The peers silent for a whole window, now counted dead, with their names.
    pub fn sweep(&mut self, now: Instant) -> Vec<(NodeTag, String)> {
        let window = self.window;
        let gone: Vec<NodeTag> = (self.peers.iter())
            .filter(|(_, peer)| now.duration_since(peer.last_heard) >= window)
            .map(|(&tag, _)| tag)
            .collect();
        gone.into_iter()
            .map(|tag| {
                let peer = self.peers.remove(&tag).expect("listed above");
                self.dead.insert(tag);
                (tag, peer.name)
            })
            .collect()
    }

    /// True when this node frees dead nodes' names: no live peer has a lower (name, tag).
    pub fn cleans_up(&self) -> bool {
        let me = (self.my_name.as_str(), self.me);
        (self.peers.iter()).all(|(&tag, peer)| (peer.name.as_str(), tag) > me)
    }

    /// The live nodes that have beaten (so their names are known), this one included: (name,
    /// tag). Room owners are picked from these.
    pub fn live_nodes(&self) -> Vec<(String, NodeTag)> {
        let peers = (self.peers.iter())
            .filter(|(_, peer)| peer.heard)
            .map(|(&tag, peer)| (peer.name.clone(), tag));
        peers.chain([(self.my_name.clone(), self.me)]).collect()
    }

    /// Live peers, for the log.
    pub fn live(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_peers_die_and_the_lowest_name_cleans_up() {
        let start = Instant::now();
        let window = Duration::from_secs(6);
        let mut b = Liveness::new(2, "b", window);
        assert!(b.heard(1, "a", start));
        assert!(b.heard(3, "c", start));
        assert!(!b.heard(2, "b", start), "its own beat");
        assert!(!b.cleans_up(), "a is lower");
        let later = start + Duration::from_secs(4);
        b.heard(3, "c", later);
        assert!(b.sweep(later).is_empty());
        let dead = b.sweep(start + window);
        assert_eq!(dead, vec![(1, "a".to_string())]);
        assert!(!b.is_alive(1) && b.is_alive(3));
        assert!(b.cleans_up(), "b is now the lowest");
        assert!(b.heard(1, "a", start + window), "back from the dead");
        assert!(b.left(1) && !b.is_alive(1), "a stopped cleanly");
        assert!(b.heard(1, "a", start + window), "and came back");
        b.restart_clocks(start + 2 * window);
        assert!(b.sweep(start + 2 * window).is_empty());
    }

    #[test]
    fn a_name_holder_never_heard_gets_one_window() {
        let start = Instant::now();
        let mut a = Liveness::new(1, "a", Duration::from_secs(6));
        a.holds_names(9, start);
        assert!(a.is_alive(9));
        assert_eq!(a.sweep(start + Duration::from_secs(6)).len(), 1);
        a.holds_names(9, start + Duration::from_secs(7));
        assert!(!a.is_alive(9), "dead stays dead until it beats");
    }
}
