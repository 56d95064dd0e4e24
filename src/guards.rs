//! Defences against clients that never log in, go silent, flood, or crowd in from one address.
//!
//! All of them are off the message path or cost a few arithmetic operations on it: the token bucket
//! is a `Cell` in the connection, the per-address count is locked at accept and close only, and one
//! sweeper task per core looks at every connection a few times per interval for the timeouts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::core::Core;
use crate::protocol::ErrorCode;

/// What the token bucket says about one inbound frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Over the rate: answer `RATE_LIMITED`, do not act on the frame.
    Limited,
    /// Kept flooding after being limited: disconnect.
    Disconnect,
}

/// A token bucket per connection: `rate` frames per second on average, `burst` at once. A client
/// that sends another whole burst while limited, without ever letting the bucket refill, is cut off.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    tokens: f32,
    last_ms: u64,
    strikes: u32,
}

impl TokenBucket {
    pub fn new(burst: u32, now_ms: u64) -> TokenBucket {
        TokenBucket {
            tokens: burst as f32,
            last_ms: now_ms,
            strikes: 0,
        }
    }

    pub fn take(&mut self, now_ms: u64, rate: u32, burst: u32) -> Verdict {
        if rate == 0 {
            return Verdict::Allowed;
        }
        let elapsed = now_ms.saturating_sub(self.last_ms) as f32 / 1000.0;
        self.last_ms = now_ms;
        self.tokens = (self.tokens + elapsed * rate as f32).min(burst as f32);
        if self.tokens >= burst as f32 {
            self.strikes = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allowed;
        }
        self.strikes += 1;
        if self.strikes > burst {
            Verdict::Disconnect
        } else {
            Verdict::Limited
        }
    }
}

/// Connections per client address, server-wide; only consulted when `--max-connections-per-ip` is set.
#[derive(Default)]
pub struct PerAddress {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

impl PerAddress {
    /// Counts one more connection from `ip` unless that would pass `cap`.
    pub fn try_acquire(&self, ip: IpAddr, cap: usize) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= cap {
            return false;
        }
        *count += 1;
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// The server's keepalive ping.
fn ping_frame() -> Bytes {
    Bytes::from_static(b"{\"type\":\"ping\",\"senderID\":\"server\",\"content\":\"\"}\n")
}

/// Closes connections that did not log in within `--login-timeout`, pings connections silent for
/// `--ping-interval`, and closes those still silent two intervals after the ping.
pub async fn run_sweeper(core: Rc<Core>) {
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
        let now = core.now_ms();
        for conn in core.connections_snapshot() {
            let silent = now.saturating_sub(conn.last_heard_ms());
            if !conn.is_logged_in() && now.saturating_sub(conn.accepted_ms()) >= login_timeout {
                conn.fail(
                    &core,
                    ErrorCode::LoginTimeout,
                    "log in within the login timeout",
                );
            } else if silent >= 3 * ping_interval {
                tracing::debug!(conn = conn.id, "no answer to ping: closing");
                conn.shutdown_now();
            } else if silent >= ping_interval && !conn.was_pinged() {
                conn.mark_pinged();
                conn.reply(&core, ping_frame());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_a_burst_then_the_rate_then_cuts_off_a_flooder() {
        let mut bucket = TokenBucket::new(3, 0);
        for _ in 0..3 {
            assert_eq!(bucket.take(0, 10, 3), Verdict::Allowed);
        }
        assert_eq!(bucket.take(0, 10, 3), Verdict::Limited);
        assert_eq!(
            bucket.take(100, 10, 3),
            Verdict::Allowed,
            "a token every 100 ms"
        );
        for _ in 0..2 {
            assert_eq!(bucket.take(100, 10, 3), Verdict::Limited);
        }
        assert_eq!(
            bucket.take(100, 10, 3),
            Verdict::Disconnect,
            "a whole burst while limited"
        );
        let mut patient = TokenBucket::new(3, 0);
        for _ in 0..3 {
            patient.take(0, 10, 3);
        }
        assert_eq!(patient.take(0, 10, 3), Verdict::Limited);
        assert_eq!(
            patient.take(1000, 10, 3),
            Verdict::Allowed,
            "backing off clears the strikes"
        );
        assert_eq!(
            TokenBucket::new(1, 0).take(0, 0, 1),
            Verdict::Allowed,
            "rate 0 is off"
        );
    }

    #[test]
    fn per_address_cap_counts_and_releases() {
        let ips = PerAddress::default();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(ips.try_acquire(ip, 2) && ips.try_acquire(ip, 2));
        assert!(!ips.try_acquire(ip, 2));
        ips.release(ip);
        assert!(ips.try_acquire(ip, 2));
    }
}
