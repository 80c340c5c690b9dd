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

function firstRows(db, table) {
  return h.waitFor(() => h.heartbeatsIfAny(db, table).then((rows) => rows?.length && rows), {
    what: "the first heartbeat row",
  });
}

const RESCUED =
  /\[AirflowGraphileHeartbeatPlugin\] locker (\S+) was declared dead and its jobs released while this process was cut off from the database; stopping this process so that no job runs twice/;

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
          assert.equal(row.lease, true);
          assert.equal(await h.leaseHeld(db, row.locker_id), true);
          const holder = await h.leaseHolder(db, row.locker_id);
          assert.equal(holder.application_name, "airflow-graphile lease");
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
        for (const id of lockers) assert.equal(await h.leaseHeld(db, id), false);
        assert.doesNotMatch(w.output(), /AirflowGraphileHeartbeatPlugin\] .*failed/);
        assert.match(w.output(), /heartbeat started for \S+ in .*, every 250 ms, lease held/);
      });

      it("after SIGKILL: the lease is free within 1 s, the row stays, no longer updated", async (t) => {
        const db = await freshDb();
        await h.addJob(db, "sleep", { ms: 60000 }, { queue: "q" });
        const w = worker(db);
        const [job] = await lockedJobs(db, 1);
        const [first] = await h.heartbeats(db);
        assert.equal(first.locker_id, job.locked_by);
        await beatsAfter(db, [job.locked_by], first.last_beat_at);
        assert.equal(await h.leaseHeld(db, job.locked_by), true);

        w.child.kill("SIGKILL");
        const killed = Date.now();
        await h.waitFor(async () => !(await h.leaseHeld(db, job.locked_by)), {
          timeout: 1000,
          interval: 20,
          what: "the lease to be free",
        });
        t.diagnostic(`lease free ${Date.now() - killed} ms after kill -9`);
        const { signal } = await w.exited;
        assert.equal(signal, "SIGKILL");
        const [dead] = await h.heartbeats(db);
        assert.equal(dead.lease, true);
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

      it("beats from its thread while a task blocks the main event loop; the lease stays held", async (t) => {
        const db = await freshDb();
        const w = worker(db, [], { HEARTBEAT_INTERVAL_MS: "1000" });
        const [row] = await firstRows(db);
        await h.addJob(db, "busy", { seconds: 8 });
        await h.waitFor(() => /busy: spinning/.test(w.output()), { what: "the busy task to start" });
        const seen = [];
        for (let i = 0; i < 6; i++) {
          await h.sleep(1000);
          const [now] = await h.heartbeats(db);
          seen.push(now.last_beat_at.getTime());
          assert.equal(await h.leaseHeld(db, row.locker_id), true);
        }
        assert.equal((await h.jobs(db)).length, 1, "the busy task is still running");
        const distinct = new Set(seen).size;
        t.diagnostic(`${distinct} distinct last_beat_at values in 6 samples 1 s apart`);
        assert.ok(distinct >= 4, `last_beat_at advanced only ${distinct - 1} times: ${seen}`);
        await h.waitFor(async () => (await h.jobs(db)).length === 0, {
          timeout: 10000,
          what: "the busy task to end",
        });
        await w.stop("SIGTERM");
        assert.deepEqual(await h.heartbeats(db), []);
      });

      it("a SIGSTOPped worker keeps its lease", async () => {
        const db = await freshDb();
        const w = worker(db);
        const [row] = await firstRows(db);
        process.kill(w.pid, "SIGSTOP");
        try {
          await h.sleep(3000);
          assert.equal(await h.leaseHeld(db, row.locker_id), true);
          const [paused] = await h.heartbeats(db);
          await h.sleep(INTERVAL_MS * 2);
          assert.deepEqual(await h.heartbeats(db), [paused], "no beat while stopped");
        } finally {
          process.kill(w.pid, "SIGCONT");
        }
        const [resumed] = await h.heartbeats(db);
        await beatsAfter(db, [row.locker_id], resumed.last_beat_at);
        await w.stop("SIGTERM");
        assert.deepEqual(await h.heartbeats(db), []);
        assert.equal(await h.leaseHeld(db, row.locker_id), false);
      });

      it("takes its lease again after the server ends the lease session; the row stays", async (t) => {
        const db = await freshDb();
        const w = worker(db);
        const [row] = await firstRows(db);
        const before = await h.leaseHolder(db, row.locker_id);
        await db.query("select pg_terminate_backend($1)", [before.pid]);
        const terminated = Date.now();
        const after = await h.waitFor(
          async () => {
            const holder = await h.leaseHolder(db, row.locker_id);
            return holder && holder.pid !== before.pid ? holder : null;
          },
          { timeout: 2500, interval: 20, what: "the lease to be taken again" },
        );
        t.diagnostic(`lease held again ${Date.now() - terminated} ms after pg_terminate_backend`);
        assert.equal(after.application_name, "airflow-graphile lease");
        const [kept] = await h.heartbeats(db);
        assert.equal(kept.locker_id, row.locker_id);
        assert.equal(kept.started_at.getTime(), row.started_at.getTime());
        await beatsAfter(db, [row.locker_id], kept.last_beat_at);
        await h.waitFor(() => /lease connection back after \d+ ms/.test(w.output()), {
          what: "the reconnection in the log",
        });
        assert.match(w.output(), /lease connection lost: .*reconnecting every 500 ms/);
        assert.ok(w.running());
        await w.stop("SIGTERM");
        assert.deepEqual(await h.heartbeats(db), []);
      });

      it("kills itself when its row was deleted (jobs released) while it was cut off", async (t) => {
        const db = await freshDb();
        await h.addJob(db, "sleep", { ms: 60000 });
        const w = worker(db);
        const [job] = await lockedJobs(db, 1);
        const id = job.locked_by;
        const holder = await h.leaseHolder(db, id);
        const allowConnections = (allow) =>
          h.adminQuery(`alter database "${db.name}" with allow_connections ${allow}`);
        // What the provider does to a dead locker, in one transaction. The lease
        // thread reconnects at once: keep it out until the row is deleted.
        await h.withClient(db.dsn, async (client) => {
          await allowConnections(false);
          try {
            await client.query("begin");
            await client.query("select pg_terminate_backend($1)", [holder.pid]);
            await h.waitFor(
              async () =>
                (await client.query("select pg_try_advisory_xact_lock(1735879795, hashtext($1)) as got", [id]))
                  .rows[0].got,
              { timeout: 2000, what: "the lease to be free" },
            );
            await client.query("select graphile_worker.force_unlock_workers(array[$1])", [id]);
            await client.query("delete from public.graphile_worker_heartbeats where locker_id = $1", [id]);
            await allowConnections(true);
            // The lease thread comes back and waits for the lock held here.
            await h.waitFor(
              async () =>
                (
                  await db.query(
                    "select 1 from pg_stat_activity where application_name = 'airflow-graphile lease' and datname = current_database()",
                  )
                ).rows.length,
              { what: "the lease thread to reconnect" },
            );
            await client.query("select pg_sleep(0.5)");
            await client.query("commit");
          } finally {
            await allowConnections(true);
          }
        });
        const committed = Date.now();
        const exit = await Promise.race([w.exited, h.sleep(5000).then(() => null)]);
        assert.ok(exit, `the worker is still running:\n${w.output()}`);
        t.diagnostic(`worker exited ${Date.now() - committed} ms after the commit`);
        assert.equal(exit.signal, "SIGKILL");
        assert.equal(w.output().match(RESCUED)?.[1], id, w.output());
        assert.deepEqual(await h.heartbeats(db), []);
        // The server ends the killed process's sessions within milliseconds.
        await h.waitFor(async () => !(await h.leaseHeld(db, id)), {
          timeout: 1000,
          what: "the lease to be free",
        });
      });

      it("upgrades a table of plugin 0.1 in place; the trigger keeps the database's clock", async () => {
        const db = await freshDb();
        await db.query(`create table public.graphile_worker_heartbeats (
  locker_id text primary key,
  host text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  last_beat_at timestamptz not null
)`);
        await db.query(
          `insert into public.graphile_worker_heartbeats values ('worker-old', 'h', 1, '2000-01-01', '2000-01-01')`,
        );
        const w = worker(db);
        const rows = await h.waitFor(
          async () => {
            const found = await h.heartbeats(db).catch((error) => {
              if (error.code === "42703") return []; // no lease column yet
              throw error;
            });
            return found.length === 2 ? found : null;
          },
          { what: "the worker's row" },
        );
        const old = rows.find((row) => row.locker_id === "worker-old");
        const mine = rows.find((row) => row.locker_id !== "worker-old");
        assert.equal(old.lease, false);
        assert.equal(old.last_beat_at.toISOString(), "2000-01-01T00:00:00.000Z");
        assert.equal(mine.lease, true);
        assert.equal(mine.pid, w.pid);
        const { rows: triggers } = await db.query(
          `select tgname from pg_trigger where tgrelid = 'public.graphile_worker_heartbeats'::regclass and not tgisinternal`,
        );
        assert.deepEqual(triggers, [{ tgname: "airflow_graphile_db_clock" }]);

        // Writers cannot put another time than the database's into the row.
        const { rows: updated } = await db.query(
          `update public.graphile_worker_heartbeats
set last_beat_at = '2000-01-01', started_at = '1999-01-01' where locker_id = 'worker-old'
returning last_beat_at, started_at, now() as now`,
        );
        assert.equal(updated[0].last_beat_at.getTime(), updated[0].now.getTime());
        assert.equal(updated[0].started_at.toISOString(), "2000-01-01T00:00:00.000Z");
        const { rows: inserted } = await db.query(
          `insert into public.graphile_worker_heartbeats values ('worker-new', 'h', 1, '2000-01-01', '2000-01-01')
returning last_beat_at, started_at, now() as now`,
        );
        assert.equal(inserted[0].last_beat_at.getTime(), inserted[0].now.getTime());
        assert.equal(inserted[0].started_at.getTime(), inserted[0].now.getTime());

        await w.stop("SIGTERM");
        assert.deepEqual(
          (await h.heartbeats(db)).map((row) => row.locker_id),
          ["worker-new", "worker-old"],
        );
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
          assert.equal(rows[0].lease, true, "pg found for the lease thread");
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
