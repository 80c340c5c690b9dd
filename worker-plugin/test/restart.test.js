"use strict";
// The lease thread dies: it is started again, takes its lease again and finds
// its row (graphile-worker 0.17.3, run() in this process).

const assert = require("node:assert/strict");
const path = require("node:path");
const { after, before, it } = require("node:test");
const workerThreads = require("node:worker_threads");

// Keep the plugin's threads at hand (before the plugin is loaded).
const threads = [];
const RealWorker = workerThreads.Worker;
workerThreads.Worker = class extends RealWorker {
  constructor(...args) {
    super(...args);
    threads.push(this);
  }
};

const { makeHeartbeatPreset } = require("..");
const h = require("../fixtures/harness.js");

const gw = h.VERSIONS.find((v) => v.version.startsWith("0.17."));
let template;
let db;

before(async () => {
  template = await h.createTemplate(gw);
  db = await h.createDatabase(template);
});

after(async () => {
  workerThreads.Worker = RealWorker;
  if (db) await db.drop();
  if (template) await h.dropDatabase(template);
});

it("restarts a dead lease thread, which takes the lease again and keeps the row", async (t) => {
  const lib = require(path.join(h.packageDir(gw.pkg), "dist", "index.js"));
  const logs = [];
  const logger = new lib.Logger(() => (level, message) => logs.push({ level, message }));
  const runner = await lib.run({
    connectionString: db.dsn,
    concurrency: 1,
    noHandleSignals: true,
    pollInterval: 100,
    logger,
    taskList: { noop: async () => {} },
    preset: { extends: [makeHeartbeatPreset({ intervalMs: 200 })] },
  });
  try {
    const [row] = await h.waitFor(() => h.heartbeatsIfAny(db).then((r) => r?.length && r), {
      what: "the first heartbeat row",
    });
    assert.equal(row.lease, true);
    assert.equal(threads.length, 1);
    const before = await h.leaseHolder(db, row.locker_id);

    await threads[0].terminate();
    const terminated = Date.now();
    const holder = await h.waitFor(
      async () => {
        const found = await h.leaseHolder(db, row.locker_id);
        return found && found.pid !== before.pid ? found : null;
      },
      { timeout: 3000, interval: 20, what: "the lease to be taken again" },
    );
    t.diagnostic(`lease held again ${Date.now() - terminated} ms after the thread was terminated`);
    assert.equal(holder.application_name, "airflow-graphile lease");
    assert.equal(threads.length, 2);
    const [kept] = await h.heartbeats(db);
    assert.equal(kept.started_at.getTime(), row.started_at.getTime());
    await h.waitFor(
      async () => (await h.heartbeats(db))[0].last_beat_at > kept.last_beat_at,
      { what: "a beat from the new thread" },
    );
    assert.ok(logs.some((log) => /lease thread exited/.test(log.message)), JSON.stringify(logs));
  } finally {
    await runner.stop();
    await runner.promise.catch(() => {});
  }
  assert.deepEqual(await h.heartbeats(db), []);
});
