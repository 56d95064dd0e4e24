//! The reader task: one per connection, it ties a socket to a session.
//!
//! It holds the connection's only pending read (tokio-uring cannot cancel one, so it never sits in a
//! `select!` or a timeout), has the transport's [`Inbound`] split what arrives into frames, and
//! hands each to the chat layer with the connection's session, which lives here. When the socket
//! closes it logs the user out. Both transports share this loop: TCP lines here, WebSocket
//! messages in [`crate::server::websocket`].

use std::rc::Rc;

use tokio_uring::buf::BoundedBuf;

use crate::chat::counters::INVALID;
use crate::chat::protocol::{self, ErrorCode};
use crate::chat::session::{self, Session};
use crate::net::codec::{Event, FrameDecoder};
use crate::net::tls::Progress;
use crate::net::{CloseReason, Connection};
use crate::server::core::Core;

/// Turns what a connection sent into frames for its session: the transport's half of the reader.
pub trait Inbound {
    /// Acts on every complete frame in `buf`, keeping in `buf` only what a later read completes.
    fn take_frames(
        &mut self,
        core: &Core,
        conn: &Rc<Connection>,
        session: &mut Option<Session>,
        buf: &mut Vec<u8>,
    );

    /// Forgets a partial frame: the connection is closing, and whatever follows is dropped.
    fn reset(&mut self);
}

/// The reader task of a chat-port connection: newline-delimited JSON.
pub async fn serve_tcp(core: Rc<Core>, conn: Rc<Connection>) {
    let lines = Lines(FrameDecoder::new(core.config.max_frame_bytes));
    serve_framed(core, conn, lines, Vec::new()).await;
}

/// The reader task of a connection whose transport frames with `inbound`, under TLS when the
/// connection has a session. `early` is plaintext the client sent before the connection began
/// (what followed a WebSocket upgrade request, decrypted when it came over TLS); it is framed
/// before the first read.
pub async fn serve_framed(
    core: Rc<Core>,
    conn: Rc<Connection>,
    inbound: impl Inbound,
    early: Vec<u8>,
) {
    let idle = core.config.read_buffer_bytes;
    if conn.tls().is_some() {
        let tls = Tls {
            inner: inbound,
            plain: early,
        };
        serve(core, conn, tls, Vec::with_capacity(idle)).await;
    } else {
        let mut buf = Vec::with_capacity(idle.max(early.len()));
        buf.extend_from_slice(&early);
        serve(core, conn, inbound, buf).await;
    }
}

/// TLS under a transport's framing: each read's ciphertext is decrypted, and the plaintext framed
/// by `inner` as a plain socket's bytes are. Handshake flights go out through the writer.
struct Tls<I> {
    inner: I,
    /// Decrypted bytes not yet framed: a partial frame waits here for the next read.
    plain: Vec<u8>,
}

impl<I: Inbound> Inbound for Tls<I> {
    fn take_frames(
        &mut self,
        core: &Core,
        conn: &Rc<Connection>,
        session: &mut Option<Session>,
        buf: &mut Vec<u8>,
    ) {
        let Some(tls) = conn.tls() else {
            return self.inner.take_frames(core, conn, session, buf);
        };
        // The session's borrow ends here: framing below replies, and replies reach the writer.
        // An empty `buf` (the turn before the first read, or the one after a login's answer)
        // brings no ciphertext: only `plain` may hold frames.
        let (result, handshake_done) = if buf.is_empty() {
            (Ok(Progress::default()), false)
        } else {
            let mut tls = tls.borrow_mut();
            let sealable = tls.can_seal();
            let result = tls.input(buf, &mut self.plain);
            (result, !sealable && tls.can_seal())
        };
        buf.clear();
        let progress = match result {
            Ok(progress) => progress,
            Err(failure) => return conn.fail_tls(failure),
        };
        if progress.wants_write || handshake_done {
            conn.flush_tls();
        }
        if !self.plain.is_empty() {
            self.inner.take_frames(core, conn, session, &mut self.plain);
        }
        if self.plain.is_empty() && self.plain.capacity() > core.config.read_buffer_bytes {
            self.plain = Vec::new();
        }
        if progress.peer_closed {
            conn.close_after_flush(CloseReason::PeerClosed);
        }
    }

    fn reset(&mut self) {
        self.inner.reset();
        self.plain.clear();
    }
}

/// The reader task: reads, hands what arrives to `inbound`, and cleans up at the end. `inbound`
/// gets a first turn before the first read: `buf` may hold bytes read before (what followed a
/// WebSocket upgrade request), and a TLS inbound the plaintext that came with them.
///
/// The read buffer adapts: it starts (and idles) at `--read-buffer-bytes`, doubles when a read fills
/// it (a busy sender, or a frame bigger than the buffer) up to the frame limit plus one idle buffer,
/// and goes back to the idle size once a read comes in small. An idle connection, the common case,
/// holds only the small buffer of its pending read.
async fn serve(core: Rc<Core>, conn: Rc<Connection>, mut inbound: impl Inbound, mut buf: Vec<u8>) {
    let shard = &core.shard;
    let mut session: Option<Session> = None;
    let mut small_reads = 0u8;
    inbound.take_frames(&core, &conn, &mut session, &mut buf);
    settle_login(&core, &conn, &mut inbound, &mut session, &mut buf).await;
    loop {
        let (len, capacity) = (buf.len(), buf.capacity());
        let (result, slice) = conn.stream().read(buf.slice(len..capacity)).await;
        buf = slice.into_inner();
        let read = match result {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        let filled = read == capacity - len;
        conn.heard();
        let bytes_in = core.sockets.counters.bytes_in.get(conn.transport());
        bytes_in.add(read as u64);
        if conn.is_closing() || !core.takes_input() {
            // A lingering close or a drain: read to keep the peer's writes from failing, ignore it.
            // A draining server keeps the user logged in, so what it accepted before still reaches
            // this client even if it goes on writing.
            if conn.is_closing() {
                session::logout(shard, &conn, &mut session);
            }
            buf.clear();
            resize(&mut buf, &core, read, filled, &mut small_reads);
            continue;
        }
        inbound.take_frames(&core, &conn, &mut session, &mut buf);
        settle_login(&core, &conn, &mut inbound, &mut session, &mut buf).await;
        if conn.is_closing() {
            session::logout(shard, &conn, &mut session);
            buf.clear();
            inbound.reset();
        }
        resize(&mut buf, &core, read, filled, &mut small_reads);
        shard.router.wait_for_room().await;
    }
    session::logout(shard, &conn, &mut session);
    conn.set_closed();
    core.forget(&conn);
}

/// In a cluster, a login waits for the names bucket's answer (docs/CLUSTER.md): no read is in
/// flight meanwhile, so nothing else of this connection is acted on; the core runs on. Then the
/// frames that followed the login in the same read get their turn. On a single node no login is
/// ever pending, and this is one test of an `Option`.
async fn settle_login(
    core: &Rc<Core>,
    conn: &Rc<Connection>,
    inbound: &mut impl Inbound,
    session: &mut Option<Session>,
    buf: &mut Vec<u8>,
) {
    while let Some(answer) = session::pending_claim(session) {
        let outcome = answer.recv_async().await;
        let outcome = outcome.unwrap_or(crate::cluster::ClaimOutcome::Unavailable);
        session::settle_login(&core.shard, conn, session, outcome);
        inbound.take_frames(core, conn, session, buf);
    }
}

/// Newline-delimited JSON (or objects back to back), split by [`FrameDecoder`].
struct Lines(FrameDecoder);

impl Inbound for Lines {
    fn take_frames(
        &mut self,
        core: &Core,
        conn: &Rc<Connection>,
        session: &mut Option<Session>,
        buf: &mut Vec<u8>,
    ) {
        while let Some(event) = self.0.next(buf) {
            match event {
                Event::Frame(range) => {
                    session::handle_frame(&core.shard, conn, session, &buf[range])
                }
                Event::Invalid => {
                    core.shard.counters.received(conn.transport(), INVALID);
                    let reason = "a line that is not one JSON object";
                    conn.reply(protocol::error(ErrorCode::InvalidMessage, reason));
                }
                Event::TooLarge => conn.finish(too_large(core), CloseReason::FrameTooLarge),
            }
            if conn.is_closing() {
                return;
            }
            if session::is_pending(session) {
                // The rest waits for the login's answer: `serve` calls again once it is in.
                return;
            }
        }
        self.0.discard_consumed(buf);
    }

    fn reset(&mut self) {
        self.0 = FrameDecoder::new(self.0.max_frame());
    }
}

/// `FRAME_TOO_LARGE`, with the limit.
pub fn too_large(core: &Core) -> bytes::Bytes {
    let reason = format!(
        "frames are limited to {} bytes",
        core.config.max_frame_bytes
    );
    protocol::error(ErrorCode::FrameTooLarge, &reason)
}

/// Sizes the read buffer for the next read from how much the last one brought (see [`serve`]).
/// A grown buffer shrinks only after `SMALL_READS_BEFORE_SHRINK` small reads in a row, so a busy
/// sender whose reads vary does not reallocate back and forth.
fn resize(buf: &mut Vec<u8>, core: &Core, last_read: usize, filled: bool, small_reads: &mut u8) {
    let idle = core.config.read_buffer_bytes;
    let capacity = buf.capacity();
    if filled || buf.len() == capacity {
        *small_reads = 0;
        let target = (capacity * 2).min(core.config.max_frame_bytes + idle);
        buf.reserve_exact(target.saturating_sub(buf.len()));
    } else if capacity > idle && last_read < idle / 2 && buf.len() <= idle / 2 {
        *small_reads += 1;
        if *small_reads >= SMALL_READS_BEFORE_SHRINK {
            *small_reads = 0;
            let mut small = Vec::with_capacity(idle);
            small.extend_from_slice(buf);
            *buf = small;
        }
    } else {
        *small_reads = 0;
    }
}

/// Consecutive small reads after which a grown read buffer goes back to its idle size.
const SMALL_READS_BEFORE_SHRINK: u8 = 8;
