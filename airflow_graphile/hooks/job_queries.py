"""SQL of the filtered (bulk) operations and of the queue statistics, for the hook.

Everything here composes statements with ``psycopg.sql``: the schema only as an
identifier, every value as a named, bound parameter. Nothing here runs SQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from psycopg import sql

from airflow_graphile.filters import JobFilter

# Graphile Worker's functions treat a lock older than this as no lock (its 4-hour rule).
LOCK_TIMEOUT = timedelta(hours=4)

# One state per job; see airflow_graphile.filters.STATES.
STATE = sql.SQL(
    "case"
    " when j.locked_at >= now() - %(lock_timeout)s::interval then 'locked'"
    " when j.attempts >= j.max_attempts then 'failed'"
    " when j.attempts > 0 then 'retrying'"
    " when j.run_at > now() then 'scheduled'"
    " else 'ready' end"
)


def _tables(schema: str) -> dict[str, sql.Identifier]:
    return {
        "jobs": sql.Identifier(schema, "_private_jobs"),
        "tasks": sql.Identifier(schema, "_private_tasks"),
        "queues": sql.Identifier(schema, "_private_job_queues"),
    }


def filter_parts(
    schema: str, job_filter: JobFilter
) -> tuple[sql.Composed, sql.Composed, dict[str, Any]]:
    """Return ``(from, where, params)`` selecting the filter's jobs as ``j``.

    ``from`` joins the task and queue tables as ``t`` and ``q``.
    """
    tables = _tables(schema)
    source = sql.SQL(
        "{jobs} as j join {tasks} as t on t.id = j.task_id "
        "left join {queues} as q on q.id = j.job_queue_id"
    ).format(**tables)
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"lock_timeout": LOCK_TIMEOUT}
    checks: list[tuple[str, Any, str]] = [
        ("job_ids", job_filter.job_ids, "j.id = any(%(job_ids)s::bigint[])"),
        ("tasks", job_filter.task_identifiers, "t.identifier = any(%(tasks)s::text[])"),
        ("queues", job_filter.queue_names, "q.queue_name = any(%(queues)s::text[])"),
        ("created_before", job_filter.created_before, "j.created_at < %(created_before)s"),
        ("created_after", job_filter.created_after, "j.created_at >= %(created_after)s"),
        ("run_at_before", job_filter.run_at_before, "j.run_at < %(run_at_before)s"),
        ("run_at_after", job_filter.run_at_after, "j.run_at >= %(run_at_after)s"),
        ("min_attempts", job_filter.min_attempts, "j.attempts >= %(min_attempts)s"),
        ("pattern", job_filter.last_error_pattern, "j.last_error ~ %(pattern)s"),
    ]
    for name, value, condition in checks:
        if value is not None and value != []:
            conditions.append(sql.SQL(condition))
            params[name] = value
    if job_filter.states:
        conditions.append(sql.SQL("({}) = any(%(states)s::text[])").format(STATE))
        params["states"] = job_filter.states
    where = sql.SQL(" and ").join(conditions) if conditions else sql.SQL("true")
    return sql.Composed([source]), sql.Composed([where]), params


def count_statement(schema: str, job_filter: JobFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """How many jobs up to ``%(up_to)s`` match, and how many of them are locked."""
    source, where, params = filter_parts(schema, job_filter)
    return (
        sql.SQL(
            "select count(*) as matched, count(*) filter (where ({state}) = 'locked') as locked "
            "from {source} where j.id <= %(up_to)s and {where}"
        ).format(state=STATE, source=source, where=where),
        params,
    )


def sample_statement(schema: str, job_filter: JobFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """The first ``%(limit)s`` matching jobs, described for a dry run."""
    source, where, params = filter_parts(schema, job_filter)
    return (
        sql.SQL(
            "select j.id, t.identifier as task_identifier, q.queue_name, ({state}) as state, "
            "j.attempts, j.max_attempts, j.run_at, j.locked_by, j.last_error "
            "from {source} where j.id <= %(up_to)s and {where} order by j.id limit %(limit)s"
        ).format(state=STATE, source=source, where=where),
        params,
    )


def batch_statement(
    schema: str, job_filter: JobFilter, call: sql.Composable
) -> tuple[sql.Composed, dict[str, Any]]:
    """One batch: the next ``%(batch_size)s`` matching ids after ``%(after)s``, passed to ``call``.

    ``call`` is the Graphile Worker function call with ``%(job_ids)s`` replaced by the
    batch's ids; it returns the rows it changed. Returns the batch size, its last id,
    and how many rows the function changed.
    """
    source, where, params = filter_parts(schema, job_filter)
    return (
        sql.SQL(
            "with batch as ("
            " select j.id from {source}"
            " where j.id > %(after)s and j.id <= %(up_to)s and {where}"
            " order by j.id limit %(batch_size)s"
            "), changed as ("
            " select c.id from {call} as c"
            ") select (select count(*) from batch) as matched,"
            " (select max(id) from batch) as last_id,"
            " (select count(*) from changed) as changed"
        ).format(
            source=source,
            where=where,
            call=call,
        ),
        params,
    )


def stats_statement(schema: str) -> tuple[sql.Composed, dict[str, Any]]:
    """Counts by state, by task and state, by queue and state, and by locker: one scan."""
    return (
        sql.SQL(
            "with j as ("
            " select t.identifier as task, q.queue_name as queue, ({state}) as state,"
            " j.run_at, j.locked_at, j.locked_by"
            " from {jobs} as j join {tasks} as t on t.id = j.task_id"
            " left join {queues} as q on q.id = j.job_queue_id"
            ") select grouping(task) = 0 as by_task, grouping(queue) = 0 as by_queue,"
            " grouping(locked_by) = 0 as by_locker, task, queue, locked_by, state,"
            " count(*) as jobs,"
            " extract(epoch from now() - min(run_at))::float8 as oldest_run_at_age,"
            " extract(epoch from now() - min(locked_at))::float8 as oldest_lock_age"
            " from j group by grouping sets ((state), (task, state), (queue, state),"
            " (locked_by, state))"
        ).format(state=STATE, **_tables(schema)),
        {"lock_timeout": LOCK_TIMEOUT},
    )


def locked_queues_statement(schema: str) -> sql.Composed:
    """Named queues currently locked, with their locker and lock age."""
    return sql.SQL(
        "select queue_name, locked_by,"
        " extract(epoch from now() - locked_at)::float8 as lock_age_seconds"
        " from {queues} where locked_at is not null order by locked_at"
    ).format(queues=sql.Identifier(schema, "_private_job_queues"))
