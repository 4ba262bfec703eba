#!/usr/bin/env python3
"""The gatehouse benchmark suite.

Starts real processes with the release binary (a one-hop baseline relay, the two-hop
reference of `gatehouse bench hop`, and clusters of one registry, two gateways and two
workers), drives them with `gatehouse bench run`, takes the median of several runs per
scenario, and writes docs/benchmarks.md with the machine, the exact commands, the figures and
their ratios to the baseline measured in the same run.

    cargo build --release -p gatehouse-cli
    python3 bench/run.py                 # everything, 3 runs per scenario (~15 min)
    python3 bench/run.py --runs 1 --only dm,chat --no-write   # a quick look
    python3 bench/run.py --only chatmix --out docs/benchmarks-chatmix.md   # one section, its own file

It needs nothing but Python 3 and, for the PostgreSQL and MariaDB chat figures, servers at
127.0.0.1:5432 and 127.0.0.1:3306 (the `psql` and `mariadb` clients create and drop a scratch
database).
"""

import argparse
import html
import math
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "gatehouse")
SECRET = "bench-cluster-secret"
LISTENING = re.compile(r'listening kind="?(\w+)"? addr=([0-9.:]+)')
COMMANDS = []  # every bench command run, for the report


class Proc:
    """A child process whose `listening kind=… addr=…` lines are parsed from stderr."""

    def __init__(self, name, args, expect=(), binary=None):
        self.name = name
        self.args = args
        self.addrs = {}
        self.lines = []
        self.p = subprocess.Popen([binary or BIN] + args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True, env=dict(os.environ, RUST_LOG="warn,gatehouse=info,gatehouse_registry=info,gatehouse_gateway=info,gatehouse_sdk=info,gatehouse_api=info"))
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 30
        with self._cond:
            while not all(k in self.addrs for k in expect):
                if self.p.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"{name} did not start:\n" + "\n".join(self.lines[-20:]))
                self._cond.wait(0.1)

    def _read(self):
        for line in self.p.stderr:
            with self._cond:
                self.lines.append(line.rstrip())
                m = LISTENING.search(line)
                if m and "listening" in line:
                    self.addrs.setdefault(m.group(1), m.group(2))
                self._cond.notify_all()

    def wait_log(self, needle, timeout=30):
        deadline = time.time() + timeout
        with self._cond:
            while not any(needle in l for l in self.lines):
                if time.time() > deadline:
                    raise RuntimeError(f"{self.name} never logged {needle!r}")
                self._cond.wait(0.1)

    @property
    def pid(self):
        return self.p.pid

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Cluster:
    """One registry, N gateways, M workers of `app`.

    Every process gets `threads` runtime threads (`--threads`; None = one per core). Five
    server processes and the load generator share this machine's cores, so the suite gives
    each server process one thread: with a thread per core each, every event would also wake
    a second runtime thread of its process.
    """

    def __init__(self, app, gateways=2, workers=2, worker_args=(), gateway_args=(), threads=1, binary=None, tls=None):
        """`tls`: a directory made by `gatehouse cert`: mutual TLS between every member (no
        cluster secret) and wss:// on the gateways."""
        self.procs = []
        self.threads = threads
        self.binary = binary
        self.tls = tls
        if tls:
            cred = ["--cluster-tls-dir", tls]
            gateway_args = [*gateway_args, "--tls-cert", os.path.join(tls, "server.pem"),
                            "--tls-key", os.path.join(tls, "server-key.pem")]
        else:
            cred = ["--cluster-secret", SECRET]
        # Every process gets an admin listener on a free port (several share this machine).
        # Builds from before the admin listener served /readyz and /metrics on the public port
        # (bench/compare.py runs them side by side with today's).
        self.has_admin = has_flag(binary or BIN, "gateway", "--admin-listen")
        self.needs_consent = has_flag(binary or BIN, "worker", "--allow-unauthenticated")
        admin = ["--admin-listen", "127.0.0.1:0"] if self.has_admin else []
        kinds = ["admin"] if self.has_admin else []
        reg = self._start("registry", ["registry", "--listen", "127.0.0.1:0", *cred, *admin],
                          ["grpc", *kinds])
        self.registry = reg.addrs["grpc"]
        self.gateways = [self._start(f"gateway-{i}", ["gateway", "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0",
                                                       "--registry", self.registry, *cred,
                                                       *admin, *gateway_args], ["ws", "grpc", *kinds])
                         for i in range(gateways)]
        self.workers = []
        for i in range(workers):
            # relay authenticates nobody: a benchmark-only app, allowed explicitly.
            # (Builds from before the flag allowed it implicitly: bench/compare.py runs them.)
            unauth = ["--allow-unauthenticated"] if app in ("relay", "api") and self.needs_consent else []
            w = self._start(f"worker-{i}", ["worker", "--registry", self.registry, "--app", app,
                                            *cred, *admin, *unauth, *worker_args], kinds)
            w.wait_log("worker started")
            self.workers.append(w)
        # Measure the steady state: until the registry's warm-up is over, workers cannot trust
        # their routing table and send every uid or group command to every gateway.
        for w in self.workers:
            w.wait_log("routing table trusted", timeout=60)
        # Wait until every gateway sees every worker.
        deadline = time.time() + 30
        for g in self.gateways:
            while not re.search(f'"workers":{workers}[,}}]', http_get(admin_addr(g), "/readyz")):
                if time.time() > deadline:
                    raise RuntimeError("workers never attached")
                time.sleep(0.05)

    def _start(self, name, args, expect):
        if self.threads:
            args = ["--threads", str(self.threads), *args]
        p = Proc(name, args, expect, self.binary)
        self.procs.append(p)
        return p

    def urls(self):
        scheme = "wss" if self.tls else "ws"
        return [f"{scheme}://{g.addrs['ws']}/ws" for g in self.gateways]

    def client_args(self):
        """What the load generator needs to reach these gateways (the CA of wss://)."""
        return ["--ca", os.path.join(self.tls, "ca.pem")] if self.tls else []

    def pids(self):
        return [p.pid for p in self.procs]

    def stop(self):
        for p in reversed(self.procs):
            p.stop()


def busy(total, rate, per_proc=15000):
    """`total` relay clients over one gateway per 15,000 (a process may hold 20,000 open files),
    exchanging `rate` direct messages per second in all: one load generator per 15,000 clients,
    each on its own source addresses, each offering its share of the rate among its own clients
    (spread over every gateway). Every generator connects, then sends through a warm-up long
    enough for the slowest one to finish connecting, so that their measured windows overlap."""
    gateways = max(2, (total + per_proc - 1) // per_proc)
    print(f"busy: {total} connections over {gateways} gateways, {rate} msg/s among them", flush=True)
    cl = Cluster("relay", gateways=gateways)
    before = {g.pid: rss_kb(g.pid) for g in cl.gateways}
    warmup, duration = 20 + total / 2500, 20
    procs = []
    for i in range(0, total, per_proc):
        n = min(per_proc, total - i)
        cmd = [BIN, "bench", "run", "-q", "--scenario", "dm", "--clients", str(n), "--mode", "open",
               "--rate", str(max(1, rate * n // total)), "--duration", str(duration), "--warmup", str(warmup),
               "--drain", "5", "--uid-prefix", f"b{i}-", "--connect-concurrency", "256",
               "--source-ips", f"127.0.{1 + i // per_proc}.1-127.0.{1 + i // per_proc}.40"]
        for pid in cl.pids():
            cmd += ["--server-pid", str(pid)]
        for u in cl.urls():
            cmd += ["--url", u]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    COMMANDS.append((f"busy {total}", f"{len(procs)} × gatehouse bench run --scenario dm --mode open --rate {rate}/{len(procs)} "
                     f"--clients ≤{per_proc} --warmup {warmup:g} --duration {duration} --url … (one per 15k clients, "
                     "each on its own 127.0.x.y source range)"))
    # Memory while every connection is held and traffic flows: sampled in the middle of the window.
    time.sleep(warmup + duration / 2)
    after = {g.pid: rss_kb(g.pid) for g in cl.gateways}
    conns = {g.pid: gauge(g, "gatehouse_gateway_connections") for g in cl.gateways}
    reports = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"busy load generator failed: {err[-2000:]}")
        reports.append(json.loads(out.strip().splitlines()[-1]))
    cl.stop()
    held = sum(conns.values())
    result = {
        "clients": total, "gateways": gateways, "held": held, "rate": rate,
        "delivered_per_sec": sum(r["delivered_per_sec"] for r in reports),
        "lost": sum(r["lost"] for r in reports), "duplicated": sum(r["duplicated"] for r in reports),
        "sent": sum(r["sent"] for r in reports),
        "p50": max(r["latency_us"]["p50"] for r in reports), "p99": max(r["latency_us"]["p99"] for r in reports),
        "p999": max(r["latency_us"]["p999"] for r in reports),
        "bytes_per_conn": median([(after[p] - before[p]) * 1024 / max(conns[p], 1) for p in after]),
        "connected": sum(r.get("connected", 0) for r in reports),
    }
    print(f"  busy {total}: {result['delivered_per_sec']:.0f} delivered/s, lost {result['lost']}, p99 {result['p99']} µs, "
          f"{result['bytes_per_conn']:.0f} bytes per connection", flush=True)
    return result


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Rolling:
    """The docker-compose.yml topology as processes on loopback, for the rolling-restart
    scenario: two registries, two gateways (wss://) behind Debian's HAProxy with
    deploy/haproxy.cfg, two chat workers on PostgreSQL, mutual TLS from `gatehouse cert`, chat
    tokens signed with a JWT secret. Every process has fixed ports, so it can be stopped
    (SIGTERM, it drains) and started again in place, as a rolling deploy does."""

    JWT = "bench-rolling-restart-secret-of-32-bytes"

    def __init__(self, database_url, drain="5s"):
        self.tls = tempfile.mkdtemp(prefix="gatehouse-rolling-tls-")
        subprocess.run([BIN, "cert", "--out", self.tls, "--force"], check=True, capture_output=True)
        with open(f"{self.tls}/haproxy.pem", "w") as bundle:
            for name in ("server.pem", "server-key.pem"):
                with open(f"{self.tls}/{name}") as part:
                    bundle.write(part.read())
        self.ports = {}
        registries = ",".join(f"127.0.0.1:{self.port('registry', i, 'grpc')}" for i in (1, 2))
        cluster = ["--cluster-tls-dir", self.tls, "--threads", "1"]
        self.specs = {}
        for i in (1, 2):
            self.specs[f"registry-{i}"] = ["registry", "--listen", f"127.0.0.1:{self.port('registry', i, 'grpc')}",
                                           "--admin-listen", f"127.0.0.1:{self.port('registry', i, 'admin')}", *cluster]
        for i in (1, 2):
            self.specs[f"worker-{i}"] = ["worker", "--app", "chat", "--registry", registries, "--database-url", database_url,
                                         "--jwt-secret", self.JWT, "--admin-listen", f"127.0.0.1:{self.port('worker', i, 'admin')}",
                                         *cluster]
        for i in (1, 2):
            self.specs[f"gateway-{i}"] = ["gateway", "--listen", f"127.0.0.1:{self.port('gateway', i, 'wss')}",
                                          "--internal", f"127.0.0.1:{self.port('gateway', i, 'grpc')}", "--registry", registries,
                                          "--admin-listen", f"127.0.0.1:{self.port('gateway', i, 'admin')}", "--drain", drain,
                                          "--tls-cert", f"{self.tls}/server.pem", "--tls-key", f"{self.tls}/server-key.pem",
                                          "--trusted-proxies", "127.0.0.1/32", *cluster]
        self.procs = {}
        # Registries, then gateways, then workers; a worker is ready once it links to the
        # gateways, so everything starts before anything is waited for.
        for name in ["registry-1", "registry-2", "gateway-1", "gateway-2", "worker-1", "worker-2"]:
            self.start(name, wait=False)
        for name in self.procs:
            self.wait_ready(name)
        self.lb_port = free_port()
        self.haproxy = self.start_haproxy()

    def port(self, role, index, kind):
        return self.ports.setdefault((role, index, kind), free_port())

    def admin(self, name):
        role, index = name.rsplit("-", 1)
        return f"127.0.0.1:{self.port(role, int(index), 'admin')}"

    def start(self, name, wait=True):
        self.procs[name] = Proc(name, self.specs[name])
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name):
        deadline = time.time() + 60
        while " 200 " not in http_get(self.admin(name), "/readyz").split("\r\n", 1)[0]:
            if time.time() > deadline:
                raise RuntimeError(f"{name} never became ready:\n" + "\n".join(self.procs[name].lines[-20:]))
            time.sleep(0.1)

    def start_haproxy(self):
        """deploy/haproxy.cfg with its addresses and /tls mapped onto loopback (as tests/deploy.rs does)."""
        out, skip = [], False
        with open(os.path.join(ROOT, "deploy", "haproxy.cfg")) as f:
            for line in f:
                if line.strip() and not line.startswith((" ", "#")):
                    skip = line.startswith("resolvers ")
                if skip:
                    continue
                line = line.replace(" resolvers docker", "").replace("/tls/", self.tls + "/")
                line = line.replace("bind :8443", f"bind 127.0.0.1:{self.lb_port}").replace("bind :8404", f"bind 127.0.0.1:{free_port()}")
                for i in (1, 2):
                    line = line.replace(f"gateway-{i}:8443", f"127.0.0.1:{self.port('gateway', i, 'wss')}")
                    line = line.replace(f"addr gateway-{i} port 9100", f"addr 127.0.0.1 port {self.port('gateway', i, 'admin')}")
                out.append(line)
        config = os.path.join(self.tls, "haproxy.cfg")
        with open(config, "w") as f:
            f.writelines(out)
        haproxy = subprocess.Popen(["/usr/sbin/haproxy", "-db", "-f", config], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        import socket
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.lb_port), timeout=1).close()
                return haproxy
            except OSError:
                if haproxy.poll() is not None or time.time() > deadline:
                    raise RuntimeError("haproxy did not start: " + (haproxy.stderr.read() if haproxy.poll() is not None else ""))
                time.sleep(0.05)

    def url(self):
        return f"wss://localhost:{self.lb_port}/ws"

    def restart_all(self, order, log):
        """Stops each process with SIGTERM (waiting for its drain and exit) and starts it again,
        one at a time; a restarted gateway is back in HAProxy's rotation before the next one."""
        started = time.time()
        for name in order:
            proc = self.procs[name]
            proc.p.terminate()
            code = proc.p.wait(60)
            if code != 0:
                raise RuntimeError(f"{name} exited with {code}")
            self.start(name)
            if name.startswith("gateway"):
                deadline = time.time() + 30
                while gauge_at(self.admin(name), "gatehouse_gateway_connections") == 0:
                    if time.time() > deadline:
                        raise RuntimeError(f"HAProxy never sent a client to {name}")
                    self.probe_client()
            log.append((name, time.time() - started))
        return time.time() - started

    def probe_client(self):
        """One short wss connection through HAProxy (least connections: it lands on an empty
        gateway as soon as HAProxy has it in rotation)."""
        token = subprocess.run([BIN, "token", "--uid", "probe", "--jwt-secret", self.JWT], check=True,
                               capture_output=True, text=True).stdout.strip()
        import socket
        import ssl
        ctx = ssl.create_default_context(cafile=f"{self.tls}/ca.pem")
        try:
            with socket.create_connection(("127.0.0.1", self.lb_port), timeout=2) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                    tls.sendall((f"GET /ws?token={token} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                 "Sec-WebSocket-Version: 13\r\n\r\n").encode())
                    tls.recv(4096)
                    time.sleep(0.3)
        except OSError:
            time.sleep(0.2)

    def pids(self):
        return [p.pid for p in self.procs.values()]

    def stop(self):
        self.haproxy.kill()
        for p in self.procs.values():
            p.stop()


def gauge_at(addr, name):
    m = re.search(rf"^{name} ([0-9.eE+]+)", http_get(addr, "/metrics"), re.M)
    return int(float(m.group(1))) if m else 0


def http_get(addr, path):
    import socket
    try:
        with socket.create_connection(tuple([addr.rsplit(":", 1)[0], int(addr.rsplit(":", 1)[1])]), timeout=2) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        return data.decode(errors="replace")
    except OSError:
        return ""


def bench(urls, args, pids=(), label="", db_pids=()):
    """Runs one `gatehouse bench run` and returns its JSON report."""
    cmd = [BIN, "bench", "run", "-q"]
    for u in urls:
        cmd += ["--url", u]
    cmd += [str(a) for a in args]
    for pid in pids:
        cmd += ["--server-pid", str(pid)]
    for pid in db_pids:
        cmd += ["--db-pid", str(pid)]
    shown = " ".join(shlex.quote(c) for c in cmd).replace(BIN, "gatehouse")
    shown = re.sub(r"--server-pid \d+", "--server-pid PID", shown)
    shown = re.sub(r"--db-pid \d+", "--db-pid PID", shown)
    shown = re.sub(r"(wss?)://127\.0\.0\.1:\d+/ws", r"\1://GATEWAY/ws", shown)
    shown = re.sub(r"--ca \S+", "--ca CA.pem", shown)
    if (label, shown) not in COMMANDS:
        COMMANDS.append((label, shown))
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"bench failed: {out.stderr.split('Stack backtrace')[0][-2000:]}")
    report = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"  {label}: {summary(report)}", flush=True)
    return report


def server_cpu_us_per_delivered(report):
    value = report.get("server_cpu_us_per_delivered")
    return value if value is not None else float("nan")


# Threads of a chat worker that do the storage work: sqlx's SQLite connection threads and the
# group committer (thread names are cut to 15 bytes by Linux).
STORAGE_THREADS = ("sqlx-sqlite", "group-commit")


def storage_cpu_us(report):
    """CPU µs per delivered message spent on storage: the workers' storage threads plus the
    database server's processes (`--db-pid`)."""
    threads = sum(t["cpu_us_per_delivered"] or 0 for s in report.get("servers", []) for t in s.get("threads", [])
                  if t["name"].startswith(STORAGE_THREADS))
    return threads + (report.get("database_cpu_us_per_delivered") or 0)


def generator_cpu_us(report):
    value = report.get("load_generator", {}).get("cpu_us_per_delivered")
    return value if value is not None else float("nan")


def summary(r):
    lat = r.get("latency_us", {})
    storage = storage_cpu_us(r)
    return (f"delivered {r.get('delivered')} ({r.get('delivered_per_sec', 0):.0f}/s) lost {r.get('lost')} dup {r.get('duplicated')} "
            f"p50 {lat.get('p50')}us p99 {lat.get('p99')}us cpu/msg {server_cpu_us_per_delivered(r):.1f}us"
            + (f" (storage {storage:.1f}us)" if storage else ""))


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def runs_of(n, fn):
    return [fn() for _ in range(n)]


def median_run(reports, key):
    """The run whose p99 of `key` is the median one (the run a plot shows)."""
    runs = sorted((r for r in reports if r.get(key)), key=lambda r: p99_of(r[key]))
    return runs[len(runs) // 2] if runs else None


def p99_of(curve):
    return next((p["us"] for p in curve if p["quantile"] >= 0.99), 0)


def agg(reports):
    """Median of each figure over runs, plus the latency curve of the median run."""
    dist = median_run(reports, "latency_distribution_us")
    ack = median_run(reports, "ack_latency_distribution_us")
    return {
        "dist": dist["latency_distribution_us"] if dist else [],
        "ack_dist": ack["ack_latency_distribution_us"] if ack else [],
        "delivered_per_sec": median([r["delivered_per_sec"] for r in reports]),
        "p50": median([r["latency_us"]["p50"] for r in reports]),
        "p99": median([r["latency_us"]["p99"] for r in reports]),
        "p999": median([r["latency_us"]["p999"] for r in reports]),
        "cpu_us": median([server_cpu_us_per_delivered(r) for r in reports]),
        "lost": sum(r["lost"] for r in reports),
        "duplicated": sum(r["duplicated"] for r in reports),
        "sent": sum(r["sent"] for r in reports),
        "runs": len(reports),
        "acked_per_sec": median([(r.get("acked") or 0) / r["duration_seconds"] for r in reports]),
        "ack_p50": median([(r.get("ack_latency_us") or {}).get("p50", float("nan")) for r in reports]),
        "ack_p99": median([(r.get("ack_latency_us") or {}).get("p99", float("nan")) for r in reports]),
        # CPU µs per delivered message: storage (worker storage threads + database server), the
        # servers' other work, and the load generator.
        "storage_us": median([storage_cpu_us(r) for r in reports]),
        "other_us": median([server_cpu_us_per_delivered(r) + (r.get("database_cpu_us_per_delivered") or 0) - storage_cpu_us(r)
                            for r in reports]),
        "generator_us": median([generator_cpu_us(r) for r in reports]),
        # The database server's part of `storage_us` (PostgreSQL's or MariaDB's processes; None
        # for SQLite, which runs inside the worker).
        "db_us": median([r.get("database_cpu_us_per_delivered") for r in reports
                         if r.get("database_cpu_us_per_delivered") is not None]),
    }


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"


def postgres_pids(database):
    """The PostgreSQL processes that serve `database`: its backends, and the server's WAL writer,
    checkpointer and background writer, which write what every backend commits."""
    query = (f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}' "
             "OR backend_type IN ('walwriter', 'checkpointer', 'background writer')")
    out = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c", query],
                         check=True, capture_output=True, text=True)
    return [int(line) for line in out.stdout.split()]


def postgres_messages(database):
    out = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-c",
                          "SELECT count(*) FROM messages"], check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def sqlite_messages(path):
    import sqlite3
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]


MARIADB = ["mariadb", "--protocol=tcp", "-h", "127.0.0.1", "-P", "3306", "-u", "root", "-N", "-B"]


def mariadb_pids():
    """The MariaDB server process: one process whose threads serve every connection and write the
    redo log (other databases' clients on the machine count too: keep the server otherwise idle)."""
    out = subprocess.run(["pgrep", "-x", "mariadbd|mysqld"], capture_output=True, text=True)
    return [int(line) for line in out.stdout.split()]


def mariadb_messages(database):
    out = subprocess.run(MARIADB + ["-e", "SELECT count(*) FROM messages", database],
                         check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def scratch_mariadb(suffix=""):
    name = f"gatehouse_bench_{os.getpid()}{suffix}"
    subprocess.run(MARIADB + ["-e", f"DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"],
                   check=True, capture_output=True)
    return name, f"mysql://root@127.0.0.1:3306/{name}", lambda: subprocess.run(
        MARIADB + ["-e", f"DROP DATABASE IF EXISTS {name}"], capture_output=True)


def scratch_postgres(suffix=""):
    name = f"gatehouse_bench_{os.getpid()}{suffix}"
    admin = ["psql", "-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-c"]
    subprocess.run(admin + [f"DROP DATABASE IF EXISTS {name}"], check=True, capture_output=True)
    subprocess.run(admin + [f"CREATE DATABASE {name}"], check=True, capture_output=True)
    return name, f"postgres://postgres@127.0.0.1:5432/{name}", lambda: subprocess.run(
        admin + [f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"], capture_output=True)


# The chat scenario's databases, in the order of the report.
CHAT_BACKENDS = ["sqlite", "postgres", "mariadb"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario (the median is reported)")
    ap.add_argument("--duration", type=float, default=8, help="measured seconds per run")
    ap.add_argument("--clients", type=int, default=1000, help="clients for dm and chat")
    ap.add_argument("--only", default="", help="comma-separated subset: dm,fanout,broadcast,idle,busy,chat,chatsink,chatmix,rolling,routing")
    ap.add_argument("--idle-big", type=int, default=100000, help="connections for the largest idle run, besides 10k and 50k (0 skips)")
    ap.add_argument("--busy-clients", type=int, default=100000, help="connections of the busy scenario (0 skips)")
    ap.add_argument("--busy-rate", type=int, default=10000, help="direct messages per second among them")
    ap.add_argument("--no-write", action="store_true", help="print only; do not rewrite docs/benchmarks.md")
    ap.add_argument("--out", default="", help="write the report here instead of docs/benchmarks.md (required with --only, "
                    "so that a partial run never replaces the full report)")
    ap.add_argument("--rolling-rate", type=int, default=1000, help="chat msg/s offered during the rolling-restart scenario")
    ap.add_argument("--rolling-duration", type=int, default=60, help="measured seconds of the rolling-restart load (must outlast the restarts)")
    opts = ap.parse_args()
    only = set(filter(None, opts.only.split(",")))
    want = lambda s: not only or s in only
    if only and not opts.no_write and not opts.out:
        sys.exit("a partial run (--only) writes its report with --out FILE, or prints it with --no-write")
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release -p gatehouse-cli")

    common = ["--duration", opts.duration, "--warmup", 2, "--drain", 3]
    results = {}

    if want("dm"):
        # Baseline and cluster run side by side and their runs alternate, so that a noisy minute
        # on this shared machine hits both rather than one.
        print("dm: one-hop baseline, two-hop reference and cluster (relay), alternating", flush=True)
        base = Proc("baseline", ["bench", "baseline", "--listen", "127.0.0.1:0"], ["ws"])
        burl = [f"ws://{base.addrs['ws']}/ws"]
        # The two-hop reference: the cluster's shape (two edges, two processes in the middle,
        # one thread each) with plain TCP records instead of gRPC, and no acks or registry.
        hops = [Proc(f"hop-{i}", ["--threads", "1", "bench", "hop", "--listen", "127.0.0.1:0"], ["hop"]) for i in range(2)]
        via = [a for h in hops for a in ("--hop", h.addrs["hop"])]
        edges = [Proc(f"edge-{i}", ["--threads", "1", "bench", "baseline", "--listen", "127.0.0.1:0", *via], ["ws"]) for i in range(2)]
        hurl = [f"ws://{e.addrs['ws']}/ws" for e in edges]
        hpids = [p.pid for p in hops + edges]
        cl = Cluster("relay")
        dm = ["--scenario", "dm", "--clients", opts.clients]
        closed = [*dm, "--mode", "closed", "--inflight", 1, *common]
        at = lambda rate: [*dm, "--mode", "open", "--rate", rate, *common]

        def triples(args, what):
            return [(bench(burl, args, [base.pid], f"baseline dm {what}"), bench(hurl, args, hpids, f"two-hop dm {what}"),
                     bench(cl.urls(), args, cl.pids(), f"cluster dm {what}")) for _ in range(opts.runs)]

        def keep(runs, key):
            for i, name in enumerate(["base", "hop", "cl"]):
                results[f"{name}_{key}"] = agg([t[i] for t in runs])

        runs = triples(closed, "max")
        keep(runs, "max")
        results["pair_ratios"] = {
            "throughput": [c["delivered_per_sec"] / b["delivered_per_sec"] for b, _, c in runs],
            "cpu": [server_cpu_us_per_delivered(c) / server_cpu_us_per_delivered(b) for b, _, c in runs],
            "hop_throughput": [h["delivered_per_sec"] / b["delivered_per_sec"] for b, h, _ in runs],
            "hop_cpu": [server_cpu_us_per_delivered(h) / server_cpu_us_per_delivered(b) for b, h, _ in runs],
        }
        runs = triples(at(5000), "5k/s")
        keep(runs, "5k")
        results["pair_ratios"]["p99_5k_ms"] = [(c["latency_us"]["p99"] - b["latency_us"]["p99"]) / 1000 for b, _, c in runs]
        results["pair_ratios"]["hop_p99_5k_ms"] = [(h["latency_us"]["p99"] - b["latency_us"]["p99"]) / 1000 for b, h, _ in runs]
        half = int(results["cl_max"]["delivered_per_sec"] / 2)
        results["half_rate"] = half
        keep(triples(at(half), "half max"), "half")
        # A light load, where nothing batches at all: what most deployments run at.
        keep(triples(at(500), "500/s"), "500")
        for p in edges + hops:
            p.stop()
        cl.stop()
        # The same cluster with the default runtime (a thread per core in every process), for
        # comparison: what an untuned deployment of five processes on two cores gets.
        print("dm: cluster with default threads", flush=True)
        cl = Cluster("relay", threads=None)
        results["cl_max_default_threads"] = agg(runs_of(opts.runs, lambda: bench(cl.urls(), closed, cl.pids(), "cluster dm max, default threads")))
        cl.stop()
        base.stop()

    if want("fanout"):
        print("fan-out: 10,000-member group over two gateways", flush=True)
        cl = Cluster("relay")
        args = ["--scenario", "group", "--clients", 10000, "--group-size", 10000, "--senders", 1, "--mode", "closed", "--inflight", 4,
                "--connect-concurrency", 256, *common]
        results["fanout"] = agg(runs_of(opts.runs, lambda: bench(cl.urls(), args, cl.pids(), "cluster group 10k")))
        cl.stop()
        base = Proc("baseline", ["bench", "baseline", "--listen", "127.0.0.1:0"], ["ws"])
        results["base_fanout"] = agg(runs_of(opts.runs, lambda: bench([f"ws://{base.addrs['ws']}/ws"], args, [base.pid], "baseline group 10k")))
        base.stop()

    if want("broadcast"):
        print("broadcast: 2,000 clients", flush=True)
        cl = Cluster("relay")
        results["broadcast"] = agg(runs_of(opts.runs, lambda: bench(cl.urls(), ["--scenario", "broadcast", "--clients", 2000, "--senders", 1, "--mode", "closed", "--inflight", 4, *common], cl.pids(), "cluster broadcast")))
        cl.stop()

    if want("idle"):
        results["idle"] = {}
        sizes = sorted({10000, 50000, opts.idle_big} - {0})
        for total, gateways in [(n, max(2, (n + 14999) // 15000)) for n in sizes]:
            if total <= 0:
                continue
            print(f"idle: {total} connections over {gateways} gateways", flush=True)
            cl = Cluster("relay", gateways=gateways)
            before = {g.pid: rss_kb(g.pid) for g in cl.gateways}
            per_proc = 15000
            procs = []
            hold = 20 + total / 2500
            for i in range(0, total, per_proc):
                n = min(per_proc, total - i)
                cmd = [BIN, "bench", "run", "-q", "--scenario", "idle", "--clients", str(n), "--duration", str(hold), "--warmup", "0",
                       "--drain", "0", "--uid-prefix", f"p{i}-", "--connect-concurrency", "256",
                       "--source-ips", f"127.0.{1 + i // per_proc}.1-127.0.{1 + i // per_proc}.40"]
                for u in cl.urls():
                    cmd += ["--url", u]
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            COMMANDS.append((f"idle {total}", f"{len(procs)} × gatehouse bench run --scenario idle --clients ≤{per_proc} --url … (one per 15k clients, each on its own 127.0.x.y source range)"))
            # Sample while every connection is held: when the gateways' open-connection gauges add up.
            deadline = time.time() + hold + 60
            held = 0
            while time.time() < deadline:
                held = sum(gauge(g, "gatehouse_gateway_connections") for g in cl.gateways)
                if held >= total:
                    break
                time.sleep(0.5)
            time.sleep(2)
            after = {g.pid: rss_kb(g.pid) for g in cl.gateways}
            conns = {g.pid: gauge(g, "gatehouse_gateway_connections") for g in cl.gateways}
            per_conn = median([(after[p] - before[p]) * 1024 / max(conns[p], 1) for p in after])
            for p in procs:
                p.wait()
            results["idle"][total] = {"held": held, "gateways": gateways, "bytes_per_conn": per_conn,
                                      "gateway_rss_mb": sum(after.values()) / 1024}
            print(f"  idle {total}: held {held}, {per_conn:.0f} bytes per connection per gateway", flush=True)
            cl.stop()

    if want("busy") and opts.busy_clients:
        results["busy"] = busy(opts.busy_clients, opts.busy_rate)

    if want("chat"):
        # Every configuration gets a fresh database and cluster: a store's cost per message grows
        # with what it holds, so configurations that shared one database would measure its
        # size as much as their traffic. The table states the size each one ended at.
        for backend in CHAT_BACKENDS:
            for suffix, extra in [("", []), ("_peers", ["--peers", 4])]:
                what = f"chat {backend}" + (" 4 peers" if extra else "")
                print(f"{what}: fresh database and cluster", flush=True)
                cleanup = None
                if backend == "sqlite":
                    tmp = tempfile.mkdtemp(prefix="gatehouse-bench-")
                    url = f"sqlite://{tmp}/chat.db"
                    count = lambda: sqlite_messages(f"{tmp}/chat.db")
                elif backend == "postgres":
                    database, url, cleanup = scratch_postgres()
                    count = lambda: postgres_messages(database)
                else:
                    database, url, cleanup = scratch_mariadb()
                    count = lambda: mariadb_messages(database)
                # SQLite is the single-node default: one writer process (two processes writing
                # one file fight over its lock). PostgreSQL and MariaDB are shared by two chat
                # workers.
                workers = 1 if backend == "sqlite" else 2
                # Bare-uid sign-in needs dev mode on the workers too; the load test sends far above
                # the per-connection default rate of a person (20 messages per second).
                cl = Cluster("chat", workers=workers, worker_args=["--database-url", url, "--insecure-dev-auth", "--chat-send-rate", "0"], gateway_args=["--insecure-dev-auth"])
                chat = ["--scenario", "chat", "--clients", opts.clients, "--mode", "closed", "--inflight", 1, *extra]
                # One short unmeasured run opens the workers' database connections (pools open
                # them on demand), so that every PostgreSQL backend is known before the measured
                # runs.
                bench(cl.urls(), [*chat, "--duration", 1, "--warmup", 1, "--drain", 3], cl.pids(), f"{what}, priming run (not reported)")
                db = {"postgres": lambda: postgres_pids(database), "mariadb": mariadb_pids}.get(backend, lambda: [])()
                results[f"chat_{backend}{suffix}"] = agg(runs_of(opts.runs, lambda: bench(cl.urls(), [*chat, *common], cl.pids(), what, db)))
                cl.stop()
                results[f"chat_{backend}{suffix}"]["messages_at_end"] = count()
                if cleanup:
                    cleanup()


    if want("chatsink"):
        # The chat path without its storage: the same load on two chat workers whose messages
        # go to an in-memory sink (`--chat-bench-discard-messages`, benchmarks only: the same
        # group-commit thread and batching, no database); sign-in still reads a shared
        # PostgreSQL database. Its CPU per message is compared with the relay's.
        print("chat, in-memory sink: fresh database and cluster", flush=True)
        database, url, cleanup = scratch_postgres("_sink")
        cl = Cluster("chat", workers=2, worker_args=["--database-url", url, "--insecure-dev-auth", "--chat-send-rate", "0",
                                                     "--chat-bench-discard-messages"], gateway_args=["--insecure-dev-auth"])
        chat = ["--scenario", "chat", "--clients", opts.clients, "--mode", "closed", "--inflight", 1]
        bench(cl.urls(), [*chat, "--duration", 1, "--warmup", 1, "--drain", 3], cl.pids(), "chat sink, priming run (not reported)")
        results["chat_sink"] = agg(runs_of(opts.runs, lambda: bench(cl.urls(), [*chat, *common], cl.pids(), "chat, in-memory sink")))
        cl.stop()
        cleanup()

    if want("routing"):
        # The routing table at a million bound uids (bench/routing.py, whose own report has the
        # details): a real registry and two real workers, synthetic gateways and workers.
        print("routing: 1,000,000 uids over 100 synthetic gateways, 20 workers", flush=True)
        import routing
        results["routing"] = routing.measure(routing.defaults(), BIN)
        COMMANDS.extend(c for c in routing.run.COMMANDS if c not in COMMANDS)

    if want("rolling"):
        # The acceptance scenario of tests/rolling_restart.rs at benchmark scale: steady chat load
        # through HAProxy, then the same load while every process is restarted in turn.
        print("rolling restart: compose topology, chat on PostgreSQL", flush=True)
        database, url, cleanup = scratch_postgres()
        topo = Rolling(url)
        load = ["--scenario", "chat", "--reconnect", "--ca", f"{topo.tls}/ca.pem", "--jwt-secret", Rolling.JWT,
                "--clients", opts.clients, "--mode", "open", "--rate", opts.rolling_rate, "--peers", 4,
                # Many client addresses, as in production: HAProxy forwards each one to the
                # gateways (X-Forwarded-For), whose per-address limit is 1,000 connections.
                "--source-ips", "127.0.0.2-127.0.0.21"]
        order = ["registry-1", "registry-2", "worker-1", "worker-2", "gateway-1", "gateway-2"]
        steady, during, restart_seconds = [], [], []
        for run in range(opts.runs):
            steady.append(bench([topo.url()], [*load, "--uid-prefix", f"s{run}-", *common], topo.pids(), "rolling: steady load"))
            log, took = [], []
            def restarts():
                # Restarts begin once the load is connected and past its warm-up.
                time.sleep(opts.clients / 400 + 3)
                took.append(topo.restart_all(order, log))
            t = threading.Thread(target=restarts)
            t.start()
            window = ["--duration", opts.rolling_duration, "--warmup", 2, "--drain", 20]
            during.append(bench([topo.url()], [*load, "--uid-prefix", f"r{run}-", *window], topo.pids(), "rolling: every process restarted in turn"))
            t.join()
            restart_seconds.append(took[0] if took else float("nan"))
            print(f"  restarts: {', '.join(f'{n} at {s:.1f}s' for n, s in log)}", flush=True)
        rows = subprocess.run(["psql", "-X", "-At", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-c",
                               "SELECT count(*) - count(DISTINCT (sender, split_part(cid, '.', 3))) FROM messages"],
                              check=True, capture_output=True, text=True).stdout.strip()
        results["rolling"] = {
            "steady": agg(steady), "during": agg(during),
            "reconnects": median([(r.get("reconnect") or {}).get("reconnects", 0) for r in during]),
            "reconnected_clients": median([(r.get("reconnect") or {}).get("clients", 0) for r in during]),
            "acked_all": all(r.get("acked") == r["sent"] for r in during),
            "disconnects": sum(r["errors"]["disconnects"] for r in during),
            "error_frames": sum(r["errors"]["error_frames"] for r in during),
            "stored_twice": int(rows), "restart_seconds": median(restart_seconds),
            # Why a client gave up, if one did: the load generator's first error of each run.
            "first_errors": [r["errors"].get("first_error") for r in during if r["errors"].get("first_error")],
            "clients": opts.clients, "rate": opts.rolling_rate,
        }
        topo.stop()
        cleanup()
    if want("chatmix"):
        # Plain chat and the live-chat mix (one typing event before each message, two receipts
        # after each push) on the same fresh cluster, their runs alternating, so that both
        # figures come from one run on one machine state.
        for backend in ["sqlite", "postgres"]:
            what = f"chat vs chat-mix {backend}"
            print(f"{what}: fresh database and cluster, alternating", flush=True)
            cleanup = None
            if backend == "sqlite":
                tmp = tempfile.mkdtemp(prefix="gatehouse-bench-")
                url = f"sqlite://{tmp}/chat.db"
            else:
                database, url, cleanup = scratch_postgres()
            workers = 1 if backend == "sqlite" else 2
            cl = Cluster("chat", workers=workers, worker_args=["--database-url", url, "--insecure-dev-auth", "--chat-send-rate", "0",
                                                              "--chat-request-rate", "0", "--chat-typing-rate", "0"], gateway_args=["--insecure-dev-auth"])
            base = ["--clients", opts.clients, "--mode", "closed", "--inflight", 1, "--peers", 4]
            bench(cl.urls(), ["--scenario", "chat-mix", *base, "--duration", 1, "--warmup", 1, "--drain", 3], cl.pids(), f"{what}, priming run (not reported)")
            db = postgres_pids(database) if backend == "postgres" else []
            plain, mix = [], []
            # A longer drain than the other scenarios: under the closed loop the mix's p99 is
            # seconds, and a message still on its way when the drain ends counts as lost.
            timing = ["--duration", opts.duration, "--warmup", 2, "--drain", 12]
            for _ in range(opts.runs):
                plain.append(bench(cl.urls(), ["--scenario", "chat", *base, *timing], cl.pids(), f"chat {backend}", db))
                mix.append(bench(cl.urls(), ["--scenario", "chat-mix", *base, *timing], cl.pids(), f"chat-mix {backend}", db))
            results[f"chatmix_{backend}"] = {"plain": agg(plain), "mix": agg(mix)}
            # The gateways' share (the cluster's pids are the registry's, the gateways', then the workers').
            for side, reports in (("plain", plain), ("mix", mix)):
                results[f"chatmix_{backend}"][side]["gateway_us"] = median(
                    [sum(s.get("cpu_seconds") or 0 for s in rep["servers"][1:1 + len(cl.gateways)]) * 1e6 / max(rep["delivered"], 1)
                     for rep in reports])
            cl.stop()
            if cleanup:
                cleanup()

    print(json.dumps(results, indent=1, default=str))
    if not opts.no_write:
        write_report(results, opts)


PLOT_COLOURS = ["#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e"]


def svg_plot(name, title, series):
    """Writes docs/plots/NAME.svg: latency (log scale) against percentile ("nines" scale) for
    each `(label, curve)`; returns the Markdown that embeds it, or "" when there is no curve."""
    series = [(label, curve) for label, curve in series if curve]
    if not series:
        return ""
    w, h, left, right, top, bottom = 720, 400, 70, 170, 40, 50
    nines = lambda q: 4.5 if q >= 1 else min(4.0, -math.log10(1 - q))
    values = [p["us"] for _, c in series for p in c if p["us"] > 0]
    lo = 10 ** math.floor(math.log10(max(1, min(values))))
    hi = 10 ** math.ceil(math.log10(max(values)))
    x = lambda q: left + nines(q) / 4.5 * (w - left - right)
    y = lambda us: top + (1 - (math.log10(max(us, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))) * (h - top - bottom)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14">{html.escape(title)}</text>']
    for n, label in [(0, "0%"), (1, "90%"), (2, "99%"), (3, "99.9%"), (4, "99.99%"), (4.5, "max")]:
        px = left + n / 4.5 * (w - left - right)
        out.append(f'<line x1="{px:.1f}" y1="{top}" x2="{px:.1f}" y2="{h - bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{px:.1f}" y="{h - bottom + 16}" text-anchor="middle">{label}</text>')
    decade = lo
    while decade <= hi:
        py = y(decade)
        text = f"{decade / 1000:g} ms" if decade >= 1000 else f"{decade:g} µs"
        out.append(f'<line x1="{left}" y1="{py:.1f}" x2="{w - right}" y2="{py:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 6}" y="{py + 4:.1f}" text-anchor="end">{text}</text>')
        decade *= 10
    out.append(f'<text x="{(left + w - right) / 2}" y="{h - 12}" text-anchor="middle">percentile</text>')
    for i, (label, curve) in enumerate(series):
        colour = PLOT_COLOURS[i % len(PLOT_COLOURS)]
        points = " ".join(f"{x(p['quantile']):.1f},{y(p['us']):.1f}" for p in curve)
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>')
        ly = top + 10 + i * 20
        out.append(f'<line x1="{w - right + 12}" y1="{ly}" x2="{w - right + 32}" y2="{ly}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{w - right + 38}" y="{ly + 4}">{html.escape(label)}</text>')
    out.append("</svg>")
    os.makedirs(os.path.join(ROOT, "docs", "plots"), exist_ok=True)
    with open(os.path.join(ROOT, "docs", "plots", f"{name}.svg"), "w") as f:
        f.write("\n".join(out) + "\n")
    return f"![{title}](plots/{name}.svg)"


def has_flag(binary, role, flag):
    """Whether `binary ROLE --help` lists `flag`."""
    out = subprocess.run([binary, role, "--help"], capture_output=True, text=True)
    return flag in out.stdout


def admin_addr(proc):
    """Where a process serves /readyz and /metrics: its admin listener, or (older builds) its
    public port."""
    return proc.addrs.get("admin") or proc.addrs["ws"]


def gauge(gateway, name):
    body = http_get(admin_addr(gateway), "/metrics")
    m = re.search(rf"^{name} ([0-9.eE+]+)", body, re.M)
    return int(float(m.group(1))) if m else 0


def fmt(v, digits=0):
    if isinstance(v, (int, float)) and v == v:
        return f"{v:,.{digits}f}"
    return "–"


def spread(values, spec=".2f"):
    """`min–max` of a list of figures."""
    return f"{format(min(values), spec)}–{format(max(values), spec)}"


def tally(r, *keys):
    """`lost / duplicated` summed over the runs of several scenarios."""
    return f"{sum(r[k]['lost'] for k in keys)} / {sum(r[k]['duplicated'] for k in keys)}"


def targets(r):
    """The `Targets` table: each target of the benchmark issue, this run's figure and whether it
    was met, computed from the same results as the tables below it (bench/analysis.md refers to
    it by name instead of copying figures)."""
    rows = []
    met = lambda ok: "**met**" if ok else "**not met**"
    runs = [v for k, v in r.items() if isinstance(v, dict) and "lost" in v]
    if runs:
        lost = sum(v.get("lost", 0) for v in runs)
        dup = sum(v.get("duplicated", 0) for v in runs)
        rows.append(("nothing lost, nothing duplicated", f"{fmt(lost)} lost / {fmt(dup)} duplicated", "every scenario", met(lost == 0 and dup == 0)))
    if r.get("idle"):
        worst = max(i["bytes_per_conn"] for i in r["idle"].values())
        held = all(i["held"] == total for total, i in r["idle"].items())
        most = max(r["idle"])
        rows.append((f"≤ 8,000 bytes per idle connection, {fmt(most)} held", f"{fmt(worst)} bytes at most; {'all' if held else 'not all'} held", "Idle connections", met(worst <= 8000 and held)))
    if "cl_max" in r:
        tp = r["cl_max"]["delivered_per_sec"] / r["base_max"]["delivered_per_sec"]
        cpu = r["cl_max"]["cpu_us"] / r["base_max"]["cpu_us"]
        p99 = (r["cl_5k"]["p99"] - r["base_5k"]["p99"]) / 1000
        hop_p99 = (r["hop_5k"]["p99"] - r["base_5k"]["p99"]) / 1000
        rows += [("max delivered msg/s ≥ 0.70 × the one-hop baseline's", f"{tp:.2f}", "Direct messages", met(tp >= 0.70)),
                 ("server CPU per message ≤ 1.40 × the baseline's", f"{cpu:.2f}", "Direct messages", met(cpu <= 1.40)),
                 ("p99 at 5,000 msg/s ≤ the baseline's + 0.5 ms", f"{p99:+.2f} ms (two-hop reference: {hop_p99:+.2f} ms)", "Direct messages", met(p99 <= 0.5))]
    if "fanout" in r:
        rate = r["fanout"]["delivered_per_sec"]
        rows.append(("≥ 1,000,000 deliveries/s to a 10,000-member group", f"{fmt(rate)} (baseline: {fmt(r['base_fanout']['delivered_per_sec'])})", "Fan-out", met(rate >= 1e6)))
    if "cl_max" in r:
        ratios = [r[k]["acked_per_sec"] / r["cl_max"]["delivered_per_sec"]
                  for b in CHAT_BACKENDS for k in (f"chat_{b}", f"chat_{b}_peers") if k in r]
        if ratios:
            rows.append(("chat with storage ≥ 0.50 × the no-storage cluster's msg/s", spread(ratios), "Chat with storage", met(min(ratios) >= 0.5)))
    for key, what, limit in [("chat_postgres_peers", "in ongoing conversations (4 peers)", 20),
                             ("chat_postgres", "when most messages open a new conversation", 40)]:
        db = r.get(key, {}).get("db_us")
        if db is not None and db == db:
            rows.append((f"PostgreSQL's CPU per persisted message ≤ {limit} µs {what}", f"{db:.1f} µs", "Chat with storage", met(db <= limit)))
    if "chat_sink" in r and "cl_max" in r:
        x = r["chat_sink"]["cpu_us"] / r["cl_max"]["cpu_us"]
        rows.append(("chat without storage (in-memory sink) ≤ 1.5 × the relay's server CPU per message", f"{x:.2f}", "Chat without storage", met(x <= 1.5)))
    mix = [r[f"chatmix_{b}"] for b in ("sqlite", "postgres") if f"chatmix_{b}" in r]
    if mix:
        ratios = [c["mix"]["acked_per_sec"] / c["plain"]["acked_per_sec"] for c in mix]
        rows.append(("live chat (typing, receipts) ≥ 0.70 × plain chat", spread(ratios), "Live chat", met(min(ratios) >= 0.7)))
    if "cl_5k" in r:
        cpu5k = r["cl_5k"]["cpu_us"] / r["base_5k"]["cpu_us"]
        p99x = r["cl_5k"]["p99"] / r["base_5k"]["p99"]
        rows += [("server CPU per message at 5,000 msg/s ≤ 1.5 × the one-hop baseline's", f"{cpu5k:.2f}", "Direct messages", met(cpu5k <= 1.5)),
                 ("server CPU per message at 500 msg/s (reported)", f"{r['cl_500']['cpu_us'] / r['base_500']['cpu_us']:.2f}" if "cl_500" in r else "not run", "Direct messages", "reported"),
                 ("p99 at 5,000 msg/s ≤ 2 × the one-hop baseline's", f"{p99x:.2f}", "Direct messages", met(p99x <= 2))]
    if "cl_max_default_threads" in r:
        d = r["cl_max_default_threads"]
        tp = d["delivered_per_sec"] / r["base_max"]["delivered_per_sec"]
        cpu = d["cpu_us"] / r["base_max"]["cpu_us"]
        rows.append(("default runtime at saturation: ≥ 0.85 × the baseline's msg/s at ≤ 1.3 × its CPU per message", f"{tp:.2f} at {cpu:.2f}", "Direct messages", met(tp >= 0.85 and cpu <= 1.3)))
    if "fanout" in r:
        fx = r["fanout"]["delivered_per_sec"] / r["base_fanout"]["delivered_per_sec"]
        rows.append(("fan-out to a 10,000-member group ≥ 0.85 × the baseline's deliveries/s", f"{fx:.2f}", "Fan-out", met(fx >= 0.85)))
    if "busy" in r:
        b = r["busy"]
        ok = b["lost"] == 0 and b["duplicated"] == 0 and b["held"] >= b["clients"] and b["delivered_per_sec"] >= 0.99 * b["rate"]
        rows.append((f"{fmt(b['clients'])} clients exchanging {fmt(b['rate'])} msg/s: nothing lost (p99 and memory reported)",
                     f"{fmt(b['delivered_per_sec'])} msg/s, {fmt(b['lost'])} lost, p99 {b['p99'] / 1000:.1f} ms, "
                     f"{fmt(b['bytes_per_conn'])} bytes per connection", "Busy connections", met(ok)))
    if "routing" in r:
        import routing
        rows += routing.target_rows(r["routing"], met)
    if "rolling" in r:
        g = r["rolling"]
        ok = g["during"]["lost"] == 0 and g["acked_all"] and g["stored_twice"] == 0
        rows.append(("a rolling restart loses and doubles nothing", f"{fmt(g['during']['lost'])} lost, {g['stored_twice']} stored twice", "Rolling restart", met(ok)))
    if not rows:
        return []
    lines = ["## Targets", "",
             "Each target, this run's figure and the table it comes from; bench/analysis.md (at the end) says",
             "why a target is not met and whether it can be on this machine.", "",
             "| target | this run | table | |", "| --- | --- | --- | --- |"]
    lines += [f"| {t} | {v} | {name} | {status} |" for t, v, name, status in rows]
    return lines + [""]


def write_report(r, opts):
    lines = ["# Benchmarks", "",
             "Generated by `python3 bench/run.py` (see its `--help`) with the release binary. Every figure is the",
             f"median of {opts.runs} runs of {opts.duration:g} s measured after 2 s of warm-up; clients, servers and the load",
             "generator share the machine, so compare figures as ratios taken in the same run.", "",
             f"- machine: {machine()}",
             f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
             f"- load average at the end: {os.getloadavg()[0]:.2f}", ""]
    lines += targets(r)
    if "cl_max" in r:
        b, c = r["base_max"], r["cl_max"]
        h = r["hop_max"]
        ratio = lambda key, field: r[f"cl_{key}"][field] / r[f"base_{key}"][field]
        hop_ratio = lambda key, field: r[f"hop_{key}"][field] / r[f"base_{key}"][field]
        lat = lambda x: f"{fmt(x['p50'])} / {fmt(x['p99'])}"
        pr = r["pair_ratios"]
        lines += ["## Direct messages (relay app, 1,000 clients, each sending one frame at a time)", "",
                  "The two-hop reference is the cluster's topology without the cluster (`gatehouse bench hop`, see",
                  "below): two baseline edges that route every direct message through one of two hop processes over",
                  "plain TCP, one thread per process. It has no gRPC, acknowledgements, redelivery or registry, so it is",
                  "the cheapest way to put three processes on a message's path.", "",
                  "| figure | one-hop baseline | two-hop reference | cluster (2 gateways, 2 workers) | cluster / baseline | two-hop / baseline | target (cluster) |",
                  "| --- | --- | --- | --- | --- | --- | --- |",
                  f"| max delivered msg/s (closed loop) | {fmt(b['delivered_per_sec'])} | {fmt(h['delivered_per_sec'])} | {fmt(c['delivered_per_sec'])} | {ratio('max', 'delivered_per_sec'):.2f} | {hop_ratio('max', 'delivered_per_sec'):.2f} | ≥ 0.70 |",
                  f"| server CPU µs per delivered message | {fmt(b['cpu_us'], 1)} | {fmt(h['cpu_us'], 1)} | {fmt(c['cpu_us'], 1)} | {ratio('max', 'cpu_us'):.2f} | {hop_ratio('max', 'cpu_us'):.2f} | ≤ 1.40 |",
                  f"| p50 / p99 latency at 5,000 msg/s (µs) | {lat(r['base_5k'])} | {lat(r['hop_5k'])} | {lat(r['cl_5k'])} | {(r['cl_5k']['p99'] - r['base_5k']['p99']) / 1000:+.2f} ms | {(r['hop_5k']['p99'] - r['base_5k']['p99']) / 1000:+.2f} ms | p99 ≤ baseline + 0.5 ms |",
                  f"| server CPU µs per message at 5,000 msg/s | {fmt(r['base_5k']['cpu_us'], 1)} | {fmt(r['hop_5k']['cpu_us'], 1)} | {fmt(r['cl_5k']['cpu_us'], 1)} | {ratio('5k', 'cpu_us'):.2f} | {hop_ratio('5k', 'cpu_us'):.2f} | |",
                  f"| server CPU µs per message at 500 msg/s | {fmt(r['base_500']['cpu_us'], 1)} | {fmt(r['hop_500']['cpu_us'], 1)} | {fmt(r['cl_500']['cpu_us'], 1)} | {ratio('500', 'cpu_us'):.2f} | {hop_ratio('500', 'cpu_us'):.2f} | |",
                  f"| p50 / p99 at half the cluster max ({fmt(r['half_rate'])} msg/s, µs) | {lat(r['base_half'])} | {lat(r['hop_half'])} | {lat(r['cl_half'])} | | | |",
                  f"| max delivered msg/s with the default runtime (a thread per core in each of the five processes) | | | {fmt(r['cl_max_default_threads']['delivered_per_sec'])} | {r['cl_max_default_threads']['delivered_per_sec'] / b['delivered_per_sec']:.2f} | | |",
                  f"| server CPU µs per message with the default runtime | | | {fmt(r['cl_max_default_threads']['cpu_us'], 1)} | {r['cl_max_default_threads']['cpu_us'] / b['cpu_us']:.2f} | | |",
                  f"| per alternating set of runs: max msg/s ratio / CPU ratio / p99 difference at 5k msg/s | | | | {spread(pr['throughput'])} / {spread(pr['cpu'])} / {spread(pr['p99_5k_ms'], '+.2f')} ms | {spread(pr['hop_throughput'])} / {spread(pr['hop_cpu'])} / {spread(pr['hop_p99_5k_ms'], '+.2f')} ms | |",
                  f"| lost / duplicated (all runs) | {tally(r, 'base_max', 'base_5k', 'base_half', 'base_500')} | {tally(r, 'hop_max', 'hop_5k', 'hop_half', 'hop_500')} | {tally(r, 'cl_max', 'cl_5k', 'cl_half', 'cl_500', 'cl_max_default_threads')} | | | 0 / 0 |",
                  "", "Latency distributions (the run with the median p99 of each system):", ""]
        for key, what in [("5k", "at 5,000 msg/s"), ("half", f"at {fmt(r['half_rate'])} msg/s"), ("max", "at the closed-loop maximum")]:
            lines += [svg_plot(f"dm-{key}", f"direct messages {what}", [("one-hop baseline", r[f"base_{key}"]["dist"]),
                                                                          ("two-hop reference", r[f"hop_{key}"]["dist"]),
                                                                          ("cluster", r[f"cl_{key}"]["dist"])]), ""]
    if "fanout" in r:
        f, bf = r["fanout"], r["base_fanout"]
        lines += ["## Fan-out", "",
                  "| figure | baseline | cluster | target |", "| --- | --- | --- | --- |",
                  f"| deliveries/s, one 10,000-member group over two gateways | {fmt(bf['delivered_per_sec'])} | {fmt(f['delivered_per_sec'])} | ≥ 1,000,000 |",
                  f"| p99 of a fan-out (all 10,000 deliveries), µs | {fmt(bf['p99'])} | {fmt(f['p99'])} | |", "",
                  svg_plot("fanout", "deliveries of a message to a 10,000-member group", [("one-hop baseline", bf["dist"]), ("cluster", f["dist"])]), ""]
    if "broadcast" in r:
        lines += [f"Broadcast to 2,000 clients: {fmt(r['broadcast']['delivered_per_sec'])} deliveries/s, p99 {fmt(r['broadcast']['p99'])} µs.", ""]
    if r.get("idle"):
        lines += ["## Idle connections", "", "| connections | gateways | held | gateway user-space bytes per connection | target |", "| --- | --- | --- | --- | --- |"]
        for total, i in sorted(r["idle"].items()):
            lines.append(f"| {fmt(total)} | {i['gateways']} | {fmt(i['held'])} | {fmt(i['bytes_per_conn'])} | ≤ 8,000 |")
        lines.append("")
    if "chat_sqlite" in r:
        lines += ["## Chat with storage (chat app, 1,000 clients, closed loop: next message after the ack)", "",
                  "Two gateways; one chat worker on SQLite (the single-node default), two on PostgreSQL and two on",
                  "MariaDB.", "",
                  "CPU per persisted message is split three ways: storage (the chat worker's `sqlx-sqlite` and",
                  "`group-commit` threads, plus every PostgreSQL process serving the database, or the MariaDB",
                  "server process), the rest of the",
                  "servers (gateways, the workers' runtimes, the registry) and the load generator.", "",
                  "Each line ran on a fresh database and cluster; the database held the last column's number of",
                  "messages when its last run ended.", "",
                  "| database, traffic | persisted msg/s | p50 / p99 send→ack (µs) | ratio to the no-storage cluster | CPU µs per message: storage / rest of the servers / load generator | of storage: the database server | target | messages stored at the end |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for backend in CHAT_BACKENDS:
            for suffix, what in [("", "a random recipient per message (mostly new conversations)"), ("_peers", "4 ongoing conversations per user")]:
                c = r.get(f"chat_{backend}{suffix}")
                if c:
                    ratio = c["acked_per_sec"] / r["cl_max"]["delivered_per_sec"] if "cl_max" in r else float("nan")
                    cpu = f"{c['storage_us']:.1f} / {c['other_us']:.1f} / {c['generator_us']:.1f}"
                    db = c.get("db_us")
                    db = f"{db:.1f}" if db is not None and db == db else "(in the worker)"
                    lines.append(f"| {backend}, {what} | {fmt(c['acked_per_sec'])} | {fmt(c['ack_p50'])} / {fmt(c['ack_p99'])} | {ratio:.2f} | {cpu} | {db} | ≥ 0.50 | {fmt(c.get('messages_at_end'))} |")
        if "cl_max" in r:
            half = r["cl_max"]["delivered_per_sec"] / 2
            cores = os.cpu_count() or 1
            lines += ["", f"The budget at the target, half the no-storage cluster's maximum ({fmt(half)} msg/s): {cores} cores give",
                      f"{fmt(cores * 1e6 / half, 1)} µs of CPU per message for everything on the machine, storage, the rest of the",
                      "servers and the load generator together (the three CPU figures of a line above)."]
        lines += ["", svg_plot("chat", "chat send → ack, closed loop", [(label, r[key]["ack_dist"]) for key, label in
                                                                       [("chat_sqlite", "sqlite, random"), ("chat_sqlite_peers", "sqlite, 4 peers"),
                                                                        ("chat_postgres", "postgres, random"), ("chat_postgres_peers", "postgres, 4 peers"),
                                                                        ("chat_mariadb", "mariadb, random"), ("chat_mariadb_peers", "mariadb, 4 peers")] if key in r]), ""]
    if "chat_sink" in r:
        c = r["chat_sink"]
        ratio = c["acked_per_sec"] / r["cl_max"]["delivered_per_sec"] if "cl_max" in r else float("nan")
        cpu = f"{c['storage_us']:.1f} / {c['other_us']:.1f} / {c['generator_us']:.1f}"
        relay = f" (the relay's: {r['cl_max']['cpu_us']:.1f})" if "cl_max" in r else ""
        lines += ["## Chat without storage (chat app, in-memory sink)", "",
                  "Two chat workers whose messages go to an in-memory sink (`--chat-bench-discard-messages`, benchmarks",
                  "only: the same group-commit thread and batching, no database), 1,000 clients sending to random",
                  "recipients, closed loop: the chat path's own cost, against the relay's server CPU per message at",
                  "its maximum (**Direct messages**).", "",
                  "| configuration | msg/s | p50 / p99 send→ack (µs) | ratio to the no-storage cluster | CPU µs per message: the sink / rest of the servers / load generator | server CPU µs per message |",
                  "| --- | --- | --- | --- | --- | --- |",
                  f"| chat, in-memory sink | {fmt(c['acked_per_sec'])} | {fmt(c['ack_p50'])} / {fmt(c['ack_p99'])} | {ratio:.2f} | {cpu} | {c['cpu_us']:.1f}{relay} |", ""]
    if "rolling" in r:
        g = r["rolling"]
        st, du = g["steady"], g["during"]
        lines += ["## Rolling restart (chat on PostgreSQL behind HAProxy, every process restarted in turn)", "",
                  "The docker-compose.yml topology on loopback: two registries, two gateways (wss://, 5 s drain) behind",
                  "HAProxy with deploy/haproxy.cfg, two chat workers on PostgreSQL, mutual TLS. "
                  f"{fmt(g['clients'])} chat clients at {fmt(g['rate'])} msg/s",
                  "reconnect when a gateway drains, resend what was not acknowledged (same cid) and catch up with",
                  "`sync` (`gatehouse bench run --reconnect`). Each run restarts registry-1, registry-2, worker-1,",
                  "worker-2, gateway-1, gateway-2 in turn (SIGTERM, wait for the exit, start, wait until ready).", "",
                  "| figure | steady load | during the restarts |", "| --- | --- | --- |",
                  f"| p50 / p99 send→ack (µs) | {fmt(st['ack_p50'])} / {fmt(st['ack_p99'])} | {fmt(du['ack_p50'])} / {fmt(du['ack_p99'])} |",
                  f"| p50 / p99 send→push (µs) | {fmt(st['p50'])} / {fmt(st['p99'])} | {fmt(du['p50'])} / {fmt(du['p99'])} |",
                  f"| acknowledged msg/s | {fmt(st['acked_per_sec'])} | {fmt(du['acked_per_sec'])} |",
                  f"| messages (all runs) / lost | {fmt(st['sent'])} / {fmt(st['lost'])} | {fmt(du['sent'])} / {fmt(du['lost'])} |",
                  f"| reconnects / clients that reconnected (median run) | | {fmt(g['reconnects'])} / {fmt(g['reconnected_clients'])} |",
                  f"| every message acknowledged / clients that gave up / error frames / stored twice | | {'yes' if g['acked_all'] else 'no'} / {g['disconnects']} / {g['error_frames']} / {g['stored_twice']} |",
                  f"| the six restarts took (s, median) | | {g['restart_seconds']:.1f} |", ""]
        if g.get("first_errors"):
            lines += ["The load generator's first error in each run that had one:", ""]
            lines += [f"- `{e}`" for e in g["first_errors"]] + [""]
    if "busy" in r:
        b = r["busy"]
        lines += [f"## Busy connections ({fmt(b['clients'])} relay clients, {fmt(b['rate'])} direct messages per second among them)", "",
                  f"{b['gateways']} gateways (a process may hold 20,000 open files here), one load generator per 15,000 clients, each",
                  "offering its share of the rate among its own clients spread over every gateway (open loop). Latency is the",
                  "worst generator's; memory is the median gateway's growth while traffic flows, per connection it holds.", "",
                  "| figure | this run |", "| --- | --- |",
                  f"| connections held | {fmt(b['held'])} |",
                  f"| delivered msg/s | {fmt(b['delivered_per_sec'])} |",
                  f"| sent / lost / duplicated | {fmt(b['sent'])} / {fmt(b['lost'])} / {fmt(b['duplicated'])} |",
                  f"| p50 / p99 / p99.9 send→delivery (µs) | {fmt(b['p50'])} / {fmt(b['p99'])} / {fmt(b['p999'])} |",
                  f"| gateway memory per connection (bytes) | {fmt(b['bytes_per_conn'])} |", ""]
    if "routing" in r:
        import routing
        lines += routing.section(r["routing"])
    if "cl_max" in r or r.get("idle") or "chat_postgres_peers" in r:
        lines += ["## Capacity", "",
                  "What one core and one GB of gateway memory carry, from the figures above (server CPU per message",
                  "in the measured runs; the load generator's CPU excluded). docs/operations.md plans with these.", "",
                  "| workload | per core | per GB of gateway memory |", "| --- | --- | --- |"]
        if r.get("idle"):
            biggest = r["idle"][max(r["idle"])]
            lines.append(f"| idle connections (gateway user-space memory) | | {fmt(2**30 / biggest['bytes_per_conn'])} |")
        if "cl_max" in r:
            lines.append(f"| relay direct messages, delivered msg/s (whole cluster) | {fmt(1e6 / r['cl_max']['cpu_us'])} | |")
        for key, what in [("chat_postgres_peers", "chat on PostgreSQL, 4 conversations per user, persisted msg/s (servers and database)"),
                          ("chat_sqlite_peers", "chat on SQLite, 4 conversations per user, persisted msg/s (servers)")]:
            if key in r:
                c = r[key]
                lines.append(f"| {what} | {fmt(1e6 / (c['storage_us'] + c['other_us']))} | |")
        lines.append("")
    if "chatmix_sqlite" in r or "chatmix_postgres" in r:
        lines += ["## Live chat: typing and receipts next to plain chat", "",
                  "The same cluster and database serve alternating runs of plain chat and of the live-chat mix",
                  "(`chat-mix`: one `typing` before each message, `delivered` and `read` after each push; 1,000",
                  "clients, 4 ongoing conversations each, closed loop). Target: the mix keeps at least 70 % of",
                  "the plain figure. CPU is per message, plain / mix: storage (the worker's storage threads and",
                  "the database server), the gateways, the servers' other work (the worker's runtime, the",
                  "registry), and the load generator, which shares the machine. The ceiling applies when the",
                  "plain run kept the cores busy (bound by CPU, not by commit latency): it is the ratio the mix",
                  "would reach if typing and receipts cost the workers and the database nothing, the plain",
                  "message's CPU over itself plus the mix's extra gateway and load-generator CPU.", "",
                  "| database | plain msg/s | mix msg/s (+1 typing, +2 receipts each) | mix / plain | ceiling "
                  "| p99 send→ack plain / mix (µs) | storage µs | gateways µs | other servers µs | load generator µs |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for backend in ["sqlite", "postgres"]:
            c = r.get(f"chatmix_{backend}")
            if c:
                p, m = c["plain"], c["mix"]
                gw_p, gw_m = p.get("gateway_us", float("nan")), m.get("gateway_us", float("nan"))
                total = p["storage_us"] + p["other_us"] + p["generator_us"]
                busy = total * p["acked_per_sec"] / 1e6 / (os.cpu_count() or 1)
                ceiling = total / (total + (gw_m - gw_p) + (m["generator_us"] - p["generator_us"]))
                # Only a plain run that kept the cores busy is bound by CPU; one that waited
                # for its database (commit latency) is not, and has no CPU ceiling.
                shown = f"{ceiling:.2f}" if busy >= 0.75 else f"none (plain used {busy:.0%} of the cores)"
                lines.append(f"| {backend} | {fmt(p['acked_per_sec'])} | {fmt(m['acked_per_sec'])} | {m['acked_per_sec'] / p['acked_per_sec']:.2f} "
                             f"| {shown} | {fmt(p['ack_p99'])} / {fmt(m['ack_p99'])} | {p['storage_us']:.0f} / {m['storage_us']:.0f} "
                             f"| {gw_p:.0f} / {gw_m:.0f} | {p['other_us'] - gw_p:.0f} / {m['other_us'] - gw_m:.0f} "
                             f"| {p['generator_us']:.0f} / {m['generator_us']:.0f} |")
        lines += ["",
                  "A plain message is three client frames (send, ack, push) and one event to a worker; the mix adds",
                  "seven frames (the typing and its push, two receipts, their two pushes to the sender, the answer",
                  "to `read`), three events and four commands. Where a CPU ceiling is under 0.70, the target needs",
                  "cheaper frames in the gateways (issue #14's per-message CPU), not cheaper typing or receipts in",
                  "the chat worker.", ""]
    lines += ["## Commands", "", "Each scenario started fresh processes on loopback (`gatehouse --threads 1 registry`, `gatehouse --threads 1 gateway` ×2,",
              "`gatehouse --threads 1 worker --app relay|chat` ×2, `gatehouse bench baseline` with its default runtime, and for the",
              "two-hop reference `gatehouse --threads 1 bench hop` ×2 and `gatehouse --threads 1 bench baseline --hop HOP --hop HOP` ×2), waited until",
              "every worker logged `routing table trusted` (the registry's warm-up is over), then ran:", ""]
    for label, cmd in COMMANDS:
        lines.append(f"- {label}: `{cmd}`")
    lines.append("")
    # The full report carries what other scripts measured and the analysis; a partial one
    # holds only its own figures.
    if not opts.only:
        lines += carried_over()
    path = opts.out or os.path.join(ROOT, "docs", "benchmarks.md")
    if opts.only:
        lines[0] = f"# Benchmarks: {opts.only} (a partial run of the suite)"
    with open(path, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {path}")


def carried_over():
    """The report's parts that do not come from this run: figures measured by hand (bench/notes),
    the webhook and server API figures, the list of side-by-side reports and the analysis."""
    lines = []
    # Figures measured by hand (one-off comparisons, each with its command and date) live in
    # bench/notes/*.md, so that a regenerated report keeps them instead of losing hand edits.
    notes = os.path.join(ROOT, "bench", "notes")
    for name in sorted(os.listdir(notes)) if os.path.isdir(notes) else []:
        if name.endswith(".md"):
            with open(os.path.join(notes, name)) as f:
                lines += ["", f.read().rstrip(), ""]
    # The webhook and server API figures come from bench/webhook.py and bench/api.py, run on
    # their own.
    for name in ("webhook.md", "api.md"):
        carried = os.path.join(ROOT, "bench", name)
        if os.path.exists(carried):
            with open(carried) as f:
                lines += ["", f.read().rstrip(), ""]
    # Reports of the scripts that compare two configurations in one run of their own
    # (bench/compare.py, bench/tls.py, bench/search_index.py …): listed by their titles.
    others = sorted(n for n in os.listdir(os.path.join(ROOT, "docs")) if n.startswith("benchmarks-") and n.endswith(".md"))
    if others:
        lines += ["", "## Other reports", "", "Side-by-side comparisons run by their own scripts, each with its commands:", ""]
        for name in others:
            with open(os.path.join(ROOT, "docs", name)) as f:
                title = f.readline().lstrip("# ").strip()
            lines.append(f"- [{title}]({name})")
        lines.append("")
    analysis = os.path.join(ROOT, "bench", "analysis.md")
    if os.path.exists(analysis):
        with open(analysis) as f:
            lines += ["", f.read().rstrip(), ""]
    return lines


if __name__ == "__main__":
    main()
