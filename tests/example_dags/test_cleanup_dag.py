"""example_dags/graphile_worker_cleanup.py: task-identifier GC only when no worker is alive."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for
from devkit.selection import delete_job, fail_permanently


@pytest.fixture
def cleanup_dag(run_example: Callable[..., DagRunResult]) -> Callable[[], DagRunResult]:
    # Failed jobs are kept a week by default; these tests fail them just before.
    return lambda: run_example("graphile_worker_cleanup", {"keep_failed_for_hours": 0})


def _garbage(db: GraphileDB) -> None:
    """A permanently failed job, an unused task identifier and an unused queue."""
    fail_permanently(db, db.add_job("old_report", queue="q_failed"))
    delete_job(db, db.add_job("retired_task", queue="q_retired"))


@pytest.mark.worker
def test_skips_task_gc_while_a_worker_is_alive_then_runs_it(
    gw_db: GraphileDB, cleanup_dag: Callable[[], DagRunResult]
) -> None:
    _garbage(gw_db)
    with WorkerProcess(gw_db.dsn, gw_db.version, heartbeat=True, heartbeat_interval_ms=300):
        wait_for(lambda: gw_db.heartbeats(), timeout=15, what="the worker's heartbeat")
        busy = cleanup_dag()

    assert busy.state == "success"
    xcom = busy.xcom["cleanup"]
    assert xcom["removed"] == {"DELETE_PERMAFAILED_JOBS": 1, "GC_JOB_QUEUES": 2}
    assert "alive by heartbeat" in xcom["skipped_steps"]["GC_TASK_IDENTIFIERS"]
    assert "retired_task" in gw_db.tasks()

    wait_for(lambda: not gw_db.heartbeats(), timeout=15, what="the clean stop removes its row")
    idle = cleanup_dag()
    # old_report, retired_task, and the identifiers the worker registered
    assert idle.xcom["cleanup"]["removed"]["GC_TASK_IDENTIFIERS"] >= 2
    assert idle.xcom["cleanup"]["skipped_steps"] == {}
    assert gw_db.tasks() == set()


def test_skips_task_gc_when_heartbeats_cannot_be_read(
    gw_db: GraphileDB, cleanup_dag: Callable[[], DagRunResult]
) -> None:
    _garbage(gw_db)  # and no heartbeat table at all
    result = cleanup_dag()
    assert result.state == "success"
    reason = result.xcom["cleanup"]["skipped_steps"]["GC_TASK_IDENTIFIERS"]
    assert "does not exist" in reason
    assert "retired_task" in gw_db.tasks()


def test_skips_task_gc_while_jobs_are_locked(
    gw_db: GraphileDB, cleanup_dag: Callable[[], DagRunResult], heartbeats: Callable[..., None]
) -> None:
    from devkit.selection import lock_job

    _garbage(gw_db)
    heartbeats("pool-old", ago=timedelta(hours=1))  # only a stale heartbeat
    lock_job(gw_db, gw_db.add_job("send_email"), "worker-without-plugin")
    result = cleanup_dag()
    reason = result.xcom["cleanup"]["skipped_steps"]["GC_TASK_IDENTIFIERS"]
    assert "worker-without-plugin" in reason


def test_keeps_recently_failed_jobs_for_a_week_by_default(
    gw_db: GraphileDB, run_example: Callable[..., DagRunResult]
) -> None:
    _garbage(gw_db)
    run = run_example("graphile_worker_cleanup", {})
    assert run.state == "success"
    assert run.xcom["cleanup"]["removed"]["DELETE_PERMAFAILED_JOBS"] == 0
    assert "old_report" in gw_db.tasks()
