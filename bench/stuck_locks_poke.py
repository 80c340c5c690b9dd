"""Cost of one stuck-lock sensor poke on a big Graphile Worker queue.

Run from the repository root: ``.venv/bin/python -m bench.stuck_locks_poke [--jobs N]``.

1. Creates a throwaway database on the PostgreSQL server the tests use (or a throwaway
   cluster: see devkit/postgres.py) and installs Graphile Worker 0.18.0's schema
   with its own CLI.
2. Fills it with ``--jobs`` jobs (default 1,000,000) through Graphile Worker's own SQL
   function ``add_jobs``, in batches: five task identifiers, 10% of the jobs in twenty
   named queues, 25% scheduled up to a day ahead.
3. Locks a few jobs as live and crashed workers would (``locked_at`` in the past,
   ``locked_by`` a pool id, ``attempts + 1``, and the named queue's row locked too):
   45 plain jobs and 5 jobs of named queues, held by 5 pools, lock ages from 20 s to
   about 3 h. Then ``VACUUM ANALYZE``.
4. Measures, ``--repeat`` times each after ``--warmup`` untimed calls:

   (a) ``GraphileWorkerHook.find_stuck_locks`` end to end, with a new hook per call as
       the sensor makes one per poke: connection lookup (from an ``AIRFLOW_CONN_``
       variable here; through the API server in a real task), a new connection, the
       schema and permission checks, the query, rows to dicts. This is one poke of the
       sensor (the first poke, made in ``execute``, before it defers).
   (a') the fixed part of (a): ``GraphileWorkerHook.schema_revision()``, the same
       lookup, connection and checks without the stuck-locks query;
   (b) a new connection and the bare query, as the deferred trigger polls every
       ``poke_interval``;
   (c) the bare query alone, on an open connection;

   (d) one poll of the dead-locker watcher (the event trigger of the rescue DAG) on its
       open session, with a heartbeat row per locker pool, and (e) opening that session
       plus its first poll: it reads the heartbeat table and pg_locks, never the jobs
       table, so it should not grow with the queue (target: under 10 ms);

   then again (a)-(c) after ``CREATE INDEX CONCURRENTLY ... (locked_at) WHERE locked_at
   IS NOT NULL`` on ``_private_jobs``, an optional index that Graphile Worker does not
   create. It prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the query without and with the
   index, the index's size and build time, then drops the index and the database.

The target to compare with: a poke under 50 ms. The machine may be shared: every
measurement is repeated and reported as median, p90 and min-max, with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg.rows import dict_row

from bench.common import (
    BIG_QUEUE,
    BIG_QUEUE_PARAMS,
    LOCKED_AT_INDEX,
    LOCKER_POOLS,
    Summary,
    create_locked_at_index,
    drop_locked_at_index,
    explain,
    fill_jobs,
    indented,
    load_note,
    lock_like_workers,
    new_database,
    say_machine,
    set_up,
    vacuum_analyze,
)
from devkit.airflow_home import connection_env
from devkit.graphile import install_schema
from devkit.process import run_cleanly, say
from devkit.versions import DEFAULT_SCHEMA, LATEST_VERSION

VERSION = LATEST_VERSION
SCHEMA = DEFAULT_SCHEMA
CONN_ID = "graphile_worker_default"
# The example DAG's STUCK_AFTER (example_dags/graphile_worker_unlock_crashed.py).
STUCK_AFTER = timedelta(minutes=1)
TARGET_MS = 50.0
MIN_JOBS = 245  # enough ready jobs for lock_like_workers()


# --- measuring -------------------------------------------------------------------------


def timed(
    calls: dict[str, Callable[[], object]], repeat: int, warmup: int
) -> dict[str, tuple[Summary, object]]:
    """Time each call ``repeat`` times (ms), after ``warmup`` untimed rounds.

    The calls take turns (round robin), so that a burst of other work on the machine
    hits them all alike instead of one whole series.
    """
    results: dict[str, object] = {}
    for _ in range(warmup):
        for name, call in calls.items():
            results[name] = call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeat):
        for name, call in calls.items():
            started = time.perf_counter()
            results[name] = call()
            samples[name].append((time.perf_counter() - started) * 1000)
    return {name: (Summary.of(samples[name]), results.get(name)) for name in calls}


def measure(dsn: str, repeat: int, warmup: int) -> dict[str, tuple[Summary, object]]:
    """(a) the hook end to end, (a') its fixed part, (b) connect + query, (c) query alone."""
    from airflow_graphile.hooks import stuck_locks
    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
    from airflow_graphile.hooks.tables import Tables

    statement = stuck_locks.statement(Tables(SCHEMA))
    params = stuck_locks.StuckLockQuery(STUCK_AFTER).params()

    def hook_poke() -> object:
        # The sensor builds a new hook for every poke.
        return GraphileWorkerHook(graphile_worker_conn_id=CONN_ID).find_stuck_locks(STUCK_AFTER)

    def hook_guard() -> object:
        return GraphileWorkerHook(graphile_worker_conn_id=CONN_ID).schema_revision()

    def connect_and_query() -> object:
        with (
            psycopg.connect(dsn, autocommit=True) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            cur.execute(statement, params)
            return cur.fetchall()

    with psycopg.connect(dsn, autocommit=True) as conn, conn.cursor(row_factory=dict_row) as cur:

        def bare_query() -> object:
            cur.execute(statement, params)
            return cur.fetchall()

        return timed(
            {
                "hook": hook_poke,
                "guard": hook_guard,
                "connect": connect_and_query,
                "query": bare_query,
            },
            repeat,
            warmup,
        )


WATCH_TARGET_MS = 10.0
HEARTBEATS = "public.graphile_worker_heartbeats"


def add_heartbeats(dsn: str) -> int:
    """The worker plugin's table with a row per locker pool, as its workers keep it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "create table public.graphile_worker_heartbeats (locker_id text primary key,"
            " host text not null, pid integer not null, started_at timestamptz not null"
            " default now(), last_beat_at timestamptz not null,"
            " lease boolean not null default false)"
        )
        conn.execute(
            "insert into public.graphile_worker_heartbeats (locker_id, host, pid, last_beat_at,"
            " lease) select distinct locked_by, 'bench', 1, now(), true"
            f" from {SCHEMA}._private_jobs where locked_by is not null"
        )
        row = conn.execute("select count(*) from public.graphile_worker_heartbeats").fetchone()
    assert row is not None
    return int(row[0])


def measure_watch(repeat: int, warmup: int) -> dict[str, Summary]:
    """(d) one poll of the dead-locker watcher on its open session, (e) opening it too."""
    import asyncio

    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
    from airflow_graphile.hooks.rescue import HeartbeatTable
    from airflow_graphile.liveness import DEFAULT_RULE

    table = HeartbeatTable.parse(HEARTBEATS)

    async def run() -> dict[str, Summary]:
        hook = GraphileWorkerHook(graphile_worker_conn_id=CONN_ID)
        polls: list[float] = []
        opens: list[float] = []
        for round_ in range(warmup + repeat):
            started = time.perf_counter()
            async with hook.watch_dead_lockers(table, DEFAULT_RULE) as poll:
                opened = time.perf_counter()
                verdicts = await poll()
                polled = time.perf_counter()
                assert verdicts, "the watcher saw no locker"
                for _ in range(4):  # more polls on the same session, as the trigger does
                    again = time.perf_counter()
                    await poll()
                    if round_ >= warmup:
                        polls.append((time.perf_counter() - again) * 1000)
            if round_ >= warmup:
                opens.append((opened - started + polled - opened) * 1000)
        return {"poll": Summary.of(polls), "open": Summary.of(opens)}

    return asyncio.run(run())


def explain_poke(dsn: str) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of the stuck-locks query."""
    from airflow_graphile.hooks import stuck_locks
    from airflow_graphile.hooks.tables import Tables

    query = stuck_locks.StuckLockQuery(STUCK_AFTER)
    return explain(dsn, stuck_locks.statement(Tables(SCHEMA)), query.params())


def sizes(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select pg_relation_size(%(t)s::regclass), pg_indexes_size(%(t)s::regclass), "
            "pg_total_relation_size(%(t)s::regclass)",
            {"t": f"{SCHEMA}._private_jobs"},
        ).fetchone()
    assert row is not None
    return {"heap": int(row[0]), "indexes": int(row[1]), "total": int(row[2])}


def mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:,.0f} KiB"


def row_for(label: str, summary: Summary) -> str:
    verdict = "yes" if summary.median < TARGET_MS else "NO"
    return (
        f"  {label:<48} {summary.median:>8.1f} {summary.p90:>8.1f} "
        f"{summary.minimum:>8.1f} {summary.maximum:>8.1f}   {verdict}"
    )


# --- main ------------------------------------------------------------------------------


def run(args: argparse.Namespace, stack: ExitStack) -> None:
    server, _ = set_up(stack, "poke")
    dbname = new_database(stack, server, "bench_poke")
    dsn = server.dsn(dbname)
    # The hook's connection, before airflow is imported.
    os.environ.update(connection_env({CONN_ID: server.airflow_connection(dbname)}))
    say_machine(dsn)
    say("SETUP")
    install_schema(dsn, VERSION, SCHEMA)
    say(f"  database {dbname} on {server.host}:{server.port}, Graphile Worker {VERSION} schema")
    seconds = fill_jobs(dsn, args.jobs, BIG_QUEUE, BIG_QUEUE_PARAMS, batch=args.batch)
    say(f"  {args.jobs:,} jobs added with add_jobs() in batches of {args.batch:,}: {seconds:.1f} s")
    locked = lock_like_workers(dsn, STUCK_AFTER)
    say(
        f"  locked {locked.jobs} jobs and {locked.queues} named queues by {LOCKER_POOLS} pool "
        f"ids, lock ages 20 s .. ~3 h; {locked.stuck_jobs} jobs locked longer than "
        f"{STUCK_AFTER.total_seconds():.0f} s (the example DAG's STUCK_AFTER)"
    )
    started = time.monotonic()
    vacuum_analyze(dsn)
    size = sizes(dsn)
    say(
        f"  VACUUM ANALYZE {time.monotonic() - started:.1f} s; _private_jobs: heap "
        f"{mib(size['heap'])}, its indexes {mib(size['indexes'])}"
    )
    say()

    say(
        f"MEASURE  {args.warmup} warm-up rounds, then {args.repeat} timed rounds; the four "
        "calls take turns in each round"
    )
    plain = measure(dsn, args.repeat, args.warmup)
    lockers = plain["hook"][1]
    assert isinstance(lockers, list)
    say(
        f"  the poke finds {len(lockers)} lockers holding "
        f"{sum(len(item['job_ids']) for item in lockers)} jobs and "
        f"{sum(len(item['queue_names']) for item in lockers)} queues"
    )
    plan_without = explain_poke(dsn)
    beating = add_heartbeats(dsn)
    watch = measure_watch(args.repeat, args.warmup)
    build_seconds, index_size = create_locked_at_index(dsn)
    stack.callback(drop_locked_at_index, dsn)
    with_index = measure(dsn, args.repeat, args.warmup)
    plan_with = explain_poke(dsn)
    drop_locked_at_index(dsn)
    say(f"  {load_note()}")
    say()

    say("EXPLAIN (ANALYZE, BUFFERS) of the stuck-locks query, WITHOUT the index")
    say(indented(plan_without))
    say()
    say(
        f"EXPLAIN (ANALYZE, BUFFERS) of the stuck-locks query, WITH the partial index "
        f"{LOCKED_AT_INDEX} (built CONCURRENTLY in {build_seconds:.2f} s; {mib(index_size)})"
    )
    say(indented(plan_with))
    say()

    say(f"RESULT  ms per call, {args.jobs:,} jobs, {args.repeat} timed calls each")
    say(f"  {'':<48} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}   <{TARGET_MS:.0f} ms?")
    labels = {
        "hook": "(a) poke: hook.find_stuck_locks end to end",
        "guard": "(a') of which fixed: hook.schema_revision()",
        "connect": "(b) new connection + bare query (trigger)",
        "query": "(c) bare query, open connection",
    }
    for key, label in labels.items():
        say(row_for(label, plain[key][0]))
    for key, label in labels.items():
        say(row_for(label.replace(")", ") +idx", 1), with_index[key][0]))
    gain = plain["query"][0].median - with_index["query"][0].median
    say()
    say(
        f"  The partial index ({mib(index_size)} for {locked.jobs} locked rows; "
        f"built in {build_seconds:.2f} s) saves {gain:.1f} ms of query time per poke "
        f"(median {plain['query'][0].median:.1f} -> {with_index['query'][0].median:.1f} ms). "
        "It was dropped again."
    )
    say()
    say(
        f"RESULT  the dead-locker watcher (GraphileWorkerDeadLockersTrigger), {beating} lockers "
        f"in {HEARTBEATS}, {args.jobs:,} jobs, no index"
    )
    say(f"  {'':<48} {'median':>8} {'p90':>8} {'min':>8} {'max':>8}   <{WATCH_TARGET_MS:.0f} ms?")
    for key, label in {
        "poll": "(d) one poll on its open session (each second)",
        "open": "(e) open the session + first poll (after an error)",
    }.items():
        summary = watch[key]
        verdict = "yes" if summary.median < WATCH_TARGET_MS else "NO"
        say(
            f"  {label:<48} {summary.median:>8.2f} {summary.p90:>8.2f} "
            f"{summary.minimum:>8.2f} {summary.maximum:>8.2f}   {verdict}"
        )
    say("  Spread: other work may run on this machine; compare medians, and read p90/max as noise.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.stuck_locks_poke",
        description="Time one stuck-lock sensor poke on a big Graphile Worker queue.",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the queue")
    parser.add_argument("--batch", type=int, default=100_000, help="jobs per add_jobs() call")
    parser.add_argument("--repeat", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls first")
    args = parser.parse_args(argv)
    if args.jobs < MIN_JOBS or args.batch < 1 or args.repeat < 1:
        parser.error(f"--jobs must be at least {MIN_JOBS}, --batch and --repeat at least 1")
    return run_cleanly(lambda stack: run(args, stack), "the database was dropped.")


if __name__ == "__main__":
    sys.exit(main())
