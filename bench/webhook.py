#!/usr/bin/env python3
"""The webhook worker's relay rate, side by side with the Rust relay worker, in one run.

Three clusters of the same shape (one registry, two gateways, two workers, one runtime thread
per process, as bench/run.py runs them) take turns under the same load (`gatehouse bench run
--scenario dm`, 1,000 clients, closed loop):

- `relay`: the built-in Rust relay worker (crates/gatehouse-apps/src/relay.rs);
- `webhook → python`: two webhook workers POSTing to bench/webhook_relay.py, the same relay
  semantics in Python's standard library (ThreadingHTTPServer, signature checked);
- `webhook → rust`: two webhook workers POSTing to the minimal fast backend
  crates/gatehouse-webhook/examples/relay_backend.rs (hyper, signature checked), which shows
  what the webhook path itself costs.

Writes the table into docs/benchmarks.md (between the webhook markers) and bench/webhook.md
(which bench/run.py carries over when it rewrites docs/benchmarks.md).

    cargo build --release -p gatehouse-cli && cargo build --release -p gatehouse-webhook --example relay_backend
    python3 bench/webhook.py              # 3 alternating runs of each (~3 min)
"""

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's process and load-generator helpers)

ROOT = run.ROOT
FAST_BACKEND = os.path.join(ROOT, "target", "release", "examples", "relay_backend")
SECRET = "bench-webhook-secret-32-bytes-long-at-least"
START, END = "<!-- webhook:start -->", "<!-- webhook:end -->"


class Backend:
    """A backend process that prints `listening addr=…` on its first stdout line."""

    def __init__(self, argv):
        env = dict(os.environ, GATEHOUSE_WEBHOOK_SECRET=SECRET)
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=env)
        line = self.p.stdout.readline().strip()
        if not line.startswith("listening addr="):
            raise RuntimeError(f"{argv[0]} did not start: {line!r}")
        self.addr = line.split("=", 1)[1]

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        self.p.terminate()
        self.p.wait(10)


def webhook_cluster(backend):
    url = f"http://{backend.addr}/events"
    return run.Cluster("webhook", worker_args=["--url", url, "--webhook-secret", SECRET])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each system (the median is reported)")
    ap.add_argument("--duration", type=float, default=5, help="measured seconds per run")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--no-write", action="store_true", help="print only")
    opts = ap.parse_args()
    for path in (run.BIN, FAST_BACKEND):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release -p gatehouse-cli && cargo build --release -p gatehouse-webhook --example relay_backend")

    python = Backend([sys.executable, os.path.join(ROOT, "bench", "webhook_relay.py")])
    fast = Backend([FAST_BACKEND, "127.0.0.1:0"])
    systems = [("relay", run.Cluster("relay"), None),
               ("webhook → python", webhook_cluster(python), python),
               ("webhook → rust", webhook_cluster(fast), fast)]
    args = ["--scenario", "dm", "--clients", opts.clients, "--mode", "closed", "--inflight", 1,
            "--duration", opts.duration, "--warmup", 2, "--drain", 3]
    reports = {name: [] for name, _, _ in systems}
    try:
        for i in range(opts.runs):
            for name, cluster, backend in systems:
                pids = cluster.pids() + ([backend.pid] if backend else [])
                reports[name].append(run.bench(cluster.urls(), args, pids, label=f"dm max, {name}"))
        batches = {name: worker_batch(cluster) for name, cluster, _ in systems if name != "relay"}
    finally:
        for _, cluster, _ in systems:
            cluster.stop()
        python.stop()
        fast.stop()

    rows = []
    base = median([r["delivered_per_sec"] for r in reports["relay"]])
    for name, _, _ in systems:
        rs = reports[name]
        rate = median([r["delivered_per_sec"] for r in rs])
        rows.append({
            "name": name, "rate": rate, "ratio": rate / base,
            "cpu": median([run.server_cpu_us_per_delivered(r) for r in rs]),
            "p50": median([r["latency_us"]["p50"] for r in rs]),
            "p99": median([r["latency_us"]["p99"] for r in rs]),
            "lost": sum(r.get("lost", 0) for r in rs), "dup": sum(r.get("duplicated", 0) for r in rs),
            "batch": batches.get(name),
        })
    text = report(rows, opts)
    print(text)
    if not opts.no_write:
        write(text)


def worker_batch(cluster):
    """The mean events per request over the cluster's webhook workers."""
    requests = events = 0
    for w in cluster.workers:
        body = run.http_get(run.admin_addr(w), "/metrics")
        requests += metric(body, "gatehouse_webhook_requests_total")
        events += metric(body, "gatehouse_webhook_events_sent_total")
    return events / requests if requests else float("nan")


def metric(body, name):
    found = re.search(rf"^{name} (\S+)$", body, re.M)
    return float(found.group(1)) if found else 0.0


def median(values):
    return run.median(values)


def report(rows, opts):
    lines = [START, "## Webhook worker relay rate (side by side with the Rust relay worker)", "",
             f"`python3 bench/webhook.py`: {opts.runs} alternating runs of {opts.duration:g} s per system, the median reported;",
             f"{opts.clients:,} clients sending direct messages (`{{\"to\": uid}}`) one at a time, closed loop. Each",
             "system is one registry, two gateways and two workers with `--threads 1`; the webhook systems add",
             "their backend process (default webhook settings: batches of up to 64 events, 4 requests in flight",
             "per gateway link, every request signed and checked). Server CPU counts every server process,",
             "backend included. The load generator shares the two cores.", "",
             f"- machine: {run.machine()}",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at the end: {os.getloadavg()[0]:.2f}", "",
             "| system | delivered msg/s | / relay | server CPU µs per message | p50 / p99 latency (µs) | events per request | lost / duplicated |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        batch = "—" if r["batch"] is None else f"{r['batch']:.1f}"
        lines.append(f"| {r['name']} | {run.fmt(r['rate'])} | {r['ratio']:.2f} | {run.fmt(r['cpu'], 1)} | "
                     f"{run.fmt(r['p50'])} / {run.fmt(r['p99'])} | {batch} | {r['lost']} / {r['dup']} |")
    lines += ["", "Commands (backends: `python3 bench/webhook_relay.py`, `target/release/examples/relay_backend 127.0.0.1:0`;",
              "webhook workers: `gatehouse --threads 1 worker --app webhook --url http://BACKEND/events`):", ""]
    for label, cmd in run.COMMANDS:
        lines.append(f"- {label}: `{cmd}`")
    lines += ["", END]
    return "\n".join(lines)


def write(text):
    with open(os.path.join(ROOT, "bench", "webhook.md"), "w") as f:
        f.write(text + "\n")
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    with open(path) as f:
        doc = f.read()
    if START in doc and END in doc:
        doc = doc[:doc.index(START)] + text + doc[doc.index(END) + len(END):]
    else:
        doc = doc.rstrip() + "\n\n" + text + "\n"
    with open(path, "w") as f:
        f.write(doc)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
