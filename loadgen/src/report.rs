//! The report: one serde struct printed as JSON (`--json`, schema in loadgen/report.schema.json and
//! docs/LOADGEN.md) or as human text. Latencies are microseconds, CPU is nanoseconds per delivery.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The value of the `schema` field; bumped when a field changes meaning or goes away.
pub const SCHEMA: &str = "loadgen-report/1";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Report {
    pub schema: String,
    pub protocol: String,
    /// `tcp` or `ws` (`--transport`; Redis is always `tcp`).
    pub transport: String,
    /// `--tls`: every connection was TLS.
    pub tls: bool,
    pub pattern: String,
    /// `host:port`, or the `--hosts` list joined by commas.
    pub target: String,
    /// Per target (one entry, or one per `--hosts` entry in its order): how the clients spread.
    pub hosts: Vec<HostReport>,
    pub clients: u64,
    pub senders: u64,
    /// `--rooms` (0: off) and rooms per client (0 when off).
    pub rooms: u64,
    pub rooms_per_client: u64,
    pub slow_clients: u64,
    pub threads: u64,
    pub size: u64,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub send_tick_ms: f64,
    pub connect: ConnectReport,
    pub messages_sent: u64,
    pub messages_failed: u64,
    pub deliveries_expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    /// uring-chat rooms: deliveries whose room seq skipped past the next one; null elsewhere.
    pub order_violations: Option<u64>,
    pub deliveries_per_sec: f64,
    pub latency_us: Latency,
    pub fanout_us: Option<Fanout>,
    pub send_lag_us: Latency,
    pub spectrum: Vec<[f64; 2]>,
    pub cpu: Cpu,
    pub slow_disconnected: u64,
    pub clients_disconnected: u64,
    pub server_errors: BTreeMap<String, u64>,
    pub thresholds: Thresholds,
    pub find_max: Option<FindMax>,
    /// `--pattern mixed`: the figures by kind (the top-level ones are all kinds together).
    pub kinds: Option<Kinds>,
    /// `--churn`: the leave-and-log-back-in cycles during the measured window.
    pub churn: Option<ChurnReport>,
}

/// One target's share of the run.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct HostReport {
    pub target: String,
    /// Clients (of `clients`, Redis publishers included) assigned to it.
    pub clients: u64,
    /// Of those, logged in.
    pub connected: u64,
    /// Measured deliveries its clients received (duplicates excluded).
    pub received: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Kinds {
    /// `--big-room`: the broadcast stream went into a room of this many clients (0: the lobby).
    pub big_room: u64,
    pub broadcast: KindReport,
    pub direct: KindReport,
    pub presence: Presence,
}

/// One message kind of a mixed run, counted as the top-level figures are.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct KindReport {
    pub rate: f64,
    pub messages_sent: u64,
    pub deliveries_expected: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub latency_us: Latency,
}

/// `presence` frames the reading clients got from the round's start to the end of its drain.
/// They carry no stamp: counted, not timed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Presence {
    pub frames: u64,
    pub bytes: u64,
    pub frames_per_client: f64,
    pub bytes_per_client: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ChurnReport {
    /// `--churn`, cycles per second asked for.
    pub rate: f64,
    /// Churning connections (extra to `clients`).
    pub clients: u64,
    /// Cycles completed (left and back in) from the first measured message to the end of drain.
    pub cycles: u64,
    pub failed: u64,
    pub first_error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ConnectReport {
    pub connected: u64,
    pub failed: u64,
    pub total_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_error: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Latency {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// Summarizes a histogram of nanoseconds into microseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |v: u64| v as f64 / 1000.0;
        Latency {
            count: h.len(),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Fanout {
    /// Messages every expected recipient got.
    pub complete: u64,
    /// Messages at least one expected recipient did not get.
    pub incomplete: u64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Cpu {
    /// The measured window CPU was charged over: first measured message due to end of drain.
    pub window_s: f64,
    pub server_cpu_s: Option<f64>,
    pub server_ns_per_delivery: Option<f64>,
    pub loadgen_cpu_s: f64,
    pub loadgen_ns_per_delivery: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Thresholds {
    pub max_p99_us: Option<f64>,
    pub max_loss: Option<String>,
    pub p99_exceeded: bool,
    pub loss_exceeded: bool,
    pub passed: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct FindMax {
    /// The highest rate that held (no loss beyond --max-loss, p99 within --max-p99); 0 if none did.
    pub max_rate: f64,
    pub deliveries_per_sec: f64,
    pub steps: Vec<Step>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub rate: f64,
    pub deliveries_expected: u64,
    pub received: u64,
    pub lost: u64,
    pub p99_us: f64,
    pub deliveries_per_sec: f64,
    pub held: bool,
}

/// The percentile spectrum as [percentile (0-100), latency µs] points, HdrHistogram style: five
/// points per halving of the remaining tail, so the tail up to the max is drawn at full detail.
pub fn spectrum(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<[f64; 2]> = Vec::new();
    for v in h.iter_quantiles(5) {
        let p = v.quantile_iterated_to() * 100.0;
        let lat = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        if let Some(last) = out.last() {
            if p <= last[0] {
                continue;
            }
        }
        out.push([p, lat]);
        if p >= 100.0 {
            break;
        }
    }
    match out.last() {
        Some(l) if l[0] >= 100.0 => {}
        _ => out.push([100.0, h.max() as f64 / 1000.0]),
    }
    out
}

impl Report {
    /// The human-readable text of the report.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let c = &self.connect;
        let _ = writeln!(
            s,
            "{} over {}{}, {} against {}: {} clients ({} slow), {} senders, {} B payloads, {} threads",
            self.protocol,
            self.transport,
            if self.tls { "+tls" } else { "" },
            self.pattern,
            self.target,
            self.clients,
            self.slow_clients,
            self.senders,
            self.size,
            self.threads
        );
        if self.rooms > 0 {
            let _ = writeln!(
                s,
                "{} rooms, {} per client (about {:.0} members each)",
                self.rooms,
                self.rooms_per_client,
                (self.clients * self.rooms_per_client) as f64 / self.rooms as f64
            );
        }
        let _ = writeln!(
            s,
            "rate {} msg/s for {:.1} s after {:.1} s warmup, sender tick {} ms",
            self.rate, self.duration_s, self.warmup_s, self.send_tick_ms
        );
        let _ = writeln!(
            s,
            "connect+login: {} connected, {} failed in {:.2} s (per client p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
            c.connected, c.failed, c.total_s, c.p50_ms, c.p99_ms, c.max_ms
        );
        if let Some(e) = &c.first_error {
            let _ = writeln!(s, "  first connect error: {e}");
        }
        if self.hosts.len() > 1 {
            for h in &self.hosts {
                let _ = writeln!(
                    s,
                    "  {}: {} clients, {} connected, {} deliveries received",
                    h.target, h.clients, h.connected, h.received
                );
            }
        }
        let _ = writeln!(
            s,
            "messages sent {} (failed {}), deliveries expected {}, received {}, lost {}, duplicated {}, out of order {}",
            self.messages_sent,
            self.messages_failed,
            self.deliveries_expected,
            self.received,
            self.lost,
            self.duplicated,
            self.out_of_order
        );
        if let Some(v) = self.order_violations {
            let _ = writeln!(s, "room order violations (seq gaps) {v}");
        }
        let _ = writeln!(s, "deliveries/s {:.0}", self.deliveries_per_sec);
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "delivery latency (from intended send time): p50 {} p90 {} p99 {} p99.9 {} max {}",
            ms(l.p50),
            ms(l.p90),
            ms(l.p99),
            ms(l.p999),
            ms(l.max)
        );
        if let Some(k) = &self.kinds {
            for (name, x) in [("broadcast", &k.broadcast), ("direct", &k.direct)] {
                let l = &x.latency_us;
                let _ = writeln!(
                    s,
                    "  {name:<9} {} msg/s: sent {}, expected {}, received {}, lost {}, dup {}, ooo {}; p50 {} p99 {} p99.9 {} max {}",
                    x.rate, x.messages_sent, x.deliveries_expected, x.received, x.lost,
                    x.duplicated, x.out_of_order, ms(l.p50), ms(l.p99), ms(l.p999), ms(l.max)
                );
            }
            let p = &k.presence;
            let _ = writeln!(
                s,
                "  presence  {} frames, {} bytes ({:.1} frames, {:.0} B per reading client)",
                p.frames, p.bytes, p.frames_per_client, p.bytes_per_client
            );
        }
        if let Some(f) = &self.fanout_us {
            let _ = writeln!(
                s,
                "fan-out completion per message: p50 {} p99 {} max {} ({} complete, {} incomplete)",
                ms(f.p50),
                ms(f.p99),
                ms(f.max),
                f.complete,
                f.incomplete
            );
        }
        let g = &self.send_lag_us;
        let _ = writeln!(
            s,
            "send lag behind schedule: p50 {} p99 {} max {}",
            ms(g.p50),
            ms(g.p99),
            ms(g.max)
        );
        let cpu = &self.cpu;
        let per = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} ns"));
        let _ = writeln!(
            s,
            "CPU per delivery: server {}, loadgen {} (loadgen {:.3} s CPU over {:.2} s)",
            per(cpu.server_ns_per_delivery),
            per(cpu.loadgen_ns_per_delivery),
            cpu.loadgen_cpu_s,
            cpu.window_s
        );
        if self.slow_clients > 0 {
            let _ = writeln!(
                s,
                "slow clients disconnected by the server: {} of {}",
                self.slow_disconnected, self.slow_clients
            );
        }
        if self.clients_disconnected > 0 {
            let _ = writeln!(
                s,
                "reading clients disconnected during the run: {}",
                self.clients_disconnected
            );
        }
        if !self.server_errors.is_empty() {
            let _ = writeln!(s, "error frames: {:?}", self.server_errors);
        }
        if let Some(c) = &self.churn {
            let _ = writeln!(
                s,
                "churn: {} clients/s over {} extra clients: {} cycles in the window, {} failed{}",
                c.rate,
                c.clients,
                c.cycles,
                c.failed,
                c.first_error
                    .as_deref()
                    .map_or(String::new(), |e| format!(" (first: {e})"))
            );
        }
        if let Some(f) = &self.find_max {
            let _ = writeln!(
                s,
                "find-max: highest rate held {} msg/s ({:.0} deliveries/s)",
                f.max_rate, f.deliveries_per_sec
            );
            for st in &f.steps {
                let _ = writeln!(
                    s,
                    "  rate {:>10} msg/s: {} lost, p99 {}, {:.0} deliveries/s -> {}",
                    st.rate,
                    st.lost,
                    ms(st.p99_us),
                    st.deliveries_per_sec,
                    if st.held { "held" } else { "failed" }
                );
            }
        }
        let t = &self.thresholds;
        if t.p99_exceeded {
            let _ = writeln!(s, "FAIL: p99 above --max-p99");
        }
        if t.loss_exceeded {
            let _ = writeln!(s, "FAIL: loss above --max-loss");
        }
        s
    }
}

/// Formats microseconds for people.
fn ms(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}
