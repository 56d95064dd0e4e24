//! Command-line options. `Options` is both the clap parser and the input of `run`, so
//! tests build it with `Options::try_parse_from` exactly as a user would type it.

use crate::Error;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

/// The wire protocol spoken to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// uring-chat's newline-delimited JSON (docs/PROTOCOL.md).
    UringChat,
    /// Redis pub/sub over RESP (SUBSCRIBE/PUBLISH), for side-by-side comparisons.
    Redis,
}

/// How uring-chat frames travel to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Newline-delimited JSON over TCP, to the chat port.
    Tcp,
    /// WebSocket (RFC 6455) to `GET /ws` on the server's HTTP port: each frame one text message.
    Ws,
}

/// Who receives each message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Every message reaches every other logged-in client.
    Broadcast,
    /// Every message goes to one client chosen at random.
    Direct,
    /// A broadcast stream, direct messages from many senders and login churn at once
    /// (`--broadcast-rate`, `--dm-rate`, `--dm-senders`, `--churn`).
    Mixed,
}

/// A loss threshold: an absolute number of deliveries, or a percentage of those expected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossLimit {
    Count(u64),
    Percent(f64),
}

impl LossLimit {
    /// Whether `lost` out of `expected` crosses this limit.
    pub fn crossed(&self, lost: u64, expected: u64) -> bool {
        match *self {
            LossLimit::Count(n) => lost > n,
            LossLimit::Percent(p) => expected > 0 && (lost as f64) * 100.0 / (expected as f64) > p,
        }
    }
}

/// Top-level command line: a measuring run by default, or `plot` to compare saved reports.
#[derive(Parser, Debug)]
#[command(
    name = "loadgen",
    version,
    about = "Open-loop fan-out load generator for uring-chat (and Redis pub/sub)",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: Options,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Render saved `--json` reports as SVG percentile spectra, one small panel per scenario.
    Plot(PlotOptions),
}

#[derive(clap::Args, Debug, Clone)]
pub struct PlotOptions {
    /// Where to write the SVG.
    #[arg(long, short = 'o', default_value = "latency.svg")]
    pub out: PathBuf,
    /// Chart title.
    #[arg(long)]
    pub title: Option<String>,
    /// JSON reports written by `loadgen --json`, named `<server>-<scenario>.json` as bench.sh
    /// writes them: reports of one scenario share a panel (uring-chat solid, Redis dashed).
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
}

/// Everything one measuring run needs.
#[derive(Parser, Debug, Clone)]
#[command(name = "loadgen", args_override_self = true)]
pub struct Options {
    /// Target host (loopback only: this tool refuses anything else).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: Ipv4Addr,
    /// Target port: the chat port with `--transport tcp` (default 8080), the HTTP port with
    /// `--transport ws` (default 8081, uring-chat's `--http-port`).
    #[arg(
        long,
        default_value_t = 8080,
        default_value_if("transport", "ws", "8081")
    )]
    pub port: u16,
    /// Several targets instead of --host/--port, e.g. the nodes of a cluster:
    /// `127.0.0.1:8080,127.0.0.1:8082`. Client i connects to entry i mod n; delivery and loss are
    /// checked over all clients, whatever node they are on.
    #[arg(long, value_parser = parse_hosts, conflicts_with_all = ["host", "port"])]
    pub hosts: Option<Hosts>,
    /// TLS to the target (uring-chat's `--tls-cert`/`--tls-key`): every client does a full
    /// handshake as part of its login. With `--transport ws`, WebSocket over TLS (wss).
    #[arg(long, requires = "tls_ca")]
    pub tls: bool,
    /// With --tls: PEM file of the CA certificate(s) to trust.
    #[arg(long, requires = "tls")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls: the name the server's certificate must carry (and SNI). Default: the target's
    /// IP address, checked against the certificate's IP addresses.
    #[arg(long, requires = "tls")]
    pub tls_server_name: Option<String>,
    /// Number of client connections (all log in; senders are among them).
    #[arg(long, short = 'c', default_value_t = 1000)]
    pub clients: usize,
    /// Number of sending connections.
    #[arg(long, short = 's', default_value_t = 1)]
    pub senders: usize,
    /// Total messages per second over all senders (open loop: the schedule never waits for replies).
    #[arg(long, short = 'r', default_value_t = 10.0)]
    pub rate: f64,
    /// Payload bytes per message (the stamp is padded with 'x' up to this size; never shorter than the stamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Measured window, e.g. 10s, 500ms, 1m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured sending before the window (same rate), to fill queues and caches.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// The sender thread wakes at most once per tick and writes everything then due, one write per
    /// sending connection (0: wake for every message). Latency counts from each message's intended
    /// time, so the tick's delay is part of the figures; it spares the machine a wake-up and a TCP
    /// segment per message at high rates, like oha's 1 ms timer.
    #[arg(long, default_value = "1ms", value_parser = parse_duration)]
    pub send_tick: Duration,
    /// Handshakes (TCP connect + login) in flight at once.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Give up on one client's connect + login after this long (it counts as failed).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// broadcast or direct.
    #[arg(long, value_enum, default_value_t = Pattern::Broadcast)]
    pub pattern: Pattern,
    /// Rooms `room-0`..`room-{N-1}` (0: off). Clients join them round robin, every message goes
    /// into a random room and reaches its members (uring-chat: the sender too).
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Rooms each client joins (with --rooms): client i is in rooms (i*K + j) mod N, j in 0..K.
    #[arg(long, default_value_t = 1)]
    pub rooms_per_client: usize,
    /// --pattern mixed: broadcast messages per second (into the lobby; Redis: one channel).
    #[arg(long, default_value_t = 0.0)]
    pub broadcast_rate: f64,
    /// --pattern mixed: direct messages per second, each its own write, from many connections.
    #[arg(long, default_value_t = 0.0)]
    pub dm_rate: f64,
    /// --pattern mixed: connections that send direct messages (0: every reading client for
    /// uring-chat; for Redis, where each is an extra connection, min(reading clients, 1000)).
    #[arg(long, default_value_t = 0)]
    pub dm_senders: usize,
    /// --pattern mixed: clients per second that leave and log back in (uring-chat: disconnect and
    /// a new login; Redis: UNSUBSCRIBE + SUBSCRIBE). Churning clients are extra connections.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// --pattern mixed: the first N clients join room `room-0` and the broadcast stream goes
    /// there instead of the lobby (0: the lobby).
    #[arg(long, default_value_t = 0)]
    pub big_room: usize,
    /// uring-chat or redis.
    #[arg(long, value_enum, default_value_t = Protocol::UringChat)]
    pub protocol: Protocol,
    /// tcp (newline-delimited JSON) or ws (WebSocket upgrade at `/ws`, then one frame per
    /// message); uring-chat only.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
    /// For a uring-chat server started with `--auth-jwt-secret`: every login carries an HS256 token
    /// minted (before the timed window) for its own name with this secret.
    #[arg(long)]
    pub auth_jwt_secret: Option<String>,
    /// Print one JSON report on stdout instead of the human text.
    #[arg(long)]
    pub json: bool,
    /// Exit non-zero when delivery p99 is above this (e.g. 50ms).
    #[arg(long, value_parser = parse_duration)]
    pub max_p99: Option<Duration>,
    /// Exit non-zero when more deliveries than this are lost: a count (100) or a percentage (0.1%).
    #[arg(long, value_parser = parse_loss)]
    pub max_loss: Option<LossLimit>,
    /// Server process to charge CPU to (utime+stime from /proc/PID/stat over the measured window);
    /// repeat it or separate with commas to charge the sum of several (a cluster's nodes and NATS).
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Percentage of clients that log in and then never read (slow consumers).
    #[arg(long, default_value_t = 0.0)]
    pub slow_clients: f64,
    /// Write the latency percentile spectrum as SVG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Worker threads, each a current-thread tokio runtime owning a shard of the clients.
    #[arg(long, default_value_t = default_threads())]
    pub threads: usize,
    /// Loopback source addresses to spread connections over, e.g. 127.0.0.2-127.0.0.9 or a comma list.
    #[arg(long, value_parser = parse_source_ips)]
    pub source_ips: Option<SourceIps>,
    /// After the last send, wait at most this long for deliveries still in flight.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Stop draining once nothing new arrived for this long.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub drain_quiet: Duration,
    /// Step the rate up (doubling from --rate, then bisecting) until loss appears or p99 crosses --max-p99.
    #[arg(long)]
    pub find_max: bool,
    /// Bisection steps after the first failing rate in --find-max.
    #[arg(long, default_value_t = 4)]
    pub find_max_steps: u32,
    /// Per-client read buffer (bytes); it grows only for a frame larger than this.
    #[arg(long, default_value_t = 16 * 1024)]
    pub read_buffer: usize,
    /// No progress output on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options::try_parse_from(["loadgen"]).expect("defaults parse")
    }
}

impl Options {
    /// Refuses options that cannot work together, before anything connects.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let o = self;
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if !o.targets().iter().all(|t| t.ip().is_loopback()) {
            return bad("only loopback targets (127.0.0.0/8) may be loaded from this tool");
        }
        if o.tls && o.protocol != Protocol::UringChat {
            return bad("--tls is for uring-chat's TLS port: not with --protocol redis");
        }
        if o.clients == 0 || o.senders == 0 || o.threads == 0 {
            return bad("--clients, --senders and --threads must be at least 1");
        }
        if !(o.rate > 0.0 && o.rate.is_finite()) && o.pattern != Pattern::Mixed {
            return bad("--rate must be a positive number of messages per second");
        }
        if !(0.0..100.0).contains(&o.slow_clients) {
            return bad("--slow-clients is a percentage below 100");
        }
        if o.duration.is_zero() {
            return bad("--duration must be positive");
        }
        if o.transport == Transport::Ws && o.protocol != Protocol::UringChat {
            return bad(
                "--transport ws is uring-chat's WebSocket endpoint: not with --protocol redis",
            );
        }
        match o.auth_jwt_secret.as_deref() {
            Some("") => return bad("--auth-jwt-secret must not be empty"),
            Some(_) if o.protocol != Protocol::UringChat => {
                return bad("--auth-jwt-secret is for uring-chat logins: not with --protocol redis")
            }
            _ => {}
        }
        if o.connect_concurrency == 0 {
            return bad("--connect-concurrency must be at least 1");
        }
        let fast = o.clients - o.slow_count();
        if o.protocol == Protocol::UringChat && o.senders > fast && o.pattern != Pattern::Mixed {
            return bad(
                "--senders are among the clients that read: more senders than such clients",
            );
        }
        // A room message comes back to its sender, so one reading client is enough there.
        if o.pattern == Pattern::Broadcast
            && o.protocol == Protocol::UringChat
            && o.rooms == 0
            && fast < 2
        {
            return bad("a broadcast needs at least two reading clients");
        }
        validate_mixed(o).map_err(Error::Config)?;
        validate_rooms(o).map_err(Error::Config)?;
        for &pid in &o.server_pid {
            crate::limits::proc_cpu_ns(pid).map_err(|e| {
                Error::Config(format!(
                    "--server-pid {pid}: cannot read /proc/{pid}/stat: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// Where clients connect: the `--hosts` entries, or `--host`:`--port`.
    pub fn targets(&self) -> Vec<SocketAddr> {
        match &self.hosts {
            Some(h) => h.0.iter().map(|&a| SocketAddr::V4(a)).collect(),
            None => vec![SocketAddr::new(self.host.into(), self.port)],
        }
    }

    /// How many clients are slow: the last `--slow-clients` percent.
    pub fn slow_count(&self) -> usize {
        ((self.clients as f64) * self.slow_clients / 100.0).round() as usize
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
}

/// A list of IPv4 source addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceIps(pub Vec<Ipv4Addr>);

/// The `--hosts` list, in the order given (an address may repeat).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hosts(pub Vec<SocketAddrV4>);

/// Parses `127.0.0.1:8080,127.0.0.2:8080`: IPv4 `address:port` entries (loopback is checked with
/// the other options).
pub fn parse_hosts(s: &str) -> Result<Hosts, String> {
    let out = s
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<SocketAddrV4>()
                .map_err(|_| format!("{p:?} is not an IPv4 address:port, e.g. 127.0.0.1:8080"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if out.is_empty() {
        return Err("no address given".into());
    }
    Ok(Hosts(out))
}

/// Parses `10s`, `250ms`, `100us`, `1.5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected e.g. 10s, 500ms, 2m"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("bad duration unit {other:?} in {s:?}")),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `100` (deliveries) or `0.5%` (of deliveries expected).
pub fn parse_loss(s: &str) -> Result<LossLimit, String> {
    let s = s.trim();
    if let Some(p) = s.strip_suffix('%') {
        let p: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("bad percentage {s:?}"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("percentage out of range: {s:?}"));
        }
        Ok(LossLimit::Percent(p))
    } else {
        s.parse()
            .map(LossLimit::Count)
            .map_err(|_| format!("bad loss limit {s:?}: a count (10) or a percentage (0.1%)"))
    }
}

/// Parses `127.0.0.2-127.0.0.9`, `127.0.0.2,127.0.0.3` or one address; loopback only.
pub fn parse_source_ips(s: &str) -> Result<SourceIps, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|e| format!("{a:?}: {e}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|e| format!("{b:?}: {e}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_536 {
                return Err(format!("bad address range {part:?}"));
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        } else {
            out.push(part.parse().map_err(|e| format!("{part:?}: {e}"))?);
        }
    }
    if out.is_empty() {
        return Err("no source address given".into());
    }
    if let Some(bad) = out.iter().find(|ip| !ip.is_loopback()) {
        return Err(format!("{bad} is not a loopback address (127.0.0.0/8)"));
    }
    Ok(SourceIps(out))
}

/// Why these room options cannot work, if they cannot.
fn validate_rooms(o: &Options) -> Result<(), String> {
    let (n, k) = (o.rooms, o.rooms_per_client);
    if n == 0 {
        return Ok(());
    }
    if n > u32::MAX as usize {
        return Err("--rooms is too large".into());
    }
    if o.pattern == Pattern::Direct {
        return Err(
            "--rooms and --pattern direct do not mix: a room message goes to the room".into(),
        );
    }
    if k == 0 || k > n {
        return Err("--rooms-per-client must be between 1 and --rooms".into());
    }
    if o.clients.saturating_mul(k) < n {
        return Err(format!(
            "every room needs a member: --clients × --rooms-per-client must be at least --rooms ({n})"
        ));
    }
    if o.protocol == Protocol::UringChat && o.senders.saturating_mul(k) < n {
        return Err(format!(
            "a room message must come from a member and sender s is in rooms s*K..s*K+K-1, so \
             every room has a sending member only with --senders ≥ rooms / rooms-per-client = {}",
            n.div_ceil(k)
        ));
    }
    Ok(())
}

/// Why these mixed-mode options cannot work, if they cannot.
fn validate_mixed(o: &Options) -> Result<(), String> {
    let given = o.broadcast_rate > 0.0
        || o.dm_rate > 0.0
        || o.dm_senders > 0
        || o.churn > 0.0
        || o.big_room > 0;
    if o.pattern != Pattern::Mixed {
        return match given {
            true => Err(
                "--broadcast-rate, --dm-rate, --dm-senders, --churn and --big-room need \
                         --pattern mixed"
                    .into(),
            ),
            false => Ok(()),
        };
    }
    let ok = |r: f64| r >= 0.0 && r.is_finite();
    if !(ok(o.broadcast_rate) && ok(o.dm_rate) && ok(o.churn)) {
        return Err(
            "--broadcast-rate, --dm-rate and --churn must be finite and not negative".into(),
        );
    }
    if o.broadcast_rate + o.dm_rate <= 0.0 {
        return Err("--pattern mixed needs --broadcast-rate or --dm-rate above 0".into());
    }
    if o.rooms > 0 {
        return Err("--pattern mixed does not take --rooms".into());
    }
    if o.find_max {
        return Err("--pattern mixed does not take --find-max (its rates are fixed)".into());
    }
    let fast = o.clients - o.slow_count();
    if o.big_room > o.clients {
        return Err("--big-room is at most --clients".into());
    }
    if o.protocol == Protocol::UringChat && o.dm_senders > fast {
        return Err("--dm-senders are among the clients that read: more than such clients".into());
    }
    if o.protocol == Protocol::UringChat && o.broadcast_rate > 0.0 && fast < 2 {
        return Err("a broadcast needs at least two reading clients".into());
    }
    Ok(())
}
