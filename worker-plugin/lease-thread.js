"use strict";
/**
 * The lease connection of airflow-graphile-heartbeat (see index.js), in a
 * worker thread: synchronous work on the main thread (a busy task) does not
 * stop the beats.
 *
 * One pg.Client holds, for every locker of this Graphile Worker instance, the
 * session-level advisory lock `(LEASE_CLASS, hashtext(locker_id))` and writes
 * its row. Everything runs in one loop, one statement at a time.
 *
 * Messages from the main thread: start(lockerId, resume), stop(lockerId),
 * close. Replies: started(lockerId, ok, error), stopped(lockerId, jobs,
 * queues, deleted, error), log(level, message), exit(message).
 */

const fs = require("node:fs");
const { parentPort, workerData } = require("node:worker_threads");

const { ensureTable } = require("./sql.js");

const pg = require(workerData.pgPath);
const { sql, connection, host, pid, intervalMs, pluginName } = workerData;

const APPLICATION_NAME = "airflow-graphile lease";
const LEASE_RETRY_MS = 250;
const RECONNECT_MS = 500;
const RELEASE_WAIT_MS = 1000;
const RELEASE_POLL_MS = 50;
// A statement unanswered this long means a dead link (TCP would take many
// minutes to say so while a statement is in flight): drop it and reconnect.
const STALL_MS = Math.max(10000, 3 * intervalMs);

// Session settings of the lease connection. The keepalives make the server end
// the session (and free the leases) about 5 + 2 * 3 = 11 s after the last
// traffic from a machine that vanished.
const SESSION_SETTINGS = [
  "set idle_session_timeout = 0", // PostgreSQL 14+; fails harmlessly before
  "set idle_in_transaction_session_timeout = 0",
  "set tcp_keepalives_idle = 5",
  "set tcp_keepalives_interval = 2",
  "set tcp_keepalives_count = 3",
];

/**
 * lockerId -> { held, written, resume, reported }: `held` while this session
 * holds the lease; `written` once its row was written with the lease; `resume`
 * when the lease was lost with a written row, so the row must be looked for
 * once the lease is taken again (no row: the locker was declared dead).
 */
const lockers = new Map();
/** Locker ids to stop, in order. */
const stops = [];

let client = null;
/** Clients whose connection ended (a client that ends while being set up is one). */
const ended = new WeakSet();
let tableReady = false;
let nextBeat = 0;
let closing = false;
/** While cut off: when the outage started (for the "back" line). */
let outageSince = null;
let wake = null;
/** A message came since the loop last looked. */
let messages = false;

function log(level, message) {
  parentPort.postMessage({ type: "log", level, message });
}

function errorMessage(error) {
  return error && error.message ? error.message : String(error);
}

function poke() {
  messages = true;
  if (wake) wake();
}

/** Sleep `ms`, or until a message arrives. */
function nap(ms) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, Math.max(0, ms));
    function done() {
      clearTimeout(timer);
      wake = null;
      resolve();
    }
    wake = done;
  });
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function lost(lostClient, error) {
  ended.add(lostClient);
  if (lostClient !== client) return;
  client = null;
  tableReady = false;
  for (const state of lockers.values()) {
    if (state.held && state.written) state.resume = true;
    state.held = false;
  }
  outageSince = Date.now();
  log(
    "error",
    `lease connection lost: ${errorMessage(error)}; its leases are gone until it is back, ` +
      `reconnecting every ${RECONNECT_MS} ms`,
  );
  poke();
}

function drop(lostClient, error) {
  lost(lostClient, error);
  try {
    lostClient.connection.stream.destroy();
  } catch {
    // already gone
  }
}

/** Run a statement on the lease connection; a stalled one drops the connection. */
async function query(text, values) {
  const current = client;
  if (!current) throw new Error("lease connection lost");
  const timer = setTimeout(
    () => drop(current, new Error(`no answer from the database in ${STALL_MS} ms`)),
    STALL_MS,
  );
  try {
    return await current.query(text, values);
  } finally {
    clearTimeout(timer);
  }
}

async function connect() {
  const candidate = new pg.Client({
    connectionTimeoutMillis: 5000,
    ...connection,
    keepAlive: true,
    application_name: APPLICATION_NAME,
  });
  candidate.on("error", (error) => lost(candidate, error));
  candidate.on("end", () => lost(candidate, new Error("connection ended")));
  try {
    await candidate.connect();
    for (const statement of SESSION_SETTINGS) {
      await candidate.query(statement).catch(() => {});
    }
    if (ended.has(candidate)) throw new Error("connection ended while being set up");
  } catch (error) {
    candidate.end().catch(() => {});
    if (outageSince === null) {
      outageSince = Date.now();
      log(
        "error",
        `could not open the lease connection: ${errorMessage(error)}; retrying every ${RECONNECT_MS} ms`,
      );
    }
    return false;
  }
  client = candidate;
  if (outageSince !== null) {
    log("info", `lease connection back after ${Date.now() - outageSince} ms`);
  }
  outageSince = null;
  parentPort.postMessage({ type: "connected" });
  return true;
}

async function prepareTable() {
  if (tableReady) return;
  await ensureTable(query, sql);
  tableReady = true;
}

function killProcess(lockerId) {
  const message =
    `[${pluginName}] locker ${lockerId} was declared dead and its jobs released while this ` +
    "process was cut off from the database; stopping this process so that no job runs twice";
  // Written from this thread: the main thread may be busy and is about to die.
  try {
    fs.writeSync(2, `[heartbeat] ERROR: ${message}\n`);
  } catch {
    // nowhere to write
  }
  try {
    process.kill(process.pid, "SIGKILL");
  } catch {
    parentPort.postMessage({ type: "exit", message });
  }
}

/** Tell the main thread that a locker's row is written (once), or that its start failed. */
function report(lockerId, state, error) {
  if (error && state.reported) return;
  state.reported = true;
  parentPort.postMessage({
    type: "started",
    lockerId,
    ok: !error,
    error: error ? errorMessage(error) : undefined,
  });
}

/**
 * The lease of a locker whose row was written is taken again after a gap: no
 * row means it was declared dead and its jobs released meanwhile.
 */
async function checkRow(lockerId, state) {
  const { rows } = await query(sql.rows, [[lockerId]]);
  if (rows.length === 0) {
    killProcess(lockerId);
    await new Promise(() => {}); // the process is being killed
  }
  state.resume = false;
  log("info", `lease of ${lockerId} taken again; its row was still there`);
}

/** Take the leases not held yet, then write or check their rows. */
async function takeLeases() {
  for (const [lockerId, state] of lockers) {
    if (state.held || !client) continue;
    const { rows } = await query(sql.tryLease, [lockerId]);
    if (!rows[0].taken) continue; // someone checks this locker right now; retry soon
    state.held = true;
    try {
      await prepareTable();
      if (state.resume) {
        await checkRow(lockerId, state);
        await query(sql.beat, [[lockerId], host, pid]);
      } else {
        await query(sql.write, [[lockerId], host, pid]);
        state.written = true;
        report(lockerId, state);
      }
    } catch (error) {
      if (state.held && client) {
        tableReady = false;
        log(
          "error",
          `heartbeat of ${lockerId} into ${sql.table} failed: ${errorMessage(error)}; ` +
            `retrying in ${intervalMs} ms`,
        );
        report(lockerId, state, error);
      }
    }
  }
}

/** Beat every locker whose lease is held; write back rows deleted meanwhile. */
async function beat() {
  const held = [...lockers].filter(([, state]) => state.held).map(([id]) => id);
  if (held.length === 0) return;
  try {
    await prepareTable();
    for (const id of held) {
      if (lockers.get(id).resume) await checkRow(id, lockers.get(id)); // it failed at takeLeases
    }
    const written = held.filter((id) => lockers.get(id).written);
    const { rows } = await query(sql.beat, [written, host, pid]);
    const beaten = new Set(rows.map((row) => row.locker_id));
    const missing = held.filter((id) => !beaten.has(id));
    if (missing.length > 0) {
      // The lease was held all along, so no one released these lockers.
      await query(sql.write, [missing, host, pid]);
      for (const id of missing) {
        const state = lockers.get(id);
        if (state.written) {
          log("warn", `heartbeat row of ${id} was missing while its lease was held; written again`);
        } else {
          state.written = true;
          report(id, state);
        }
      }
    }
  } catch (error) {
    if (!client) return; // the outage is logged once
    tableReady = false;
    log(
      "error",
      `heartbeat of ${held.join(", ")} into ${sql.table} failed: ${errorMessage(error)}; ` +
        `retrying in ${intervalMs} ms`,
    );
  }
}

/**
 * Stop a locker: delete its row unless it still holds locks after
 * RELEASE_WAIT_MS (then the row goes stale), and give up its lease either way.
 */
async function release(lockerId) {
  const state = lockers.get(lockerId);
  lockers.delete(lockerId);
  const result = { type: "stopped", lockerId, jobs: 0, queues: 0, deleted: false };
  if (!state) {
    parentPort.postMessage(result);
    return;
  }
  if (!client) {
    result.error = "the lease connection is down";
    parentPort.postMessage(result);
    return;
  }
  try {
    const deadline = Date.now() + RELEASE_WAIT_MS;
    for (;;) {
      const { rows } = await query(sql.release, [lockerId]);
      Object.assign(result, rows[0]);
      if (result.deleted || result.jobs + result.queues === 0) break;
      if (Date.now() >= deadline) break;
      await pause(RELEASE_POLL_MS);
    }
  } catch (error) {
    result.error = errorMessage(error);
  }
  try {
    if (state.held && client) await query(sql.unlease, [lockerId]);
  } catch (error) {
    result.error = result.error || `could not give up the lease: ${errorMessage(error)}`;
  }
  parentPort.postMessage(result);
}

async function loop() {
  for (;;) {
    messages = false;
    if (closing && stops.length === 0) break;
    if (!client) {
      // The leases are gone with the connection: a stop cannot wait for it.
      while (stops.length > 0) await release(stops.shift());
      if (closing) break;
      if (!(await connect())) {
        if (closing) break;
        await pause(RECONNECT_MS);
        continue;
      }
      nextBeat = 0;
    }
    try {
      while (stops.length > 0) await release(stops.shift());
      await takeLeases();
      if (Date.now() >= nextBeat) {
        nextBeat = Date.now() + intervalMs;
        await beat();
      }
    } catch (error) {
      if (client) log("error", `lease thread: ${errorMessage(error)}`);
    }
    const waiting = [...lockers.values()].some((state) => !state.held);
    if (!messages) await nap(Math.min(waiting ? LEASE_RETRY_MS : Infinity, nextBeat - Date.now()));
  }
  const last = client;
  client = null;
  if (last) await last.end().catch(() => {});
  process.exit(0); // ends this thread only
}

parentPort.on("message", (message) => {
  if (message.type === "start") {
    if (!lockers.has(message.lockerId)) {
      lockers.set(message.lockerId, {
        held: false,
        written: Boolean(message.resume),
        resume: Boolean(message.resume),
        reported: Boolean(message.resume),
      });
    }
  } else if (message.type === "stop") {
    stops.push(message.lockerId);
  } else if (message.type === "close") {
    closing = true;
  }
  poke();
});

loop();
