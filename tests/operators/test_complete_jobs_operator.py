"""GraphileWorkerCompleteJobsOperator in real DAG runs, on every pinned version."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from airflow_graphile.exceptions import GraphileWorkerFatalError, GraphileWorkerInputError
from airflow_graphile.operators import GraphileWorkerCompleteJobsOperator
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import make_selection_of_jobs, snapshot


@pytest.mark.parametrize("style", ["native", "text"])
def test_completes_and_reports_in_xcom(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult], style: str
) -> None:
    s = make_selection_of_jobs(gw_db)
    missing = s.untouched + 100
    ids = [s.regular1, s.locked, missing]

    result = run_dag(f"gw_test_complete_{style}", {"conn_id": gw_db.conn_id, "job_ids": ids})

    assert result.state == "success"
    xcom = result.xcom["complete"]
    assert xcom["requested"] == ids
    assert xcom["affected"] == [s.regular1]
    assert [(i["id"], i["reason"]) for i in xcom["skipped"]] == [
        (s.locked, "locked"),
        (missing, "unknown"),
    ]
    assert xcom["skipped"][0]["locked_by"] == "test"
    assert s.regular1 not in gw_db.jobs()


def test_ids_from_an_upstream_xcom(gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]) -> None:
    s = make_selection_of_jobs(gw_db)
    result = run_dag("gw_test_ids_from_xcom", {"conn_id": gw_db.conn_id, "job_ids": [s.regular2]})
    assert result.state == "success"
    assert result.xcom["complete"]["affected"] == [s.regular2]
    assert s.regular2 not in gw_db.jobs()


def test_templated_dry_run_changes_nothing(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "job_ids": [s.regular1, s.locked], "dry_run": True}
    result = run_dag("gw_test_complete_text", conf)
    assert result.state == "success"
    assert result.xcom["complete"]["dry_run"] is True
    assert result.xcom["complete"]["affected"] == [s.regular1]
    assert snapshot(gw_db) == before


def test_bad_input_fails_the_task_once_and_changes_nothing(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    result = run_dag(
        "gw_test_complete_native", {"conn_id": gw_db.conn_id, "job_ids": [s.regular1, -3]}
    )
    assert result.state == "failed"
    assert result.task_states["complete"] == "failed"
    assert result.tries["complete"] == 1  # no retry: bad input stays bad
    assert snapshot(gw_db) == before


def test_empty_list_is_a_logged_no_op(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    result = run_dag("gw_test_complete_text", {"conn_id": gw_db.conn_id, "job_ids": []})
    assert result.state == "success"
    assert result.xcom["complete"]["requested"] == []
    assert snapshot(gw_db) == before


@pytest.mark.parametrize("bad", ["[1, 'x']", "[0]", "[1, 1]", "{1}", "1.5"])
def test_error_names_the_bad_value(gw_db: GraphileDB, bad: str) -> None:
    make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match="job_ids"):
        # Literal arguments are checked when the DAG is parsed, templated ones at run.
        GraphileWorkerCompleteJobsOperator(
            task_id="t", job_ids=bad, graphile_worker_conn_id=gw_db.conn_id
        ).execute({})  # type: ignore[arg-type]
    assert snapshot(gw_db) == before


def test_a_large_id_list_keeps_the_xcom_small_unless_all_are_asked_for(
    gw_db: GraphileDB,
) -> None:
    """XCom is a metadata-database row: counts, the first 1,000 ids of each kind."""
    ids = list(range(1, 50_001))  # no such jobs: every id is skipped as unknown
    sample = GraphileWorkerCompleteJobsOperator(
        task_id="t", graphile_worker_conn_id=gw_db.conn_id, job_ids=ids
    ).execute({})  # type: ignore[arg-type]
    assert (sample["requested_count"], sample["affected_count"], sample["skipped_count"]) == (
        50_000,
        0,
        50_000,
    )
    assert sample["skipped_by_reason"] == {"unknown": 50_000}
    assert len(sample["requested"]) == len(sample["skipped"]) == 1000
    assert sample["ids_complete"] is False
    assert len(json.dumps(sample)) < 100_000
    full = GraphileWorkerCompleteJobsOperator(
        task_id="t", graphile_worker_conn_id=gw_db.conn_id, job_ids=ids, return_ids="all"
    ).execute({})  # type: ignore[arg-type]
    assert len(full["skipped"]) == 50_000 and full["ids_complete"] is True
    with pytest.raises(GraphileWorkerInputError, match=r"^return_ids: "):
        GraphileWorkerCompleteJobsOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, job_ids=ids, return_ids="some"
        ).execute({})  # type: ignore[arg-type]


def test_fail_if_nothing_changed_turns_a_skipped_run_red(gw_db: GraphileDB) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)

    def operator(**kwargs: object) -> GraphileWorkerCompleteJobsOperator:
        return GraphileWorkerCompleteJobsOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, **kwargs
        )

    with pytest.raises(GraphileWorkerFatalError, match="none of the 1 job"):
        operator(job_ids=[s.locked], fail_if_nothing_changed=True).execute({})  # type: ignore[arg-type]
    with pytest.raises(GraphileWorkerFatalError, match="none was changed"):
        operator(job_filter={"job_ids": [s.locked]}, fail_if_nothing_changed="True").execute({})  # type: ignore[arg-type]
    assert snapshot(gw_db) == before
    # Without it, or in a dry run, the same run succeeds and reports the skip.
    assert operator(job_ids=[s.locked]).execute({})["skipped_count"] == 1  # type: ignore[arg-type]
    dry = operator(job_ids=[s.locked], fail_if_nothing_changed=True, dry_run=True)
    assert dry.execute({})["affected"] == []  # type: ignore[arg-type]
