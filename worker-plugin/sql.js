"use strict";
// The SQL of airflow-graphile-heartbeat, shared by the main thread (index.js)
// and the lease thread (lease-thread.js).

/**
 * First key of the two-int advisory lock that is a locker's lease:
 * `(LEASE_CLASS, hashtext(locker_id))`. The airflow-graphile provider uses the
 * same key; do not change it.
 */
const LEASE_CLASS = 1735879795;

const TRIGGER_NAME = "airflow_graphile_db_clock";
const FUNCTION_NAME = "airflow_graphile_heartbeat_clock";

// Only the database's clock goes into the table, whatever a writer sends; and a row
// says "lease" only when the session writing it holds that locker's lease, so no other
// writer can put a worker under the lease rule's short grace.
const CLOCK_SOURCE = `
begin
  new.last_beat_at := now();
  if tg_op = 'INSERT' then
    new.started_at := now();
  else
    new.started_at := old.started_at;
  end if;
  if new.lease and not exists (
    select from pg_locks
    where locktype = 'advisory' and granted and pid = pg_backend_pid()
      and database = (select oid from pg_database where datname = current_database())
      and classid = ${LEASE_CLASS}::oid and objid = hashtext(new.locker_id)::oid
      and objsubid = 2
  ) then
    new.lease := false;
  end if;
  return new;
end
`;

/** Errors of two sessions creating the same object at once. */
const DUPLICATE_CODES = new Set(["42710", "23505", "42P07"]);

/** Quote a name as a PostgreSQL identifier (like pg's `escapeIdentifier`). */
function quoteIdentifier(name) {
  return `"${String(name).replace(/"/g, '""')}"`;
}

/**
 * SQL text for one options set (identifiers quoted once). `workerSchema` is
 * Graphile Worker's schema, already quoted.
 */
function makeStatements(options, workerSchema) {
  const schema = quoteIdentifier(options.schema);
  const table = `${schema}.${quoteIdentifier(options.table)}`;
  const clock = `${schema}.${FUNCTION_NAME}()`;
  const lease = `${LEASE_CLASS}, hashtext($1)`;
  return {
    table,
    clock,
    // Serializes the setup of concurrent processes (one-int key: not a lease).
    setupLock: "select pg_advisory_xact_lock(hashtext('airflow-graphile heartbeat table'))",
    state: `select
  t.oid is not null as table,
  exists (
    select 1 from pg_attribute where attrelid = t.oid and attname = 'lease' and not attisdropped
  ) as lease,
  (select prosrc from pg_proc where oid = to_regprocedure($2)) as clock_source,
  exists (
    select 1 from pg_trigger where tgrelid = t.oid and tgname = '${TRIGGER_NAME}'
  ) as trigger
from (select to_regclass($1)::oid as oid) as t`,
    create: `create table if not exists ${table} (
  locker_id text primary key,
  host text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  last_beat_at timestamptz not null,
  lease boolean not null default false
)`,
    // Tables created by plugin 0.1.
    addLease: `alter table ${table} add column if not exists lease boolean not null default false`,
    clockFunction: `create or replace function ${clock} returns trigger language plpgsql as $$${CLOCK_SOURCE}$$`,
    trigger: `create trigger ${TRIGGER_NAME} before insert or update on ${table}
for each row execute procedure ${clock}`,
    tryLease: `select pg_try_advisory_lock(${lease}) as taken`,
    unlease: `select pg_advisory_unlock(${lease}) as released`,
    // Written only on the connection that holds the lockers' leases.
    write: `insert into ${table} (locker_id, host, pid, last_beat_at, lease)
select id, $2::text, $3::integer, now(), true from unnest($1::text[]) as ids(id)
on conflict (locker_id) do update
set last_beat_at = now(), lease = true, host = excluded.host, pid = excluded.pid`,
    beat: `update ${table} set last_beat_at = now(), lease = true, host = $2::text, pid = $3::integer
where locker_id = any($1::text[])
returning locker_id`,
    rows: `select locker_id from ${table} where locker_id = any($1::text[])`,
    // Without a lease (no pg module for the lease thread).
    plainBeat: `insert into ${table} (locker_id, host, pid, last_beat_at, lease)
select id, $2::text, $3::integer, now(), false from unnest($1::text[]) as ids(id)
on conflict (locker_id) do update
set last_beat_at = now(), lease = false, host = excluded.host, pid = excluded.pid`,
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
 * Create the table if missing, add the `lease` column to a table of plugin
 * 0.1, and install the clock trigger. `query(text, values)` runs on one
 * connection (the setup is one transaction).
 */
async function ensureTable(query, sql) {
  for (let attempt = 1; ; attempt++) {
    try {
      await query("begin");
      // Do not queue behind a long reader of the table (and block its other readers).
      await query("set local lock_timeout = '5s'");
      await query(sql.setupLock);
      const { rows } = await query(sql.state, [sql.table, sql.clock]);
      const state = rows[0];
      if (!state.table) await query(sql.create);
      else if (!state.lease) await query(sql.addLease);
      if (state.clock_source !== CLOCK_SOURCE) await query(sql.clockFunction);
      if (!state.trigger) await query(sql.trigger);
      await query("commit");
      return;
    } catch (error) {
      await query("rollback").catch(() => {});
      // Someone without the setup lock (plugin 0.1, a person) got there first: look again.
      if (!(error && DUPLICATE_CODES.has(error.code)) || attempt >= 3) throw error;
    }
  }
}

exports.LEASE_CLASS = LEASE_CLASS;
exports.TRIGGER_NAME = TRIGGER_NAME;
exports.FUNCTION_NAME = FUNCTION_NAME;
exports.ensureTable = ensureTable;
exports.makeStatements = makeStatements;
exports.quoteIdentifier = quoteIdentifier;
