// Renders chat-template cases with @huggingface/jinja, the reference for engine/chat.
//   node reference_render.mjs CASES.json OUT.json
// CASES.json: [{"name", "source", "context"}]. OUT.json: [{"name", "ok", "output" | "error"}].
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const jinjaPath = resolve(repoRoot, "tools/node/node_modules/@huggingface/jinja/dist/index.js");
const { Template } = await import(pathToFileURL(jinjaPath).href);

const [casesPath, outPath] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(casesPath, "utf8"));
const results = cases.map(({ name, source, context }) => {
  try {
    return { name, ok: true, output: new Template(source).render(context) };
  } catch (err) {
    return { name, ok: false, error: String(err && err.message ? err.message : err) };
  }
});
writeFileSync(outPath, JSON.stringify(results));
