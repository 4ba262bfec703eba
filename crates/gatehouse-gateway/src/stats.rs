//! Counters of the gateway, rendered in the Prometheus text format at `/metrics`.
//!
//! Plain relaxed atomics: incrementing one costs a few nanoseconds and takes no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter the gateway keeps.
#[derive(Default)]
pub(crate) struct Stats {
    pub connections_opened: AtomicU64,
    pub connections_rejected: AtomicU64,
    pub messages_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub slow_consumers_closed: AtomicU64,
    pub oversized_closed: AtomicU64,
    pub ping_timeouts: AtomicU64,
    pub events_redelivered: AtomicU64,
    pub commands: AtomicU64,
    /// gRPC messages received on links (from workers and API clients).
    pub link_messages_in: AtomicU64,
    /// Acks plus commands those messages carried: divided by `link_messages_in`, the batching
    /// factor of the peers' side of the links, which shows whether HTTP/2 framing is amortised.
    pub link_items_in: AtomicU64,
    /// gRPC messages sent on links.
    pub link_messages_out: AtomicU64,
    /// Events plus replies those messages carried (the gateway side's batching factor).
    pub link_items_out: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Renders the counters plus the given gauges.
    pub(crate) fn render(&self, gauges: &[(&str, &str, u64)]) -> String {
        let counters: [(&str, &str, &AtomicU64); 13] = [
            (
                "gatehouse_gateway_connections_opened_total",
                "websocket connections accepted",
                &self.connections_opened,
            ),
            (
                "gatehouse_gateway_connections_rejected_total",
                "handshakes refused by a worker or for lack of one",
                &self.connections_rejected,
            ),
            (
                "gatehouse_gateway_messages_in_total",
                "client frames forwarded to workers",
                &self.messages_in,
            ),
            (
                "gatehouse_gateway_frames_out_total",
                "frames queued to clients",
                &self.frames_out,
            ),
            (
                "gatehouse_gateway_slow_consumers_closed_total",
                "clients closed with 1013 because their send queue was full",
                &self.slow_consumers_closed,
            ),
            (
                "gatehouse_gateway_oversized_closed_total",
                "clients closed with 1009 for an oversized message",
                &self.oversized_closed,
            ),
            (
                "gatehouse_gateway_ping_timeouts_total",
                "clients dropped for not answering pings",
                &self.ping_timeouts,
            ),
            (
                "gatehouse_gateway_events_redelivered_total",
                "events re-sent to another worker after a worker left",
                &self.events_redelivered,
            ),
            (
                "gatehouse_gateway_commands_total",
                "worker commands executed",
                &self.commands,
            ),
            (
                "gatehouse_gateway_link_messages_in_total",
                "grpc messages received on worker and api client links",
                &self.link_messages_in,
            ),
            (
                "gatehouse_gateway_link_items_in_total",
                "acknowledgements and commands those messages carried",
                &self.link_items_in,
            ),
            (
                "gatehouse_gateway_link_messages_out_total",
                "grpc messages sent on worker and api client links",
                &self.link_messages_out,
            ),
            (
                "gatehouse_gateway_link_items_out_total",
                "events and replies those messages carried",
                &self.link_items_out,
            ),
        ];
        let mut out = String::new();
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        out
    }
}
