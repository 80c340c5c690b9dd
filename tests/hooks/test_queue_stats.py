"""queue_stats through the hook, on every pinned Graphile Worker version."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import fail_permanently, lock_job


def test_counts_by_state_task_queue_and_locker(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    now = datetime.now(timezone.utc)
    waiting = gw_db.add_job("send_email", run_at=now - timedelta(minutes=10))
    gw_db.add_job("send_email", queue="billing", run_at=now + timedelta(hours=1))
    fail_permanently(gw_db, gw_db.add_job("charge", queue="billing"))
    lock_job(gw_db, gw_db.add_job("charge", queue="reports"), "pool-a", ago=timedelta(minutes=3))
    lock_job(gw_db, gw_db.add_job("charge"), "pool-a", ago=timedelta(minutes=1))
    lock_job(gw_db, gw_db.add_job("send_email"), "pool-b", ago=timedelta(seconds=5))

    stats = hook.queue_stats()

    json.dumps(stats)
    assert stats["total"] == 6
    assert stats["by_state"] == {
        "ready": 1,
        "scheduled": 1,
        "retrying": 0,
        "failed": 1,
        "locked": 3,
    }
    assert stats["by_task"]["charge"]["locked"] == 2
    assert stats["by_task"]["send_email"]["ready"] == 1
    assert stats["by_queue"]["billing"] == {
        "ready": 0,
        "scheduled": 1,
        "retrying": 0,
        "failed": 1,
        "locked": 0,
    }
    assert 590 < stats["oldest_ready_age_seconds"] < 700, waiting
    locks = stats["locks"]
    assert locks["jobs"] == 3 and 170 < locks["oldest_age_seconds"] < 260
    assert locks["by_locker"]["pool-a"]["jobs"] == 2
    assert locks["by_locker"]["pool-b"]["jobs"] == 1
    assert [(q["queue_name"], q["locked_by"]) for q in stats["locked_queues"]] == [
        ("reports", "pool-a")
    ]


def test_empty_queue(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    stats = hook.queue_stats()
    assert stats["total"] == 0 and stats["oldest_ready_age_seconds"] is None
    assert stats["locks"] == {"jobs": 0, "oldest_age_seconds": None, "by_locker": {}}
