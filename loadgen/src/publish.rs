//! Phase 2: the open-loop sender thread.
//!
//! All senders are driven by one dedicated thread. It sleeps with `std::thread::sleep` (an hrtimer,
//! ~60 µs late at worst with the default timer slack), wakes at a message's intended time but at most
//! once per `--send-tick`, and writes everything that is due by then, grouped per connection, so a
//! late wake-up produces one bigger write rather than a slower schedule. Without the tick, 100,000
//! direct messages/s cost ~16,000 wake-ups and ~100,000 one-message segments per second on the
//! machine the server is measured on. Blocking the thread is fine:
//! it runs nothing else, and the sockets' readiness is driven by the worker runtimes that own them.

use crate::clock::{Clock, Rng, Schedule};
use crate::connect::Writer;
use crate::framing::Framer;
use crate::mixed::{Kind, Mix};
use crate::options::{Pattern, Protocol, Transport};
use crate::redis;
use crate::room_wire::encode_post;
use crate::rooms::RoomSend;
use crate::stamp::{write_payload, Stamp};
use crate::stats::{new_histogram, Window, FANOUT_MAX_MESSAGES};
use hdrhistogram::Histogram;
use std::sync::mpsc;
use std::time::Duration;

/// At most this many messages go out per wake-up, so a sender far behind still reports progress.
const MAX_BATCH: u64 = 4096;

/// The sending connections and how to encode for them.
pub struct SenderSet {
    /// Index = sender number (the `<sender>` of the stamp).
    pub writers: Vec<Writer>,
    pub protocol: Protocol,
    /// uring-chat over TCP, or each frame in a masked WebSocket text message.
    pub transport: Transport,
    pub pattern: Pattern,
    pub size: usize,
    /// Redis broadcast channel.
    pub channel: Vec<u8>,
    /// Direct recipients: userIDs (uring-chat) or channels (Redis).
    pub recipients: Vec<Vec<u8>>,
    pub clock: Clock,
    pub seed: u64,
    /// Least time between two wake-ups of the sender thread (`--send-tick`).
    pub tick: Duration,
    /// With `--rooms`: every message goes into a random room, from a sender allowed to post there.
    pub rooms: Option<RoomSend>,
    /// With `--pattern mixed`: the two rates (see `run_mixed_round`).
    pub mix: Option<Mix>,
}

/// One round of sending.
pub struct Round {
    pub schedule: Schedule,
    pub window: Window,
    /// `--pattern mixed`: the deliveries one broadcast is expected to make this round.
    pub broadcast_reach: u64,
}

/// What the sender thread did in a round.
pub struct RoundResult {
    pub sent: u64,
    /// Messages inside the measured window that were written.
    pub sent_measured: u64,
    /// Messages not written because their connection failed.
    pub failed: u64,
    /// How late each message left: write completion minus intended time.
    pub lag: Histogram<u64>,
    pub errors: Vec<String>,
    /// With `--rooms` (and `--pattern mixed`): what each measured message was expected to reach.
    pub rooms: Option<RoomTally>,
    /// `--pattern mixed`: measured messages written and the deliveries expected of them, by
    /// `mixed::Kind`.
    pub by_kind: [(u64, u64); 2],
}

/// Deliveries expected of a round's room messages: each reaches the reading members its room
/// had when it was sent.
pub struct RoomTally {
    /// Over the measured messages that were written.
    pub expected: u64,
    /// Per measured message (index `g - window.start`), its room's members; empty above
    /// `FANOUT_MAX_MESSAGES`, like the fan-out record it completes.
    pub per_message: Vec<u32>,
}

impl RoundResult {
    fn new(rooms: Option<RoomTally>) -> RoundResult {
        RoundResult {
            sent: 0,
            sent_measured: 0,
            failed: 0,
            lag: new_histogram(),
            errors: Vec::new(),
            rooms,
            by_kind: [(0, 0); 2],
        }
    }
}

impl RoomTally {
    /// An empty tally for a round that measures `window`.
    fn for_window(window: Window) -> RoomTally {
        let per_message = if window.len() <= FANOUT_MAX_MESSAGES {
            vec![0; window.len() as usize]
        } else {
            Vec::new()
        };
        RoomTally {
            expected: 0,
            per_message,
        }
    }
}

/// Sleeps until message `next` is due, but wakes at most once per `tick` after the last wake-up
/// (`woke`, which it updates); returns the end (exclusive) of the messages due by then, at most
/// `MAX_BATCH` of them. Both kinds of round pace themselves with it.
fn wake_for_due(sched: &Schedule, clock: &Clock, tick: u64, next: u64, woke: &mut u64) -> u64 {
    let due = sched.intended(next).max(*woke + tick);
    let now = clock.now_ns();
    if due > now {
        std::thread::sleep(Duration::from_nanos(due - now));
    }
    *woke = clock.now_ns();
    sched
        .due_until(next, *woke)
        .clamp(next + 1, next + MAX_BATCH)
}

/// The running sender thread.
pub struct Sender {
    pub rounds: mpsc::Sender<Round>,
    pub results: mpsc::Receiver<RoundResult>,
    pub cpu_clock: libc::clockid_t,
    pub handle: std::thread::JoinHandle<()>,
}

pub fn spawn(set: SenderSet) -> std::io::Result<Sender> {
    let (round_tx, round_rx) = mpsc::channel::<Round>();
    let (res_tx, res_rx) = mpsc::channel();
    let (clk_tx, clk_rx) = mpsc::channel();
    let handle = std::thread::Builder::new()
        .name("loadgen-send".into())
        .spawn(move || {
            let _ = clk_tx.send(crate::limits::current_thread_clock());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let mut rng = Rng::new(set.seed);
            while let Ok(round) = round_rx.recv() {
                let r = match set.mix {
                    Some(mix) => rt.block_on(run_mixed_round(&set, mix, &round, &mut rng)),
                    None => rt.block_on(run_round(&set, &round, &mut rng)),
                };
                if res_tx.send(r).is_err() {
                    break;
                }
            }
        })?;
    let cpu_clock = clk_rx.recv().unwrap_or(libc::CLOCK_THREAD_CPUTIME_ID);
    Ok(Sender {
        rounds: round_tx,
        results: res_rx,
        cpu_clock,
        handle,
    })
}

/// Appends the frame for message `stamp` from its sender.
pub fn encode(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    set: &SenderSet,
    stamp: Stamp,
    rng: &mut Rng,
) {
    let recipient = match set.pattern {
        Pattern::Broadcast | Pattern::Mixed => None,
        Pattern::Direct => Some(set.recipients[rng.below(set.recipients.len())].as_slice()),
    };
    encode_to(out, scratch, set, stamp, recipient);
}

/// Appends the frame for message `stamp`: a broadcast, or a direct message to `recipient`.
pub fn encode_to(
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    set: &SenderSet,
    stamp: Stamp,
    recipient: Option<&[u8]>,
) {
    match set.protocol {
        Protocol::UringChat => {
            match recipient {
                None => out.extend_from_slice(br#"{"type":"chat","content":""#),
                Some(r) => {
                    out.extend_from_slice(br#"{"type":"chat","recipientID":""#);
                    out.extend_from_slice(r);
                    out.extend_from_slice(br#"","content":""#);
                }
            }
            write_payload(out, stamp, set.size);
            out.extend_from_slice(b"\"}\n");
        }
        Protocol::Redis => {
            scratch.clear();
            write_payload(scratch, stamp, set.size);
            redis::publish(out, recipient.unwrap_or(&set.channel), scratch);
        }
    }
}

async fn run_round(set: &SenderSet, round: &Round, rng: &mut Rng) -> RoundResult {
    let s = set.writers.len().max(1);
    let sched = round.schedule;
    let clock = set.clock;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); s];
    // Per sender in this wake-up: messages, measured messages, deliveries expected of them.
    let mut counts = vec![(0u64, 0u64, 0u64); s];
    // The senders with something to write, so thousands of room senders cost nothing idle.
    let mut touched: Vec<usize> = Vec::new();
    let mut dead = vec![false; s];
    let mut scratch = Vec::new();
    let mut framer = Framer::new(set.transport);
    let window = round.window;
    let mut res = RoundResult::new(set.rooms.as_ref().map(|_| RoomTally::for_window(window)));
    let tick = set.tick.as_nanos() as u64;
    let mut next = sched.first;
    let mut woke = 0u64;
    while next < sched.end {
        let upto = wake_for_due(&sched, &clock, tick, next, &mut woke);
        for g in next..upto {
            let (who, room) = match &set.rooms {
                None => ((g % s as u64) as usize, None),
                Some(rs) => {
                    let (who, room) = rs.pick(g, s, rng);
                    (who, Some((room, rs.plan.members(room))))
                }
            };
            let measured = window.contains(g);
            if let (Some((_, m)), Some(t), true) = (room, &mut res.rooms, measured) {
                if let Some(slot) = t.per_message.get_mut((g - window.start) as usize) {
                    *slot = m;
                }
            }
            if dead[who] {
                res.failed += 1;
                continue;
            }
            let stamp = Stamp {
                sender: who as u32,
                seq: g,
                intended_ns: sched.intended(g),
            };
            if bufs[who].is_empty() {
                touched.push(who);
            }
            framer.push(&mut bufs[who], |out| match room {
                None => encode(out, &mut scratch, set, stamp, rng),
                Some((r, _)) => encode_post(out, &mut scratch, set.protocol, r, stamp, set.size),
            });
            counts[who].0 += 1;
            counts[who].1 += measured as u64;
            counts[who].2 += room.map_or(0, |(_, m)| m as u64) * measured as u64;
        }
        // Ascending sender order, as the writes always went.
        touched.sort_unstable();
        for &who in &touched {
            let ok = {
                let mut w = set.writers[who].lock().await;
                w.write_all(&bufs[who]).await
            };
            match ok {
                Ok(()) => {
                    res.sent += counts[who].0;
                    res.sent_measured += counts[who].1;
                    if let Some(t) = &mut res.rooms {
                        t.expected += counts[who].2;
                    }
                }
                Err(e) => {
                    dead[who] = true;
                    res.failed += counts[who].0;
                    res.errors.push(format!("sender {who}: {e}"));
                }
            }
            bufs[who].clear();
            counts[who] = (0, 0, 0);
        }
        touched.clear();
        let sent_at = clock.now_ns();
        for g in next..upto {
            res.lag
                .saturating_record(sent_at.saturating_sub(sched.intended(g)).max(1));
        }
        next = upto;
    }
    res
}

/// The sender thread's round in `--pattern mixed`: each message is written on its own (one write
/// per message, as real clients send them), the broadcast stream from sender 0 and every direct
/// message from a random direct sender to a random reading client. Wake-ups still follow
/// `--send-tick`, so a late wake-up writes the messages then due one after the other. With
/// `--big-room` the broadcast stream is posted into `room-0` instead of the lobby. The result's
/// tally holds each measured message's expected deliveries
/// (`round.broadcast_reach` for a broadcast, 1 for a direct message), as rooms do.
async fn run_mixed_round(set: &SenderSet, mix: Mix, round: &Round, rng: &mut Rng) -> RoundResult {
    let s = set.writers.len().max(1);
    let sched = round.schedule;
    let window = round.window;
    let clock = set.clock;
    let mut dead = vec![false; s];
    let (mut buf, mut scratch) = (Vec::new(), Vec::new());
    let mut framer = Framer::new(set.transport);
    let mut tally = RoomTally::for_window(window);
    let mut res = RoundResult::new(None);
    let reach = u32::try_from(round.broadcast_reach).unwrap_or(u32::MAX);
    let tick = set.tick.as_nanos() as u64;
    let mut next = sched.first;
    let mut woke = 0u64;
    while next < sched.end {
        let upto = wake_for_due(&sched, &clock, tick, next, &mut woke);
        for g in next..upto {
            let kind = mix.kind(g);
            let (who, recipient, needs) = match kind {
                Kind::Broadcast => match &set.rooms {
                    // --big-room: the room's reading members now, the sender included.
                    Some(rs) => (0, None, rs.plan.members(0)),
                    None => (0, None, reach),
                },
                Kind::Direct => {
                    let r = &set.recipients[rng.below(set.recipients.len())];
                    (rng.below(s), Some(r.as_slice()), 1)
                }
            };
            let measured = window.contains(g);
            if measured {
                if let Some(slot) = tally.per_message.get_mut((g - window.start) as usize) {
                    *slot = needs;
                }
            }
            if dead[who] {
                res.failed += 1;
                continue;
            }
            // Broadcasts name sender `s` (one past the direct senders) in their stamp, so their
            // order is checked as a stream of their own, not against sender 0's direct messages.
            let stamp = Stamp {
                sender: if kind == Kind::Broadcast { s } else { who } as u32,
                seq: g,
                intended_ns: sched.intended(g),
            };
            buf.clear();
            framer.push(&mut buf, |out| match (kind, &set.rooms) {
                (Kind::Broadcast, Some(_)) => {
                    encode_post(out, &mut scratch, set.protocol, 0, stamp, set.size)
                }
                _ => encode_to(out, &mut scratch, set, stamp, recipient),
            });
            let ok = {
                let mut w = set.writers[who].lock().await;
                w.write_all(&buf).await
            };
            match ok {
                Ok(()) => {
                    res.sent += 1;
                    if measured {
                        res.sent_measured += 1;
                        res.by_kind[kind as usize].0 += 1;
                        res.by_kind[kind as usize].1 += needs as u64;
                        tally.expected += needs as u64;
                    }
                }
                Err(e) => {
                    dead[who] = true;
                    res.failed += 1;
                    res.errors.push(format!("sender {who}: {e}"));
                }
            }
            res.lag
                .saturating_record(clock.now_ns().saturating_sub(stamp.intended_ns).max(1));
        }
        next = upto;
    }
    res.rooms = Some(tally);
    res
}
