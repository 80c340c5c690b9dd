"""Cleanup: Graphile Worker's three steps, as our own statements with its semantics.

Graphile Worker runs them from JavaScript (no SQL function): DELETE_PERMAFAILED_JOBS,
GC_TASK_IDENTIFIERS, GC_JOB_QUEUES, in that order, each its own statement. Ours are
checked against its CLI's result in the tests.

GC_JOB_QUEUES differs in one way, on a live queue. ``add_job`` looks a queue up by name
without locking its row, and no foreign key ties jobs to queues: a transaction that
added a job to an empty queue, and has not committed yet, does not stop the delete, and
its job then points at a queue that no longer exists, which no worker ever runs.
Graphile Worker's own cleanup leaves such a job stranded. Ours, after the delete
commits, waits until every transaction that was open in the database at that moment
has ended (any of them may hold the id of a queue it deleted), then puts back, with
the same id and name, each deleted queue that a job now points at (or, when
``add_job`` has meanwhile created a new queue of that name, points those jobs at it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerTimeoutError
from airflow_graphile.hooks.session import OpenTx, Tx
from airflow_graphile.hooks.tables import Tables
from airflow_graphile.reports import CleanupReport, short_list

DELETE_PERMAFAILED_JOBS = "DELETE_PERMAFAILED_JOBS"
GC_TASK_IDENTIFIERS = "GC_TASK_IDENTIFIERS"
GC_JOB_QUEUES = "GC_JOB_QUEUES"

# How long GC_JOB_QUEUES waits for the transactions open at its delete to end when
# statement_timeout is 0 (no bound): the wait must end, and a transaction open for a
# minute is an incident of its own.
UNBOUNDED_WAIT = timedelta(seconds=60)
# The wait polls pg_locks, first after this many seconds, then twice as long each
# time up to the maximum: most transactions of a live queue last milliseconds.
FIRST_POLL_SECONDS = 0.02
MAX_POLL_SECONDS = 0.5
# Tries at putting back the queues GC_JOB_QUEUES deleted under a job; a second one is
# needed only when another cleanup deleted a re-created queue of the same name meanwhile.
PUT_BACK_ATTEMPTS = 3
# Putting a queue back can wait for an add_job making a queue of the same name: past
# lock_timeout it is tried again after this pause, doubled each time up to the maximum.
FIRST_RETRY_SECONDS = 0.25
MAX_RETRY_SECONDS = 2.0


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
    """Run GC_TASK_IDENTIFIERS in ``tx``; return the rows removed (GC_JOB_QUEUES: below)."""
    table, where = target(tx.schema.tables, step, skip_permafailed=False)
    tx.execute(sql.SQL("delete from {} where {}").format(table, where), settings.params())
    return tx.cur.rowcount


# The transactions that may still add a job to a queue GC_JOB_QUEUES just deleted: every
# transaction open in this database (by its virtual transaction id, which every
# transaction holds a lock on until it ends, whether or not it has written anything
# yet; pg_locks and these columns of pg_stat_activity are readable by any role), but
# our own session's and VACUUM's (which cannot run inside a transaction block); and
# every prepared transaction that wrote to the jobs table.
OPEN_TRANSACTIONS = sql.SQL(
    "select coalesce(array_agg(distinct l.virtualtransaction), '{}') as open,"
    " coalesce(array_agg(distinct l.pid) filter (where l.pid is not null), '{}') as pids"
    " from pg_locks as l"
    " where l.granted and ("
    "(l.locktype = 'virtualxid' and l.pid <> pg_backend_pid()"
    " and l.pid in (select a.pid from pg_stat_activity as a"
    " where a.datname = current_database())"
    " and l.pid not in (select v.pid from pg_stat_progress_vacuum as v))"
    " or (l.locktype = 'relation' and l.pid is null"
    " and l.database = (select d.oid from pg_database as d"
    " where d.datname = current_database())"
    " and l.relation = %(jobs)s::regclass))"
)
# Which of those are still open.
STILL_OPEN = sql.SQL(
    "select coalesce(array_agg(distinct l.virtualtransaction), '{}') as open,"
    " coalesce(array_agg(distinct l.pid) filter (where l.pid is not null), '{}') as pids"
    " from pg_locks as l where l.virtualtransaction = any(%(open)s::text[])"
)


@dataclass
class Waited:
    """The outcome of :func:`wait_for_open_transactions`."""

    ended: bool
    seconds: float
    pids: list[int]
    count: int


def wait_for_open_transactions(
    tx: Tx,
    bound: timedelta,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> Waited:
    """Wait until every transaction open now (see OPEN_TRANSACTIONS) has ended, or ``bound``.

    ``tx`` must be an autocommit session: each poll is its own short transaction, so a
    cleanup running at the same time never waits for this one's wait.
    """
    started = clock()
    row = tx.one(OPEN_TRANSACTIONS, {"jobs": tx.schema.tables.jobs.as_string(tx.cur)})
    open_now: list[str] = list(row["open"])
    pids: list[int] = list(row["pids"])
    delay = FIRST_POLL_SECONDS
    while open_now:
        elapsed = clock() - started
        if elapsed >= bound.total_seconds():
            return Waited(ended=False, seconds=elapsed, pids=sorted(pids), count=len(open_now))
        sleep(min(delay, bound.total_seconds() - elapsed))
        delay = min(delay * 2, MAX_POLL_SECONDS)
        row = tx.one(STILL_OPEN, {"open": open_now})
        open_now, pids = list(row["open"]), list(row["pids"])
    return Waited(ended=True, seconds=clock() - started, pids=[], count=0)


def wait_bound(tx: Tx) -> timedelta:
    """statement_timeout, or UNBOUNDED_WAIT when it is 0 (disabled)."""
    timeout = tx.timeouts.statement_timeout
    return timeout if timeout > timedelta(0) else UNBOUNDED_WAIT


# The queues GC_JOB_QUEUES deleted, as a relation of (id, queue_name).
DELETED = sql.SQL("unnest(%(ids)s::int[], %(names)s::text[]) as deleted (id, queue_name)")


def put_back(tx: Tx, deleted: list[tuple[int, str]], *, all_of_them: bool) -> dict[str, Any]:
    """Undo the deletion of the queues that jobs point at again (``all_of_them``: all).

    In ``tx``'s transaction (read committed, so each statement sees what committed
    before it): insert each such queue back with its id and name, unless its name was
    taken meanwhile (``add_job`` made a new queue of that name; the insert waits for an
    uncommitted one), then point the jobs that still name a deleted id at the queue of
    the same name. Return the queues put back, the jobs re-pointed, and the deleted
    queues that jobs still point at (none, unless a queue was deleted again meanwhile).
    """
    tables = tx.schema.tables
    params = {"ids": [i for i, _ in deleted], "names": [n for _, n in deleted]}
    restored = tx.all(
        sql.SQL(
            "insert into {queues} (id, queue_name) overriding system value"
            " select deleted.id, deleted.queue_name from {deleted}"
            " where {all_of_them} or exists ("
            "select from {jobs} as jobs where jobs.job_queue_id = deleted.id)"
            " order by deleted.id"
            " on conflict do nothing returning id, queue_name"
        ).format(
            queues=tables.queues,
            jobs=tables.jobs,
            deleted=DELETED,
            all_of_them=sql.Literal(all_of_them),
        ),
        params,
    )
    moved = tx.all(
        sql.SQL(
            "update {jobs} as jobs set job_queue_id = queues.id"
            " from {deleted} join {queues} as queues on queues.queue_name = deleted.queue_name"
            " where jobs.job_queue_id = deleted.id and queues.id <> deleted.id"
            " and not exists (select from {queues} as same where same.id = deleted.id)"
            " returning jobs.id, deleted.id as old_queue_id, queues.id as new_queue_id"
        ).format(queues=tables.queues, jobs=tables.jobs, deleted=DELETED),
        params,
    )
    stranded = tx.all(
        sql.SQL(
            "select deleted.id, deleted.queue_name, count(*) as jobs"
            " from {deleted} join {jobs} as jobs on jobs.job_queue_id = deleted.id"
            " where not exists (select from {queues} as queues where queues.id = deleted.id)"
            " group by deleted.id, deleted.queue_name order by deleted.id"
        ).format(queues=tables.queues, jobs=tables.jobs, deleted=DELETED),
        params,
    )
    return {"restored": restored, "moved": moved, "stranded": stranded}


def _pairs(queues: list[tuple[int, str]]) -> str:
    return short_list([f"{name!r} (id {queue_id})" for queue_id, name in queues])


def gc_job_queues(
    open_tx: OpenTx, settings: CleanupSettings, report: CleanupReport, require_tested: bool
) -> None:
    """GC_JOB_QUEUES, safe on a live queue (see the module's docstring), into ``report``.

    The delete commits on its own, as Graphile Worker's; the queues it deleted stay in
    ``report.unchecked_queues`` until the check after the wait has committed. If the
    transactions open at the delete have not all ended within statement_timeout, every
    deleted queue whose name is still free is put back (a late job then finds its
    queue), and a retryable error names the others.
    """
    with open_tx(autocommit=True, require_tested=require_tested) as tx:
        table, where = target(tx.schema.tables, GC_JOB_QUEUES, skip_permafailed=False)
        rows = tx.all(
            sql.SQL(
                "delete from {} where {} returning job_queues.id, job_queues.queue_name"
            ).format(table, where),
            settings.params(),
        )
        deleted = [(int(row["id"]), str(row["queue_name"])) for row in rows]
        report.removed[GC_JOB_QUEUES] = len(deleted)
        if not deleted:
            return
        report.unchecked_queues = deleted
        bound = wait_bound(tx)
        waited = wait_for_open_transactions(tx, bound)
        report.queue_wait_seconds = waited.seconds
    names, stranded = _settle(open_tx, deleted, report, waited, bound, require_tested)
    report.unchecked_queues = []
    if waited.ended and not stranded:
        return
    raise GraphileWorkerTimeoutError(
        _unsafe_message(deleted, report.queues_put_back, stranded, waited, bound, names)
        + f" {report.finished()}"
    )


def _settle(
    open_tx: OpenTx,
    deleted: list[tuple[int, str]],
    report: CleanupReport,
    waited: Waited,
    bound: timedelta,
    require_tested: bool,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[tuple[str, str], list[dict[str, Any]]]:
    """Run :func:`put_back` until no job points at a deleted queue; record it in ``report``.

    Putting a queue back waits for an ``add_job`` that is making a queue of the same name
    and has not committed: past lock_timeout it is tried again, with a growing pause,
    for up to ``bound``; then the lock error goes up (``report.unchecked_queues`` still
    names the queues). Return the tables' names and the deleted queues jobs still name.
    """
    deadline = clock() + bound.total_seconds()
    pause = FIRST_RETRY_SECONDS
    stranded: list[dict[str, Any]] = []
    for _ in range(PUT_BACK_ATTEMPTS):
        while True:
            try:
                with open_tx(require_tested=require_tested) as tx:
                    outcome = put_back(tx, deleted, all_of_them=not waited.ended)
                    tables = tx.schema.tables
                    names = (tables.jobs.as_string(tx.cur), tables.queues.as_string(tx.cur))
                break
            except psycopg.errors.LockNotAvailable:
                if clock() + pause > deadline:
                    raise
                sleep(pause)
                pause = min(pause * 2, MAX_RETRY_SECONDS)
        report.queues_put_back += [
            (int(row["id"]), str(row["queue_name"])) for row in outcome["restored"]
        ]
        report.jobs_repointed += len(outcome["moved"])
        report.removed[GC_JOB_QUEUES] = len(deleted) - len(report.queues_put_back)
        stranded = outcome["stranded"]
        if not stranded:
            break
    return names, stranded


def _unsafe_message(
    deleted: list[tuple[int, str]],
    restored: list[tuple[int, str]],
    stranded: list[dict[str, Any]],
    waited: Waited,
    bound: timedelta,
    names: tuple[str, str],
) -> str:
    """Why GC_JOB_QUEUES could not make sure that no job points at a queue it deleted."""
    jobs, queues = names
    fix = (
        f"point such jobs at the queue of that name (update {jobs} set job_queue_id ="
        f" (select id from {queues} where queue_name = <name>) where job_queue_id = <id>)"
    )
    if waited.ended:
        lost = [(int(row["id"]), str(row["queue_name"])) for row in stranded]
        return (
            f"cleanup: GC_JOB_QUEUES deleted {len(deleted)} empty queue(s); jobs were added "
            f"to {len(lost)} of them meanwhile and still name them after "
            f"{PUT_BACK_ATTEMPTS} tries at putting them back (a queue of the same name was "
            f"deleted again each time): {_pairs(lost)}. Those jobs will not run until you "
            f"{fix}."
        )
    back = {queue_id for queue_id, _ in restored}
    taken = [pair for pair in deleted if pair[0] not in back]
    message = (
        f"cleanup: GC_JOB_QUEUES deleted {len(deleted)} empty queue(s), then waited "
        f"{bound.total_seconds():g} s (statement_timeout; {UNBOUNDED_WAIT.total_seconds():g} s "
        f"when it is 0) for the transactions open in the database at that moment to end, "
        f"and {waited.count} did not (backend pids {short_list(waited.pids) or '-'}): any "
        "of them may still add a job to a deleted queue."
    )
    if restored:
        message += (
            f" So the {len(restored)} whose names were still free were put back with their "
            f"ids ({_pairs(restored)}); a later cleanup removes them if they stay empty."
        )
    if taken:
        message += (
            f" {len(taken)} could not be put back, as add_job made a new queue of the same "
            f"name meanwhile: {_pairs(taken)}. A job that a still-open transaction commits "
            f"with one of these ids will not run: {fix}."
        )
    return message + " Retry when those transactions have ended."


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
        elif step == GC_JOB_QUEUES:
            gc_job_queues(open_tx, settings, report, require_tested)
        else:
            with open_tx(require_tested=require_tested) as tx:
                report.removed[step] = gc(tx, step, settings)
    report.running = None
