#!/usr/bin/env python3
"""Before/after: the same scenarios against two builds of the servers, side by side in one run.

Both clusters are started from their own `gatehouse` binary and stay up for the whole run; the
load generator (always the `--after` binary's `gatehouse bench run`) drives one at a time, and
the runs alternate before, after, before, after… so that a noisy minute on this shared machine
hits both. Reports medians and the after/before ratios, and writes them to a generated file.

    python3 bench/compare.py --before /path/to/old/gatehouse --after target/release/gatehouse \\
        --title "limits of issue #10" --out docs/benchmarks-limits.md

Scenarios (`--scenarios`, all by default): relay direct messages closed-loop (the maximum) and
open-loop at 5,000 msg/s (`relay`), chat on SQLite closed-loop (`chat`), the live-chat mix on
SQLite, one typing and two receipts per message (`chatmix`), the same on PostgreSQL with two
chat workers (`chatmix-pg`), each with a fresh database per build, and the gateways' memory per idle connection with 10,000 held (`idle`).
"""

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the suite's process and report helpers)


def alternate(n, before, after):
    """n (before, after) pairs, each pair run back to back."""
    return [(before(), after()) for _ in range(n)]


def figures(reports):
    """Medians of the figures a comparison looks at."""
    return {
        "msg_s": run.median([r["delivered_per_sec"] for r in reports]),
        "cpu_us": run.median([run.server_cpu_us_per_delivered(r) for r in reports]),
        "p99_us": run.median([r["latency_us"]["p99"] for r in reports]),
        "lost": sum(r.get("lost", 0) for r in reports),
        "dup": sum(r.get("duplicated", 0) for r in reports),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="the gatehouse binary before the change")
    ap.add_argument("--after", default=run.BIN, help="the gatehouse binary after the change (also the load generator)")
    ap.add_argument("--title", default="before and after", help="what is compared, for the report")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=float, default=8)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--out", default="", help="write the report to this markdown file")
    ap.add_argument("--scenarios", default="relay,chat,chatmix,chatmix-pg,idle",
                    help="comma-separated subset: relay,chat,chatmix,chatmix-pg,idle")
    opts = ap.parse_args()
    wanted = set(opts.scenarios.split(","))
    for binary in (opts.before, opts.after):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing")
    run.BIN = opts.after
    # Chat workers consent to bare uids (dev mode needs both sides) and lift their per-client
    # send rate, which a closed-loop benchmark exceeds by design. Environment variables, not
    # flags: a build from before these settings ignores them instead of refusing to start.
    os.environ["GATEHOUSE_INSECURE_DEV_AUTH"] = "true"
    os.environ["GATEHOUSE_CHAT_SEND_RATE"] = "0"
    os.environ["GATEHOUSE_CHAT_REQUEST_RATE"] = "0"
    os.environ["GATEHOUSE_CHAT_TYPING_RATE"] = "0"
    common = ["--duration", opts.duration, "--warmup", 2, "--drain", 3]
    dm = ["--scenario", "dm", "--clients", opts.clients]
    chat = ["--clients", opts.clients, "--mode", "closed", "--inflight", 1]
    scenarios = [
        ("relay", "relay dm, closed loop (max)", "relay", [*dm, "--mode", "closed", "--inflight", 1, *common]),
        ("relay", "relay dm, open loop 5,000 msg/s", "relay", [*dm, "--mode", "open", "--rate", 5000, *common]),
        ("chat", "chat on SQLite, closed loop", "chat", ["--scenario", "chat", *chat, *common]),
        # As the suite's Live chat table: 4 ongoing conversations each, and a drain long enough
        # for the mix's closed-loop p99.
        ("chatmix", "chat-mix on SQLite, 4 peers, closed loop", "chat",
         ["--scenario", "chat-mix", *chat, "--peers", 4, "--duration", opts.duration, "--warmup", 2, "--drain", 12]),
        ("chatmix-pg", "chat-mix on PostgreSQL (two workers), 4 peers, closed loop", "chat-pg",
         ["--scenario", "chat-mix", *chat, "--peers", 4, "--duration", opts.duration, "--warmup", 2, "--drain", 12]),
    ]
    rows = []
    for key, label, app, args in scenarios:
        if key not in wanted:
            continue
        print(f"{label}: before and after, alternating", flush=True)
        clusters = {}
        cleanups = []
        for side, binary in [("before", opts.before), ("after", opts.after)]:
            if app == "chat-pg":
                _, url, cleanup = run.scratch_postgres(f"_{side}")
                cleanups.append(cleanup)
                clusters[side] = run.Cluster("chat", workers=2, binary=binary, worker_args=["--database-url", url],
                                             gateway_args=["--insecure-dev-auth"])
            elif app == "chat":
                tmp = tempfile.mkdtemp(prefix=f"gatehouse-compare-{side}-")
                clusters[side] = run.Cluster("chat", workers=1, binary=binary,
                                             worker_args=["--database-url", f"sqlite://{tmp}/chat.db"],
                                             gateway_args=["--insecure-dev-auth"])
            else:
                clusters[side] = run.Cluster(app, binary=binary)
        pairs = alternate(
            opts.runs,
            lambda: run.bench(clusters["before"].urls(), args, clusters["before"].pids(), f"before {label}"),
            lambda: run.bench(clusters["after"].urls(), args, clusters["after"].pids(), f"after {label}"),
        )
        for cluster in clusters.values():
            cluster.stop()
        for cleanup in cleanups:
            cleanup()
        before = figures([b for b, _ in pairs])
        after = figures([a for _, a in pairs])
        rows.append((label, before, after))

    idle = [(side, idle_bytes_per_connection(binary)) for side, binary in [("before", opts.before), ("after", opts.after)]
            ] if "idle" in wanted else []

    lines = [
        f"# Benchmark: {opts.title}",
        "",
        f"Generated by `python3 bench/compare.py` on {datetime.date.today()} ({run.machine()}); "
        f"{opts.runs} alternating runs of {opts.duration:g} s per side and scenario, medians. Servers: "
        "one registry, two gateways, two relay workers (one chat worker on SQLite, two on PostgreSQL), `--threads 1` each, "
        "default limits; the load generator is the after build's `gatehouse bench run` for both.",
        "",
    ]
    lines += table(rows, "before", "after")
    if idle:
        (_, left), (_, right) = idle
        lines += ["", "Gateway memory per idle connection (RSS growth over the connections each gateway holds, "
                  "10,000 over two gateways, median of the gateways):", "",
                  "| before (bytes) | after (bytes) | after/before |", "| --- | --- | --- |",
                  f"| {left:.0f} | {right:.0f} | {right / left:.3f} |"]
    publish(lines, opts.out)


def idle_bytes_per_connection(binary, total=10000):
    """Starts a relay cluster from `binary`, holds `total` idle connections on its two gateways
    and returns the gateways' median RSS growth per connection they hold."""
    cl = run.Cluster("relay", binary=binary)
    before = {g.pid: run.rss_kb(g.pid) for g in cl.gateways}
    hold = 20 + total / 2500
    cmd = [run.BIN, "bench", "run", "-q", "--scenario", "idle", "--clients", str(total), "--duration", str(hold),
           "--warmup", "0", "--drain", "0", "--connect-concurrency", "256", "--source-ips", "127.0.1.1-127.0.1.40"]
    for url in cl.urls():
        cmd += ["--url", url]
    load = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run.COMMANDS.append(("idle", " ".join(cmd).replace(run.BIN, "gatehouse")))
    deadline = time.time() + hold + 60
    while time.time() < deadline:
        if sum(run.gauge(g, "gatehouse_gateway_connections") for g in cl.gateways) >= total:
            break
        time.sleep(0.5)
    # Settled: what the last handshakes allocated and freed is done.
    time.sleep(2)
    after = {g.pid: run.rss_kb(g.pid) for g in cl.gateways}
    conns = {g.pid: run.gauge(g, "gatehouse_gateway_connections") for g in cl.gateways}
    load.wait()
    cl.stop()
    per_connection = run.median([(after[p] - before[p]) * 1024 / max(conns[p], 1) for p in after])
    print(f"  idle {total} ({binary}): {per_connection:.0f} bytes per connection", flush=True)
    return per_connection


def table(rows, left, right):
    """The side-by-side table of (label, left figures, right figures) rows, with right/left ratios."""
    lines = [
        f"| scenario | msg/s {left} | msg/s {right} | {right}/{left} | CPU µs/msg {left} | CPU µs/msg {right} | "
        f"{right}/{left} | p99 µs {left} | p99 µs {right} | lost / dup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, a, b in rows:
        lines.append(
            f"| {label} | {a['msg_s']:.0f} | {b['msg_s']:.0f} | {b['msg_s'] / a['msg_s']:.3f} | "
            f"{a['cpu_us']:.1f} | {b['cpu_us']:.1f} | {b['cpu_us'] / a['cpu_us']:.3f} | "
            f"{a['p99_us']:.0f} | {b['p99_us']:.0f} | {a['lost'] + b['lost']} / {a['dup'] + b['dup']} |"
        )
    return lines


def publish(lines, out):
    """Adds the commands that produced the figures, prints the report and writes it to `out`."""
    lines = [*lines, "", "Commands:", ""]
    lines += [f"- {label}: `{shown}`" for label, shown in run.COMMANDS]
    report = "\n".join(lines) + "\n"
    print(report)
    if out:
        with open(out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
