//! One broadcast, or one room message, end to end over loopback against the real server, started in
//! this process.
//!
//! `e2e/broadcast/<N>`: N receivers and one sender are connected and logged in once; each iteration
//! sends one `chat` broadcast and stops the clock when every receiver has read it. The time is
//! therefore the full fan-out latency of one message (parse, local and cross-core fan-out, N writes,
//! N reads), with the server's 2 cores and this client's thread sharing the machine's CPUs.
//!
//! `e2e/room/<N>`: the same clients, all members of one room; each iteration posts one room message,
//! which goes through the room's owner core to be stamped, and stops the clock when every receiver
//! and the sender (members get their own room messages) have read it: N + 1 deliveries.
//!
//! The clients run on one tokio-uring runtime that is kept for the whole benchmark and re-entered
//! with `block_on` for every `iter_custom` call: sockets belong to their runtime, and a fresh
//! `tokio_uring::start` per call would mean logging everyone in again. No read is left pending
//! between calls (each receiver task returns once it has its message), so the runtime is idle
//! while criterion does its bookkeeping.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tokio_uring::net::TcpStream;
use uring_chat::config::Config;
use uring_chat::server::Server;

/// Receivers per benchmark.
const RECEIVERS: [usize; 2] = [100, 1000];
/// Bytes of chat content per message, like loadgen's default `--size`.
const PAYLOAD: usize = 64;

type Result<T> = std::result::Result<T, String>;

/// One logged-in client: its socket, a reused read buffer, and bytes of an unfinished line.
struct Client {
    stream: TcpStream,
    read_buf: Vec<u8>,
    partial: Vec<u8>,
}

impl Client {
    /// TCP connect, `connect` frame, wait for `connect_response`.
    async fn login(addr: SocketAddr, name: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        let mut client = Client {
            stream,
            read_buf: Vec::with_capacity(16 * 1024),
            partial: Vec::new(),
        };
        client
            .send(format!("{{\"type\":\"connect\",\"content\":\"{name}\"}}\n"))
            .await?;
        client
            .read_until(|line| contains(line, b"\"connect_response\""))
            .await?;
        Ok(client)
    }

    async fn send(&self, frame: String) -> Result<()> {
        let (result, _) = self.stream.write_all(frame.into_bytes()).await;
        result.map_err(|e| format!("write: {e}"))
    }

    /// Reads until a complete line satisfies `done`; lines before it (presence) are skipped, bytes
    /// after it are kept for the next call. An `error` frame fails the wait rather than hanging it.
    async fn read_until(&mut self, done: impl Fn(&[u8]) -> bool) -> Result<()> {
        loop {
            if let Some(found) = self.find_line(&done) {
                let end =
                    found.map_err(|line| format!("the server answered {}", line.trim_end()))?;
                self.partial.drain(..end);
                return Ok(());
            }
            let mut buf = std::mem::take(&mut self.read_buf);
            buf.clear();
            let (result, buf) = self.stream.read(buf).await;
            self.read_buf = buf;
            match result {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => self.partial.extend_from_slice(&self.read_buf[..n]),
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// The end (after `\n`) of the first complete line matching `done`, or an error frame's text;
    /// drops the lines before it.
    fn find_line(&mut self, done: &impl Fn(&[u8]) -> bool) -> Option<Result<usize>> {
        let mut start = 0;
        while let Some(offset) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let end = start + offset + 1;
            if contains(&self.partial[start..end], b"{\"type\":\"error\"") {
                return Some(Err(
                    String::from_utf8_lossy(&self.partial[start..end]).into_owned()
                ));
            }
            if done(&self.partial[start..end]) {
                return Some(Ok(end));
            }
            start = end;
        }
        self.partial.drain(..start);
        None
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The room every client of an `e2e/room` benchmark is in.
const ROOM: &str = "bench";

/// The message of iteration `seq` (a broadcast, or a post to `room`), and the bytes that identify
/// it in every copy.
fn message(seq: u64, room: Option<&str>) -> (String, Vec<u8>) {
    let stamp = format!("e2e:{seq}:");
    let content = format!("{stamp:x<PAYLOAD$}");
    let room = room.map_or(String::new(), |room| format!("\"room\":\"{room}\","));
    (
        format!("{{\"type\":\"chat\",{room}\"content\":\"{content}\"}}\n"),
        format!("\"content\":\"{stamp}").into_bytes(),
    )
}

/// The logged-in clients of one benchmark, and the room they are in (`None`: the lobby).
struct Audience {
    sender: Client,
    receivers: Vec<Client>,
    room: Option<&'static str>,
    seq: u64,
}

impl Audience {
    async fn open(addr: SocketAddr, receivers: usize, room: Option<&'static str>) -> Result<Self> {
        let tag = format!("b{}x{receivers}{}", std::process::id(), room.unwrap_or(""));
        let mut clients = Vec::with_capacity(receivers);
        for i in 0..receivers {
            clients.push(Client::login(addr, &format!("{tag}r{i}")).await?);
        }
        let mut audience = Audience {
            sender: Client::login(addr, &format!("{tag}s")).await?,
            receivers: clients,
            room,
            seq: 0,
        };
        if let Some(room) = room {
            for client in audience.receivers.iter_mut().chain([&mut audience.sender]) {
                client
                    .send(format!("{{\"type\":\"join\",\"room\":\"{room}\"}}\n"))
                    .await?;
                client
                    .read_until(|line| contains(line, b"\"join_response\""))
                    .await?;
            }
        }
        // Presence frames for the joins come every 100 ms; let them all go out, then read past
        // them: every client up to a first message, the sender up to the answer to a ping.
        // Afterwards nothing but the benchmark arrives.
        tokio::time::sleep(Duration::from_millis(300)).await;
        audience.send_once().await?;
        audience
            .sender
            .send("{\"type\":\"ping\",\"content\":\"drained\"}\n".into())
            .await?;
        audience
            .sender
            .read_until(|line| contains(line, b"\"pong\"") && contains(line, b"drained"))
            .await?;
        Ok(audience)
    }

    /// Deliveries per message: a room member also gets its own message.
    fn deliveries(&self) -> usize {
        self.receivers.len() + usize::from(self.room.is_some())
    }

    /// Sends one message and returns how long until every recipient had read it.
    async fn send_once(&mut self) -> Result<Duration> {
        self.seq += 1;
        let (frame, marker) = message(self.seq, self.room);
        let started = Instant::now();
        // The reads are submitted when this task yields in the write below, so the receivers are
        // waiting before the message can reach them.
        let tasks: Vec<_> = std::mem::take(&mut self.receivers)
            .into_iter()
            .map(|mut client| {
                let marker = marker.clone();
                tokio_uring::spawn(async move {
                    let outcome = client
                        .read_until(|line| contains(line, b"\"chat\"") && contains(line, &marker))
                        .await;
                    (client, outcome)
                })
            })
            .collect();
        let mut first_error = self.sender.send(frame).await.err();
        if self.room.is_some() && first_error.is_none() {
            let own = self
                .sender
                .read_until(|line| contains(line, b"\"chat\"") && contains(line, &marker))
                .await;
            first_error = own.err();
        }
        for task in tasks {
            let (client, outcome) = task.await.map_err(|e| format!("receiver task: {e}"))?;
            self.receivers.push(client);
            if let (Err(e), None) = (outcome, &first_error) {
                first_error = Some(e);
            }
        }
        let elapsed = started.elapsed();
        first_error.map_or(Ok(elapsed), Err)
    }
}

fn bench_e2e(c: &mut Criterion) {
    let server = Server::start(Config {
        host: "127.0.0.1".into(),
        port: 0,
        http_port: None,
        cores: 2,
        // The sender broadcasts far above the per-connection flood limit, and the receivers never
        // send anything (so no keepalive pings either): switch both guards off.
        rate_limit: 0,
        ping_interval: Duration::from_secs(3600),
        ..Default::default()
    })
    .expect("start the server");
    let addr = server.local_addr();
    let runtime = tokio_uring::Runtime::new(&tokio_uring::builder()).expect("io_uring runtime");

    for (name, room) in [("e2e/broadcast", None), ("e2e/room", Some(ROOM))] {
        let mut group = c.benchmark_group(name);
        for receivers in RECEIVERS {
            let mut audience = runtime
                .block_on(Audience::open(addr, receivers, room))
                .expect("log the clients in");
            // One element = one delivery, so criterion also shows deliveries per second.
            group.throughput(Throughput::Elements(audience.deliveries() as u64));
            group.bench_function(BenchmarkId::from_parameter(receivers), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += audience.send_once().await.expect("message delivered");
                        }
                        total
                    })
                })
            });
            // Close the sockets inside the runtime that owns them.
            runtime.block_on(async move { drop(audience) });
        }
        group.finish();
    }

    server.shutdown();
    server.join().expect("the server stops cleanly");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_e2e
}
criterion_main!(benches);
