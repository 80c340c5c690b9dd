"""Permanently fail Graphile Worker jobs by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.validation import parse_reason


class GraphileWorkerPermanentlyFailJobsOperator(GraphileWorkerBaseOperator):
    """Stop jobs from being retried, through Graphile Worker's ``permanently_fail_jobs``.

    Sets attempts to max_attempts and last_error to ``reason``. The jobs stay in the
    table until a cleanup with ``DELETE_PERMAFAILED_JOBS`` removes them. Jobs locked by
    a worker less than 4 hours ago are skipped, as Graphile Worker skips them.

    :param job_ids: Job ids: a list, an XCom result, or a string holding a JSON list
        (templated). An empty list is a logged no-op.
    :param reason: Text stored as the jobs' last_error (templated). Default: Graphile
        Worker's "Manually marked as failed".

    Returns (XCom) ``{"function", "dry_run", "requested", "affected", "skipped"}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "job_ids",
        "reason",
    )

    def __init__(self, *, job_ids: Any, reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_ids = job_ids
        self.reason = reason

    def execute(self, context: Context) -> dict[str, Any]:
        reason = parse_reason(self.reason)
        return self.run_job_function("permanently_fail_jobs", self.job_ids, reason=reason)
