//! Phase 3: the per-client receive loops. One task per client, one reused buffer each; the receive
//! time is read once per `read()` and shared by every frame that read returned.

use crate::clock::Clock;
use crate::connect::Writer;
use crate::framing::Framer;
use crate::options::Transport;
use crate::redis;
use crate::room_order::{self, RoomSeqs};
use crate::room_wire::room_of;
use crate::rooms::Membership;
use crate::stamp::{parse_stamp, scan_line, Frame, LineBuffer, MAX_FRAME};
use crate::stats::{SeqTracker, Shared, ThreadStats};
use crate::stream::ReadHalf;
use crate::ws;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

const PONG: &[u8] = b"{\"type\":\"pong\",\"content\":\"\"}\n";
const PRESENCE: &[u8] = br#"{"type":"presence""#;

/// What the receive tasks of one thread share.
pub struct Ctx {
    pub clock: Clock,
    pub senders: usize,
    pub read_buffer: usize,
    pub transport: Transport,
    pub stats: Rc<RefCell<ThreadStats>>,
    pub shared: Arc<Shared>,
    /// `--pattern mixed`: direct messages (no `room`) arrive beside room messages.
    pub mixed: bool,
}

/// Reads into `buf`; `false` when the connection is gone.
async fn fill(rd: &mut ReadHalf, buf: &mut LineBuffer, ctx: &Ctx) -> bool {
    let Some(spare) = buf.spare() else {
        ctx.stats
            .borrow_mut()
            .count_error(b"LOADGEN_FRAME_TOO_LARGE");
        return false;
    };
    match rd.read(spare).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.advance(n);
            ctx.shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
            true
        }
    }
}

/// A uring-chat client: measures chat frames, answers pings, counts error frames. With rooms,
/// `seqs` checks each room's order and `_member` counts the client in its rooms until it closes;
/// its deliveries also count for its target `host` (an index into the `--hosts` list).
/// Over WebSocket the frames are text messages parsed in place (`ws::drain`); the server's
/// WebSocket pings get pongs and its close gets a close back.
pub async fn chat(
    mut rd: ReadHalf,
    writer: Writer,
    leftover: Vec<u8>,
    ctx: Rc<Ctx>,
    mut seqs: Option<RoomSeqs>,
    _member: Option<Membership>,
    host: usize,
) {
    let mut buf = LineBuffer::new(ctx.read_buffer, MAX_FRAME);
    buf.extend(&leftover);
    let mut order = SeqTracker::new(ctx.senders);
    let mut framer = Framer::new(ctx.transport);
    let mut reply = Vec::new();
    let mut have_data = !leftover.is_empty();
    loop {
        if !have_data && !fill(&mut rd, &mut buf, &ctx).await {
            break;
        }
        have_data = false;
        let now = ctx.clock.now_ns();
        let mut pong = false;
        let mut measured = 0u64;
        let controls = {
            let mut st = ctx.stats.borrow_mut();
            let frame = |line: &[u8]| match scan_line(line) {
                Frame::Chat(s) => {
                    measured += match &mut seqs {
                        Some(seqs) if !ctx.mixed || room_of(line).is_some() => {
                            room_order::record(&mut st, seqs, line, s, now)
                        }
                        _ => st.record(s, now, &mut order),
                    } as u64
                }
                Frame::Foreign => {
                    if let Some(seqs) = &mut seqs {
                        seqs.skip(line);
                    }
                    st.foreign += 1
                }
                Frame::Ping => pong = true,
                Frame::Error(code) => st.count_error(code),
                Frame::Other => {
                    if line.starts_with(PRESENCE) {
                        st.presence_frames += 1;
                        st.presence_bytes += line.len() as u64 + 1;
                    }
                }
            };
            match ctx.transport {
                Transport::Tcp => {
                    buf.drain_lines(frame);
                    ws::Controls::default()
                }
                Transport::Ws => ws::drain(&mut buf, frame),
            }
        };
        if measured > 0 {
            ctx.shared.measured.fetch_add(measured, Ordering::Relaxed);
            ctx.stats.borrow_mut().count_on_host(host, measured);
        }
        if let Some(code) = controls.error {
            ctx.stats.borrow_mut().count_error(code.as_bytes());
        }
        reply.clear();
        if pong {
            framer.push_bytes(&mut reply, PONG);
        }
        if let Some(p) = &controls.ping {
            ws::push_pong(&mut reply, p.as_slice());
        }
        if let Some(p) = &controls.close {
            ws::push_close(&mut reply, p.as_slice());
        }
        if !reply.is_empty() {
            let mut w = writer.lock().await;
            if w.write_all(&reply).await.is_err() {
                break;
            }
        }
        if controls.close.is_some() || controls.error.is_some() {
            break;
        }
    }
    ctx.shared.disconnected.fetch_add(1, Ordering::Relaxed);
}

/// A Redis connection: a subscriber measures `message` pushes; a publisher only drains replies.
/// The task holds the write half too: dropping it would send FIN and Redis would close the socket.
/// Rooms need no seq here (Redis has none): order is checked per publisher as without rooms.
pub async fn redis(
    mut rd: ReadHalf,
    _writer: Writer,
    leftover: Vec<u8>,
    ctx: Rc<Ctx>,
    publisher: bool,
    _member: Option<Membership>,
    host: usize,
) {
    let mut buf = LineBuffer::new(ctx.read_buffer, MAX_FRAME);
    buf.extend(&leftover);
    let mut order = SeqTracker::new(ctx.senders);
    let mut have_data = !leftover.is_empty();
    'conn: loop {
        if !have_data && !fill(&mut rd, &mut buf, &ctx).await {
            break;
        }
        have_data = false;
        let now = ctx.clock.now_ns();
        let mut measured = 0u64;
        let mut off = 0;
        {
            let mut st = ctx.stats.borrow_mut();
            let data = buf.data();
            loop {
                match redis::parse(&data[off..]) {
                    Ok(None) => break,
                    Err(e) => {
                        st.count_error(format!("LOADGEN_BAD_RESP: {e}").as_bytes());
                        break 'conn;
                    }
                    Ok(Some((used, reply))) => {
                        off += used;
                        match reply {
                            redis::Reply::Message(p) => match parse_stamp(p) {
                                Some(s) => measured += st.record(s, now, &mut order) as u64,
                                None => st.foreign += 1,
                            },
                            redis::Reply::Error(e) => {
                                let code = e.split(|&b| b == b' ').next().unwrap_or(e);
                                st.count_error(code);
                            }
                            redis::Reply::Subscribed | redis::Reply::Other => {}
                        }
                    }
                }
            }
        }
        buf.consume(off);
        if measured > 0 {
            ctx.shared.measured.fetch_add(measured, Ordering::Relaxed);
            ctx.stats.borrow_mut().count_on_host(host, measured);
        }
    }
    if !publisher {
        ctx.shared.disconnected.fetch_add(1, Ordering::Relaxed);
    }
}
