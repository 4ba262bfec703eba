#!/usr/bin/env python3
"""PostgreSQL's own CPU per appended message, the store alone, two builds side by side.

The store benchmark (crates/gatehouse-store/examples/append.rs: 1,000 senders through one group
committer, as the chat worker appends) runs against a fresh scratch database per run, in two
traffic shapes: ongoing conversations (`--peers 4`) and a random recipient per message (almost
every message opens a direct conversation). During a window of each run the CPU time of the
database's PostgreSQL processes (its backends, the WAL writer, checkpointer and background
writer, as bench/run.py counts them) is divided by the messages stored meanwhile. Runs of the
two builds alternate, and the medians are compared. Issue #14's targets: ≤ 20 µs in ongoing
conversations, ≤ 40 µs when most messages open one.

When the server preloads `pg_stat_statements` (`shared_preload_libraries`), the report also
breaks the last run of each build down by statement (execution time per stored message: wall
time inside the server, not CPU, but on an idle machine close to it).

    cargo build --release -p gatehouse-store --example append        # once per build
    python3 bench/pg_store_cpu.py --before OLD/append --after NEW/append --runs 3
    python3 bench/pg_store_cpu.py --after target/release/examples/append --out docs/benchmarks-pg-writes.md
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the report writer)
import run  # noqa: E402  (machine description, medians, scratch databases, PostgreSQL processes)

RATE = re.compile(r"= (\d+)/s, (\d+) batches \(avg (\d+) per batch\)")
SHAPES = [("ongoing conversations (4 peers per user)", ["--peers", "4"]),
          ("a random recipient per message", [])]
PSQL = ["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres"]
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except FileNotFoundError:
        return None


def stored(name):
    out = subprocess.run(PSQL + ["-d", name, "-c", "SELECT count(*) FROM messages"],
                         check=True, capture_output=True, text=True).stdout
    return int(out.strip())


def statements(name):
    """Per-statement execution time of database `name`, or None without pg_stat_statements."""
    query = ("SELECT round(total_exec_time::numeric, 1), calls, "
             "left(regexp_replace(query, '\\s+', ' ', 'g'), 72) FROM pg_stat_statements s "
             f"JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = '{name}' AND query NOT LIKE '--%' "
             "AND query NOT LIKE 'CREATE %' ORDER BY total_exec_time DESC LIMIT 8")
    subprocess.run(PSQL + ["-d", name, "-c", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"],
                   capture_output=True)
    out = subprocess.run(PSQL + ["-F", "\t", "-d", name, "-c", query], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def one_run(binary, shape_args, seconds, window):
    """One fresh database, one run; PostgreSQL CPU µs per message stored during the window."""
    name, url, drop = run.scratch_postgres("_pgcpu")
    try:
        cmd = [binary, url, "--users", "1000", *shape_args, "--seconds", str(seconds)]
        shown = " ".join(["examples/append", "postgres://…/SCRATCH", *cmd[2:]])
        if shown not in {s for _, s in run.COMMANDS}:
            run.COMMANDS.append(("store benchmark", shown))
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        time.sleep((seconds - window) / 2)
        pids = run.postgres_pids(name)
        before = {pid: cpu_seconds(pid) for pid in pids}
        n0, t0 = stored(name), time.time()
        time.sleep(window)
        used = 0.0
        for pid in run.postgres_pids(name):
            now = cpu_seconds(pid)
            if now is not None:
                used += now - (before.get(pid) or 0.0)
        n1, t1 = stored(name), time.time()
        out = proc.communicate()[0]
        if proc.returncode != 0 or not RATE.search(out):
            sys.exit(f"the store benchmark failed:\n{out}")
        breakdown = statements(name)
        total = stored(name)
        return {"us": used * 1e6 / max(n1 - n0, 1), "msg_s": (n1 - n0) / (t1 - t0),
                "breakdown": breakdown, "total": total}
    finally:
        drop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", default="", help="the store benchmark of the old build (optional)")
    ap.add_argument("--after", required=True, help="the store benchmark of the new build")
    ap.add_argument("--runs", type=int, default=3, help="runs per build and shape (alternating)")
    ap.add_argument("--seconds", type=float, default=30, help="length of each run")
    ap.add_argument("--window", type=float, default=20, help="measured seconds in the middle of each run")
    ap.add_argument("--out", default="", help="write the report to this markdown file")
    opts = ap.parse_args()
    builds = [("before", opts.before)] if opts.before else []
    builds.append(("after", opts.after))
    rows, breakdowns = [], []
    for label, shape_args in SHAPES:
        results = {build: [] for build, _ in builds}
        for _ in range(opts.runs):
            for build, binary in builds:
                r = one_run(binary, shape_args, opts.seconds, opts.window)
                print(f"{build} {label}: {r['us']:.1f} µs/msg at {r['msg_s']:.0f} msg/s", flush=True)
                results[build].append(r)
        cells = []
        for build, _ in builds:
            us = [r["us"] for r in results[build]]
            cells.append(f"{run.median(us):.1f} ({min(us):.1f}–{max(us):.1f})")
            cells.append(f"{run.median([r['msg_s'] for r in results[build]]):,.0f}")
            last = results[build][-1]
            if last["breakdown"]:
                breakdowns.append((build, label, last))
        if opts.before:
            ratio = run.median([r["us"] for r in results["after"]]) / run.median([r["us"] for r in results["before"]])
            cells.append(f"{ratio:.2f}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    head = ["traffic"]
    for build, _ in builds:
        head += [f"database CPU µs/msg, {build} (range)", f"msg/s, {build}"]
    if opts.before:
        head.append("after / before")
    lines = ["# Benchmark: PostgreSQL's CPU per stored message, the store alone", "",
             f"Generated by `python3 bench/pg_store_cpu.py{' --before BEFORE' if opts.before else ''} --after AFTER "
             f"--runs {opts.runs}` on {datetime.date.today()} ({run.machine()}); {opts.runs} alternating runs of "
             f"{opts.seconds:g} s per build and traffic, a fresh database each, CPU of the database's PostgreSQL "
             f"processes over the middle {opts.window:g} s divided by the messages stored meanwhile; medians. "
             "Targets (issue #14): ≤ 20 µs in ongoing conversations, ≤ 40 µs when most messages open a "
             "conversation.", "",
             "| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * len(head)) + " |", *rows, ""]
    for build, label, last in breakdowns:
        lines += [f"By statement, {build}, {label} (last run, `pg_stat_statements`: execution time inside the "
                  f"server per stored message, {last['total']:,} messages):", "",
                  "| µs per message | calls | statement |", "| --- | --- | --- |"]
        for ms, calls, query in last["breakdown"]:
            lines.append(f"| {float(ms) * 1000 / max(last['total'], 1):.1f} | {calls} | `{query}…` |")
        lines.append("")
    compare.publish(lines, opts.out)


if __name__ == "__main__":
    main()
