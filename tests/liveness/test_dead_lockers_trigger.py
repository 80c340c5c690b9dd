"""GraphileWorkerDeadLockersTrigger: serializable, and its run() against real workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest

from airflow_graphile.triggers.dead_lockers import GraphileWorkerDeadLockersTrigger
from devkit.graphile import GraphileDB, WorkerProcess

pytestmark = pytest.mark.worker


def _events(trigger: GraphileWorkerDeadLockersTrigger, seconds: float) -> list[dict[str, Any]]:
    """Every event the trigger yields within ``seconds``."""
    events: list[dict[str, Any]] = []

    async def collect() -> None:
        async for event in trigger.run():
            events.append(dict(event.payload))

    async def bounded() -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(collect(), seconds)

    asyncio.run(bounded())
    return events


def test_serialize_round_trip() -> None:
    trigger = GraphileWorkerDeadLockersTrigger("gw", "public.beats", None, 3.0, 60.0, 1.0, 60.0)
    path, kwargs = trigger.serialize()
    assert path == "airflow_graphile.triggers.dead_lockers.GraphileWorkerDeadLockersTrigger"
    json.dumps(kwargs)
    assert GraphileWorkerDeadLockersTrigger(**kwargs).serialize() == (path, kwargs)


def test_fires_once_for_a_killed_worker_never_for_a_busy_one(gw_db: GraphileDB) -> None:
    def worker() -> WorkerProcess:
        return WorkerProcess(
            gw_db.dsn,
            gw_db.version,
            schema=gw_db.schema,
            heartbeat=True,
            heartbeat_interval_ms=1000,
        )

    with worker() as busy:
        busy_job = gw_db.add_job("busy", {"seconds": 15}, queue="a")
        busy_id = gw_db.wait_locked(busy_job)
        with worker() as doomed:
            doomed_job = gw_db.add_job("sleep", {"ms": 600_000}, queue="b")
            doomed_id = gw_db.wait_locked(doomed_job)
            busy.wait(lambda: {busy_id, doomed_id} <= set(gw_db.heartbeats()), 15, "heartbeats")
            trigger = GraphileWorkerDeadLockersTrigger(gw_db.conn_id, poll_interval=0.2)
            assert _events(trigger, 2) == []  # all healthy: nothing fires
            killed_at = time.monotonic()
            doomed.kill()
            events = _events(trigger, 8)
            assert [e["dead_locker_ids"] for e in events] == [[doomed_id]]  # once, not every poll
            assert events[0]["dead"][0]["evidence"] == "lease"
            json.dumps(events)
            assert time.monotonic() - killed_at < 12
            assert busy.running()
