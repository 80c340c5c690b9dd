"""Cost of one stuck-lock sensor poke on a big Graphile Worker queue.

Run from the repository root: ``.venv/bin/python -m bench.stuck_locks_poke [--jobs N]``.

1. Creates a throwaway database on the PostgreSQL server the tests use (or a throwaway
   cluster: see tests/support/postgres.py) and installs Graphile Worker 0.18.0's schema
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

   then again (a)-(c) after ``CREATE INDEX CONCURRENTLY ... (locked_at) WHERE locked_at
   IS NOT NULL`` on ``_private_jobs``, an optional index that Graphile Worker does not
   create. It prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the query without and with the
   index, the index's size and build time, then drops the index and the database.

The target to compare with: a poke under 50 ms. The machine may be shared: every
measurement is repeated and reported as median, p90 and min-max, with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from bench.common import Summary, load_note, machine_facts
from tests.support.graphile import install_schema
from tests.support.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    postgres_server,
)

VERSION = "0.18.0"
SCHEMA = "graphile_worker"
CONN_ID = "graphile_worker_default"
# The example DAG's STUCK_AFTER (example_dags/graphile_worker_unlock_crashed.py).
STUCK_AFTER = timedelta(minutes=1)
TARGET_MS = 50.0
INDEX_NAME = "bench_jobs_locked_at"
TASKS = ("send_email", "resize_image", "sync_crm", "charge_card", "build_report")
NAMED_QUEUES = 20
POOLS = 5
LOCKED_PLAIN = 45
LOCKED_QUEUED = 5


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that the database is dropped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def say(text: str = "") -> None:
    print(text, flush=True)


def configure_airflow(home: Path, server: PostgresServer, dbname: str) -> None:
    """A temp Airflow home and the hook's connection; must run before airflow is imported."""
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "graphile_worker",
                    "host": server.host,
                    "port": server.port,
                    "login": server.user,
                    "password": server.password,
                    "schema": dbname,
                }
            ),
        }
    )


# --- filling the queue -----------------------------------------------------------------


def fill(dsn: str, total: int, batch: int) -> float:
    """Add ``total`` jobs with ``add_jobs`` in batches; return the seconds it took."""
    jobs = sql.Identifier(SCHEMA)
    statement = sql.SQL(
        """
        select count(*) from {schema}.add_jobs(array(
          select row(
            (%(tasks)s::text[])[1 + i %% %(ntasks)s],
            json_build_object('n', i, 'to', 'user' || i || '@example.com', 'attempt', 'first'),
            case when i %% 10 = 0 then 'queue_' || (i / 10) %% %(nqueues)s end,
            case when i %% 8 in (1, 2) then now() + make_interval(secs => i %% 86400) end,
            25, null, 0, null
          )::{schema}.job_spec
          from generate_series(%(first)s::bigint, %(last)s::bigint) as i
        ))
        """
    ).format(schema=jobs)
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = 0
        while done < total:
            size = min(batch, total - done)
            row = conn.execute(
                statement,
                {
                    "tasks": list(TASKS),
                    "ntasks": len(TASKS),
                    "nqueues": NAMED_QUEUES,
                    "first": done,
                    "last": done + size - 1,
                },
            ).fetchone()
            assert row is not None and row[0] == size, row
            done += size
            if sys.stdout.isatty():
                print(f"\r  added {done:,} / {total:,} jobs", end="", flush=True)
    if sys.stdout.isatty():
        print("\r", end="")
    return time.monotonic() - started


def lock_some(dsn: str) -> dict[str, Any]:
    """Lock a few jobs (and their named queues) as workers would; return what was locked."""
    pools = [f"pool-{uuid.uuid4().hex[:18]}" for _ in range(POOLS)]
    jobs = sql.Identifier(SCHEMA, "_private_jobs")
    queues = sql.Identifier(SCHEMA, "_private_job_queues")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("select setseed(0.42)")
        # 45 ready jobs outside named queues, spread over the table, ages 20 s .. ~3 h.
        conn.execute(
            sql.SQL(
                """
                with picked as (
                  select id, row_number() over (order by random()) - 1 as n
                  from {jobs} where job_queue_id is null and run_at <= now()
                  order by random() limit %(count)s
                )
                update {jobs} as j
                set locked_at = now() - make_interval(secs => 20 + picked.n * 240),
                    locked_by = (%(pools)s::text[])[1 + picked.n %% %(npools)s],
                    attempts = j.attempts + 1
                from picked where j.id = picked.id
                """
            ).format(jobs=jobs),
            {"count": LOCKED_PLAIN, "pools": pools, "npools": POOLS},
        )
        # One running job in each of 5 named queues; the queue row is locked with it.
        conn.execute(
            sql.SQL(
                """
                with ready as (
                  select distinct on (job_queue_id) id as job_id, job_queue_id as queue_id
                  from {jobs}
                  where job_queue_id is not null and run_at <= now() and locked_at is null
                  order by job_queue_id, id
                ), picked as (
                  select job_id, queue_id, row_number() over (order by queue_id) - 1 as n
                  from (select * from ready order by queue_id limit %(count)s) as first_ones
                ), locked_jobs as (
                  update {jobs} as j
                  set locked_at = now() - make_interval(secs => 30 + picked.n * 600),
                      locked_by = (%(pools)s::text[])[1 + picked.n %% %(npools)s],
                      attempts = j.attempts + 1
                  from picked where j.id = picked.job_id
                  returning j.job_queue_id, j.locked_at, j.locked_by
                )
                update {queues} as q
                set locked_at = l.locked_at, locked_by = l.locked_by
                from locked_jobs as l where q.id = l.job_queue_id
                """
            ).format(jobs=jobs, queues=queues),
            {"count": LOCKED_QUEUED, "pools": pools, "npools": POOLS},
        )
        counts = conn.execute(
            sql.SQL(
                "select (select count(*) from {jobs} where locked_at is not null), "
                "(select count(*) from {queues} where locked_at is not null), "
                "(select count(*) from {jobs} where locked_at < now() - %(after)s::interval)"
            ).format(jobs=jobs, queues=queues),
            {"after": STUCK_AFTER},
        ).fetchone()
    assert counts is not None
    return {"jobs": counts[0], "queues": counts[1], "stuck_jobs": counts[2], "pools": pools}


def vacuum_analyze(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("_private_jobs", "_private_job_queues", "_private_tasks"):
            conn.execute(sql.SQL("vacuum analyze {}").format(sql.Identifier(SCHEMA, table)))


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
    from airflow_graphile.hooks.graphile_worker import (
        GraphileWorkerHook,
        stuck_locks_params,
        stuck_locks_statement,
    )

    statement = stuck_locks_statement(SCHEMA)
    params = stuck_locks_params(STUCK_AFTER, None, None)

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


def explain(dsn: str) -> str:
    from airflow_graphile.hooks.graphile_worker import stuck_locks_params, stuck_locks_statement

    statement = sql.SQL("explain (analyze, buffers) {}").format(stuck_locks_statement(SCHEMA))
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(statement, stuck_locks_params(STUCK_AFTER, None, None)).fetchall()
    return "\n".join(str(row[0]) for row in rows)


def create_index(dsn: str) -> tuple[float, int]:
    """Build the optional partial index; return its build seconds and its size in bytes."""
    jobs = sql.Identifier(SCHEMA, "_private_jobs")
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "create index concurrently {} on {} (locked_at) where locked_at is not null"
            ).format(sql.Identifier(INDEX_NAME), jobs)
        )
        seconds = time.monotonic() - started
        row = conn.execute(
            "select pg_relation_size(%s::regclass)", [f"{SCHEMA}.{INDEX_NAME}"]
        ).fetchone()
    assert row is not None
    return seconds, int(row[0])


def drop_index(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop index concurrently if exists {}").format(
                sql.Identifier(SCHEMA, INDEX_NAME)
            )
        )


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


def indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


# --- main ------------------------------------------------------------------------------


def run(args: argparse.Namespace, stack: ExitStack) -> None:
    server = stack.enter_context(postgres_server())
    dbname = f"bench_poke_{uuid.uuid4().hex[:8]}"
    dsn = server.dsn(dbname)
    stack.callback(drop_database, server, dbname)
    create_database(server, dbname)
    home = Path(tempfile.mkdtemp(prefix="bench-poke-airflow-"))
    stack.callback(shutil.rmtree, home, ignore_errors=True)
    configure_airflow(home, server, dbname)

    say("MACHINE")
    for line in machine_facts(dsn):
        say(f"  {line}")
    say()
    say("SETUP")
    install_schema(dsn, VERSION, SCHEMA)
    say(f"  database {dbname} on {server.host}:{server.port}, Graphile Worker {VERSION} schema")
    seconds = fill(dsn, args.jobs, args.batch)
    say(f"  {args.jobs:,} jobs added with add_jobs() in batches of {args.batch:,}: {seconds:.1f} s")
    locked = lock_some(dsn)
    say(
        f"  locked {locked['jobs']} jobs and {locked['queues']} named queues by {POOLS} pool "
        f"ids, lock ages 20 s .. ~3 h; {locked['stuck_jobs']} jobs locked longer than "
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
    plan_without = explain(dsn)
    build_seconds, index_size = create_index(dsn)
    stack.callback(drop_index, dsn)
    with_index = measure(dsn, args.repeat, args.warmup)
    plan_with = explain(dsn)
    drop_index(dsn)
    say(f"  {load_note()}")
    say()

    say("EXPLAIN (ANALYZE, BUFFERS) of the stuck-locks query, WITHOUT the index")
    say(indent(plan_without))
    say()
    say(
        f"EXPLAIN (ANALYZE, BUFFERS) of the stuck-locks query, WITH the partial index "
        f"{INDEX_NAME} (built CONCURRENTLY in {build_seconds:.2f} s; {mib(index_size)})"
    )
    say(indent(plan_with))
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
        f"  The partial index ({mib(index_size)} for {locked['jobs']} locked rows; "
        f"built in {build_seconds:.2f} s) saves {gain:.1f} ms of query time per poke "
        f"(median {plain['query'][0].median:.1f} -> {with_index['query'][0].median:.1f} ms). "
        "It was dropped again."
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
    if args.jobs < LOCKED_PLAIN + 10 * NAMED_QUEUES or args.batch < 1 or args.repeat < 1:
        parser.error("--jobs must be at least 245, --batch and --repeat at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    try:
        with ExitStack() as stack:
            run(args, stack)
    except KeyboardInterrupt:
        say("\nInterrupted: the database was dropped.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
