"""Permanently fail and reschedule operators in real DAG runs, on every pinned version."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.operators import (
    GraphileWorkerPermanentlyFailJobsOperator,
    GraphileWorkerRescheduleJobsOperator,
)
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import make_selection_of_jobs, snapshot


@pytest.mark.parametrize("style", ["native", "text"])
def test_permanently_fail_with_a_templated_reason(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult], style: str
) -> None:
    s = make_selection_of_jobs(gw_db)
    conf = {
        "conn_id": gw_db.conn_id,
        "job_ids": [s.regular1, s.locked],
        "reason": "bounced: mailbox gone",
    }
    result = run_dag(f"gw_test_permanently_fail_{style}", conf)

    assert result.state == "success"
    xcom = result.xcom["permanently_fail"]
    assert xcom["affected"] == [s.regular1]
    assert xcom["skipped"][0]["id"] == s.locked
    job = gw_db.jobs()[s.regular1]
    assert job["attempts"] == job["max_attempts"]
    assert job["last_error"] == "bounced: mailbox gone"


def test_permanently_fail_without_reason_uses_graphile_default(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    s = make_selection_of_jobs(gw_db)
    result = run_dag(
        "gw_test_permanently_fail_text", {"conn_id": gw_db.conn_id, "job_ids": [s.regular2]}
    )
    assert result.state == "success"
    assert gw_db.jobs()[s.regular2]["last_error"] == "Manually marked as failed"


@pytest.mark.parametrize("style", ["native", "text"])
def test_reschedule_from_form_like_text(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult], style: str
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = gw_db.jobs()
    conf = {
        "conn_id": gw_db.conn_id,
        "job_ids": [s.failed, s.locked],
        "run_at": "2030-01-01T22:00:00Z",
        "priority": 7,
        "attempts": 0,
    }
    result = run_dag(f"gw_test_reschedule_{style}", conf)

    assert result.state == "success"
    assert result.xcom["reschedule"]["affected"] == [s.failed]
    job = gw_db.jobs()[s.failed]
    assert job["run_at"] == datetime(2030, 1, 1, 22, 0, tzinfo=timezone.utc)
    assert (job["priority"], job["attempts"]) == (7, 0)
    assert job["max_attempts"] == before[s.failed]["max_attempts"]
    assert gw_db.jobs()[s.locked] == before[s.locked]


def test_reschedule_with_a_naive_time_fails_and_changes_nothing(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "job_ids": [s.regular1], "run_at": "2030-01-01T22:00:00"}
    result = run_dag("gw_test_reschedule_text", conf)
    assert (result.state, result.tries["reschedule"]) == ("failed", 1)
    assert snapshot(gw_db) == before


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"run_at": "soon"}, "cannot parse 'soon'"),
        ({"priority": "40000"}, "priority: 40000 is out of range"),
        ({"attempts": "-2"}, "attempts: -2 is out of range"),
        ({"max_attempts": "0"}, "max_attempts: 0 is out of range"),
        ({"attempts": 9, "max_attempts": 3}, "attempts: 9 is more than max_attempts 3"),
        ({}, "nothing to change"),
        ({"priority": 1, "job_ids": "[1, 1]"}, "duplicate values 1"),
    ],
)
def test_reschedule_errors_name_the_value(
    gw_db: GraphileDB, arguments: dict[str, Any], named: str
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    arguments = {"job_ids": [s.regular1], **arguments}
    with pytest.raises(GraphileWorkerInputError) as error:
        # Literal arguments are checked when the DAG is parsed, templated ones at run.
        GraphileWorkerRescheduleJobsOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, **arguments
        ).execute({})  # type: ignore[arg-type]
    assert named in str(error.value)
    assert snapshot(gw_db) == before


def test_permanently_fail_bad_ids_change_nothing(gw_db: GraphileDB) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match="'abc'"):
        # Literal arguments are checked when the DAG is parsed, templated ones at run.
        GraphileWorkerPermanentlyFailJobsOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, job_ids=[s.regular1, "abc"]
        ).execute({})  # type: ignore[arg-type]
    assert snapshot(gw_db) == before
