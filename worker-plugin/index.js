"use strict";
/**
 * airflow-graphile-heartbeat: a Graphile Worker (>= 0.16) plugin that gives
 * every "locker" a lease and a row in a PostgreSQL table, so that an outside
 * observer (airflow-graphile) can tell a dead worker's locks from a live
 * worker's.
 *
 * A locker is whatever id Graphile Worker writes into `locked_by`:
 *   - 0.16.x: each worker's id (`worker-<hex>`; `--jobs N` runs N workers);
 *   - 0.17.0 and later: the worker pool's id (`pool-<hex>`, `otpool-<hex>` for
 *     run-once), shared by all the pool's workers.
 *
 * The lease is the session-level advisory lock `(1735879795, hashtext(id))`,
 * held by one dedicated connection of a worker thread (lease-thread.js) for as
 * long as the locker lives. The session ends with the process (kill -9, OOM,
 * crash), so the lease is free at once; a busy or paused process keeps it. The
 * same thread writes the row (`lease = true`) and beats it every `intervalMs`,
 * so a blocked main event loop does not stop the beats either.
 *
 * Lifecycle (see README.md for the details per version):
 *   - `startWorker` hook (all versions; awaited by Graphile Worker before the
 *     worker asks for its first job): register the locker; resolves once its
 *     lease is taken and its row written;
 *   - 0.17+: `pool:create` event (via the `init` middleware) registers the pool
 *     even earlier, which matters when `localQueue` is enabled;
 *   - 0.16: `stopWorker` hook deletes the worker's row; 0.17+: the
 *     `poolGracefulShutdown` / `poolForcefulShutdown` middleware deletes the
 *     pool's row once the pool has let go of its jobs (`pool:release` is a
 *     fallback). The row is deleted only if the locker holds no lock any more;
 *     otherwise it is left to go stale, as after a crash. The lease is given
 *     up either way.
 *
 * Without a `pg` module for the thread, the plugin beats on the main thread
 * through Graphile Worker's own connections, without a lease (`lease = false`).
 *
 * Failures are logged through Graphile Worker's logger and retried; they never
 * reject into Graphile Worker.
 */

const { createRequire } = require("node:module");
const os = require("node:os");
const path = require("node:path");
const { Worker } = require("node:worker_threads");

const { version: PLUGIN_VERSION } = require("./package.json");
const { LEASE_CLASS, ensureTable, makeStatements, quoteIdentifier } = require("./sql.js");

const PLUGIN_NAME = "AirflowGraphileHeartbeatPlugin";

/** The preset scope that holds this plugin's options. */
const SCOPE = "airflowHeartbeat";

const THREAD_FILE = path.join(__dirname, "lease-thread.js");

/**
 * How long a stopping locker waits for its locks to be released before it
 * leaves its row to go stale. From 0.17 on, Graphile Worker does not await
 * its complete/fail job queries (fire and forget), so a pool can finish its
 * shutdown a few milliseconds before its last locks are gone.
 */
const RELEASE_WAIT_MS = 1000;
const RELEASE_POLL_MS = 50;

/** How long `startWorker` waits for a lease before letting the worker go on. */
const START_WAIT_MS = 10000;
/** How long a stop waits for the lease thread (which waits up to RELEASE_WAIT_MS). */
const STOP_WAIT_MS = RELEASE_WAIT_MS + 4000;
const THREAD_RESTART_MS = 500;
const THREAD_RESTART_MAX_MS = 30000;

/** Default options. */
const DEFAULTS = Object.freeze({
  schema: "public",
  table: "graphile_worker_heartbeats",
  intervalMs: 1000,
});

/** Connection settings handed to the lease thread. */
const CONNECTION_KEYS = ["user", "host", "port", "database", "password", "ssl", "options", "client_encoding"];

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
 * The path of a `pg` module for the lease thread. This file may be loaded by
 * path (from a config file) where `require("pg")` does not resolve, so look
 * from the main script and the working directory too, and last for the pg that
 * `client` (Graphile Worker's) was made with.
 */
function resolvePg(client) {
  const attempts = [
    () => require.resolve("pg"),
    () => createRequire(path.resolve(process.argv[1])).resolve("pg"),
    () => createRequire(path.join(process.cwd(), "x.js")).resolve("pg"),
    () => loadedPg(client),
  ];
  for (const attempt of attempts) {
    try {
      const found = attempt();
      if (found) return found;
    } catch {
      // try the next place
    }
  }
  return null;
}

function loadedPg(client) {
  const Client = client && client.constructor;
  if (typeof Client !== "function") return null;
  for (const [file, cached] of Object.entries(require.cache)) {
    if (cached && cached.exports && cached.exports.Client === Client) return file;
  }
  return null;
}

/**
 * The settings of Graphile Worker's connection `client`, for a new connection
 * in the lease thread (they must survive the copy into the thread).
 */
function connectionSettings(ctx, client) {
  const params = client.connectionParameters || {};
  const settings = {};
  for (const key of CONNECTION_KEYS) {
    // client.password holds the password actually used (a function's or .pgpass's).
    const value = key === "password" && typeof client.password === "string" ? client.password : params[key];
    if (value !== undefined && value !== null && typeof value !== "function") settings[key] = value;
  }
  try {
    structuredClone(settings);
    return settings;
  } catch {
    const worker = ctx.resolvedPreset && ctx.resolvedPreset.worker;
    if (worker && typeof worker.connectionString === "string" && worker.connectionString) {
      return { connectionString: worker.connectionString };
    }
    throw new Error("the connection settings (ssl options?) cannot be handed to a thread");
  }
}

/**
 * The heartbeats of one Graphile Worker instance (one compiled options object,
 * `ctx`): one lease thread, with one connection, for all its lockers.
 */
class Heartbeats {
  constructor(ctx) {
    this.options = resolveOptions(ctx.resolvedPreset && ctx.resolvedPreset[SCOPE]);
    this.sql = makeStatements(
      this.options,
      ctx.escapedWorkerSchema || quoteIdentifier(ctx.workerSchema || "graphile_worker"),
    );
    this.ctx = ctx;
    this.logger =
      ctx.logger && typeof ctx.logger.scope === "function"
        ? ctx.logger.scope({ label: "heartbeat" })
        : ctx.logger;
    this.poolIds = lockedByPoolId(ctx.version);
    this.host = os.hostname();
    this.pid = process.pid;
    /** locker id -> { withPgClient, lease (true, false, null while unknown), mode, ready } */
    this.lockers = new Map();
    /** locker ids already stopped: never registered again. */
    this.stopped = new Set();

    /** Promise of true once the lease thread can be used, false if not. */
    this.setup = null;
    this.threadData = null;
    this.thread = null;
    this.restartMs = THREAD_RESTART_MS;
    this.restartTimer = null;
    /** Locker ids whose lease was taken and row written (taken again after a gap). */
    this.leased = new Set();
    /** "started:<id>" / "stopped:<id>" -> callback of the request waiting for it. */
    this.waiters = new Map();
    this.requests = 0;

    // Without the lease thread: beats on the main thread, in one promise chain,
    // so a delete can never be overtaken by a beat that would re-create the row.
    this.chain = Promise.resolve();
    this.timer = null;
    this.tickQueued = false;
    /** withPgClient functions whose database has the table (checked once). */
    this.tableReady = new WeakSet();
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

  /**
   * Start the heartbeat of a locker id; resolves once its lease is taken and
   * its first row written, or that failed or took too long (never rejects).
   * Idempotent.
   */
  start(lockerId, withPgClient) {
    const known = this.lockers.get(lockerId);
    if (known) return known.ready;
    if (this.stopped.has(lockerId)) return Promise.resolve();
    const entry = { withPgClient, lease: null, mode: null, ready: null };
    this.lockers.set(lockerId, entry);
    entry.mode = this.leaseSetup(withPgClient).then((lease) => {
      entry.lease = lease;
      return lease;
    });
    entry.ready = entry.mode
      .then((lease) => (lease ? this.startLease(lockerId) : this.startPlain(lockerId, entry)))
      .catch((error) => this.log("error", `unexpected error: ${errorMessage(error)}`));
    return entry.ready;
  }

  /**
   * Stop the heartbeat of a locker id and delete its row, unless it still
   * holds locks after RELEASE_WAIT_MS (then the row goes stale, as after a
   * crash, so that the locker is seen as dead); then give up its lease.
   * Idempotent; a stopped id never restarts.
   */
  async stop(lockerId) {
    const entry = this.lockers.get(lockerId);
    this.stopped.add(lockerId);
    if (!entry) return;
    this.lockers.delete(lockerId);
    const lease = await entry.mode;
    if (!lease) {
      await this.stopPlain(lockerId, entry);
      return;
    }
    const starting = this.waiters.get(`started:${lockerId}`);
    if (starting) starting(null);
    const reply = await this.request({ type: "stop", lockerId }, `stopped:${lockerId}`, STOP_WAIT_MS);
    this.leased.delete(lockerId);
    if (!reply) {
      this.log(
        "error",
        `the lease thread did not confirm the stop of ${lockerId} within ${STOP_WAIT_MS} ms; ` +
          `its heartbeat row in ${this.sql.table} may go stale`,
      );
    } else if (reply.error) {
      this.log(
        "error",
        `could not delete the heartbeat row of ${lockerId} from ${this.sql.table}: ${reply.error}; ` +
          "it will go stale",
      );
    } else if (reply.deleted || reply.jobs + reply.queues === 0) {
      this.log("debug", `heartbeat row of ${lockerId} deleted, lease given up`);
    } else {
      this.log(
        "warn",
        `${lockerId} stopped but still holds ${reply.jobs} job lock(s) and ${reply.queues} queue ` +
          `lock(s); leaving its heartbeat row in ${this.sql.table} to go stale (lease given up)`,
      );
    }
    const leaseLockers = [...this.lockers.values()].some((other) => other.lease !== false);
    if (!leaseLockers && this.requests === 0) this.closeThread();
  }

  /** Once per instance: find pg and the connection settings for the lease thread. */
  leaseSetup(withPgClient) {
    if (!this.setup) {
      this.setup = withPgClient((client) => ({
        pgPath: resolvePg(client),
        connection: connectionSettings(this.ctx, client),
      })).then(
        ({ pgPath, connection }) => {
          if (!pgPath) {
            this.log(
              "error",
              "the pg module cannot be found (from this plugin, the main script or the working " +
                "directory) for the lease thread; beating on the main thread WITHOUT a lease " +
                "(install pg next to this plugin)",
            );
            return false;
          }
          this.threadData = {
            pgPath,
            connection,
            sql: this.sql,
            host: this.host,
            pid: this.pid,
            intervalMs: this.options.intervalMs,
            pluginName: PLUGIN_NAME,
          };
          return true;
        },
        (error) => {
          this.setup = null; // try again for the next locker
          this.log(
            "error",
            `cannot prepare the lease thread: ${errorMessage(error)}; beating on the main thread ` +
              "WITHOUT a lease",
          );
          return false;
        },
      );
    }
    return this.setup;
  }

  async startLease(lockerId) {
    const reply = await this.request(
      { type: "start", lockerId, resume: false },
      `started:${lockerId}`,
      START_WAIT_MS,
    );
    if (reply === null && this.lockers.has(lockerId) && !this.leased.has(lockerId)) {
      this.log(
        "error",
        `the lease of ${lockerId} is not taken after ${START_WAIT_MS} ms; the worker goes on, ` +
          "the plugin keeps trying",
      );
    }
  }

  /** Send a message to the lease thread; resolves with the reply `key`, or null on timeout. */
  request(message, key, timeoutMs) {
    const thread = this.ensureThread();
    this.requests++;
    thread.ref(); // a reply is awaited: keep the process alive until it comes
    return new Promise((resolve) => {
      const finish = (reply) => {
        clearTimeout(timer);
        if (this.waiters.get(key) === finish) this.waiters.delete(key);
        this.requests--;
        if (this.requests === 0 && this.thread) this.thread.unref();
        resolve(reply);
      };
      const timer = setTimeout(() => finish(null), timeoutMs);
      const previous = this.waiters.get(key);
      this.waiters.set(key, finish);
      if (previous) previous(null);
      thread.postMessage(message);
    });
  }

  ensureThread() {
    if (this.thread) return this.thread;
    const thread = new Worker(THREAD_FILE, { workerData: this.threadData });
    // Never keeps the process alive (but see request()).
    if (this.requests === 0) thread.unref();
    thread.on("message", (message) => this.onMessage(message));
    thread.on("error", (error) => {
      this.log("error", `lease thread failed: ${errorMessage(error)}`);
    });
    thread.on("exit", (code) => this.onThreadExit(thread, code));
    this.thread = thread;
    // After a restart: take the leases again (rows written before are checked).
    for (const [lockerId, entry] of this.lockers) {
      if (entry.lease) {
        thread.postMessage({ type: "start", lockerId, resume: this.leased.has(lockerId) });
      }
    }
    return thread;
  }

  onMessage(message) {
    if (message.type === "log") {
      this.log(message.level, message.message);
    } else if (message.type === "connected") {
      this.restartMs = THREAD_RESTART_MS;
    } else if (message.type === "started") {
      if (message.ok) {
        if (this.lockers.has(message.lockerId) && !this.leased.has(message.lockerId)) {
          this.leased.add(message.lockerId);
          this.log(
            "info",
            `heartbeat started for ${message.lockerId} in ${this.sql.table}, every ` +
              `${this.options.intervalMs} ms, lease held`,
          );
        }
      }
      const waiter = this.waiters.get(`started:${message.lockerId}`);
      if (waiter) waiter(message);
    } else if (message.type === "stopped") {
      const waiter = this.waiters.get(`stopped:${message.lockerId}`);
      if (waiter) waiter(message);
    } else if (message.type === "exit") {
      // process.kill did not work from the thread.
      this.log("error", message.message);
      process.exit(70);
    }
  }

  onThreadExit(thread, code) {
    if (thread !== this.thread) return; // closed on purpose
    this.thread = null;
    for (const [key, waiter] of this.waiters) {
      if (key.startsWith("stopped:")) waiter({ error: "the lease thread died" });
    }
    const leaseLockers = [...this.lockers.values()].some((entry) => entry.lease);
    if (!leaseLockers) return;
    this.log(
      "error",
      `lease thread exited (code ${code}); its leases are gone until it is restarted in ${this.restartMs} ms`,
    );
    clearTimeout(this.restartTimer);
    this.restartTimer = setTimeout(() => {
      this.restartTimer = null;
      if (!this.thread && [...this.lockers.values()].some((entry) => entry.lease)) {
        this.ensureThread();
      }
    }, this.restartMs);
    this.restartTimer.unref();
    this.restartMs = Math.min(this.restartMs * 2, THREAD_RESTART_MAX_MS);
  }

  /** No locker left: let the thread give up its connection and end. */
  closeThread() {
    const thread = this.thread;
    if (!thread) return;
    this.thread = null;
    thread.postMessage({ type: "close" });
  }

  // Without a lease: the beats of plugin 0.1, on the main thread.

  /** Enqueue `fn` after every plain operation queued before it; never rejects. */
  enqueue(fn) {
    const run = this.chain.then(fn).catch((error) => {
      this.log("error", `unexpected error: ${errorMessage(error)}`);
    });
    this.chain = run;
    return run;
  }

  startPlain(lockerId, entry) {
    const firstBeat = this.enqueue(() => this.plainBeat(entry.withPgClient, [lockerId]));
    if (this.timer === null) {
      this.timer = setInterval(() => this.tick(), this.options.intervalMs);
      if (typeof this.timer.unref === "function") this.timer.unref();
    }
    this.log(
      "info",
      `heartbeat started for ${lockerId} in ${this.sql.table}, every ${this.options.intervalMs} ms, ` +
        "WITHOUT a lease",
    );
    return firstBeat;
  }

  stopPlain(lockerId, entry) {
    const plainLockers = [...this.lockers.values()].some((other) => other.lease === false);
    if (!plainLockers && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
    return this.enqueue(() => this.plainRelease(entry.withPgClient, lockerId));
  }

  /** Interval callback: beat every plain locker (at most one beat queued). */
  tick() {
    if (this.tickQueued) return;
    this.tickQueued = true;
    this.enqueue(async () => {
      this.tickQueued = false;
      const groups = new Map();
      for (const [lockerId, { withPgClient, lease }] of this.lockers) {
        if (lease !== false) continue;
        const ids = groups.get(withPgClient);
        if (ids) ids.push(lockerId);
        else groups.set(withPgClient, [lockerId]);
      }
      for (const [withPgClient, ids] of groups) {
        await this.plainBeat(withPgClient, ids);
      }
    });
  }

  async plainBeat(withPgClient, ids) {
    try {
      await withPgClient(async (client) => {
        if (!this.tableReady.has(withPgClient)) {
          await ensureTable((text, values) => client.query(text, values), this.sql);
          this.tableReady.add(withPgClient);
        }
        await client.query(this.sql.plainBeat, [ids, this.host, this.pid]);
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

  async plainRelease(withPgClient, lockerId) {
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
    "Holds a lease and writes a heartbeat row per Graphile Worker locker id so dead workers can be told from live ones",
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
 * `{ schema = "public", table = "graphile_worker_heartbeats", intervalMs = 1000 }`.
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
exports.LEASE_CLASS = LEASE_CLASS;
exports.SCOPE = SCOPE;
exports.lockedByPoolId = lockedByPoolId;
exports.quoteIdentifier = quoteIdentifier;
