"""Figure 2: reschedule and permanently fail 500,000 of 1,000,000 jobs chosen by a filter.

Run from the repository root: ``.venv/bin/python -m bench.bulk_by_filter [--jobs N]``.

The queue (a template database, filled once with Graphile Worker's ``add_jobs``):
``--jobs`` jobs (default 1,000,000), none of them ready to run, so a live worker would
not touch them (``bench.worker_throughput`` relies on that):

- 50% ``sync_crm``, scheduled (run_at 1 h to 25 h ahead): the filter's jobs;
- 25% ``sync_crm``, retrying (attempts 1, a last_error, run_at ahead): same task,
  another state;
- 25% ``send_email``, scheduled: same state, another task.

``add_jobs`` numbers the jobs of each call grouped by task, so the matching jobs come in
runs of a few ten thousand ids between runs of the others. Then ``VACUUM FULL`` and
``VACUUM ANALYZE``.

The filter: ``{"task_identifiers": ["sync_crm"], "states": ["scheduled"]}``, half the
jobs. Two operations, each on a fresh ``FILE_COPY`` of the template:

- reschedule: ``run_at`` one week ahead;
- permanently fail: with a reason.

Variants, in a rotating order in each round:

- ``raw``: one ``UPDATE`` statement doing what Graphile Worker's function does (the same
  SET) to the same jobs (the same WHERE: task, state, and the function's own 4-hour
  lock rule), in one transaction; the baseline.
- ``ours@N``: ``execute()`` of ``GraphileWorkerRescheduleJobsOperator`` /
  ``GraphileWorkerPermanentlyFailJobsOperator`` with ``job_filter`` and
  ``batch_size=N`` (each batch one statement and one transaction that hands the ids to
  Graphile Worker's own function). Its XCom gives the longest batch, timed client-side.

A sampler reads ``pg_stat_activity`` every 20 ms during each run and keeps the oldest
transaction that holds a transaction id (a writing transaction, which holds row locks):
the longest transaction as PostgreSQL saw it, to within the sampling interval.

Targets: ours at the default batch size within 1.5x of ``raw``, no transaction longer
than 250 ms. The script also prints ``EXPLAIN (ANALYZE, BUFFERS)`` of one batch
statement (in a transaction that is rolled back).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.common import (
    WORKER_SCHEMA,
    JobSpecSQL,
    Ratio,
    Summary,
    fill_jobs,
    indented,
    load_note,
    rotated,
    say_machine,
    set_up,
    spread,
    vacuum_analyze,
)
from devkit.airflow_home import connection_env
from devkit.graphile import GraphileDB
from devkit.postgres import PostgresServer, drop_database, temporary_copy, unique_name
from devkit.process import run_cleanly, say
from devkit.versions import LATEST_VERSION

VERSION = LATEST_VERSION
GW_CONN = "graphile_bench"
TARGET_RATIO = 1.5
TARGET_LONGEST = 0.25
DEFAULT_BATCH = 2000
JOB_FILTER: dict[str, Any] = {"task_identifiers": ["sync_crm"], "states": ["scheduled"]}
OPERATIONS = ("reschedule", "permanently_fail")
REASON = "bench: permanently failed by filter"
SAMPLE_EVERY = 0.02
SPEC = JobSpecSQL(
    task="case when i %% 4 = 3 then 'send_email' else 'sync_crm' end",
    payload="json_build_object('n', i, 'to', 'user' || i || '@example.com')",
    run_at="now() + interval '1 hour' + make_interval(secs => i %% 86400)",
)


@dataclass
class Run:
    """One operation by one variant on a fresh copy."""

    seconds: float
    changed: int
    longest_batch: float
    batches: int
    longest_xact_seen: float
    extra: dict[str, Any] = field(default_factory=dict)


def jobs_table() -> sql.Identifier:
    return sql.Identifier(WORKER_SCHEMA, "_private_jobs")


def build_template(server: PostgresServer, jobs: int) -> tuple[str, float]:
    """The template database of the module docstring; returns its name and build seconds."""
    started = time.monotonic()
    db = GraphileDB.create(server, unique_name("bench_filter_template"), VERSION, GW_CONN)
    name, dsn = db.dbname, db.dsn
    try:
        fill_jobs(dsn, jobs, SPEC)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "update {} set attempts = 1, last_error = 'timeout' "
                    "where (payload->>'n')::bigint %% 4 = 1"
                ).format(jobs_table()),
                {},
            )
            conn.execute(sql.SQL("vacuum full {}").format(jobs_table()))
        vacuum_analyze(dsn)
    except BaseException:
        drop_database(server, name)
        raise
    return name, time.monotonic() - started


def raw_update(operation: str) -> sql.Composed:
    """One UPDATE with the SET of Graphile Worker's function and the filter's WHERE."""
    from airflow_graphile.hooks.tables import JOB_STATE

    if operation == "reschedule":
        # reschedule_jobs(ids, run_at => ...): the other columns are coalesced to themselves.
        assignments = sql.SQL(
            "run_at = coalesce(%(run_at)s::timestamptz, j.run_at),"
            " priority = coalesce(null::smallint, j.priority),"
            " attempts = coalesce(null::smallint, j.attempts),"
            " max_attempts = coalesce(null::smallint, j.max_attempts),"
            " updated_at = now()"
        )
    else:
        assignments = sql.SQL(
            "last_error = coalesce(%(reason)s::text, 'Manually marked as failed'),"
            " attempts = j.max_attempts, updated_at = now()"
        )
    return sql.SQL(
        "update {jobs} as j set {assignments} from {tasks} as t"
        " where t.id = j.task_id and t.identifier = any(%(tasks)s::text[])"
        " and ({state}) = any(%(states)s::text[])"
        " and (j.locked_at is null or j.locked_at < now() - interval '4 hours')"
    ).format(
        jobs=jobs_table(),
        assignments=assignments,
        tasks=sql.Identifier(WORKER_SCHEMA, "_private_tasks"),
        state=JOB_STATE,
    )


def raw_params(run_at: datetime) -> dict[str, Any]:
    from airflow_graphile.hooks.tables import LOCK_EXPIRY

    return {
        "run_at": run_at,
        "reason": REASON,
        "tasks": JOB_FILTER["task_identifiers"],
        "states": JOB_FILTER["states"],
        "lock_expiry": LOCK_EXPIRY,
    }


class XactSampler:
    """Polls pg_stat_activity; keeps the oldest writing transaction seen in one database."""

    def __init__(self, dsn: str, dbname: str) -> None:
        self.dsn = dsn
        self.dbname = dbname
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        query = (
            "select coalesce(extract(epoch from max(clock_timestamp() - xact_start)), 0)"
            " from pg_stat_activity where datname = %s and backend_xid is not null"
            " and pid <> pg_backend_pid()"
        )
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.is_set():
                row = conn.execute(query, [self.dbname]).fetchone()
                if row is not None:
                    self.longest = max(self.longest, float(row[0]))
                self._stop.wait(SAMPLE_EVERY)

    def __enter__(self) -> XactSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Operations:
    """Runs one operation, by ``raw`` or by our operator, on the database given."""

    def __init__(self, server: PostgresServer, log_file: Path) -> None:
        self.server = server
        self.log_file = log_file
        self.run_at = datetime.now(timezone.utc) + timedelta(days=7)

    def use(self, dbname: str) -> None:
        """Point the operators' Airflow connection at ``dbname``."""
        os.environ.update(connection_env({GW_CONN: self.server.airflow_connection(dbname)}))

    def raw(self, dbname: str, operation: str) -> Run:
        started = time.perf_counter()
        with psycopg.connect(self.server.dsn(dbname)) as conn:
            cursor = conn.execute(raw_update(operation), raw_params(self.run_at))
            changed = cursor.rowcount
            conn.commit()
        seconds = time.perf_counter() - started
        return Run(seconds, changed, seconds, 1, 0.0)

    def ours(self, dbname: str, operation: str, batch_size: int) -> Run:
        from airflow_graphile.operators.permanently_fail_jobs import (
            GraphileWorkerPermanentlyFailJobsOperator,
        )
        from airflow_graphile.operators.reschedule_jobs import (
            GraphileWorkerRescheduleJobsOperator,
        )

        self.use(dbname)
        common: dict[str, Any] = {
            "task_id": f"ours_{operation}",
            "graphile_worker_conn_id": GW_CONN,
            "job_filter": JOB_FILTER,
            "batch_size": batch_size,
        }
        operator: Any
        if operation == "reschedule":
            operator = GraphileWorkerRescheduleJobsOperator(run_at=self.run_at, **common)
        else:
            operator = GraphileWorkerPermanentlyFailJobsOperator(reason=REASON, **common)
        with self.log_file.open("a") as log, contextlib.redirect_stdout(log):
            started = time.perf_counter()
            result = operator.execute({})
            seconds = time.perf_counter() - started
        return Run(
            seconds,
            int(result["changed"]),
            float(result["longest_batch_seconds"]),
            int(result["batches"]),
            0.0,
            {"matched_at_start": result["matched_at_start"]},
        )

    def run(self, dbname: str, variant: str, operation: str) -> Run:
        with XactSampler(self.server.admin_dsn, dbname) as sampler:
            if variant == "raw":
                result = self.raw(dbname, operation)
            else:
                result = self.ours(dbname, operation, int(variant.split("@")[1]))
        result.longest_xact_seen = sampler.longest
        return result


def middle_of_matches(server: PostgresServer, dbname: str) -> int:
    """The id just before the middle job of the filter's (a batch there has work to do)."""
    with psycopg.connect(server.dsn(dbname)) as conn:
        row = conn.execute(
            sql.SQL(
                "select id - 1 from {} where attempts = 0 and task_id = (select id from {}"
                " where identifier = 'sync_crm') order by id offset"
                " (select count(*) / 4 from {}) limit 1"
            ).format(jobs_table(), sql.Identifier(WORKER_SCHEMA, "_private_tasks"), jobs_table())
        ).fetchone()
    assert row is not None
    return int(row[0])


def explain_batch(server: PostgresServer, dbname: str, batch_size: int, after: int) -> str:
    """EXPLAIN (ANALYZE, BUFFERS) of one reschedule batch, rolled back."""
    from airflow_graphile.filters import parse_job_filter
    from airflow_graphile.hooks import filter_sql, job_functions
    from airflow_graphile.hooks.tables import Tables

    Operations(server, Path(os.devnull)).use(dbname)
    run_at = datetime.now(timezone.utc) + timedelta(days=7)
    call = job_functions.reschedule_call(run_at=run_at)
    statement, params = filter_sql.batch_statement(
        Tables(WORKER_SCHEMA), parse_job_filter(JOB_FILTER), call
    )
    with psycopg.connect(server.dsn(dbname)) as conn:
        up_to = conn.execute(sql.SQL("select max(id) from {}").format(jobs_table())).fetchone()
        assert up_to is not None
        values = {
            **params,
            "up_to": up_to[0],
            "batch_size": batch_size,
            "scan_limit": batch_size * filter_sql.SCAN_FACTOR,
            "after": after,
        }
        rows = conn.execute(sql.SQL("explain (analyze, buffers) ") + statement, values)
        plan = "\n".join(str(row[0]) for row in rows)
        conn.rollback()
    return plan


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    server, work = set_up(stack, "filter")
    template, build_seconds = build_template(server, args.jobs)
    stack.callback(drop_database, server, template)
    say_machine(server.dsn(template))
    say("SETUP")
    say(
        f"  template: {args.jobs:,} jobs (50% sync_crm scheduled = the filter's, 25% sync_crm "
        f"retrying, 25% send_email scheduled), built in {build_seconds:.1f} s"
    )
    say(f"  filter: {JOB_FILTER}; each run gets its own FILE_COPY of the template")
    variants = ["raw", *(f"ours@{size}" for size in args.batch_sizes)]
    operations = Operations(server, work / "task.log")

    def once(variant: str, operation: str) -> Run:
        with temporary_copy(server, template, "bench_filter") as name:
            return operations.run(name, variant, operation)

    # Warm-up: imports, the operator's first connection, the page cache.
    warm = once(f"ours@{args.batch_sizes[0]}", "reschedule")
    say(f"  warm-up run (untimed): ours@{args.batch_sizes[0]} reschedule, {warm.seconds:.1f} s")

    with temporary_copy(server, template, "bench_filter_explain") as name:
        after = middle_of_matches(server, name)
        plan = explain_batch(server, name, DEFAULT_BATCH, after=after)
    say()
    say(
        f"EXPLAIN (ANALYZE, BUFFERS) of one reschedule batch of {DEFAULT_BATCH} after id "
        f"{after:,}, the middle of the filter's jobs (rolled back)"
    )
    say(indented(plan))
    say()

    say(
        f"MEASURE  {args.rounds} rounds; in each, every operation x variant once, variants "
        "in rotating order"
    )
    samples: dict[tuple[str, str], list[Run]] = {
        (operation, variant): [] for operation in args.operations for variant in variants
    }
    loads: list[float] = []
    expected: int | None = None
    for number in range(args.rounds):
        for operation in args.operations:
            for variant in rotated(variants, number):
                result = once(variant, operation)
                if expected is None:
                    expected = result.changed
                if result.changed != expected:
                    raise RuntimeError(
                        f"{variant} {operation} changed {result.changed}, others {expected}"
                    )
                samples[operation, variant].append(result)
                say(
                    f"  round {number + 1} {operation:<16} {variant:<10} "
                    f"{result.seconds:7.2f} s, longest batch {result.longest_batch * 1000:7.1f}"
                    f" ms, {result.batches} batches; {load_note()}"
                )
        loads.append(os.getloadavg()[0])
    say()

    say(
        f"RESULT  {expected:,} of {args.jobs:,} jobs changed by each run; median (min-max) "
        f"over {args.rounds} rounds"
    )
    say(
        f"  {'operation':<16} {'variant':<10} {'total seconds':>22} {'x raw':>20} "
        f"{'longest batch ms':>22} {'longest xact seen ms':>22} {'batches':>8}"
    )
    verdicts: dict[str, Any] = {}
    for operation in args.operations:
        raw = [run.seconds for run in samples[operation, "raw"]]
        for variant in variants:
            runs = samples[operation, variant]
            ratio = Ratio.of([run.seconds for run in runs], raw)
            longest = Summary.of([run.longest_batch * 1000 for run in runs])
            seen = Summary.of([run.longest_xact_seen * 1000 for run in runs])
            say(
                f"  {operation:<16} {variant:<10} {spread(ratio.variant, ' s'):>22} "
                f"{spread(ratio.ratio, 'x'):>20} {spread(longest, '', 0):>22} "
                f"{spread(seen, '', 0):>22} {runs[0].batches:>8}"
            )
            if variant != "raw":
                verdicts.setdefault(operation, {})[variant] = {
                    "seconds": ratio.variant.median,
                    "raw_seconds": ratio.baseline.median,
                    "ratio": ratio.ratio.median,
                    "ratio_min": ratio.ratio.minimum,
                    "ratio_max": ratio.ratio.maximum,
                    "longest_batch_ms_max": longest.maximum,
                    "longest_xact_seen_ms_max": seen.maximum,
                }
        say()
    for operation, by_variant in verdicts.items():
        for variant, verdict in by_variant.items():
            met = verdict["ratio"] <= TARGET_RATIO and verdict["longest_batch_ms_max"] < (
                TARGET_LONGEST * 1000
            )
            say(
                f"  {operation} {variant}: {verdict['ratio']:.2f}x raw "
                f"({verdict['ratio_min']:.2f}-{verdict['ratio_max']:.2f}), longest batch "
                f"{verdict['longest_batch_ms_max']:.0f} ms at worst; targets <= "
                f"{TARGET_RATIO}x and < {TARGET_LONGEST * 1000:.0f} ms: "
                + ("met" if met else "MISSED")
            )
    say(
        f"  load average (1 min) after each round: {spread(Summary.of(loads))} on "
        f"{os.cpu_count()} CPUs"
    )
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk_by_filter",
        description="Reschedule / permanently fail half of N jobs by filter: ours vs one UPDATE.",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs in the queue")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds")
    parser.add_argument(
        "--batch-sizes",
        type=lambda text: [int(part) for part in text.split(",")],
        default=[1000, 2000, 5000],
        help="comma-separated batch sizes of our operator (default 1000,2000,5000)",
    )
    parser.add_argument(
        "--operations",
        type=lambda text: text.split(","),
        default=list(OPERATIONS),
        help="comma-separated: reschedule,permanently_fail",
    )
    parser.add_argument("--quick", action="store_true", help="200,000 jobs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds = 200_000, 1
    if args.jobs < 10_000 or args.rounds < 1 or set(args.operations) - set(OPERATIONS):
        parser.error("need --jobs >= 10000, --rounds >= 1, operations in " + ",".join(OPERATIONS))
    return run_cleanly(lambda stack: run(args, stack), "the databases were dropped.")


if __name__ == "__main__":
    sys.exit(main())
