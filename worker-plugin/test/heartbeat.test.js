"use strict";
// End-to-end tests against a real PostgreSQL and the real Graphile Worker
// releases 0.16.6, 0.17.3 and 0.18.0 (run concurrently, one describe each).

const assert = require("node:assert/strict");
const os = require("node:os");
const path = require("node:path");
const { pathToFileURL } = require("node:url");
const { after, before, describe, it } = require("node:test");

const { makeHeartbeatPreset } = require("..");
const h = require("../fixtures/harness.js");

const INTERVAL_MS = 250;
const ENV = { HEARTBEAT_INTERVAL_MS: String(INTERVAL_MS), GRACEFUL_ABORT_MS: "100" };

function lockedJobs(db, count) {
  return h.waitFor(
    async () => {
      const rows = (await h.jobs(db)).filter((job) => job.locked_by);
      return rows.length >= count ? rows : null;
    },
    { what: `${count} locked job(s)` },
  );
}

/** Wait until every given locker has beaten after `since` (a Date from the database). */
function beatsAfter(db, lockerIds, since, table) {
  return h.waitFor(
    async () => {
      const rows = await h.heartbeats(db, table);
      const advanced = lockerIds.every((id) =>
        rows.some((row) => row.locker_id === id && row.last_beat_at > since),
      );
      return advanced ? rows : null;
    },
    { what: "last_beat_at to advance" },
  );
}

describe("airflow-graphile-heartbeat", { concurrency: true }, () => {
  for (const gw of h.VERSIONS) {
    describe(`graphile-worker ${gw.version}`, { concurrency: 1 }, () => {
      let template;
      const databases = [];
      const workers = [];

      async function freshDb() {
        const db = await h.createDatabase(template);
        databases.push(db);
        return db;
      }

      function worker(db, args = [], env = {}) {
        const w = h.startWorker({ pkg: gw.pkg, dsn: db.dsn, args, env: { ...ENV, ...env } });
        workers.push(w);
        return w;
      }

      before(async () => {
        template = await h.createTemplate(gw);
      });

      after(async () => {
        await Promise.all(workers.map((w) => w.stop("SIGKILL")));
        await Promise.all(databases.map((db) => db.drop()));
        if (template) await h.dropDatabase(template);
      });

      it("writes a row per locked_by id before the first lock, beats, deletes it on SIGTERM", async (t) => {
        const db = await freshDb();
        await h.addJob(db, "sleep", { ms: 60000 }, { queue: "q" });
        await h.addJob(db, "sleep", { ms: 60000 });
        const spawned = Date.now();
        const w = worker(db, ["--jobs", "2"]);
        await h.waitFor(async () => (await h.heartbeatsIfAny(db))?.length, {
          interval: 10,
          what: "the first heartbeat row",
        });
        t.diagnostic(`first heartbeat row ${Date.now() - spawned} ms after spawn`);

        const locked = await lockedJobs(db, 2);
        const lockers = [...new Set(locked.map((job) => job.locked_by))].sort();
        // 0.16: each of the 2 workers locks with its own id; 0.17+: the pool id.
        assert.equal(lockers.length, gw.lockerPrefix === "worker-" ? 2 : 1);
        for (const id of lockers) assert.ok(id.startsWith(gw.lockerPrefix), id);
        const { rows: queues } = await db.query(
          "select locked_by from graphile_worker._private_job_queues where queue_name = 'q'",
        );
        assert.ok(lockers.includes(queues[0].locked_by));

        const rows = await h.heartbeats(db);
        assert.deepEqual(
          rows.map((row) => row.locker_id),
          lockers,
        );
        for (const row of rows) {
          assert.equal(row.pid, w.pid);
          assert.equal(row.host, os.hostname());
        }
        for (const job of locked) {
          const row = rows.find((r) => r.locker_id === job.locked_by);
          assert.ok(row.started_at <= job.locked_at, "the first beat precedes the lock");
        }

        const since = new Date(Math.max(...rows.map((row) => row.last_beat_at)));
        await beatsAfter(db, lockers, since);

        const { signal, code } = await w.stop("SIGTERM");
        assert.ok(signal === "SIGTERM" || code === 0, `exit ${code} ${signal}`);
        assert.deepEqual(await h.heartbeats(db), []);
        assert.ok((await h.jobs(db)).every((job) => job.locked_by === null));
        assert.doesNotMatch(w.output(), /AirflowGraphileHeartbeatPlugin\] .*failed/);
      });

      it("keeps the row, no longer updated, after SIGKILL", async () => {
        const db = await freshDb();
        await h.addJob(db, "sleep", { ms: 60000 }, { queue: "q" });
        const w = worker(db);
        const [job] = await lockedJobs(db, 1);
        const [first] = await h.heartbeats(db);
        assert.equal(first.locker_id, job.locked_by);
        await beatsAfter(db, [job.locked_by], first.last_beat_at);

        const { signal } = await w.stop("SIGKILL");
        assert.equal(signal, "SIGKILL");
        const [dead] = await h.heartbeats(db);
        await h.sleep(INTERVAL_MS * 4);
        assert.deepEqual(await h.heartbeats(db), [dead]);
        assert.equal((await h.jobs(db))[0].locked_by, job.locked_by);
      });

      it("leaves the row to go stale when the locker stops still holding a lock", async () => {
        const db = await freshDb();
        const w = worker(db);
        const [row] = await h.waitFor(() => h.heartbeatsIfAny(db).then((r) => r?.length && r), {
          what: "the first heartbeat row",
        });
        // A lock the worker could not release (as after 0.16's forceful shutdown).
        const jobId = await h.addJob(db, "noop", {}, { runAt: "2999-01-01" });
        await db.query(
          `update graphile_worker._private_jobs set locked_by = $1, locked_at = now() where id = $2`,
          [row.locker_id, jobId],
        );
        await w.stop("SIGTERM");
        assert.match(w.output(), /still holds 1 job lock\(s\) and 0 queue lock\(s\)/);
        const [left] = await h.heartbeats(db);
        assert.equal(left.locker_id, row.locker_id);
        await h.sleep(INTERVAL_MS * 3);
        assert.deepEqual(await h.heartbeats(db), [left]);
      });

      it("logs a failing beat, keeps working, and recovers", async () => {
        const db = await freshDb();
        const w = worker(db);
        const [row] = await h.waitFor(() => h.heartbeatsIfAny(db).then((r) => r?.length && r), {
          what: "the first heartbeat row",
        });

        await db.query("drop table public.graphile_worker_heartbeats");
        await h.waitFor(() => /heartbeat of \S+ into .* failed: .*graphile_worker_heartbeats/.test(w.output()), {
          what: "the failed beat in the log",
        });
        assert.ok(w.running(), "the worker survived the failed beat");

        await h.addJob(db, "noop", {});
        await h.waitFor(async () => (await h.jobs(db)).length === 0, { what: "the noop job to run" });
        // The table is created again and the same locker beats again.
        const rows = await h.waitFor(() => h.heartbeatsIfAny(db).then((r) => r?.length && r), {
          what: "the row to come back",
        });
        assert.equal(rows[0].locker_id, row.locker_id);
        assert.ok(w.running());

        await w.stop("SIGTERM");
        assert.deepEqual(await h.heartbeats(db), []);
      });

      it("--once: the run-once locker id has a row while it runs, removed at exit", async () => {
        const db = await freshDb();
        await h.addJob(db, "sleep", { ms: 1000 });
        const w = worker(db, ["--once"]);
        const [job] = await lockedJobs(db, 1);
        const once = gw.lockerPrefix === "pool-" ? "otpool-" : "worker-";
        assert.ok(job.locked_by.startsWith(once), job.locked_by);
        assert.deepEqual(
          (await h.heartbeats(db)).map((row) => row.locker_id),
          [job.locked_by],
        );
        const { code } = await w.exited;
        assert.equal(code, 0, w.output());
        assert.deepEqual(await h.jobs(db), []);
        assert.deepEqual(await h.heartbeats(db), []);
      });

      it("programmatic run(): custom schema and table, localQueue, runner.stop() deletes the row", async () => {
        const db = await freshDb();
        await db.query('create schema "hb schema"');
        const table = '"hb schema"."beats ""x"""';
        const entry = path.join(h.packageDir(gw.pkg), "dist", "index.js");
        const imported = await import(pathToFileURL(entry).href);
        const lib = imported.run ? imported : imported.default;
        const logs = [];
        const logger = new lib.Logger(() => (level, message) => logs.push({ level, message }));
        const poolMode = gw.lockerPrefix === "pool-";

        const runner = await lib.run({
          connectionString: db.dsn,
          concurrency: 2,
          noHandleSignals: true,
          pollInterval: 100,
          logger,
          taskList: {
            sleep: (payload, helpers) =>
              new Promise((resolve, reject) => {
                const timer = setTimeout(resolve, payload.ms);
                helpers.abortSignal?.addEventListener("abort", () => {
                  clearTimeout(timer);
                  reject(new Error("aborted"));
                });
              }),
          },
          preset: {
            extends: [makeHeartbeatPreset({ schema: "hb schema", table: 'beats "x"', intervalMs: 100 })],
            worker: {
              gracefulShutdownAbortTimeout: 100,
              // 0.17+: a local queue locks jobs for the pool before any worker asks.
              ...(poolMode ? { localQueue: { size: 2 } } : {}),
            },
          },
        });
        try {
          await h.addJob(db, "sleep", { ms: 60000 });
          await h.addJob(db, "sleep", { ms: 60000 });
          const locked = await lockedJobs(db, 2);
          const lockers = [...new Set(locked.map((job) => job.locked_by))].sort();
          assert.equal(lockers.length, poolMode ? 1 : 2);
          const rows = await h.heartbeats(db, table);
          assert.deepEqual(
            rows.map((row) => row.locker_id),
            lockers,
          );
          assert.equal(rows[0].pid, process.pid);
          await beatsAfter(db, lockers, rows[0].last_beat_at, table);
        } finally {
          await runner.stop();
          await runner.promise.catch(() => {});
        }
        assert.deepEqual(await h.heartbeats(db, table), [], JSON.stringify(logs, null, 1));
        const problems = logs.filter((log) => /AirflowGraphileHeartbeat/.test(log.message) && log.level === "error");
        assert.deepEqual(problems, []);
      });
    });
  }
});
