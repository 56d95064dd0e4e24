//! WebSocket frames for `--transport ws` (RFC 6455), through tungstenite's frame types: its
//! `FrameHeader` parses and formats the headers, its `Frame::format` masks what a client sends.
//!
//! The receive side parses the server's frames in place over the connection's read buffer: no
//! copy and no allocation per message, the payload handed to the same byte scanning as a TCP line.
//! The send side appends each masked frame to the caller's buffer, so several frames still leave
//! in one write. The server's contract (docs/PROTOCOL.md): each of its frames is one unmasked,
//! unfragmented text message holding one JSON object; anything else ends the connection with a
//! `LOADGEN_WS_*` code in the report's `server_errors`.

use crate::stamp::{LineBuffer, MAX_FRAME};
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::Bytes;

/// The longest payload of a control frame (ping, pong, close).
pub const MAX_CONTROL: usize = 125;

/// One frame from the server, its payload borrowed from the read buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A whole text message: one protocol frame (the JSON, without a newline).
    Message(&'a [u8]),
    /// A ping, to be answered with a pong carrying the same payload.
    Ping(&'a [u8]),
    /// A pong (loadgen never pings; ignored).
    Pong,
    /// The server closes; the payload holds its status code and reason.
    Close(&'a [u8]),
}

/// Parses the frame at the start of `data`: `Ok(None)` while it is incomplete (a header or payload
/// cut by the read), else the bytes it takes and what it is. `Err` names, as a `LOADGEN_` code, a
/// frame this client does not accept: masked, fragmented, binary, with reserved bits or opcodes,
/// a control frame over 125 bytes, or a message longer than the read buffer may grow.
pub fn parse(data: &[u8]) -> Result<Option<(usize, Item<'_>)>, &'static str> {
    let mut cursor = Cursor::new(data);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(None),
        Err(_) => return Err("LOADGEN_WS_PROTOCOL"),
    };
    if header.mask.is_some() {
        return Err("LOADGEN_WS_MASKED");
    }
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return Err("LOADGEN_WS_PROTOCOL");
    }
    let control = matches!(header.opcode, OpCode::Control(_));
    if control && (len > MAX_CONTROL as u64 || !header.is_final) {
        return Err("LOADGEN_WS_PROTOCOL");
    }
    if len > MAX_FRAME as u64 {
        return Err("LOADGEN_FRAME_TOO_LARGE");
    }
    let start = cursor.position() as usize;
    let end = start + len as usize;
    let Some(payload) = data.get(start..end) else {
        return Ok(None);
    };
    let item = match header.opcode {
        OpCode::Data(Data::Text) if header.is_final => Item::Message(payload),
        OpCode::Data(Data::Text | Data::Continue) => return Err("LOADGEN_WS_FRAGMENTED"),
        OpCode::Data(_) => return Err("LOADGEN_WS_NOT_TEXT"),
        OpCode::Control(Control::Ping) => Item::Ping(payload),
        OpCode::Control(Control::Pong) => Item::Pong,
        OpCode::Control(Control::Close) => Item::Close(payload),
        OpCode::Control(_) => return Err("LOADGEN_WS_PROTOCOL"),
    };
    Ok(Some((end, item)))
}

/// A control frame's payload, held without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlPayload {
    bytes: [u8; MAX_CONTROL],
    len: u8,
}

impl ControlPayload {
    /// `p` is at most `MAX_CONTROL` bytes (`parse` refuses longer control frames).
    fn new(p: &[u8]) -> Self {
        let mut bytes = [0; MAX_CONTROL];
        let len = p.len().min(MAX_CONTROL);
        bytes[..len].copy_from_slice(&p[..len]);
        ControlPayload {
            bytes,
            len: len as u8,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// What the control frames among one read's frames ask of the client.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// The last ping's payload: one pong answers it (RFC 6455 5.5.3 lets the most recent do).
    pub ping: Option<ControlPayload>,
    /// The server's close frame: the connection is over after it.
    pub close: Option<ControlPayload>,
    /// A frame this client does not accept (see `parse`): the connection is over.
    pub error: Option<&'static str>,
}

/// Calls `message` on every whole text message in `buf`, collects what the control frames ask for,
/// and keeps an unfinished frame for the next read. Stops at a close or a refused frame.
pub fn drain(buf: &mut LineBuffer, mut message: impl FnMut(&[u8])) -> Controls {
    let mut out = Controls::default();
    let mut used = 0;
    let data = buf.data();
    loop {
        match parse(&data[used..]) {
            Ok(None) => break,
            Err(code) => {
                out.error = Some(code);
                break;
            }
            Ok(Some((n, item))) => {
                used += n;
                match item {
                    Item::Message(m) => message(m),
                    Item::Ping(p) => out.ping = Some(ControlPayload::new(p)),
                    Item::Pong => {}
                    Item::Close(p) => {
                        out.close = Some(ControlPayload::new(p));
                        break;
                    }
                }
            }
        }
    }
    buf.consume(used);
    out
}

/// Appends `msg` as one masked text message (a client masks every frame, RFC 6455 5.3).
pub fn push_text(out: &mut Vec<u8>, msg: &[u8]) {
    let text = OpCode::Data(Data::Text);
    push_masked(out, Frame::message(Bytes::copy_from_slice(msg), text, true));
}

/// Appends the masked pong that answers a ping carrying `payload`.
pub fn push_pong(out: &mut Vec<u8>, payload: &[u8]) {
    push_masked(out, Frame::pong(Bytes::copy_from_slice(payload)));
}

/// Appends the masked close frame that answers the server's close, echoing its status code.
pub fn push_close(out: &mut Vec<u8>, server_close: &[u8]) {
    let code = server_close.get(..2).unwrap_or_default();
    push_masked(
        out,
        Frame::from_payload(FrameHeader::default(), Bytes::copy_from_slice(code)),
    );
}

/// Formats `frame` under a fresh random mask; `Frame::format` applies the mask to the payload.
fn push_masked(out: &mut Vec<u8>, mut frame: Frame) {
    frame.header_mut().mask = Some(rand::random());
    frame
        .format(out)
        .expect("formatting into a Vec cannot fail");
}
