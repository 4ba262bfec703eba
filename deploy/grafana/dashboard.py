#!/usr/bin/env python3
"""Writes dashboard.json: the gatehouse Grafana dashboard, built only on metrics the roles export
(tests/deploy.rs checks every metric name against a live /metrics). Run: python3 dashboard.py"""
import json
import pathlib

DS = {"type": "prometheus", "uid": "${datasource}"}


def panel(title, exprs, unit="short", description=""):
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom"}},
        "targets": [
            {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(65 + i)}
            for i, (legend, expr) in enumerate(exprs)
        ],
    }


def row(title):
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


ROWS = [
    (row("Clients"), [
        panel("Open connections per gateway", [("{{instance}}", "sum by (instance) (gatehouse_gateway_connections)")],
              description="WebSocket connections held; compare with the capacity table in docs/operations.md."),
        panel("Connections opened / refused per second", [
            ("opened", "sum(rate(gatehouse_gateway_connections_opened_total[1m]))"),
            ("rejected", "sum(rate(gatehouse_gateway_connections_rejected_total[1m]))"),
            ("gateway full", "sum(rate(gatehouse_gateway_refused_gateway_full_total[1m]))"),
            ("per-address limit", "sum(rate(gatehouse_gateway_refused_per_ip_total[1m]))"),
            ("draining", "sum(rate(gatehouse_gateway_refused_draining_total[1m]))"),
        ], "ops"),
        panel("Client messages in / frames out per second", [
            ("in", "sum(rate(gatehouse_gateway_messages_in_total[1m]))"),
            ("out", "sum(rate(gatehouse_gateway_frames_out_total[1m]))"),
        ], "ops"),
        panel("Clients closed by the gateway per second", [
            ("slow consumer (1013)", "sum(rate(gatehouse_gateway_slow_consumers_closed_total[1m]))"),
            ("rate limit (1008)", "sum(rate(gatehouse_gateway_rate_limit_closed_total[1m]))"),
            ("ping timeout", "sum(rate(gatehouse_gateway_ping_timeouts_total[1m]))"),
            ("oversized (1009)", "sum(rate(gatehouse_gateway_oversized_closed_total[1m]))"),
            ("TLS handshake failed", "sum(rate(gatehouse_gateway_tls_handshake_failures_total[1m]))"),
        ], "ops"),
    ]),
    (row("Workers"), [
        panel("Events handled per second", [("{{instance}}", "sum by (instance) (rate(gatehouse_worker_events_total[1m]))")], "ops"),
        panel("Handler latency", [
            ("p50", "histogram_quantile(0.5, sum by (le) (rate(gatehouse_worker_handler_seconds_bucket[5m])))"),
            ("p99", "histogram_quantile(0.99, sum by (le) (rate(gatehouse_worker_handler_seconds_bucket[5m])))"),
        ], "s"),
        panel("Failures and hand-overs per second", [
            ("handler errors", "sum(rate(gatehouse_worker_handler_errors_total[1m]))"),
            ("given back (transient)", "sum(rate(gatehouse_worker_events_given_back_total[1m]))"),
            ("redelivered to workers", "sum(rate(gatehouse_worker_events_redelivered_total[1m]))"),
            ("nacked at gateways", "sum(rate(gatehouse_gateway_events_nacked_total[1m]))"),
            ("redelivered", "sum(rate(gatehouse_gateway_events_redelivered_total[1m]))"),
            ("clients handed over", "sum(rate(gatehouse_gateway_clients_handed_over_total[1m]))"),
            ("clients failed over", "sum(rate(gatehouse_gateway_clients_failed_over_total[1m]))"),
        ], "ops"),
        panel("Unacknowledged event bytes per gateway", [("{{instance}}", "sum by (instance) (gatehouse_gateway_unacked_event_bytes)")], "bytes"),
    ]),
    (row("Chat storage (group commit)"), [
        panel("Messages and receipts per commit", [
            ("mean, messages", "sum(rate(gatehouse_chat_commit_batch_items_sum{kind=\"messages\"}[5m])) / sum(rate(gatehouse_chat_commit_batch_items_count{kind=\"messages\"}[5m]))"),
            ("p99, messages", "histogram_quantile(0.99, sum by (le) (rate(gatehouse_chat_commit_batch_items_bucket{kind=\"messages\"}[5m])))"),
            ("mean, receipts", "sum(rate(gatehouse_chat_commit_batch_items_sum{kind=\"markers\"}[5m])) / sum(rate(gatehouse_chat_commit_batch_items_count{kind=\"markers\"}[5m]))"),
        ], description="Batches grow when the database is slower than the sends: one commit is shared by more messages."),
        panel("Commit latency", [
            ("p50 messages", "histogram_quantile(0.5, sum by (le) (rate(gatehouse_chat_commit_seconds_bucket{kind=\"messages\"}[5m])))"),
            ("p99 messages", "histogram_quantile(0.99, sum by (le) (rate(gatehouse_chat_commit_seconds_bucket{kind=\"messages\"}[5m])))"),
            ("p99 receipts", "histogram_quantile(0.99, sum by (le) (rate(gatehouse_chat_commit_seconds_bucket{kind=\"markers\"}[5m])))"),
        ], "s", "Every send waits for its batch's commit before its ack."),
        panel("Commit queue depth per worker", [
            ("{{instance}}", "gatehouse_chat_commit_queue_depth"),
            ("capacity", "max(gatehouse_chat_commit_queue_capacity)"),
        ], description="Messages and receipts waiting for the writer; when full, sends wait and receipts are shed."),
        panel("Commits and failed commits per second", [
            ("commits {{kind}}", "sum by (kind) (rate(gatehouse_chat_commit_seconds_count[1m]))"),
            ("failed {{kind}}", "sum by (kind) (rate(gatehouse_chat_commit_failures_total[1m]))"),
        ], "ops"),
    ]),
    (row("Cluster"), [
        panel("Workers and registries seen by each gateway", [
            ("workers {{instance}}", "gatehouse_gateway_workers"),
            ("registries {{instance}}", "gatehouse_gateway_registries"),
            ("draining {{instance}}", "gatehouse_gateway_draining"),
        ]),
        panel("Registry members and routes", [
            ("members {{instance}}", "gatehouse_registry_members"),
            ("gateways {{instance}}", "gatehouse_registry_gateways"),
            ("keys {{instance}}", "gatehouse_registry_keys"),
            ("authoritative {{instance}}", "gatehouse_registry_authoritative"),
        ]),
        panel("Registry churn per second", [
            ("route updates", "sum(rate(gatehouse_registry_route_updates_total[1m]))"),
            ("resyncs", "sum(rate(gatehouse_registry_resyncs_total[1m]))"),
            ("members expired", "sum(rate(gatehouse_registry_members_expired_total[1m]))"),
            ("members refused", "sum(rate(gatehouse_registry_members_refused_total[1m]))"),
            ("subscribers cut off", "sum(rate(gatehouse_registry_subscribers_cut_off_total[1m]))"),
        ], "ops"),
    ]),
]

panels = []
y = 0
for header, members in ROWS:
    header["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
    panels.append(header)
    y += 1
    for i, member in enumerate(members):
        member["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": y + 8 * (i // 2)}
        panels.append(member)
    y += 8 * ((len(members) + 1) // 2)
for number, item in enumerate(panels, start=1):
    item["id"] = number

dashboard = {
    "title": "gatehouse",
    "uid": "gatehouse-overview",
    "description": "Gateways, workers and registries of a gatehouse cluster (metrics from each role's --admin-listen /metrics).",
    "tags": ["gatehouse"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-1h", "to": "now"},
    "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]},
    "panels": panels,
}
path = pathlib.Path(__file__).with_name("dashboard.json")
path.write_text(json.dumps(dashboard, indent=2) + "\n")
