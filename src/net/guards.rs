//! Per-connection defences: flood control, and the caps on connections server-wide and per address.
//!
//! Both are off the message path or cost a few arithmetic operations on it: the token bucket is a
//! `Cell` in the connection, and the counts are touched at accept and close only. (The timeouts,
//! login and keepalive, are swept by the server layer, which knows what logging in means.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// Server-wide connection counts, for `--max-connections` and `--max-connections-per-ip`.
pub struct Admission {
    open: AtomicUsize,
    max_connections: usize,
    /// Connections per client address; 0 is no cap.
    per_ip_cap: usize,
    per_address: PerAddress,
}

/// Why a new connection may not stay.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The server holds `--max-connections`.
    Full(usize),
    /// The peer's address holds `--max-connections-per-ip`.
    AddressFull(usize),
}

impl Admission {
    pub fn new(max_connections: usize, per_ip_cap: usize) -> Admission {
        Admission {
            open: AtomicUsize::new(0),
            max_connections,
            per_ip_cap,
            per_address: PerAddress::default(),
        }
    }

    /// Counts a new connection from `ip`, and says whether it may stay. It is counted either way,
    /// so a refused one still gets its error frame; [`Admission::release`] with the returned
    /// address (set when the per-address count was taken) undoes it when the connection is dropped.
    pub fn admit(&self, ip: IpAddr) -> (Option<IpAddr>, Result<(), Refusal>) {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let counted = self.per_ip_cap == 0 || self.per_address.try_acquire(ip, self.per_ip_cap);
        let counted_ip = (self.per_ip_cap > 0 && counted).then_some(ip);
        let verdict = if open > self.max_connections {
            Err(Refusal::Full(self.max_connections))
        } else if !counted {
            Err(Refusal::AddressFull(self.per_ip_cap))
        } else {
            Ok(())
        };
        (counted_ip, verdict)
    }

    pub fn release(&self, counted_ip: Option<IpAddr>) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = counted_ip {
            self.per_address.release(ip);
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
