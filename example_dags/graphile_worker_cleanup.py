"""Clean Graphile Worker's tables every day, the way ``graphile-worker --cleanup`` does.

Deletes permanently failed jobs (nobody will retry them) once they have been failed for
``KEEP_FAILED_FOR`` (a week: time to look at them first), and named queues no job uses.
Task identifiers no job uses are deleted too, but only when that is safe: workers cache
task ids, so this step is skipped, with the reason in the log, while any worker is alive
by its heartbeat (see the ``airflow-graphile-heartbeat`` worker plugin) or any job is
locked, unless ``KEEP_TASK_IDENTIFIERS`` lists every identifier your workers use.
The task's log and XCom give the rows each step removed.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from airflow_graphile.heartbeats import PostgresHeartbeatSource
from airflow_graphile.operators import GraphileWorkerCleanupOperator

# [START cleanup_settings]
CONN_ID = "graphile_worker_default"  # the database Graphile Worker uses
KEEP_FAILED_FOR = timedelta(days=7)  # permanently failed jobs stay this long after failing
KEEP_TASK_IDENTIFIERS: list[str] = []  # e.g. ["send_email", "charge_card"]: GC is then safe
DEAD_AFTER = timedelta(seconds=60)  # a heartbeat younger than this means a live worker
# [END cleanup_settings]

with DAG(
    dag_id="graphile_worker_cleanup",
    description="Delete failed jobs and unused queues/task identifiers from Graphile Worker",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["graphile-worker"],
    params={
        "keep_failed_for_hours": Param(
            KEEP_FAILED_FOR.total_seconds() / 3600,
            type="number",
            minimum=0,
            title="Keep permanently failed jobs for (hours)",
        ),
    },
) as dag:
    # [START cleanup_task]
    GraphileWorkerCleanupOperator(
        task_id="cleanup",
        graphile_worker_conn_id=CONN_ID,
        tasks=["DELETE_PERMAFAILED_JOBS", "GC_TASK_IDENTIFIERS", "GC_JOB_QUEUES"],
        task_identifiers_to_keep=KEEP_TASK_IDENTIFIERS,
        permafailed_older_than="{{ params.keep_failed_for_hours * 3600 }}",
        heartbeat_source=PostgresHeartbeatSource(CONN_ID),
        dead_after=DEAD_AFTER,
    )
    # [END cleanup_task]
