//! The built-in defaults and hard limits of every setting, each with the reason for its value.

use std::time::Duration;

/// Largest inbound frame: a chat line longer than this is an attack or a bug, not a message.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
/// Outbound bytes a client may owe before it counts as a slow consumer.
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 1024 * 1024;
/// Listen backlog per core; the kernel caps it at `net.core.somaxconn`.
pub const DEFAULT_LISTEN_BACKLOG: u32 = 4096;
/// Connections server-wide; the open-file limit may lower it at start-up.
pub const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
/// Users named in `connect_response` and in each `users` page.
pub const DEFAULT_USER_LIST_LIMIT: usize = 100;
/// How often each core sends its coalesced joins and leaves.
pub const DEFAULT_PRESENCE_INTERVAL: Duration = Duration::from_millis(100);
/// How often each core sends counts-only presence frames (above `--presence-limit` users). Every
/// frame costs a TCP segment per user: with 10,000 users, 100 joins and 100 leaves a second, one a
/// second per core took ~12 % of the server's CPU, one every 10 s ~5 % (docs/BENCHMARKS.md). A
/// client that wants the exact count now asks for a `users` page.
pub const DEFAULT_PRESENCE_COUNT_INTERVAL: Duration = Duration::from_secs(10);
/// Above this many users, presence frames carry counts only.
pub const DEFAULT_PRESENCE_LIMIT: usize = 1000;
/// Names per list (`joined`, `left`) in one presence frame.
pub const DEFAULT_PRESENCE_NAMES: usize = 100;
/// How long a closing connection may take to flush what it is owed.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Initial (and idle) read buffer per connection: every idle connection holds one in a pending read.
pub const DEFAULT_READ_BUFFER_BYTES: usize = 512;
/// Submission-queue entries per core's ring. tokio-uring hands queued operations to the kernel only
/// when the thread parks or the queue is full, and a loaded core seldom parks: a small queue bounds
/// how long a write waits before the kernel sees it.
pub const DEFAULT_RING_ENTRIES: u32 = 256;
/// The kernel's limits on ring sizes (IORING_MAX_ENTRIES, IORING_MAX_CQ_ENTRIES).
pub const MAX_RING_ENTRIES: u32 = 32768;
/// Completion-queue entries per core: the kernel's maximum, since every idle connection holds a
/// pending read and every busy one a write as well (1 MiB per core).
pub const RING_CQ_ENTRIES: u32 = 2 * MAX_RING_ENTRIES;
/// A writer turn with writes for at least this many connections (a broadcast's fan-out) sends them
/// inline with nonblocking `sendmsg`; smaller turns go through io_uring. As many as the default
/// submission queue holds: a bigger turn would go to the kernel in several queue-full chunks, with
/// reads waiting behind them. See `net/writer.rs` for the measurements.
pub const DEFAULT_INLINE_SEND_MIN: usize = 256;
/// A connection that has not logged in by then is closed: slowloris costs a socket for this long.
pub const DEFAULT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence after which the server pings; two more silent intervals and the connection is closed.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(30);
/// Connections per client address; 0 is no cap (behind a proxy every client shares one address).
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 0;
/// Frames per second a connection may send on average (0 turns flood control off).
pub const DEFAULT_RATE_LIMIT: u32 = 50;
/// Frames a connection may send at once above its rate.
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 100;
/// Messages each room's history holds for members that reconnect.
pub const DEFAULT_HISTORY_MESSAGES: usize = 100;
/// Bytes each room's history holds, whichever of the two caps is reached first.
pub const DEFAULT_HISTORY_BYTES: usize = 256 * 1024;
/// Bytes all rooms' histories hold together; past it the oldest messages server-wide go first.
pub const DEFAULT_HISTORY_TOTAL_BYTES: usize = 256 * 1024 * 1024;
/// How long an empty room keeps its history (so its members can recover) before it is dropped.
pub const DEFAULT_ROOM_IDLE_TTL: Duration = Duration::from_secs(300);
/// Rooms one user may be in at once.
pub const DEFAULT_MAX_ROOMS_PER_USER: usize = 100;
/// Rooms server-wide.
pub const DEFAULT_MAX_ROOMS: usize = 100_000;
/// Clock skew allowed on a login token's `exp` and `nbf`: hosts kept by NTP agree within a
/// second, and a token that lives minutes loses little by lasting 30 s more.
pub const DEFAULT_AUTH_LEEWAY: Duration = Duration::from_secs(30);
/// Most cores: the first byte of a userID names the core that owns the user.
pub const MAX_CORES: usize = 256;
/// The HTTP port (health checks): the chat port's neighbour, as operators expect.
pub const DEFAULT_HTTP_PORT: u16 = 8081;
/// Largest HTTP request head (request line and headers); more gets 431. Browsers send 1-2 KiB.
pub const MAX_HTTP_HEAD_BYTES: usize = 8 * 1024;
/// How often a clustered node publishes its heartbeat (docs/CLUSTER.md, "Liveness").
pub const CLUSTER_HEARTBEAT: Duration = Duration::from_secs(2);
/// Heartbeats a node may miss before the others count it dead and free its names: 3 x 2 s, so a
/// dead node's names are free again within 10 s of its last beat.
pub const CLUSTER_MISSED_HEARTBEATS: u32 = 3;
/// Messages the cores may queue for the cluster bridge. A core never waits on it: past it a send
/// is refused and answered as if the cluster were unreachable (`CLUSTER_UNAVAILABLE`), and counted.
pub const CLUSTER_QUEUE: usize = 64 * 1024;
/// Messages one of the bridge's NATS subscriptions (lobby, this node's subject, heartbeats) may
/// hold before the bridge takes them; past it the NATS client drops what arrives and reports a slow
/// consumer (docs/CLUSTER.md). async-nats's own default, made a setting.
pub const CLUSTER_SUBSCRIPTION_CAPACITY: usize = 64 * 1024;
/// How long a request to NATS (a name claim: a KV create) may take before it counts as failed.
pub const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// First token of every cluster subject (`uring-chat.lobby`, `uring-chat.node.<tag>`, ...).
pub const CLUSTER_SUBJECT_PREFIX: &str = "uring-chat";
/// The JetStream key-value bucket of the cluster's usernames.
pub const CLUSTER_USERS_BUCKET: &str = "uring-chat-users";
/// The JetStream key-value bucket that says which node owns each room (docs/CLUSTER.md).
pub const CLUSTER_ROOMS_BUCKET: &str = "uring-chat-rooms";
