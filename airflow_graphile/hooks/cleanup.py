"""Cleanup: Graphile Worker's three steps, as our own statements with its semantics.

Graphile Worker runs them from JavaScript (no SQL function): DELETE_PERMAFAILED_JOBS,
GC_TASK_IDENTIFIERS, GC_JOB_QUEUES, in that order, each its own statement. Ours are
checked against its CLI's result in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import sql

from airflow_graphile.hooks.session import OpenTx, Tx
from airflow_graphile.hooks.tables import Tables
from airflow_graphile.reports import CleanupReport

DELETE_PERMAFAILED_JOBS = "DELETE_PERMAFAILED_JOBS"
GC_TASK_IDENTIFIERS = "GC_TASK_IDENTIFIERS"
GC_JOB_QUEUES = "GC_JOB_QUEUES"


@dataclass(frozen=True)
class CleanupSettings:
    """Checked cleanup arguments, as the statements' parameters."""

    keep: list[str]
    older_than: timedelta | None
    batch_size: int

    def params(self) -> dict[str, Any]:
        return {"keep": self.keep, "older_than": self.older_than, "batch_size": self.batch_size}


def target(
    tables: Tables, step: str, *, skip_permafailed: bool
) -> tuple[sql.Composed, sql.Composable]:
    """Return the table (with alias) and condition of a cleanup step.

    ``skip_permafailed`` makes the garbage-collection steps ignore the jobs that
    DELETE_PERMAFAILED_JOBS would have removed before them (used by dry runs).
    """
    permafailed = sql.SQL(
        "jobs.attempts = jobs.max_attempts and jobs.locked_at is null"
        " and (%(older_than)s::interval is null"
        " or jobs.updated_at < now() - %(older_than)s::interval)"
    )
    remaining: sql.Composable = sql.SQL("")
    if skip_permafailed:
        remaining = sql.SQL(" and not ({})").format(permafailed)
    if step == DELETE_PERMAFAILED_JOBS:
        return sql.SQL("{} as jobs").format(tables.jobs), permafailed
    if step == GC_TASK_IDENTIFIERS:
        return sql.SQL("{} as tasks").format(tables.tasks), sql.SQL(
            "tasks.identifier <> all(%(keep)s::text[]) and not exists ("
            "select from {} as jobs where jobs.task_id = tasks.id{})"
        ).format(tables.jobs, remaining)
    if step == GC_JOB_QUEUES:
        return sql.SQL("{} as job_queues").format(tables.queues), sql.SQL(
            "job_queues.locked_at is null and not exists ("
            "select from {} as jobs where jobs.job_queue_id = job_queues.id{})"
        ).format(tables.jobs, remaining)
    raise ValueError(f"unknown cleanup step {step!r}")  # steps are checked by the hook


def count(tx: Tx, steps: list[str], settings: CleanupSettings) -> dict[str, int]:
    """Rows each step would remove, allowing for the steps before it (one snapshot)."""
    after_delete = DELETE_PERMAFAILED_JOBS in steps
    counts = {}
    for step in steps:
        table, where = target(tx.schema.tables, step, skip_permafailed=after_delete)
        row = tx.one(
            sql.SQL("select count(*) as n from {} where {}").format(table, where),
            settings.params(),
        )
        counts[step] = int(row["n"])
    return counts


def gc(tx: Tx, step: str, settings: CleanupSettings) -> int:
    """Run GC_TASK_IDENTIFIERS or GC_JOB_QUEUES in ``tx``; return the rows removed."""
    table, where = target(tx.schema.tables, step, skip_permafailed=False)
    tx.execute(sql.SQL("delete from {} where {}").format(table, where), settings.params())
    return tx.cur.rowcount


def delete_permafailed(tx: Tx, settings: CleanupSettings, removed: list[int]) -> None:
    """DELETE_PERMAFAILED_JOBS, ``batch_size`` jobs per statement, in id order.

    ``tx`` must be an autocommit session (one transaction per batch). ``removed`` gets
    one count per finished batch, so a caller knows how far an interrupted run got.
    """
    table, where = target(tx.schema.tables, DELETE_PERMAFAILED_JOBS, skip_permafailed=False)
    statement = sql.SQL(
        "with batch as (select jobs.id from {table} where jobs.id > %(after)s and {where}"
        " order by jobs.id limit %(batch_size)s),"
        " gone as (delete from {jobs} as doomed using batch where doomed.id = batch.id"
        " returning doomed.id)"
        " select (select count(*) from batch) as matched, (select max(id) from batch)"
        " as last_id, (select count(*) from gone) as removed"
    ).format(table=table, where=where, jobs=tx.schema.tables.jobs)
    after = 0
    while True:
        row = tx.one(statement, {**settings.params(), "after": after})
        removed.append(int(row["removed"]))
        if row["last_id"] is None or row["matched"] < settings.batch_size:
            return
        after = int(row["last_id"])


def run(
    open_tx: OpenTx,
    steps: list[str],
    settings: CleanupSettings,
    report: CleanupReport,
    require_tested: bool,
) -> None:
    """Run (or, for a dry run, count) ``steps`` in Graphile Worker's order, into ``report``.

    ``open_tx`` is the hook's ``transaction``. A dry run counts in one read-only snapshot;
    a real run gives each step its own transaction, and DELETE_PERMAFAILED_JOBS one per
    batch. ``report.running`` and ``report.batches`` say how far a failed run got.
    """
    if report.dry_run:
        with open_tx(read_only=True, require_tested=require_tested) as tx:
            report.removed = count(tx, steps, settings)
        return
    for step in steps:
        report.running = step
        if step == DELETE_PERMAFAILED_JOBS:
            report.batches = []
            with open_tx(autocommit=True, require_tested=require_tested) as tx:
                delete_permafailed(tx, settings, report.batches)
            report.removed[step] = sum(report.batches)
        else:
            with open_tx(require_tested=require_tested) as tx:
                report.removed[step] = gc(tx, step, settings)
    report.running = None
