"""A million job ids through one operator call: time, peak memory, XCom size.

Run from the repository root: ``.venv/bin/python -m bench.million_ids [--ids N]``.

1. Creates a throwaway database with Graphile Worker 0.18.0's schema (as the other
   benchmarks do) and an ``AIRFLOW_CONN_`` connection to it.
2. Measures ``execute()`` of the operators with ``job_ids`` = ``--ids`` ids (default
   1,000,000), each case on its own:

   (a) ``GraphileWorkerCompleteJobsOperator``, none of the ids exists (every id is
       skipped as unknown: the report's largest case);
   (b) ``GraphileWorkerPermanentlyFailJobsOperator`` on ``--ids`` real jobs (added with
       ``add_jobs`` first), every one changed;
   (c) the same as (b) on the same jobs again, with ``return_ids="all"``;
   (d) the input check alone (``parse_job_ids``) on the ids with 40,000 duplicate pairs,
       which it must refuse, naming them.

   For each: wall time, the peak of Python memory allocated during the call
   (``tracemalloc``, started after the ids list exists), and the size of the XCom (its
   JSON). The targets: linear checks, a bounded XCom, memory in tens of MB.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import JobSpecSQL, fill_jobs, load_note, new_database, say_machine, set_up
from devkit.airflow_home import connection_env
from devkit.graphile import install_schema
from devkit.process import run_cleanly, say
from devkit.versions import LATEST_VERSION

CONN_ID = "graphile_worker_default"
DUPLICATE_PAIRS = 40_000


def measured(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """Seconds, peak MB allocated by Python during the call, and its result."""
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = call()
    finally:
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] / 1e6
        tracemalloc.stop()
    return seconds, peak, result


def xcom_kb(result: Any) -> float:
    return len(json.dumps(result)) / 1000


def run(args: argparse.Namespace, stack: ExitStack) -> None:
    server, _ = set_up(stack, "ids")
    dbname = new_database(stack, server, "bench_ids")
    dsn = server.dsn(dbname)
    os.environ.update(connection_env({CONN_ID: server.airflow_connection(dbname)}))
    say_machine(dsn)
    install_schema(dsn, LATEST_VERSION)

    from airflow_graphile.exceptions import GraphileWorkerInputError
    from airflow_graphile.operators import (
        GraphileWorkerCompleteJobsOperator,
        GraphileWorkerPermanentlyFailJobsOperator,
    )
    from airflow_graphile.validation import parse_job_ids

    def operator(cls: type, **kwargs: Any) -> Any:
        return cls(task_id="bench", graphile_worker_conn_id=CONN_ID, **kwargs)

    # Warm up imports, the connection lookup and the schema checks.
    operator(GraphileWorkerCompleteJobsOperator, job_ids=[1]).execute({})
    n = args.ids
    ids = list(range(1, n + 1))
    rows = []

    seconds, peak, result = measured(
        lambda: operator(GraphileWorkerCompleteJobsOperator, job_ids=ids).execute({})
    )
    assert result["skipped_count"] == n
    rows.append(("(a) complete, every id unknown", seconds, peak, xcom_kb(result)))

    added = fill_jobs(dsn, n, JobSpecSQL(task="'bench'"), batch=100_000, start=1)
    say(f"  {n:,} jobs added with add_jobs() in {added:.1f} s")
    first = min(ids)  # the jobs' ids start at 1 in a fresh database
    assert first == 1
    seconds, peak, result = measured(
        lambda: operator(
            GraphileWorkerPermanentlyFailJobsOperator, job_ids=ids, reason="bench"
        ).execute({})
    )
    assert result["affected_count"] == n, result["affected_count"]
    rows.append(("(b) permanently fail, every job changed", seconds, peak, xcom_kb(result)))
    seconds, peak, result = measured(
        lambda: operator(
            GraphileWorkerPermanentlyFailJobsOperator,
            job_ids=ids,
            reason="bench",
            return_ids="all",
        ).execute({})
    )
    rows.append(('(c) the same, return_ids="all"', seconds, peak, xcom_kb(result)))

    doubled = ids + ids[:DUPLICATE_PAIRS]

    def check_duplicates() -> str:
        try:
            parse_job_ids(doubled)
        except GraphileWorkerInputError as error:
            return str(error)
        raise AssertionError("duplicates were accepted")

    seconds, peak, message = measured(check_duplicates)
    rows.append((f"(d) input check, {DUPLICATE_PAIRS:,} duplicate pairs", seconds, peak, 0.0))
    say(f"  (d) refused with: {message[:120]}...")
    say()
    say(f"RESULT  {n:,} job ids per call; {load_note()}")
    say(f"  {'':<44} {'seconds':>8} {'peak MB':>8} {'XCom kB':>9}")
    for label, seconds, peak, size in rows:
        say(f"  {label:<44} {seconds:>8.2f} {peak:>8.1f} {size:>9.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.million_ids",
        description="Time, peak memory and XCom size of one call with a million job ids.",
    )
    parser.add_argument("--ids", type=int, default=1_000_000, help="job ids per call")
    args = parser.parse_args(argv)
    if args.ids < DUPLICATE_PAIRS:
        parser.error(f"--ids must be at least {DUPLICATE_PAIRS}")
    return run_cleanly(lambda stack: run(args, stack), "the database was dropped.")


if __name__ == "__main__":
    sys.exit(main())
