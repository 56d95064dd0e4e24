//! Start-up checks and resources: io_uring availability, the open-file limit, listeners, CPU pinning.
//!
//! Every failure here is turned into a message that says what is wrong and what to do, for `main` to
//! print before exiting with code 1. Nothing here panics.

use std::collections::HashSet;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::RawFd;
use std::sync::Mutex;

use socket2::{Domain, Protocol, Socket, Type};

/// File descriptors kept back from the connection budget: rings, listeners, eventfds, logs.
pub const RESERVED_FDS: u64 = 64;

/// Builds and drops a tiny ring, turning the usual refusals into advice. On a thread of its own:
/// the kernel tears a ring down later, in a worker that interrupts the thread that made it (task
/// work sent like a signal), and a blocking socket read with a timeout on that thread then fails
/// with EINTR. The caller (main, or a test that then reads its sockets) must not be that thread.
pub fn check_io_uring() -> Result<(), String> {
    let probe = std::thread::spawn(|| tokio_uring::uring_builder().build(8).map(drop));
    match probe.join().expect("building a ring does not panic") {
        Ok(()) => Ok(()),
        Err(error) => Err(explain_io_uring_error(&error)),
    }
}

/// The advice for an error from io_uring_setup(2).
pub fn explain_io_uring_error(error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EPERM) => {
            let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|_| "absent (kernel before 6.6)".into());
            format!(
                "io_uring is not permitted here (io_uring_setup: EPERM). Two things cause this:\n\
                 - a container seccomp profile: Docker 25 and later block io_uring by default. Run with \
                 `--security-opt seccomp=deploy/seccomp-io_uring.json` (shipped with uring-chat), \
                 `--security-opt seccomp=unconfined`, or `--privileged`.\n\
                 - the kernel setting kernel.io_uring_disabled, which is {disabled} on this host \
                 (0 allows io_uring, 1 allows it only for CAP_SYS_ADMIN or kernel.io_uring_group, 2 forbids it): \
                 `sysctl kernel.io_uring_disabled=0`."
            )
        }
        Some(libc::ENOSYS) => {
            "this kernel has no io_uring (io_uring_setup: ENOSYS): uring-chat needs \
             Linux 5.11 or later (5.15 or 6.1 LTS recommended)"
                .into()
        }
        Some(libc::ENOMEM) => {
            "io_uring could not allocate its rings (ENOMEM): raise the locked-memory \
             limit (`ulimit -l`) or lower --ring-entries"
                .into()
        }
        _ => format!("io_uring could not start: {error}"),
    }
}

/// Held while a core builds its runtime, so that the one new io_uring fd is that core's ring.
static RING_SETUP: Mutex<()> = Mutex::new(());

/// Builds a core's tokio-uring runtime, and finds the fd of its ring: tokio-uring 0.5 does not
/// expose it, and the writer submits through it in the middle of a fan-out pass
/// ([`crate::net::park`]). `None` when it cannot be told apart (the writer then only yields).
pub fn core_runtime(
    builder: &tokio_uring::Builder,
) -> Result<(tokio_uring::Runtime, Option<RawFd>), String> {
    let _alone = RING_SETUP
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = io_uring_fds();
    let runtime = tokio_uring::Runtime::new(builder).map_err(|e| explain_io_uring_error(&e))?;
    let created: Vec<RawFd> = io_uring_fds().difference(&before).copied().collect();
    let ring = match created[..] {
        [fd] => Some(fd),
        _ => None,
    };
    Ok((runtime, ring))
}

/// The process's open io_uring fds.
fn io_uring_fds() -> HashSet<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return HashSet::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read_link(entry.path())
                .is_ok_and(|target| target.as_os_str() == "anon_inode:[io_uring]")
        })
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect()
}

/// Raises the open-file soft limit to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write and read only the struct passed in.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit.rlim_cur = raised.rlim_cur;
            }
        }
    }
    limit.rlim_cur
}

/// Resolves `host:port` to the first address it names.
pub fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve --host {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("--host {host} resolves to no address"))
}

/// One `SO_REUSEPORT` listener per core, all on the same port (chosen by the first when `port` is 0).
///
/// `SO_REUSEPORT` would let this process silently share a port with a live server and take half of
/// its connections. So a fixed port is first probed with a plain bind, which fails when anybody
/// listens there, and the server refuses to start.
pub fn bind_listeners(
    addr: SocketAddr,
    cores: usize,
    backlog: u32,
) -> Result<Vec<TcpListener>, String> {
    if addr.port() != 0 {
        probe_free(addr)?;
    }
    let mut listeners = Vec::with_capacity(cores);
    let mut bound = addr;
    for _ in 0..cores {
        let listener = reuseport_listener(bound, backlog).map_err(|e| bind_error(bound, &e))?;
        bound = listener.local_addr().map_err(|e| bind_error(bound, &e))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn probe_free(addr: SocketAddr) -> Result<(), String> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| bind_error(addr, &e))?;
    probe
        .set_reuse_address(true)
        .map_err(|e| bind_error(addr, &e))?;
    probe.bind(&addr.into()).map_err(|e| bind_error(addr, &e))
}

fn reuseport_listener(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

fn bind_error(addr: SocketAddr, error: &io::Error) -> String {
    match error.raw_os_error() {
        Some(libc::EADDRINUSE) => format!(
            "port {} is already in use on {}: another server (perhaps another uring-chat) holds it. \
             Stop it, or choose another --port.",
            addr.port(),
            addr.ip()
        ),
        Some(libc::EACCES) => format!("not allowed to listen on {addr}: ports below 1024 need privileges"),
        Some(libc::EADDRNOTAVAIL) => format!("{} is not an address of this host (--host)", addr.ip()),
        _ => format!("cannot listen on {addr}: {error}"),
    }
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Pins the calling thread to `cpu`.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    // SAFETY: as above; sched_setaffinity reads the set for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_port_is_refused_even_with_reuseport() {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let first = bind_listeners(addr, 2, 16).unwrap();
        let taken = first[0].local_addr().unwrap();
        assert_eq!(
            first[1].local_addr().unwrap(),
            taken,
            "all cores share the port"
        );
        let err = bind_listeners(taken, 1, 16).unwrap_err();
        assert!(err.contains("already in use"), "{err}");
    }

    #[test]
    fn io_uring_errors_give_advice() {
        let eperm = explain_io_uring_error(&io::Error::from_raw_os_error(libc::EPERM));
        assert!(
            eperm.contains("seccomp")
                && eperm.contains("--privileged")
                && eperm.contains("io_uring_disabled")
        );
        let enosys = explain_io_uring_error(&io::Error::from_raw_os_error(libc::ENOSYS));
        assert!(enosys.contains("5.11"));
    }
}
