"""Graphile Worker housekeeping with airflow-graphile: one task per admin function.

Every input comes from the run's conf, for example::

    {
      "complete_job_ids": [1, 2],
      "fail_job_ids": [3],
      "fail_reason": "Order cancelled",
      "reschedule_job_ids": [4],
      "reschedule_run_at": "2026-01-31T18:00:00+00:00",
      "reschedule_attempts": 0,
      "crashed_worker_ids": ["pool-0123456789abcdef01"]
    }

An empty list makes its task a logged no-op. Each task returns a JSON report to XCom:
what was asked for, what was changed, and why anything was skipped.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_graphile.operators import (
    GraphileWorkerCleanupOperator,
    GraphileWorkerCompleteJobsOperator,
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerPermanentlyFailJobsOperator,
    GraphileWorkerRescheduleJobsOperator,
)


def job_ids(description: str) -> Param:
    return Param([], type="array", items={"type": "integer", "minimum": 1}, description=description)


with DAG(
    "graphile_worker_demo",
    description="Complete, fail, reschedule and unlock Graphile Worker jobs, then clean up",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["graphile-worker"],
    # Templates render to Python objects, so "{{ params.complete_job_ids }}" is a list.
    render_template_as_native_obj=True,
    params={
        "complete_job_ids": job_ids("Jobs to mark as done (deleted)"),
        "fail_job_ids": job_ids("Jobs to stop retrying"),
        "fail_reason": Param(None, type=["null", "string"], description="Stored as last_error"),
        "reschedule_job_ids": job_ids("Jobs to reschedule"),
        "reschedule_run_at": Param(
            None, type=["null", "string"], description="New run_at, ISO 8601 with a time zone"
        ),
        "reschedule_attempts": Param(
            None, type=["null", "integer"], minimum=0, description="0 gives all retries back"
        ),
        "crashed_worker_ids": Param(
            [],
            type="array",
            items={"type": "string"},
            description="Pool ids (the jobs' locked_by) of workers known to be dead",
        ),
    },
) as dag:
    complete_jobs = GraphileWorkerCompleteJobsOperator(
        task_id="complete_jobs", job_ids="{{ params.complete_job_ids }}"
    )
    permanently_fail_jobs = GraphileWorkerPermanentlyFailJobsOperator(
        task_id="permanently_fail_jobs",
        job_ids="{{ params.fail_job_ids }}",
        reason="{{ params.fail_reason }}",
    )
    reschedule_jobs = GraphileWorkerRescheduleJobsOperator(
        task_id="reschedule_jobs",
        job_ids="{{ params.reschedule_job_ids }}",
        run_at="{{ params.reschedule_run_at }}",
        attempts="{{ params.reschedule_attempts }}",
    )
    # Only for workers that are really dead: a live worker would keep running its jobs
    # while another worker picks them up again.
    force_unlock_workers = GraphileWorkerForceUnlockWorkersOperator(
        task_id="force_unlock_workers", worker_ids="{{ params.crashed_worker_ids }}"
    )
    # Not GC_TASK_IDENTIFIERS: running workers cache the ids of their task identifiers.
    # If it deletes an identifier no job uses right now, the next add_job re-creates it
    # under a new id, and a running worker never picks up those jobs until it restarts.
    cleanup = GraphileWorkerCleanupOperator(
        task_id="cleanup", tasks=["DELETE_PERMAFAILED_JOBS", "GC_JOB_QUEUES"]
    )

    complete_jobs >> permanently_fail_jobs >> reschedule_jobs >> force_unlock_workers >> cleanup
