//! A uring-chat protocol frame on the wire of `--transport`: over TCP the JSON and its newline as
//! they are; over WebSocket each frame, without the newline, as one masked text message. The
//! encoders elsewhere write the TCP form; `Framer` turns it into the transport's.

use crate::options::Transport;
use crate::ws;

/// Puts protocol frames into a send buffer in the form of one transport.
pub struct Framer {
    transport: Transport,
    /// WebSocket: the frame being encoded, before it is wrapped (reused, so no allocation per frame
    /// beyond the one `ws::push_text` makes for masking).
    msg: Vec<u8>,
}

impl Framer {
    pub fn new(transport: Transport) -> Self {
        Framer {
            transport,
            msg: Vec::new(),
        }
    }

    /// Appends to `out` the one protocol frame `encode` writes (newline-terminated, as for TCP).
    pub fn push(&mut self, out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) {
        match self.transport {
            Transport::Tcp => encode(out),
            Transport::Ws => {
                self.msg.clear();
                encode(&mut self.msg);
                let json = self.msg.strip_suffix(b"\n").unwrap_or(&self.msg);
                ws::push_text(out, json);
            }
        }
    }

    /// `push` for a frame given as bytes.
    pub fn push_bytes(&mut self, out: &mut Vec<u8>, frame: &[u8]) {
        self.push(out, |b| b.extend_from_slice(frame));
    }

    /// One protocol frame as its own buffer.
    pub fn frame(&mut self, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(frame.len() + 14);
        self.push_bytes(&mut out, frame);
        out
    }
}

/// One unit of a received stream: the bytes it takes and, if it is a protocol frame, the frame.
pub type Unit<'a> = (usize, Option<&'a [u8]>);

/// The next unit at the start of `data` during login: `Ok(None)` while incomplete, else the bytes
/// it takes and, if it is a protocol frame, the frame (a TCP line without `\n` and `\r`, or a text
/// message). WebSocket pings and pongs are skipped (a fresh connection is not idle, so the server
/// has no reason to ping it); a close or a refused frame is an `Err` naming it.
pub fn next_frame(transport: Transport, data: &[u8]) -> Result<Option<Unit<'_>>, String> {
    match transport {
        Transport::Tcp => Ok(memchr::memchr(b'\n', data).map(|nl| {
            let line = &data[..nl];
            (nl + 1, Some(line.strip_suffix(b"\r").unwrap_or(line)))
        })),
        Transport::Ws => match ws::parse(data) {
            Ok(None) => Ok(None),
            Ok(Some((n, ws::Item::Message(m)))) => Ok(Some((n, Some(m)))),
            Ok(Some((n, ws::Item::Ping(_) | ws::Item::Pong))) => Ok(Some((n, None))),
            Ok(Some((_, ws::Item::Close(p)))) => {
                Err(format!("server sent a WebSocket close ({})", close_code(p)))
            }
            Err(code) => Err(code.to_string()),
        },
    }
}

/// The status code of a close frame's payload, or "no code".
fn close_code(payload: &[u8]) -> String {
    match payload {
        [a, b, ..] => format!("code {}", u16::from_be_bytes([*a, *b])),
        _ => "no code".into(),
    }
}
