//! The orchestration of one run: check limits, connect (phase 1), settle, then one round of
//! publish + receive + drain (phases 2 and 3) per rate, and build the report.

use crate::churn;
use crate::clients;
use crate::clock::{Clock, Schedule};
use crate::connect::Writer;
use crate::limits;
use crate::mixed::{self, Mix};
use crate::options::{LossLimit, Options, Pattern, Protocol};
use crate::progress::Progress;
use crate::publish::{self, SenderSet};
use crate::redis;
use crate::report::{ConnectReport, FindMax, HostReport, Report};
use crate::rooms::RoomSend;
use crate::stats::Shared;
use crate::stats::{new_histogram, ThreadStats, Window};
use crate::summary::{self, step, RoundData};
use crate::tls::TlsClient;
use crate::worker::{self, ClientSpec, Cmd, Reply, Role, WorkerConfig};
use crate::Error;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tmpsc;

/// How long presence traffic must be quiet before publishing starts, and the bound on waiting.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
const SETTLE_MAX: Duration = Duration::from_secs(10);
/// Lead time between scheduling a round and its first message, so every thread is ready.
const ROUND_LEAD: Duration = Duration::from_millis(20);

/// Runs the whole measurement described by `opts` and returns its report.
pub fn run(opts: &Options) -> Result<Report, Error> {
    opts.validate()?;
    let mut session = Session::start(opts)?;
    let result = session.measure();
    let slow_disconnected = session.shutdown();
    let mut report = result?;
    report.slow_disconnected = slow_disconnected;
    if let Some(path) = &opts.plot {
        let title = format!(
            "{} {} {} clients, {} msg/s",
            report.protocol, report.pattern, report.clients, report.rate
        );
        let series = [crate::plot::Series {
            label: format!("{} msg/s", report.rate),
            points: report.spectrum.clone(),
            colour: 0,
            dashed: false,
        }];
        std::fs::write(path, crate::plot::render(&title, &series))?;
    }
    Ok(report)
}

struct Worker {
    cmds: tmpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    handle: Option<std::thread::JoinHandle<()>>,
}

struct Session<'a> {
    o: &'a Options,
    clock: Clock,
    progress: Progress,
    workers: Vec<Worker>,
    replies: mpsc::Receiver<(usize, Reply)>,
    cpu_clocks: Vec<libc::clockid_t>,
    sender: Option<publish::Sender>,
    connect: ConnectReport,
    /// Per target: clients assigned and logged in (received is filled in per round).
    hosts: Vec<HostReport>,
    /// Reading clients logged in (slow clients and Redis publishers excluded).
    readers: u64,
    next_seq: u64,
    /// `--churn`: the churning clients' thread.
    churn: Option<churn::Churn>,
}

impl<'a> Session<'a> {
    fn start(o: &'a Options) -> Result<Self, Error> {
        let nofile = limits::raise_nofile()?;
        let senders = mixed::senders(o);
        let connections = (clients::count(o) + mixed::churn_clients(o)) as u64;
        limits::check_fds(connections, nofile)?;
        let sources = o.source_ips.as_ref().map_or(0, |s| s.0.len());
        let targets = o.targets();
        limits::check_ports(limits::most_to_one(connections, &targets), sources)?;
        let tls = match (o.tls, &o.tls_ca) {
            (true, Some(ca)) => Some(Arc::new(
                TlsClient::new(ca, o.tls_server_name.as_deref()).map_err(Error::Config)?,
            )),
            (true, None) => return Err(Error::Config("--tls needs --tls-ca FILE".into())),
            (false, _) => None,
        };

        let clock = Clock::new();
        let run_id = format!(
            "{:x}",
            (std::process::id() as u64) << 24 ^ (clock_seed() & 0xff_ffff)
        );
        let plan = mixed::room_plan(o);
        let specs = clients::specs(o, &run_id, plan.as_ref());
        let total = specs.len() as u64;
        let hosts = clients::hosts(&targets, &specs);
        let cfg = Arc::new(WorkerConfig {
            targets: targets.clone(),
            tls: tls.clone(),
            protocol: o.protocol,
            transport: o.transport,
            senders,
            connect_timeout: o.connect_timeout,
            read_buffer: o.read_buffer,
            clock,
            handshakes: Arc::new(tokio::sync::Semaphore::new(o.connect_concurrency)),
            rooms: plan.clone(),
            mix: Mix::of(o),
        });
        let mut shards: Vec<Vec<ClientSpec>> = vec![Vec::new(); o.threads];
        for s in specs {
            shards[s.idx % o.threads].push(s);
        }
        let (reply_tx, replies) = mpsc::channel();
        let mut progress = Progress::new(o.quiet);
        progress.phase(&format!(
            "connecting {total} connections{} to {} over {} threads",
            if o.tls { " (TLS)" } else { "" },
            (targets.iter())
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            o.threads
        ));
        let t0 = Instant::now();
        let mut workers = Vec::new();
        for (id, shard) in shards.into_iter().enumerate() {
            let shared = Arc::new(Shared::default());
            let (handle, cmds) =
                worker::spawn(id, cfg.clone(), shard, shared.clone(), reply_tx.clone())?;
            workers.push(Worker {
                cmds,
                shared,
                handle: Some(handle),
            });
        }
        let mut session = Session {
            o,
            clock,
            progress,
            workers,
            replies,
            cpu_clocks: Vec::new(),
            sender: None,
            connect: ConnectReport::default(),
            hosts,
            readers: 0,
            next_seq: 0,
            churn: None,
        };

        // Phase 1: wait for every worker's connect results, showing progress.
        let mut outcomes = Vec::new();
        let mut login = new_histogram();
        let mut limit: Option<String> = None;
        let mut pending = session.workers.len();
        while pending > 0 {
            match session.replies.recv_timeout(Duration::from_millis(200)) {
                Ok((
                    _,
                    Reply::Connected {
                        outcomes: out,
                        login: h,
                        limit: l,
                        cpu_clock,
                    },
                )) => {
                    pending -= 1;
                    outcomes.extend(out);
                    login.add(&h).expect("histograms merge");
                    if limit.is_none() {
                        limit = l;
                    }
                    session.cpu_clocks.push(cpu_clock);
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(Error::Io(std::io::Error::other("a worker thread died")));
                }
            }
            let (done, failed) = session.workers.iter().fold((0, 0), |(d, f), w| {
                let c = w.shared.connected.load(Ordering::Relaxed);
                let x = w.shared.failed.load(Ordering::Relaxed);
                (d + c + x, f + x)
            });
            session.progress.connecting(done, failed, total);
        }
        session.progress.finish_bar();
        if let Some(l) = limit {
            return Err(Error::Limit(l));
        }
        outcomes.sort_by_key(|x| x.idx);
        let connected = outcomes.iter().filter(|x| x.id.is_some()).count() as u64;
        for x in outcomes.iter().filter(|x| x.id.is_some()) {
            session.hosts[x.host].connected += 1;
        }
        session.connect = ConnectReport {
            connected,
            failed: total - connected,
            total_s: t0.elapsed().as_secs_f64(),
            p50_ms: login.value_at_quantile(0.5) as f64 / 1e6,
            p99_ms: login.value_at_quantile(0.99) as f64 / 1e6,
            max_ms: login.max() as f64 / 1e6,
            first_error: outcomes.iter().find_map(|x| x.error.clone()),
        };
        session.readers = outcomes
            .iter()
            .filter(|x| x.role == Role::Receiver && x.id.is_some())
            .count() as u64;
        session.progress.phase(&format!(
            "connected {connected}/{total} in {:.2} s (login p99 {:.1} ms)",
            session.connect.total_s, session.connect.p99_ms
        ));

        // The senders' connections, in sender order, and the direct-message recipients.
        let mut writers: Vec<Writer> = Vec::with_capacity(senders);
        for x in outcomes.iter().filter(|x| match o.protocol {
            Protocol::UringChat => x.idx < senders,
            Protocol::Redis => x.role == Role::Publisher,
        }) {
            match &x.writer {
                Some(w) => writers.push(w.clone()),
                None => {
                    return Err(Error::Target(format!(
                        "sender connection {} could not connect/log in: {}",
                        x.idx,
                        x.error.as_deref().unwrap_or("unknown")
                    )))
                }
            }
        }
        let recipients: Vec<Vec<u8>> = outcomes
            .iter()
            .filter(|x| x.role == Role::Receiver)
            .filter_map(|x| x.id.as_ref().map(|id| id.as_bytes().to_vec()))
            .collect();
        if recipients.is_empty() {
            return Err(Error::Target("no reading client could log in".into()));
        }
        let sender = publish::spawn(SenderSet {
            writers,
            protocol: o.protocol,
            transport: o.transport,
            pattern: o.pattern,
            size: o.size,
            channel: redis::broadcast_channel(&run_id).into_bytes(),
            recipients,
            clock,
            seed: clock_seed(),
            tick: o.send_tick,
            rooms: plan.map(|plan| RoomSend {
                senders: match o.protocol {
                    Protocol::UringChat => plan.senders_by_room(o.senders),
                    Protocol::Redis => Vec::new(),
                },
                plan,
            }),
            mix: Mix::of(o),
        })?;
        session.cpu_clocks.push(sender.cpu_clock);
        session.sender = Some(sender);
        session.churn = churn::start_for(o, &targets, tls, &run_id, &mut session.progress)?;
        session.settle();
        if let Some(c) = &session.churn {
            c.start();
        }
        Ok(session)
    }

    /// Waits until no byte arrived for `SETTLE_QUIET` (presence after the logins), at most `SETTLE_MAX`.
    fn settle(&mut self) {
        let t0 = Instant::now();
        let mut last = self.bytes();
        let mut quiet_since = Instant::now();
        while t0.elapsed() < SETTLE_MAX {
            std::thread::sleep(Duration::from_millis(25));
            let b = self.bytes();
            if b != last {
                last = b;
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= SETTLE_QUIET {
                break;
            }
        }
        self.progress.phase(&format!(
            "settled after {:.2} s",
            t0.elapsed().as_secs_f64()
        ));
    }

    fn bytes(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.shared.bytes.load(Ordering::Relaxed))
            .sum()
    }

    fn measured(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.shared.measured.load(Ordering::Relaxed))
            .sum()
    }

    fn disconnected(&self) -> u64 {
        self.workers
            .iter()
            .map(|w| w.shared.disconnected.load(Ordering::Relaxed))
            .sum()
    }

    fn loadgen_cpu(&self) -> u64 {
        self.cpu_clocks.iter().map(|&c| limits::clock_ns(c)).sum()
    }

    /// The server processes' CPU summed, or `None` without `--server-pid` or if one has gone.
    fn server_cpu(&self) -> Option<u64> {
        let pids = &self.o.server_pid;
        if pids.is_empty() {
            return None;
        }
        pids.iter().map(|&p| limits::proc_cpu_ns(p).ok()).sum()
    }

    /// Sends a command to every worker and collects one reply from each.
    fn broadcast_cmd(&self, make: impl Fn() -> Cmd) -> Vec<Reply> {
        for w in &self.workers {
            let _ = w.cmds.send(make());
        }
        let mut out = Vec::with_capacity(self.workers.len());
        while out.len() < self.workers.len() {
            match self.replies.recv_timeout(Duration::from_secs(30)) {
                Ok((_, r)) => out.push(r),
                Err(_) => break,
            }
        }
        out
    }

    /// Phases 2 and 3 for one rate.
    fn round(&mut self, rate: f64) -> Result<RoundData, Error> {
        let o = self.o;
        let warm = Schedule::count_for(rate, o.warmup);
        let meas = Schedule::count_for(rate, o.duration).max(1);
        let first = self.next_seq;
        let window = Window {
            start: first + warm,
            end: first + warm + meas,
        };
        self.next_seq = window.end;
        self.broadcast_cmd(|| Cmd::Begin(window));
        let alive = self.readers.saturating_sub(self.disconnected());
        let broadcast_reach = match o.protocol {
            Protocol::UringChat => alive.saturating_sub(1),
            Protocol::Redis => alive,
        };
        // With rooms (and mixed) the sender thread tallies each message's reach instead.
        let per_message = match o.pattern {
            _ if o.rooms > 0 => 0,
            Pattern::Mixed => 0,
            Pattern::Direct => 1,
            Pattern::Broadcast => broadcast_reach,
        };
        let start_ns = self.clock.now_ns() + ROUND_LEAD.as_nanos() as u64;
        let schedule = Schedule {
            start_ns,
            rate,
            first,
            end: window.end,
        };
        self.progress.phase(&format!(
            "publishing {rate} msg/s: {warm} warmup + {meas} measured messages"
        ));
        let sender = self.sender.as_ref().expect("sender thread");
        sender
            .rounds
            .send(publish::Round {
                schedule,
                window,
                broadcast_reach,
            })
            .map_err(|_| Error::Io(std::io::Error::other("sender thread died")))?;

        // CPU is charged from the first measured message's due time to the end of the drain.
        let meas_start = self.clock.instant(schedule.intended(window.start));
        if let Some(d) = meas_start.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let cpu_t0 = Instant::now();
        let server0 = self.server_cpu();
        let lg0 = self.loadgen_cpu();
        let churn0 = self.churn.as_ref().map(|c| c.totals());
        let sent = sender
            .results
            .recv()
            .map_err(|_| Error::Io(std::io::Error::other("sender thread died")))?;
        let expected = sent
            .rooms
            .as_ref()
            .map_or(sent.sent_measured * per_message, |t| t.expected);

        // Drain: until everything expected arrived, nothing new for --drain-quiet, or --drain-timeout.
        let drain_t0 = Instant::now();
        let mut last = self.measured();
        let mut last_change = Instant::now();
        loop {
            let got = self.measured();
            if got >= expected {
                break;
            }
            if got != last {
                last = got;
                last_change = Instant::now();
            }
            if last_change.elapsed() >= o.drain_quiet || drain_t0.elapsed() >= o.drain_timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let window_s = cpu_t0.elapsed().as_secs_f64();
        let lg1 = self.loadgen_cpu();
        let server1 = self.server_cpu();
        let churn = self.churn.as_ref().zip(churn0).map(|(c, t0)| c.report(t0));

        let mut stats: Option<ThreadStats> = None;
        for r in self.broadcast_cmd(|| Cmd::Collect) {
            if let Reply::Stats(s) = r {
                match &mut stats {
                    None => stats = Some(*s),
                    Some(acc) => acc.merge(&s),
                }
            }
        }
        let stats = stats.ok_or_else(|| Error::Io(std::io::Error::other("no worker stats")))?;
        Ok(RoundData {
            rate,
            window,
            sent,
            expected,
            per_message,
            stats,
            window_s,
            server_cpu_ns: server0.zip(server1).map(|(a, b)| b.saturating_sub(a)),
            loadgen_cpu_ns: lg1.saturating_sub(lg0),
            readers: alive,
            churn,
        })
    }

    /// Runs the rounds (one, or the --find-max search) and builds the report.
    fn measure(&mut self) -> Result<Report, Error> {
        let o = self.o;
        if !o.find_max {
            let data = self.round(mixed::rate(o))?;
            return Ok(self.report(&data, None));
        }
        let loss = o.max_loss.unwrap_or(LossLimit::Count(0));
        let held = |d: &RoundData, r: &Report| {
            !loss.crossed(r.lost, r.deliveries_expected)
                && !o
                    .max_p99
                    .is_some_and(|m| r.latency_us.p99 > m.as_secs_f64() * 1e6)
                && d.sent.failed == 0
        };
        let mut steps = Vec::new();
        let mut best: Option<(RoundData, Report)> = None;
        let mut last: Option<(RoundData, Report)> = None;
        let mut bad: Option<f64> = None;
        let mut rate = o.rate;
        for _ in 0..24 {
            let d = self.round(rate)?;
            let r = self.report(&d, None);
            let ok = held(&d, &r);
            steps.push(step(&r, ok));
            if ok {
                best = Some((d, r));
                rate *= 2.0;
            } else {
                bad = Some(rate);
                last = Some((d, r));
                break;
            }
        }
        if let Some(mut hi) = bad {
            for _ in 0..o.find_max_steps {
                let lo = best.as_ref().map_or(0.0, |b| b.0.rate);
                let mid = ((lo + hi) / 2.0).round().max(1.0);
                if mid <= lo || mid >= hi {
                    break;
                }
                let d = self.round(mid)?;
                let r = self.report(&d, None);
                let ok = held(&d, &r);
                steps.push(step(&r, ok));
                if ok {
                    best = Some((d, r));
                } else {
                    hi = mid;
                    last = Some((d, r));
                }
            }
        }
        let (data, _) = best.or(last).expect("at least one round ran");
        let fm = FindMax {
            max_rate: steps
                .iter()
                .filter(|s| s.held)
                .map(|s| s.rate)
                .fold(0.0, f64::max),
            deliveries_per_sec: steps
                .iter()
                .filter(|s| s.held)
                .max_by(|a, b| a.rate.total_cmp(&b.rate))
                .map_or(0.0, |s| s.deliveries_per_sec),
            steps,
        };
        Ok(self.report(&data, Some(fm)))
    }

    fn report(&self, d: &RoundData, find_max: Option<FindMax>) -> Report {
        summary::build(
            self.o,
            &self.connect,
            &self.hosts,
            self.disconnected(),
            d,
            find_max,
        )
    }

    /// Stops the sender and the workers; returns how many slow clients the server had disconnected.
    fn shutdown(&mut self) -> u64 {
        self.churn = None;
        if let Some(s) = self.sender.take() {
            drop(s.rounds);
            let _ = s.handle.join();
        }
        let mut slow = 0;
        for r in self.broadcast_cmd(|| Cmd::Shutdown) {
            if let Reply::Finished { slow_disconnected } = r {
                slow += slow_disconnected;
            }
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
        slow
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        if self.workers.iter().any(|w| w.handle.is_some()) {
            self.shutdown();
        }
    }
}

/// A seed that differs between runs (names, channels, recipient choice).
fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9E37_79B9)
}
