"""example_dags/graphile_worker_rescue.py against two real workers, one killed."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from devkit.crash import start_two_workers
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB

pytestmark = pytest.mark.worker


def test_killed_worker_rescued_with_its_attempt_back_live_one_untouched(
    gw_db: GraphileDB, run_example: Callable[..., DagRunResult]
) -> None:
    workers = start_two_workers(gw_db, heartbeat_interval_ms=1000)
    workers.doomed.kill()
    with workers.survivor:
        time.sleep(3.5)  # lease free at once; then the 3 s grace
        run = run_example("graphile_worker_rescue", {})

        assert run.state == "success", run.task_states
        rescue = run.xcom["rescue"]
        json.dumps(rescue)
        assert [v["locker_id"] for v in rescue["dead"]] == [workers.doomed_id]
        assert rescue["dead"][0]["evidence"] == "lease"
        spared = {v["locker_id"]: v["state"] for v in rescue["spared"]}
        # The survivor (on 0.16 each of its two worker ids is a locker) is alive.
        assert spared[workers.survivor_id] == "alive" and set(spared.values()) == {"alive"}
        assert rescue["unlocked_job_ids"] == [workers.billing]
        assert rescue["given_back_job_ids"] == [workers.billing]
        assert rescue["held_for_approval"] == []
        # Nothing held back: no person is asked.
        assert run.task_states["approve_mass_rescue"] == "skipped"
        assert run.task_states["rescue_approved"] == "skipped"
        workers.wait_rescued()
        assert gw_db.jobs()[workers.reports]["locked_by"] == workers.survivor_id
        assert workers.doomed_id not in gw_db.heartbeats()

        again = run_example("graphile_worker_rescue", {})
        assert again.state == "success"
        assert again.xcom["rescue"]["unlocked_job_ids"] == []
        assert workers.survivor.running()
