//! Settings: command-line flags, environment variables, an optional TOML file, and defaults.
//!
//! Precedence is flag > environment > file > default. clap handles flags, `URING_CHAT_*` variables and
//! defaults; the file's values are handed to clap as the defaults. The old Go server's `SERVER_HOST`
//! and `SERVER_PORT` count as environment, below their `URING_CHAT_*` twins.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};

mod defaults;
mod keys;
pub use defaults::*;
use keys::{auth_key, tls_files};
pub use keys::{read_secret_file, TlsFiles};

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The key login tokens are checked against (docs/SECURITY.md); its bytes are never printed.
#[derive(Clone, Default)]
pub enum AuthKey {
    /// No tokens: anyone may log in with any free name, as in protocol v1.
    #[default]
    Off,
    /// An HS256 secret: `--auth-jwt-secret`, or `--auth-jwt-secret-file`'s contents.
    Secret(Vec<u8>),
    /// A PEM public key (RS256, ES256 or EdDSA): `--auth-jwt-public-key`'s contents.
    PublicKeyPem(Vec<u8>),
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthKey::Off => "Off",
            AuthKey::Secret(_) => "Secret(..)",
            AuthKey::PublicKeyPem(_) => "PublicKeyPem(..)",
        })
    }
}

/// Every setting of a running server. `Default` gives the documented defaults on all interfaces.
#[derive(Clone, Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    /// The HTTP port (`/healthz`, `/readyz`) on the same host; `None` is off.
    pub http_port: Option<u16>,
    /// A port of its own for `/metrics`, kept off the public HTTP port; `None` serves it there.
    pub metrics_port: Option<u16>,
    pub cores: usize,
    /// `/ws` echoes each message instead of reading it as a protocol frame (conformance tests).
    pub ws_echo: bool,
    /// Origins a browser page may open `/ws` from; empty allows any.
    pub ws_allowed_origins: Vec<String>,
    pub max_frame_bytes: usize,
    pub max_outbound_bytes: usize,
    pub listen_backlog: u32,
    pub max_connections: usize,
    pub user_list_limit: usize,
    pub presence_interval: Duration,
    pub presence_count_interval: Duration,
    pub presence_limit: usize,
    pub presence_names: usize,
    pub drain_timeout: Duration,
    pub read_buffer_bytes: usize,
    pub ring_entries: u32,
    pub inline_send_min: usize,
    pub login_timeout: Duration,
    pub ping_interval: Duration,
    pub max_connections_per_ip: usize,
    pub rate_limit: u32,
    pub rate_limit_burst: u32,
    pub history_messages: usize,
    pub history_bytes: usize,
    pub history_total_bytes: usize,
    pub room_idle_ttl: Duration,
    pub max_rooms_per_user: usize,
    pub max_rooms: usize,
    pub auth_key: AuthKey,
    /// Clock skew allowed on a token's `exp` and `nbf`.
    pub auth_leeway: Duration,
    /// The certificate chain and key that turn on TLS for the chat port; `None` is plain text.
    pub tls: Option<TlsFiles>,
    /// NATS servers of the cluster (docs/CLUSTER.md); empty runs a single node, as before.
    pub nats: Vec<String>,
    /// This node's name in the cluster; `None` picks a random one at start.
    pub node_name: Option<String>,
    /// Messages a NATS subscription of the bridge holds before it counts as a slow consumer.
    pub nats_subscription_capacity: usize,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            host: "0.0.0.0".into(),
            port: 8080,
            http_port: Some(DEFAULT_HTTP_PORT),
            metrics_port: None,
            cores: available_cpus(),
            ws_echo: false,
            ws_allowed_origins: Vec::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            listen_backlog: DEFAULT_LISTEN_BACKLOG,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            user_list_limit: DEFAULT_USER_LIST_LIMIT,
            presence_interval: DEFAULT_PRESENCE_INTERVAL,
            presence_count_interval: DEFAULT_PRESENCE_COUNT_INTERVAL,
            presence_limit: DEFAULT_PRESENCE_LIMIT,
            presence_names: DEFAULT_PRESENCE_NAMES,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            read_buffer_bytes: DEFAULT_READ_BUFFER_BYTES,
            ring_entries: DEFAULT_RING_ENTRIES,
            inline_send_min: DEFAULT_INLINE_SEND_MIN,
            login_timeout: DEFAULT_LOGIN_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            rate_limit: DEFAULT_RATE_LIMIT,
            rate_limit_burst: DEFAULT_RATE_LIMIT_BURST,
            history_messages: DEFAULT_HISTORY_MESSAGES,
            history_bytes: DEFAULT_HISTORY_BYTES,
            history_total_bytes: DEFAULT_HISTORY_TOTAL_BYTES,
            room_idle_ttl: DEFAULT_ROOM_IDLE_TTL,
            max_rooms_per_user: DEFAULT_MAX_ROOMS_PER_USER,
            max_rooms: DEFAULT_MAX_ROOMS,
            auth_key: AuthKey::Off,
            auth_leeway: DEFAULT_AUTH_LEEWAY,
            tls: None,
            nats: Vec::new(),
            node_name: None,
            nats_subscription_capacity: CLUSTER_SUBSCRIPTION_CAPACITY,
            log_level: "info".into(),
            log_format: LogFormat::Text,
        }
    }
}

/// CPUs this process may run on (its affinity mask), at least 1.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The command line. Every flag has a `URING_CHAT_*` variable and a key of the same name in `--config`.
#[derive(Parser, Debug)]
#[command(
    name = "uring-chat",
    version,
    about = "Thread-per-core io_uring chat server (newline-delimited JSON over TCP)."
)]
struct Cli {
    /// TOML file with any of the keys below (kebab-case, e.g. `max-frame-bytes = 65536`).
    #[arg(long, env = "URING_CHAT_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on (also SERVER_HOST).
    #[arg(long, env = "URING_CHAT_HOST", default_value = "0.0.0.0")]
    host: String,
    /// TCP port; 0 picks a free one (also SERVER_PORT).
    #[arg(long, env = "URING_CHAT_PORT", default_value_t = 8080)]
    port: u16,
    /// HTTP port for /healthz and /readyz on the same host; 0 picks a free one, `off` disables it.
    #[arg(long, env = "URING_CHAT_HTTP_PORT", default_value = "8081", value_parser = parse_port_or_off)]
    http_port: PortOrOff,
    /// Port for /metrics alone (then not on the HTTP port), to keep it internal; 0 picks a free one.
    #[arg(long, env = "URING_CHAT_METRICS_PORT", default_value = "off", value_parser = parse_port_or_off)]
    metrics_port: PortOrOff,
    /// Worker threads, one pinned per CPU, each with its own ring and listener [default: CPUs available].
    #[arg(long, env = "URING_CHAT_CORES")]
    cores: Option<usize>,
    /// `/ws` echoes each message back instead of reading it as a frame (for the Autobahn suite).
    #[arg(long, env = "URING_CHAT_WS_ECHO")]
    ws_echo: bool,
    /// Origins (e.g. https://chat.example.com) whose pages may open /ws, comma-separated [default: any].
    #[arg(long, env = "URING_CHAT_WS_ALLOWED_ORIGINS", value_delimiter = ',')]
    ws_allowed_origins: Vec<String>,
    /// Largest inbound frame in bytes (a WebSocket message too); longer ones get FRAME_TOO_LARGE and a close.
    #[arg(long, env = "URING_CHAT_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    max_frame_bytes: usize,
    /// Bytes a client may owe before it is cut off as a slow consumer.
    #[arg(long, env = "URING_CHAT_MAX_OUTBOUND_BYTES", default_value_t = DEFAULT_MAX_OUTBOUND_BYTES)]
    max_outbound_bytes: usize,
    /// Listen backlog of each core's listener.
    #[arg(long, env = "URING_CHAT_LISTEN_BACKLOG", default_value_t = DEFAULT_LISTEN_BACKLOG)]
    listen_backlog: u32,
    /// Connections server-wide; extra clients get SERVER_FULL. Lowered to fit the open-file limit.
    #[arg(long, env = "URING_CHAT_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Users listed in connect_response and in each `users` page.
    #[arg(long, env = "URING_CHAT_USER_LIST_LIMIT", default_value_t = DEFAULT_USER_LIST_LIMIT)]
    user_list_limit: usize,
    /// How often each core sends its coalesced joins and leaves (e.g. 100ms, 1s).
    #[arg(long, env = "URING_CHAT_PRESENCE_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    presence_interval: Duration,
    /// How often each core sends counts-only presence frames (above --presence-limit users).
    #[arg(long, env = "URING_CHAT_PRESENCE_COUNT_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    presence_count_interval: Duration,
    /// Above this many users, presence frames carry counts only.
    #[arg(long, env = "URING_CHAT_PRESENCE_LIMIT", default_value_t = DEFAULT_PRESENCE_LIMIT)]
    presence_limit: usize,
    /// Names per list in one presence frame.
    #[arg(long, env = "URING_CHAT_PRESENCE_NAMES", default_value_t = DEFAULT_PRESENCE_NAMES)]
    presence_names: usize,
    /// How long a stopping server (or a closing connection) may flush queued output.
    #[arg(long, env = "URING_CHAT_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Read buffer per connection while idle; it grows for a large frame and shrinks back.
    #[arg(long, env = "URING_CHAT_READ_BUFFER_BYTES", default_value_t = DEFAULT_READ_BUFFER_BYTES)]
    read_buffer_bytes: usize,
    /// io_uring submission-queue entries per core; also how many operations wait at most before the
    /// kernel sees them (the completion queue has 65536 entries).
    #[arg(long, env = "URING_CHAT_RING_ENTRIES", default_value_t = DEFAULT_RING_ENTRIES)]
    ring_entries: u32,
    /// A fan-out to at least this many connections on a core is sent inline with nonblocking
    /// sendmsg; smaller writer turns (direct messages) go through io_uring.
    #[arg(long, env = "URING_CHAT_INLINE_SEND_MIN", default_value_t = DEFAULT_INLINE_SEND_MIN)]
    inline_send_min: usize,
    /// Close connections that have not logged in within this time (slowloris).
    #[arg(long, env = "URING_CHAT_LOGIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    login_timeout: Duration,
    /// Ping a connection silent this long; close it after two more silent intervals.
    #[arg(long, env = "URING_CHAT_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    ping_interval: Duration,
    /// Connections per client IP address; extra ones get SERVER_FULL (0: no cap).
    #[arg(long, env = "URING_CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_IP)]
    max_connections_per_ip: usize,
    /// Frames per second one connection may send on average; excess gets RATE_LIMITED (0: off).
    #[arg(long, env = "URING_CHAT_RATE_LIMIT", default_value_t = DEFAULT_RATE_LIMIT)]
    rate_limit: u32,
    /// Frames one connection may send in a burst above its rate.
    #[arg(long, env = "URING_CHAT_RATE_LIMIT_BURST", default_value_t = DEFAULT_RATE_LIMIT_BURST)]
    rate_limit_burst: u32,
    /// Messages each room's history keeps for members that reconnect (join with `since`).
    #[arg(long, env = "URING_CHAT_HISTORY_MESSAGES", default_value_t = DEFAULT_HISTORY_MESSAGES)]
    history_messages: usize,
    /// Bytes each room's history keeps.
    #[arg(long, env = "URING_CHAT_HISTORY_BYTES", default_value_t = DEFAULT_HISTORY_BYTES)]
    history_bytes: usize,
    /// Bytes all rooms' histories keep together; the oldest messages go first.
    #[arg(long, env = "URING_CHAT_HISTORY_TOTAL_BYTES", default_value_t = DEFAULT_HISTORY_TOTAL_BYTES)]
    history_total_bytes: usize,
    /// How long an empty room keeps its history before it is dropped.
    #[arg(long, env = "URING_CHAT_ROOM_IDLE_TTL", default_value = "5m", value_parser = parse_duration)]
    room_idle_ttl: Duration,
    /// Rooms one user may be in at once; more get TOO_MANY_ROOMS.
    #[arg(long, env = "URING_CHAT_MAX_ROOMS_PER_USER", default_value_t = DEFAULT_MAX_ROOMS_PER_USER)]
    max_rooms_per_user: usize,
    /// Rooms server-wide; joining a new room past it gets TOO_MANY_ROOMS.
    #[arg(long, env = "URING_CHAT_MAX_ROOMS", default_value_t = DEFAULT_MAX_ROOMS)]
    max_rooms: usize,
    /// HS256 secret for login tokens (the string's bytes are the key); `connect` then needs a token.
    #[arg(
        long,
        env = "URING_CHAT_AUTH_JWT_SECRET",
        hide_env_values = true,
        hide_default_value = true
    )]
    auth_jwt_secret: Option<String>,
    /// A file holding the HS256 secret (one trailing newline is dropped), kept out of `ps` and env.
    #[arg(long, env = "URING_CHAT_AUTH_JWT_SECRET_FILE")]
    auth_jwt_secret_file: Option<PathBuf>,
    /// A PEM public key (RSA, EC P-256 or Ed25519) for RS256, ES256 or EdDSA login tokens.
    #[arg(long, env = "URING_CHAT_AUTH_JWT_PUBLIC_KEY")]
    auth_jwt_public_key: Option<PathBuf>,
    /// Clock skew allowed on a token's exp and nbf.
    #[arg(long, env = "URING_CHAT_AUTH_LEEWAY", default_value = "30s", value_parser = parse_duration)]
    auth_leeway: Duration,
    /// PEM certificate chain (leaf first): TLS on every port (chat, HTTP/WebSocket, metrics); needs --tls-key.
    #[arg(long, env = "URING_CHAT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert's leaf.
    #[arg(long, env = "URING_CHAT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// NATS URL of a cluster (repeat it, or separate with commas, for a NATS cluster) [default: off, one node].
    #[arg(long, env = "URING_CHAT_NATS", value_delimiter = ',')]
    nats: Vec<String>,
    /// This node's name in a cluster (logs, heartbeats) [default: a random one per start].
    #[arg(long, env = "URING_CHAT_NODE_NAME")]
    node_name: Option<String>,
    /// Messages each of the bridge's NATS subscriptions holds before the node counts as a slow consumer and drops.
    #[arg(long, env = "URING_CHAT_NATS_SUBSCRIPTION_CAPACITY", default_value_t = CLUSTER_SUBSCRIPTION_CAPACITY)]
    nats_subscription_capacity: usize,
    /// Log filter (error, warn, info, debug, trace, or a tracing directive); RUST_LOG wins when set.
    #[arg(long, env = "URING_CHAT_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log line format, to stderr.
    #[arg(long, env = "URING_CHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

impl Config {
    /// Reads the process's command line, environment and `--config` file. Errors are ready to print.
    ///
    /// The file's values become the defaults of clap's arguments, so clap's own order (flag, then
    /// environment, then default) gives flag > environment > file > built-in default.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let mut command = Cli::command();
        if let Some(path) = config_path(&args) {
            for (id, value) in read_file(&path)? {
                command = command.mut_arg(id, |arg| arg.default_value(value));
            }
        }
        let matches = command
            .try_get_matches_from(args)
            .map_err(ConfigError::Cli)?;
        let cli = Cli::from_arg_matches(&matches).map_err(ConfigError::Cli)?;
        let host = legacy_env(&matches, "host", "SERVER_HOST").unwrap_or(cli.host);
        let port = match legacy_env(&matches, "port", "SERVER_PORT") {
            Some(port) => port
                .parse()
                .map_err(|_| format!("SERVER_PORT={port} is not a port number"))?,
            None => cli.port,
        };
        let config = Config {
            host,
            port,
            http_port: cli.http_port.0,
            metrics_port: cli.metrics_port.0,
            cores: cli.cores.unwrap_or_else(available_cpus),
            ws_echo: cli.ws_echo,
            ws_allowed_origins: cli.ws_allowed_origins,
            max_frame_bytes: cli.max_frame_bytes,
            max_outbound_bytes: cli.max_outbound_bytes,
            listen_backlog: cli.listen_backlog,
            max_connections: cli.max_connections,
            user_list_limit: cli.user_list_limit,
            presence_interval: cli.presence_interval,
            presence_count_interval: cli.presence_count_interval,
            presence_limit: cli.presence_limit,
            presence_names: cli.presence_names,
            drain_timeout: cli.drain_timeout,
            read_buffer_bytes: cli.read_buffer_bytes,
            ring_entries: cli.ring_entries,
            inline_send_min: cli.inline_send_min,
            login_timeout: cli.login_timeout,
            ping_interval: cli.ping_interval,
            max_connections_per_ip: cli.max_connections_per_ip,
            rate_limit: cli.rate_limit,
            rate_limit_burst: cli.rate_limit_burst,
            history_messages: cli.history_messages,
            history_bytes: cli.history_bytes,
            history_total_bytes: cli.history_total_bytes,
            room_idle_ttl: cli.room_idle_ttl,
            max_rooms_per_user: cli.max_rooms_per_user,
            max_rooms: cli.max_rooms,
            auth_key: auth_key(
                cli.auth_jwt_secret,
                cli.auth_jwt_secret_file,
                cli.auth_jwt_public_key,
            )?,
            auth_leeway: cli.auth_leeway,
            tls: tls_files(cli.tls_cert, cli.tls_key)?,
            nats: cli.nats,
            node_name: cli.node_name,
            nats_subscription_capacity: cli.nats_subscription_capacity,
            log_level: cli.log_level,
            log_format: cli.log_format,
        };
        config.validate()?;
        Ok(config)
    }

    /// Rejects settings the server cannot run with, saying which and why.
    pub fn validate(&self) -> Result<(), String> {
        if self
            .http_port
            .is_some_and(|http| http != 0 && http == self.port)
        {
            return Err(format!(
                "--http-port must differ from --port ({}); `--http-port off` turns it off",
                self.port
            ));
        }
        if let Some(metrics) = self.metrics_port.filter(|&port| port != 0) {
            if metrics == self.port || self.http_port == Some(metrics) {
                return Err(format!(
                    "--metrics-port ({metrics}) must differ from --port and --http-port"
                ));
            }
        }
        if self.cores == 0 || self.cores > MAX_CORES {
            return Err(format!(
                "--cores must be 1..={MAX_CORES}, got {}",
                self.cores
            ));
        }
        if self.max_frame_bytes < 64 {
            return Err("--max-frame-bytes must be at least 64".into());
        }
        if self.read_buffer_bytes < 64 || self.read_buffer_bytes > self.max_frame_bytes {
            return Err("--read-buffer-bytes must be between 64 and --max-frame-bytes".into());
        }
        // One read can hold a frame limit's worth of chat, all fanned out before any write runs: a
        // bound below twice that would cut off fast readers too.
        let least_outbound = 2 * (self.max_frame_bytes + self.read_buffer_bytes);
        if self.max_outbound_bytes < least_outbound {
            return Err(format!(
                "--max-outbound-bytes must be at least 2 x (--max-frame-bytes + --read-buffer-bytes) = {least_outbound}"
            ));
        }
        if !(8..=MAX_RING_ENTRIES).contains(&self.ring_entries) {
            return Err(format!(
                "--ring-entries must be 8..={MAX_RING_ENTRIES} (the kernel's limit)"
            ));
        }
        if self.max_connections == 0 || self.user_list_limit == 0 {
            return Err("--max-connections and --user-list-limit must be positive".into());
        }
        if self.presence_interval.is_zero()
            || self.login_timeout.is_zero()
            || self.ping_interval.is_zero()
        {
            return Err(
                "--presence-interval, --login-timeout and --ping-interval must be positive".into(),
            );
        }
        if self.history_bytes > self.history_total_bytes {
            return Err("--history-bytes must not exceed --history-total-bytes".into());
        }
        // A join's replay is queued at once: a whole room's history must leave room in the
        // outbound bound for everything else, or recovering would cut the client off.
        if self.history_bytes > self.max_outbound_bytes / 2 {
            return Err(format!(
                "--history-bytes must be at most half of --max-outbound-bytes ({}), so a replay never makes a slow consumer",
                self.max_outbound_bytes / 2
            ));
        }
        if self.nats.iter().any(|url| url.trim().is_empty())
            || self
                .node_name
                .as_ref()
                .is_some_and(|name| name.trim().is_empty())
        {
            return Err("--nats URLs and --node-name must not be empty".into());
        }
        if self.nats_subscription_capacity == 0 {
            // The NATS client's channel needs room for one message.
            return Err("--nats-subscription-capacity must be positive".into());
        }
        if self.max_rooms_per_user == 0 || self.max_rooms == 0 {
            return Err("--max-rooms-per-user and --max-rooms must be positive".into());
        }
        if self.rate_limit > 0 && self.rate_limit_burst == 0 {
            return Err("--rate-limit-burst must be positive when --rate-limit is on".into());
        }
        Ok(())
    }
}

/// Why the settings could not be read: a command-line problem (or `--help`), or a bad value.
#[derive(Debug)]
pub enum ConfigError {
    Cli(clap::Error),
    Invalid(String),
}

impl From<String> for ConfigError {
    fn from(message: String) -> Self {
        ConfigError::Invalid(message)
    }
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigError::Cli(error) => write!(f, "{error}"),
            ConfigError::Invalid(message) => f.write_str(message),
        }
    }
}

impl ConfigError {
    /// Prints the help, version or error the way clap does and exits: 0 for help, 2 for errors.
    pub fn exit(self) -> ! {
        match self {
            ConfigError::Cli(error) => error.exit(),
            ConfigError::Invalid(message) => {
                eprintln!("uring-chat: {message}");
                std::process::exit(2)
            }
        }
    }
}

/// The old server's variable, when neither the flag nor its `URING_CHAT_*` twin is set.
fn legacy_env(matches: &ArgMatches, id: &str, var: &str) -> Option<String> {
    let given = matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    );
    if given {
        return None;
    }
    std::env::var(var).ok().filter(|v| !v.is_empty())
}

/// `--config PATH`, `--config=PATH` or `URING_CHAT_CONFIG`, looked up before clap parses, since the
/// file's values must be in place first.
fn config_path(args: &[std::ffi::OsString]) -> Option<PathBuf> {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_string_lossy();
        if word == "--config" {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = word.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    std::env::var_os("URING_CHAT_CONFIG").map(PathBuf::from)
}

/// The `--config` file as (argument id, value) pairs: the keys of the flags in kebab-case, the
/// values as they would be typed (`presence-interval = "250ms"`, `port = 9000`).
fn read_file(path: &Path) -> Result<Vec<(String, String)>, String> {
    let bad = |why: String| format!("bad --config {}: {why}", path.display());
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --config {}: {e}", path.display()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let known: Vec<String> = Cli::command()
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .filter(|id| id != "config")
        .collect();
    table
        .into_iter()
        .map(|(key, value)| {
            let id = key.replace('-', "_");
            if !known.contains(&id) {
                return Err(bad(format!("unknown key `{key}`")));
            }
            let value = match value {
                toml::Value::String(text) => text,
                toml::Value::Integer(n) => n.to_string(),
                toml::Value::Float(x) => x.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => return Err(bad(format!("`{key}` = {other} is not a plain value"))),
            };
            Ok((id, value))
        })
        .collect()
}

/// A port number, or no port at all (`off`).
#[derive(Clone, Copy, Debug)]
struct PortOrOff(Option<u16>);

fn parse_port_or_off(text: &str) -> Result<PortOrOff, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(PortOrOff(None));
    }
    text.parse()
        .map(|port| PortOrOff(Some(port)))
        .map_err(|_| format!("`{text}` is neither a port number nor `off`"))
}

/// Parses `250ms`, `5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 100ms, 5s, 2m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "`{text}`: unknown unit `{unit}` (use ms, s, m or h)"
            ))
        }
    };
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests;
