"""Graphile Worker's three job functions by id: complete, permanently fail, reschedule.

One small builder per function checks its arguments and renders the call; :func:`run`
calls it on a list of ids and explains every id it left alone; :func:`preview` says
the same without changing anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks.id_array import IdArray
from airflow_graphile.hooks.session import Tx
from airflow_graphile.hooks.tables import LOCK_EXPIRY, Tables
from airflow_graphile.reports import Skips
from airflow_graphile.validation import parse_reason, parse_run_at_or_delay, parse_smallint

# permanently_fail_jobs's message when it is given none.
GRAPHILE_DEFAULT_REASON = "Manually marked as failed"
# Between a job's new last_error and the one it had before (kept, not overwritten).
PREVIOUS_ERROR = "\n-- previous error --\n"
# How a job function receives its ids when they are given: one array parameter, sent in
# binary, packed by id_array (a million ids: 12 MB and milliseconds).
IDS_PARAM = sql.SQL("%(job_ids)b::bigint[]")


@dataclass(frozen=True)
class JobCall:
    """One of Graphile Worker's job functions with its checked arguments.

    ``render(tables, ids)`` gives the call with its ids taken from ``ids`` (an SQL
    expression of type bigint[]); ``params`` are its other bound parameters.
    ``unchanged``, a condition on the job row ``x``, is true for a job the call would
    leave as it is (already permanently failed; already at the asked run_at, priority,
    attempts): such jobs are not handed to the function, so their rows (and
    ``updated_at``, which cleanup's age bound reads) stay untouched.
    """

    function: str
    arguments: sql.SQL = field(default_factory=lambda: sql.SQL(""))
    params: dict[str, Any] = field(default_factory=dict)
    unchanged: sql.SQL | None = None
    # Put the job's previous last_error under the new one (``%(reason)s``), instead of
    # losing it: Graphile Worker keeps only one error per job.
    keep_error: bool = False

    def render(self, tables: Tables, ids: sql.Composable = IDS_PARAM) -> sql.Composed:
        function = tables.function(self.function)
        if self.unchanged is not None:
            ids = sql.SQL(
                "(select coalesce(array_agg(x.id), '{{}}') from {jobs} as x"
                " where x.id = any({ids}) and not ({unchanged}))::bigint[]"
            ).format(jobs=tables.jobs, ids=ids, unchanged=self.unchanged)
        if not self.keep_error:
            return sql.SQL("{}({}{})").format(function, ids, self.arguments)
        # Jobs without an error in one call; each job with one in its own call, with the
        # old error kept below the reason.
        return sql.SQL(
            "(select f.* from {function}((select coalesce(array_agg(e.id), '{{}}')"
            " from {jobs} as e where e.id = any({ids}) and e.last_error is null){arguments})"
            " as f union all select f.* from {jobs} as e cross join lateral {function}("
            "array[e.id], coalesce(%(reason)s::text, {default}) || {separator}"
            " || e.last_error) as f where e.id = any({ids}) and e.last_error is not null)"
        ).format(
            function=function,
            jobs=tables.jobs,
            ids=ids,
            arguments=self.arguments,
            default=sql.Literal(GRAPHILE_DEFAULT_REASON),
            separator=sql.Literal(PREVIOUS_ERROR),
        )

    def already(self) -> sql.SQL:
        """The ``unchanged`` condition, or false."""
        return self.unchanged if self.unchanged is not None else sql.SQL("false")


def complete_call() -> JobCall:
    return JobCall("complete_jobs")


def permanently_fail_call(reason: Any = None) -> JobCall:
    return JobCall(
        "permanently_fail_jobs",
        sql.SQL(", %(reason)s::text"),
        {"reason": parse_reason(reason)},
        unchanged=sql.SQL("x.attempts >= x.max_attempts"),
        keep_error=True,
    )


# reschedule's run_at: a time, or now (the database's) plus a delay; null: unchanged.
RUN_AT = "coalesce(%(run_at)s::timestamptz, now() + %(run_in)s::interval)"


def reschedule_call(
    run_at: datetime | timedelta | str | None = None,
    priority: Any = None,
    attempts: Any = None,
    max_attempts: Any = None,
) -> JobCall:
    changes: dict[str, Any] = {
        "run_at": parse_run_at_or_delay(run_at),
        "priority": parse_smallint(priority, "priority"),
        "attempts": parse_smallint(attempts, "attempts", minimum=0),
        "max_attempts": parse_smallint(max_attempts, "max_attempts", minimum=1),
    }
    if all(value is None for value in changes.values()):
        raise GraphileWorkerInputError(
            "reschedule_jobs: nothing to change; give run_at, priority, attempts or max_attempts"
        )
    attempts, most = changes["attempts"], changes["max_attempts"]
    if attempts is not None and most is not None and attempts > most:
        raise GraphileWorkerInputError(f"attempts: {attempts} is more than max_attempts {most}")
    # A delay counts from the database's clock, not Airflow's.
    delay = changes["run_at"] if isinstance(changes["run_at"], timedelta) else None
    changes["run_in"] = delay
    if delay is not None:
        changes["run_at"] = None
    return JobCall(
        "reschedule_jobs",
        sql.SQL(
            ", run_at => " + RUN_AT + ", priority => %(priority)s::int,"
            " attempts => %(attempts)s::int, max_attempts => %(max_attempts)s::int"
        ),
        changes,
        unchanged=sql.SQL(
            "(" + RUN_AT + " is null or x.run_at = " + RUN_AT + ")"
            " and (%(priority)s::int is null or x.priority = %(priority)s::int)"
            " and (%(attempts)s::int is null or x.attempts = %(attempts)s::int)"
            " and (%(max_attempts)s::int is null or x.max_attempts = %(max_attempts)s::int)"
        ),
    )


BUILDERS: dict[str, Callable[..., JobCall]] = {
    "complete_jobs": complete_call,
    "permanently_fail_jobs": permanently_fail_call,
    "reschedule_jobs": reschedule_call,
}


def job_call(function: str, arguments: dict[str, Any]) -> JobCall:
    """Check the function name and its arguments; return the call, or raise an input error."""
    builder = BUILDERS.get(function)
    if builder is None:
        raise GraphileWorkerInputError(
            f"function: unknown job function {function!r}; expected one of {', '.join(BUILDERS)}"
        )
    try:
        return builder(**arguments)
    except TypeError:
        raise GraphileWorkerInputError(
            f"{function} does not take the argument(s) {', '.join(sorted(arguments))}"
        ) from None


@dataclass
class Outcome:
    """What a call did to its ids: the ids it changed, why the others were skipped, rows."""

    affected: list[int]
    skips: Skips
    rows: list[dict[str, Any]] | None = None


def run(tx: Tx, call: JobCall, ids: list[int], *, with_rows: bool, skip_busy: bool) -> Outcome:
    """Call the function on ``ids`` in ``tx``; explain every id it did not change.

    With ``skip_busy`` the call gets only the ids whose rows no other transaction holds
    (``for update skip locked``), so it cannot wait on them; the others are reported
    as busy.
    """
    tables = tx.schema.tables
    targets: sql.Composable = sql.SQL("")
    ids_sql: sql.Composable = IDS_PARAM
    if skip_busy:
        targets = sql.SQL(
            "with targets as (select id from {} where id = any(%(job_ids)b::bigint[])"
            " for update skip locked) "
        ).format(tables.jobs)
        ids_sql = sql.SQL("(select coalesce(array_agg(id), '{}') from targets)::bigint[]")
    result = (
        "coalesce(json_agg(j order by j.id), '[]') as rows"
        if with_rows
        else "coalesce(array_agg(j.id order by j.id), '{}') as ids"
    )
    reached = (
        ", (select coalesce(array_agg(id), '{}') from targets) as reached" if skip_busy else ""
    )
    row = tx.one(
        sql.SQL("{targets}select {result}{reached} from {call} as j").format(
            targets=targets,
            result=sql.SQL(result),
            reached=sql.SQL(reached),
            call=call.render(tables, ids_sql),
        ),
        {"job_ids": IdArray(ids), **call.params},
    )
    rows = row["rows"] if with_rows else None
    affected = [r["id"] for r in row["rows"]] if with_rows else list(row["ids"])
    busy = set(ids) - set(row["reached"]) if skip_busy else set()
    return Outcome(affected, _explain_skipped(tx, call, ids, set(affected), busy), rows)


def _explain_skipped(
    tx: Tx, call: JobCall, ids: list[int], changed: set[int], busy: set[int]
) -> Skips:
    """Say why each id that the function left alone was skipped (same transaction)."""
    skips = Skips()
    left = [job_id for job_id in ids if job_id not in changed]
    if not left:
        return skips
    found = {
        row["id"]: row
        for row in tx.all(
            sql.SQL(
                "select x.id, x.locked_by, x.locked_at, ({already}) as already"
                " from {jobs} as x where x.id = any(%(ids)b::bigint[])"
            ).format(jobs=tx.schema.tables.jobs, already=call.already()),
            {"ids": IdArray(left), **call.params},
        )
    }
    for job_id in sorted(left):
        row = found.get(job_id)
        if row is None:
            skips.unknown.append(job_id)
        elif row["locked_at"] is not None:
            skips.locked.append(locked_entry(row))
        elif job_id in busy:
            skips.busy.append(job_id)
        elif row["already"]:
            skips.already.append(job_id)
        else:
            skips.changed.append(job_id)
    return skips


def preview(tx: Tx, call: JobCall, ids: list[int], *, with_rows: bool) -> Outcome:
    """What :func:`run` would do, by Graphile Worker's rule; reads only."""
    found = {
        row["id"]: row
        for row in tx.all(
            sql.SQL(
                "select x.id, x.locked_by, x.locked_at, ({already}) as already,"
                " coalesce(x.locked_at >= now() - %(lock_expiry)s::interval, false) as locked{row}"
                " from {jobs} as x where x.id = any(%(ids)b::bigint[]) order by x.id"
            ).format(
                already=call.already(),
                row=sql.SQL(", to_json(x) as row" if with_rows else ""),
                jobs=tx.schema.tables.jobs,
            ),
            {"ids": IdArray(ids), "lock_expiry": LOCK_EXPIRY, **call.params},
        )
    }
    affected = [i for i, row in found.items() if not row["locked"] and not row["already"]]
    rows = [found[job_id]["row"] for job_id in affected] if with_rows else None
    skips = Skips()
    for job_id in sorted(ids):
        row = found.get(job_id)
        if row is None:
            skips.unknown.append(job_id)
        elif row["locked"]:
            skips.locked.append(locked_entry(row))
        elif row["already"]:
            skips.already.append(job_id)
    return Outcome(affected, skips, rows)


def locked_entry(row: dict[str, Any]) -> tuple[int, str | None, str]:
    """``(id, locked_by, locked_at)`` of a locked job (a time out of range stays text)."""
    locked_at = row["locked_at"]
    at = locked_at if isinstance(locked_at, str) else locked_at.isoformat()
    return row["id"], row["locked_by"], at
