//! The reader task: one per connection, it ties a socket to a session.
//!
//! It holds the connection's only pending read (tokio-uring cannot cancel one, so it never sits in a
//! `select!` or a timeout), splits what arrives into frames, and hands each to the chat layer with
//! the connection's session, which lives here. When the socket closes it logs the user out.

use std::rc::Rc;

use tokio_uring::buf::BoundedBuf;

use crate::chat::counters::INVALID;
use crate::chat::protocol::{self, ErrorCode};
use crate::chat::session::{self, Session};
use crate::net::codec::{Event, FrameDecoder};
use crate::net::{CloseReason, Connection};
use crate::server::core::Core;

/// The reader task: reads, splits frames, hands them to the session, and cleans up at the end.
///
/// The read buffer adapts: it starts (and idles) at `--read-buffer-bytes`, doubles when a read fills
/// it (a busy sender, or a frame bigger than the buffer) up to the frame limit plus one idle buffer,
/// and goes back to the idle size once a read comes in small. An idle connection, the common case,
/// holds only the small buffer of its pending read.
pub async fn serve(core: Rc<Core>, conn: Rc<Connection>) {
    let shard = &core.shard;
    let mut session: Option<Session> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(core.config.read_buffer_bytes);
    let mut decoder = FrameDecoder::new(core.config.max_frame_bytes);
    let mut small_reads = 0u8;
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
        while let Some(event) = decoder.next(&buf) {
            match event {
                Event::Frame(range) => {
                    session::handle_frame(shard, &conn, &mut session, &buf[range])
                }
                Event::Invalid => {
                    shard.counters.received(conn.transport(), INVALID);
                    let reason = "a line that is not one JSON object";
                    conn.reply(protocol::error(ErrorCode::InvalidMessage, reason));
                }
                Event::TooLarge => {
                    let reason = format!(
                        "frames are limited to {} bytes",
                        core.config.max_frame_bytes
                    );
                    let frame = protocol::error(ErrorCode::FrameTooLarge, &reason);
                    conn.finish(frame, CloseReason::FrameTooLarge);
                }
            }
            if conn.is_closing() {
                break;
            }
        }
        if conn.is_closing() {
            session::logout(shard, &conn, &mut session);
            buf.clear();
            decoder = FrameDecoder::new(core.config.max_frame_bytes);
        } else {
            decoder.discard_consumed(&mut buf);
        }
        resize(&mut buf, &core, read, filled, &mut small_reads);
        shard.router.wait_for_room().await;
    }
    session::logout(shard, &conn, &mut session);
    conn.set_closed();
    core.forget(&conn);
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
