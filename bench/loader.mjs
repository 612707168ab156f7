// Reference side of the benchmark: @permaweb/ao-loader over a message stream, timed.
// Usage: node [--experimental-wasm-memory64] bench/loader.mjs SPEC.json
// SPEC: {js_dir, module, format, env, setup: [msg...], workload: [msg...], mode: "legacy"|"resident"}
// legacy: memory copied out and passed back in on every message (as the legacy CU does);
// resident: UNSAFE_MEMORY, the instance keeps its memory.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const spec = JSON.parse(readFileSync(process.argv[2], "utf8"));
const require = createRequire(`${spec.js_dir}/package.json`);
const AoLoader = require("@permaweb/ao-loader");

const binary = readFileSync(spec.module);
const resident = spec.mode === "resident";
const handle = await AoLoader(binary, {
  format: spec.format, memoryLimit: "1-gb", computeLimit: 9e12, UNSAFE_MEMORY: resident,
});
let memory = null;
async function step(msg) {
  try {
    const res = await handle(resident ? null : memory, msg, spec.env);
    if (!resident) memory = res.Memory;
  } catch (err) {
    // ok:false keeps the previous memory, as the CU does
  }
}
for (const msg of spec.setup) await step(msg);
const start = process.hrtime.bigint();
for (const msg of spec.workload) await step(msg);
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
process.stdout.write(JSON.stringify({ messages: spec.workload.length, seconds }) + "\n");
