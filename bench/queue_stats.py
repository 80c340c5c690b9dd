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
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.common import (
    BIG_QUEUE,
    BIG_QUEUE_PARAMS,
    LOCKER_POOLS,
    WORKER_SCHEMA,
    Ratio,
    Summary,
    create_locked_at_index,
    drop_locked_at_index,
    explain,
    fill_jobs,
    indented,
    load_note,
    lock_like_workers,
    new_database,
    rotated,
    say_machine,
    set_up,
    spread,
    vacuum_analyze,
)
from devkit.airflow_home import connection_env
from devkit.graphile import install_schema
from devkit.process import run_cleanly, say
from devkit.versions import LATEST_VERSION

VERSION = LATEST_VERSION
GW_CONN = "graphile_bench"
STUCK_AFTER = timedelta(minutes=1)
POKE_TARGET_MS = 50.0


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    server, work = set_up(stack, "stats")
    dbname = new_database(stack, server, "bench_stats")
    dsn = server.dsn(dbname)
    os.environ.update(connection_env({GW_CONN: server.airflow_connection(dbname)}))
    say_machine(dsn)
    say("SETUP")
    install_schema(dsn, VERSION, WORKER_SCHEMA)
    fill_seconds = fill_jobs(dsn, args.jobs, BIG_QUEUE, BIG_QUEUE_PARAMS)
    locked = lock_like_workers(dsn, STUCK_AFTER)
    vacuum_analyze(dsn)
    stack.callback(drop_locked_at_index, dsn)
    say(
        f"  {args.jobs:,} jobs added with add_jobs() in {fill_seconds:.1f} s; {locked.jobs} "
        f"jobs and {locked.queues} named queues locked by {LOCKER_POOLS} pools; VACUUM ANALYZE"
    )

    from airflow_graphile.hooks import stats as stats_sql_module
    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
    from airflow_graphile.hooks.tables import Tables
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
    stats_sql, stats_params = stats_sql_module.stats_statement(Tables(WORKER_SCHEMA))
    say()
    say("EXPLAIN (ANALYZE, BUFFERS) of the statistics query")
    say(indented(explain(dsn, stats_sql, stats_params)))
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
                build_seconds, size = create_locked_at_index(dsn)
                builds.append(build_seconds)
            for _ in range(args.repeat):
                for name in rotated(list(calls), number):
                    started = time.perf_counter()
                    calls[name]()
                    samples[name, indexed].append((time.perf_counter() - started) * 1000)
            if indexed:
                drop_locked_at_index(dsn)
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
    return run_cleanly(lambda stack: run(args, stack), "the database was dropped.")


if __name__ == "__main__":
    sys.exit(main())
