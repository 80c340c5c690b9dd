"""Filtered operators and the queue-statistics operator in real DAG runs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.operators import GraphileWorkerCompleteJobsOperator
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import fail_permanently, lock_job, snapshot


def _jobs(db: GraphileDB) -> dict[str, int]:
    jobs = {
        "email_a": db.add_job("send_email", queue="mail"),
        "email_b": db.add_job("send_email", queue="mail"),
        "email_locked": db.add_job("send_email", queue="mail"),
        "charge": db.add_job("charge"),
    }
    lock_job(db, jobs["email_locked"], "pool-x", ago=timedelta(minutes=1))
    return jobs


def test_filter_through_a_dag_run(gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]) -> None:
    jobs = _jobs(gw_db)
    conf = {
        "conn_id": gw_db.conn_id,
        "filter": {"task_identifiers": ["send_email"], "queue_names": ["mail"]},
        "batch_size": 1,
        "reason": "mailbox gone",
    }
    result = run_dag("gw_test_bulk_fail", conf)
    assert result.state == "success"
    xcom = result.xcom["bulk_fail"]
    assert (xcom["matched_at_start"], xcom["changed"], xcom["skipped_locked"]) == (3, 2, 1)
    assert xcom["batches"] == 4
    after = gw_db.jobs()
    assert after[jobs["email_a"]]["last_error"] == "mailbox gone"
    assert after[jobs["charge"]]["attempts"] == 0
    assert after[jobs["email_locked"]]["attempts"] == 0


def test_dry_run_filter_reports_a_sample(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    jobs = _jobs(gw_db)
    before = snapshot(gw_db)
    conf = {"conn_id": gw_db.conn_id, "filter": {"states": ["ready"]}, "dry_run": True}
    xcom = run_dag("gw_test_bulk_fail", conf).xcom["bulk_fail"]
    assert xcom["dry_run"] is True and xcom["matched_at_start"] == 3
    assert [row["id"] for row in xcom["sample"]] == [
        jobs["email_a"],
        jobs["email_b"],
        jobs["charge"],
    ]
    assert snapshot(gw_db) == before


def test_empty_filter_fails_the_task_unless_allowed(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    _jobs(gw_db)
    before = snapshot(gw_db)
    refused = run_dag("gw_test_bulk_fail", {"conn_id": gw_db.conn_id, "filter": {}})
    assert refused.task_states["bulk_fail"] == "failed"
    assert snapshot(gw_db) == before
    allowed = run_dag(
        "gw_test_bulk_fail", {"conn_id": gw_db.conn_id, "filter": {}, "allow_all": True}
    )
    assert allowed.xcom["bulk_fail"]["changed"] == 3


def test_ids_and_filter_together_are_refused(gw_db: GraphileDB) -> None:
    operator = GraphileWorkerCompleteJobsOperator(
        task_id="t",
        graphile_worker_conn_id=gw_db.conn_id,
        job_ids=[1],
        job_filter={"states": ["ready"]},
    )
    with pytest.raises(GraphileWorkerInputError, match="either job_ids or job_filter"):
        operator.execute({})  # type: ignore[arg-type]


def test_stats_and_thresholds(gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]) -> None:
    _jobs(gw_db)
    fail_permanently(gw_db, gw_db.add_job("charge"))
    calm = run_dag("gw_test_queue_stats", {"conn_id": gw_db.conn_id, "thresholds": {"failed": 5}})
    assert calm.state == "success"
    stats = calm.xcom["stats"]
    assert stats["by_state"]["ready"] == 3 and stats["by_state"]["locked"] == 1
    assert stats["by_queue"]["mail"]["ready"] == 2

    alarm = run_dag(
        "gw_test_queue_stats",
        {"conn_id": gw_db.conn_id, "thresholds": {"failed": 0, "oldest_lock_age_seconds": 30}},
    )
    assert alarm.task_states["stats"] == "failed"
    assert alarm.tries["stats"] == 1

    unknown = run_dag("gw_test_queue_stats", {"conn_id": gw_db.conn_id, "thresholds": {"x": 1}})
    assert unknown.task_states["stats"] == "failed"


def test_filter_and_thresholds_rendered_as_text(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    """Airflow's default rendering turns dicts into their text; both are read back."""
    jobs = _jobs(gw_db)
    conf = {"conn_id": gw_db.conn_id, "filter": {"task_identifiers": ["send_email"]}}
    result = run_dag("gw_test_bulk_fail_text", conf)
    assert result.state == "success", result
    assert result.xcom["bulk_fail"]["changed"] == 2
    assert gw_db.jobs()[jobs["charge"]]["attempts"] == 0

    alarm = run_dag(
        "gw_test_queue_stats_text", {"conn_id": gw_db.conn_id, "thresholds": {"failed": 0}}
    )
    assert alarm.task_states["stats"] == "failed" and alarm.tries["stats"] == 1
    calm = run_dag(
        "gw_test_queue_stats_text", {"conn_id": gw_db.conn_id, "thresholds": {"failed": 5}}
    )
    assert calm.state == "success"


def test_a_statement_timeout_fails_the_task_as_retryable(
    gw_db: GraphileDB, run_dag: Callable[..., DagRunResult]
) -> None:
    for _ in range(30):
        gw_db.add_job("slow_match")
    gw_db.query(
        sql.SQL("update {} set last_error = repeat('abcde fghij ', 20)").format(
            sql.Identifier(gw_db.schema, "_private_jobs")
        )
    )
    before = snapshot(gw_db)
    conf = {
        "conn_id": gw_db.conn_id,
        "filter": {"last_error_pattern": r"(.{1,50}){1,50}\1b"},
        "statement_timeout": 0.3,
    }
    result = run_dag("gw_test_bulk_fail_text", conf)
    assert result.task_states["bulk_fail"] == "failed"
    assert result.tries["bulk_fail"] == 3  # retries=2: a timeout is worth another try
    assert snapshot(gw_db) == before


def test_thresholds_per_task_identifier_and_queue(gw_db: GraphileDB) -> None:
    from airflow_graphile.operators import GraphileWorkerQueueStatsOperator
    from airflow_graphile.operators.queue_stats import GraphileWorkerThresholdError

    gw_db.add_job("send_email")
    gw_db.add_job("send_email", queue="billing")

    def stats(thresholds: object) -> object:
        return GraphileWorkerQueueStatsOperator(
            task_id="t", graphile_worker_conn_id=gw_db.conn_id, thresholds=thresholds
        ).execute({})  # type: ignore[arg-type]

    stats({"by_task": {"send_email": {"ready": 2}}, "by_queue": {"billing": {"total": 1}}})
    with pytest.raises(GraphileWorkerThresholdError, match=r"by_task\[send_email\]\.ready is 2"):
        stats('{"by_task": {"send_email": {"ready": 1}}}')
    with pytest.raises(GraphileWorkerThresholdError, match=r"by_queue\[billing\]\.total is 1"):
        stats({"by_queue": {"billing": {"total": 0}}, "by_task": {"unknown_task": {"ready": 0}}})
    with pytest.raises(GraphileWorkerInputError, match=r"by_task\.send_email"):
        stats({"by_task": {"send_email": {"oldest_ready_age_seconds": 1}}})
