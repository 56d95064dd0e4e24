//! The local fan-out path of one core, without sockets: a broadcast frame is pushed into every
//! member's `OutQueue`, then each queue's writer takes its coalesced batch and accounts for a
//! complete `writev`. What is left per delivery is an `Rc` clone, a `VecDeque` push, the batch
//! move and the drop after the write: the server's own cost per recipient on top of the kernel's.
//!
//! `fanout/<frames per drain>`: 10,000 queues; the frame is pushed `<frames per drain>` times into
//! every queue (one broadcast per round), then every queue is drained once. 1 is a lone message
//! (one frame per `writev`), 64 a loaded server whose writers fall behind and coalesce. Throughput
//! is in deliveries (elements): time per delivery = 1 / elements per second.

use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uring_chat::chat::protocol::{self, parse_request};
use uring_chat::chat::user_id::UserId;
use uring_chat::config::DEFAULT_MAX_OUTBOUND_BYTES;
use uring_chat::net::outbound::{OutFrame, OutQueue};

const QUEUES: usize = 10_000;

/// A real outbound chat frame carrying a 64-byte payload.
fn chat_frame() -> Bytes {
    let inbound = format!(r#"{{"type":"chat","content":"{}"}}"#, "x".repeat(64));
    let request = parse_request(inbound.as_bytes()).expect("valid frame");
    protocol::chat(UserId::new(0, 0), "alice", None, request.content)
}

/// One round: `per_drain` broadcasts fanned out to every queue, then every queue written out.
fn round(queues: &mut [OutQueue], frame: &OutFrame, per_drain: usize, batch: &mut Vec<OutFrame>) {
    for _ in 0..per_drain {
        for queue in queues.iter_mut() {
            queue
                .push(frame.clone(), DEFAULT_MAX_OUTBOUND_BYTES)
                .expect("64 frames fit the bound");
        }
    }
    for queue in queues.iter_mut() {
        // As the writer does: take everything queued, "write" it all, then give memory back.
        while !queue.is_empty() {
            queue.take_batch(batch);
            let written: usize = batch.iter().map(OutFrame::len).sum();
            black_box(&batch);
            queue.complete_batch(batch, written);
        }
        queue.release_memory();
    }
}

fn bench_fanout(c: &mut Criterion) {
    let frame = OutFrame::new(chat_frame());
    let mut queues: Vec<OutQueue> = (0..QUEUES).map(|_| OutQueue::default()).collect();
    let mut batch = Vec::new();

    let mut group = c.benchmark_group("fanout");
    for per_drain in [1, 64] {
        group.throughput(Throughput::Elements((QUEUES * per_drain) as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(per_drain),
            &per_drain,
            |b, &n| b.iter(|| round(&mut queues, &frame, n, &mut batch)),
        );
    }
    group.finish();
    assert!(queues.iter().all(|q| q.is_empty() && q.owed() == 0));
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_fanout
}
criterion_main!(benches);
