#!/usr/bin/env python3
"""The server API's publish rate (HTTP and gRPC, batched and not), side by side with the Rust
relay worker, in one run.

One cluster (one registry, two gateways, two relay workers, one runtime thread per process, as
bench/run.py runs them) plus one `gatehouse api` process (`--threads 1`, a key with the publish
scope and no rate limit). The systems take turns under the same 1,000 WebSocket clients:

- `relay worker`: the reference. Every client sends direct messages (`{"to": uid}`) one at a
  time (`gatehouse bench run --scenario dm`, closed loop): client → gateway → Rust relay
  worker → gateway → client, as in bench/webhook.py's `relay` row.
- `api http`, `api http, batch K`, `api grpc`, `api grpc, batch K`: the clients log in (their
  uids are bound through the relay workers) and only receive; publishers in the load generator
  push `send_to_uid` to random clients through the API (`gatehouse bench run --scenario
  api-publish`): backend → API process → gateway → client. Unbatched, every request is one
  `POST /api/v1/send_to_uid` or one `SendToUid` call; batched, one `/api/v1/batch` or `Batch`
  call carries K sends. Closed loop: each publisher keeps --inflight requests in flight.

Writes the table into docs/benchmarks.md (between the api markers) and bench/api.md (which
bench/run.py carries over when it rewrites docs/benchmarks.md).

    cargo build --release -p gatehouse-cli
    python3 bench/api.py                  # 3 alternating runs of each (~4 min)
    python3 bench/api.py --bin target/debug/gatehouse --runs 1 --duration 2 --no-write   # smoke
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's process and load-generator helpers)

ROOT = run.ROOT
START, END = "<!-- api:start -->", "<!-- api:end -->"


class ApiProcess:
    """A `gatehouse api` process joined to `cluster`, with one publish key without a rate
    limit."""

    def __init__(self, cluster, max_batch):
        self.dir = tempfile.mkdtemp(prefix="gatehouse-bench-api-")
        made = subprocess.run([run.BIN, "api-key", "create", "--name", "bench", "--scopes", "publish", "--rate", "0"],
                              capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(": ", 1) for line in made.splitlines() if ": " in line)
        self.key = fields["key"]
        keys = os.path.join(self.dir, "keys.json")
        with open(keys, "w") as f:
            json.dump({"keys": [json.loads(fields["entry"])]}, f)
        self.proc = run.Proc("api", ["--threads", str(cluster.threads), "api", "--listen", "127.0.0.1:0",
                                     "--grpc-listen", "127.0.0.1:0", "--registry", cluster.registry,
                                     "--cluster-secret", run.SECRET, "--api-keys", keys,
                                     "--max-batch-ops", str(max(max_batch, 100))],
                             ["http", "grpc"])
        self.proc.wait_log("joined the cluster")

    def url(self, transport):
        return f"http://{self.proc.addrs[transport]}"

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        self.proc.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="alternating runs of each system (the median is reported)")
    ap.add_argument("--duration", type=float, default=5, help="measured seconds per run")
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--publishers", type=int, default=4, help="publishers of the api rows")
    ap.add_argument("--inflight", type=int, default=4, help="requests in flight per publisher")
    ap.add_argument("--batch", type=int, default=64, help="sends per batch call in the batched rows")
    ap.add_argument("--bin", default=run.BIN, help="the gatehouse binary (default: the release build)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    opts = ap.parse_args()
    run.BIN = os.path.abspath(opts.bin)
    if not os.path.exists(run.BIN):
        sys.exit(f"{run.BIN} is missing: cargo build --release -p gatehouse-cli")

    cluster = run.Cluster("relay")
    api = None
    try:
        api = ApiProcess(cluster, opts.batch)
        # The key reaches the load generator through its environment, not its command line.
        os.environ["GATEHOUSE_BENCH_API_KEY"] = api.key
        common = ["--clients", opts.clients, "--mode", "closed", "--duration", opts.duration, "--warmup", 2, "--drain", 3]
        relay = ["--scenario", "dm", "--inflight", 1, *common]

        def publish(transport, batch):
            return ["--scenario", "api-publish", "--inflight", opts.inflight, "--publishers", opts.publishers,
                    "--api-transport", transport, "--api-url", api.url(transport), "--batch", batch, *common]

        systems = [("relay worker", relay),
                   ("api http", publish("http", 1)),
                   (f"api http, batch {opts.batch}", publish("http", opts.batch)),
                   ("api grpc", publish("grpc", 1)),
                   (f"api grpc, batch {opts.batch}", publish("grpc", opts.batch))]
        # Every row counts the same processes: the cluster and the API process (idle in the
        # relay row; in the api rows the relay workers are idle once the clients logged in).
        pids = cluster.pids() + [api.pid]
        reports = {name: [] for name, _ in systems}
        for i in range(opts.runs):
            for name, args in systems:
                reports[name].append(run.bench(cluster.urls(), args, pids, label=name))
    finally:
        if api:
            api.stop()
        cluster.stop()

    rows = []
    base = run.median([r["delivered_per_sec"] for r in reports["relay worker"]])
    for name, _ in systems:
        rs = reports[name]
        rate = run.median([r["delivered_per_sec"] for r in rs])
        stats = [r.get("api") or {} for r in rs]
        rows.append({
            "name": name, "rate": rate, "ratio": rate / base if base else float("nan"),
            "cpu": run.median([run.server_cpu_us_per_delivered(r) for r in rs]),
            "p50": run.median([r["latency_us"]["p50"] for r in rs]),
            "p99": run.median([r["latency_us"]["p99"] for r in rs]),
            "requests": run.median([s["requests_per_sec"] for s in stats]) if stats[0] else None,
            "rtt50": run.median([s["request_latency_us"]["p50"] for s in stats]) if stats[0] else None,
            "rtt99": run.median([s["request_latency_us"]["p99"] for s in stats]) if stats[0] else None,
            "lost": sum(r.get("lost", 0) for r in rs), "dup": sum(r.get("duplicated", 0) for r in rs),
            "failed": sum(s.get("failed_sends", 0) for s in stats),
        })
    text = report(rows, opts)
    print(text)
    if not opts.no_write:
        write(text)


def report(rows, opts):
    build = "release" if os.path.basename(os.path.dirname(run.BIN)) == "release" else "NOT a release build"
    lines = [START, "## Server API publish rate (side by side with the Rust relay worker)", "",
             f"`python3 bench/api.py`: {opts.runs} alternating runs of {opts.duration:g} s per system, the median reported;",
             f"{opts.clients:,} WebSocket clients on one cluster (one registry, two gateways, two relay workers) plus one",
             "`gatehouse api` process, every server process with `--threads 1`. `relay worker`: every client sends direct",
             "messages one at a time through the Rust relay worker (client → gateway → worker → gateway → client). `api …`:",
             f"the clients only receive; {opts.publishers} publishers in the load generator each keep {opts.inflight} requests in flight",
             "(HTTP/1.1: one keep-alive connection per request in flight; gRPC: one HTTP/2 connection per publisher), each",
             f"request one `send_to_uid` to a random client, or a batch call of {opts.batch} of them (backend → API → gateway →",
             "client). Latency is send → delivery (a batched send waits for its whole request); the API round trip is request",
             "written → answer read. Server CPU counts every server process (registry, gateways, workers, API) per delivered",
             f"message. The load generator shares the two cores. Build: {build}.", "",
             f"- machine: {run.machine()}",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average at the end: {os.getloadavg()[0]:.2f}", "",
             "| system | delivered msg/s | / relay worker | server CPU µs per message | p50 / p99 latency (µs) | API requests/s | API round trip p50 / p99 (µs) | lost / duplicated / refused |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        requests = "—" if r["requests"] is None else run.fmt(r["requests"])
        rtt = "—" if r["rtt50"] is None else f"{run.fmt(r['rtt50'])} / {run.fmt(r['rtt99'])}"
        lines.append(f"| {r['name']} | {run.fmt(r['rate'])} | {r['ratio']:.2f} | {run.fmt(r['cpu'], 1)} | "
                     f"{run.fmt(r['p50'])} / {run.fmt(r['p99'])} | {requests} | {rtt} | {r['lost']} / {r['dup']} / {r['failed']} |")
    lines += ["", "Commands (API: `gatehouse --threads 1 api --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --registry REGISTRY",
              "--api-keys KEYS.json`, its key from `gatehouse api-key create --name bench --scopes publish --rate 0`, passed to",
              "the load generator as `GATEHOUSE_BENCH_API_KEY`):", ""]
    for label, cmd in run.COMMANDS:
        lines.append(f"- {label}: `{shown(cmd)}`")
    lines += ["", END]
    return "\n".join(lines)


def shown(cmd):
    """A command as the report shows it: no port numbers."""
    return re.sub(r"--api-url http://127\.0\.0\.1:\d+", "--api-url http://API", cmd)


def write(text):
    with open(os.path.join(ROOT, "bench", "api.md"), "w") as f:
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
