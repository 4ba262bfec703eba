//! Counters of the gateway, exported through the metrics recorder at the admin listener's
//! `/metrics`.
//!
//! Plain relaxed atomics: incrementing one costs a few nanoseconds and takes no lock; a scrape
//! copies them into the recorder. Every limit of `docs/security.md` has a counter here, so an
//! operator sees what is being refused.

gatehouse_core::counters! {
    /// Every counter the gateway keeps.
    pub(crate) struct Stats {
        connections_opened => "gatehouse_gateway_connections_opened_total", "websocket connections accepted";
        connections_rejected => "gatehouse_gateway_connections_rejected_total", "handshakes refused by a worker or for lack of one";
        refused_gateway_full => "gatehouse_gateway_refused_gateway_full_total", "handshakes refused with 503: the gateway holds max-connections";
        refused_per_ip => "gatehouse_gateway_refused_per_ip_total", "handshakes refused with 429: the client address holds max-connections-per-ip";
        refused_pending_handshakes => "gatehouse_gateway_refused_pending_handshakes_total", "handshakes refused with 503: max-pending-handshakes are waiting for a worker";
        refused_handshake_too_large => "gatehouse_gateway_refused_handshake_too_large_total", "handshakes refused with 431: forwarded headers, path and query over max-handshake-bytes";
        refused_unknown_app => "gatehouse_gateway_refused_unknown_app_total", "handshakes refused with 404: the path names an app this gateway does not serve (--app)";
        foreign_workers => "gatehouse_gateway_foreign_workers_total", "worker links of an app this gateway does not serve (--app): attached, logged, and given no clients";
        refused_draining => "gatehouse_gateway_refused_draining_total", "handshakes refused with 503: the gateway is shutting down";
        refused_fenced => "gatehouse_gateway_refused_fenced_total", "handshakes refused with 503: the gateway's lease lapsed and no registry has renewed it yet";
        fenced => "gatehouse_gateway_fenced_total", "times the gateway's lease lapsed (paused, partitioned from every registry) and it closed its clients with 1012";
        header_timeouts => "gatehouse_gateway_header_read_timeouts_total", "http connections closed for not sending their headers within header-read-timeout";
        tls_handshake_failures => "gatehouse_gateway_tls_handshake_failures_total", "wss connections closed because the TLS handshake failed or did not finish within header-read-timeout";
        messages_in => "gatehouse_gateway_messages_in_total", "client frames forwarded to workers";
        frames_out => "gatehouse_gateway_frames_out_total", "frames queued to clients";
        frames_too_large => "gatehouse_gateway_frames_too_large_total", "worker sends refused for exceeding max-frame-out-bytes";
        slow_consumers_closed => "gatehouse_gateway_slow_consumers_closed_total", "clients closed with 1013 because their send queue was full";
        oversized_closed => "gatehouse_gateway_oversized_closed_total", "clients closed with 1009 for an oversized message";
        protocol_errors_closed => "gatehouse_gateway_protocol_errors_closed_total", "clients closed with 1002 or 1007 for breaking the websocket protocol";
        rate_limited => "gatehouse_gateway_rate_limited_total", "client messages read late because the client exceeded its message or byte rate";
        rate_limit_closed => "gatehouse_gateway_rate_limit_closed_total", "clients closed with 1008 for exceeding their rate for rate-limit-close-after";
        reads_paused => "gatehouse_gateway_reads_paused_total", "times a client's socket stopped being read because its or the gateway's unacknowledged window was full";
        deadlines_closed => "gatehouse_gateway_deadlines_closed_total", "clients closed at a deadline a worker set (such as token expiry)";
        ping_timeouts => "gatehouse_gateway_ping_timeouts_total", "clients dropped for not answering pings";
        events_redelivered => "gatehouse_gateway_events_redelivered_total", "events re-sent to another worker after a worker left";
        clients_failed_over => "gatehouse_gateway_clients_failed_over_total", "clients moved to another worker because theirs died or left";
        clients_handed_over => "gatehouse_gateway_clients_handed_over_total", "clients moved to another worker because theirs was draining (stopping) or gave their events back";
        events_nacked => "gatehouse_gateway_events_nacked_total", "times a worker gave events back (a transient failure, or it was stopping)";
        commands => "gatehouse_gateway_commands_total", "worker commands executed";
        commands_refused => "gatehouse_gateway_commands_refused_total", "worker commands refused as malformed or over a limit";
        /// gRPC messages received on links (from workers and API clients).
        link_messages_in => "gatehouse_gateway_link_messages_in_total", "grpc messages received on worker and api client links";
        /// Acks plus commands those messages carried: divided by `link_messages_in`, the batching
        /// factor of the peers' side of the links, which shows whether HTTP/2 framing is amortised.
        link_items_in => "gatehouse_gateway_link_items_in_total", "acknowledgements and commands those messages carried";
        /// gRPC messages sent on links.
        link_messages_out => "gatehouse_gateway_link_messages_out_total", "grpc messages sent on worker and api client links";
        /// Events plus replies those messages carried (the gateway side's batching factor).
        link_items_out => "gatehouse_gateway_link_items_out_total", "events and replies those messages carried";
    }
}
