"""Bulk work by filter: a job function applied in short, bounded batches.

River's job cleaner is the model: one cut-off per run (the largest id at the start),
keyset paging by id, one short transaction per batch, progress logged as it goes.
A duty cycle paces the batches so that a live worker keeps most of the machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.filters import JobFilter
from airflow_graphile.hooks import filter_sql
from airflow_graphile.hooks.job_functions import JobCall
from airflow_graphile.hooks.session import OpenTx, Tx, with_lock_retries
from airflow_graphile.reports import BulkReport

# How often a filtered operation logs its progress.
PROGRESS_EVERY_SECONDS = 5.0
# The share of wall time a filtered operation may spend inside its batch statements:
# after a batch that took t seconds it pauses t * (1 - d) / d (so 0.5 pauses as long as
# the batch took; 1.0 never pauses). On 2 CPUs, one worker (--jobs 4) kept 66% of its
# throughput with no pause and >= 90% at this default, for a run ~2x longer
# (BENCHMARKS.md, figure 3).
DEFAULT_DUTY_CYCLE = 0.5
# The longest pause after one batch, however long it took (a batch that waited on locks).
MAX_PAUSE_SECONDS = 5.0


def run(
    open_tx: OpenTx,
    job_filter: JobFilter,
    call: JobCall,
    report: BulkReport,
    *,
    sample_size: int,
) -> None:
    """Run ``call`` over the filter's jobs (or, for a dry run, count and sample them).

    ``open_tx`` is the hook's ``transaction``: a real run works in an autocommit session
    (one transaction per batch), a dry run in a read-only snapshot.
    """
    began = time.monotonic()
    try:
        with open_tx(read_only=report.dry_run, autocommit=not report.dry_run) as tx:
            up_to = start(tx, job_filter, report)
            if report.dry_run:
                report.sample = sample(tx, job_filter, up_to, sample_size)
                return
            tx.log.info(
                "%s: %d job(s) match %s; working in batches of %d, at most %.0f%% of the "
                "time (duty_cycle %g)",
                report.function,
                report.matched_at_start,
                job_filter.describe(),
                report.batch_size,
                100 * report.duty_cycle,
                report.duty_cycle,
            )
            run_batches(tx, job_filter, call, report, up_to)
    finally:
        report.seconds = time.monotonic() - began


def parse_duty_cycle(value: Any, name: str = "duty_cycle") -> float:
    """Return a duty cycle: a number greater than 0 and at most 1 (None or "": the default)."""
    if value is None or value == "":
        return DEFAULT_DUTY_CYCLE
    number = value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            number = None
    if (
        isinstance(number, bool)
        or not isinstance(number, (int, float))
        or not math.isfinite(number)
        or not 0 < number <= 1
    ):
        raise GraphileWorkerInputError(
            f"{name}: {value!r} is not a number greater than 0 and at most 1 (the share of "
            "time spent in batches; 1 never pauses)"
        )
    return float(number)


def pause_after(batch_seconds: float, duty_cycle: float) -> float:
    """How long to pause after a batch whose statements took ``batch_seconds``."""
    if duty_cycle >= 1:
        return 0.0
    return min(batch_seconds * (1 - duty_cycle) / duty_cycle, MAX_PAUSE_SECONDS)


def check_pattern(tx: Tx, pattern: str | None) -> None:
    """Refuse a last_error pattern PostgreSQL cannot compile, before anything runs."""
    if pattern is None:
        return
    try:
        with tx.cur.connection.transaction():
            tx.execute(sql.SQL("select '' ~ %(pattern)s as ok"), {"pattern": pattern})
    except psycopg.errors.InvalidRegularExpression as error:
        raise GraphileWorkerInputError(
            f"last_error_pattern: {pattern!r} is not a valid PostgreSQL regular expression: {error}"
        ) from None


def start(tx: Tx, job_filter: JobFilter, report: BulkReport) -> int:
    """Fix the run's cut-off (the largest job id now), count the matches; return the cut-off."""
    check_pattern(tx, job_filter.last_error_pattern)
    tables = tx.schema.tables
    up_to = int(
        tx.one(sql.SQL("select coalesce(max(id), 0) as up_to from {}").format(tables.jobs))["up_to"]
    )
    statement, params = filter_sql.count_statement(tables, job_filter)
    counted = tx.one(statement, {**params, "up_to": up_to})
    report.matched_at_start = int(counted["matched"])
    report.locked_at_start = int(counted["locked"])
    return up_to


def sample(tx: Tx, job_filter: JobFilter, up_to: int, size: int) -> list[dict[str, Any]]:
    """The first ``size`` matching jobs, described for a dry run."""
    statement, params = filter_sql.sample_statement(tx.schema.tables, job_filter)
    return [
        {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}
        for row in tx.all(statement, {**params, "up_to": up_to, "limit": size})
    ]


def run_batches(
    tx: Tx,
    job_filter: JobFilter,
    call: JobCall,
    report: BulkReport,
    up_to: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Apply ``call`` to the matching jobs up to ``up_to``, batch by batch, in ``tx``.

    ``tx`` must be an autocommit session: each batch is one statement, so one
    transaction. The report is updated after every batch, so it tells how far a run
    got when an error stops it. Between batches the run pauses (``sleep``) as
    ``report.duty_cycle`` asks (:func:`pause_after`), with no transaction open.
    """
    tables = tx.schema.tables
    size = report.batch_size
    statements = {
        skip: filter_sql.batch_statement(tables, job_filter, call, skip_busy=skip)
        for skip in (False, True)
    }
    base = {"up_to": up_to, "batch_size": size, "scan_limit": size * filter_sql.SCAN_FACTOR}
    started = last_log = time.monotonic()
    after = 0
    while True:
        batch_started = time.monotonic()
        row, working = _one_batch(tx, statements, {**base, "after": after}, report, sleep)
        took = time.monotonic() - batch_started
        report.batches += 1
        report.longest_batch_seconds = max(report.longest_batch_seconds, took)
        report.processed += int(row["matched"])
        report.changed += int(row["changed"])
        report.skipped_busy += int(row["busy"])
        report.skipped_already += int(row["already"])
        room = filter_sql.BUSY_SAMPLE - len(report.busy_sample)
        report.busy_sample.extend(list(row["busy_ids"])[: max(room, 0)])
        if row["matched"] == size:
            after = int(row["last_id"])  # a full batch: more may follow it
        elif row["scanned_to"] is None or row["scanned_to"] >= up_to:
            break  # the window reached the end
        else:
            after = int(row["scanned_to"])  # the window was read to its end
        pause = pause_after(working, report.duty_cycle)
        if pause > 0:  # autocommit: the batch is committed, no transaction is open
            sleep(pause)
            report.paused_seconds += pause
        if time.monotonic() - last_log >= PROGRESS_EVERY_SECONDS:
            last_log = time.monotonic()
            _log_progress(tx, report, started)


def _one_batch(
    tx: Tx,
    statements: dict[bool, tuple[sql.Composed, dict[str, Any]]],
    params: dict[str, Any],
    report: BulkReport,
    sleep: Callable[[float], None],
) -> tuple[dict[str, Any], float]:
    """Run one batch; on lock_timeout retry with backoff, then skip the rows held.

    Returns the batch's row and the seconds spent in its statements (without the
    backoff between tries).
    """
    working = 0.0

    def attempt(skip_busy: bool) -> dict[str, Any]:
        nonlocal working
        statement, statement_params = statements[skip_busy]
        began = time.monotonic()
        try:
            row: dict[str, Any] = tx.one(statement, {**statement_params, **params})
        finally:
            working += time.monotonic() - began
        return row

    what = f"{report.function}, batch {report.batches + 1}"
    return with_lock_retries(attempt, log=tx.log, what=what, sleep=sleep), working


def _log_progress(tx: Tx, report: BulkReport, started: float) -> None:
    elapsed = time.monotonic() - started
    total = max(report.matched_at_start, 1)
    tx.log.info(
        "%s: %d/%d matching jobs done (%.0f%%), %d changed, %d skipped as locked, %.0f jobs/s"
        "; %.1f of %.1f s paused (duty_cycle %g)",
        report.function,
        report.processed,
        report.matched_at_start,
        100 * report.processed / total,
        report.changed,
        report.skipped_locked,
        report.processed / elapsed if elapsed > 0 else 0,
        report.paused_seconds,
        elapsed,
        report.duty_cycle,
    )
