//! The frame decoder on arbitrary bytes, split in two at a point taken from the first byte.
//!
//! Checks: no panic; the caller never holds more than the frame limit plus the piece being fed;
//! every frame is within the limit and starts with `{`; and the split stream decodes to the same
//! events as the whole stream, except that an oversized line may be refused as too large earlier.
#![no_main]

use libfuzzer_sys::fuzz_target;
use uring_chat::net::codec::{Event, FrameDecoder};

#[derive(Debug, PartialEq, Eq)]
enum Owned {
    Frame(Vec<u8>),
    Invalid,
    TooLarge,
}

fn decode(pieces: &[&[u8]], max: usize) -> Vec<Owned> {
    let mut decoder = FrameDecoder::new(max);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        assert!(buf.len() <= max + piece.len(), "held {} bytes", buf.len());
        while let Some(event) = decoder.next(&buf) {
            match event {
                Event::Frame(range) => {
                    assert!(range.len() <= max);
                    assert_eq!(buf[range.start], b'{');
                    out.push(Owned::Frame(buf[range].to_vec()));
                }
                Event::Invalid => out.push(Owned::Invalid),
                Event::TooLarge => {
                    out.push(Owned::TooLarge);
                    return out;
                }
            }
        }
        assert!(decoder.pending() <= max, "pending {}", decoder.pending());
        decoder.discard_consumed(&mut buf);
        assert_eq!(buf.len(), decoder.pending());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    // The limit varies too (the server's minimum is 64), so oversized lines are reachable.
    let max = 64 + usize::from(first & 0x0f) * 16;
    let cut = if input.is_empty() {
        0
    } else {
        usize::from(first) * input.len() / 255
    };
    let whole = decode(&[input], max);
    let split = decode(&[&input[..cut], &input[cut..]], max);
    match split.last() {
        Some(Owned::TooLarge) if whole.len() >= split.len() => {
            let k = split.len() - 1;
            assert_eq!(split[..k], whole[..k]);
            assert!(matches!(whole[k], Owned::TooLarge | Owned::Invalid));
        }
        _ => assert_eq!(split, whole),
    }
});
