"""example_dags/graphile_worker_admin.py in a real Airflow, triggered through the REST API v2."""

from __future__ import annotations

from typing import Any

import pytest

from devkit.graphile import GraphileDB
from devkit.selection import make_selection_of_jobs, snapshot
from devkit.standalone import AirflowAPI

pytestmark = pytest.mark.e2e

DAG_ID = "graphile_worker_admin"
ACTIONS = ["complete", "permanently_fail", "reschedule", "force_unlock", "cleanup"]
RUN_TIMEOUT = 120


def test_complete_applies_and_reports_the_locked_job_as_skipped(
    airflow: AirflowAPI, gw: GraphileDB
) -> None:
    s = make_selection_of_jobs(gw)
    airflow.set_paused(DAG_ID, False)
    conf = {"action": "complete", "job_ids": [s.regular1, s.locked], "dry_run": False}

    response = airflow.trigger(DAG_ID, conf)

    assert response.status_code == 200, response.text
    run_id = response.json()["dag_run_id"]
    run = airflow.wait_run(DAG_ID, run_id, RUN_TIMEOUT)
    assert run["state"] == "success", airflow.explain(DAG_ID, run_id)
    states = airflow.task_states(DAG_ID, run_id)
    assert {task: states[task] for task in ACTIONS} == {
        task: "success" if task == "complete" else "skipped" for task in ACTIONS
    }
    xcom = airflow.xcom(DAG_ID, run_id, "complete")
    assert xcom["dry_run"] is False
    assert sorted(xcom["requested"]) == sorted([s.regular1, s.locked])
    assert xcom["affected"] == [s.regular1]
    assert [(item["id"], item["reason"]) for item in xcom["skipped"]] == [(s.locked, "locked")]
    jobs = gw.jobs()
    assert s.regular1 not in jobs
    assert jobs[s.locked]["locked_by"] == "test"  # a locked job is left alone
    assert {s.failed, s.regular2, s.untouched} <= jobs.keys()


@pytest.mark.parametrize(
    ("conf", "param"),
    [
        ({"action": "complete", "job_ids": [0]}, "job_ids"),
        ({"action": "reschedule", "priority": 40000}, "priority"),
        ({"action": "drop"}, "action"),
    ],
    ids=["job_ids=[0]", "priority=40000", "action=drop"],
)
def test_the_api_refuses_a_bad_conf(
    airflow: AirflowAPI, gw: GraphileDB, conf: dict[str, Any], param: str
) -> None:
    s = make_selection_of_jobs(gw)
    before = snapshot(gw)
    runs_before = {run["dag_run_id"] for run in airflow.runs(DAG_ID)}

    response = airflow.trigger(DAG_ID, {"job_ids": [s.regular1], "dry_run": False, **conf})

    assert response.status_code == 400, response.text
    detail = str(response.json()["detail"])
    assert f"param {param}" in detail, detail
    assert {run["dag_run_id"] for run in airflow.runs(DAG_ID)} == runs_before
    assert snapshot(gw) == before
