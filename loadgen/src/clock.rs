//! One monotonic clock shared by every thread, and the open-loop send schedule.
//!
//! Stamps carry nanoseconds since `Clock::base`, so a receiver on any thread subtracts two readings
//! of the same clock (CLOCK_MONOTONIC through `Instant`): no wall-clock steps, no cross-host skew.

use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            base: Instant::now(),
        }
    }

    /// Nanoseconds since the clock was made.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    /// The `Instant` at `ns` on this clock.
    pub fn instant(&self, ns: u64) -> Instant {
        self.base + Duration::from_nanos(ns)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The fixed-rate schedule of one round: message `g` (a global number over all senders) is due at
/// `start_ns + (g - first) / rate`, whatever happened to the messages before it. This is what makes
/// the load open-loop: a stalled send does not push later messages back, and each message's latency
/// is measured from when it was due (coordinated-omission correction as in wrk2 and oha).
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start_ns: u64,
    pub rate: f64,
    /// The first message number of the round.
    pub first: u64,
    /// One past the last message number of the round.
    pub end: u64,
}

impl Schedule {
    /// When message `g` is due.
    #[inline]
    pub fn intended(&self, g: u64) -> u64 {
        let k = g.saturating_sub(self.first) as f64;
        self.start_ns + (k * 1e9 / self.rate).round() as u64
    }

    /// One past the last message due at `now_ns` (at most `end`), starting the search at `from`.
    pub fn due_until(&self, from: u64, now_ns: u64) -> u64 {
        let mut g = from;
        while g < self.end && self.intended(g) <= now_ns {
            g += 1;
        }
        g
    }

    /// How many messages `duration` holds at this rate (rounded to the nearest message).
    pub fn count_for(rate: f64, duration: Duration) -> u64 {
        (rate * duration.as_secs_f64()).round() as u64
    }
}

/// A tiny xorshift64* generator: direct-message recipients need speed and spread, not crypto.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0), by multiply-shift.
    pub fn below(&mut self, n: usize) -> usize {
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }
}
