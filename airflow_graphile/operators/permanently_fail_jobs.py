"""Permanently fail Graphile Worker jobs by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.jobs import GraphileWorkerJobsOperator
from airflow_graphile.validation import parse_reason


class GraphileWorkerPermanentlyFailJobsOperator(GraphileWorkerJobsOperator):
    """Stop jobs from being retried, through Graphile Worker's ``permanently_fail_jobs``.

    Sets attempts to max_attempts and last_error to ``reason``. The jobs stay in the
    table until a cleanup with ``DELETE_PERMAFAILED_JOBS`` removes them. Jobs locked by
    a worker less than 4 hours ago are skipped, as Graphile Worker skips them.

    Select the jobs by ``job_ids``, or by ``job_filter`` for bulk work in batches; see
    :class:`~airflow_graphile.operators.jobs.GraphileWorkerJobsOperator`.
    :param reason: Text stored as the jobs' last_error (templated). Default: Graphile
        Worker's "Manually marked as failed".

    Returns (XCom) by ids ``{"function", "dry_run", "requested", "affected", "skipped"}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerJobsOperator.template_fields,
        "reason",
    )

    def __init__(self, *, reason: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason
        self.check_literals(reason=(reason, parse_reason))

    def execute(self, context: Context) -> dict[str, Any]:
        return self.run_job_function("permanently_fail_jobs", reason=self.reason)
