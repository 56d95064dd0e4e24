//! `/ws`: a WebSocket client becomes a connection of the core that accepted it, with a session like
//! any other. It logs in, chats and counts against the same limits as a TCP client, and its frames
//! go through the same writer; only the framing differs ([`crate::net::websocket`]).
//!
//! `--ws-echo` turns `/ws` into an echo server through the same code, limits and writer, for the
//! Autobahn conformance suite: each message comes back as it came, and no session is made.

use std::rc::Rc;

use tokio_uring::net::TcpStream;

use crate::chat::counters::INVALID;
use crate::chat::protocol::{self, ErrorCode};
use crate::chat::session::{self, Session};
use crate::net::tls::TlsSession;
use crate::net::websocket::{self, Inbound as Message, WebSocketReader};
use crate::net::{CloseReason, Connection, Transport};
use crate::server::core::Core;
use crate::server::reader::{self, Inbound};

/// Takes over a socket whose upgrade request was accepted: sends `answer` (the 101) first, then
/// reads messages, starting with `early`, whatever the client sent right after its request. Over
/// TLS (wss), `tls` is the session the request came through, and the connection goes on in it.
pub fn adopt(
    core: &Rc<Core>,
    stream: TcpStream,
    counted_ip: Option<std::net::IpAddr>,
    tls: Option<TlsSession>,
    answer: Vec<u8>,
    early: Vec<u8>,
) {
    // As on the chat port: a frame goes out when written, not when Nagle has heard an ACK.
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%error, "TCP_NODELAY failed");
    }
    let conn = core.register(stream, Transport::WebSocket, counted_ip, tls);
    conn.send_wire(answer.into());
    if core.config.ws_echo {
        // An echo client never logs in; the login timeout is for chat clients.
        conn.set_identified(true);
    }
    let messages = Messages {
        reader: new_reader(core),
        echo: core.config.ws_echo,
    };
    tokio_uring::spawn(reader::serve_framed(core.clone(), conn, messages, early));
}

fn new_reader(core: &Core) -> WebSocketReader {
    WebSocketReader::new(core.config.max_frame_bytes, core.config.read_buffer_bytes)
}

/// WebSocket messages: each text message is one protocol frame.
struct Messages {
    reader: WebSocketReader,
    echo: bool,
}

impl Inbound for Messages {
    fn take_frames(
        &mut self,
        core: &Core,
        conn: &Rc<Connection>,
        session: &mut Option<Session>,
        buf: &mut Vec<u8>,
    ) {
        let mut input: &[u8] = buf;
        while let Some(message) = self.reader.next(&mut input) {
            match message {
                Message::Text(text) if self.echo => {
                    conn.send_wire(websocket::echo_frame(text, true))
                }
                Message::Binary(bytes) if self.echo => {
                    conn.send_wire(websocket::echo_frame(bytes, false))
                }
                Message::Text(frame) => session::handle_frame(&core.shard, conn, session, &frame),
                Message::Binary(_) => {
                    core.shard.counters.received(conn.transport(), INVALID);
                    let reason = "send each frame as a text message";
                    conn.reply(protocol::error(ErrorCode::InvalidMessage, reason));
                }
                // Its pong goes before anything the next messages cause, as the client expects.
                Message::Ping => {
                    if let Some(pong) = self.reader.take_output() {
                        conn.send_wire(pong);
                    }
                }
                Message::Closed => {
                    let reply = self.reader.take_output();
                    let reason = CloseReason::Disconnect;
                    let reply = reply.unwrap_or_else(|| websocket::close_frame(reason, ""));
                    conn.finish_wire(reply, reason);
                }
                Message::Failed(CloseReason::FrameTooLarge, _) if !self.echo => {
                    conn.finish(reader::too_large(core), CloseReason::FrameTooLarge)
                }
                Message::Failed(reason, text) => {
                    conn.finish_wire(websocket::close_frame(reason, &text), reason)
                }
            }
            if conn.is_closing() {
                break;
            }
            if session::is_pending(session) {
                // The rest waits for the login's answer (reader::settle_login calls again).
                let consumed = buf.len() - input.len();
                buf.drain(..consumed);
                return;
            }
        }
        // tungstenite has taken in everything it was given (and keeps a partial frame itself).
        buf.clear();
    }

    fn reset(&mut self) {}
}
