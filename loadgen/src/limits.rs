//! The machine's limits, checked up front so a run that cannot be done says which limit stops it
//! instead of reporting a partial result; and the CPU clocks used to charge CPU per delivery.

use crate::Error;
use std::io;

/// Raises the open-file soft limit to the hard limit; returns the soft limit now in force.
pub fn raise_nofile() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(io::Error::last_os_error());
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
    }
    Ok(lim.rlim_cur)
}

/// File descriptors kept for everything but client sockets (runtime, stdio, an in-process server).
pub const FD_RESERVE: u64 = 64;

/// Fails when `connections` sockets cannot fit under the open-file limit `nofile`.
pub fn check_fds(connections: u64, nofile: u64) -> Result<(), Error> {
    if connections + FD_RESERVE > nofile {
        return Err(Error::Limit(format!(
            "open-file limit (RLIMIT_NOFILE): {connections} connections need about {} descriptors, \
             the limit is {nofile} (raised to the hard limit already); run fewer clients or raise the \
             hard limit (ulimit -Hn)",
            connections + FD_RESERVE
        )));
    }
    Ok(())
}

/// The local ephemeral port range (net.ipv4.ip_local_port_range).
pub fn ephemeral_ports() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<u32>());
            Some((it.next()?.ok()?, it.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

/// Fails when `connections` to one destination cannot get ephemeral ports from `sources` addresses.
pub fn check_ports(connections: u64, sources: usize) -> Result<(), Error> {
    let (lo, hi) = ephemeral_ports();
    let per_source = (hi.saturating_sub(lo) + 1) as u64;
    let sources = sources.max(1) as u64;
    let need = connections.div_ceil(sources);
    if need > per_source {
        return Err(Error::Limit(format!(
            "ephemeral ports (net.ipv4.ip_local_port_range {lo}-{hi}): {connections} connections to one \
             address need {need} ports per source address, only {per_source} exist; spread them with \
             --source-ips 127.0.0.2-127.0.0.{}",
            1 + connections.div_ceil(per_source).max(2)
        )));
    }
    Ok(())
}

/// The most of `connections`, spread round robin over `targets` (an address may repeat), that
/// go to one destination: what its ephemeral ports must cover.
pub fn most_to_one(connections: u64, targets: &[std::net::SocketAddr]) -> u64 {
    let n = targets.len().max(1) as u64;
    (0..n)
        .map(|i| {
            let share = |j: u64| connections / n + u64::from(j < connections % n);
            (0..n)
                .filter(|&j| targets[j as usize] == targets[i as usize])
                .map(share)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(connections)
}

/// Names the machine limit behind a socket error, if it is one: such an error aborts the run.
pub fn limit_error(e: &io::Error) -> Option<String> {
    match e.raw_os_error()? {
        libc::EMFILE => Some("EMFILE: the process open-file limit (RLIMIT_NOFILE) is reached".into()),
        libc::ENFILE => Some("ENFILE: the system-wide open-file limit (fs.file-max) is reached".into()),
        libc::EADDRNOTAVAIL => Some(
            "EADDRNOTAVAIL: no ephemeral port left (net.ipv4.ip_local_port_range); use --source-ips"
                .into(),
        ),
        libc::ENOBUFS | libc::ENOMEM => Some(format!("{e}: kernel memory for sockets is exhausted")),
        _ => None,
    }
}

/// The CPU clock of the calling thread, readable from any thread while this one lives.
pub fn current_thread_clock() -> libc::clockid_t {
    let mut id: libc::clockid_t = 0;
    // SAFETY: pthread_self is always valid for the calling thread.
    let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut id) };
    if rc != 0 {
        libc::CLOCK_THREAD_CPUTIME_ID
    } else {
        id
    }
}

/// Reads a CPU clock in nanoseconds.
pub fn clock_ns(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes into a local timespec.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A process's CPU time (utime + stime from /proc/PID/stat), nanoseconds. Resolution is one clock
/// tick (usually 10 ms), so measure windows of seconds.
pub fn proc_cpu_ns(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&stat)
        .map(|ticks| ticks * 1_000_000_000 / clock_ticks())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc/PID/stat"))
}

/// utime + stime in clock ticks from the text of /proc/PID/stat (the command name may hold spaces
/// and parentheses, so fields are counted after the last `)`).
pub fn parse_proc_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the full line; utime is 14 and stime 15, i.e. 11 and 12 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no side effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}
