//! Inbound decoding and outbound encoding of chat frames, the per-message CPU work of the server
//! outside the kernel.
//!
//! - `codec/decode_*`: `FrameDecoder` splitting a stream of realistic client frames, fed the way a
//!   reader task sees it: the whole stream in one read, or in reads of 7 bytes (every frame split,
//!   most of them several times) and 1000 bytes (frames split at arbitrary points). Reported once
//!   as frames/s and once as bytes/s (criterion takes one throughput unit per group).
//! - `protocol/*`: `parse_request` of one inbound chat frame and `chat` building one outbound frame.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use uring_chat::chat::protocol::{self, parse_request};
use uring_chat::chat::user_id::UserId;
use uring_chat::net::codec::{Event, FrameDecoder};

/// Frames in the decoded stream.
const FRAMES: usize = 1000;
/// The server's default frame limit.
const MAX_FRAME: usize = uring_chat::config::DEFAULT_MAX_FRAME_BYTES;
/// Read sizes the stream is fed in (`usize::MAX`: the whole stream at once).
const CHUNKS: [usize; 3] = [usize::MAX, 7, 1000];

/// A deterministic mix of what clients send: mostly short broadcasts, some direct messages with
/// escapes and non-ASCII text, pings, an occasional long message; mostly `\n`, some `\r\n` and some
/// objects back to back with no separator (old clients).
fn client_stream() -> Vec<u8> {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let recipient = UserId::new(1, 0).to_string();
    let mut out = Vec::new();
    for i in 0..FRAMES {
        let roll = next() % 100;
        let frame = match roll {
            0..=59 => format!(
                r#"{{"type":"chat","content":"message {i} to everyone, padded to a typical chat line"}}"#
            ),
            60..=84 => format!(
                r#"{{"type":"chat","recipientID":"{recipient}","content":"direct {i}: \"quoted\", a\\nnew line, caf\u00e9 and 日本語"}}"#
            ),
            85..=94 => format!(r#"{{"type":"ping","content":"{}"}}"#, next()),
            _ => format!(
                r#"{{"type":"chat","content":"{}"}}"#,
                "long message with {braces} and [brackets] inside the string ".repeat(8)
            ),
        };
        out.extend_from_slice(frame.as_bytes());
        match next() % 10 {
            0 => out.extend_from_slice(b"\r\n"),
            1 => {} // back to back
            _ => out.push(b'\n'),
        }
    }
    out
}

/// Feeds `stream` to a fresh decoder in reads of `chunk` bytes, as a reader task does (append,
/// decode everything complete, drop what was consumed). Returns frames and frame bytes seen.
fn decode(stream: &[u8], chunk: usize, buf: &mut Vec<u8>) -> (usize, usize) {
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    buf.clear();
    let (mut frames, mut bytes) = (0, 0);
    for piece in stream.chunks(chunk.min(stream.len())) {
        buf.extend_from_slice(piece);
        while let Some(event) = decoder.next(buf) {
            match event {
                Event::Frame(range) => {
                    frames += 1;
                    bytes += black_box(&buf[range]).len();
                }
                other => panic!("the benchmark stream is valid, got {other:?}"),
            }
        }
        decoder.discard_consumed(buf);
    }
    (frames, bytes)
}

fn chunk_name(chunk: usize) -> String {
    if chunk == usize::MAX {
        "whole".into()
    } else {
        format!("chunks_of_{chunk}")
    }
}

fn bench_decode(c: &mut Criterion) {
    let stream = client_stream();
    let mut buf = Vec::with_capacity(stream.len());
    for chunk in CHUNKS {
        assert_eq!(decode(&stream, chunk, &mut buf).0, FRAMES, "chunk {chunk}");
    }
    let units = [
        ("codec/decode_frames", Throughput::Elements(FRAMES as u64)),
        ("codec/decode_bytes", Throughput::Bytes(stream.len() as u64)),
    ];
    for (name, throughput) in units {
        let mut group = c.benchmark_group(name);
        group.throughput(throughput);
        for chunk in CHUNKS {
            group.bench_with_input(
                BenchmarkId::from_parameter(chunk_name(chunk)),
                &chunk,
                |b, &chunk| b.iter(|| decode(black_box(&stream), chunk, &mut buf)),
            );
        }
        group.finish();
    }
}

fn bench_protocol(c: &mut Criterion) {
    let sender = UserId::new(0, 0);
    let recipient = UserId::new(1, 0);
    // A 64-byte payload, like loadgen's default `--size`.
    let inbound = format!(r#"{{"type":"chat","content":"{}"}}"#, "x".repeat(64));
    let direct = format!(
        r#"{{"type":"chat","recipientID":"{recipient}","content":"{}"}}"#,
        "x".repeat(64)
    );

    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse_request/broadcast", |b| {
        b.iter(|| parse_request(black_box(inbound.as_bytes())).map(|r| r.content.json().len()))
    });
    group.bench_function("parse_request/direct", |b| {
        b.iter(|| parse_request(black_box(direct.as_bytes())).map(|r| r.recipient_id.len()))
    });
    let request = parse_request(inbound.as_bytes()).expect("valid frame");
    group.bench_function("chat/broadcast", |b| {
        b.iter(|| {
            protocol::chat(
                black_box(sender),
                black_box("alice"),
                None,
                black_box(request.content),
            )
        })
    });
    group.bench_function("chat/direct", |b| {
        b.iter(|| {
            protocol::chat(
                black_box(sender),
                black_box("alice"),
                Some(black_box(recipient)),
                black_box(request.content),
            )
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_decode, bench_protocol
}
criterion_main!(benches);
