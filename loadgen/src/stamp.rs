//! The stamp each payload carries, and the byte scanning that finds it again on the receive side.
//!
//! A receiver sees up to a million frames a second on a core it shares with the server, so it never
//! builds a JSON tree per delivery: it splits lines with `memchr`, checks the frame type by prefix
//! (the server writes `type` first, see docs/PROTOCOL.md), finds `"content":"` with `memmem` and
//! parses three decimal numbers.

use memchr::memmem;

/// What a payload says about itself: who sent it, its global sequence number, and when it was due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub sender: u32,
    pub seq: u64,
    pub intended_ns: u64,
}

/// Appends the payload `"<sender>:<seq>:<intended_ns>:"` padded with `x` to `size` bytes.
/// The stamp is never cut: a `size` smaller than the stamp gives just the stamp.
pub fn write_payload(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    let start = out.len();
    push_u64(out, stamp.sender as u64);
    out.push(b':');
    push_u64(out, stamp.seq);
    out.push(b':');
    push_u64(out, stamp.intended_ns);
    out.push(b':');
    let len = out.len() - start;
    if len < size {
        out.resize(start + size, b'x');
    }
}

fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

/// Parses the stamp at the start of a payload; `None` if it is not one of ours.
pub fn parse_stamp(p: &[u8]) -> Option<Stamp> {
    let (sender, rest) = parse_num(p)?;
    let (seq, rest) = parse_num(rest)?;
    let (intended_ns, _) = parse_num(rest)?;
    Some(Stamp {
        sender: u32::try_from(sender).ok()?,
        seq,
        intended_ns,
    })
}

/// A decimal number followed by `:`.
fn parse_num(p: &[u8]) -> Option<(u64, &[u8])> {
    let mut v: u64 = 0;
    for (i, &b) in p.iter().enumerate() {
        match b {
            b'0'..=b'9' if i < 20 => {
                v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
            }
            b':' if i > 0 => return Some((v, &p[i + 1..])),
            _ => return None,
        }
    }
    None
}

/// One uring-chat frame, as far as loadgen cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A chat frame carrying one of our stamps.
    Chat(Stamp),
    /// A chat frame from someone else (not a loadgen stamp).
    Foreign,
    /// The server asks for a pong.
    Ping,
    /// An error frame, with its `code`.
    Error(&'a [u8]),
    /// Presence, pongs, replies: not measured.
    Other,
}

const CHAT: &[u8] = br#"{"type":"chat""#;
const PING: &[u8] = br#"{"type":"ping""#;
const ERROR: &[u8] = br#"{"type":"error""#;

/// Classifies one line (without its `\n`). Only the prefix and one `memmem` search are done for a
/// chat frame; other frames are rare.
pub fn scan_line(line: &[u8]) -> Frame<'_> {
    if line.starts_with(CHAT) {
        let finder = content_finder();
        match finder.find(line) {
            Some(at) => match parse_stamp(&line[at + CONTENT.len()..]) {
                Some(s) => Frame::Chat(s),
                None => Frame::Foreign,
            },
            None => Frame::Foreign,
        }
    } else if line.starts_with(PING) {
        Frame::Ping
    } else if line.starts_with(ERROR) {
        let key = br#""code":""#;
        match memmem::find(line, key) {
            Some(at) => {
                let rest = &line[at + key.len()..];
                let end = memchr::memchr(b'"', rest).unwrap_or(rest.len());
                Frame::Error(&rest[..end])
            }
            None => Frame::Error(b"UNKNOWN"),
        }
    } else {
        Frame::Other
    }
}

const CONTENT: &[u8] = br#""content":""#;

fn content_finder() -> &'static memmem::Finder<'static> {
    use std::sync::OnceLock;
    static F: OnceLock<memmem::Finder<'static>> = OnceLock::new();
    F.get_or_init(|| memmem::Finder::new(CONTENT))
}

/// The largest frame a receiver accepts (the buffer grows up to this for one frame).
pub const MAX_FRAME: usize = 4 << 20;

/// A per-connection read buffer that hands out complete `\n`-terminated lines and keeps the
/// partial tail for the next read. It starts small (see `--read-buffer`) and grows only when one
/// frame does not fit, so 10,000 clients cost 10,000 × 16 KiB, not × 64 KiB.
pub struct LineBuffer {
    buf: Vec<u8>,
    filled: usize,
    max: usize,
}

impl LineBuffer {
    pub fn new(initial: usize, max: usize) -> Self {
        LineBuffer {
            buf: vec![0; initial.max(64)],
            filled: 0,
            max: max.max(initial),
        }
    }

    /// The free space to read into; grows the buffer if it is full of one unfinished line.
    /// Returns `None` when a single frame is longer than the maximum.
    pub fn spare(&mut self) -> Option<&mut [u8]> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= self.max {
                return None;
            }
            let new = (self.buf.len() * 2).min(self.max);
            self.buf.resize(new, 0);
        }
        Some(&mut self.buf[self.filled..])
    }

    /// Records that `n` bytes were read into `spare()`.
    pub fn advance(&mut self, n: usize) {
        self.filled += n;
        debug_assert!(self.filled <= self.buf.len());
    }

    /// Appends bytes (for data read before this buffer took over, e.g. during login).
    pub fn extend(&mut self, data: &[u8]) {
        while self.buf.len() - self.filled < data.len() {
            let new = self.buf.len() * 2;
            self.buf.resize(new, 0);
        }
        self.buf[self.filled..self.filled + data.len()].copy_from_slice(data);
        self.filled += data.len();
    }

    /// Calls `f` on every complete line (without `\n`, and without a trailing `\r`), then moves
    /// the unfinished tail to the front.
    pub fn drain_lines(&mut self, mut f: impl FnMut(&[u8])) {
        let mut start = 0;
        let data = &self.buf[..self.filled];
        for nl in memchr::memchr_iter(b'\n', data) {
            let mut line = &data[start..nl];
            if let [rest @ .., b'\r'] = line {
                line = rest;
            }
            if !line.is_empty() {
                f(line);
            }
            start = nl + 1;
        }
        self.consume(start);
    }

    /// Drops the first `n` bytes, keeping the rest.
    pub fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.buf.copy_within(n..self.filled, 0);
        self.filled -= n;
    }

    /// The bytes held and not yet consumed.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.filled]
    }

    /// Current capacity (for tests and memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }
}
