//! Phase 1 with `--rooms`, uring-chat: after the login, join every room of the client and wait for
//! each `join_response`. A room counts as joined only then (the server delivers nothing at or
//! below the response's seq), and that seq is where the member's order check starts.

use crate::connect::{ConnectError, Established};
use crate::receive::MAX_FRAME;
use crate::room_wire::{join_line, push_join, JoinLine};
use crate::stamp::LineBuffer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends one write with every join, then reads until each room has answered. Lines after the last
/// `join_response` stay in `est.leftover` for the receive loop.
pub async fn join(est: &mut Established, rooms: &[u32]) -> Result<(), ConnectError> {
    let mut frames = Vec::with_capacity(rooms.len() * 32);
    for &r in rooms {
        push_join(&mut frames, r);
    }
    est.stream.write_all(&frames).await?;
    // A join_response lists the room's members, so it may be large.
    let mut buf = LineBuffer::new(4096, MAX_FRAME);
    buf.extend(&std::mem::take(&mut est.leftover));
    let mut joined: Vec<(u32, u64)> = Vec::with_capacity(rooms.len());
    loop {
        let mut used = 0;
        for nl in memchr::memchr_iter(b'\n', buf.data()) {
            let line = &buf.data()[used..nl];
            used = nl + 1;
            match join_line(line) {
                JoinLine::Joined { room, seq } => {
                    if rooms.contains(&room) && !joined.iter().any(|j| j.0 == room) {
                        joined.push((room, seq));
                    }
                    if joined.len() == rooms.len() {
                        est.leftover = buf.data()[used..].to_vec();
                        est.rooms = joined;
                        return Ok(());
                    }
                }
                JoinLine::Refused(why) => {
                    return Err(ConnectError::Failed(format!("join refused: {why}")))
                }
                JoinLine::Other => {}
            }
        }
        buf.consume(used);
        let spare = buf
            .spare()
            .ok_or_else(|| ConnectError::Failed("join reply larger than 4 MiB".into()))?;
        let n = est.stream.read(spare).await?;
        if n == 0 {
            return Err(ConnectError::Failed("server closed while joining".into()));
        }
        buf.advance(n);
    }
}
