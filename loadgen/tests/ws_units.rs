//! `--transport ws` framing. The server's frames are parsed in place however the reads cut them
//! (7-, 16- and 64-bit lengths, several per read, headers split); what loadgen sends is read back by
//! tungstenite's *server* role, which unmasks and refuses any unmasked client frame.

use loadgen::framing::Framer;
use loadgen::stamp::LineBuffer;
use loadgen::ws::{self, Item};
use loadgen::Transport;
use std::io::{Cursor, Read, Write};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::{Message, Role, WebSocket};

/// An unmasked frame, as the server sends it.
fn server_frame(frame: Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.format(&mut out).unwrap();
    out
}

fn text(payload: &[u8]) -> Vec<u8> {
    server_frame(Frame::message(
        payload.to_vec(),
        OpCode::Data(Data::Text),
        true,
    ))
}

/// A chat frame of exactly `len` bytes.
fn chat_json(len: usize, tag: u8) -> Vec<u8> {
    let mut j = br#"{"type":"chat","content":""#.to_vec();
    j.resize(len - 2, b'a' + tag % 26);
    j.extend_from_slice(b"\"}");
    j
}

/// Feeds `stream` to a LineBuffer in reads cut at `cuts`, draining after each; returns the
/// messages and the ping payloads seen.
fn feed(stream: &[u8], cuts: &[usize]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let mut buf = LineBuffer::new(64, 1 << 20);
    let (mut msgs, mut pings) = (Vec::new(), Vec::new());
    let mut at = 0;
    for &cut in cuts.iter().chain([stream.len()].iter()) {
        buf.extend(&stream[at..cut]);
        at = cut;
        let c = ws::drain(&mut buf, |m| msgs.push(m.to_vec()));
        assert_eq!((c.error, c.close), (None, None));
        pings.extend(c.ping.map(|p| p.as_slice().to_vec()));
    }
    assert!(
        buf.data().is_empty(),
        "a whole stream leaves nothing behind"
    );
    (msgs, pings)
}

#[test]
fn header_sizes_for_7_16_and_64_bit_lengths() {
    for (len, header) in [
        (40, 2),
        (125, 2),
        (126, 4),
        (300, 4),
        (65_535, 4),
        (65_536, 10),
    ] {
        let json = chat_json(len, 0);
        let frame = text(&json);
        assert_eq!(frame.len(), header + len);
        assert_eq!(
            ws::parse(&frame),
            Ok(Some((frame.len(), Item::Message(&json[..])))),
            "{len}"
        );
        // Any prefix, the header itself cut short included, is incomplete and consumes nothing.
        for cut in (0..header + 3).chain([frame.len() - 1]) {
            assert_eq!(ws::parse(&frame[..cut]), Ok(None), "{len} cut at {cut}");
        }
    }
}

#[test]
fn frames_split_anywhere_across_reads() {
    let small = chat_json(60, 1);
    let mid = chat_json(300, 2);
    let big = chat_json(70_000, 3);
    let mut stream = text(&small);
    stream.extend(server_frame(Frame::ping(&b"keepalive"[..])));
    stream.extend(text(&mid));
    let big_at = stream.len();
    stream.extend(text(&big));
    stream.extend(text(&small));
    let want = vec![small.clone(), mid.clone(), big.clone(), small.clone()];

    // One byte per read up to the big frame's payload: every header split at every byte.
    let cuts: Vec<usize> = (1..big_at + 12).collect();
    let (msgs, pings) = feed(&stream, &cuts);
    assert_eq!(msgs, want);
    assert_eq!(pings, vec![b"keepalive".to_vec()]);

    // Two reads, cut at every byte around each frame boundary.
    for cut in (0..big_at + 16).chain(stream.len() - 80..stream.len()) {
        let (msgs, pings) = feed(&stream, &[cut]);
        assert_eq!(msgs, want, "cut at {cut}");
        assert_eq!(pings.len(), 1);
    }
}

#[test]
fn several_messages_in_one_read() {
    let msgs: Vec<Vec<u8>> = (0..100).map(|i| chat_json(50 + i, i as u8)).collect();
    let stream: Vec<u8> = msgs.iter().flat_map(|m| text(m)).collect();
    let (got, pings) = feed(&stream, &[]);
    assert_eq!(got, msgs);
    assert!(pings.is_empty());
}

#[test]
fn frames_outside_the_contract_end_the_connection() {
    let masked = {
        let mut f = Frame::message(&b"{}"[..], OpCode::Data(Data::Text), true);
        f.header_mut().mask = Some([1, 2, 3, 4]);
        server_frame(f)
    };
    let fragment = server_frame(Frame::message(&b"{"[..], OpCode::Data(Data::Text), false));
    let binary = server_frame(Frame::message(&b"{}"[..], OpCode::Data(Data::Binary), true));
    let long_ping = server_frame(Frame::ping(vec![0u8; 126]));
    for (frame, code) in [
        (masked, "LOADGEN_WS_MASKED"),
        (fragment, "LOADGEN_WS_FRAGMENTED"),
        (binary, "LOADGEN_WS_NOT_TEXT"),
        (long_ping, "LOADGEN_WS_PROTOCOL"),
        (vec![0x83, 0x00], "LOADGEN_WS_PROTOCOL"), // reserved opcode
        (vec![0xc1, 0x00], "LOADGEN_WS_PROTOCOL"), // RSV1 without an extension
    ] {
        let mut stream = text(b"{\"type\":\"pong\"}");
        stream.extend(&frame);
        let mut buf = LineBuffer::new(64, 1 << 20);
        buf.extend(&stream);
        let mut n = 0;
        let c = ws::drain(&mut buf, |_| n += 1);
        assert_eq!((n, c.error), (1, Some(code)));
    }

    // A close stops the drain; what follows it is not read as messages.
    let mut stream = text(b"{}");
    stream.extend(server_frame(Frame::close(None)));
    stream.extend(text(b"{}"));
    let mut buf = LineBuffer::new(64, 1 << 20);
    buf.extend(&stream);
    let mut n = 0;
    let c = ws::drain(&mut buf, |_| n += 1);
    assert_eq!((n, c.close.map(|p| p.as_slice().len())), (1, Some(0)));
}

/// Reads what a client wrote as tungstenite's server role does: unmasking, and refusing an
/// unmasked frame with an error (which fails the test).
fn read_as_server(bytes: Vec<u8>) -> Vec<Message> {
    struct Pipe(Cursor<Vec<u8>>, Vec<u8>);
    impl Read for Pipe {
        fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
            self.0.read(b)
        }
    }
    impl Write for Pipe {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.1.write(b)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut server =
        WebSocket::from_raw_socket(Pipe(Cursor::new(bytes), Vec::new()), Role::Server, None);
    let mut out = Vec::new();
    loop {
        match server.read() {
            Ok(m) => out.push(m),
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            ))
            | Err(tungstenite::Error::ConnectionClosed) => return out,
            Err(e) => panic!("the server refuses what loadgen sent: {e}"),
        }
    }
}

#[test]
fn client_frames_are_masked_text_messages_without_the_newline() {
    let mut framer = Framer::new(Transport::Ws);
    let mut out = Vec::new();
    let (small, mid, big) = (chat_json(60, 0), chat_json(300, 1), chat_json(70_000, 2));
    for m in [&small, &mid, &big] {
        framer.push(&mut out, |b| {
            b.extend_from_slice(m);
            b.push(b'\n');
        });
    }
    ws::push_pong(&mut out, b"keepalive");
    ws::push_close(&mut out, &[0x03, 0xe8, b'b', b'y', b'e']);
    let got = read_as_server(out);
    let texts: Vec<&[u8]> = got
        .iter()
        .filter_map(|m| match m {
            Message::Text(t) => Some(t.as_bytes()),
            _ => None,
        })
        .collect();
    assert_eq!(texts, vec![&small[..], &mid[..], &big[..]]);
    assert_eq!(got[3], Message::Pong(b"keepalive"[..].into()));
    match &got[4] {
        Message::Close(Some(c)) => assert_eq!(u16::from(c.code), 1000),
        other => panic!("expected a close with code 1000, got {other:?}"),
    }

    // Each frame gets its own random mask.
    let (a, b) = (framer.frame(b"{}\n"), framer.frame(b"{}\n"));
    assert_eq!((a.len(), a[1]), (2 + 4 + 2, 0x80 | 2));
    assert_ne!(a[2..6], b[2..6]);
}

#[test]
fn tcp_frames_pass_through() {
    let mut framer = Framer::new(Transport::Tcp);
    let mut out = b"x".to_vec();
    framer.push(&mut out, |b| b.extend_from_slice(b"{\"type\":\"chat\"}\n"));
    assert_eq!(out, b"x{\"type\":\"chat\"}\n");
}
