//! Who the run's connections are: each client's login, role, rooms, source address and target
//! (`--hosts` entry), decided before anything connects.

use crate::connect::Login;
use crate::mixed;
use crate::options::{Options, Pattern, Protocol};
use crate::redis;
use crate::report::HostReport;
use crate::rooms::{self, Rooms};
use crate::token;
use crate::worker::{ClientSpec, Role};
use std::net::SocketAddr;
use std::sync::Arc;

/// The connections phase 1 opens: the clients, plus the publishing connections Redis needs (a
/// subscribed RESP2 connection cannot PUBLISH). Churning clients are extra to these.
pub(crate) fn count(o: &Options) -> usize {
    o.clients + redis_publishers(o)
}

fn redis_publishers(o: &Options) -> usize {
    match o.protocol {
        Protocol::Redis => mixed::senders(o),
        Protocol::UringChat => 0,
    }
}

/// Every connection of phase 1, in index order. Client `i` goes to target `i mod n` and, with
/// `--source-ips`, binds to source `i mod m`; names carry `run_id` so runs never collide.
pub(crate) fn specs(o: &Options, run_id: &str, plan: Option<&Arc<Rooms>>) -> Vec<ClientSpec> {
    let senders = mixed::senders(o);
    let fast = o.clients - o.slow_count();
    let sources = o.source_ips.as_ref().map_or(&[][..], |s| &s.0[..]);
    let targets = o.targets().len();
    let source = |i: usize| (!sources.is_empty()).then(|| sources[i % sources.len()]);
    let mut specs = Vec::with_capacity(count(o));
    for i in 0..o.clients {
        let my_rooms = mixed::client_rooms(o, plan, i);
        let login = match o.protocol {
            Protocol::UringChat => {
                let name = format!("lg{run_id}-{i}");
                let token = (o.auth_jwt_secret.as_deref()).map(|s| token::mint(s, &name));
                Login::Chat { name, token }
            }
            Protocol::Redis => Login::Subscribe {
                channels: match o.pattern {
                    _ if o.rooms > 0 => my_rooms.iter().map(|&r| rooms::name(r)).collect(),
                    Pattern::Broadcast => vec![redis::broadcast_channel(run_id)],
                    Pattern::Direct => vec![redis::client_channel(run_id, i)],
                    // Its own channel first: the login's id names the direct recipient.
                    Pattern::Mixed => mixed::redis_channels(o, run_id, i),
                },
            },
        };
        specs.push(ClientSpec {
            idx: i,
            role: if i >= fast {
                Role::Slow
            } else {
                Role::Receiver
            },
            login,
            source: source(i),
            host: i % targets,
            sends: o.protocol == Protocol::UringChat && i < senders,
            rooms: my_rooms,
        });
    }
    for i in o.clients..count(o) {
        specs.push(ClientSpec {
            idx: i,
            role: Role::Publisher,
            login: Login::None,
            source: source(i),
            host: i % targets,
            sends: true,
            rooms: Vec::new(),
        });
    }
    specs
}

/// Each target's entry of the report, with its clients counted (logins and deliveries come later).
pub(crate) fn hosts(targets: &[SocketAddr], specs: &[ClientSpec]) -> Vec<HostReport> {
    let mut hosts: Vec<HostReport> = (targets.iter())
        .map(|t| HostReport {
            target: t.to_string(),
            ..Default::default()
        })
        .collect();
    for s in specs {
        hosts[s.host].clients += 1;
    }
    hosts
}
