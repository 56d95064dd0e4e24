//! A connection's outbound queue: frames waiting to be written, bounded in bytes, drained in batches.
//!
//! On loopback a TCP segment costs microseconds of CPU whatever its size, so the writer sends
//! everything queued since its last write in one `writev`. Batches grow with load by themselves and
//! a lone message still goes out at once. Frames are `Rc<Bytes>`: one frame is shared by all the
//! recipients on a core with a plain (non-atomic) count, so fan-out costs no atomic per recipient.

use std::cell::OnceCell;
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use tokio_uring::buf::IoBuf;

use crate::net::websocket;

/// Frames' worth of queue an empty connection keeps (8 bytes each).
const KEPT_QUEUE_CAPACITY: usize = 4;

/// Most buffers in one `writev` (the kernel's IOV_MAX).
pub const MAX_IOVECS: usize = 1024;

/// One encoded frame, shared by every recipient on this core.
#[derive(Clone, Debug)]
pub struct OutFrame(Rc<Shared>);

#[derive(Debug)]
struct Shared {
    bytes: Bytes,
    /// The same frame as a WebSocket text message, made for the first WebSocket recipient on this
    /// core and shared by the rest.
    websocket: OnceCell<OutFrame>,
    /// TLS ciphertext for one connection, not a frame: after a short write it is resent as it is.
    sealed: bool,
}

impl OutFrame {
    pub fn new(bytes: Bytes) -> OutFrame {
        OutFrame::make(bytes, false)
    }

    /// One connection's ciphertext (a batch sealed by its TLS session).
    pub fn sealed(bytes: Bytes) -> OutFrame {
        OutFrame::make(bytes, true)
    }

    fn make(bytes: Bytes, sealed: bool) -> OutFrame {
        OutFrame(Rc::new(Shared {
            bytes,
            websocket: OnceCell::new(),
            sealed,
        }))
    }

    pub fn is_sealed(&self) -> bool {
        self.0.sealed
    }

    pub fn len(&self) -> usize {
        self.0.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.bytes.is_empty()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    pub fn as_ptr(&self) -> *const u8 {
        self.0.bytes.as_ptr()
    }

    /// This frame (a protocol line) as a WebSocket text message, encoded once per core.
    pub fn websocket(&self) -> OutFrame {
        let encode = || OutFrame::new(websocket::text_frame(&self.0.bytes));
        self.0.websocket.get_or_init(encode).clone()
    }

    /// The unwritten rest of a frame after a short write.
    fn tail(&self, from: usize) -> OutFrame {
        OutFrame::make(self.0.bytes.slice(from..), self.0.sealed)
    }
}

// SAFETY: the bytes live behind an `Rc` that the frame keeps alive, and `Bytes` never moves or
// changes its contents, so the pointer stays valid and stable while the ring owns the frame.
unsafe impl IoBuf for OutFrame {
    fn stable_ptr(&self) -> *const u8 {
        self.0.bytes.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.0.bytes.len()
    }

    fn bytes_total(&self) -> usize {
        self.0.bytes.len()
    }
}

/// The queue passed its bound: the client is a slow consumer.
#[derive(Debug, PartialEq, Eq)]
pub struct Overflow;

/// Frames owed to one client. `owed` counts queued bytes plus the batch being written.
#[derive(Debug, Default)]
pub struct OutQueue {
    frames: VecDeque<OutFrame>,
    owed: usize,
}

impl OutQueue {
    /// Queues `frame` unless that would make the client owe more than `limit` bytes.
    pub fn push(&mut self, frame: OutFrame, limit: usize) -> Result<(), Overflow> {
        if self.owed + frame.len() > limit {
            return Err(Overflow);
        }
        self.push_unbounded(frame);
        Ok(())
    }

    /// Queues a last frame (an error before a close) past the bound; callers stop queueing after.
    pub fn push_unbounded(&mut self, frame: OutFrame) {
        self.owed += frame.len();
        self.frames.push_back(frame);
    }

    /// Frees everything not yet handed to the kernel; used when the client is cut off. The unsent
    /// rest of a TLS record stays: without it, whatever follows would fail the peer's MAC check.
    pub fn clear(&mut self) {
        let keep = usize::from(self.frames.front().is_some_and(OutFrame::is_sealed));
        let queued: usize = self.frames.iter().skip(keep).map(OutFrame::len).sum();
        self.owed -= queued;
        self.frames.truncate(keep);
    }

    /// Frees everything, the unsent rest of a TLS record too: a write failed, and the peer is gone.
    /// (Kept, that rest would be retried forever: each retry fails the same way.)
    pub fn abandon(&mut self) {
        self.owed -= self.frames.iter().map(OutFrame::len).sum::<usize>();
        self.frames.clear();
    }

    /// Puts `frames` (taken by [`OutQueue::take_batch`], not written) back at the front, in order.
    pub fn put_back(&mut self, frames: impl DoubleEndedIterator<Item = OutFrame>) {
        for frame in frames.rev() {
            self.frames.push_front(frame);
        }
    }

    /// Accounts for a batch of `plain` bytes replaced by `wire` bytes of ciphertext (or for TLS
    /// output with no plaintext behind it, `plain` 0): the bound counts what goes on the wire.
    pub fn reseal(&mut self, plain: usize, wire: usize) {
        self.owed = self.owed - plain + wire;
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Gives a grown buffer back once the queue is empty: idle connections are most connections.
    /// A small one is kept, so a client receiving a message now and then does not cost an
    /// allocation per message.
    pub fn release_memory(&mut self) {
        if self.frames.is_empty() && self.frames.capacity() > KEPT_QUEUE_CAPACITY {
            self.frames = VecDeque::new();
        }
    }

    /// Bytes queued or being written.
    pub fn owed(&self) -> usize {
        self.owed
    }

    /// Moves up to `MAX_IOVECS` frames into `batch` (empty on entry) for one `writev`.
    pub fn take_batch(&mut self, batch: &mut Vec<OutFrame>) {
        let n = self.frames.len().min(MAX_IOVECS);
        batch.extend(self.frames.drain(..n));
    }

    /// Accounts for a `writev` of `batch` that wrote `written` bytes: whatever was not written goes
    /// back to the front of the queue, in order. Leaves `batch` empty for reuse. True when the
    /// write was short: some of the batch went out, not all.
    pub fn complete_batch(&mut self, batch: &mut Vec<OutFrame>, written: usize) -> bool {
        self.owed -= written;
        let mut skip = written;
        let mut first_unwritten = batch.len();
        let mut partial = None;
        for (i, frame) in batch.iter().enumerate() {
            if skip < frame.len() {
                first_unwritten = i;
                if skip > 0 {
                    partial = Some(frame.tail(skip));
                }
                break;
            }
            skip -= frame.len();
        }
        let short = written > 0 && first_unwritten < batch.len();
        let rest_start = first_unwritten + usize::from(partial.is_some());
        for frame in batch.drain(rest_start..).rev() {
            self.frames.push_front(frame);
        }
        if let Some(partial) = partial {
            self.frames.push_front(partial);
        }
        batch.clear();
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &'static str) -> OutFrame {
        OutFrame::new(Bytes::from_static(text.as_bytes()))
    }

    fn contents(queue: &mut OutQueue) -> Vec<u8> {
        let mut batch = Vec::new();
        queue.take_batch(&mut batch);
        let bytes = batch.iter().flat_map(|f| f.0.bytes.to_vec()).collect();
        queue.complete_batch(&mut batch, queue.owed());
        bytes
    }

    #[test]
    fn bound_counts_queued_and_in_flight_bytes() {
        let mut queue = OutQueue::default();
        queue.push(frame("12345"), 8).unwrap();
        let mut batch = Vec::new();
        queue.take_batch(&mut batch);
        assert_eq!(
            queue.push(frame("6789"), 8),
            Err(Overflow),
            "in-flight bytes still count"
        );
        queue.complete_batch(&mut batch, 5);
        queue.push(frame("6789"), 8).unwrap();
        assert_eq!(queue.owed(), 4);
    }

    #[test]
    fn short_writes_requeue_the_rest_in_order() {
        for written in 0..=9 {
            let mut queue = OutQueue::default();
            for text in ["abc", "def", "ghi"] {
                queue.push(frame(text), 100).unwrap();
            }
            let mut batch = Vec::new();
            queue.take_batch(&mut batch);
            let short = queue.complete_batch(&mut batch, written);
            assert_eq!(short, (1..9).contains(&written), "written {written}");
            assert!(batch.is_empty());
            assert_eq!(queue.owed(), 9 - written);
            assert_eq!(
                contents(&mut queue),
                &b"abcdefghi"[written..],
                "written {written}"
            );
        }
    }

    #[test]
    fn batches_stop_at_iov_max() {
        let mut queue = OutQueue::default();
        for _ in 0..MAX_IOVECS + 5 {
            queue.push(frame("x"), usize::MAX).unwrap();
        }
        let mut batch = Vec::new();
        queue.take_batch(&mut batch);
        assert_eq!(batch.len(), MAX_IOVECS);
        queue.complete_batch(&mut batch, MAX_IOVECS);
        assert_eq!(queue.owed(), 5);
    }

    #[test]
    fn clear_frees_only_what_is_queued() {
        let mut queue = OutQueue::default();
        queue.push(frame("abc"), 100).unwrap();
        let mut batch = Vec::new();
        queue.take_batch(&mut batch);
        queue.push(frame("def"), 100).unwrap();
        queue.clear();
        assert_eq!(queue.owed(), 3, "the batch in flight is still owed");
        queue.complete_batch(&mut batch, 3);
        assert_eq!(queue.owed(), 0);
    }

    #[test]
    fn clear_keeps_the_rest_of_a_sealed_record_and_abandon_drops_it() {
        let mut queue = OutQueue::default();
        queue.push(frame("abc"), 100).unwrap();
        let mut batch = Vec::new();
        queue.take_batch(&mut batch);
        let sealed = OutFrame::sealed(Bytes::from_static(b"0123456789"));
        batch.clear();
        batch.push(sealed);
        queue.reseal(3, 10);
        queue.complete_batch(&mut batch, 4);
        queue.push(frame("def"), 100).unwrap();
        queue.clear();
        assert_eq!(
            queue.owed(),
            6,
            "the record's unsent 6 bytes are still owed"
        );
        let mut batch = Vec::new();
        queue.take_batch(&mut batch);
        assert!(batch[0].is_sealed());
        assert_eq!(batch[0].as_bytes(), b"456789");
        queue.complete_batch(&mut batch, 0);
        queue.abandon();
        assert_eq!(
            (queue.owed(), queue.is_empty()),
            (0, true),
            "a failed write drops it"
        );
    }
}
