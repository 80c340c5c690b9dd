// Calls one job function of Graphile Worker's WorkerUtils, for bench/bulk_by_ids.py.
//
// Usage: node worker_utils_call.mjs <package-dir> <options-json-file>
//   package-dir: an installed graphile-worker, e.g. graphile/node_modules/graphile-worker-0.18
//   options: {"connectionString", "schema", "function": "completeJobs" |
//             "permanentlyFailJobs" | "rescheduleJobs", "ids": [1, 2, ...],
//             "reason": "...", "runAt": "ISO 8601"}
// Prints one JSON line: {"function", "rows", "call_ms", "setup_ms"}; call_ms times only
// the WorkerUtils call (one statement; it returns every changed row, parsed by pg).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";

const [packageDir, optionsFile] = process.argv.slice(2);
if (!packageDir || !optionsFile) {
  console.error("usage: node worker_utils_call.mjs <package-dir> <options-json-file>");
  process.exit(2);
}
const setupStarted = performance.now();
const options = JSON.parse(readFileSync(optionsFile, "utf8"));
const mod = await import(pathToFileURL(join(packageDir, "dist", "index.js")).href);
const makeWorkerUtils = mod.makeWorkerUtils ?? mod.default?.makeWorkerUtils;
const utils = await makeWorkerUtils({
  connectionString: options.connectionString,
  schema: options.schema ?? "graphile_worker",
});
try {
  // One untimed round trip, so the pool's connection is open before the timed call.
  await utils.withPgClient((client) => client.query("select 1"));
  const setupMs = performance.now() - setupStarted;
  const started = performance.now();
  let rows;
  if (options.function === "completeJobs") {
    rows = await utils.completeJobs(options.ids);
  } else if (options.function === "permanentlyFailJobs") {
    rows = await utils.permanentlyFailJobs(options.ids, options.reason);
  } else if (options.function === "rescheduleJobs") {
    rows = await utils.rescheduleJobs(options.ids, { runAt: options.runAt });
  } else {
    throw new Error(`unknown function ${options.function}`);
  }
  const callMs = performance.now() - started;
  console.log(
    JSON.stringify({
      function: options.function,
      rows: rows.length,
      call_ms: callMs,
      setup_ms: setupMs,
    }),
  );
} finally {
  await utils.release();
}
