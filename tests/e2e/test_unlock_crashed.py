"""example_dags/graphile_worker_unlock_crashed.py in a real Airflow, with its deferrable sensor
waiting in the real triggerer, against two real workers, one of them killed."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from psycopg import sql

from devkit.crash import start_two_workers
from devkit.graphile import GraphileDB
from devkit.process import log
from devkit.standalone import FINISHED_RUN_STATES, AirflowAPI

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

DAG_ID = "graphile_worker_unlock_crashed"
SENSOR = "find_stuck_locks"
BEAT_MS = 500
DEAD_AFTER = 3
# stuck_after = the dead lock's age at trigger time + MARGIN. The sensor's first poke, a
# few seconds after the trigger, must find nothing (so the sensor defers: MARGIN is the
# time it may take to start). The trigger then queries at once and every 15 s (the
# sensor's poke_interval): its second query, at the latest, sees a lock older than
# stuck_after, well within the 45 s the sensor waits in the triggerer. On a busy machine
# the sensor has taken 14-19 s to start, hence 30.
MARGIN = 30
RUN_TIMEOUT = 170  # the DAG's dagrun_timeout is 3 minutes


def _lock_age(db: GraphileDB, job: int) -> float:
    rows = db.query(
        sql.SQL("select extract(epoch from now() - locked_at) as age from {} where id = %s").format(
            sql.Identifier(db.schema, "_private_jobs")
        ),
        [job],
    )
    return float(rows[0]["age"])


def test_dead_worker_rescued_through_the_triggerer(airflow: AirflowAPI, gw: GraphileDB) -> None:
    workers = start_two_workers(gw, heartbeat_interval_ms=BEAT_MS)
    workers.doomed.kill()
    survivor, dead_id, live_id = workers.survivor, workers.doomed_id, workers.survivor_id
    billing, reports = workers.billing, workers.reports
    with survivor:
        assert gw.queues()["billing"]["locked_by"] == dead_id
        stuck_after = math.ceil(_lock_age(gw, billing)) + MARGIN
        conf = {"stuck_after_seconds": stuck_after, "dead_after_seconds": DEAD_AFTER}
        conf["max_workers"] = 3

        # The DAG runs every minute once unpaused. Trigger while it is paused (the run
        # waits, queued), unpause, and fail any scheduled run: with max_active_runs=1 it
        # would hold ours back for the 45 s of its sensor's timeout.
        response = airflow.trigger(DAG_ID, conf)
        assert response.status_code == 200, response.text
        run_id = response.json()["dag_run_id"]
        triggered = time.monotonic()
        sensor_states: list[str | None] = []
        others_failed: list[str] = []

        def fail_other_runs() -> None:
            for run in airflow.runs(DAG_ID):
                if run["dag_run_id"] != run_id and run["state"] not in FINISHED_RUN_STATES:
                    airflow.ok(
                        "PATCH",
                        f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}",
                        json={"state": "failed"},
                    )
                    others_failed.append(run["dag_run_id"])

        def on_poll(run: dict[str, Any]) -> None:
            fail_other_runs()
            state = airflow.task_states(DAG_ID, run_id).get(SENSOR)
            if not sensor_states or sensor_states[-1] != state:
                sensor_states.append(state)
                log(f"{time.monotonic() - triggered:5.1f} s: {SENSOR} {state}")

        airflow.set_paused(DAG_ID, False)
        try:
            run = airflow.wait_run(DAG_ID, run_id, RUN_TIMEOUT, on_poll=on_poll, interval=0.3)
        finally:
            airflow.set_paused(DAG_ID, True)
            fail_other_runs()
        log(f"run finished after {time.monotonic() - triggered:.1f} s; failed {others_failed}")

        assert run["state"] == "success", airflow.explain(DAG_ID, run_id)
        assert "deferred" in sensor_states, sensor_states
        found = airflow.xcom(DAG_ID, run_id, SENSOR)
        assert dead_id in [locker["locker_id"] for locker in found["lockers"]]
        check = airflow.xcom(DAG_ID, run_id, "check_heartbeats")
        assert check["dead_locker_ids"] == [dead_id]
        assert live_id not in check["dead_locker_ids"]
        pushed = airflow.xcom(DAG_ID, run_id, "check_heartbeats", key="dead_locker_ids")
        assert pushed == [dead_id]
        unlock = airflow.xcom(DAG_ID, run_id, "force_unlock_dead_workers")
        assert unlock["requested"] == [dead_id]
        assert unlock["unlocked_job_ids"] == [billing]
        assert unlock["unlocked_queue_names"] == ["billing"]
        report = airflow.xcom(DAG_ID, run_id, "report")
        assert report["unlocked_locker_ids"] == [dead_id]

        workers.wait_rescued()  # the survivor runs the rescued job and the one behind it
        assert gw.jobs()[reports]["locked_by"] == live_id  # the live lock is untouched
        assert gw.queues()["reports"]["locked_by"] == live_id
        assert survivor.running()
