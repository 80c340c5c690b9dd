// Runs WorkerUtils.cleanup() of one installed Graphile Worker version; the CLI
// cannot pass a keep-list (taskIdentifiersToKeep).
//
// Usage: node cleanup.mjs <package> <options-json>
//   package: an npm alias from ../package.json, e.g. graphile-worker-0.18
//   options: {"connectionString": "...", "schema": "graphile_worker",
//             "tasks": ["GC_TASK_IDENTIFIERS", ...] (omit for the library default),
//             "taskIdentifiersToKeep": ["..."]}
const [pkg, json] = process.argv.slice(2);
if (!pkg || !/^graphile-worker-[0-9.]+$/.test(pkg) || !json) {
  console.error("usage: node cleanup.mjs graphile-worker-X.Y '<options json>'");
  process.exit(2);
}
const options = JSON.parse(json);
// 0.16 and 0.17 are CommonJS, 0.18 is ESM: a dynamic import loads both.
const mod = await import(pkg);
const makeWorkerUtils = mod.makeWorkerUtils ?? mod.default?.makeWorkerUtils;
const utils = await makeWorkerUtils({
  connectionString: options.connectionString,
  schema: options.schema ?? "graphile_worker",
});
try {
  await utils.cleanup({
    tasks: options.tasks ?? undefined,
    taskIdentifiersToKeep: options.taskIdentifiersToKeep ?? [],
  });
} finally {
  await utils.release();
}
