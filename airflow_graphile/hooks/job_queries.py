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

    ``from`` joins the task and queue tables as ``t`` and ``q`` (for the columns a
    sample shows). ``where`` reads only the columns of ``j``: task identifiers and
    queue names become id lists, looked up once per statement, so the same condition
    also applies to a window of the jobs table alone (see :func:`batch_statement`).
    """
    tables = _tables(schema)
    source = sql.SQL(
        "{jobs} as j join {tasks} as t on t.id = j.task_id "
        "left join {queues} as q on q.id = j.job_queue_id"
    ).format(**tables)
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"lock_timeout": LOCK_TIMEOUT}
    checks: list[tuple[str, Any, sql.Composable]] = [
        ("job_ids", job_filter.job_ids, sql.SQL("j.id = any(%(job_ids)s::bigint[])")),
        (
            "tasks",
            job_filter.task_identifiers,
            sql.SQL(
                "j.task_id = any(array(select tf.id from {tasks} as tf"
                " where tf.identifier = any(%(tasks)s::text[])))"
            ).format(**tables),
        ),
        (
            "queues",
            job_filter.queue_names,
            sql.SQL(
                "j.job_queue_id = any(array(select qf.id from {queues} as qf"
                " where qf.queue_name = any(%(queues)s::text[])))"
            ).format(**tables),
        ),
        ("created_before", job_filter.created_before, sql.SQL("j.created_at < %(created_before)s")),
        ("created_after", job_filter.created_after, sql.SQL("j.created_at >= %(created_after)s")),
        ("run_at_before", job_filter.run_at_before, sql.SQL("j.run_at < %(run_at_before)s")),
        ("run_at_after", job_filter.run_at_after, sql.SQL("j.run_at >= %(run_at_after)s")),
        ("min_attempts", job_filter.min_attempts, sql.SQL("j.attempts >= %(min_attempts)s")),
        ("pattern", job_filter.last_error_pattern, sql.SQL("j.last_error ~ %(pattern)s")),
    ]
    for name, value, condition in checks:
        if value is not None and value != []:
            conditions.append(condition)
            params[name] = value
    if job_filter.states:
        conditions.append(sql.SQL("({}) = any(%(states)s::text[])").format(STATE))
        params["states"] = job_filter.states
    where = sql.SQL(" and ").join(conditions) if conditions else sql.SQL("true")
    return sql.Composed([source]), sql.Composed([where]), params


def count_statement(schema: str, job_filter: JobFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """How many jobs up to ``%(up_to)s`` match, and how many of them are locked.

    One scan of the jobs table alone: the condition needs no join.
    """
    _source, where, params = filter_parts(schema, job_filter)
    return (
        sql.SQL(
            "select count(*) as matched, count(*) filter (where ({state}) = 'locked') as locked "
            "from {jobs} as j where j.id <= %(up_to)s::bigint and {where}"
        ).format(state=STATE, jobs=_tables(schema)["jobs"], where=where),
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


# A batch reads at most this many times batch_size jobs (matching or not), in id order.
SCAN_FACTOR = 10


def batch_statement(
    schema: str, job_filter: JobFilter, call: sql.Composable
) -> tuple[sql.Composed, dict[str, Any]]:
    """One batch: the next ``%(batch_size)s`` matching ids after ``%(after)s``, passed to ``call``.

    ``call`` is the Graphile Worker function call with ``%(job_ids)s`` replaced by the
    batch's ids; it returns the rows it changed.

    The batch walks the primary key from ``%(after)s`` and reads at most
    ``%(scan_limit)s`` jobs (up to ``%(up_to)s``), stopping as soon as it has
    ``%(batch_size)s`` matching ones: its cost is bounded whatever the filter, and a whole
    run reads the table once. (Without the window, PostgreSQL, which cannot estimate how
    many jobs a state or task filter matches, tends to scan and sort the whole table for
    every batch.)

    Returns the number of matching jobs in the batch and the last one's id, how many
    rows the function changed, and, when the batch is not full, ``scanned_to``: the
    last id the window read (null when nothing is left after ``%(after)s``), where the
    next batch starts.
    """
    _source, where, params = filter_parts(schema, job_filter)
    jobs = _tables(schema)["jobs"]
    # With job ids, the window reads only those jobs (by primary key), not all in between.
    only_ids = sql.SQL(" and w.id = any(%(job_ids)s::bigint[])" if job_filter.job_ids else "")
    window = sql.SQL(
        "select {columns} from {jobs} as w where w.id > %(after)s::bigint"
        " and w.id <= %(up_to)s::bigint{only_ids} order by w.id limit %(scan_limit)s"
    )
    return (
        sql.SQL(
            "with batch as ("
            " select j.id from ({window}) as j"
            " where {where}"
            " order by j.id limit %(batch_size)s"
            "), changed as ("
            " select c.id from {call} as c"
            ") select (select count(*) from batch) as matched,"
            " (select max(id) from batch) as last_id,"
            " (select count(*) from changed) as changed,"
            " case when (select count(*) from batch) < %(batch_size)s"
            " then (select max(s.id) from ({scanned}) as s) end as scanned_to"
        ).format(
            window=window.format(columns=sql.SQL("w.*"), jobs=jobs, only_ids=only_ids),
            scanned=window.format(columns=sql.SQL("w.id"), jobs=jobs, only_ids=only_ids),
            where=where,
            call=call,
        ),
        params,
    )


def stats_statement(schema: str) -> tuple[sql.Composed, dict[str, Any]]:
    """Counts by state, by task and state, by queue and state, and by locker: one scan.

    The scan groups the jobs by task id, queue id, locker and state (a few hundred
    groups at most); only those groups are joined to the task and queue names and
    regrouped into the four grouping sets. Grouping the million joined rows directly by
    four grouping sets needs several sorts of the whole table (about 3x slower at
    1,000,000 jobs).
    """
    return (
        sql.SQL(
            "with fine as ("
            " select j.task_id, j.job_queue_id, j.locked_by, ({state}) as state,"
            " count(*) as jobs, min(j.run_at) as min_run_at, min(j.locked_at) as min_locked_at"
            " from {jobs} as j group by 1, 2, 3, 4"
            "), named as ("
            " select t.identifier as task, q.queue_name as queue, f.locked_by, f.state,"
            " f.jobs, f.min_run_at, f.min_locked_at"
            " from fine as f join {tasks} as t on t.id = f.task_id"
            " left join {queues} as q on q.id = f.job_queue_id"
            ") select grouping(task) = 0 as by_task, grouping(queue) = 0 as by_queue,"
            " grouping(locked_by) = 0 as by_locker, task, queue, locked_by, state,"
            " sum(jobs)::bigint as jobs,"
            " extract(epoch from now() - min(min_run_at))::float8 as oldest_run_at_age,"
            " extract(epoch from now() - min(min_locked_at))::float8 as oldest_lock_age"
            " from named group by grouping sets ((state), (task, state), (queue, state),"
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
