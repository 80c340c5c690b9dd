"""Force-unlock the jobs and queues of crashed Graphile Worker workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.validation import parse_worker_ids


class GraphileWorkerForceUnlockWorkersOperator(GraphileWorkerBaseOperator):
    """Release every lock held by the given worker ids, through ``force_unlock_workers``.

    DANGER: only for workers that are dead. A live worker whose jobs are unlocked keeps
    running them while another worker picks them up and runs them again. Graphile
    Worker itself only frees a crashed worker's locks after 4 hours.

    Since Graphile Worker 0.17, locks are recorded under the worker *pool* id
    (``pool-...``), not the ``worker-...`` id its logs print; pass the ids as they
    appear in the ``locked_by`` column.

    :param worker_ids: Worker or pool ids: a list, an XCom result, a string holding a
        JSON list, or one id (templated). An empty list is a logged no-op.

    Returns (XCom) ``{"function", "dry_run", "requested", "unlocked_job_ids",
    "unlocked_queue_names", "by_worker", "held_nothing"}``.
    """

    template_fields: Sequence[str] = (*GraphileWorkerBaseOperator.template_fields, "worker_ids")

    def __init__(self, *, worker_ids: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.worker_ids = worker_ids

    def execute(self, context: Context) -> dict[str, Any]:
        worker_ids = parse_worker_ids(self.worker_ids)
        dry_run = self.is_dry_run()
        if not worker_ids:
            self.log.info("force_unlock_workers: worker_ids is empty, nothing to do")
        report = self.get_hook().force_unlock_workers(worker_ids, dry_run=dry_run)
        self.log.info("%s", report.summary())
        return report.to_xcom()
