"""What only the benchmark scripts share: statistics, machine facts, filling a big queue.

The rest (PostgreSQL, Graphile Worker, Airflow, signals) comes from the ``devkit`` harness.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from devkit.airflow_home import airflow_env
from devkit.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    postgres_server,
    unique_name,
)
from devkit.process import say
from devkit.versions import DEFAULT_SCHEMA

T = TypeVar("T")
# Every benchmark works on Graphile Worker's default schema.
WORKER_SCHEMA = DEFAULT_SCHEMA


@dataclass(frozen=True)
class Summary:
    """Median and spread of repeated measurements (same unit as the samples)."""

    n: int
    median: float
    minimum: float
    maximum: float
    p90: float

    @classmethod
    def of(cls, samples: list[float]) -> Summary:
        if not samples:
            raise ValueError("no samples")
        ordered = sorted(samples)
        # Nearest-rank 90th percentile: honest for small n (it is a sample that was seen).
        rank = max(0, -(-9 * len(ordered) // 10) - 1)
        return cls(
            n=len(ordered),
            median=statistics.median(ordered),
            minimum=ordered[0],
            maximum=ordered[-1],
            p90=ordered[rank],
        )


def meminfo_gib() -> float | None:
    """Total memory in GiB from /proc/meminfo (None where there is none)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        return None
    return None


def machine_facts(dsn: str) -> list[str]:
    """One line per fact: CPUs, memory, load, Python, PostgreSQL and its memory settings."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = conn.execute("select version()").fetchone()
        settings: dict[str, str] = dict(
            conn.execute(
                "select name, current_setting(name) from pg_settings where name = any(%s)",
                [["shared_buffers", "max_parallel_workers_per_gather", "work_mem", "jit"]],
            ).fetchall()
        )
    memory = meminfo_gib()
    load = os.getloadavg()
    pg_version = str(version[0]).split(" on ")[0] if version else "?"
    return [
        f"CPUs (nproc): {os.cpu_count()}   memory: "
        + (f"{memory:.1f} GiB" if memory is not None else "?")
        + f"   load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"{pg_version}; "
        + ", ".join(f"{name}={value}" for name, value in sorted(settings.items())),
    ]


def say_machine(dsn: str) -> None:
    """The MACHINE section of a report: the facts of `machine_facts`, then a blank line."""
    say("MACHINE")
    for line in machine_facts(dsn):
        say(f"  {line}")
    say()


def set_up(stack: ExitStack, name: str) -> tuple[PostgresServer, Path]:
    """The PostgreSQL server, and a temp folder with a throwaway Airflow home in ``airflow/``.

    The Airflow settings go into ``os.environ`` (before anything imports Airflow); the
    folder is removed when ``stack`` closes.
    """
    server = stack.enter_context(postgres_server())
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    stack.callback(shutil.rmtree, work, ignore_errors=True)
    os.environ.update(airflow_env(work / "airflow"))
    return server, work


def new_database(stack: ExitStack, server: PostgresServer, prefix: str) -> str:
    """Create an empty database named after ``prefix``, dropped when ``stack`` closes."""
    name = unique_name(prefix)
    stack.callback(drop_database, server, name)
    create_database(server, name)
    return name


def load_note() -> str:
    """The 1-minute load average now, to show whether other work ran alongside."""
    return f"load average now: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)"


# --- filling and locking a big queue ----------------------------------------------------


@dataclass(frozen=True)
class JobSpecSQL:
    """SQL expressions of ``i`` (a bigint: the job's number) for each field of a job_spec.

    They are trusted SQL fragments written in the benchmark scripts (never user input);
    values come as ``%(name)s`` parameters (write a literal ``%`` as ``%%``).
    """

    task: str
    payload: str = "json_build_object('n', i)"
    queue_name: str = "null"
    run_at: str = "null"
    max_attempts: str = "25"
    job_key: str = "null"
    priority: str = "0"
    flags: str = "null"


def fill_jobs(
    dsn: str,
    total: int,
    spec: JobSpecSQL,
    params: dict[str, Any] | None = None,
    *,
    batch: int = 100_000,
    start: int = 0,
    schema: str = WORKER_SCHEMA,
) -> float:
    """Add ``total`` jobs through Graphile Worker's own ``add_jobs``; return the seconds.

    Job number ``i`` runs from ``start`` to ``start + total - 1``; each call of
    ``add_jobs`` gets ``batch`` job specs built by ``generate_series`` (one statement,
    autocommitted), so a million jobs take well under a minute.
    """
    statement = sql.SQL(
        "select count(*) from {schema}.add_jobs(array("
        " select row({task}, {payload}, {queue_name}, {run_at}, {max_attempts}, {job_key},"
        " {priority}, {flags})::{schema}.job_spec"
        " from generate_series(%(first)s::bigint, %(last)s::bigint) as i))"
    ).format(
        schema=sql.Identifier(schema),
        **{item.name: sql.SQL(getattr(spec, item.name)) for item in fields(spec)},
    )
    started = time.monotonic()
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = 0
        while done < total:
            size = min(batch, total - done)
            first = start + done
            row = conn.execute(
                statement, {**(params or {}), "first": first, "last": first + size - 1}
            ).fetchone()
            assert row is not None and row[0] == size, row
            done += size
            if sys.stdout.isatty():
                print(f"\r  added {done:,} / {total:,} jobs", end="", flush=True)
    if sys.stdout.isatty():
        print("\r", end="")
    return time.monotonic() - started


def vacuum_analyze(dsn: str, schema: str = WORKER_SCHEMA) -> None:
    """VACUUM ANALYZE the worker tables (visibility map and statistics up to date)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in ("_private_jobs", "_private_job_queues", "_private_tasks"):
            conn.execute(sql.SQL("vacuum analyze {}").format(sql.Identifier(schema, table)))


# The queue of the stats and stuck-lock benchmarks: five task identifiers, 10% of the jobs
# in twenty named queues, 25% scheduled up to a day ahead (the rest ready to run).
BIG_QUEUE_TASKS = ("send_email", "resize_image", "sync_crm", "charge_card", "build_report")
BIG_QUEUE = JobSpecSQL(
    task="(%(tasks)s::text[])[1 + i %% 5]",
    payload="json_build_object('n', i, 'to', 'user' || i || '@example.com', 'attempt', 'first')",
    queue_name="case when i %% 10 = 0 then 'queue_' || (i / 10) %% 20 end",
    run_at="case when i %% 8 in (1, 2) then now() + make_interval(secs => i %% 86400) end",
)
BIG_QUEUE_PARAMS = {"tasks": list(BIG_QUEUE_TASKS)}
LOCKER_POOLS = 5  # pool ids holding the locks of lock_like_workers()


@dataclass(frozen=True)
class Locked:
    """What `lock_like_workers` locked, counted afterwards."""

    jobs: int
    queues: int
    stuck_jobs: int  # jobs locked longer than the ``stuck_after`` given


def lock_like_workers(dsn: str, stuck_after: timedelta, schema: str = WORKER_SCHEMA) -> Locked:
    """Lock 45 plain jobs and 5 jobs of named queues (and those queues) as 5 pools would.

    As a worker does when it claims a job: ``locked_at`` in the past (20 s to ~3 h ago),
    ``locked_by`` a pool id, ``attempts + 1``; a named queue's row is locked with its job.
    The jobs are picked by ``md5(id)``, the same ones on every run.
    """
    jobs = sql.Identifier(schema, "_private_jobs")
    queues = sql.Identifier(schema, "_private_job_queues")
    pools = [f"pool-bench{n:013d}" for n in range(LOCKER_POOLS)]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "with picked as ("
                " select id, row_number() over (order by md5(id::text)) - 1 as n from {jobs}"
                " where job_queue_id is null and run_at <= now()"
                " order by md5(id::text) limit 45"
                ") update {jobs} as j set"
                " locked_at = now() - make_interval(secs => 20 + picked.n * 240),"
                " locked_by = (%(pools)s::text[])[1 + picked.n %% %(npools)s],"
                " attempts = j.attempts + 1"
                " from picked where j.id = picked.id"
            ).format(jobs=jobs),
            {"pools": pools, "npools": LOCKER_POOLS},
        )
        conn.execute(
            sql.SQL(
                "with picked as ("
                " select distinct on (job_queue_id) id, job_queue_id,"
                " dense_rank() over (order by job_queue_id) - 1 as n"
                " from {jobs} where job_queue_id is not null and run_at <= now()"
                " and locked_at is null order by job_queue_id, id"
                "), locked as ("
                " update {jobs} as j set"
                " locked_at = now() - make_interval(secs => 30 + picked.n * 600),"
                " locked_by = (%(pools)s::text[])[1 + picked.n %% %(npools)s],"
                " attempts = j.attempts + 1"
                " from picked where j.id = picked.id and picked.n < 5"
                " returning j.job_queue_id, j.locked_at, j.locked_by"
                ") update {queues} as q set locked_at = l.locked_at, locked_by = l.locked_by"
                " from locked as l where q.id = l.job_queue_id"
            ).format(jobs=jobs, queues=queues),
            {"pools": pools, "npools": LOCKER_POOLS},
        )
        row = conn.execute(
            sql.SQL(
                "select (select count(*) from {jobs} where locked_at is not null),"
                " (select count(*) from {queues} where locked_at is not null),"
                " (select count(*) from {jobs} where locked_at < now() - %(after)s::interval)"
            ).format(jobs=jobs, queues=queues),
            {"after": stuck_after},
        ).fetchone()
    assert row is not None
    return Locked(int(row[0]), int(row[1]), int(row[2]))


# --- the optional index on locked_at ---------------------------------------------------

LOCKED_AT_INDEX = "bench_jobs_locked_at"


def create_locked_at_index(dsn: str, schema: str = WORKER_SCHEMA) -> tuple[float, int]:
    """Build the optional partial index ``(locked_at) WHERE locked_at IS NOT NULL`` on the
    jobs table with CREATE INDEX CONCURRENTLY; return its build seconds and its size in bytes.
    """
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "create index concurrently {} on {} (locked_at) where locked_at is not null"
            ).format(sql.Identifier(LOCKED_AT_INDEX), sql.Identifier(schema, "_private_jobs"))
        )
        seconds = time.perf_counter() - started
        row = conn.execute(
            "select pg_relation_size(%s::regclass)", [f"{schema}.{LOCKED_AT_INDEX}"]
        ).fetchone()
    assert row is not None
    return seconds, int(row[0])


def drop_locked_at_index(dsn: str, schema: str = WORKER_SCHEMA) -> None:
    """Drop the index of `create_locked_at_index`, if it is there."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop index concurrently if exists {}").format(
                sql.Identifier(schema, LOCKED_AT_INDEX)
            )
        )


def explain(dsn: str, statement: sql.Composable, params: Any = None) -> str:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of a statement, run in autocommit: the plan's text."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(sql.SQL("explain (analyze, buffers) ") + statement, params)
        return "\n".join(str(row[0]) for row in rows)


def indented(text: str, by: str = "    ") -> str:
    """Every line of ``text`` indented."""
    return "\n".join(by + line for line in text.splitlines())


@dataclass(frozen=True)
class Ratio:
    """Per-round ratios of a variant to the baseline measured in the same round."""

    variant: Summary
    baseline: Summary
    ratio: Summary

    @classmethod
    def of(cls, variant: list[float], baseline: list[float]) -> Ratio:
        if len(variant) != len(baseline):
            raise ValueError("ratios need one baseline sample per round")
        return cls(
            variant=Summary.of(variant),
            baseline=Summary.of(baseline),
            ratio=Summary.of([v / b for v, b in zip(variant, baseline, strict=True)]),
        )


def spread(summary: Summary, unit: str = "", digits: int = 2) -> str:
    """``median (min-max)`` of a summary, e.g. ``1.05 (0.98-1.12)``."""
    return (
        f"{summary.median:.{digits}f}{unit} "
        f"({summary.minimum:.{digits}f}-{summary.maximum:.{digits}f})"
    )


def rotated(items: list[T], round_number: int) -> list[T]:
    """The items, rotated by the round number: each variant takes each place in turn."""
    if not items:
        return []
    shift = round_number % len(items)
    return items[shift:] + items[:shift]
