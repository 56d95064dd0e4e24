//! Turning one round's raw figures into the report (expected vs received, fan-out completion,
//! CPU per delivery, thresholds).

use crate::mixed::{Kind, Mix};
use crate::options::{LossLimit, Options, Pattern, Protocol, Transport};
use crate::publish::RoundResult;
use crate::report::{
    self, ChurnReport, ConnectReport, Cpu, Fanout, FindMax, HostReport, KindReport, Kinds, Latency,
    Presence, Report, Step, Thresholds,
};
use crate::stats::{new_histogram, ThreadStats, Window};

/// One round's raw figures.
pub(crate) struct RoundData {
    pub rate: f64,
    pub window: Window,
    pub sent: RoundResult,
    pub expected: u64,
    pub per_message: u64,
    pub stats: ThreadStats,
    pub window_s: f64,
    pub server_cpu_ns: Option<u64>,
    pub loadgen_cpu_ns: u64,
    /// Reading clients at the round's start (presence per client).
    pub readers: u64,
    pub churn: Option<ChurnReport>,
}

/// The report of one round; `hosts` holds each target's clients and logins.
pub(crate) fn build(
    o: &Options,
    connect: &ConnectReport,
    hosts: &[HostReport],
    disconnected: u64,
    d: &RoundData,
    find_max: Option<FindMax>,
) -> Report {
    let st = &d.stats;
    let lost = d.expected.saturating_sub(st.received);
    let duration_s = d.window.len() as f64 / d.rate;
    let latency = Latency::from_ns(&st.latency);
    // Recipients each measured message needed: one figure for all, or its room's members.
    let room_needs = d.sent.rooms.as_ref().map(|t| &t.per_message);
    let tracked = match room_needs {
        None => d.per_message > 0,
        Some(v) => v.len() == st.fanout.len(),
    };
    let fanout = (st.fanout.len() as u64 == d.window.len() && tracked).then(|| {
        let mut h = new_histogram();
        let mut incomplete = 0;
        for (i, &(max, n)) in st.fanout.iter().enumerate() {
            let needed = room_needs.map_or(d.per_message, |v| v[i] as u64);
            if n as u64 >= needed {
                h.saturating_record(max.max(1));
            } else {
                incomplete += 1;
            }
        }
        let l = Latency::from_ns(&h);
        Fanout {
            complete: h.len(),
            incomplete,
            p50: l.p50,
            p99: l.p99,
            max: l.max,
        }
    });
    let per = |ns: u64| (st.received > 0).then(|| ns as f64 / st.received as f64);
    let p99_exceeded = o
        .max_p99
        .is_some_and(|m| latency.p99 > m.as_secs_f64() * 1e6);
    let loss_exceeded = o.max_loss.is_some_and(|l| l.crossed(lost, d.expected));
    Report {
        schema: report::SCHEMA.into(),
        protocol: match o.protocol {
            Protocol::UringChat => "uring-chat".into(),
            Protocol::Redis => "redis".into(),
        },
        transport: match o.transport {
            Transport::Tcp => "tcp".into(),
            Transport::Ws => "ws".into(),
        },
        pattern: match o.pattern {
            _ if o.rooms > 0 => "rooms".into(),
            Pattern::Broadcast => "broadcast".into(),
            Pattern::Direct => "direct".into(),
            Pattern::Mixed => "mixed".into(),
        },
        tls: o.tls,
        target: (o.targets().iter())
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
        hosts: (hosts.iter().enumerate())
            .map(|(i, h)| HostReport {
                received: st.received_by_host.get(i).copied().unwrap_or(0),
                ..h.clone()
            })
            .collect(),
        clients: o.clients as u64,
        senders: crate::mixed::senders(o) as u64,
        rooms: o.rooms as u64,
        rooms_per_client: if o.rooms > 0 {
            o.rooms_per_client as u64
        } else {
            0
        },
        slow_clients: o.slow_count() as u64,
        threads: o.threads as u64,
        size: o.size as u64,
        rate: d.rate,
        duration_s,
        warmup_s: o.warmup.as_secs_f64(),
        send_tick_ms: o.send_tick.as_secs_f64() * 1e3,
        connect: connect.clone(),
        messages_sent: d.sent.sent_measured,
        messages_failed: d.sent.failed,
        deliveries_expected: d.expected,
        received: st.received,
        lost,
        duplicated: st.duplicated,
        out_of_order: st.out_of_order,
        // Only uring-chat numbers a room's messages; elsewhere there is nothing to check.
        order_violations: ((o.rooms > 0 || crate::mixed::big_room(o) > 0)
            && o.protocol == Protocol::UringChat)
            .then_some(st.order_violations),
        deliveries_per_sec: st.received as f64 / duration_s,
        latency_us: latency,
        fanout_us: fanout,
        send_lag_us: Latency::from_ns(&d.sent.lag),
        spectrum: report::spectrum(&st.latency),
        cpu: Cpu {
            window_s: d.window_s,
            server_cpu_s: d.server_cpu_ns.map(|n| n as f64 / 1e9),
            server_ns_per_delivery: d.server_cpu_ns.and_then(per),
            loadgen_cpu_s: d.loadgen_cpu_ns as f64 / 1e9,
            loadgen_ns_per_delivery: per(d.loadgen_cpu_ns),
        },
        slow_disconnected: 0,
        clients_disconnected: disconnected,
        server_errors: st.errors.clone(),
        thresholds: Thresholds {
            max_p99_us: o.max_p99.map(|m| m.as_secs_f64() * 1e6),
            max_loss: o.max_loss.map(|l| match l {
                LossLimit::Count(n) => n.to_string(),
                LossLimit::Percent(p) => format!("{p}%"),
            }),
            p99_exceeded,
            loss_exceeded,
            passed: !(p99_exceeded || loss_exceeded),
        },
        find_max,
        kinds: Mix::of(o).map(|m| kinds(m, crate::mixed::big_room(o), d)),
        churn: d.churn.clone(),
    }
}

/// A mixed round's figures by kind.
fn kinds(mix: Mix, big_room: usize, d: &RoundData) -> Kinds {
    let one = |k: Kind, rate: f64| {
        let st = &d.stats.by_kind[k as usize];
        let (sent, expected) = d.sent.by_kind[k as usize];
        KindReport {
            rate,
            messages_sent: sent,
            deliveries_expected: expected,
            received: st.received,
            lost: expected.saturating_sub(st.received),
            duplicated: st.duplicated,
            out_of_order: st.out_of_order,
            latency_us: Latency::from_ns(&st.latency),
        }
    };
    let per_client = |v: u64| v as f64 / d.readers.max(1) as f64;
    Kinds {
        big_room: big_room as u64,
        broadcast: one(Kind::Broadcast, mix.broadcast_rate),
        direct: one(Kind::Direct, mix.dm_rate),
        presence: Presence {
            frames: d.stats.presence_frames,
            bytes: d.stats.presence_bytes,
            frames_per_client: per_client(d.stats.presence_frames),
            bytes_per_client: per_client(d.stats.presence_bytes),
        },
    }
}

/// One --find-max step's summary.
pub(crate) fn step(r: &Report, held: bool) -> Step {
    Step {
        rate: r.rate,
        deliveries_expected: r.deliveries_expected,
        received: r.received,
        lost: r.lost,
        p99_us: r.latency_us.p99,
        deliveries_per_sec: r.deliveries_per_sec,
        held,
    }
}
