//! The `/metrics` answer: every core's counters, read and merged at scrape time, written in the
//! Prometheus text format (version 0.0.4) by prometheus-client.
//!
//! prometheus-client's own metric types are shared atomics that every core would update; here its
//! [`Collector`] reads the per-core counters instead, and its encoder writes the format. Its text
//! encoder, not its OpenMetrics one: promtool 2.42 (Debian's) rejects OpenMetrics counters for
//! lacking help, since their HELP names `foo` and their sample `foo_total`.
//!
//! Series with a fixed set of labels are always written, zeros included; frames by kind only for
//! the kinds seen, since most pairs of transport and kind never occur.

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{CoreMetrics, REFUSALS};
use crate::chat::counters::{ByKind, KINDS};
use crate::chat::protocol::ErrorCode;
use crate::cluster::{self, ClusterCounters};
use crate::net::counters::{Counter, PerTransport, PASS_BUCKETS, TRANSPORTS};
use crate::net::CloseReason;

/// The `Content-Type` of the answer.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What answers `/metrics`: one per server, shared by the cores.
#[derive(Debug)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// `cluster`: the bridge's counters, on a node of a cluster.
    pub fn new(cores: Vec<Arc<CoreMetrics>>, cluster: Option<Arc<cluster::Shared>>) -> Exposition {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Cores(cores)));
        if let Some(cluster) = cluster {
            registry.register_collector(Box::new(Cluster(cluster)));
        }
        Exposition { registry }
    }

    /// The text a scrape gets.
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[derive(Debug)]
struct Cores(Vec<Arc<CoreMetrics>>);

/// The cluster bridge's counters and whether NATS is reachable (docs/CLUSTER.md).
#[derive(Debug)]
struct Cluster(Arc<cluster::Shared>);

/// The bridge's counters: name, help, what to read.
/// Reads one of the bridge's counters.
type ReadCluster = fn(&ClusterCounters) -> u64;

const CLUSTER_COUNTERS: [(&str, &str, ReadCluster); 9] = [
    (
        "uring_chat_cluster_published",
        "Messages this node published to the other nodes (a broadcast counts once).",
        |c| c.published.get(),
    ),
    (
        "uring_chat_cluster_received",
        "Messages from other nodes handed to this node's cores.",
        |c| c.received.get(),
    ),
    (
        "uring_chat_cluster_room_received",
        "Messages that arrived on the subjects of rooms this node has members of.",
        |c| c.room_received.get(),
    ),
    (
        "uring_chat_cluster_rooms_moved",
        "Rooms of a dead owner node that this node gave a new owner.",
        |c| c.rooms_moved.get(),
    ),
    (
        "uring_chat_cluster_duplicates_dropped",
        "Messages from other nodes dropped because they had arrived before.",
        |c| c.duplicates.get(),
    ),
    (
        "uring_chat_cluster_unavailable",
        "Sends to other nodes refused because NATS could not be reached (CLUSTER_UNAVAILABLE).",
        |c| c.refused.get(),
    ),
    (
        "uring_chat_cluster_queue_full",
        "Sends refused because the bridge's queue was full.",
        |c| c.queue_full.get(),
    ),
    (
        "uring_chat_cluster_slow_consumer_events",
        "Times the NATS client reported this node falling behind a subscription.",
        |c| c.slow_consumer.get(),
    ),
    (
        "uring_chat_cluster_dead_nodes",
        "Other nodes this node saw miss their heartbeats.",
        |c| c.dead_nodes.get(),
    ),
];

impl Collector for Cluster {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Written {
        let connected = i64::from(self.0.is_connected());
        let help = "1 while this node reaches NATS and its names bucket, else 0.";
        metric(
            &mut encoder,
            "uring_chat_cluster_connected",
            help,
            MetricType::Gauge,
            |m| m.encode_gauge(&connected),
        )?;
        let subscriptions = self.0.counters.room_subscriptions.get() as i64;
        let help = "Room subjects this node subscribes to: rooms with members on this node.";
        metric(
            &mut encoder,
            "uring_chat_cluster_room_subscriptions",
            help,
            MetricType::Gauge,
            |m| m.encode_gauge(&subscriptions),
        )?;
        for (name, help, read) in CLUSTER_COUNTERS {
            let total = read(&self.0.counters);
            metric(&mut encoder, name, help, MetricType::Counter, |m| {
                m.encode_counter::<NoLabelSet, _, u64>(&total, None)
            })?;
        }
        Ok(())
    }
}

type Written = Result<(), std::fmt::Error>;
/// Reads one number of a core.
type Read = fn(&CoreMetrics) -> u64;
type ReadLevel = fn(&CoreMetrics) -> i64;

/// Counters without labels: name, help, what to read.
const COUNTERS: [(&str, &str, Read); 4] = [
    (
        "uring_chat_connections_accepted",
        "Chat connections accepted, refused ones included.",
        |core| core.accepted.get(),
    ),
    (
        "uring_chat_slow_consumer_disconnects",
        "Clients cut off for owing more than --max-outbound-bytes.",
        |core| core.closed[SLOW_CONSUMER].get(),
    ),
    (
        "uring_chat_rate_limited_frames",
        "Frames refused by flood control (--rate-limit).",
        |core| core.net.rate_limited.get(),
    ),
    (
        "uring_chat_cross_core_messages",
        "Messages (and drain signals) one core handed to another.",
        |core| core.cross_core.get(),
    ),
];

/// Gauges summed over the cores.
const GAUGES: [(&str, &str, ReadLevel); 4] = [
    (
        "uring_chat_outbound_queued_bytes",
        "Bytes owed to clients: queued or being written.",
        |core| core.net.outbound_queued.get(),
    ),
    ("uring_chat_rooms", "Rooms that exist.", |core| {
        core.chat.rooms.get()
    }),
    (
        "uring_chat_room_memberships",
        "Room memberships, over all rooms.",
        |core| core.chat.memberships.get(),
    ),
    (
        "uring_chat_history_bytes",
        "Bytes the rooms' histories hold.",
        |core| core.chat.history_bytes.get(),
    ),
];

/// Where slow consumers are in [`CloseReason::ALL`].
const SLOW_CONSUMER: usize = 5;

impl Collector for Cores {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Written {
        let build = [("version", env!("CARGO_PKG_VERSION"))];
        let info = MetricType::Info;
        metric(
            &mut encoder,
            "uring_chat_build",
            "The running build.",
            info,
            |m| m.encode_info(&build),
        )?;
        self.connections(&mut encoder)?;
        for (name, help, read) in COUNTERS {
            let total = self.sum(read);
            metric(&mut encoder, name, help, MetricType::Counter, |m| {
                m.encode_counter::<NoLabelSet, _, u64>(&total, None)
            })?;
        }
        for (name, help, read) in GAUGES {
            let level: i64 = self.0.iter().map(|core| read(core)).sum();
            metric(&mut encoder, name, help, MetricType::Gauge, |m| {
                m.encode_gauge(&level)
            })?;
        }
        let received = "Frames received";
        self.frames(&mut encoder, "received", received, |c| &c.chat.received)?;
        self.frames(&mut encoder, "sent", "Frames queued to clients", |c| {
            &c.chat.sent
        })?;
        self.bytes(&mut encoder, "received", |c| &c.net.bytes_in)?;
        self.bytes(&mut encoder, "sent", |c| &c.net.bytes_out)?;
        self.short_writes(&mut encoder)?;
        let help = "Error frames sent to clients, by code.";
        metric(
            &mut encoder,
            "uring_chat_protocol_errors",
            help,
            MetricType::Counter,
            |m| {
                for (i, code) in ErrorCode::ALL.iter().enumerate() {
                    let total = self.sum(|core| core.chat.errors[i].get());
                    count(m, &[("code", code.as_str())], total)?;
                }
                Ok(())
            },
        )?;
        self.pass_histogram(&mut encoder)
    }
}

impl Cores {
    fn sum(&self, read: impl Fn(&CoreMetrics) -> u64) -> u64 {
        self.0.iter().map(|core| read(core)).sum()
    }

    /// Connections open (by core: SO_REUSEPORT's spread is worth seeing), refused and closed.
    fn connections(&self, encoder: &mut DescriptorEncoder) -> Written {
        let help = "Chat connections open, by transport and core.";
        metric(
            encoder,
            "uring_chat_connections",
            help,
            MetricType::Gauge,
            |m| {
                for core in &self.0 {
                    let id = core.core.to_string();
                    for (transport, gauge) in core.open.iter() {
                        let labels = [("transport", transport.label()), ("core", id.as_str())];
                        m.encode_family(&labels)?.encode_gauge(&gauge.get())?;
                    }
                }
                Ok(())
            },
        )?;
        let name = "uring_chat_connections_rejected";
        let help = "Chat connections refused at accept, by reason.";
        metric(encoder, name, help, MetricType::Counter, |m| {
            for (i, reason) in REFUSALS.iter().enumerate() {
                let total = self.sum(|core| core.rejected[i].get());
                count(m, &[("reason", *reason)], total)?;
            }
            Ok(())
        })?;
        let name = "uring_chat_connections_closed";
        let help = "Connections that ended, by reason (the HTTP ports' count only TLS failures).";
        metric(encoder, name, help, MetricType::Counter, |m| {
            for (i, reason) in CloseReason::ALL.iter().enumerate() {
                if *reason != CloseReason::Refused {
                    let total = self.sum(|core| core.closed[i].get());
                    count(m, &[("reason", reason.label())], total)?;
                }
            }
            Ok(())
        })
    }

    fn frames(
        &self,
        encoder: &mut DescriptorEncoder,
        direction: &str,
        help: &str,
        family: impl Fn(&CoreMetrics) -> &ByKind,
    ) -> Written {
        let name = format!("uring_chat_frames_{direction}");
        let help = format!("{help}, by transport and kind (the frame's type).");
        metric(encoder, &name, &help, MetricType::Counter, |m| {
            for transport in TRANSPORTS {
                for (i, kind) in KINDS.iter().enumerate() {
                    let total = self.sum(|core| family(core).get(transport)[i].get());
                    if total > 0 {
                        count(
                            m,
                            &[("transport", transport.label()), ("kind", kind)],
                            total,
                        )?;
                    }
                }
            }
            Ok(())
        })
    }

    fn bytes(
        &self,
        encoder: &mut DescriptorEncoder,
        direction: &str,
        family: impl Fn(&CoreMetrics) -> &PerTransport<Counter>,
    ) -> Written {
        let name = format!("uring_chat_bytes_{direction}");
        let help = format!("Bytes {direction} on chat connections, by transport.");
        metric(encoder, &name, &help, MetricType::Counter, |m| {
            for transport in TRANSPORTS {
                let total = self.sum(|core| family(core).get(transport).get());
                count(m, &[("transport", transport.label())], total)?;
            }
            Ok(())
        })
    }

    fn short_writes(&self, encoder: &mut DescriptorEncoder) -> Written {
        let name = "uring_chat_short_writes";
        let help =
            "Writes to chat connections that sent part of what they offered (the socket was \
            full); the rest goes first next time, over TLS the sealed record's tail as it was. By \
            whether the connection is TLS.";
        metric(encoder, name, help, MetricType::Counter, |m| {
            for tls in [false, true] {
                let total = self.sum(|core| core.net.short_writes(tls));
                count(m, &[("tls", if tls { "true" } else { "false" })], total)?;
            }
            Ok(())
        })
    }

    fn pass_histogram(&self, encoder: &mut DescriptorEncoder) -> Written {
        let mut counts = [0u64; PASS_BUCKETS.len() + 1];
        let mut sum = 0.0;
        for core in &self.0 {
            let (core_counts, core_sum) = core.net.fan_out_passes.snapshot();
            for (total, count) in counts.iter_mut().zip(core_counts) {
                *total += count;
            }
            sum += core_sum;
        }
        let bounds = PASS_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(counts).collect();
        let name = "uring_chat_fan_out_pass_duration_seconds";
        let help = "How long the writer's fan-out passes took (turns reaching --inline-send-min connections).";
        metric(encoder, name, help, MetricType::Histogram, |m| {
            m.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
        })
    }
}

/// Writes one metric's HELP and TYPE lines, then its samples.
fn metric(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric_type: MetricType,
    samples: impl FnOnce(&mut MetricEncoder) -> Written,
) -> Written {
    samples(&mut encoder.encode_descriptor(name, help, None, metric_type)?)
}

/// One labelled sample of a counter.
fn count(metric: &mut MetricEncoder, labels: &impl EncodeLabelSet, value: u64) -> Written {
    metric
        .encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::counters::FrameTally;
    use crate::net::Transport;

    #[test]
    fn merges_the_cores_and_names_every_metric() {
        let cores = [CoreMetrics::new(0), CoreMetrics::new(1)];
        cores[0].accepted(Transport::Tcp, None);
        cores[1].accepted(Transport::Tcp, None);
        cores[1].closed(Transport::Tcp, CloseReason::SlowConsumer);
        cores[0]
            .chat
            .sent(Transport::Tcp, b"{\"type\":\"chat\"}", 5);
        cores[1]
            .chat
            .sent(Transport::Tcp, b"{\"type\":\"chat\"}", 2);
        cores[0].net.short_write(true);
        cores[1].net.short_write(true);
        assert_eq!(CloseReason::ALL[SLOW_CONSUMER], CloseReason::SlowConsumer);
        let text = Exposition::new(cores.to_vec(), None).encode();
        for line in [
            "uring_chat_build_info{version=\"",
            "uring_chat_connections{transport=\"tcp\",core=\"0\"} 1\n",
            "uring_chat_connections{transport=\"tcp\",core=\"1\"} 0\n",
            "uring_chat_connections_accepted_total 2\n",
            "uring_chat_connections_closed_total{reason=\"slow_consumer\"} 1\n",
            "uring_chat_slow_consumer_disconnects_total 1\n",
            "uring_chat_frames_sent_total{transport=\"tcp\",kind=\"chat\"} 7\n",
            "uring_chat_fan_out_pass_duration_seconds_bucket{le=\"+Inf\"} 0\n",
            "uring_chat_short_writes_total{tls=\"false\"} 0\n",
            "uring_chat_short_writes_total{tls=\"true\"} 2\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
