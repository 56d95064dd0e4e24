//! What a room remembers for members that reconnect, and the byte budget all rooms of a core share.
//!
//! A room's history is its last messages as the very frames that were sent (shared `Bytes`, so
//! keeping one costs a reference count, not a copy), capped by `--history-messages` and
//! `--history-bytes`. All the rooms a core owns share `--history-total-bytes` divided by the cores
//! (rooms spread over owners by hash); past it the oldest message on the core goes first, whichever
//! room holds it. The [`Ledger`] keeps that order.

use std::collections::VecDeque;

use bytes::Bytes;

use super::RoomName;

/// One room's recent messages, oldest first, with consecutive seqs.
#[derive(Debug, Default)]
pub struct History {
    frames: VecDeque<(u64, Bytes)>,
    bytes: usize,
}

/// What a push or an eviction freed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Freed {
    pub messages: usize,
    pub bytes: usize,
}

impl History {
    /// Keeps `frame` as message `seq`, dropping the oldest past either cap.
    pub fn push(&mut self, seq: u64, frame: Bytes, max_messages: usize, max_bytes: usize) -> Freed {
        self.bytes += frame.len();
        self.frames.push_back((seq, frame));
        let mut freed = Freed::default();
        while self.frames.len() > max_messages || self.bytes > max_bytes {
            freed.bytes += self.pop_oldest();
            freed.messages += 1;
        }
        freed
    }

    /// Drops the oldest message; returns its size.
    pub fn pop_oldest(&mut self) -> usize {
        let (_, frame) = self
            .frames
            .pop_front()
            .expect("pop from a non-empty history");
        self.bytes -= frame.len();
        frame.len()
    }

    pub fn oldest_seq(&self) -> Option<u64> {
        self.frames.front().map(|(seq, _)| *seq)
    }

    pub fn holds(&self, seq: u64) -> bool {
        self.oldest_seq().is_some_and(|oldest| seq >= oldest)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The messages after `since`, oldest first, for a room whose last seq is `last`; and whether
    /// that is every message after `since`. A `since` past `last` comes from another epoch (the
    /// room restarted): the client gets all that is held, and `false`.
    pub fn after(&self, since: u64, last: u64) -> (Vec<Bytes>, bool) {
        if since == last {
            return (Vec::new(), true);
        }
        let Some(oldest) = self.oldest_seq() else {
            return (Vec::new(), false);
        };
        let recovered = since < last && since + 1 >= oldest;
        let skip = if since < last {
            (since + 1).saturating_sub(oldest) as usize
        } else {
            0
        };
        let frames = self.frames.iter().skip(skip).map(|(_, f)| f.clone());
        (frames.collect(), recovered)
    }
}

/// The order in which a core's owned rooms took their messages, for the core-wide budget.
///
/// A room that drops a message by its own caps, or is dropped, leaves a stale entry here; stale
/// entries are skipped when met and swept out once they outnumber the live ones.
#[derive(Debug)]
pub struct Ledger {
    order: VecDeque<(RoomName, u64)>,
    bytes: usize,
    messages: usize,
    budget: usize,
}

/// Stale entries tolerated beyond the live ones before a sweep.
const STALE_SLACK: usize = 1024;

impl Ledger {
    pub fn new(budget: usize) -> Ledger {
        Ledger {
            order: VecDeque::new(),
            bytes: 0,
            messages: 0,
            budget,
        }
    }

    pub fn added(&mut self, room: RoomName, seq: u64, bytes: usize) {
        self.order.push_back((room, seq));
        self.bytes += bytes;
        self.messages += 1;
    }

    pub fn freed(&mut self, freed: Freed) {
        self.bytes -= freed.bytes;
        self.messages -= freed.messages;
    }

    pub fn over_budget(&self) -> bool {
        self.bytes > self.budget
    }

    /// The oldest entry, live or stale.
    pub fn pop_oldest(&mut self) -> Option<(RoomName, u64)> {
        self.order.pop_front()
    }

    /// Drops stale entries once they outnumber the live ones; `live` says whether a room still
    /// holds a message.
    pub fn sweep(&mut self, live: impl Fn(&str, u64) -> bool) {
        if self.order.len() > 2 * self.messages + STALE_SLACK {
            self.order.retain(|(room, seq)| live(room, *seq));
        }
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u64) -> Bytes {
        Bytes::from(format!("m{n}"))
    }

    fn texts(frames: &[Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|f| String::from_utf8_lossy(f).into_owned())
            .collect()
    }

    #[test]
    fn caps_by_count_and_bytes() {
        let mut history = History::default();
        for seq in 1..=5 {
            history.push(seq, frame(seq), 3, 1000);
        }
        assert_eq!((history.len(), history.oldest_seq()), (3, Some(3)));
        let freed = history.push(6, Bytes::from(vec![b'x'; 10]), 3, 12);
        assert_eq!(freed.messages, 2, "the byte cap drops two more");
        assert_eq!(history.bytes(), 12);
    }

    #[test]
    fn replays_what_follows_since_and_says_whether_it_is_whole() {
        let mut history = History::default();
        for seq in 1..=10 {
            history.push(seq, frame(seq), 5, 1000);
        }
        let (frames, recovered) = history.after(7, 10);
        assert_eq!(
            (texts(&frames), recovered),
            (vec!["m8".into(), "m9".into(), "m10".into()], true)
        );
        let (frames, recovered) = history.after(5, 10);
        assert!(recovered, "message 6 is the oldest held");
        assert_eq!(frames.len(), 5);
        let (frames, recovered) = history.after(2, 10);
        assert!(!recovered, "messages 3 to 5 are gone");
        assert_eq!(texts(&frames)[0], "m6");
        assert_eq!(history.after(10, 10), (Vec::new(), true));
        let (frames, recovered) = history.after(50, 10);
        assert!(!recovered, "a since from another epoch");
        assert_eq!(frames.len(), 5);
    }

    #[test]
    fn the_ledger_sweeps_stale_entries() {
        let mut ledger = Ledger::new(100);
        let room: RoomName = "r".into();
        for seq in 0..3000 {
            ledger.added(room.clone(), seq, 1);
            ledger.freed(Freed {
                messages: 1,
                bytes: 1,
            });
        }
        ledger.sweep(|_, _| false);
        assert!(ledger.pop_oldest().is_none(), "every stale entry went");
    }
}
