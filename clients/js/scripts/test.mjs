// `npm test`: type-checks and builds the library, checks that the chat page the gateways serve
// was built from the current sources (scripts/build-page.mjs), then runs the tests with Node's
// test runner against real gatehouse processes (target/debug/gatehouse, or $GATEHOUSE_BIN).
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { readdirSync } from "node:fs";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const run = (cmd, args) => {
  const result = spawnSync(cmd, args, { cwd: root, stdio: "inherit" });
  if (result.status !== 0) process.exit(result.status ?? 1);
};

const [major] = process.versions.node.split(".").map(Number);
if (major < 20) {
  console.error(`node ${process.versions.node} is too old: the library and its tests need node >= 20`);
  process.exit(1);
}
run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.json"]);
run(process.execPath, [join(root, "node_modules/typescript/bin/tsc"), "-p", "page/tsconfig.json"]);
run(process.execPath, ["scripts/build-page.mjs", "--check"]);
// Node 20 has WebSocket behind a flag (on by default from 22).
const flags = typeof WebSocket === "undefined" ? ["--experimental-websocket"] : [];
const files = readdirSync(join(root, "test")).filter((f) => f.endsWith(".test.mjs")).map((f) => join("test", f));
const only = process.argv.slice(2);
run(process.execPath, [...flags, "--test", "--test-concurrency=2", ...(only.length ? only : files)]);
