"""A real worker crashes (SIGKILL) holding locks; the force-unlock operator rescues its jobs."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for

pytestmark = pytest.mark.worker


def test_killed_worker_jobs_run_again_after_force_unlock(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    stuck = gw_db.add_job("sleep", {"ms": 600_000, "onlyFirstAttempt": True}, queue="reports")
    blocked = gw_db.add_job("noop", queue="reports")  # waits behind `stuck` in its queue

    crashed = WorkerProcess(gw_db.dsn, gw_db.version)
    try:
        locker = wait_for(
            lambda: gw_db.jobs()[stuck]["locked_by"], timeout=30, what="the worker locks the job"
        )
    finally:
        crashed.kill()  # SIGKILL: a crash, nothing is released
    assert locker.startswith("pool-" if gw_db.revision >= 19 else "worker-")
    assert gw_db.jobs()[stuck]["locked_by"] == locker
    assert gw_db.queues()["reports"]["locked_by"] == locker

    with WorkerProcess(gw_db.dsn, gw_db.version) as survivor:
        time.sleep(2)  # the survivor cannot take either job: the queue is locked
        assert set(gw_db.jobs()) == {stuck, blocked}

        conf = {"conn_id": gw_db.conn_id, "locker_ids": [locker]}
        result = run_dag("gw_test_force_unlock_native", conf)

        assert result.state == "success"
        assert result.xcom["force_unlock"]["unlocked_job_ids"] == [stuck]
        assert result.xcom["force_unlock"]["unlocked_queue_names"] == ["reports"]
        wait_for(lambda: not gw_db.jobs(), timeout=30, what="the survivor runs both jobs")
        assert survivor.running()
