"use strict";
// Without a pg module for the lease thread, the plugin beats on the main
// thread, without a lease (graphile-worker 0.17.3, run() in this process).

const assert = require("node:assert/strict");
const Module = require("node:module");
const path = require("node:path");
const { after, before, it } = require("node:test");

const { makeHeartbeatPreset } = require("..");
const h = require("../fixtures/harness.js");

const gw = h.VERSIONS.find((v) => v.version.startsWith("0.17."));
let template;
let db;
const resolveFilename = Module._resolveFilename;

before(async () => {
  template = await h.createTemplate(gw);
  db = await h.createDatabase(template);
});

after(async () => {
  Module._resolveFilename = resolveFilename;
  if (db) await db.drop();
  if (template) await h.dropDatabase(template);
});

it("falls back to beats on the main thread with lease = false when pg cannot be found", async () => {
  const lib = require(path.join(h.packageDir(gw.pkg), "dist", "index.js"));
  // pg is loaded already (Graphile Worker keeps its copy) but can be found nowhere.
  for (const file of Object.keys(require.cache)) {
    if (/[\\/]node_modules[\\/]pg[\\/]/.test(file)) delete require.cache[file];
  }
  Module._resolveFilename = function (request, ...rest) {
    if (request === "pg") {
      throw Object.assign(new Error("Cannot find module 'pg'"), { code: "MODULE_NOT_FOUND" });
    }
    return resolveFilename.call(this, request, ...rest);
  };
  const logs = [];
  const logger = new lib.Logger(() => (level, message) => logs.push({ level, message }));
  const runner = await lib.run({
    connectionString: db.dsn,
    concurrency: 1,
    noHandleSignals: true,
    pollInterval: 100,
    logger,
    taskList: { noop: async () => {} },
    preset: { extends: [makeHeartbeatPreset({ intervalMs: 100 })] },
  });
  try {
    const [row] = await h.waitFor(() => h.heartbeatsIfAny(db).then((r) => r?.length && r), {
      what: "the first heartbeat row",
    });
    assert.equal(row.lease, false);
    assert.equal(await h.leaseHeld(db, row.locker_id), false);
    await h.waitFor(async () => (await h.heartbeats(db))[0].last_beat_at > row.last_beat_at, {
      what: "a beat",
    });
    const messages = logs.map((log) => `${log.level}: ${log.message}`).join("\n");
    assert.match(messages, /error: .*the pg module cannot be found .*WITHOUT a lease/);
    assert.match(messages, /info: .*heartbeat started for \S+ in .*, every 100 ms, WITHOUT a lease/);
  } finally {
    await runner.stop();
    await runner.promise.catch(() => {});
  }
  assert.deepEqual(await h.heartbeats(db), []);
});
