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
                        self.mode = Mode::Between;
                        self.start = self.pos;
                        return Some(Event::Invalid);
                    }
                }
                Mode::Object => {
                    if byte == b'\n' {
                        self.mode = Mode::Between;
                        self.start = self.pos;
                        return Some(Event::Invalid);
                    }
                    if self.in_string {
                        if self.escaped {
                            self.escaped = false;
                        } else if byte == b'\\' {
                            self.escaped = true;
                        } else if byte == b'"' {
                            self.in_string = false;
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
