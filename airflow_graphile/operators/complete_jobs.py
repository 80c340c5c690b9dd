"""Complete (delete) Graphile Worker jobs by id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.base import GraphileWorkerBaseOperator


class GraphileWorkerCompleteJobsOperator(GraphileWorkerBaseOperator):
    """Mark jobs as completed, which deletes them, through Graphile Worker's ``complete_jobs``.

    Jobs locked by a worker less than 4 hours ago are skipped, exactly as Graphile
    Worker skips them, and so are unknown ids; the result says which and why.

    :param job_ids: Job ids: a list, an XCom result, or a string holding a JSON list
        (templated). An empty list is a logged no-op.

    Returns (XCom) ``{"function", "dry_run", "requested", "affected", "skipped"}``, where
    each ``skipped`` item is ``{"id", "reason": "locked" | "unknown", ...}``.
    """

    template_fields: Sequence[str] = (*GraphileWorkerBaseOperator.template_fields, "job_ids")

    def __init__(self, *, job_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.job_ids = job_ids

    def execute(self, context: Context) -> dict[str, Any]:
        return self.run_job_function("complete_jobs", self.job_ids)
