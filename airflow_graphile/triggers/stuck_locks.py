"""Trigger that waits, without blocking the triggerer, until some lock is held too long."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class GraphileWorkerStuckLocksTrigger(BaseTrigger):
    """Poll Graphile Worker's tables with an async connection until a lock is stuck.

    Yields one event: ``{"status": "success", "lockers": [...]}`` (the rows of
    :meth:`GraphileWorkerHook.find_stuck_locks`), ``{"status": "timeout", "message": ...}``
    when ``end_by`` passes with nothing stuck (so a quiet check ends by itself, also
    where triggers run without Airflow's timeout, as in ``dag.test()``), or
    ``{"status": "error", "message": ...}`` when the database cannot be queried. It only
    reads.

    :param graphile_worker_conn_id: Airflow connection to Graphile Worker's database.
    :param worker_schema: The worker schema (already resolved by the sensor).
    :param stuck_after_seconds: A lock older than this is stuck.
    :param task_identifiers: Only jobs of these tasks (None: all).
    :param queue_names: Only these queues (None: all).
    :param poll_interval: Seconds between two queries.
    :param end_by: Unix time after which it stops looking (None: never).
    """

    def __init__(
        self,
        graphile_worker_conn_id: str,
        worker_schema: str,
        stuck_after_seconds: float,
        task_identifiers: list[str] | None = None,
        queue_names: list[str] | None = None,
        poll_interval: float = 60.0,
        end_by: float | None = None,
    ) -> None:
        super().__init__()
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self.worker_schema = worker_schema
        self.stuck_after_seconds = stuck_after_seconds
        self.task_identifiers = task_identifiers
        self.queue_names = queue_names
        self.poll_interval = poll_interval
        self.end_by = end_by

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "graphile_worker_conn_id": self.graphile_worker_conn_id,
                "worker_schema": self.worker_schema,
                "stuck_after_seconds": self.stuck_after_seconds,
                "task_identifiers": self.task_identifiers,
                "queue_names": self.queue_names,
                "poll_interval": self.poll_interval,
                "end_by": self.end_by,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
        from airflow_graphile.hooks.stuck_locks import StuckLockQuery

        # The sensor checked these values; the trigger only turns them back into types.
        query = StuckLockQuery(
            timedelta(seconds=self.stuck_after_seconds), self.task_identifiers, self.queue_names
        )
        hook = GraphileWorkerHook(
            graphile_worker_conn_id=self.graphile_worker_conn_id, worker_schema=self.worker_schema
        )
        try:
            while True:
                lockers = await hook.afind_stuck_locks(query)
                if lockers:
                    self.log.info("Stuck locks found for %d locker(s)", len(lockers))
                    yield TriggerEvent({"status": "success", "lockers": lockers})
                    return
                left = None if self.end_by is None else self.end_by - time.time()
                if left is not None and left <= 0:
                    message = f"no lock held longer than {self.stuck_after_seconds:g} s"
                    self.log.info("Stuck-lock check ends: %s", message)
                    yield TriggerEvent({"status": "timeout", "message": message})
                    return
                self.log.debug("No stuck locks; next check in %s s", self.poll_interval)
                await asyncio.sleep(
                    self.poll_interval if left is None else min(self.poll_interval, left)
                )
        except Exception as error:
            yield TriggerEvent({"status": "error", "message": f"{type(error).__name__}: {error}"})
