#!/usr/bin/env python3
"""The routing state at scale: a million bound uids over 100 gateways, 20 workers.

A real registry and real workers (the relay app) run as processes; `gatehouse bench routing`
plays 100 gateways and the other workers with synthetic members speaking the registry's real
gRPC protocol (a million WebSocket connections do not fit on one machine). It loads the uids,
reads the memory of the registry and of each real worker before and after, times binds from
their batch to the registry's confirmation (sent only once every worker acknowledged), counts
the route-update bytes each worker receives per bind, then kills the registry (SIGKILL) and
starts it again on the same address and times how long the whole table takes to come back.

    cargo build --release -p gatehouse-cli
    python3 bench/routing.py --out docs/benchmarks-routing.md

Every server process gets one runtime thread, as in the benchmark suite.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402

TARGET_BYTES_PER_UID = 100
TARGET_BIND_P99_MS = 5
TARGET_RESYNC_S = 10


class Registry:
    """The registry on fixed ports, so that it can be killed and started again in place."""

    def __init__(self, binary, extra=()):
        self.binary = binary
        self.extra = list(extra)
        self.grpc = f"127.0.0.1:{run.free_port()}"
        self.admin = f"127.0.0.1:{run.free_port()}"
        self.proc = None
        self.start()

    def start(self):
        self.proc = run.Proc("registry", ["--threads", "1", "registry", "--listen", self.grpc,
                                          "--admin-listen", self.admin, "--cluster-secret", run.SECRET,
                                          *self.extra],
                             ["grpc", "admin"], self.binary)

    def kill(self):
        self.proc.p.kill()
        self.proc.p.wait()


def measure(opts, binary):
    registry = Registry(binary, ["--ack-timeout", opts.ack_timeout] if opts.ack_timeout else [])
    workers = []
    for i in range(opts.workers):
        w = run.Proc(f"worker-{i}", ["--threads", "1", "worker", "--registry", registry.grpc, "--app", "relay",
                                     "--cluster-secret", run.SECRET, "--allow-unauthenticated",
                                     "--admin-listen", "127.0.0.1:0"], ["admin"], binary)
        w.wait_log("worker started")
        workers.append(w)
    cmd = [binary, "bench", "routing", "--registry", registry.grpc, "--registry-admin", registry.admin,
           "--cluster-secret", run.SECRET, "--gateways", str(opts.gateways), "--uids", str(opts.uids),
           "--subscribers", str(opts.subscribers), "--bind-rate", str(opts.bind_rate),
           "--bind-seconds", str(opts.bind_seconds), "--resync", "--registry-pid", str(registry.proc.pid)]
    if workers:
        cmd += ["--worker-pid", ",".join(str(w.pid) for w in workers)]
    run.COMMANDS.append(("routing", " ".join(cmd)))
    tool = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    report = None
    for line in tool.stdout:
        event = json.loads(line)
        if event.get("event") == "restart-registry":
            registry.kill()
            registry.start()
        else:
            report = event
    if tool.wait() != 0 or report is None:
        sys.exit("gatehouse bench routing failed")
    report["registry_rss_after_resync"] = run.rss_kb(registry.proc.pid) * 1024
    report["worker_rss_after_resync"] = [run.rss_kb(w.pid) * 1024 for w in workers]
    for p in [*workers, registry.proc]:
        p.stop()
    return report


def defaults():
    """The options of a default run, for bench/run.py."""
    return argparse.Namespace(gateways=100, uids=1_000_000, workers=2, subscribers=18, bind_rate=1000,
                              bind_seconds=10, ack_timeout="")


def target_rows(report, met):
    """The suite's Targets rows: (target, this run, table, verdict)."""
    reg, worker, p99, resync, _ = figures(report)
    table = "Routing state"
    return [(f"≤ {TARGET_BYTES_PER_UID} bytes per bound uid in the registry, 1,000,000 uids", f"{reg:.0f}", table,
             met(reg <= TARGET_BYTES_PER_UID)),
            (f"≤ {TARGET_BYTES_PER_UID} bytes per bound uid in each worker", f"{worker:.0f}", table,
             met(worker <= TARGET_BYTES_PER_UID)),
            (f"bind p99 ≤ {TARGET_BIND_P99_MS} ms with 100 gateways and 20 workers", f"{p99:.2f} ms", table,
             met(p99 <= TARGET_BIND_P99_MS)),
            (f"resync of 1,000,000 uids after a registry restart ≤ {TARGET_RESYNC_S} s", f"{resync:.1f} s", table,
             met(resync <= TARGET_RESYNC_S))]


def section(report):
    """The suite's Routing state section: the figures, with bench/routing.py's report for more."""
    reg, worker, _, resync, peak = figures(report)
    bind = report["bind"]
    return ["## Routing state (1,000,000 bound uids, 100 gateways, 20 workers)", "",
            "A real registry and two real relay workers; the gateways and the other workers are synthetic members speaking",
            "the registry's gRPC protocol (`gatehouse bench routing`, driven by bench/routing.py; what each figure means:",
            "docs/scaling.md).", "",
            "| figure | this run |", "| --- | --- |",
            f"| registry bytes per bound uid (peak RSS) | {reg:.0f} ({peak / 2**20:,.0f} MiB) |",
            f"| worker bytes per bound uid (worst of the real ones) | {worker:.0f} |",
            f"| bind confirmed by every worker: p50 / p99 / p99.9 | {bind['p50_ms']:.2f} / {bind['p99_ms']:.2f} / "
            f"{bind['p999_ms']:.2f} ms |",
            f"| route-update bytes per bind, per worker | {report['bytes_per_change']:.1f} |",
            f"| whole table back after a registry restart | {resync:.1f} s |",
            f"| a worker attaching to the loaded table holds all of it after | {report['snapshot_seconds']:.1f} s |", ""]


def verdict(ok):
    return "met" if ok else "**not met**"


def figures(report):
    """The four targets' figures of one run."""
    workers = report["worker_memory"]
    return (report["registry_memory"]["bytes_per_uid"],
            max(w["bytes_per_uid"] for w in workers) if workers else float("nan"),
            report["bind"]["p99_ms"], report["resync"]["table_seconds"],
            report["registry_memory"]["peak_bytes"])


def comparison(before, after, opts):
    """A before/after table when --before was given: one run of each, the before run first."""
    if before is None:
        return []
    b, a = figures(before), figures(after)
    names = ["registry bytes per uid", "worker bytes per uid (worst)", "bind p99 (ms)",
             "resync of the whole table (s)", "registry peak RSS (MiB)"]
    lines = ["## Before and after", "",
             f"The same measurement with `{opts.before}` (before) and `{opts.binary}` (after), one run each, "
             "one after the other on this machine.", "",
             "| figure | before | after | after / before |", "| --- | --- | --- | --- |"]
    for i, name in enumerate(names):
        scale = 2**20 if i == 4 else 1
        lines.append(f"| {name} | {b[i] / scale:,.2f} | {a[i] / scale:,.2f} | {a[i] / b[i]:.2f} |")
    return lines + [""]


def write(report, opts, before=None):
    reg = report["registry_memory"]
    workers = report["worker_memory"]
    worst_worker = max(w["bytes_per_uid"] for w in workers) if workers else float("nan")
    bind, unbind = report["bind"], report["unbind"]
    resync = report["resync"]
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731
    lines = [
        "# Benchmark: the routing state at scale",
        "",
        f"Generated by `python3 bench/routing.py` on {datetime.date.today()} ({run.machine()}). "
        f"A real registry and {len(workers)} real relay workers; {report['gateways']} synthetic gateways and "
        f"{report['subscribers']} synthetic route subscribers (workers) speaking the registry's gRPC protocol, "
        f"so {report['subscribers'] + len(workers)} workers in all. {report['uids']:,} bound uids "
        f"(`user-0` … `user-{report['uids'] - 1}`) spread evenly over the gateways. Every server process has one "
        "runtime thread. What each figure means and how it was measured: docs/scaling.md.",
        "",
        "| target | measured | |",
        "| --- | --- | --- |",
        f"| ≤ {TARGET_BYTES_PER_UID} bytes per uid, registry | {reg['bytes_per_uid']:.0f} | "
        f"{verdict(reg['bytes_per_uid'] <= TARGET_BYTES_PER_UID)} |",
        f"| ≤ {TARGET_BYTES_PER_UID} bytes per uid, each worker | {worst_worker:.0f} (worst of {len(workers)}) | "
        f"{verdict(worst_worker <= TARGET_BYTES_PER_UID)} |",
        f"| bind p99 ≤ {TARGET_BIND_P99_MS} ms ({report['gateways']} gateways, "
        f"{report['subscribers'] + len(workers)} workers) | {bind['p99_ms']:.2f} ms | "
        f"{verdict(bind['p99_ms'] <= TARGET_BIND_P99_MS)} |",
        f"| resync of {report['uids']:,} uids ≤ {TARGET_RESYNC_S} s | {resync['table_seconds']:.1f} s | "
        f"{verdict(resync['table_seconds'] <= TARGET_RESYNC_S)} |",
        "",
        "## Memory",
        "",
        "Resident memory (RSS) with every member attached and an empty table, then with the table loaded.",
        "",
        "| process | before | after | peak | bytes per uid |",
        "| --- | --- | --- | --- | --- |",
        f"| registry | {mib(reg['before_bytes'])} | {mib(reg['after_bytes'])} | {mib(reg['peak_bytes'])} | "
        f"{reg['bytes_per_uid']:.0f} |",
    ]
    for i, w in enumerate(workers):
        lines.append(f"| worker {i} | {mib(w['before_bytes'])} | {mib(w['after_bytes'])} | {mib(w['peak_bytes'])} | "
                     f"{w['bytes_per_uid']:.0f} |")
    lines += [
        "",
        f"After the registry restart and resync: registry {mib(report['registry_rss_after_resync'])}, workers "
        + ", ".join(mib(b) for b in report["worker_rss_after_resync"]) + ".",
        "",
        "## Binds",
        "",
        f"Load: {report['load_seconds']:.1f} s from the first batch to the last gateway's confirmation. Then "
        f"{report['bind_rate']:,} binds and unbinds per second in all, each in a batch of its own (as from an idle "
        "gateway), timed from the batch's send to the registry's `BatchApplied`, which it sends only once every "
        "worker acknowledged the change.",
        "",
        "| change | count | p50 | p99 | p99.9 | max |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, l in (("bind", bind), ("unbind", unbind)):
        lines.append(f"| {name} | {l['count']:,} | {l['p50_ms']:.2f} ms | {l['p99_ms']:.2f} ms | "
                     f"{l['p999_ms']:.2f} ms | {l['max_ms']:.2f} ms |")
    auth = resync["authoritative_seconds"]
    lines += [
        "",
        f"Each worker received {report['bytes_per_change']:.1f} bytes of route updates (protobuf and gRPC prefix, "
        "without HTTP/2 framing) per bind or unbind.",
        "",
        "## A worker attaching to the whole table",
        "",
        f"After the load, one more synthetic worker attached and held all {report['uids']:,} routes "
        f"{report['snapshot_seconds']:.1f} s later (the registry's snapshot, in chunks of 4,096 entries).",
        "",
        "## Resync after a registry restart",
        "",
        "The registry is killed (SIGKILL) and started again on the same address; times run from the moment its "
        "streams broke.",
        "",
        f"- every gateway's resync confirmed: {resync['gateways_seconds']:.1f} s;",
        f"- the whole table at every worker, proven by a bind confirmed by all of them: "
        f"{resync['table_seconds']:.1f} s;",
        f"- the registry authoritative again (its warm-up, after which workers trust absence): "
        f"{auth:.1f} s." if auth is not None else "- authoritative: not measured.",
        "",
        *comparison(before, report, opts),
        "## Reproduce",
        "",
        "```",
        "cargo build --release -p gatehouse-cli",
        f"python3 bench/routing.py --uids {report['uids']} --gateways {report['gateways']} "
        f"--workers {len(workers)} --subscribers {report['subscribers']} --out {opts.out}",
        "```",
        "",
        "Commands run:",
        "",
        "```",
        *(cmd for _, cmd in run.COMMANDS),
        "```",
        "",
    ]
    with open(opts.out, "w") as f:
        f.write("\n".join(lines))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=run.BIN)
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--uids", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2, help="real relay worker processes")
    ap.add_argument("--subscribers", type=int, default=18, help="synthetic workers besides the real ones")
    ap.add_argument("--bind-rate", type=int, default=1000)
    ap.add_argument("--bind-seconds", type=float, default=10)
    ap.add_argument("--ack-timeout", default="", help="the registry's --ack-timeout (its default when empty)")
    ap.add_argument("--before", default="", help="also measure this binary first and compare")
    ap.add_argument("--out", default="")
    opts = ap.parse_args()
    for binary in filter(None, [opts.binary, opts.before]):
        if not os.path.exists(binary):
            sys.exit(f"{binary} is missing: cargo build --release -p gatehouse-cli")
    before = measure(opts, opts.before) if opts.before else None
    report = measure(opts, opts.binary)
    print(json.dumps(report, indent=2))
    if opts.out:
        write(report, opts, before)


if __name__ == "__main__":
    main()
