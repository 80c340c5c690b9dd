"""DAGs the operator tests run for real: every input comes from the run's conf.

``*_native`` DAGs render templates to Python objects; ``*_text`` DAGs render them to
strings, as most Airflow deployments do, so lists arrive as their text.
"""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, task

from airflow_graphile.operators import (
    GraphileWorkerCleanupOperator,
    GraphileWorkerCompleteJobsOperator,
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerPermanentlyFailJobsOperator,
    GraphileWorkerQueueStatsOperator,
    GraphileWorkerRescheduleJobsOperator,
)
from devkit.dag_runs import make_dag

PARAMS: dict[str, Any] = {
    "conn_id": "graphile_worker_default",
    "dry_run": False,
    "job_ids": [],
    "locker_ids": [],
    "reason": None,
    "run_at": None,
    "priority": None,
    "attempts": None,
    "max_attempts": None,
    "tasks": [],
    "keep": [],
    "filter": {},
    "allow_all": False,
    "batch_size": 2000,
    "thresholds": {},
    "statement_timeout": None,
    # These DAGs test the unlock itself; the liveness check is tested in tests/liveness.
    "skip_liveness_check": True,
}


DAGS: dict[str, DAG] = {}


def _dag(dag_id: str, native: bool) -> DAG:
    retries = {"retries": 2, "retry_delay": pendulum.duration(seconds=1)}
    return make_dag(DAGS, dag_id, PARAMS, native, default_args=retries)


COMMON = {
    "graphile_worker_conn_id": "{{ params.conn_id }}",
    "dry_run": "{{ params.dry_run }}",
}

for style, native in (("native", True), ("text", False)):
    with _dag(f"gw_test_complete_{style}", native):
        GraphileWorkerCompleteJobsOperator(
            task_id="complete", job_ids="{{ params.job_ids }}", **COMMON
        )

    with _dag(f"gw_test_permanently_fail_{style}", native):
        GraphileWorkerPermanentlyFailJobsOperator(
            task_id="permanently_fail",
            job_ids="{{ params.job_ids }}",
            reason="{{ params.reason or '' }}",
            **COMMON,
        )

    with _dag(f"gw_test_reschedule_{style}", native):
        GraphileWorkerRescheduleJobsOperator(
            task_id="reschedule",
            job_ids="{{ params.job_ids }}",
            run_at="{{ params.run_at or '' }}",
            priority="{{ params.priority if params.priority is not none else '' }}",
            attempts="{{ params.attempts if params.attempts is not none else '' }}",
            max_attempts="{{ params.max_attempts if params.max_attempts is not none else '' }}",
            **COMMON,
        )

    with _dag(f"gw_test_force_unlock_{style}", native):
        GraphileWorkerForceUnlockWorkersOperator(
            task_id="force_unlock",
            locker_ids="{{ params.locker_ids }}",
            skip_liveness_check="{{ params.skip_liveness_check }}",
            **COMMON,
        )

    with _dag(f"gw_test_cleanup_{style}", native):
        GraphileWorkerCleanupOperator(
            task_id="cleanup",
            tasks="{{ params.tasks }}",
            task_identifiers_to_keep="{{ params.keep }}",
            **COMMON,
        )


with _dag("gw_test_ids_from_xcom", native=False):

    @task
    def pick_jobs(**context: Any) -> list[int]:
        return list(context["params"]["job_ids"])

    GraphileWorkerCompleteJobsOperator(
        task_id="complete",
        job_ids=pick_jobs(),
        graphile_worker_conn_id="{{ params.conn_id }}",
    )

with _dag("gw_test_bulk_fail", native=True):
    GraphileWorkerPermanentlyFailJobsOperator(
        task_id="bulk_fail",
        job_filter="{{ params.filter }}",
        allow_all="{{ params.allow_all }}",
        batch_size="{{ params.batch_size }}",
        reason="{{ params.reason or '' }}",
        **COMMON,
    )

# Airflow's default rendering: the filter, the thresholds and the timeout arrive as text.
with _dag("gw_test_bulk_fail_text", native=False):
    GraphileWorkerPermanentlyFailJobsOperator(
        task_id="bulk_fail",
        job_filter="{{ params.filter }}",
        batch_size="{{ params.batch_size }}",
        statement_timeout="{{ params.statement_timeout or '' }}",
        **COMMON,
    )

with _dag("gw_test_queue_stats_text", native=False):
    GraphileWorkerQueueStatsOperator(
        task_id="stats", thresholds="{{ params.thresholds }}", **COMMON
    )

with _dag("gw_test_queue_stats", native=True):
    GraphileWorkerQueueStatsOperator(
        task_id="stats", thresholds="{{ params.thresholds }}", **COMMON
    )

# No retries: the on_kill test stops the task once and looks at the server.
with make_dag(DAGS, "gw_test_bulk_fail_once", PARAMS, native=True):
    GraphileWorkerPermanentlyFailJobsOperator(
        task_id="bulk_fail",
        job_filter="{{ params.filter }}",
        batch_size="{{ params.batch_size }}",
        **COMMON,
    )
