//! A yield that lets the core's runtime park, so that io_uring work queued meanwhile reaches the
//! kernel while a long fan-out pass is still running.
//!
//! tokio-uring 0.5 hands queued operations (re-armed reads, `writev`s) to the kernel only in the
//! runtime's `on_thread_park` hook. A task that yields with `yield_now` is woken through tokio's
//! deferred list, which the scheduler serves with a non-blocking poll that skips that hook: a pass
//! that yields every few dozen sends lets each reader run once, but its next read then waits in the
//! submission queue until the pass ends. So a stop does two things:
//!
//! - it submits through the core's ring itself (`io_uring_enter`; tokio-uring does not expose the
//!   ring, so start-up finds its fd, see `server::startup::core_runtime`);
//! - it waits for an eventfd it has just made readable, rather than `yield_now`: with nothing else
//!   ready the scheduler then parks (the hook submits what the readers re-armed, epoll returns at
//!   once and the finished reads are reaped); when another core has just woken this one it polls
//!   epoll without parking, and the direct submission above is what keeps the reads moving.
//!
//! Measured on 10,000 clients with direct messages at 20,000/s (docs/BENCHMARKS.md): either half
//! alone left the worst direct message at ~80 ms (a whole pass); both together, 5-15 ms.
//! A stop costs four syscalls, against ~64 `sendmsg` between stops.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct ParkPoint {
    eventfd: AsyncFd<OwnedFd>,
    /// The core's ring, when it could be found: submitting through it directly does not depend
    /// on the scheduler choosing to park.
    ring: Option<RawFd>,
}

impl ParkPoint {
    /// Must be called inside the core's runtime, whose epoll it registers with.
    pub fn new(ring: Option<RawFd>) -> io::Result<ParkPoint> {
        // SAFETY: eventfd(2) takes no pointers; a non-negative result is a new fd that we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an `OwnedFd` keeps its descriptor open and unchanged for as long as it lives.
        let eventfd = unsafe { AsyncFd::register_with_interest(owned, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(ParkPoint { eventfd, ring })
    }

    /// Lets every other task of the core run, and the runtime park once (submitting what io_uring
    /// work is queued and reaping what completed), then returns.
    pub async fn pass(&self) {
        if let Some(ring) = self.ring {
            // SAFETY: io_uring_enter(2) on this thread's own ring, with no pointers: it submits
            // what tokio-uring queued (its queue tail is published on every push) and waits for
            // nothing. The kernel takes at most what is queued.
            unsafe {
                libc::syscall(
                    libc::SYS_io_uring_enter,
                    ring,
                    u32::MAX,
                    0u32,
                    0u32,
                    0usize,
                    0usize,
                )
            };
        }
        let fd = self.eventfd.as_raw_fd();
        // SAFETY: plain eventfd calls on a descriptor this struct owns.
        unsafe { libc::eventfd_write(fd, 1) };
        match self.eventfd.readable().await {
            Ok(mut ready) => {
                let mut count = 0;
                // SAFETY: as above; `count` is a valid out-pointer. Resets the counter to zero.
                unsafe { libc::eventfd_read(fd, &mut count) };
                ready.clear_ready();
            }
            // The runtime is shutting down: a plain yield still lets the others run.
            Err(_) => tokio::task::yield_now().await,
        }
    }
}
