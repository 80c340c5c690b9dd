"""Figure 4: the statistics query and the stuck-lock poke on 1,000,000 jobs.

Run from the repository root: ``.venv/bin/python -m bench.queue_stats [--jobs N]``.

The queue: ``--jobs`` jobs (default 1,000,000) added with Graphile Worker's ``add_jobs``
(five task identifiers, 10% in twenty named queues, 25% scheduled up to a day ahead),
then 50 of them locked as workers lock them (``locked_at`` 20 s to ~3 h ago, ``locked_by``
one of five pool ids, ``attempts + 1``; five in named queues, whose queue rows are
locked too), then ``VACUUM ANALYZE``. ``bench.stuck_locks_poke`` measures the poke in
detail on the same kind of queue; this script measures, in the same rounds:

- ``stats``: ``GraphileWorkerHook(...).queue_stats()`` with a new hook per call, as the
  queue-stats operator does (connection lookup from an ``AIRFLOW_CONN_`` variable, new
  connection, schema checks, one read-only snapshot: the grouping-sets query and the
  locked-queues query, rows to dicts);
- ``stats operator``: ``GraphileWorkerQueueStatsOperator(...).execute()`` (the same plus
  its log lines and threshold checks);
- ``poke``: ``GraphileWorkerHook(...).find_stuck_locks(1 min)``, a new hook per call: one
  poke of the stuck-lock sensor;
- ``count(*)``: ``select count(*)`` of the jobs table on an open connection, the cheapest
  full read of the table, as the reference the others are divided by.

Each round also builds the optional partial index ``(locked_at) WHERE locked_at IS NOT
NULL`` with ``CREATE INDEX CONCURRENTLY``, measures the same calls with it, and drops it
again, so with/without are compared round by round.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.common import (
    WORKER_SCHEMA,
    JobSpecSQL,
    Ratio,
    Summary,
    airflow_env,
    connection_fields,
    drop_database_now,
    exit_cleanly_on_sigterm,
    fill_jobs,
    load_note,
    machine_facts,
    rotated,
    say,
    spread,
    unique_name,
    vacuum_analyze,
)
from tests.support.graphile import install_schema
from tests.support.postgres import create_database, postgres_server

VERSION = "0.18.0"
GW_CONN = "graphile_bench"
STUCK_AFTER = timedelta(minutes=1)
POKE_TARGET_MS = 50.0
INDEX_NAME = "bench_jobs_locked_at"
TASKS = ("send_email", "resize_image", "sync_crm", "charge_card", "build_report")
SPEC = JobSpecSQL(
    task="(%(tasks)s::text[])[1 + i %% 5]",
    payload="json_build_object('n', i, 'to', 'user' || i || '@example.com', 'attempt', 'first')",
    queue_name="case when i %% 10 = 0 then 'queue_' || (i / 10) %% 20 end",
    run_at="case when i %% 8 in (1, 2) then now() + make_interval(secs => i %% 86400) end",
)


def lock_jobs(dsn: str) -> tuple[int, int]:
    """Lock 45 plain jobs and 5 named-queue jobs (and their queues) as 5 pools would."""
    jobs = sql.Identifier(WORKER_SCHEMA, "_private_jobs")
    queues = sql.Identifier(WORKER_SCHEMA, "_private_job_queues")
    pools = [f"pool-bench{n:013d}" for n in range(5)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "with picked as ("
                " select id, row_number() over (order by md5(id::text)) - 1 as n from {jobs}"
                " where job_queue_id is null and run_at <= now()"
                " order by md5(id::text) limit 45"
                ") update {jobs} as j set"
                " locked_at = now() - make_interval(secs => 20 + picked.n * 240),"
                " locked_by = (%(pools)s::text[])[1 + picked.n %% 5],"
                " attempts = j.attempts + 1"
                " from picked where j.id = picked.id"
            ).format(jobs=jobs),
            {"pools": pools},
        )
        conn.execute(
            sql.SQL(
                "with picked as ("
                " select distinct on (job_queue_id) id, job_queue_id,"
                " dense_rank() over (order by job_queue_id) - 1 as n"
                " from {jobs} where job_queue_id is not null and run_at <= now()"
                " order by job_queue_id, id"
                "), locked as ("
                " update {jobs} as j set"
                " locked_at = now() - make_interval(secs => 30 + picked.n * 600),"
                " locked_by = (%(pools)s::text[])[1 + picked.n %% 5],"
                " attempts = j.attempts + 1"
                " from picked where j.id = picked.id and picked.n < 5"
                " returning j.job_queue_id, j.locked_at, j.locked_by"
                ") update {queues} as q set locked_at = l.locked_at, locked_by = l.locked_by"
                " from locked as l where q.id = l.job_queue_id"
            ).format(jobs=jobs, queues=queues),
            {"pools": pools},
        )
        row = conn.execute(
            sql.SQL(
                "select (select count(*) from {jobs} where locked_at is not null),"
                " (select count(*) from {queues} where locked_at is not null)"
            ).format(jobs=jobs, queues=queues)
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def create_index(dsn: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "create index concurrently {} on {} (locked_at) where locked_at is not null"
            ).format(sql.Identifier(INDEX_NAME), sql.Identifier(WORKER_SCHEMA, "_private_jobs"))
        )
    return time.perf_counter() - started


def drop_index(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop index concurrently if exists {}").format(
                sql.Identifier(WORKER_SCHEMA, INDEX_NAME)
            )
        )


def index_size(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select pg_relation_size(%s::regclass)", [f"{WORKER_SCHEMA}.{INDEX_NAME}"]
        ).fetchone()
    assert row is not None
    return int(row[0])


def explain(dsn: str, statement: sql.Composable, params: dict[str, Any]) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("explain (analyze, buffers) ") + statement, params)
        return "\n".join("    " + str(row[0]) for row in rows)


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    server = stack.enter_context(postgres_server())
    work = Path(tempfile.mkdtemp(prefix="bench-stats-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    dbname = unique_name("bench_stats")
    create_database(server, dbname)
    stack.callback(drop_database_now, server, dbname)
    dsn = server.dsn(dbname)
    os.environ.update(
        airflow_env(
            work / "airflow", {GW_CONN: connection_fields(server, dbname, "graphile_worker")}
        )
    )

    say("MACHINE")
    for line in machine_facts(dsn):
        say(f"  {line}")
    say()
    say("SETUP")
    install_schema(dsn, VERSION, WORKER_SCHEMA)
    fill_seconds = fill_jobs(dsn, args.jobs, SPEC, {"tasks": list(TASKS)})
    locked_jobs, locked_queues = lock_jobs(dsn)
    vacuum_analyze(dsn)
    stack.callback(drop_index, dsn)
    say(
        f"  {args.jobs:,} jobs added with add_jobs() in {fill_seconds:.1f} s; {locked_jobs} "
        f"jobs and {locked_queues} named queues locked by 5 pools; VACUUM ANALYZE"
    )

    from airflow_graphile.hooks import job_queries
    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
    from airflow_graphile.operators.queue_stats import GraphileWorkerQueueStatsOperator

    # One task log for the whole run: a logger keeps the stream it first wrote to.
    log = stack.enter_context((work / "task.log").open("a"))
    operator = GraphileWorkerQueueStatsOperator(
        task_id="stats", graphile_worker_conn_id=GW_CONN, thresholds={"locked": 1_000_000}
    )
    open_conn = stack.enter_context(psycopg.connect(dsn, autocommit=True))
    count_statement = sql.SQL("select count(*) from {}").format(
        sql.Identifier(WORKER_SCHEMA, "_private_jobs")
    )

    def stats() -> object:
        return GraphileWorkerHook(graphile_worker_conn_id=GW_CONN).queue_stats()

    def stats_operator() -> object:
        with contextlib.redirect_stdout(log):
            return operator.execute({})

    def poke() -> object:
        return GraphileWorkerHook(graphile_worker_conn_id=GW_CONN).find_stuck_locks(STUCK_AFTER)

    def count() -> object:
        return open_conn.execute(count_statement).fetchone()

    calls: dict[str, Callable[[], object]] = {
        "stats": stats,
        "stats operator": stats_operator,
        "poke": poke,
        "count(*)": count,
    }
    found = stats()
    assert isinstance(found, dict) and found["total"] == args.jobs, found
    lockers = poke()
    assert isinstance(lockers, list) and lockers, lockers
    say(
        f"  queue_stats sees {found['total']:,} jobs, {found['locks']['jobs']} locked; "
        f"the poke finds {len(lockers)} lockers"
    )
    stats_sql, stats_params = job_queries.stats_statement(WORKER_SCHEMA)
    say()
    say("EXPLAIN (ANALYZE, BUFFERS) of the statistics query")
    say(explain(dsn, stats_sql, stats_params))
    say()

    for _ in range(args.warmup):
        for call in calls.values():
            call()
    say(
        f"MEASURE  {args.rounds} rounds; in each, every call {args.repeat} times in turn "
        "without the index, then CREATE INDEX CONCURRENTLY, the same with it, DROP INDEX"
    )
    samples: dict[tuple[str, bool], list[float]] = {
        (name, indexed): [] for name in calls for indexed in (False, True)
    }
    builds: list[float] = []
    size = 0
    loads: list[float] = []
    for number in range(args.rounds):
        for indexed in (False, True):
            if indexed:
                builds.append(create_index(dsn))
                size = index_size(dsn)
            for _ in range(args.repeat):
                for name in rotated(list(calls), number):
                    started = time.perf_counter()
                    calls[name]()
                    samples[name, indexed].append((time.perf_counter() - started) * 1000)
            if indexed:
                drop_index(dsn)
        loads.append(os.getloadavg()[0])
        say(f"  round {number + 1}/{args.rounds} done; {load_note()}")
    say()

    say(f"RESULT  ms per call on {args.jobs:,} jobs: median (min-max); ratio to count(*)")
    say(f"  {'call':<36} {'no index':>26} {'x count(*)':>20} {'with index':>26}")
    result: dict[str, Any] = {}
    for name in calls:
        plain = Ratio.of(samples[name, False], samples["count(*)", False])
        with_index = Summary.of(samples[name, True])
        say(
            f"  {name:<36} {spread(plain.variant, ' ms', 1):>26} "
            f"{spread(plain.ratio, 'x'):>20} {spread(with_index, ' ms', 1):>26}"
        )
        result[name] = {"ms": plain.variant.median, "ms_indexed": with_index.median}
    gain = Ratio.of(samples["poke", True], samples["poke", False])
    say()
    say(
        f"  poke with the partial index / without: {spread(gain.ratio, 'x')}; the index: "
        f"{size / 1024:.0f} KiB, built CONCURRENTLY in {spread(Summary.of(builds), ' s')}"
    )
    poke_ms = result["poke"]["ms"]
    say(
        f"  poke median {poke_ms:.1f} ms; target < {POKE_TARGET_MS:.0f} ms: "
        + ("met" if poke_ms < POKE_TARGET_MS else "MISSED")
    )
    say(f"  load average (1 min) after each round: {spread(Summary.of(loads))}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.queue_stats",
        description="Time queue_stats() and one stuck-lock poke on a big queue.",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the queue")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (index built per round)")
    parser.add_argument("--repeat", type=int, default=4, help="calls of each kind per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first")
    parser.add_argument("--quick", action="store_true", help="100,000 jobs, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds = 100_000, 2
    if args.jobs < 100_000 or min(args.rounds, args.repeat) < 1 or args.warmup < 0:
        parser.error("need --jobs >= 100000 and --rounds, --repeat >= 1")
    exit_cleanly_on_sigterm()
    try:
        with ExitStack() as stack:
            run(args, stack)
    except KeyboardInterrupt:
        say("\nInterrupted: the database was dropped.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
