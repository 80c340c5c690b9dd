"""Helpers shared by the benchmark scripts: statistics, machine facts, filling, copies."""

from __future__ import annotations

import json
import os
import platform
import signal
import statistics
import sys
import time
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from tests.support.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")


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


def load_note() -> str:
    """The 1-minute load average now, to show whether other work ran alongside."""
    return f"load average now: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)"


# --- helpers added for the bulk, stats and import benchmarks ---------------------------

WORKER_SCHEMA = "graphile_worker"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that cleanup callbacks run."""


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated`, so ``finally`` blocks and ExitStacks run."""

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, _terminate)


def say(text: str = "") -> None:
    print(text, flush=True)


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


def clone_database(server: PostgresServer, template: str, name: str) -> float:
    """``CREATE DATABASE name TEMPLATE template STRATEGY FILE_COPY``; return the seconds.

    FILE_COPY copies the files (no WAL for the data) between two checkpoints, so every
    copy starts from the same state: same pages, hint bits, statistics and an empty
    WAL backlog. The template must have no open connection.
    """
    started = time.monotonic()
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("create database {} template {} strategy file_copy").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
    return time.monotonic() - started


def drop_database_now(server: PostgresServer, name: str) -> None:
    """``DROP DATABASE IF EXISTS ... WITH (FORCE)``: ends its sessions first."""
    with psycopg.connect(server.admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        )


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def airflow_env(home: Path, connections: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Environment for a throwaway Airflow home and ``AIRFLOW_CONN_<ID>`` connections.

    Apply it (``os.environ.update``) before ``airflow`` is imported.
    """
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    for conn_id, connection in connections.items():
        env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(connection)
    return env


def connection_fields(server: PostgresServer, dbname: str, conn_type: str) -> dict[str, Any]:
    """An Airflow connection (as JSON fields) to one database of ``server``."""
    return {
        "conn_type": conn_type,
        "host": server.host,
        "port": server.port,
        "login": server.user,
        "password": server.password,
        "schema": dbname,
    }


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
