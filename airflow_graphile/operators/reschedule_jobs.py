"""Reschedule Graphile Worker jobs by id."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.jobs import GraphileWorkerJobsOperator
from airflow_graphile.validation import parse_run_at_or_delay, parse_smallint


class GraphileWorkerRescheduleJobsOperator(GraphileWorkerJobsOperator):
    """Change when and how jobs run, through Graphile Worker's ``reschedule_jobs``.

    Each argument left as None keeps that column unchanged. At least one must be given,
    even when ``job_ids`` is empty: a reschedule that changes nothing is a mistake in the
    DAG, not an empty day.
    Unlike Graphile Worker's JavaScript wrapper, 0 is a value here, not "unchanged".
    Jobs locked by a worker less than 4 hours ago are skipped, as Graphile Worker skips them.

    Select the jobs by ``job_ids``, or by ``job_filter`` for bulk work in batches; see
    :class:`~airflow_graphile.operators.jobs.GraphileWorkerJobsOperator`.
    :param run_at: New run time: a time-zone-aware datetime or an ISO 8601 string with
        an offset, or a delay from the database's now: a timedelta, or text such as
        ``"+1h"``, ``"+15m"``, ``"+2d"`` (units s, m, h, d, w), templated. Kept between
        1970 and 9999 (UTC).
    :param priority: New priority, -32768 to 32767; lower runs first (templated).
    :param attempts: New attempt count, 0 to 32767; 0 gives the job all its retries back
        (templated).
    :param max_attempts: New maximum attempts, 1 to 32767 (templated).

    Returns (XCom) by ids ``{"function", "dry_run", "requested", "affected", "skipped"}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerJobsOperator.template_fields,
        "run_at",
        "priority",
        "attempts",
        "max_attempts",
    )

    def __init__(
        self,
        *,
        run_at: datetime | timedelta | str | None = None,
        priority: int | str | None = None,
        attempts: int | str | None = None,
        max_attempts: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.run_at = run_at
        self.priority = priority
        self.attempts = attempts
        self.max_attempts = max_attempts
        self.check_literals(
            run_at=(run_at, parse_run_at_or_delay),
            priority=(priority, lambda v: parse_smallint(v, "priority")),
            attempts=(attempts, lambda v: parse_smallint(v, "attempts", minimum=0)),
            max_attempts=(max_attempts, lambda v: parse_smallint(v, "max_attempts", minimum=1)),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        return self.run_job_function(
            "reschedule_jobs",
            run_at=self.run_at,
            priority=self.priority,
            attempts=self.attempts,
            max_attempts=self.max_attempts,
        )
