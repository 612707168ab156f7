// Runs one conformance case through @permaweb/ao-loader the way the legacy CU does and prints the
// results, one JSON object per message. Usage: AO_CASE=CASE.json node --input-type=module -e "$(cat ao_loader_run.mjs)"
// CASE: {js_dir, module, format, env, messages, compute_limit}
// Legacy CU semantics: memory is copied out after each message and passed back in; a message that
// throws (ok: false) or returns an Error keeps the memory from before it.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const spec = JSON.parse(readFileSync(process.env.AO_CASE, "utf8"));
const require = createRequire(`${spec.js_dir}/package.json`);
const AoLoader = require("@permaweb/ao-loader");

const handle = await AoLoader(readFileSync(spec.module), {
  format: spec.format, memoryLimit: "1-gb", computeLimit: spec.compute_limit,
});
const orNull = (v) => (v === undefined ? null : v);
const orEmpty = (v) => (v === undefined || v === null ? [] : v);
let memory = null;
const out = [];
for (const msg of spec.messages) {
  let result;
  try {
    const res = await handle(memory, msg, spec.env);
    result = {
      Output: orNull(res.Output), Messages: orEmpty(res.Messages), Spawns: orEmpty(res.Spawns),
      Assignments: orEmpty(res.Assignments), Error: res.Error ? res.Error : null,
      GasUsed: res.GasUsed ?? 0,
    };
    if (!res.Error) memory = res.Memory;
  } catch (err) {
    const error = err instanceof Error ? String(err) : err;
    result = { Output: null, Messages: [], Spawns: [], Assignments: [], Error: error, GasUsed: 0 };
  }
  out.push(result);
}
process.stdout.write(JSON.stringify(out) + "\n");
