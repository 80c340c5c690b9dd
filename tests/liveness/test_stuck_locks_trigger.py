"""GraphileWorkerStuckLocksTrigger: serializable, and its run() against a real database."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta
from typing import Any

import pytest

from airflow_graphile.triggers.stuck_locks import GraphileWorkerStuckLocksTrigger
from devkit.graphile import GraphileDB
from devkit.selection import lock_job


def _first_event(trigger: GraphileWorkerStuckLocksTrigger, timeout: float = 20) -> dict[str, Any]:
    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))


def test_serialize_round_trip() -> None:
    trigger = GraphileWorkerStuckLocksTrigger(
        "gw", "graphile_worker", 120.0, ["send_email"], None, poll_interval=15
    )
    path, kwargs = trigger.serialize()
    assert path == "airflow_graphile.triggers.stuck_locks.GraphileWorkerStuckLocksTrigger"
    json.dumps(kwargs)
    assert GraphileWorkerStuckLocksTrigger(**kwargs).serialize() == (path, kwargs)


def test_polls_until_a_lock_is_stuck(gw_db: GraphileDB) -> None:
    job = gw_db.add_job("send_email", queue="q")
    lock_job(gw_db, job, "pool-x", ago=timedelta(seconds=1))
    trigger = GraphileWorkerStuckLocksTrigger(
        gw_db.conn_id, gw_db.schema, stuck_after_seconds=2.5, poll_interval=0.5
    )
    event = _first_event(trigger)
    assert event["status"] == "success"
    (locker,) = event["lockers"]
    assert (locker["locker_id"], locker["job_ids"], locker["queue_names"]) == (
        "pool-x",
        [job],
        ["q"],
    )
    json.dumps(event)  # events are stored by the triggerer


def test_filters_are_applied(gw_db: GraphileDB) -> None:
    lock_job(gw_db, gw_db.add_job("send_email"), "pool-a", ago=timedelta(minutes=5))
    charge = gw_db.add_job("charge")
    lock_job(gw_db, charge, "pool-b", ago=timedelta(minutes=5))
    trigger = GraphileWorkerStuckLocksTrigger(
        gw_db.conn_id, gw_db.schema, 60, task_identifiers=["charge"], poll_interval=0.5
    )
    assert [lk["locker_id"] for lk in _first_event(trigger)["lockers"]] == ["pool-b"]


def test_unreachable_database_yields_an_error_event(monkeypatch: pytest.MonkeyPatch) -> None:
    connection = {"conn_type": "graphile_worker", "host": "127.0.0.1", "port": 1, "schema": "x"}
    monkeypatch.setenv("AIRFLOW_CONN_GW_NOWHERE", json.dumps(connection))
    trigger = GraphileWorkerStuckLocksTrigger("gw_nowhere", "graphile_worker", 60, poll_interval=1)
    event = _first_event(trigger)
    assert event["status"] == "error"
    assert "the database connection failed" in event["message"]


def test_a_quiet_check_ends_by_itself(gw_db: GraphileDB) -> None:
    """Nothing stuck: at end_by the trigger says so, instead of waiting to be cancelled."""
    lock_job(gw_db, gw_db.add_job("send_email"), "pool-busy")  # locked just now: not stuck
    trigger = GraphileWorkerStuckLocksTrigger(
        gw_db.conn_id, gw_db.schema, 600, poll_interval=0.3, end_by=time.time() + 1.5
    )
    started = time.monotonic()
    event = _first_event(trigger)
    assert event == {"status": "timeout", "message": "no lock held longer than 600 s"}
    assert 1.0 < time.monotonic() - started < 10
