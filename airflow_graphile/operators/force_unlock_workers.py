"""Force-unlock the jobs and queues of crashed Graphile Worker workers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context

from airflow_graphile.exceptions import GraphileWorkerError
from airflow_graphile.heartbeats.check import DEFAULT_DEAD_AFTER, HeartbeatCheck, HeartbeatSource
from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.reports import short_list
from airflow_graphile.validation import parse_max_workers, parse_unlock_targets


class GraphileWorkerForceUnlockWorkersOperator(GraphileWorkerBaseOperator):
    """Release every lock held by the given worker ids, through ``force_unlock_workers``.

    DANGER: only for workers that are dead. A live worker whose jobs are unlocked keeps
    running them while another worker picks them up and runs them again. Graphile
    Worker itself only frees a crashed worker's locks after 4 hours.

    Since Graphile Worker 0.17, locks are recorded under the worker *pool* id
    (``pool-...``), not the ``worker-...`` id its logs print; pass the ids as they
    appear in the ``locked_by`` column.

    With a ``heartbeat_source`` it re-checks, right before unlocking, that each id is
    still dead, and spares every id whose heartbeat is fresh or missing (unless
    ``missing_is_dead``). If the source fails, nothing is unlocked and the task fails.

    :param worker_ids: Worker or pool ids: a list, an XCom result, a string holding a
        JSON list, or one id; or the heartbeat check operator's result, whose
        ``dead_ids`` are used (templated). An empty list is a logged no-op.
    :param heartbeat_source: Re-check liveness with this source before unlocking.
    :param dead_after: Heartbeat age after which a locker is dead (templated); default 60 s.
    :param missing_is_dead: Treat ids with no heartbeat as dead (templated).
    :param max_workers: Refuse, unlocking nothing, when more ids than this are to be
        unlocked in one run: many "dead" workers at once more likely means the heartbeats
        stopped than that the workers died (templated). Default: no cap.

    Returns (XCom) ``{"function", "dry_run", "requested", "unlocked_job_ids",
    "unlocked_queue_names", "by_worker", "held_nothing", "spared"}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "worker_ids",
        "heartbeat_source",
        "dead_after",
        "missing_is_dead",
        "max_workers",
    )

    def __init__(
        self,
        *,
        worker_ids: Any,
        heartbeat_source: HeartbeatSource | None = None,
        dead_after: timedelta | float | str = DEFAULT_DEAD_AFTER,
        missing_is_dead: bool | str = False,
        max_workers: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.worker_ids = worker_ids
        self.heartbeat_source = heartbeat_source
        self.dead_after = dead_after
        self.missing_is_dead = missing_is_dead
        self.max_workers = max_workers

    def execute(self, context: Context) -> dict[str, Any]:
        worker_ids = parse_unlock_targets(self.worker_ids)
        max_workers = parse_max_workers(self.max_workers)
        dry_run = self.is_dry_run()
        spared: list[dict[str, Any]] = []
        if worker_ids and self.heartbeat_source is not None:
            check = HeartbeatCheck(self.heartbeat_source, self.dead_after, self.missing_is_dead)
            verdict = check.evaluate(worker_ids)
            self.log.info("Re-check before unlocking: %s", verdict.summary())
            spared = [*verdict.alive, *verdict.unknown]
            worker_ids = verdict.dead_ids
        if max_workers is not None and len(worker_ids) > max_workers:
            raise GraphileWorkerError(
                f"Refusing to unlock {len(worker_ids)} workers in one run (max_workers="
                f"{max_workers}): {short_list(worker_ids)}. So many at once more likely means "
                "heartbeats stopped being written than that the workers died; check them, "
                "then unlock by hand or raise max_workers."
            )
        if not worker_ids:
            self.log.info("force_unlock_workers: no worker id to unlock, nothing to do")
        report = self.get_hook().force_unlock_workers(worker_ids, dry_run=dry_run)
        self.log.info("%s", report.summary())
        if spared:
            self.log.info(
                "Spared, not dead at the re-check: %s",
                short_list([f"{s['locker_id']} ({s['evidence']})" for s in spared]),
            )
        return {**report.to_xcom(), "spared": spared}
