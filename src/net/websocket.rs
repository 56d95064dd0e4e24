//! WebSocket (RFC 6455, version 13) for `/ws`, sans-IO: the handshake answer, inbound bytes in and
//! messages out, and the server's outbound frames as bytes.
//!
//! tungstenite's `WebSocketContext` does the protocol: unmasking, fragments, control frames, UTF-8
//! checks, the closing handshake. It is driven through an in-memory pipe: the reader task feeds it
//! what io_uring read, and what the protocol must send (a pong, the close reply) comes back as bytes
//! for the connection's queue, so it goes out through the same writer, in order with chat frames.
//! Server frames are never masked, so a fan-out frame's WebSocket form is the same for every
//! recipient and is encoded once per core ([`crate::net::outbound::OutFrame::websocket`]).

use std::io::{self, Read, Write};

use bytes::Bytes;
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::frame::{Frame, FrameHeader};
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error, Message};

use crate::net::http::RequestHead;
use crate::net::transport::CloseReason;

/// A handshake the server will not complete, with the HTTP status that says why.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub reason: &'static str,
}

/// The `101 Switching Protocols` answer to a valid upgrade request, or why it is refused.
/// `allowed_origins` empty allows any; otherwise a request carrying an `Origin` header must name
/// one of them exactly (ASCII case aside). A request with no `Origin` is not from a browser page,
/// and a non-browser client could send any origin it liked, so it passes.
pub fn accept(head: &RequestHead, allowed_origins: &[String]) -> Result<Vec<u8>, Refusal> {
    let has_token = |name: &str, token: &str| {
        head.header(name)
            .and_then(|value| std::str::from_utf8(value).ok())
            .is_some_and(|value| {
                value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(token))
            })
    };
    let refuse = |status, reason| Err(Refusal { status, reason });
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return refuse(
            400,
            "/ws needs `Upgrade: websocket` and `Connection: Upgrade`\n",
        );
    }
    if head.header("Sec-WebSocket-Version") != Some(b"13") {
        return refuse(426, "WebSocket version 13 only\n");
    }
    // A 16-byte nonce in base64 is 24 characters ending in `==` (RFC 6455 section 4.1).
    let key = match head.header("Sec-WebSocket-Key") {
        Some(key) if key.len() == 24 && key.ends_with(b"==") => key,
        _ => return refuse(400, "Sec-WebSocket-Key must be a base64 16-byte nonce\n"),
    };
    if let Some(origin) = head.header("Origin") {
        let allowed = allowed_origins.is_empty()
            || (allowed_origins.iter()).any(|a| a.as_bytes().eq_ignore_ascii_case(origin));
        if !allowed {
            return refuse(403, "this Origin may not open a WebSocket here\n");
        }
    }
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        derive_accept_key(key)
    )
    .into_bytes())
}

/// What a client sent, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    Text(Bytes),
    Binary(Bytes),
    /// A ping; its pong is waiting in [`WebSocketReader::take_output`].
    Ping,
    /// The client closed (its close reply is in the output), or the stream ended.
    Closed,
    /// The client broke the protocol or a limit: close with this reason.
    Failed(CloseReason, String),
}

/// The inbound side of one WebSocket connection.
pub struct WebSocketReader {
    context: WebSocketContext,
    output: Vec<u8>,
    /// Set once `Closed` or `Failed` was returned: tungstenite would report its closed state again
    /// on every call, consuming nothing.
    ended: bool,
}

impl WebSocketReader {
    /// `max_message` bounds a message, fragments included, and any one frame. tungstenite's own
    /// buffer starts at `read_buffer` bytes: it receives what was already read, so it need not be
    /// large, and idle connections are most connections.
    pub fn new(max_message: usize, read_buffer: usize) -> WebSocketReader {
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        WebSocketReader {
            context: WebSocketContext::new(Role::Server, Some(config)),
            output: Vec::new(),
            ended: false,
        }
    }

    /// The next message in `input` (consumed as it is taken in), or `None` once more bytes are
    /// needed. After `Closed` or `Failed` there is nothing more: always `None`.
    pub fn next(&mut self, input: &mut &[u8]) -> Option<Inbound> {
        if self.ended {
            return None;
        }
        let mut pipe = Pipe {
            input,
            output: &mut self.output,
        };
        loop {
            let event = match self.context.read(&mut pipe) {
                Ok(Message::Text(text)) => Inbound::Text(text.into()),
                Ok(Message::Binary(bytes)) => Inbound::Binary(bytes),
                Ok(Message::Ping(_)) => {
                    // Writes the pong now; the pipe's writes never block.
                    let _ = self.context.flush(&mut pipe);
                    Inbound::Ping
                }
                Ok(Message::Pong(_) | Message::Frame(_)) => continue,
                Ok(Message::Close(_)) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    // Writes the close reply; tungstenite then reports the connection closed.
                    let _ = self.context.flush(&mut pipe);
                    Inbound::Closed
                }
                Err(Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => return None,
                Err(Error::Capacity(error)) => {
                    Inbound::Failed(CloseReason::FrameTooLarge, error.to_string())
                }
                Err(Error::Utf8(_)) => {
                    Inbound::Failed(CloseReason::InvalidUtf8, "text is not UTF-8".into())
                }
                Err(error) => Inbound::Failed(CloseReason::Protocol, error.to_string()),
            };
            self.ended = matches!(event, Inbound::Closed | Inbound::Failed(..));
            return Some(event);
        }
    }

    /// What the protocol wrote meanwhile (pongs, the close reply), ready for the queue.
    pub fn take_output(&mut self) -> Option<Bytes> {
        (!self.output.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.output)))
    }
}

/// Reads from the bytes io_uring brought, writes into the output; never blocks.
struct Pipe<'a, 'b> {
    input: &'a mut &'b [u8],
    output: &'a mut Vec<u8>,
}

impl Read for Pipe<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.input.read(buf)
    }
}

impl Write for Pipe<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The longest server frame header: 2 bytes, 8 of extended length, no mask.
const MAX_HEADER_BYTES: usize = 10;

/// One protocol frame (a JSON line) as a text message: the line without its `\n`.
pub fn text_frame(line: &[u8]) -> Bytes {
    let payload = line.strip_suffix(b"\n").unwrap_or(line);
    let header = FrameHeader {
        opcode: OpCode::Data(Data::Text),
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(payload.len() + MAX_HEADER_BYTES);
    header
        .format(payload.len() as u64, &mut out)
        .expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
    out.into()
}

/// `--ws-echo`: a message sent back as it came, text as text and binary as binary.
pub fn echo_frame(message: Bytes, text: bool) -> Bytes {
    let data = if text { Data::Text } else { Data::Binary };
    encode(Frame::message(message, OpCode::Data(data), true))
}

/// The server's keepalive ping (empty payload): browsers answer it, and never ping on their own.
pub fn ping_frame() -> Bytes {
    encode(Frame::ping(Bytes::new()))
}

/// A close frame with the code for `reason` and a short text (cut to the 123 bytes allowed).
pub fn close_frame(reason: CloseReason, text: &str) -> Bytes {
    let mut end = text.len().min(123);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    encode(Frame::close(Some(CloseFrame {
        code: CloseCode::from(reason.websocket_code()),
        reason: text[..end].to_owned().into(),
    })))
}

fn encode(frame: Frame) -> Bytes {
    let mut out = Vec::with_capacity(frame.len());
    frame
        .format(&mut out)
        .expect("writing to a Vec cannot fail");
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A client frame: masked, as RFC 6455 requires of clients.
    fn client_frame(payload: &[u8], opcode: OpCode, fin: bool, mask: [u8; 4]) -> Vec<u8> {
        masked(
            Frame::message(Bytes::copy_from_slice(payload), opcode, fin),
            mask,
        )
    }

    fn masked(mut frame: Frame, mask: [u8; 4]) -> Vec<u8> {
        frame.header_mut().mask = Some(mask);
        let mut out = Vec::new();
        frame.format(&mut out).unwrap();
        out
    }

    /// Feeds `wire` in the given chunk sizes and collects what comes out.
    fn feed(wire: &[u8], chunks: &[usize]) -> Vec<Inbound> {
        let mut reader = WebSocketReader::new(1 << 20, 64);
        let mut events = Vec::new();
        let mut rest = wire;
        let mut sizes = chunks.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).clamp(1, rest.len());
            let (mut chunk, tail) = rest.split_at(size);
            rest = tail;
            while let Some(event) = reader.next(&mut chunk) {
                events.push(event);
            }
            if matches!(events.last(), Some(Inbound::Closed | Inbound::Failed(..))) {
                break;
            }
            assert!(chunk.is_empty(), "every byte given is taken in");
        }
        events
    }

    proptest! {
        /// Messages come out whole and in order however they are fragmented and however the
        /// reads split the stream.
        #[test]
        fn messages_survive_any_fragmentation_and_read_split(
            messages in proptest::collection::vec(("[a-z{}\":é ]{0,300}", 1usize..4), 1..8),
            chunks in proptest::collection::vec(1usize..200, 1..6),
            mask in any::<[u8; 4]>(),
        ) {
            let mut wire = Vec::new();
            for (text, fragments) in &messages {
                let bytes = text.as_bytes();
                let step = bytes.len().div_ceil(*fragments).max(1);
                let parts: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(step).collect() };
                for (i, part) in parts.iter().enumerate() {
                    let opcode = if i == 0 { OpCode::Data(Data::Text) } else { OpCode::Data(Data::Continue) };
                    wire.extend(client_frame(part, opcode, i + 1 == parts.len(), mask));
                }
            }
            let expected: Vec<Inbound> = (messages.iter())
                .map(|(text, _)| Inbound::Text(Bytes::copy_from_slice(text.as_bytes())))
                .collect();
            prop_assert_eq!(feed(&wire, &chunks), expected);
        }

        /// Arbitrary bytes never panic, and nothing comes after the end.
        #[test]
        fn garbage_fails_cleanly(wire in proptest::collection::vec(any::<u8>(), 0..600), chunk in 1usize..64) {
            let events = feed(&wire, &[chunk]);
            let ends = events.iter().filter(|e| matches!(e, Inbound::Failed(..) | Inbound::Closed)).count();
            prop_assert!(ends <= 1);
            if ends == 1 {
                prop_assert!(matches!(events.last(), Some(Inbound::Failed(..) | Inbound::Closed)));
            }
        }
    }

    #[test]
    fn limits_and_protocol_errors_map_to_their_close_codes() {
        let too_big = client_frame(&[b'x'; 2000], OpCode::Data(Data::Text), true, [9; 4]);
        let unmasked = [0x81, 0x01, b'x'];
        let bad_utf8 = client_frame(b"\xff", OpCode::Data(Data::Text), true, [1; 4]);
        let stray_continuation = client_frame(b"x", OpCode::Data(Data::Continue), true, [1; 4]);
        for (wire, reason) in [
            (&too_big[..], CloseReason::FrameTooLarge),
            (&unmasked[..], CloseReason::Protocol),
            (&bad_utf8[..], CloseReason::InvalidUtf8),
            (&stray_continuation[..], CloseReason::Protocol),
        ] {
            let mut reader = WebSocketReader::new(1024, 64);
            let mut input = wire;
            match reader.next(&mut input) {
                Some(Inbound::Failed(got, _)) => assert_eq!(got, reason),
                other => panic!("{reason:?}: got {other:?}"),
            }
        }
    }

    #[test]
    fn a_ping_is_answered_with_its_payload_and_a_close_with_its_code() {
        let mut reader = WebSocketReader::new(1024, 64);
        let ping = masked(Frame::ping(&b"hi"[..]), [3; 4]);
        let mut input = &ping[..];
        assert_eq!(reader.next(&mut input), Some(Inbound::Ping));
        assert_eq!(
            reader.take_output().as_deref(),
            Some(&[0x8a, 0x02, b'h', b'i'][..])
        );
        let normal = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let close = masked(Frame::close(Some(normal)), [5; 4]);
        let mut input = &close[..];
        assert_eq!(reader.next(&mut input), Some(Inbound::Closed));
        assert_eq!(
            reader.take_output().as_deref(),
            Some(&[0x88, 0x02, 0x03, 0xe8][..])
        );
    }

    #[test]
    fn server_frames_are_unmasked_text_without_the_newline() {
        assert_eq!(&text_frame(b"{}\n")[..], &[0x81, 0x02, b'{', b'}']);
        let long = text_frame(&[b' '; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 0x01, 0x2c]);
        assert_eq!(
            &close_frame(CloseReason::FrameTooLarge, "")[..],
            &[0x88, 0x02, 0x03, 0xf1]
        );
        assert_eq!(&ping_frame()[..], &[0x89, 0x00]);
    }
}
