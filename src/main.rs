//! The `uring-chat` binary: read the settings, set up logging, run the server; or, as
//! `uring-chat token ...`, print a login token.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;
use uring_chat::auth::mint::{self, TokenArgs};
use uring_chat::config::{Config, LogFormat};

/// jemalloc instead of glibc malloc. Every delivery allocates and frees a few small objects (the
/// frame, its write future) on one core and sometimes frees them on another; glibc spent ~12 % of
/// server CPU in its slow paths (bin consolidation) on the direct-message path. jemalloc's thread
/// caches cut server CPU per delivery by ~6 % and the p99 near saturation by 4-5x, while keeping an
/// idle connection under 2 KiB (mimalloc was as fast but cost 2.8 KiB). See docs/BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == "token")
    {
        let args = TokenArgs::parse_from(std::env::args_os().skip(1));
        return match mint::token(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("{message}");
                ExitCode::from(2)
            }
        };
    }
    let config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(error) => error.exit(),
    };
    init_logging(&config);
    match uring_chat::server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("uring-chat: {message}");
            ExitCode::from(1)
        }
    }
}

/// Logs to stderr; RUST_LOG, when set, overrides `--log-level`.
fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
