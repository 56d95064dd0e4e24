//! Timeouts: connections that never log in, and connections that go silent.
//!
//! One sweeper task per core looks at every connection a few times per interval. A timer per
//! connection would cost a task each; the sweep costs one pass over the core's connections.

use std::rc::Rc;
use std::time::Duration;

use crate::chat::protocol::{self, ErrorCode};
use crate::net::counters::PerTransport;
use crate::net::outbound::OutFrame;
use crate::net::CloseReason;
use crate::server::core::Core;

/// Closes connections that did not log in within `--login-timeout`, pings connections silent for
/// `--ping-interval`, and closes those still silent two intervals after the ping.
pub async fn run(core: Rc<Core>) {
    let login_timeout = core.config.login_timeout.as_millis() as u64;
    let ping_interval = core.config.ping_interval.as_millis() as u64;
    let tick =
        Duration::from_millis(login_timeout.min(ping_interval) / 4).max(Duration::from_millis(10));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if !core.takes_input() {
            return;
        }
        let now = core.sockets.now_ms();
        let ping = OutFrame::new(protocol::ping());
        let mut pinged = PerTransport::<u64>::default();
        for conn in core.connections_snapshot() {
            let silent = now.saturating_sub(conn.last_heard_ms());
            if !conn.is_identified() && now.saturating_sub(conn.accepted_ms()) >= login_timeout {
                let reason = "log in within the login timeout";
                let frame = protocol::error(ErrorCode::LoginTimeout, reason);
                conn.finish(frame, CloseReason::LoginTimeout);
            } else if silent >= 3 * ping_interval {
                tracing::debug!(conn = conn.id, "no answer to ping: closing");
                conn.shutdown_now(CloseReason::PingTimeout);
            } else if silent >= ping_interval && !conn.was_pinged() {
                conn.mark_pinged();
                // A sweep pings thousands at once, like a fan-out: each waits for its turn.
                conn.ping(ping.clone());
                *pinged.get_mut(conn.transport()) += 1;
            }
        }
        core.sockets.count_sent(ping.as_bytes(), &pinged);
    }
}
