//! loadgen: the measuring instrument of uring-chat.
//!
//! Open-loop fan-out load: N clients log in, S senders publish at a fixed total rate, every client
//! measures each delivery from the message's *intended* send time into per-thread HDR histograms.
//! `run` is the whole measurement so tests drive it in-process; `main.rs` only parses and prints.
//! See docs/LOADGEN.md for the flags, the phases and the report's fields.

pub mod churn;
mod clients;
pub mod clock;
pub mod connect;
pub mod framing;
pub mod limits;
pub mod mixed;
pub mod options;
pub mod plot;
pub mod progress;
pub mod publish;
pub mod receive;
pub mod redis;
pub mod report;
pub mod room_order;
pub mod room_wire;
pub mod rooms;
mod run;
pub mod stamp;
pub mod stats;
pub mod stream;
mod summary;
pub mod tls;
pub mod token;
pub mod worker;
pub mod ws;
pub mod ws_upgrade;

pub use options::{Cli, Command, Options, Pattern, PlotOptions, Protocol, Transport};
pub use report::Report;
pub use run::run;

/// Why a run produced no result.
#[derive(Debug)]
pub enum Error {
    /// A machine limit stops this run (open files, ephemeral ports, kernel memory).
    Limit(String),
    /// The options cannot work together.
    Config(String),
    /// The target misbehaved or refused what the run needs (e.g. a sender could not log in).
    Target(String),
    /// Local I/O failure (threads, files).
    Io(std::io::Error),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Limit(m) => write!(f, "machine limit reached, no result: {m}"),
            Error::Config(m) => write!(f, "bad options: {m}"),
            Error::Target(m) => write!(f, "target: {m}"),
            Error::Io(e) => write!(f, "i/o: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}
