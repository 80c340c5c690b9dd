"""Run one Graphile Worker admin action by hand, from the Airflow UI's trigger form.

Trigger this DAG with a configuration ("Trigger DAG" in the UI, or the REST API): pick
an action, fill in the fields it needs, and leave "Dry run" on to see first what would
change. The form refuses values of the wrong type or range before any task runs; the
operators check the rest (a reschedule with nothing to change, a time without a time
zone, ...) and fail without touching the database. The result, what changed and what
was skipped and why, is in the task's log and XCom.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_graphile.operators import (
    GraphileWorkerCleanupOperator,
    GraphileWorkerCompleteJobsOperator,
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerPermanentlyFailJobsOperator,
    GraphileWorkerRescheduleJobsOperator,
)

CONN_ID = "graphile_worker_default"
ACTIONS = ["complete", "permanently_fail", "reschedule", "force_unlock", "cleanup"]
JOB_ID = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
SMALLINT_MAX = 2**15 - 1

with DAG(
    dag_id="graphile_worker_admin",
    description="Complete, fail, reschedule or unlock Graphile Worker jobs, or clean up",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    render_template_as_native_obj=True,
    tags=["graphile-worker"],
    params={
        "action": Param(
            "complete",
            type="string",
            enum=ACTIONS,
            title="Action",
            description="What to do. complete: delete the jobs as done. permanently_fail: "
            "stop them being retried. reschedule: change when/how they run. force_unlock: "
            "release the locks of crashed workers. cleanup: delete failed jobs and unused "
            "queues/task names.",
        ),
        "job_ids": Param(
            [],
            type="array",
            items=JOB_ID,
            uniqueItems=True,
            title="Job ids",
            description="For complete, permanently_fail and reschedule: the ids of the jobs, "
            "as a list such as [12, 15]. Jobs a worker is running right now are skipped.",
        ),
        "locker_ids": Param(
            [],
            type="array",
            items={"type": "string", "minLength": 1},
            uniqueItems=True,
            title="Locker ids",
            description="For force_unlock: one per line, the ids in the jobs' locked_by "
            "column: the pool id (pool-...) since Graphile Worker 0.17, the worker id "
            "(worker-...) on 0.16. ONLY for workers that are dead: a live worker's jobs "
            "would run twice.",
        ),
        "skip_liveness_check": Param(
            False,
            type="boolean",
            title="Skip the liveness check (DANGER)",
            description="For force_unlock: off, each locker is judged by the liveness rule in "
            "the unlock's own transaction (its lease and heartbeat) and a live or silent one is "
            "left alone. On: unlock whatever the rule says, for a worker you know is dead and "
            "that writes no heartbeats.",
        ),
        "reason": Param(
            None,
            type=["null", "string"],
            title="Reason",
            description="For permanently_fail: stored as the jobs' last error. Empty: "
            "'Manually marked as failed'.",
        ),
        "run_at": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Run at",
            description="For reschedule: when the jobs should run, with a time zone, "
            "e.g. 2026-12-01T22:00:00+00:00. Empty: unchanged.",
        ),
        "priority": Param(
            None,
            type=["null", "integer"],
            minimum=-(2**15),
            maximum=SMALLINT_MAX,
            title="Priority",
            description="For reschedule: lower runs first. Empty: unchanged.",
        ),
        "attempts": Param(
            None,
            type=["null", "integer"],
            minimum=0,
            maximum=SMALLINT_MAX,
            title="Attempts",
            description="For reschedule: attempts used so far; 0 gives a failed job all "
            "its retries back. Empty: unchanged.",
        ),
        "max_attempts": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            maximum=SMALLINT_MAX,
            title="Max attempts",
            description="For reschedule: attempts allowed in all. Empty: unchanged.",
        ),
        "cleanup_tasks": Param(
            ["DELETE_PERMAFAILED_JOBS", "GC_JOB_QUEUES"],
            type="array",
            items={
                "type": "string",
                "enum": ["DELETE_PERMAFAILED_JOBS", "GC_TASK_IDENTIFIERS", "GC_JOB_QUEUES"],
            },
            uniqueItems=True,
            title="Cleanup steps",
            description="For cleanup. GC_TASK_IDENTIFIERS is unsafe while any worker runs.",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description="On: change nothing, only report what would change. Turn off to apply.",
        ),
    },
) as dag:
    # [START admin_tasks]
    @task.branch
    def choose_action(**context: object) -> str:
        """Run only the task of the chosen action."""
        params = context["params"]
        return str(params["action"])  # type: ignore[index]

    common = {"graphile_worker_conn_id": CONN_ID, "dry_run": "{{ params.dry_run }}"}
    choose_action() >> [
        GraphileWorkerCompleteJobsOperator(
            task_id="complete", job_ids="{{ params.job_ids }}", **common
        ),
        GraphileWorkerPermanentlyFailJobsOperator(
            task_id="permanently_fail",
            job_ids="{{ params.job_ids }}",
            reason="{{ params.reason }}",
            **common,
        ),
        GraphileWorkerRescheduleJobsOperator(
            task_id="reschedule",
            job_ids="{{ params.job_ids }}",
            run_at="{{ params.run_at }}",
            priority="{{ params.priority }}",
            attempts="{{ params.attempts }}",
            max_attempts="{{ params.max_attempts }}",
            **common,
        ),
        GraphileWorkerForceUnlockWorkersOperator(
            task_id="force_unlock",
            locker_ids="{{ params.locker_ids }}",
            skip_liveness_check="{{ params.skip_liveness_check }}",
            **common,
        ),
        GraphileWorkerCleanupOperator(
            task_id="cleanup", tasks="{{ params.cleanup_tasks }}", **common
        ),
    ]
    # [END admin_tasks]
