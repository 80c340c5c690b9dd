"""GraphileWorkerStuckLocksSensor in real DAG runs: poke, reschedule and deferrable."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from airflow.sdk.bases.operator import TRIGGER_FAIL_REPR, TriggerFailureReason
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from airflow_graphile.sensors import GraphileWorkerStuckLocksSensor
from airflow_graphile.triggers.stuck_locks import GraphileWorkerStuckLocksTrigger
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import lock_job


def _locks(db: GraphileDB) -> dict[str, int]:
    jobs = {
        "old_billing": db.add_job("charge", queue="billing"),
        "old_plain": db.add_job("send_email"),
        "fresh": db.add_job("send_email", queue="reports"),
        "free": db.add_job("send_email"),
    }
    lock_job(db, jobs["old_billing"], "pool-dead", ago=timedelta(minutes=10))
    lock_job(db, jobs["old_plain"], "pool-dead", ago=timedelta(minutes=3))
    lock_job(db, jobs["fresh"], "pool-busy", ago=timedelta(seconds=5))
    return jobs


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_finds_lockers_with_locks_older_than_stuck_after(
    gw_db: GraphileDB, run_liveness_dag: Callable[..., DagRunResult], mode: str
) -> None:
    jobs = _locks(gw_db)
    result = run_liveness_dag(
        f"gw_test_stuck_locks_{mode}", {"conn_id": gw_db.conn_id, "stuck_after": 120}
    )
    assert result.state == "success"
    xcom = result.xcom["stuck"]
    assert xcom["stuck_after_seconds"] == 120
    (locker,) = xcom["lockers"]
    assert locker["locker_id"] == "pool-dead"
    assert locker["job_ids"] == sorted([jobs["old_billing"], jobs["old_plain"]])
    assert locker["queue_names"] == ["billing"]
    assert 590 < locker["oldest_lock_age_seconds"] < 700


@pytest.mark.parametrize(
    ("narrowing", "expected"),
    [
        ({"tasks": ["charge"]}, (["old_billing"], ["billing"])),
        ({"tasks": ["send_email"]}, (["old_plain"], ["billing"])),
        ({"queues": ["billing"]}, (["old_billing"], ["billing"])),
        ({"queues": ["reports"]}, None),
    ],
)
def test_narrowing_by_task_and_queue(
    gw_db: GraphileDB,
    run_liveness_dag: Callable[..., DagRunResult],
    narrowing: dict[str, list[str]],
    expected: tuple[list[str], list[str]] | None,
) -> None:
    jobs = _locks(gw_db)
    conf = {"conn_id": gw_db.conn_id, "stuck_after": 60, **narrowing}
    result = run_liveness_dag("gw_test_stuck_locks_poke_soft", conf)
    if expected is None:
        assert result.task_states["stuck"] == "skipped"  # timed out, soft_fail
        return
    (locker,) = result.xcom["stuck"]["lockers"]
    assert locker["job_ids"] == [jobs[name] for name in expected[0]]
    assert locker["queue_names"] == expected[1]


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_nothing_stuck_times_out(
    gw_db: GraphileDB, run_liveness_dag: Callable[..., DagRunResult], mode: str
) -> None:
    lock_job(gw_db, gw_db.add_job("send_email"), "pool-busy")
    hard = run_liveness_dag(f"gw_test_stuck_locks_{mode}", {"conn_id": gw_db.conn_id})
    assert hard.task_states["stuck"] == "failed"
    soft = run_liveness_dag(f"gw_test_stuck_locks_{mode}_soft", {"conn_id": gw_db.conn_id})
    assert soft.task_states["stuck"] == "skipped"


def test_deferred_sensor_wakes_when_a_lock_becomes_stuck(
    gw_db: GraphileDB,
    run_liveness_dag: Callable[..., DagRunResult],
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = gw_db.add_job("send_email", queue="reports")
    lock_job(gw_db, job, "pool-dying", ago=timedelta(seconds=48))
    caplog.set_level("INFO")

    result = run_liveness_dag(
        "gw_test_stuck_locks_deferrable_wait", {"conn_id": gw_db.conn_id, "stuck_after": 60}
    )

    assert result.state == "success"
    assert result.xcom["stuck"]["lockers"][0]["job_ids"] == [job]
    # The first poke found nothing, so the sensor deferred; the trigger found the lock.
    assert "running trigger in line" in caplog.text
    assert "Trigger completed" in caplog.text


def test_bad_stuck_after_fails(
    gw_db: GraphileDB, run_liveness_dag: Callable[..., DagRunResult]
) -> None:
    result = run_liveness_dag(
        "gw_test_stuck_locks_poke", {"conn_id": gw_db.conn_id, "stuck_after": "soon"}
    )
    assert result.task_states["stuck"] == "failed"


@pytest.mark.parametrize("soft_fail", [False, True])
def test_deferred_sensor_timeout_follows_airflow_rules(gw_db: GraphileDB, soft_fail: bool) -> None:
    """The trigger ends itself at the sensor's timeout; Airflow's defer timeout is a backstop."""
    sensor = GraphileWorkerStuckLocksSensor(
        task_id="stuck",
        graphile_worker_conn_id=gw_db.conn_id,
        stuck_after=300,
        deferrable=True,
        poke_interval=7,
        timeout=90,
        soft_fail=soft_fail,
    )
    deferred_at = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})  # type: ignore[arg-type]
    assert deferred.value.timeout == timedelta(seconds=90 + 30)
    trigger = deferred.value.trigger
    assert isinstance(trigger, GraphileWorkerStuckLocksTrigger)
    assert (trigger.stuck_after_seconds, trigger.poll_interval) == (300, 7)
    assert trigger.end_by is not None and abs(trigger.end_by - (deferred_at + 90)) < 5

    expected = AirflowSkipException if soft_fail else AirflowSensorTimeout
    with pytest.raises(expected, match="no lock held longer than 300 s"):
        sensor.execute_complete(
            {},  # type: ignore[arg-type]
            {"status": "timeout", "message": "no lock held longer than 300 s"},
        )
    with pytest.raises(expected):
        sensor.resume_execution(
            TRIGGER_FAIL_REPR,
            {"error": TriggerFailureReason.TRIGGER_TIMEOUT},
            {},  # type: ignore[arg-type]
        )
