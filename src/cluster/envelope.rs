//! The envelope in front of every cluster message: version, kind, origin node and a per-origin
//! sequence number, then the payload exactly as it will be delivered.
//!
//! ```text
//! 0        1      2             6                    14
//! | ver=1  | kind | origin (BE) | seq (BE, per origin) | payload ...
//! ```
//!
//! A node numbers everything it publishes with one counter, and one NATS connection publishes in
//! order, so on each subject a receiver sees an origin's numbers rise. [`Dedup`] drops what it has
//! already seen (a number not above the last one from that origin on that subject), and a node
//! drops what it sent itself: nothing is delivered twice.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::NodeTag;

const VERSION: u8 = 1;
/// Bytes in front of the payload.
pub const HEADER_LEN: usize = 14;

/// A decoded envelope; `payload` shares the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: u8,
    pub origin: NodeTag,
    pub seq: u64,
    pub payload: Bytes,
}

/// Header and payload in one buffer: the one copy a message pays to leave the node.
pub fn encode(kind: u8, origin: NodeTag, seq: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u32(origin);
    out.put_u64(seq);
    out.put_slice(payload);
    out.freeze()
}

/// The envelope of `message`, or `None` for anything this version did not write.
pub fn decode(message: &Bytes) -> Option<Envelope> {
    if message.len() < HEADER_LEN || message[0] != VERSION {
        return None;
    }
    let origin = u32::from_be_bytes(message[2..6].try_into().expect("4 bytes"));
    let seq = u64::from_be_bytes(message[6..14].try_into().expect("8 bytes"));
    Some(Envelope {
        kind: message[1],
        origin,
        seq,
        payload: message.slice(HEADER_LEN..),
    })
}

/// The last sequence number seen from each origin on one subject.
#[derive(Debug, Default)]
pub struct Dedup {
    last: HashMap<NodeTag, u64>,
}

impl Dedup {
    /// True the first time `(origin, seq)` arrives; false for a repeat or an older number.
    pub fn first_time(&mut self, origin: NodeTag, seq: u64) -> bool {
        match self.last.get_mut(&origin) {
            Some(last) if seq <= *last => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                self.last.insert(origin, seq);
                true
            }
        }
    }

    /// Forgets a node that has died: its tag never comes back (a restart picks a new one).
    pub fn forget(&mut self, origin: NodeTag) {
        self.last.remove(&origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_it_did_not_write() {
        let message = encode(3, 0xdead_beef, 42, b"{\"type\":\"chat\"}");
        let envelope = decode(&message).unwrap();
        assert_eq!(
            (envelope.kind, envelope.origin, envelope.seq),
            (3, 0xdead_beef, 42)
        );
        assert_eq!(&envelope.payload[..], b"{\"type\":\"chat\"}");
        assert_eq!(decode(&Bytes::from_static(b"short")), None);
        let mut other = message.to_vec();
        other[0] = 2;
        assert_eq!(decode(&Bytes::from(other)), None);
    }

    #[test]
    fn repeats_and_older_numbers_are_dropped_per_origin() {
        let mut dedup = Dedup::default();
        assert!(dedup.first_time(1, 5));
        assert!(!dedup.first_time(1, 5), "a repeat");
        assert!(!dedup.first_time(1, 4), "older");
        assert!(dedup.first_time(1, 9), "gaps are other subjects' numbers");
        assert!(dedup.first_time(2, 1), "another origin counts apart");
    }
}
