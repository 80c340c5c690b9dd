"""Job fixtures shaped like Graphile Worker's own tests (its makeSelectionOfJobs helper)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from psycopg import sql

from devkit.graphile import GraphileDB


@dataclass(frozen=True)
class Selection:
    """Five jobs of task ``job3``, due in an hour: one permanently failed, one locked."""

    failed: int
    regular1: int
    locked: int
    regular2: int
    untouched: int


def make_selection_of_jobs(db: GraphileDB) -> Selection:
    """Add the five jobs of `Selection`; return their ids."""
    future = datetime.now(timezone.utc) + timedelta(hours=1)
    ids = [db.add_job("job3", {"a": n}, run_at=future) for n in range(1, 6)]
    selection = Selection(*ids)
    lock_job(db, selection.locked, "test")
    db.query(
        sql.SQL(
            "update {} set attempts = max_attempts, last_error = 'Failed forever' where id = %s"
        ).format(sql.Identifier(db.schema, "_private_jobs")),
        [selection.failed],
    )
    return selection


def lock_job(db: GraphileDB, job_id: int, by: str, ago: timedelta = timedelta(0)) -> None:
    """Lock a job, and its named queue if it has one, as a worker does when it claims it."""
    at = datetime.now(timezone.utc) - ago
    jobs = sql.Identifier(db.schema, "_private_jobs")
    queues = sql.Identifier(db.schema, "_private_job_queues")
    db.query(
        sql.SQL("update {} set locked_at = %s, locked_by = %s where id = %s").format(jobs),
        [at, by, job_id],
    )
    db.query(
        sql.SQL(
            "update {} as q set locked_at = %s, locked_by = %s from {} as j "
            "where j.id = %s and q.id = j.job_queue_id"
        ).format(queues, jobs),
        [at, by, job_id],
    )


def snapshot(db: GraphileDB) -> tuple[Any, Any, Any]:
    """Every row of the three private tables, to check that nothing changed."""
    return db.jobs(), db.queues(), db.tasks()


def fail_permanently(db: GraphileDB, job_id: int) -> None:
    """Use up a job's attempts, as a worker does when its last attempt fails."""
    db.query(
        sql.SQL("update {} set attempts = max_attempts, last_error = 'boom' where id = %s").format(
            sql.Identifier(db.schema, "_private_jobs")
        ),
        [job_id],
    )


def delete_job(db: GraphileDB, job_id: int) -> None:
    """Remove a job row, leaving its task identifier and queue behind unused."""
    db.query(
        sql.SQL("delete from {} where id = %s").format(sql.Identifier(db.schema, "_private_jobs")),
        [job_id],
    )
