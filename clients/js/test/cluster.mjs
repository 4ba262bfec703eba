// Starts real gatehouse processes (registry, gateways, chat workers) on loopback for the
// library's tests, like crates/gatehouse-testkit does for the Rust tests: the binary from
// target/debug (or $GATEHOUSE_BIN), port 0 everywhere, addresses read from the
// `listening kind=… addr=…` log lines, every process killed when the test ends.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const BIN = process.env.GATEHOUSE_BIN ?? resolve(here, "../../../target/debug/gatehouse");
const SECRET = "node-test-cluster-secret-0123456789";
/** The HS256 secret the workers of a token cluster verify with. */
export const JWT_SECRET = "node-test-jwt-secret-0123456789abcdef";

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/** One gatehouse process; `addr(kind)` is where it listens. */
export class Proc {
  constructor(name, args) {
    this.name = name;
    this.args = args;
    this.log = [];
    this.addrs = new Map();
    this.waiters = [];
  }

  static async start(name, args, expect, timeoutMs = 20_000) {
    if (!existsSync(BIN)) {
      throw new Error(`${BIN} not found: build it first (cargo build --bin gatehouse), or set GATEHOUSE_BIN`);
    }
    const proc = new Proc(name, args);
    const child = spawn(BIN, args, {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.GATEHOUSE_TEST_LOG ?? "info" },
    });
    proc.child = child;
    running.add(child);
    child.on("exit", (code, signal) => {
      running.delete(child);
      proc.exited = { code, signal };
      proc.wake();
    });
    let rest = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (chunk) => {
      rest += chunk;
      const lines = rest.split("\n");
      rest = lines.pop();
      for (const line of lines) proc.onLine(line);
    });
    await proc.until(() => expect.every((kind) => proc.addrs.has(kind)), `${expect.join(", ")} listening`, timeoutMs);
    return proc;
  }

  onLine(line) {
    if (process.env.GATEHOUSE_TEST_ECHO) process.stderr.write(`[${this.name}] ${line}\n`);
    this.log.push(line);
    const kind = /listening kind=(\w+)/.exec(line)?.[1];
    const addr = /addr="?([0-9.:[\]]+)/.exec(line)?.[1];
    if (kind && addr && !this.addrs.has(kind)) this.addrs.set(kind, addr);
    this.wake();
  }

  wake() {
    for (const waiter of [...this.waiters]) waiter();
  }

  /** Waits until `condition()` holds (checked at every log line), or fails with the log. */
  until(condition, what, timeoutMs = 20_000) {
    return new Promise((resolvePromise, reject) => {
      const check = () => {
        if (condition()) {
          done();
          resolvePromise();
        } else if (this.exited) {
          done();
          reject(new Error(`${this.name} exited (${JSON.stringify(this.exited)}) before ${what}:\n${this.log.join("\n")}`));
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`${this.name}: no ${what} within ${timeoutMs} ms:\n${this.log.join("\n")}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this.waiters = this.waiters.filter((w) => w !== check);
      };
      this.waiters.push(check);
      check();
    });
  }

  waitLog(needle, timeoutMs) {
    return this.until(() => this.log.some((l) => l.includes(needle)), JSON.stringify(needle), timeoutMs);
  }

  addr(kind) {
    const addr = this.addrs.get(kind);
    if (!addr) throw new Error(`${this.name} has no ${kind} address`);
    return addr;
  }

  /** SIGKILL, and wait until it is gone. */
  async kill() {
    if (this.exited) return;
    const gone = new Promise((r) => this.child.once("exit", r));
    this.child.kill("SIGKILL");
    await gone;
  }
}

/**
 * A cluster: one registry, `gateways` gateways and `workers` chat workers sharing a fresh SQLite
 * database. `auth: "dev"` signs in with bare uids; `auth: "jwt"` verifies HS256 tokens signed
 * with JWT_SECRET (see `token`).
 */
export async function startCluster({ gateways = 2, workers = 1, auth = "dev", workerArgs = [], gatewayArgs = [] } = {}) {
  const dir = mkdtempSync(join(tmpdir(), "gatehouse-js-"));
  const cluster = new Cluster(dir, auth, workerArgs);
  try {
    cluster.registry = await Proc.start(
      "registry",
      ["registry", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--cluster-secret", SECRET, "--lease", "2s", "--threads", "1"],
      ["grpc", "admin"],
    );
    for (let i = 0; i < gateways; i += 1) {
      const args = [
        "gateway", "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0", "--registry", cluster.registry.addr("grpc"),
        "--admin-listen", "127.0.0.1:0", "--cluster-secret", SECRET, "--drain", "1s", "--threads", "1", ...gatewayArgs,
      ];
      if (auth === "dev") args.push("--insecure-dev-auth");
      cluster.gateways.push(await Proc.start(`gateway-${i}`, args, ["ws", "grpc", "admin"]));
    }
    for (let i = 0; i < workers; i += 1) await cluster.addWorker();
    await cluster.waitWorkers(workers);
    return cluster;
  } catch (error) {
    await cluster.stop();
    throw error;
  }
}

class Cluster {
  constructor(dir, auth, workerArgs) {
    this.dir = dir;
    this.auth = auth;
    this.workerArgs = workerArgs;
    this.gateways = [];
    this.workers = [];
  }

  /** The WebSocket URL of gateway `i`. */
  url(i) {
    return `ws://${this.gateways[i].addr("ws")}/ws`;
  }

  async addWorker() {
    const args = [
      "worker", "--registry", this.registry.addr("grpc"), "--app", "chat", "--admin-listen", "127.0.0.1:0",
      "--cluster-secret", SECRET, "--threads", "1", "--database-url", `sqlite://${join(this.dir, "chat.db")}`,
      ...(this.auth === "dev" ? ["--insecure-dev-auth"] : ["--jwt-secret", JWT_SECRET]),
      ...this.workerArgs,
    ];
    const worker = await Proc.start(`worker-${this.workers.length}`, args, ["admin"]);
    await worker.waitLog("worker started", 10_000);
    this.workers.push(worker);
    return worker;
  }

  /** Waits until every live gateway reports `count` workers and a registry session. */
  async waitWorkers(count) {
    for (const gateway of this.gateways.filter((g) => !g.exited)) {
      const deadline = Date.now() + 20_000;
      for (;;) {
        const body = await fetch(`http://${gateway.addr("admin")}/readyz`).then((r) => r.text(), () => "");
        if (body.includes(`"workers":${count},`) && !body.includes(`"registries":0`)) break;
        if (Date.now() > deadline) throw new Error(`${gateway.name} never reached ${count} workers: ${body}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }

  async stop() {
    for (const proc of [...this.workers, ...this.gateways, this.registry].filter(Boolean)) await proc.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** An HS256 JWT for `uid` that expires in `ttlSeconds`. */
export function token(uid, ttlSeconds = 3600) {
  const encode = (value) => Buffer.from(JSON.stringify(value)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const body = `${encode({ alg: "HS256", typ: "JWT" })}.${encode({ sub: uid, iat: now, exp: now + ttlSeconds })}`;
  return `${body}.${createHmac("sha256", JWT_SECRET).update(body).digest("base64url")}`;
}

/** Resolves when `condition()` is true (polled every 10 ms), or fails after `timeoutMs` saying `what`. */
export async function eventually(condition, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`never happened within ${timeoutMs} ms: ${typeof what === "function" ? what() : what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
