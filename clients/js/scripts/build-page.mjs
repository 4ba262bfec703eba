// Builds the chat page every gateway serves (crates/gatehouse-chat/web/index.html): the
// template page/index.html with page/chat.ts and the library it imports bundled into one
// inline module script, so the page stays one dependency-free file.
//
//   node scripts/build-page.mjs           writes the page
//   node scripts/build-page.mjs --check   fails when the committed page is not what the sources build
import { build } from "esbuild";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const output = join(root, "../../crates/gatehouse-chat/web/index.html");
const MARKER = "/*@gatehouse-bundle*/";

const result = await build({
  entryPoints: [join(root, "page/chat.ts")],
  bundle: true,
  format: "esm",
  target: "es2020",
  platform: "browser",
  charset: "utf8",
  legalComments: "none",
  write: false,
  logLevel: "error",
});
const script = result.outputFiles[0].text.trimEnd();
if (/<\/script/i.test(script)) throw new Error("the bundle contains </script: it cannot be inlined");
const template = readFileSync(join(root, "page/index.html"), "utf8");
if (!template.includes(MARKER)) throw new Error(`page/index.html has no ${MARKER}`);
const page = template.replace(MARKER, () => script);

const where = relative(process.cwd(), output);
if (process.argv.includes("--check")) {
  let current = "";
  try {
    current = readFileSync(output, "utf8");
  } catch {}
  if (current !== page) {
    console.error(`${where} is stale: it is not what clients/js/page and clients/js/src build. Run \`npm run build\` in clients/js and commit it.`);
    process.exit(1);
  }
} else {
  writeFileSync(output, page);
  console.log(`wrote ${where} (${page.length} bytes)`);
}
