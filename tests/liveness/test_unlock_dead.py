"""Force unlock with a heartbeat re-check: only dead lockers lose their locks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import lock_job, snapshot


def _stuck(db: GraphileDB) -> dict[str, int]:
    jobs = {
        name: db.add_job("send_email", queue=f"q_{name}") for name in ("dead", "slow", "silent")
    }
    for name, job in jobs.items():
        lock_job(db, job, f"pool-{name}", ago=timedelta(minutes=30))
    return jobs


def test_unlocks_only_the_dead(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
) -> None:
    jobs = _stuck(gw_db)
    heartbeats("pool-dead", ago=timedelta(minutes=29))
    heartbeats("pool-slow", ago=timedelta(seconds=3))  # alive, just a long job
    # Dead at an earlier check; the re-check right before unlocking spares two of them.
    locker_ids = ["pool-dead", "pool-slow", "pool-silent"]

    result = run_liveness_dag(
        "gw_test_unlock_dead", {"conn_id": gw_db.conn_id, "locker_ids": locker_ids}
    )

    assert result.state == "success"
    xcom = result.xcom["unlock"]
    assert xcom["requested"] == ["pool-dead"]
    assert xcom["unlocked_job_ids"] == [jobs["dead"]]
    assert xcom["unlocked_queue_names"] == ["q_dead"]
    assert sorted(s["locker_id"] for s in xcom["spared"]) == ["pool-silent", "pool-slow"]
    after = gw_db.jobs()
    assert after[jobs["slow"]]["locked_by"] == "pool-slow"
    assert after[jobs["silent"]]["locked_by"] == "pool-silent"


def test_missing_heartbeat_unlocked_only_when_opted_in(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
) -> None:
    jobs = _stuck(gw_db)
    conf = {"conn_id": gw_db.conn_id, "locker_ids": ["pool-silent"], "missing_is_dead": True}
    result = run_liveness_dag("gw_test_unlock_dead", conf)
    assert result.xcom["unlock"]["unlocked_job_ids"] == [jobs["silent"]]


def test_source_down_unlocks_nothing(
    gw_db: GraphileDB, run_liveness_dag: Callable[..., DagRunResult]
) -> None:
    _stuck(gw_db)  # no heartbeat table
    before = snapshot(gw_db)
    result = run_liveness_dag(
        "gw_test_unlock_dead", {"conn_id": gw_db.conn_id, "locker_ids": ["pool-dead"]}
    )
    assert (result.task_states["unlock"], result.tries["unlock"]) == ("failed", 2)  # retried
    assert snapshot(gw_db) == before


def test_max_workers_refuses_a_mass_unlock(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
) -> None:
    _stuck(gw_db)
    for name in ("dead", "slow", "silent"):
        heartbeats(f"pool-{name}", ago=timedelta(hours=1))
    before = snapshot(gw_db)
    conf = {
        "conn_id": gw_db.conn_id,
        "locker_ids": ["pool-dead", "pool-slow", "pool-silent"],
        "max_workers": 2,
    }
    result = run_liveness_dag("gw_test_unlock_dead", conf)
    assert (result.task_states["unlock"], result.tries["unlock"]) == ("failed", 1)  # no retry
    assert snapshot(gw_db) == before


def test_check_then_unlock_through_the_named_xcom(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
) -> None:
    jobs = _stuck(gw_db)
    heartbeats("pool-dead", ago=timedelta(minutes=29))
    heartbeats("pool-slow", ago=timedelta(seconds=3))
    sensor_result = {
        "stuck_after_seconds": 60.0,
        "lockers": [
            {"locker_id": f"pool-{name}", "job_ids": [job], "queue_names": [f"q_{name}"]}
            for name, job in jobs.items()
        ],
    }

    result = run_liveness_dag(
        "gw_test_check_then_unlock", {"conn_id": gw_db.conn_id, "lockers": sensor_result}
    )

    assert result.state == "success", result.task_states
    assert result.xcom["check"]["dead_locker_ids"] == ["pool-dead"]
    assert result.xcom["unlock"]["requested"] == ["pool-dead"]
    assert result.xcom["unlock"]["unlocked_job_ids"] == [jobs["dead"]]
    assert result.xcom["unlock"]["spared"] == []
    after = gw_db.jobs()
    assert after[jobs["dead"]]["locked_by"] is None
    assert after[jobs["slow"]]["locked_by"] == "pool-slow"
    assert after[jobs["silent"]]["locked_by"] == "pool-silent"


def test_nothing_dead_unlocks_nothing(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
) -> None:
    _stuck(gw_db)
    heartbeats("pool-slow")
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "lockers": ["pool-slow", "pool-silent"]}
    result = run_liveness_dag("gw_test_check_then_unlock", conf)
    assert result.state == "success", result.task_states
    assert result.xcom["unlock"]["requested"] == []
    assert snapshot(gw_db) == before


@pytest.mark.parametrize(
    "locker_ids",
    [
        {"dead_locker_ids": ["pool-dead"]},  # another task's whole result
        '{"dead_ids": ["pool-dead"]}',
        ["pool-dead", "pool-dead"],
        [""],
    ],
)
def test_bad_locker_ids_fail_without_retry(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
    locker_ids: object,
) -> None:
    _stuck(gw_db)
    heartbeats("pool-dead", ago=timedelta(hours=1))
    before = snapshot(gw_db)
    result = run_liveness_dag(
        "gw_test_unlock_dead", {"conn_id": gw_db.conn_id, "locker_ids": locker_ids}
    )
    assert (result.task_states["unlock"], result.tries["unlock"]) == ("failed", 1)
    assert snapshot(gw_db) == before
