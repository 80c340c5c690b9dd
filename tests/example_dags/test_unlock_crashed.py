"""example_dags/graphile_worker_unlock_crashed.py against two real workers, one killed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from tests.support.airflow_runs import DagRunResult
from tests.support.graphile import GraphileDB, WorkerProcess, wait_for

pytestmark = pytest.mark.worker

BEAT_MS = 300
FAST = {"stuck_after_seconds": 1, "dead_after_seconds": 3, "max_workers": 3}


@pytest.fixture
def default_connection(gw_db: GraphileDB, monkeypatch: pytest.MonkeyPatch) -> None:
    """The example DAG uses graphile_worker_default: point it at the test database."""
    from airflow.sdk import BaseHook

    connection = BaseHook.get_connection(gw_db.conn_id)
    monkeypatch.setenv("AIRFLOW_CONN_GRAPHILE_WORKER_DEFAULT", connection.as_json())


def _locker(db: GraphileDB, job: int) -> str:
    return str(wait_for(lambda: db.jobs()[job]["locked_by"], timeout=30, what=f"job {job} locked"))


def test_dead_worker_rescued_live_worker_untouched(
    gw_db: GraphileDB, default_connection: None, run_example: Callable[..., DagRunResult]
) -> None:
    beat = {"heartbeat": True, "heartbeat_interval_ms": BEAT_MS}
    doomed = WorkerProcess(gw_db.dsn, gw_db.version, jobs=1, **beat)
    survivor: WorkerProcess | None = None
    try:
        billing = gw_db.add_job("sleep", {"ms": 600_000, "onlyFirstAttempt": True}, queue="billing")
        dead_id = _locker(gw_db, billing)
        queued = gw_db.add_job("noop", queue="billing")  # blocked behind the dead lock
        survivor = WorkerProcess(gw_db.dsn, gw_db.version, jobs=2, **beat)
        reports = gw_db.add_job("sleep", {"ms": 600_000}, queue="reports")  # a long, live job
        live_id = _locker(gw_db, reports)
        assert live_id != dead_id
        wait_for(lambda: dead_id in gw_db.heartbeats(), timeout=10, what="the doomed heartbeat")
    finally:
        doomed.kill()
    assert survivor is not None
    with survivor:
        time.sleep(FAST["dead_after_seconds"] + 1)  # the killed worker's heartbeat goes stale
        assert gw_db.queues()["billing"]["locked_by"] == dead_id

        first = run_example("graphile_worker_unlock_crashed", FAST)

        assert first.state == "success", first.task_states
        check = first.xcom["check_heartbeats"]
        assert check["dead_ids"] == [dead_id]
        assert live_id in [item["locker_id"] for item in check["alive"]]
        unlock = first.xcom["force_unlock_dead_workers"]
        assert unlock["unlocked_job_ids"] == [billing]
        assert unlock["unlocked_queue_names"] == ["billing"]
        json.dumps(first.xcom["report"])
        assert first.xcom["report"]["unlocked_workers"] == [dead_id]

        # The survivor runs the rescued job and the one queued behind it.
        wait_for(
            lambda: billing not in gw_db.jobs() and queued not in gw_db.jobs(),
            timeout=30,
            what="the survivor runs the rescued jobs",
        )
        assert gw_db.jobs()[reports]["locked_by"] == live_id  # the live lock is untouched
        assert gw_db.queues()["reports"]["locked_by"] == live_id

        before = (gw_db.jobs(), gw_db.queues())
        second = run_example("graphile_worker_unlock_crashed", FAST)
        assert second.state == "success", second.task_states
        assert second.xcom["force_unlock_dead_workers"]["unlocked_job_ids"] == []
        assert (gw_db.jobs(), gw_db.queues()) == before
        assert survivor.running()
