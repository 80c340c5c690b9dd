"""A job filter as SQL: the condition, the count and sample of a dry run, one batch.

Statements are composed with ``psycopg.sql``: the schema only as an identifier (see
:mod:`~airflow_graphile.hooks.tables`), every value as a named, bound parameter.
:mod:`~airflow_graphile.hooks.bulk` runs them.
"""

from __future__ import annotations

from typing import Any

from psycopg import sql

from airflow_graphile.filters import JobFilter
from airflow_graphile.hooks.id_array import IdArray
from airflow_graphile.hooks.job_functions import JobCall
from airflow_graphile.hooks.tables import JOB_STATE, LOCK_EXPIRY, Tables


def _names(tables: Tables) -> dict[str, sql.Identifier]:
    return {"jobs": tables.jobs, "tasks": tables.tasks, "queues": tables.queues}


def filter_parts(
    tables: Tables, job_filter: JobFilter
) -> tuple[sql.Composed, sql.Composed, dict[str, Any]]:
    """Return ``(from, where, params)`` selecting the filter's jobs as ``j``.

    ``from`` joins the task and queue tables as ``t`` and ``q`` (for the columns a
    sample shows). ``where`` reads only the columns of ``j``: task identifiers and
    queue names become id lists, looked up once per statement, so the same condition
    also applies to a window of the jobs table alone (see :func:`batch_statement`).
    """
    names = _names(tables)
    source = sql.SQL(
        "{jobs} as j join {tasks} as t on t.id = j.task_id "
        "left join {queues} as q on q.id = j.job_queue_id"
    ).format(**names)
    conditions: list[sql.Composable] = []
    params: dict[str, Any] = {"lock_expiry": LOCK_EXPIRY}
    checks: list[tuple[str, Any, sql.Composable]] = [
        ("job_ids", job_filter.job_ids, sql.SQL("j.id = any(%(job_ids)b::bigint[])")),
        (
            "tasks",
            job_filter.task_identifiers,
            sql.SQL(
                "j.task_id = any(array(select tf.id from {tasks} as tf"
                " where tf.identifier = any(%(tasks)s::text[])))"
            ).format(**names),
        ),
        (
            "queues",
            job_filter.queue_names,
            sql.SQL(
                "j.job_queue_id = any(array(select qf.id from {queues} as qf"
                " where qf.queue_name = any(%(queues)s::text[])))"
            ).format(**names),
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
            params[name] = IdArray(value) if name == "job_ids" else value
    if job_filter.states:
        conditions.append(sql.SQL("({}) = any(%(states)s::text[])").format(JOB_STATE))
        params["states"] = job_filter.states
    where = sql.SQL(" and ").join(conditions) if conditions else sql.SQL("true")
    return sql.Composed([source]), sql.Composed([where]), params


def count_statement(tables: Tables, job_filter: JobFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """How many jobs up to ``%(up_to)s`` match, and how many of them are locked.

    One scan of the jobs table alone: the condition needs no join.
    """
    _source, where, params = filter_parts(tables, job_filter)
    return (
        sql.SQL(
            "select count(*) as matched, count(*) filter (where ({state}) = 'locked') as locked "
            "from {jobs} as j where j.id <= %(up_to)s::bigint and {where}"
        ).format(state=JOB_STATE, jobs=tables.jobs, where=where),
        params,
    )


def sample_statement(tables: Tables, job_filter: JobFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """The first ``%(limit)s`` matching jobs, described for a dry run."""
    source, where, params = filter_parts(tables, job_filter)
    return (
        sql.SQL(
            "select j.id, t.identifier as task_identifier, q.queue_name, ({state}) as state, "
            "j.attempts, j.max_attempts, j.run_at, j.locked_by, j.last_error "
            "from {source} where j.id <= %(up_to)s and {where} order by j.id limit %(limit)s"
        ).format(state=JOB_STATE, source=source, where=where),
        params,
    )


def ids_statement(tables: Tables, job_filter: JobFilter) -> tuple[sql.Composed, dict[str, Any]]:
    """The ids of the matching jobs, ascending, at most ``%(limit)s`` (null: all)."""
    _source, where, params = filter_parts(tables, job_filter)
    return (
        sql.SQL(
            "select coalesce(array_agg(id order by id), '{{}}') as ids from"
            " (select j.id from {jobs} as j where {where} order by j.id limit %(limit)s) as m"
        ).format(jobs=tables.jobs, where=where),
        params,
    )


# A batch reads at most this many times batch_size jobs (matching or not), in id order.
SCAN_FACTOR = 10


# At most this many ids of the jobs a batch could not reach are reported per batch.
BUSY_SAMPLE = 10


def batch_statement(
    tables: Tables, job_filter: JobFilter, call: JobCall, *, skip_busy: bool = False
) -> tuple[sql.Composed, dict[str, Any]]:
    """One batch: the next ``%(batch_size)s`` matching ids after ``%(after)s``, passed to ``call``.

    The batch walks the primary key from ``%(after)s`` and reads at most
    ``%(scan_limit)s`` jobs (up to ``%(up_to)s``), stopping as soon as it has
    ``%(batch_size)s`` matching ones: its cost is bounded whatever the filter, and a whole
    run reads the table once. (Without the window, PostgreSQL, which cannot estimate how
    many jobs a state or task filter matches, tends to scan and sort the whole table for
    every batch.)

    With ``skip_busy`` the function gets only the batch's jobs whose rows no other
    transaction holds (``for update skip locked``), so the batch cannot wait on them.

    Returns the number of matching jobs in the batch and the last one's id, how many
    rows the function changed, how many it could not reach (``busy``, with the first
    ids in ``busy_ids``), how many were already as the call would leave them
    (``already``: not handed to the function), and, when the batch is not full,
    ``scanned_to``: the last id the window read (null when nothing is left after
    ``%(after)s``), where the next batch starts.
    """
    _source, where, params = filter_parts(tables, job_filter)
    # With job ids, the window reads only those jobs (by primary key), not all in between.
    only_ids = sql.SQL(" and w.id = any(%(job_ids)b::bigint[])" if job_filter.job_ids else "")
    window = sql.SQL(
        "select {columns} from {jobs} as w where w.id > %(after)s::bigint"
        " and w.id <= %(up_to)s::bigint{only_ids} order by w.id limit %(scan_limit)s"
    )
    reached = "batch"
    targets: sql.Composable = sql.SQL("")
    busy: sql.Composable = sql.SQL("0 as busy, '{}'::bigint[] as busy_ids")
    if skip_busy:
        reached = "targets"
        targets = sql.SQL(
            ", targets as (select t.id from {jobs} as t where t.id in (select id from batch)"
            " for update skip locked)"
        ).format(jobs=tables.jobs)
        busy = sql.SQL(
            "(select count(*) from batch) - (select count(*) from targets) as busy,"
            " array(select b.id from batch as b where b.id not in (select id from targets)"
            " order by b.id limit {sample}) as busy_ids"
        ).format(sample=sql.Literal(BUSY_SAMPLE))
    ids = sql.SQL("(select coalesce(array_agg(id), '{{}}') from {})::bigint[]").format(
        sql.Identifier(reached)
    )
    return (
        sql.SQL(
            "with batch as ("
            " select j.id from ({window}) as j"
            " where {where}"
            " order by j.id limit %(batch_size)s"
            "){targets}, changed as ("
            " select c.id from {call} as c"
            ") select (select count(*) from batch) as matched,"
            " (select max(id) from batch) as last_id,"
            " (select count(*) from changed) as changed, {busy},"
            " (select count(*) from {jobs} as x where x.id in (select id from {reached})"
            " and not coalesce(x.locked_at >= now() - %(lock_expiry)s::interval, false)"
            " and ({already})) as already,"
            " case when (select count(*) from batch) < %(batch_size)s"
            " then (select max(s.id) from ({scanned}) as s) end as scanned_to"
        ).format(
            window=window.format(columns=sql.SQL("w.*"), jobs=tables.jobs, only_ids=only_ids),
            scanned=window.format(columns=sql.SQL("w.id"), jobs=tables.jobs, only_ids=only_ids),
            where=where,
            targets=targets,
            call=call.render(tables, ids),
            busy=busy,
            jobs=tables.jobs,
            reached=sql.Identifier(reached),
            already=call.already(),
        ),
        {**params, **call.params},
    )
