//! The per-room order check of uring-chat rooms: the server numbers each room's messages (`seq`)
//! and every member must see them exactly once, in that order, so each delivery must carry the
//! last seq this member saw in the room plus one, starting from the seq of its `join_response`.
//! (Redis has no such number; there the per-publisher check of `stats::SeqTracker` applies.)

use crate::room_wire::{room_of, seq_of};
use crate::stamp::Stamp;
use crate::stats::{Order, ThreadStats};

/// The last seq one member saw in each of its rooms (sorted by room; K is at most a few hundred).
pub struct RoomSeqs {
    last: Vec<(u32, u64)>,
}

impl RoomSeqs {
    /// Starts from the seqs of the join_responses.
    pub fn new(mut joined: Vec<(u32, u64)>) -> Self {
        joined.sort_unstable();
        RoomSeqs { last: joined }
    }

    /// The verdict on `seq` in `room`: the next one is in order, a later one is a gap (messages
    /// skipped), an earlier or equal one a repeat. `None`: this member never joined `room`.
    pub fn observe(&mut self, room: u32, seq: u64) -> Option<Order> {
        let i = self.last.binary_search_by_key(&room, |e| e.0).ok()?;
        let last = &mut self.last[i].1;
        Some(if seq == *last + 1 {
            *last = seq;
            Order::InOrder
        } else if seq > *last {
            *last = seq;
            Order::Gap
        } else {
            Order::Duplicate
        })
    }

    pub fn is_member(&self, room: u32) -> bool {
        self.last.binary_search_by_key(&room, |e| e.0).is_ok()
    }

    /// Follows a room message that is not one of ours (someone else posting into the room), so
    /// the next of ours is not taken for a gap.
    pub fn skip(&mut self, line: &[u8]) {
        if let (Some(room), Some(seq)) = (room_of(line), seq_of(line)) {
            let _ = self.observe(room, seq);
        }
    }
}

/// Counts one of our room messages; returns whether it was a measured delivery. A frame outside
/// this member's rooms, or without a seq, is counted as a loadgen-detected error code.
pub fn record(
    st: &mut ThreadStats,
    seqs: &mut RoomSeqs,
    line: &[u8],
    stamp: Stamp,
    now_ns: u64,
) -> bool {
    let Some(room) = room_of(line) else {
        st.count_error(b"LOADGEN_WRONG_ROOM");
        return false;
    };
    let verdict = match seq_of(line) {
        Some(seq) => seqs.observe(room, seq),
        None => {
            st.count_error(b"LOADGEN_NO_SEQ");
            seqs.is_member(room).then_some(Order::InOrder)
        }
    };
    match verdict {
        Some(v) => st.count(stamp, now_ns, v),
        None => {
            st.count_error(b"LOADGEN_WRONG_ROOM");
            false
        }
    }
}
