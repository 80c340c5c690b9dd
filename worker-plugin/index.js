"use strict";
/**
 * airflow-graphile-heartbeat: a Graphile Worker (>= 0.16) plugin that keeps one
 * row per live "locker" in a PostgreSQL table, so that an outside observer
 * (airflow-graphile) can tell a crashed worker's locks from a live worker's.
 *
 * A locker is whatever id Graphile Worker writes into `locked_by`:
 *   - 0.16.x: each worker's id (`worker-<hex>`; `--jobs N` runs N workers);
 *   - 0.17.0 and later: the worker pool's id (`pool-<hex>`, `otpool-<hex>` for
 *     run-once), shared by all the pool's workers.
 *
 * Lifecycle (see README.md for the details per version):
 *   - `startWorker` hook (all versions; awaited by Graphile Worker before the
 *     worker asks for its first job): register the locker and write its first
 *     beat;
 *   - 0.17+: `pool:create` event (via the `init` middleware) registers the pool
 *     even earlier, which matters when `localQueue` is enabled;
 *   - every `intervalMs`: upsert `last_beat_at = now()` for every registered
 *     locker, in one statement;
 *   - 0.16: `stopWorker` hook deletes the worker's row; 0.17+: the
 *     `poolGracefulShutdown` / `poolForcefulShutdown` middleware deletes the
 *     pool's row once the pool has let go of its jobs (`pool:release` is a
 *     fallback). The row is deleted only if the locker holds no lock any more;
 *     otherwise it is left to go stale, as after a crash.
 *
 * Heartbeat failures are logged through Graphile Worker's logger and retried at
 * the next interval; they never reject into Graphile Worker.
 */

const os = require("node:os");

const { version: PLUGIN_VERSION } = require("./package.json");

const PLUGIN_NAME = "AirflowGraphileHeartbeatPlugin";

/** The preset scope that holds this plugin's options. */
const SCOPE = "airflowHeartbeat";

/**
 * How long a stopping locker waits for its locks to be released before it
 * leaves its row to go stale. From 0.17 on, Graphile Worker does not await
 * its complete/fail job queries (fire and forget), so a pool can finish its
 * shutdown a few milliseconds before its last locks are gone.
 */
const RELEASE_WAIT_MS = 1000;
const RELEASE_POLL_MS = 50;

/** Default options. */
const DEFAULTS = Object.freeze({
  schema: "public",
  table: "graphile_worker_heartbeats",
  intervalMs: 10000,
});

/** Quote a name as a PostgreSQL identifier (like pg's `escapeIdentifier`). */
function quoteIdentifier(name) {
  return `"${String(name).replace(/"/g, '""')}"`;
}

/** Validate and complete the options found in the preset. */
function resolveOptions(raw) {
  const options = { ...DEFAULTS };
  if (raw != null) {
    if (typeof raw !== "object") {
      throw new TypeError(`${SCOPE} options must be an object`);
    }
    for (const key of Object.keys(raw)) {
      if (raw[key] === undefined) continue;
      if (!(key in DEFAULTS)) {
        throw new TypeError(
          `Unknown ${SCOPE} option '${key}'; known: ${Object.keys(DEFAULTS).join(", ")}`,
        );
      }
      options[key] = raw[key];
    }
  }
  for (const key of ["schema", "table"]) {
    if (typeof options[key] !== "string" || options[key] === "") {
      throw new TypeError(`${SCOPE}.${key} must be a non-empty string`);
    }
  }
  const interval = Number(options.intervalMs);
  if (!Number.isFinite(interval) || interval <= 0) {
    throw new TypeError(`${SCOPE}.intervalMs must be a positive number of milliseconds`);
  }
  options.intervalMs = interval;
  return Object.freeze(options);
}

/**
 * Tell whether this Graphile Worker version writes the pool id (true, 0.17.0
 * and later) or the worker id (false, up to 0.16.x) into `locked_by`.
 */
function lockedByPoolId(version) {
  const match = /^(\d+)\.(\d+)\./.exec(String(version || ""));
  if (!match) return true; // unknown: assume current behaviour
  const major = Number(match[1]);
  const minor = Number(match[2]);
  return major > 0 || minor >= 17;
}

function errorMessage(error) {
  return error && error.message ? error.message : String(error);
}

/**
 * SQL text for one options set (identifiers quoted once). `workerSchema` is
 * Graphile Worker's schema, already quoted.
 */
function makeStatements(options, workerSchema) {
  const table = `${quoteIdentifier(options.schema)}.${quoteIdentifier(options.table)}`;
  return {
    table,
    exists: "select to_regclass($1) is not null as exists",
    create: `create table if not exists ${table} (
  locker_id text primary key,
  host text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  last_beat_at timestamptz not null
)`,
    beat: `insert into ${table} (locker_id, host, pid, last_beat_at)
select id, $2::text, $3::integer, now() from unnest($1::text[]) as ids(id)
on conflict (locker_id) do update
set last_beat_at = excluded.last_beat_at, host = excluded.host, pid = excluded.pid`,
    // Delete the row only if the locker holds no lock any more; otherwise leave
    // it to go stale, so that the locker is seen as dead and can be unlocked.
    release: `with held as (
  select
    (select count(*) from ${workerSchema}._private_jobs where locked_by = $1) as jobs,
    (select count(*) from ${workerSchema}._private_job_queues where locked_by = $1) as queues
), deleted as (
  delete from ${table} where locker_id = $1 and (select jobs + queues from held) = 0
  returning 1
)
select jobs::int, queues::int, (select count(*) from deleted)::int as deleted from held`,
  };
}

/**
 * The heartbeats of one Graphile Worker instance (one compiled options object,
 * `ctx`). Every database operation runs in one promise chain, so a delete can
 * never be overtaken by a beat that would re-create the row.
 */
class Heartbeats {
  constructor(ctx) {
    this.options = resolveOptions(ctx.resolvedPreset && ctx.resolvedPreset[SCOPE]);
    this.sql = makeStatements(
      this.options,
      ctx.escapedWorkerSchema || quoteIdentifier(ctx.workerSchema || "graphile_worker"),
    );
    this.logger =
      ctx.logger && typeof ctx.logger.scope === "function"
        ? ctx.logger.scope({ label: "heartbeat" })
        : ctx.logger;
    this.poolIds = lockedByPoolId(ctx.version);
    this.host = os.hostname();
    this.pid = process.pid;
    /** locker id -> { withPgClient, firstBeat } */
    this.lockers = new Map();
    /** locker ids already stopped: never registered again. */
    this.stopped = new Set();
    /** withPgClient functions whose database has the table (checked once). */
    this.tableReady = new WeakSet();
    this.chain = Promise.resolve();
    this.timer = null;
    this.tickQueued = false;
  }

  log(level, message) {
    const text = `[${PLUGIN_NAME}] ${message}`;
    if (this.logger && typeof this.logger[level] === "function") {
      this.logger[level](text);
    } else {
      // eslint-disable-next-line no-console
      console[level === "debug" ? "log" : level](text);
    }
  }

  /** Run `fn` after every operation queued before it; never rejects. */
  enqueue(fn) {
    const run = this.chain.then(fn).catch((error) => {
      this.log("error", `unexpected error: ${errorMessage(error)}`);
    });
    this.chain = run;
    return run;
  }

  /**
   * Start beating for a locker id; resolves once its first beat was attempted
   * (successful or not). Idempotent.
   */
  start(lockerId, withPgClient) {
    const known = this.lockers.get(lockerId);
    if (known) return known.firstBeat;
    if (this.stopped.has(lockerId)) return Promise.resolve();
    const entry = { withPgClient, firstBeat: null };
    this.lockers.set(lockerId, entry);
    entry.firstBeat = this.enqueue(() => this.beat(withPgClient, [lockerId]));
    if (this.timer === null) {
      this.timer = setInterval(() => this.tick(), this.options.intervalMs);
      if (typeof this.timer.unref === "function") this.timer.unref();
    }
    this.log(
      "info",
      `heartbeat started for ${lockerId} in ${this.sql.table}, every ${this.options.intervalMs} ms`,
    );
    return entry.firstBeat;
  }

  /**
   * Stop beating for a locker id and delete its row, unless it still holds
   * locks after RELEASE_WAIT_MS (then the row goes stale, as after a crash, so
   * that the locker is seen as dead). Idempotent; a stopped id never restarts.
   */
  stop(lockerId) {
    const entry = this.lockers.get(lockerId);
    this.stopped.add(lockerId);
    if (!entry) return Promise.resolve();
    this.lockers.delete(lockerId);
    if (this.lockers.size === 0 && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    return this.enqueue(() => this.release(entry.withPgClient, lockerId));
  }

  /** Interval callback: beat every registered locker (at most one beat queued). */
  tick() {
    if (this.tickQueued) return;
    this.tickQueued = true;
    this.enqueue(async () => {
      this.tickQueued = false;
      const groups = new Map();
      for (const [lockerId, { withPgClient }] of this.lockers) {
        const ids = groups.get(withPgClient);
        if (ids) ids.push(lockerId);
        else groups.set(withPgClient, [lockerId]);
      }
      for (const [withPgClient, ids] of groups) {
        await this.beat(withPgClient, ids);
      }
    });
  }

  async beat(withPgClient, ids) {
    try {
      await withPgClient(async (client) => {
        if (!this.tableReady.has(withPgClient)) {
          await this.ensureTable(client);
          this.tableReady.add(withPgClient);
        }
        await client.query(this.sql.beat, [ids, this.host, this.pid]);
      });
    } catch (error) {
      // Check the table again next time: it may have been dropped.
      this.tableReady.delete(withPgClient);
      this.log(
        "error",
        `heartbeat of ${ids.join(", ")} into ${this.sql.table} failed: ${errorMessage(error)}; ` +
          `retrying in ${this.options.intervalMs} ms`,
      );
    }
  }

  async ensureTable(client) {
    const { rows } = await client.query(this.sql.exists, [this.sql.table]);
    if (rows[0] && rows[0].exists) return;
    try {
      await client.query(this.sql.create);
    } catch (error) {
      // Two processes creating the table at once: one of them gets one of these.
      if (error && (error.code === "42P07" || error.code === "23505")) return;
      throw error;
    }
  }

  async release(withPgClient, lockerId) {
    try {
      const deadline = Date.now() + RELEASE_WAIT_MS;
      for (;;) {
        const { rows } = await withPgClient((client) =>
          client.query(this.sql.release, [lockerId]),
        );
        const { jobs, queues, deleted } = rows[0];
        if (deleted || jobs + queues === 0) {
          this.log("debug", `heartbeat row of ${lockerId} deleted`);
          return;
        }
        if (Date.now() >= deadline) {
          this.log(
            "warn",
            `${lockerId} stopped but still holds ${jobs} job lock(s) and ${queues} queue ` +
              `lock(s); leaving its heartbeat row in ${this.sql.table} to go stale`,
          );
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, RELEASE_POLL_MS));
      }
    } catch (error) {
      this.log(
        "error",
        `could not delete the heartbeat row of ${lockerId} from ${this.sql.table}: ` +
          `${errorMessage(error)}; it will go stale`,
      );
    }
  }
}

/**
 * One Heartbeats per Graphile Worker instance, keyed by its resolved preset:
 * Graphile Worker hands plugins shallow copies of its context (`{...ctx}`,
 * scoped loggers), but they all share the same `resolvedPreset` object.
 */
const instances = new WeakMap();

function heartbeatsFor(ctx) {
  const key = ctx.resolvedPreset || ctx;
  let heartbeats = instances.get(key);
  if (!heartbeats) {
    heartbeats = new Heartbeats(ctx);
    instances.set(key, heartbeats);
  }
  return heartbeats;
}

/** Resolved presets whose options were invalid (reported once). */
const invalid = new WeakSet();

/**
 * Like heartbeatsFor, for hooks: an invalid configuration is logged (once) and
 * the worker runs without heartbeats rather than failing every job fetch. (On
 * 0.17+ the `init` middleware already refused to start with such options.)
 */
function heartbeatsOrNull(ctx) {
  try {
    return heartbeatsFor(ctx);
  } catch (error) {
    const key = ctx.resolvedPreset || ctx;
    if (!invalid.has(key)) {
      invalid.add(key);
      const message = `[${PLUGIN_NAME}] disabled, invalid options: ${errorMessage(error)}`;
      if (ctx.logger) ctx.logger.error(message);
      else console.error(message); // eslint-disable-line no-console
    }
    return null;
  }
}

function startPool(ctx, workerPool, withPgClient) {
  if (!workerPool || typeof workerPool.id !== "string") return undefined;
  if (typeof withPgClient !== "function") return undefined;
  return heartbeatsFor(ctx).start(workerPool.id, withPgClient);
}

async function stopPool(ctx, workerPool) {
  if (!workerPool || typeof workerPool.id !== "string") return;
  await heartbeatsFor(ctx).stop(workerPool.id);
}

/**
 * Wrap a pool shutdown (0.17+) so that the row is dealt with once the pool has
 * let go of its jobs, inside the promise that Graphile Worker's signal handler
 * and `runner.stop()` wait for (the CLI kills itself / ends its pg pool after).
 */
function afterPoolShutdown(next, event) {
  const { ctx, workerPool } = event;
  let result;
  try {
    result = next();
  } catch (error) {
    return stopPool(ctx, workerPool).then(() => {
      throw error;
    });
  }
  return Promise.resolve(result).then(
    async (value) => {
      await stopPool(ctx, workerPool);
      return value;
    },
    async (error) => {
      await stopPool(ctx, workerPool);
      throw error;
    },
  );
}

/** The graphile-config plugin. Options come from the preset's `airflowHeartbeat` scope. */
const HeartbeatPlugin = {
  name: PLUGIN_NAME,
  version: PLUGIN_VERSION,
  description:
    "Writes a heartbeat row per Graphile Worker locker id so dead workers can be told from live ones",
  worker: {
    hooks: {
      // All versions: awaited before the worker fetches its first job.
      startWorker(ctx, event) {
        const { worker, withPgClient } = event;
        const heartbeats = heartbeatsOrNull(ctx);
        if (!heartbeats) return undefined;
        if (heartbeats.poolIds) {
          return startPool(ctx, worker.workerPool, withPgClient);
        }
        return heartbeats.start(worker.workerId, withPgClient);
      },
      // All versions: awaited as part of the worker's promise, after its last job.
      stopWorker(ctx, event) {
        const heartbeats = heartbeatsOrNull(ctx);
        if (!heartbeats || heartbeats.poolIds) return undefined; // a pool still holds locks
        return heartbeats.stop(event.worker.workerId);
      },
    },
    // Middleware exists from 0.17.0 on; 0.16 ignores this key.
    middleware: {
      init(next, event) {
        const result = next();
        const { ctx } = event;
        const heartbeats = heartbeatsFor(ctx); // validates options at startup
        if (heartbeats.poolIds && ctx.events && typeof ctx.events.on === "function") {
          ctx.events.on("pool:create", ({ workerPool }) => {
            // Beat as soon as the pool id exists (before a local queue fetches).
            // `_withPgClient` is internal; `startWorker` covers its absence.
            if (workerPool && typeof workerPool._withPgClient === "function") {
              startPool(ctx, workerPool, workerPool._withPgClient);
            }
          });
          ctx.events.on("pool:release", ({ workerPool }) => {
            // Fallback only: the shutdown middleware normally did this already.
            stopPool(ctx, workerPool);
          });
        }
        return result;
      },
      poolGracefulShutdown: afterPoolShutdown,
      poolForcefulShutdown: afterPoolShutdown,
    },
  },
};

/** Preset that enables the plugin with the default options. */
const HeartbeatPreset = { plugins: [HeartbeatPlugin] };

/**
 * Preset that enables the plugin with options:
 * `{ schema = "public", table = "graphile_worker_heartbeats", intervalMs = 10000 }`.
 */
function makeHeartbeatPreset(options = {}) {
  resolveOptions(options); // fail early, at configuration time
  const given = {};
  for (const key of Object.keys(options)) {
    if (options[key] !== undefined) given[key] = options[key];
  }
  return { plugins: [HeartbeatPlugin], [SCOPE]: given };
}

exports.HeartbeatPlugin = HeartbeatPlugin;
exports.HeartbeatPreset = HeartbeatPreset;
exports.makeHeartbeatPreset = makeHeartbeatPreset;
exports.DEFAULTS = DEFAULTS;
exports.SCOPE = SCOPE;
exports.lockedByPoolId = lockedByPoolId;
exports.quoteIdentifier = quoteIdentifier;
