//! The top layer: threads, start-up, the accept loop, the reader task, timeouts.
//!
//! - [`Server::start`] does the checks, binds one listener per core and spawns the cores; the handle
//!   it returns is what tests drive (port 0, then `local_addr`). [`run`] is what the binary does:
//!   start, wait for SIGINT or SIGTERM, drain, and exit.
//! - [`core`]: one core's listener, connections, inbox loop and drain.
//! - [`http`]: one core's share of the HTTP port (`/healthz`, `/readyz`, `/metrics`, the `/ws`
//!   upgrade, the web page) and of the metrics port.
//! - [`websocket`]: a WebSocket client becomes a connection and session like any other.
//! - [`reader`]: the task per connection that reads, frames, and hands frames to its session.
//! - [`sweeper`]: login timeout and keepalive.
//! - [`web`]: the web chat page's files, embedded in the binary.
//! - [`startup`]: the checks that turn a missing io_uring, a busy port or a low fd limit into advice.

pub mod core;
pub mod http;
pub mod reader;
pub mod startup;
pub mod sweeper;
pub mod web;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use self::core::Core;
use self::http::{HttpPort, Routes};
use crate::auth::{self, Verifier};
use crate::chat::directory::Directory;
use crate::chat::protocol::{self, ErrorCode};
use crate::chat::remote::CoreLink;
use crate::chat::rooms::directory::RoomDirectory;
use crate::chat::shard::Shared as ChatShared;
use crate::chat::{Shard, ShardMsg};
use crate::cluster::{self, Cluster};
use crate::config::{self as defaults, AuthKey, Config, RING_CQ_ENTRIES};
use crate::hub::router::INBOX_BATCHES;
use crate::hub::{Inbox, Mail, Outbox, Router};
use crate::metrics::{CoreMetrics, Exposition};
use crate::net::guards::Admission;
use crate::net::tls;
use crate::net::writer::Writers;
use crate::net::{SocketLimits, Sockets};

/// A running server.
pub struct Server {
    local_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    inboxes: Vec<Outbox<ShardMsg>>,
    threads: Vec<JoinHandle<()>>,
    /// The cluster bridge, on a node of a cluster; it ends after the cores.
    bridge: Option<JoinHandle<()>>,
    exits: flume::Receiver<CoreExit>,
    /// The certificate of every port, which [`Server::reload_tls`] replaces.
    tls: Option<tls::Certificate>,
}

/// How a core thread ended.
#[derive(Debug)]
pub struct CoreExit {
    pub core: usize,
    pub result: Result<(), String>,
}

impl Server {
    /// Checks io_uring, raises the open-file limit, binds the listeners and starts every core.
    /// The error is a message for the operator.
    pub fn start(mut config: Config) -> Result<Server, String> {
        config.validate()?;
        let verifier = Verifier::from_config(&config.auth_key, config.auth_leeway)?;
        let tls = (config.tls.as_ref())
            .map(|files| tls::Certificate::load(&files.cert, &files.key))
            .transpose()?;
        startup::check_io_uring()?;
        let fd_limit = startup::raise_fd_limit();
        let capacity = fd_limit.saturating_sub(startup::RESERVED_FDS).max(1) as usize;
        if capacity < config.max_connections {
            config.max_connections = capacity;
        }
        let addr = startup::resolve(&config.host, config.port)?;
        let listeners = startup::bind_listeners(addr, config.cores, config.listen_backlog)?;
        let local_addr = listeners[0].local_addr().map_err(|e| e.to_string())?;
        let (mut http_listeners, http_addr) = bind_optional(&config, config.http_port)?;
        let (mut metrics_listeners, metrics_addr) = bind_optional(&config, config.metrics_port)?;
        tracing::info!(
            %local_addr,
            http = ?http_addr,
            metrics = ?metrics_addr,
            cores = config.cores,
            open_file_limit = fd_limit,
            max_connections = config.max_connections,
            "uring-chat listening; the open-file limit leaves room for {capacity} connections"
        );

        let cpus = startup::allowed_cpus();
        if config.cores > cpus.len() {
            tracing::warn!(
                cores = config.cores,
                cpus = cpus.len(),
                "more cores than CPUs: some CPUs run two cores"
            );
        }
        log_auth(&config);
        if let Some(files) = &config.tls {
            tracing::info!(cert = %files.cert.display(), "TLS on every port");
        }
        let directory = Arc::new(Directory::default());
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..config.cores)
            .map(|_| flume::bounded(INBOX_BATCHES))
            .unzip();
        let node: u32 = rand::random();
        let (cluster, bridge) = match config.nats.is_empty() {
            true => (None, None),
            false => {
                let link = CoreLink::new(senders.clone(), directory.clone(), node);
                let (cluster, bridge) =
                    cluster::bridge::start(cluster_settings(&config, node), link)?;
                (Some(cluster), Some(bridge))
            }
        };
        let shared = Shared {
            auth: verifier,
            tls,
            node,
            cluster,
            directory,
            rooms: Arc::new(RoomDirectory::new(config.max_rooms)),
            admission: Arc::new(Admission::new(
                config.max_connections,
                config.max_connections_per_ip,
            )),
        };
        let metrics: Vec<Arc<CoreMetrics>> = (0..config.cores).map(CoreMetrics::new).collect();
        let cluster_counters = shared.cluster.as_ref().map(|c| c.shared().clone());
        let exposition = Arc::new(Exposition::new(metrics.clone(), cluster_counters));
        let config = Arc::new(config);
        let (exit_tx, exits) = flume::unbounded();
        let mut threads = Vec::with_capacity(config.cores);
        for (id, (listener, inbox)) in listeners.into_iter().zip(receivers).enumerate() {
            let listeners = CoreListeners {
                chat: listener,
                http: http_listeners[id].take(),
                metrics: metrics_listeners[id].take(),
            };
            let cpu = (!cpus.is_empty()).then(|| cpus[id % cpus.len()]);
            let (config, shared, peers, exit_tx) = (
                config.clone(),
                shared.clone(),
                senders.clone(),
                exit_tx.clone(),
            );
            let metrics = (metrics[id].clone(), exposition.clone());
            let thread = std::thread::Builder::new()
                .name(format!("core-{id}"))
                .spawn(move || {
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let core = CoreParts {
                            id,
                            cpu,
                            shared,
                            peers,
                            listeners,
                            inbox,
                            metrics,
                        };
                        run_core(core, config)
                    }))
                    .unwrap_or_else(|_| Err(format!("core {id} panicked")));
                    let _ = exit_tx.send(CoreExit { core: id, result });
                })
                .map_err(|e| format!("cannot start core thread {id}: {e}"))?;
            threads.push(thread);
        }
        Ok(Server {
            local_addr,
            http_addr,
            metrics_addr,
            inboxes: senders,
            tls: shared.tls.clone(),
            threads,
            bridge,
            exits,
        })
    }

    /// The address the listeners are bound to (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the HTTP port, unless it is off.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The address of the metrics port, when `/metrics` has one of its own.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Reads the TLS certificate and key again (what SIGHUP does): new connections get the new
    /// pair, open ones keep theirs. A bad file leaves the old pair in place; the error says why.
    /// Without TLS there is nothing to reload.
    pub fn reload_tls(&self) -> Result<(), String> {
        let Some(certificate) = &self.tls else {
            return Err("no --tls-cert to reload: TLS is off".into());
        };
        certificate.reload()
    }

    /// Begins a graceful stop: no new input, SERVER_SHUTDOWN to every client, flush, close.
    pub fn shutdown(&self) {
        for inbox in &self.inboxes {
            let _ = inbox.send(vec![Mail::Shutdown]);
        }
    }

    /// Waits for the next core to end (normally only after `shutdown`).
    pub async fn next_exit(&self) -> Option<CoreExit> {
        self.exits.recv_async().await.ok()
    }

    /// Waits for every core; the error names the first core that failed.
    pub fn join(self) -> Result<(), String> {
        drop(self.inboxes);
        let mut first_error = None;
        for thread in self.threads {
            let _ = thread.join();
        }
        // The cores' handles on the cluster are gone with them: the bridge sends their last
        // releases and ends.
        if let Some(bridge) = self.bridge {
            let _ = bridge.join();
        }
        for exit in self.exits.try_iter() {
            if let (Err(error), None) = (exit.result, &first_error) {
                first_error = Some(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// What the cores share: nothing of it is touched per message.
#[derive(Clone)]
struct Shared {
    /// Checks login tokens; `None` runs an open server, as protocol v1.
    auth: Option<Verifier>,
    /// The certificate of every port; `None` serves plain text.
    tls: Option<tls::Certificate>,
    /// This node's tag (docs/CLUSTER.md), random per start, in bytes 1 to 4 of every userID.
    node: u32,
    cluster: Option<Cluster>,
    directory: Arc<Directory>,
    rooms: Arc<RoomDirectory>,
    admission: Arc<Admission>,
}

/// What the cluster bridge needs, from the flags and the named defaults.
fn cluster_settings(config: &Config, node: u32) -> cluster::Settings {
    let node_name = (config.node_name.clone()).unwrap_or_else(|| format!("node-{node:08x}"));
    cluster::Settings {
        urls: config.nats.clone(),
        node_name,
        tag: node,
        subject_prefix: defaults::CLUSTER_SUBJECT_PREFIX.into(),
        bucket: defaults::CLUSTER_USERS_BUCKET.into(),
        rooms_bucket: defaults::CLUSTER_ROOMS_BUCKET.into(),
        heartbeat: defaults::CLUSTER_HEARTBEAT,
        missed_heartbeats: defaults::CLUSTER_MISSED_HEARTBEATS,
        queue: defaults::CLUSTER_QUEUE,
        subscription_capacity: config.nats_subscription_capacity,
        request_timeout: defaults::CLUSTER_REQUEST_TIMEOUT,
    }
}

/// Says whether logins need a token, and warns about an HS256 secret too short to be safe.
fn log_auth(config: &Config) {
    match &config.auth_key {
        AuthKey::Off => {}
        AuthKey::Secret(secret) if secret.len() < auth::MIN_SECRET_BYTES => tracing::warn!(
            bytes = secret.len(),
            "logins need a token; the HS256 secret is shorter than {} bytes and can be guessed",
            auth::MIN_SECRET_BYTES
        ),
        key => tracing::info!(?key, "logins need a signed token"),
    }
}

/// Binds one listener per core on `port` of the configured host, unless the port is off; with the
/// address bound (the real port when 0 was asked for).
fn bind_optional(
    config: &Config,
    port: Option<u16>,
) -> Result<(Vec<Option<std::net::TcpListener>>, Option<SocketAddr>), String> {
    let Some(port) = port else {
        return Ok(((0..config.cores).map(|_| None).collect(), None));
    };
    let addr = startup::resolve(&config.host, port)?;
    let bound = startup::bind_listeners(addr, config.cores, config.listen_backlog)?;
    let local = bound[0].local_addr().map_err(|e| e.to_string())?;
    Ok((bound.into_iter().map(Some).collect(), Some(local)))
}

/// One core's listeners: its share of the chat port and, unless they are off, of the HTTP port and
/// the metrics port.
struct CoreListeners {
    chat: std::net::TcpListener,
    http: Option<std::net::TcpListener>,
    metrics: Option<std::net::TcpListener>,
}

/// What a core thread starts from.
struct CoreParts {
    id: usize,
    cpu: Option<usize>,
    shared: Shared,
    peers: Vec<Outbox<ShardMsg>>,
    listeners: CoreListeners,
    inbox: Inbox<ShardMsg>,
    /// Its own counters, and what answers `/metrics` from every core's.
    metrics: (Arc<CoreMetrics>, Arc<Exposition>),
}

fn run_core(parts: CoreParts, config: Arc<Config>) -> Result<(), String> {
    let CoreParts {
        id,
        cpu,
        shared,
        peers,
        listeners,
        inbox,
        metrics: (metrics, exposition),
    } = parts;
    if let Some(cpu) = cpu {
        if let Err(error) = startup::pin_current_thread(cpu) {
            tracing::warn!(core = id, cpu, %error, "could not pin the core to its CPU");
        }
    }
    let mut builder = tokio_uring::builder();
    builder
        .entries(config.ring_entries)
        .uring_builder(tokio_uring::uring_builder().setup_cqsize(RING_CQ_ENTRIES));
    let (runtime, ring) = startup::core_runtime(&builder)?;
    if ring.is_none() {
        tracing::warn!(
            core = id,
            "could not find the core's io_uring fd: fan-out passes will delay reads"
        );
    }
    runtime.block_on(async move {
        let listener = tokio_uring::net::TcpListener::from_std(listeners.chat);
        let writers = Writers::new(config.inline_send_min, ring, metrics.net.clone());
        let writers = writers.map_err(|error| {
            format!("core {id}: could not create its writer's eventfd: {error}")
        })?;
        let sockets = Sockets::new(
            writers,
            SocketLimits {
                max_outbound_bytes: config.max_outbound_bytes,
                drain_timeout: config.drain_timeout,
                rate_limit: config.rate_limit,
                rate_limit_burst: config.rate_limit_burst,
            },
            shared.admission,
            protocol::error(
                ErrorCode::SlowConsumer,
                "you did not read fast enough: your outbound queue passed its bound",
            ),
            metrics.chat.clone(),
        );
        let router = Router::new(id, peers, metrics.cross_core.clone());
        let counters = metrics.chat.clone();
        let shard = Shard::new(
            id,
            config.clone(),
            shared.auth,
            ChatShared {
                directory: shared.directory,
                room_directory: shared.rooms,
                node: shared.node,
                cluster: shared.cluster,
            },
            router,
            counters,
        );
        let metrics_apart = config.metrics_port.is_some();
        let core = Core::new(config, shard, sockets, metrics, exposition, shared.tls);
        let start = |listener, routes| {
            let listener = tokio_uring::net::TcpListener::from_std(listener);
            HttpPort::start(core.clone(), listener, routes)
        };
        let public = Routes {
            public: true,
            metrics: !metrics_apart,
        };
        let only_metrics = Routes {
            public: false,
            metrics: true,
        };
        let ports: Vec<HttpPort> = (listeners.http.map(|l| start(l, public)).into_iter())
            .chain(listeners.metrics.map(|l| start(l, only_metrics)))
            .collect();
        core::run(core, listener, inbox).await;
        for port in ports {
            port.stop();
        }
        Ok(())
    })
}

/// What the binary does: start, serve until SIGINT or SIGTERM, drain, exit. A second signal exits
/// at once with 128 + its number; a core that fails or panics ends the process with an error.
/// SIGHUP reloads the TLS certificate and key.
pub fn run(config: Config) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};

    let server = Server::start(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    let outcome: Result<(), String> = runtime.block_on(async {
        let mut terminate = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut interrupt = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
        let mut hangup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
        loop {
            tokio::select! {
                _ = terminate.recv() => break tracing::info!("SIGTERM: draining"),
                _ = interrupt.recv() => break tracing::info!("SIGINT: draining"),
                _ = hangup.recv() => match server.reload_tls() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(error) => tracing::warn!(%error, "SIGHUP: kept the old TLS certificate"),
                },
                exit = server.next_exit() => return Err(early_exit(exit)),
            }
        }
        server.shutdown();
        let mut running = server.threads.len();
        while running > 0 {
            tokio::select! {
                _ = terminate.recv() => std::process::exit(128 + libc::SIGTERM),
                _ = interrupt.recv() => std::process::exit(128 + libc::SIGINT),
                exit = server.next_exit() => match exit {
                    Some(CoreExit { result: Ok(()), .. }) => running -= 1,
                    other => return Err(early_exit(other)),
                },
            }
        }
        Ok(())
    });
    outcome?;
    server.join()?;
    tracing::info!("stopped");
    Ok(())
}

fn early_exit(exit: Option<CoreExit>) -> String {
    match exit {
        Some(CoreExit {
            core,
            result: Err(error),
        }) => format!("core {core} failed: {error}"),
        Some(CoreExit {
            core,
            result: Ok(()),
        }) => format!("core {core} stopped unexpectedly"),
        None => "every core has stopped".into(),
    }
}
