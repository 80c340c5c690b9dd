"""example_dags/graphile_worker_unlock_crashed.py against two real workers, one killed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from devkit.crash import start_two_workers
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB

pytestmark = pytest.mark.worker

BEAT_MS = 300
FAST = {"stuck_after_seconds": 1, "dead_after_seconds": 3, "max_workers": 3}


def test_dead_worker_rescued_live_worker_untouched(
    gw_db: GraphileDB, run_example: Callable[..., DagRunResult]
) -> None:
    workers = start_two_workers(gw_db, heartbeat_interval_ms=BEAT_MS)
    workers.doomed.kill()
    survivor, dead_id, live_id = workers.survivor, workers.doomed_id, workers.survivor_id
    billing, reports = workers.billing, workers.reports
    with survivor:
        time.sleep(FAST["dead_after_seconds"] + 1)  # the killed worker's heartbeat goes stale
        assert gw_db.queues()["billing"]["locked_by"] == dead_id

        first = run_example("graphile_worker_unlock_crashed", FAST)

        assert first.state == "success", first.task_states
        check = first.xcom["check_heartbeats"]
        assert check["dead_locker_ids"] == [dead_id]
        assert live_id in [item["locker_id"] for item in check["alive"]]
        unlock = first.xcom["force_unlock_dead_workers"]
        assert unlock["unlocked_job_ids"] == [billing]
        assert unlock["unlocked_queue_names"] == ["billing"]
        json.dumps(first.xcom["report"])
        assert first.xcom["report"]["unlocked_locker_ids"] == [dead_id]
        assert live_id in first.xcom["report"]["left_alone_locker_ids"]

        workers.wait_rescued()  # the survivor runs the rescued job and the one behind it
        assert gw_db.jobs()[reports]["locked_by"] == live_id  # the live lock is untouched
        assert gw_db.queues()["reports"]["locked_by"] == live_id

        before = (gw_db.jobs(), gw_db.queues())
        second = run_example("graphile_worker_unlock_crashed", FAST)
        assert second.state == "success", second.task_states
        assert second.xcom["force_unlock_dead_workers"]["unlocked_job_ids"] == []
        assert (gw_db.jobs(), gw_db.queues()) == before
        assert survivor.running()
