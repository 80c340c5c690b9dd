"""Force-unlock and cleanup operators in real DAG runs, on every pinned version."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.operators import (
    GraphileWorkerCleanupOperator,
    GraphileWorkerForceUnlockWorkersOperator,
)
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import (
    delete_job,
    fail_permanently,
    lock_job,
    make_selection_of_jobs,
    snapshot,
)


def _two_crashed_pools(db: GraphileDB) -> dict[str, int]:
    jobs = {
        "dead_a": db.add_job("job3", queue="billing"),
        "dead_b": db.add_job("job3"),
        "alive": db.add_job("job3", queue="reports"),
    }
    lock_job(db, jobs["dead_a"], "pool-dead", ago=timedelta(minutes=20))
    lock_job(db, jobs["dead_b"], "pool-dead", ago=timedelta(minutes=20))
    lock_job(db, jobs["alive"], "pool-alive")
    return jobs


@pytest.mark.parametrize("style", ["native", "text"])
def test_force_unlock_reports_released_jobs_and_queues(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult], style: str
) -> None:
    jobs = _two_crashed_pools(gw_db)
    conf = {"conn_id": gw_db.conn_id, "locker_ids": ["pool-dead", "pool-gone"]}
    result = run_dag(f"gw_test_force_unlock_{style}", conf)

    assert result.state == "success"
    xcom = result.xcom["force_unlock"]
    assert xcom["unlocked_job_ids"] == sorted([jobs["dead_a"], jobs["dead_b"]])
    assert xcom["unlocked_queue_names"] == ["billing"]
    assert xcom["held_nothing"] == ["pool-gone"]
    after = gw_db.jobs()
    assert after[jobs["dead_a"]]["locked_by"] is None
    assert after[jobs["alive"]]["locked_by"] == "pool-alive"
    assert gw_db.queues()["reports"]["locked_by"] == "pool-alive"
    assert gw_db.queues()["billing"]["locked_by"] is None


def test_force_unlock_dry_run_changes_nothing(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    _two_crashed_pools(gw_db)
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "locker_ids": ["pool-dead"], "dry_run": True}
    result = run_dag("gw_test_force_unlock_text", conf)
    assert result.state == "success"
    assert result.xcom["force_unlock"]["unlocked_queue_names"] == ["billing"]
    assert snapshot(gw_db) == before


@pytest.mark.parametrize(
    "bad",
    [
        [""],
        ["pool-a", "pool-a"],
        "['pool-a',",
        [7],
        {"dead_locker_ids": ["pool-dead"]},  # a task's whole result: pass its key instead
        '{"dead_ids": ["pool-dead"]}',
    ],
)
def test_force_unlock_bad_ids_change_nothing(gw_db: GraphileDB, bad: object) -> None:
    _two_crashed_pools(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match=r"^locker_ids: "):
        # Literal arguments are checked when the DAG is parsed, templated ones at run.
        GraphileWorkerForceUnlockWorkersOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, locker_ids=bad
        ).execute({})  # type: ignore[arg-type]
    assert snapshot(gw_db) == before


def test_force_unlock_spares_a_locker_nothing_says_is_dead(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    """No lease free with a silent heartbeat, no old heartbeat: spared, nothing changes."""
    _two_crashed_pools(gw_db)
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "locker_ids": ["pool-alive"], "skip_liveness_check": False}
    result = run_dag("gw_test_force_unlock_native", conf)
    assert result.state == "success"
    xcom = result.xcom["force_unlock"]
    assert xcom["unlocked_job_ids"] == []
    assert [(s["locker_id"], s["state"]) for s in xcom["spared"]] == [("pool-alive", "unknown")]
    assert xcom["override_used"] is False
    assert snapshot(gw_db) == before


def test_force_unlock_override_is_named_in_the_xcom(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    jobs = _two_crashed_pools(gw_db)
    conf = {"conn_id": gw_db.conn_id, "locker_ids": ["pool-dead"], "skip_liveness_check": True}
    xcom = run_dag("gw_test_force_unlock_native", conf).xcom["force_unlock"]
    assert xcom["liveness_check"] == "skipped (skip_liveness_check=True)"
    assert xcom["override_used"] is True
    assert xcom["unlocked_job_ids"] == sorted([jobs["dead_a"], jobs["dead_b"]])


@pytest.mark.parametrize("style", ["native", "text"])
def test_cleanup_reports_counts_per_step(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult], style: str
) -> None:
    s = make_selection_of_jobs(gw_db)
    fail_permanently(gw_db, gw_db.add_job("old_task"))
    conf = {
        "conn_id": gw_db.conn_id,
        "tasks": ["GC_TASK_IDENTIFIERS", "DELETE_PERMAFAILED_JOBS"],
        "keep": [],
    }
    result = run_dag(f"gw_test_cleanup_{style}", conf)

    assert result.state == "success"
    assert result.xcom["cleanup"]["removed"] == {
        "DELETE_PERMAFAILED_JOBS": 2,
        "GC_TASK_IDENTIFIERS": 1,
    }
    assert s.failed not in gw_db.jobs()
    assert gw_db.tasks() == {"job3"}


def test_cleanup_dry_run_and_keep_list(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    delete_job(gw_db, gw_db.add_job("retired_task"))
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "tasks": "GC_TASK_IDENTIFIERS", "dry_run": True}
    result = run_dag("gw_test_cleanup_text", conf)
    assert result.xcom["cleanup"]["removed"] == {"GC_TASK_IDENTIFIERS": 1}
    assert snapshot(gw_db) == before

    conf = {"conn_id": gw_db.conn_id, "tasks": ["GC_TASK_IDENTIFIERS"], "keep": ["retired_task"]}
    result = run_dag("gw_test_cleanup_native", conf)
    assert result.xcom["cleanup"]["removed"] == {"GC_TASK_IDENTIFIERS": 0}
    assert "retired_task" in gw_db.tasks()


@pytest.mark.parametrize(
    ("tasks", "named"),
    [
        ("GC_JOB_QUEUES,VACUUM_FULL", "'VACUUM_FULL'"),
        ([], "(none given)"),
        ('["gc_job_queues"]', "'gc_job_queues'"),
    ],
)
def test_cleanup_unknown_task_changes_nothing(gw_db: GraphileDB, tasks: object, named: str) -> None:
    make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError) as error:
        # Literal arguments are checked when the DAG is parsed, templated ones at run.
        GraphileWorkerCleanupOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, tasks=tasks
        ).execute({})  # type: ignore[arg-type]
    assert named in str(error.value) and "allowed values" in str(error.value)
    assert snapshot(gw_db) == before
