#!/usr/bin/env python3
"""What the full-text search index costs the group commit, per database, in one run.

For each database two fresh scratch databases are created with the store's migrations (by a
one-second run of the store benchmark), and the search index is dropped from the second one
(SQLite: the FTS5 table and its triggers; PostgreSQL: the GIN index and the generated tsvector
column; MariaDB: the FULLTEXT index and the generated lower-cased copy). Then the store
benchmark (crates/gatehouse-store/examples/append.rs: 1,000 senders with 4 peers each through
one group committer, as the chat worker appends) runs against both, alternating with and
without, and the medians are compared. Issue #13's budget: the index may cut the group
commit's throughput by at most 20 %.

    cargo build --release -p gatehouse-store --example append
    python3 bench/search_index.py                 # 5 alternating pairs of 5 s per database
    python3 bench/search_index.py --out docs/benchmarks-search.md

The texts are varied (a vocabulary of 2,000 words, 6 words per message, chosen per message)
so that the index sees realistic postings rather than one repeated phrase.
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the report writer)
import run  # noqa: E402  (machine description, medians, scratch databases)

APPEND = os.path.join(run.ROOT, "target", "release", "examples", "append")
SHOWN = []  # the commands reported once each
RATE = re.compile(r"= (\d+)/s, (\d+) batches \(avg (\d+) per batch\)")

# Statements that remove the search index and everything that maintains it.
DROP = {
    "sqlite": ["DROP TRIGGER message_search_insert", "DROP TRIGGER message_search_update",
               "DROP TABLE message_search"],
    "postgres": ["DROP INDEX messages_search", "ALTER TABLE messages DROP COLUMN search"],
    "mariadb": ["ALTER TABLE messages DROP INDEX messages_search",
                "ALTER TABLE messages DROP COLUMN search_text"],
}


class Database:
    """One scratch database: its URL, how to run SQL in it, how to drop it."""

    def __init__(self, backend, label):
        self.backend = backend
        if backend == "sqlite":
            self.dir = tempfile.mkdtemp(prefix=f"gatehouse-search-{label}-")
            self.path = os.path.join(self.dir, "chat.db")
            self.url = f"sqlite://{self.path}"
            self.drop = lambda: None
        elif backend == "postgres":
            self.name, self.url, self.drop = run.scratch_postgres(f"_{label}")
        else:
            self.name, self.url, self.drop = run.scratch_mariadb(f"_{label}")

    def sql(self, statement):
        if self.backend == "sqlite":
            cmd = ["sqlite3", self.path, statement]
        elif self.backend == "postgres":
            cmd = ["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", self.name, "-c", statement]
        else:
            cmd = run.MARIADB + ["-e", statement, self.name]
        subprocess.run(cmd, check=True, capture_output=True, text=True)


def append(db, seconds):
    """One run of the store benchmark; messages appended per second."""
    cmd = [APPEND, db.url, "--users", "1000", "--peers", "4", "--seconds", str(seconds), "--vary-text"]
    shown = " ".join(["examples/append", re.sub(r"gatehouse_bench_\w+|/tmp/[^/]+", "SCRATCH", db.url), *cmd[2:]])
    if (db.backend, shown) not in {(b, s) for b, s in SHOWN}:
        SHOWN.append((db.backend, shown))
        run.COMMANDS.append((f"{db.backend}", shown))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    match = RATE.search(out)
    if not match:
        sys.exit(f"unexpected output from {' '.join(cmd)}:\n{out}")
    return {"msg_s": int(match.group(1)), "per_batch": int(match.group(3))}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="alternating pairs per database")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--databases", default="sqlite,postgres,mariadb")
    ap.add_argument("--out", default="", help="write the report to this markdown file")
    opts = ap.parse_args()
    if not os.path.exists(APPEND):
        sys.exit(f"{APPEND} is missing: cargo build --release -p gatehouse-store --example append")
    rows = []
    for backend in opts.databases.split(","):
        with_index, without = Database(backend, "with"), Database(backend, "without")
        try:
            for db in (with_index, without):
                append(db, 1)  # creates the schema (migrations) and a little history
            for statement in DROP[backend]:
                without.sql(statement)
            pairs = [(append(with_index, opts.seconds), append(without, opts.seconds)) for _ in range(opts.runs)]
        finally:
            with_index.drop()
            without.drop()
        w = run.median([p[0]["msg_s"] for p in pairs])
        wo = run.median([p[1]["msg_s"] for p in pairs])
        per_pair = [p[0]["msg_s"] / p[1]["msg_s"] for p in pairs]
        print(f"{backend}: with {w:.0f}/s, without {wo:.0f}/s, with/without {w / wo:.3f} "
              f"(pairs {min(per_pair):.2f}–{max(per_pair):.2f})", flush=True)
        rows.append(f"| {backend} | {w:.0f} | {wo:.0f} | {w / wo:.2f} ({min(per_pair):.2f}–{max(per_pair):.2f}) "
                    f"| {run.median([p[0]['per_batch'] for p in pairs]):.0f} / {run.median([p[1]['per_batch'] for p in pairs]):.0f} |")
    lines = ["# Benchmark: the search index in the group commit", "",
             f"Generated by `python3 bench/search_index.py` on {datetime.date.today()} ({run.machine()}); "
             f"{opts.runs} alternating pairs of {opts.seconds:g} s per database, medians. The store alone "
             "(`examples/append`, release build): 1,000 senders with 4 peers each through one group committer, "
             "varied texts; the same schema with and without the search index. Budget (issue #13): the index "
             "costs at most 20 % of the group commit's throughput, i.e. with/without ≥ 0.80.", "",
             "| database | msg/s with the index | msg/s without | with / without (range over pairs) | messages per batch with / without |",
             "| --- | --- | --- | --- | --- |", *rows, ""]
    compare.publish(lines, opts.out)


if __name__ == "__main__":
    main()
