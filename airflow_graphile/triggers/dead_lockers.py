"""Event trigger: fires when a locker is dead by the liveness rule (for an AssetWatcher)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_graphile.liveness import DEAD, DEFAULT_DEAD_AFTER, DEFAULT_GRACE, LivenessRule, Verdict

log = logging.getLogger(__name__)


class GraphileWorkerDeadLockersTrigger(BaseEventTrigger):
    """Watch the worker plugin's heartbeats and leases; fire when a locker is dead.

    Made for ``AssetWatcher``: a DAG scheduled on the watched asset then runs only when
    there is a dead worker to rescue, seconds after it died. Each poll reads the
    heartbeat table (a row per live locker) and the server's lock table, never the jobs
    table, so its cost does not grow with the queue. It takes nothing: the rescue
    re-judges each locker while holding its lease before it changes anything.

    Fires ``{"dead_locker_ids": [...], "dead": [verdicts]}`` when a locker becomes dead,
    once per locker and last beat (again after ``refire_after_seconds`` if it is still
    dead, e.g. the rescue failed). It keeps one read-only session open between polls. A
    failing poll is logged and retried on a new session after 5 s; the watcher never
    stops on its own.

    :param graphile_worker_conn_id: Airflow connection to Graphile Worker's database.
    :param heartbeat_table: The worker plugin's table, ``"schema.table"``.
    :param worker_schema: Graphile Worker's schema (None: the connection's default).
    :param grace_seconds: The rule's grace for lease holders (default 3).
    :param dead_after_seconds: The rule's heartbeat age for lockers without a lease.
    :param poll_interval: Seconds between polls (default 1).
    :param refire_after_seconds: Fire again for a locker still dead after this long.
    """

    def __init__(
        self,
        graphile_worker_conn_id: str = "graphile_worker_default",
        heartbeat_table: str = "public.graphile_worker_heartbeats",
        worker_schema: str | None = None,
        grace_seconds: float = DEFAULT_GRACE.total_seconds(),
        dead_after_seconds: float = DEFAULT_DEAD_AFTER.total_seconds(),
        poll_interval: float = 1.0,
        refire_after_seconds: float = 60.0,
    ) -> None:
        super().__init__()
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self.heartbeat_table = heartbeat_table
        self.worker_schema = worker_schema
        self.grace_seconds = grace_seconds
        self.dead_after_seconds = dead_after_seconds
        self.poll_interval = poll_interval
        self.refire_after_seconds = refire_after_seconds

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "graphile_worker_conn_id": self.graphile_worker_conn_id,
                "heartbeat_table": self.heartbeat_table,
                "worker_schema": self.worker_schema,
                "grace_seconds": self.grace_seconds,
                "dead_after_seconds": self.dead_after_seconds,
                "poll_interval": self.poll_interval,
                "refire_after_seconds": self.refire_after_seconds,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
        from airflow_graphile.hooks.rescue import HeartbeatTable

        table = HeartbeatTable.parse(self.heartbeat_table)
        rule = LivenessRule(
            grace=timedelta(seconds=self.grace_seconds),
            dead_after=timedelta(seconds=self.dead_after_seconds),
        )
        hook = GraphileWorkerHook(
            graphile_worker_conn_id=self.graphile_worker_conn_id, worker_schema=self.worker_schema
        )
        fired: dict[tuple[str, str | None], float] = {}
        while True:
            try:
                async with hook.watch_dead_lockers(table, rule) as poll:
                    while True:
                        dead = [v for v in await poll() if v.state == DEAD]
                        new, fired = self._new(dead, fired, time.monotonic())
                        if new:
                            log.info("Dead lockers: %s", ", ".join(v.locker_id for v in new))
                            yield TriggerEvent(
                                {
                                    "dead_locker_ids": [v.locker_id for v in new],
                                    "dead": [v.to_xcom() for v in new],
                                }
                            )
                        await asyncio.sleep(self.poll_interval)
            except Exception as error:  # a watcher must outlive a database outage
                log.warning("Dead-locker check failed, retrying in 5 s: %s", error)
                await asyncio.sleep(max(self.poll_interval, 5.0))

    def _new(
        self, dead: list[Verdict], fired: dict[tuple[str, str | None], float], now: float
    ) -> tuple[list[Verdict], dict[tuple[str, str | None], float]]:
        """The dead lockers to report now, and what has been reported (and still holds)."""
        current = {(v.locker_id, v.last_beat_at) for v in dead}
        fired = {key: at for key, at in fired.items() if key in current}
        new = [
            v
            for v in dead
            if now - fired.get((v.locker_id, v.last_beat_at), -1e18) >= self.refire_after_seconds
        ]
        for v in new:
            fired[(v.locker_id, v.last_beat_at)] = now
        return new, fired
