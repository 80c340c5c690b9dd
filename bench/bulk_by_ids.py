"""Figure 1: complete / permanently fail / reschedule 100,000 jobs given by id.

Run from the repository root: ``.venv/bin/python -m bench.bulk_by_ids [--jobs N]``.

Four ways to make the same change to the same 100,000 jobs, each on its own fresh copy of
the same table (``CREATE DATABASE ... TEMPLATE ... STRATEGY FILE_COPY`` of a template
filled once with Graphile Worker's ``add_jobs``), so they all do exactly the same work:

- ``raw``: psycopg, a new connection and one statement,
  ``select count(*) from graphile_worker.complete_jobs(%s)`` (or the other two
  functions), committed. The baseline. Its statement alone is timed too.
- ``ours``: ``execute()`` of ``GraphileWorkerCompleteJobsOperator`` (and the
  permanently-fail and reschedule operators) with ``job_ids`` and the connection from an
  ``AIRFLOW_CONN_`` variable: input checks, connection lookup, a new connection, the
  schema and permission checks, the call, the changed ids back to Python, the XCom dict.
- ``sqlexec``: ``execute()`` of common-sql's ``SQLExecuteQueryOperator`` with the raw
  statement and the ids as a parameter (PostgresHook, ``AIRFLOW_CONN_`` postgres
  connection).
- ``node``: Graphile Worker 0.18's own ``makeWorkerUtils(...).completeJobs(ids)``
  (``permanentlyFailJobs``, ``rescheduleJobs``) in a Node process
  (``bench/worker_utils_call.mjs``): the call alone, timed inside node, and the whole
  process (start, import, pool, call, release, exit), timed from here.

Operators log to a temp file, as a task logs to its log file. Each round runs every
(function, variant) pair once, the variants in a rotating order, after an untimed
warm-up round. Every figure is a ratio to ``raw`` in the same round; the report gives
the median and the spread (min-max) of those ratios, with the load average.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
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
    load_note,
    rotated,
    say_machine,
    set_up,
    spread,
    vacuum_analyze,
)
from devkit.airflow_home import connection_env
from devkit.graphile import GraphileDB, node_binary, package_dir
from devkit.postgres import PostgresServer, drop_database, temporary_copy, unique_name
from devkit.process import run_cleanly, say
from devkit.versions import LATEST_VERSION

VERSION = LATEST_VERSION
GW_CONN = "graphile_bench"
PG_CONN = "postgres_bench"
TARGET_RATIO = 1.15
FUNCTIONS = ("complete_jobs", "permanently_fail_jobs", "reschedule_jobs")
VARIANTS = ("raw", "ours", "sqlexec", "node")
NODE_FUNCTIONS = {
    "complete_jobs": "completeJobs",
    "permanently_fail_jobs": "permanentlyFailJobs",
    "reschedule_jobs": "rescheduleJobs",
}
REASON = "bench: permanently failed by id"
NODE_SCRIPT = Path(__file__).resolve().parent / "worker_utils_call.mjs"
TASKS = ("send_email", "resize_image", "sync_crm", "charge_card", "build_report")
# Five task identifiers, 10% of the jobs in twenty named queues, all ready to run.
SPEC = JobSpecSQL(
    task="(%(tasks)s::text[])[1 + i %% 5]",
    payload="json_build_object('n', i, 'to', 'user' || i || '@example.com')",
    queue_name="case when i %% 10 = 0 then 'queue_' || (i / 10) %% 20 end",
)


@dataclass
class Call:
    """What one call of a variant did: seconds, changed rows, and extra timings."""

    seconds: float
    changed: int
    extra: dict[str, float] = field(default_factory=dict)


def statement(function: str) -> sql.Composed:
    """The raw statement: one call of Graphile Worker's function, counting its rows."""
    name = sql.Identifier(WORKER_SCHEMA, function)
    args = {
        "complete_jobs": sql.SQL("%(ids)s::bigint[]"),
        "permanently_fail_jobs": sql.SQL("%(ids)s::bigint[], %(reason)s::text"),
        "reschedule_jobs": sql.SQL("%(ids)s::bigint[], run_at => %(run_at)s::timestamptz"),
    }[function]
    return sql.SQL("select count(*) from {}({})").format(name, args)


class Variants:
    """The four ways to call a job function, all on the database named by ``use()``."""

    def __init__(self, server: PostgresServer, log_file: Path, work: Path) -> None:
        self.server = server
        self.log_file = log_file
        self.work = work
        self.dbname = ""
        self.run_at = datetime.now(timezone.utc) + timedelta(days=1)

    def use(self, dbname: str) -> None:
        """Point the raw call, both Airflow connections and node at ``dbname``."""
        self.dbname = dbname
        connections = {
            GW_CONN: self.server.airflow_connection(dbname),
            PG_CONN: self.server.airflow_connection(dbname, "postgres"),
        }
        os.environ.update(connection_env(connections))

    def params(self, ids: list[int]) -> dict[str, Any]:
        return {"ids": ids, "reason": REASON, "run_at": self.run_at}

    def raw(self, function: str, ids: list[int]) -> Call:
        query = statement(function)
        started = time.perf_counter()
        with psycopg.connect(self.server.dsn(self.dbname)) as conn:
            statement_started = time.perf_counter()
            row = conn.execute(query, self.params(ids)).fetchone()
            conn.commit()
            statement_seconds = time.perf_counter() - statement_started
        seconds = time.perf_counter() - started
        assert row is not None
        return Call(seconds, int(row[0]), {"statement": statement_seconds})

    def ours(self, function: str, ids: list[int]) -> Call:
        from airflow_graphile.operators.complete_jobs import GraphileWorkerCompleteJobsOperator
        from airflow_graphile.operators.permanently_fail_jobs import (
            GraphileWorkerPermanentlyFailJobsOperator,
        )
        from airflow_graphile.operators.reschedule_jobs import (
            GraphileWorkerRescheduleJobsOperator,
        )

        common: dict[str, Any] = {
            "task_id": f"ours_{function}",
            "graphile_worker_conn_id": GW_CONN,
            "job_ids": ids,
        }
        operator: Any
        if function == "complete_jobs":
            operator = GraphileWorkerCompleteJobsOperator(**common)
        elif function == "permanently_fail_jobs":
            operator = GraphileWorkerPermanentlyFailJobsOperator(reason=REASON, **common)
        else:
            operator = GraphileWorkerRescheduleJobsOperator(run_at=self.run_at, **common)
        result, seconds = self._execute(operator)
        return Call(seconds, len(result["affected"]))

    def sqlexec(self, function: str, ids: list[int]) -> Call:
        from airflow.providers.common.sql.operators.sql import SQLExecuteQueryOperator

        operator = SQLExecuteQueryOperator(
            task_id=f"sqlexec_{function}",
            conn_id=PG_CONN,
            sql=statement(function).as_string(),
            parameters=self.params(ids),
        )
        result, seconds = self._execute(operator)
        return Call(seconds, int(result[0][0]))

    def _execute(self, operator: Any) -> tuple[Any, float]:
        """``operator.execute({})``, timed, its log going to the task log file."""
        with self.log_file.open("a") as log, contextlib.redirect_stdout(log):
            started = time.perf_counter()
            result = operator.execute({})
            seconds = time.perf_counter() - started
        return result, seconds

    def node(self, function: str, ids: list[int]) -> Call:
        options = self.work / "node-options.json"
        options.write_text(
            json.dumps(
                {
                    "connectionString": self.server.dsn(self.dbname),
                    "schema": WORKER_SCHEMA,
                    "function": NODE_FUNCTIONS[function],
                    "ids": ids,
                    "reason": REASON,
                    "runAt": self.run_at.isoformat(),
                }
            )
        )
        command = [node_binary(), str(NODE_SCRIPT), str(package_dir(VERSION)), str(options)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        seconds = time.perf_counter() - started
        if result.returncode != 0:
            raise RuntimeError(f"node failed: {result.stdout}{result.stderr}")
        output = json.loads(result.stdout.strip().splitlines()[-1])
        return Call(output["call_ms"] / 1000, int(output["rows"]), {"process": seconds})

    def run(self, variant: str, function: str, ids: list[int]) -> Call:
        call: Callable[[str, list[int]], Call] = getattr(self, variant)
        return call(function, ids)


def build_template(server: PostgresServer, jobs: int) -> tuple[str, list[int], float]:
    """A database with Graphile Worker's schema and ``jobs`` ready jobs; its ids."""
    db = GraphileDB.create(server, unique_name("bench_ids_template"), VERSION, GW_CONN)
    try:
        seconds = fill_jobs(db.dsn, jobs, SPEC, {"tasks": list(TASKS)})
        vacuum_analyze(db.dsn)
        with psycopg.connect(db.dsn, autocommit=True) as conn:
            ids = [
                int(row[0])
                for row in conn.execute(
                    sql.SQL("select id from {} order by id").format(
                        sql.Identifier(WORKER_SCHEMA, "_private_jobs")
                    )
                )
            ]
    except BaseException:
        drop_database(server, db.dbname)
        raise
    return db.dbname, ids, seconds


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    server, work = set_up(stack, "ids")
    template, ids, fill_seconds = build_template(server, args.jobs)
    stack.callback(drop_database, server, template)
    say_machine(server.dsn(template))
    say("SETUP")
    say(
        f"  template database: Graphile Worker {VERSION} schema, {len(ids):,} ready jobs "
        f"(5 task identifiers, 10% in 20 named queues) added with add_jobs() in "
        f"{fill_seconds:.1f} s; every call below gets its own FILE_COPY of it"
    )
    variants = Variants(server, work / "task.log", work)

    def once(variant: str, function: str, job_ids: list[int]) -> Call:
        with temporary_copy(server, template, "bench_ids") as name:
            variants.use(name)
            call = variants.run(variant, function, job_ids)
        if call.changed != len(job_ids):
            raise RuntimeError(
                f"{variant} {function} changed {call.changed} of {len(job_ids)} jobs"
            )
        return call

    warm = ids[: min(1000, len(ids))]
    for function in FUNCTIONS:
        for variant in VARIANTS:
            once(variant, function, warm)
    say(f"  warm-up: each (function, variant) once on {len(warm):,} ids, untimed")
    say(f"  {load_note()}")
    say()

    say(
        f"MEASURE  {args.rounds} rounds; in each, every function x variant once on all "
        f"{len(ids):,} ids, variants in rotating order"
    )
    samples: dict[tuple[str, str], list[Call]] = {
        (function, variant): [] for function in FUNCTIONS for variant in VARIANTS
    }
    loads: list[float] = []
    for number in range(args.rounds):
        for function in FUNCTIONS:
            for variant in rotated(list(VARIANTS), number):
                samples[function, variant].append(once(variant, function, ids))
        loads.append(os.getloadavg()[0])
        say(f"  round {number + 1}/{args.rounds} done; {load_note()}")
    say()

    say(f"RESULT  {len(ids):,} jobs by id; seconds and ratio to `raw` of the same round")
    say("        (median, min-max over rounds)")
    header = f"  {'function':<22} {'variant':<28} {'seconds':>22} {'x raw':>20}"
    say(header)
    verdicts: dict[str, Any] = {}
    for function in FUNCTIONS:
        raw = [call.seconds for call in samples[function, "raw"]]
        raw_statement = [call.extra["statement"] for call in samples[function, "raw"]]
        rows: list[tuple[str, list[float]]] = [
            ("raw: connect + statement", raw),
            ("raw: the statement alone", raw_statement),
            ("ours: operator.execute()", [c.seconds for c in samples[function, "ours"]]),
            ("SQLExecuteQueryOperator", [c.seconds for c in samples[function, "sqlexec"]]),
            ("node WorkerUtils: the call", [c.seconds for c in samples[function, "node"]]),
            (
                "node WorkerUtils: process",
                [c.extra["process"] for c in samples[function, "node"]],
            ),
        ]
        for label, values in rows:
            ratio = Ratio.of(values, raw)
            say(
                f"  {function:<22} {label:<28} {spread(ratio.variant, ' s', 3):>22} "
                f"{spread(ratio.ratio, 'x'):>20}"
            )
        ours = Ratio.of([c.seconds for c in samples[function, "ours"]], raw)
        ours_vs_statement = Ratio.of([c.seconds for c in samples[function, "ours"]], raw_statement)
        verdicts[function] = {
            "ours_seconds": ours.variant.median,
            "raw_seconds": ours.baseline.median,
            "ratio": ours.ratio.median,
            "ratio_min": ours.ratio.minimum,
            "ratio_max": ours.ratio.maximum,
            "ratio_vs_statement": ours_vs_statement.ratio.median,
            "met": ours.ratio.median <= TARGET_RATIO,
        }
        say()
    for function, verdict in verdicts.items():
        say(
            f"  {function}: ours / raw = {verdict['ratio']:.2f}x "
            f"({verdict['ratio_min']:.2f}-{verdict['ratio_max']:.2f}); vs the bare "
            f"statement {verdict['ratio_vs_statement']:.2f}x; target <= {TARGET_RATIO}x: "
            + ("met" if verdict["met"] else "MISSED")
        )
    load = Summary.of(loads)
    say(f"  load average (1 min) after each round: {spread(load)} on {os.cpu_count()} CPUs")
    return verdicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bulk_by_ids",
        description="Complete / permanently fail / reschedule N jobs by id: ours vs others.",
    )
    parser.add_argument("--jobs", type=int, default=100_000, help="jobs (and ids) per call")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds")
    parser.add_argument("--quick", action="store_true", help="20,000 jobs, 2 rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.rounds = 20_000, 2
    if args.jobs < 1000 or args.rounds < 1:
        parser.error("--jobs must be at least 1000 and --rounds at least 1")
    return run_cleanly(lambda stack: run(args, stack), "the databases were dropped.")


if __name__ == "__main__":
    sys.exit(main())
