//! Splits an inbound byte stream into frames, without parsing them.
//!
//! A frame is one JSON object. Objects may end with `\n` or `\r\n`, or follow each other with no
//! separator at all (the old server's clients wrote one object per write). The decoder finds where an
//! object ends by tracking brace depth outside strings, so `{...}{...}` is two frames; serde then
//! parses each frame on its own. A raw newline always ends what is being read: valid JSON never holds
//! one inside a string, so a line that breaks off mid-object is reported and the next line starts
//! clean. The decoder never asks the caller to keep more than `max_frame` bytes of one frame.

use std::ops::Range;

/// What the decoder found next in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete object, as a range of the buffer (without its line ending).
    Frame(Range<usize>),
    /// A line that is not one complete object; it has been skipped.
    Invalid,
    /// The current frame passed the limit; the stream cannot be resynchronised cheaply, so close.
    TooLarge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Between frames: skipping whitespace, expecting `{`.
    Between,
    /// Inside an object.
    Object,
    /// Skipping the rest of a line that cannot be a frame.
    Garbage,
}

/// Incremental frame splitter over a caller-owned buffer that only ever grows at the end until
/// [`FrameDecoder::discard_consumed`] drops what has been decoded.
///
/// Offsets are `u32` (frames are far below 4 GiB): the decoder lives in every idle connection's
/// reader task, so its size is paid ten thousand times over.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: u32,
    /// Next byte to scan.
    pos: u32,
    /// First byte of the frame (or garbage run) being scanned; everything before it is consumed.
    start: u32,
    /// Bytes of the current garbage line already skipped (and dropped).
    skipped: u32,
    depth: u32,
    mode: Mode,
    in_string: bool,
    escaped: bool,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> FrameDecoder {
        FrameDecoder {
            max_frame: u32::try_from(max_frame).unwrap_or(u32::MAX / 2),
            mode: Mode::Between,
            pos: 0,
            start: 0,
            depth: 0,
            in_string: false,
            escaped: false,
            skipped: 0,
        }
    }

    /// The next event in `buf`, or `None` when more bytes are needed. `buf` must be the same buffer
    /// as before, possibly with more bytes appended, and with `discard_consumed` applied.
    pub fn next(&mut self, buf: &[u8]) -> Option<Event> {
        while (self.pos as usize) < buf.len() {
            let byte = buf[self.pos as usize];
            self.pos += 1;
            match self.mode {
                Mode::Between => match byte {
                    b' ' | b'\t' | b'\r' | b'\n' => self.start = self.pos,
                    b'{' => {
                        self.mode = Mode::Object;
                        self.start = self.pos - 1;
                        self.depth = 1;
                        self.in_string = false;
                        self.escaped = false;
                    }
                    _ => {
                        self.mode = Mode::Garbage;
                        self.start = self.pos - 1;
                        self.skipped = 0;
                    }
                },
                Mode::Garbage => {
                    if byte == b'\n' {
                        let length = self.skipped + (self.pos - 1 - self.start);
                        return Some(self.end_bad_line(length));
                    }
                }
                Mode::Object => {
                    if byte == b'\n' {
                        let length = self.pos - 1 - self.start;
                        return Some(self.end_bad_line(length));
                    }
                    if self.in_string {
                        if self.escaped {
                            self.escaped = false;
                        } else if byte == b'\\' {
                            self.escaped = true;
                        } else if byte == b'"' {
                            self.in_string = false;
                        } else {
                            // Most of a chat frame is string content: jump to the next byte that
                            // matters instead of looking at each one.
                            let rest = &buf[self.pos as usize..];
                            let skip =
                                memchr::memchr3(b'"', b'\\', b'\n', rest).unwrap_or(rest.len());
                            self.pos += skip as u32;
                        }
                        continue;
                    }
                    match byte {
                        b'"' => self.in_string = true,
                        b'{' | b'[' => self.depth += 1,
                        b'}' | b']' => {
                            self.depth -= 1;
                            if self.depth == 0 {
                                let frame = self.start as usize..self.pos as usize;
                                self.mode = Mode::Between;
                                self.start = self.pos;
                                if frame.len() > self.max_frame as usize {
                                    return Some(Event::TooLarge);
                                }
                                return Some(Event::Frame(frame));
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        let held = match self.mode {
            Mode::Between => 0,
            Mode::Object => self.pos - self.start,
            Mode::Garbage => {
                // Garbage is never returned, so it need not be kept; only its length counts.
                self.skipped += self.pos - self.start;
                self.start = self.pos;
                self.skipped
            }
        };
        (held > self.max_frame).then_some(Event::TooLarge)
    }

    /// A line that is not one object ended. It is `Invalid`, or `TooLarge` when longer than the
    /// limit: the verdict must not depend on where the reads happened to split it.
    fn end_bad_line(&mut self, length: u32) -> Event {
        self.mode = Mode::Between;
        self.start = self.pos;
        if length > self.max_frame {
            Event::TooLarge
        } else {
            Event::Invalid
        }
    }

    /// The frame limit it was made with.
    pub fn max_frame(&self) -> usize {
        self.max_frame as usize
    }

    /// Drops the bytes already decoded from the front of `buf`, keeping a partial frame.
    pub fn discard_consumed(&mut self, buf: &mut Vec<u8>) {
        if self.start == 0 {
            return;
        }
        buf.drain(..self.start as usize);
        self.pos -= self.start;
        self.start = 0;
    }

    /// Bytes of the frame in progress that the caller must keep.
    pub fn pending(&self) -> usize {
        (self.pos - self.start) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `chunk` bytes, collecting frames as strings and events as markers.
    fn decode(input: &[u8], chunk: usize, max: usize) -> Vec<String> {
        let mut decoder = FrameDecoder::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            while let Some(event) = decoder.next(&buf) {
                out.push(match event {
                    Event::Frame(range) => String::from_utf8_lossy(&buf[range]).into_owned(),
                    Event::Invalid => "<invalid>".into(),
                    Event::TooLarge => return [out, vec!["<too large>".into()]].concat(),
                });
            }
            decoder.discard_consumed(&mut buf);
            assert!(buf.len() <= max + chunk, "kept {} bytes", buf.len());
        }
        out
    }

    #[test]
    fn splits_newline_crlf_and_back_to_back_objects() {
        let input = b"{\"a\":1}\n{\"b\":\"}{\"}\r\n{\"c\":[{}]}{\"d\":\"\\\"}\"}  {\"e\":2}";
        let expected = [
            "{\"a\":1}",
            "{\"b\":\"}{\"}",
            "{\"c\":[{}]}",
            "{\"d\":\"\\\"}\"}",
            "{\"e\":2}",
        ];
        for chunk in 1..input.len() {
            assert_eq!(decode(input, chunk, 1024), expected, "chunk {chunk}");
        }
    }

    #[test]
    fn skips_garbage_lines_and_broken_objects() {
        let input = b"hello\n{\"a\":\n{\"ok\":true}\n";
        assert_eq!(
            decode(input, 3, 1024),
            ["<invalid>", "<invalid>", "{\"ok\":true}"]
        );
    }

    #[test]
    fn oversized_frames_are_reported_without_buffering_them() {
        let mut input = b"{\"content\":\"".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        assert_eq!(decode(&input, 100, 1000), ["<too large>"]);
        let garbage = vec![b'x'; 10_000];
        assert_eq!(decode(&garbage, 100, 1000), ["<too large>"]);
    }

    #[test]
    fn a_frame_at_the_limit_passes() {
        let mut frame = b"{\"c\":\"".to_vec();
        frame.resize(99, b'x');
        frame.extend_from_slice(b"\"}");
        assert_eq!(frame.len(), 101);
        assert_eq!(decode(&frame, 7, 101).len(), 1);
        assert_eq!(decode(&frame, 7, 100), ["<too large>"]);
    }
}

#[cfg(test)]
mod proptests {
    //! Properties of the decoder over arbitrary input split at arbitrary points.

    use super::*;
    use proptest::prelude::*;

    /// An event with the frame's bytes copied out, so runs over different buffers compare.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Owned {
        Frame(Vec<u8>),
        Invalid,
        TooLarge,
    }

    /// Feeds `input` in pieces cut at `cuts` (positions, taken modulo the length), checking after
    /// every piece that the caller never has to keep more than `max` bytes of an unfinished frame,
    /// nor more than `max` plus the piece while decoding. Stops at the first `TooLarge`, as the
    /// server does (it closes the connection).
    fn decode_split(input: &[u8], cuts: &[usize], max: usize) -> Vec<Owned> {
        let mut points: Vec<usize> = cuts.iter().map(|&c| c % (input.len() + 1)).collect();
        points.extend([0, input.len()]);
        points.sort_unstable();
        points.dedup();
        let mut decoder = FrameDecoder::new(max);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for piece in points.windows(2).map(|w| &input[w[0]..w[1]]) {
            buf.extend_from_slice(piece);
            assert!(buf.len() <= max + piece.len(), "held {} bytes", buf.len());
            while let Some(event) = decoder.next(&buf) {
                match event {
                    Event::Frame(range) => {
                        assert!(range.len() <= max, "a frame over the limit was returned");
                        assert_eq!(buf[range.start], b'{');
                        assert!(matches!(buf[range.end - 1], b'}' | b']'));
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
            assert_eq!(
                buf.len(),
                decoder.pending(),
                "only the partial frame is kept"
            );
        }
        out
    }

    /// Bytes that exercise every state: braces, brackets, quotes, escapes, newlines, noise.
    fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
        let interesting = prop::sample::select(vec![
            b'{', b'}', b'[', b']', b'"', b'\\', b'\n', b'\r', b' ', b'a', b':', b',',
        ]);
        prop::collection::vec(prop_oneof![3 => interesting, 1 => any::<u8>()], 0..600)
    }

    /// A JSON value with strings full of the characters the decoder must not be fooled by.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let text = "[a-z{}\\[\\]\"\\\\:,\n\r\t é€😀]{0,12}";
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            text.prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = serde_json::Value> {
        prop::collection::btree_map("[a-zA-Z\"{}]{0,8}", json_value(), 0..5)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
    }

    /// A line longer than the limit is too large whether it arrives in one read or split inside
    /// (found by the property below: it used to be merely invalid when it came whole).
    #[test]
    fn an_oversized_line_is_too_large_whatever_the_split() {
        let mut line = vec![b'x'; 200];
        line.push(b'\n');
        assert_eq!(decode_split(&line, &[], 100), [Owned::TooLarge]);
        assert_eq!(decode_split(&line, &[150], 100), [Owned::TooLarge]);
        let mut broken = b"{\"content\":\"".to_vec();
        broken.resize(200, b'y');
        broken.push(b'\n');
        assert_eq!(decode_split(&broken, &[], 100), [Owned::TooLarge]);
        assert_eq!(decode_split(&broken, &[150], 100), [Owned::TooLarge]);
        let short = b"{\"a\":\n".to_vec();
        assert_eq!(decode_split(&short, &[3], 100), [Owned::Invalid]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Arbitrary bytes split anywhere: no panic, bounded memory, and exactly the same events
        /// as the whole stream.
        #[test]
        fn split_streams_decode_like_whole_streams(
            input in stream_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
            max in 8usize..256,
        ) {
            let whole = decode_split(&input, &[], max);
            prop_assert_eq!(decode_split(&input, &cuts, max), whole);
        }

        /// Byte-at-a-time feeding is the worst case for the bound and must agree with larger pieces
        /// whenever no line passes the limit.
        #[test]
        fn lines_within_the_limit_decode_the_same_whatever_the_split(
            input in stream_bytes(),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let max = input.len().max(1);
            let whole = decode_split(&input, &[], max);
            let every_byte: Vec<usize> = (0..input.len()).collect();
            prop_assert_eq!(&decode_split(&input, &cuts, max), &whole);
            prop_assert_eq!(&decode_split(&input, &every_byte, max), &whole);
            prop_assert!(!whole.contains(&Owned::TooLarge));
        }

        /// Valid JSON objects joined by "\n", "\r\n", spaces or nothing come back exactly, in order.
        #[test]
        fn json_objects_round_trip_with_any_separator(
            objects in prop::collection::vec(json_object(), 0..8),
            separators in prop::collection::vec(
                prop::sample::select(vec!["\n", "\r\n", "", " ", "\t\r\n"]), 8),
            cuts in prop::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut input = Vec::new();
            let mut expected = Vec::new();
            for (object, separator) in objects.iter().zip(&separators) {
                let text = serde_json::to_vec(object).unwrap();
                input.extend_from_slice(&text);
                input.extend_from_slice(separator.as_bytes());
                expected.push(Owned::Frame(text));
            }
            let max = input.len().max(64);
            let events = decode_split(&input, &cuts, max);
            prop_assert_eq!(&events, &expected);
            for (event, object) in events.iter().zip(&objects) {
                let Owned::Frame(bytes) = event else { unreachable!() };
                let parsed: serde_json::Value = serde_json::from_slice(bytes).unwrap();
                prop_assert_eq!(&parsed, object);
            }
        }
    }
}
