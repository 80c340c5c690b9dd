"""Complete (delete) Graphile Worker jobs by id."""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.jobs import GraphileWorkerJobsOperator


class GraphileWorkerCompleteJobsOperator(GraphileWorkerJobsOperator):
    """Mark jobs as completed, which deletes them, through Graphile Worker's ``complete_jobs``.

    Jobs locked by a worker less than 4 hours ago are skipped, exactly as Graphile
    Worker skips them, and so are unknown ids; the result says which and why.

    Select the jobs by ``job_ids``, or by ``job_filter`` for bulk work in batches; see
    :class:`~airflow_graphile.operators.jobs.GraphileWorkerJobsOperator`.

    Returns (XCom) by ids ``{"function", "dry_run", "requested", "affected", "skipped"}``, where
    each ``skipped`` item is ``{"id", "reason": "locked" | "unknown", ...}``.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        return self.run_job_function("complete_jobs")
