"""Stuck locks: lockers holding a job or queue lock taken longer ago than a limit.

Shared by the sensor (through the hook's sync path) and the trigger (async path).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import sql

from airflow_graphile.hooks.tables import Tables


@dataclass(frozen=True)
class StuckLockQuery:
    """What counts as stuck: a lock older than ``stuck_after``, optionally narrowed.

    ``task_identifiers`` / ``queue_names``: None or empty means no narrowing.
    """

    stuck_after: timedelta
    task_identifiers: list[str] | None = None
    queue_names: list[str] | None = None

    def params(self) -> dict[str, Any]:
        return {
            "stuck_after": self.stuck_after,
            "tasks": self.task_identifiers or None,
            "queues": self.queue_names or None,
        }


def statement(tables: Tables) -> sql.Composed:
    """One row per locker: its stuck job ids, queue names and oldest lock."""
    return sql.SQL(
        """
        with stuck_jobs as (
          select j.locked_by, j.id, j.locked_at
          from {jobs} as j
          join {tasks} as t on t.id = j.task_id
          left join {queues} as q on q.id = j.job_queue_id
          where j.locked_at < now() - %(stuck_after)s::interval
            and j.locked_by is not null
            and (%(tasks)s::text[] is null or t.identifier = any(%(tasks)s::text[]))
            and (%(queues)s::text[] is null or q.queue_name = any(%(queues)s::text[]))
        ), stuck_queues as (
          select q.locked_by, q.queue_name, q.locked_at
          from {queues} as q
          where q.locked_at < now() - %(stuck_after)s::interval
            and q.locked_by is not null
            and (%(queues)s::text[] is null or q.queue_name = any(%(queues)s::text[]))
            and (%(tasks)s::text[] is null
                 or q.locked_by in (select locked_by from stuck_jobs))
        ), locks as (
          select locked_by, id, null::text as queue_name, locked_at from stuck_jobs
          union all
          select locked_by, null, queue_name, locked_at from stuck_queues
        )
        select
          locked_by as locker_id,
          coalesce(array_agg(id order by id) filter (where id is not null), '{{}}') as job_ids,
          coalesce(
            array_agg(queue_name order by queue_name) filter (where queue_name is not null),
            '{{}}'
          ) as queue_names,
          min(locked_at) as oldest_locked_at,
          extract(epoch from now() - min(locked_at))::float8 as oldest_lock_age_seconds
        from locks
        group by locked_by
        order by min(locked_at), locked_by
        """
    ).format(jobs=tables.jobs, tasks=tables.tasks, queues=tables.queues)


def locker(row: dict[str, Any]) -> dict[str, Any]:
    """A row of :func:`statement` as a JSON-safe dict."""
    return {
        "locker_id": row["locker_id"],
        "job_ids": list(row["job_ids"]),
        "queue_names": list(row["queue_names"]),
        "oldest_locked_at": row["oldest_locked_at"].isoformat(),
        "oldest_lock_age_seconds": round(float(row["oldest_lock_age_seconds"]), 3),
    }
