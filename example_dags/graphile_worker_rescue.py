"""Rescue the jobs of dead Graphile Worker workers seconds after they die - never a live one's.

A worker killed mid-job (kill -9, OOM kill, a lost machine) keeps its job and queue locks,
and Graphile Worker frees them only after 4 hours. This DAG runs only when a worker is
dead - nothing runs while every worker is healthy:

1. the triggerer watches the worker plugin's leases and heartbeats (never the jobs
   table) and updates the ``graphile_worker_dead_lockers`` asset when a locker dies;
2. ``rescue`` judges every locker again, holding its lease, and for the dead ones
   unlocks their jobs and queues, gives back the attempt the crash used, and
   permanently fails a job whose worker died under it ``MAX_CRASHES`` times in a row;
3. when more than ``MAX_WORKERS`` lockers are dead at once (more likely the heartbeats
   stopped, e.g. a database failover), ``rescue`` changes nothing and a person is asked
   (Airflow's Required Actions) with the evidence per locker; no answer within
   ``APPROVAL_TIMEOUT`` means nothing is unlocked. Lockers still dead are reported
   again after ``REPORT_AGAIN_AFTER``, so a rejected approval is asked again then.

Needs airflow-graphile-heartbeat >= 0.2 in every worker (``worker-plugin/``): it holds a
lease per locker and beats every second. A worker is dead when its lease is free (no
session of its process is left) and it has not beaten for ``GRACE``; a busy or paused
worker keeps its lease. Without a triggerer, use ``graphile_worker_unlock_crashed``
(a sensor every minute) instead.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_graphile.operators import GraphileWorkerRescueDeadWorkersOperator
from airflow_graphile.triggers.dead_lockers import GraphileWorkerDeadLockersTrigger

# [START rescue_settings]
CONN_ID = "graphile_worker_default"  # the database Graphile Worker uses
HEARTBEAT_TABLE = "public.graphile_worker_heartbeats"  # where the plugin beats
GRACE = timedelta(seconds=3)  # lease free and silent this long = dead
MAX_WORKERS = 3  # more dead at once than this: ask a person
MAX_CRASHES = 3  # a job whose worker died under it this often is failed, not rerun
APPROVAL_TIMEOUT = timedelta(minutes=30)  # then "Reject": nothing is unlocked
# Lockers still dead this long after the watcher reported them are reported again: a
# rejected (or unanswered) approval is asked again, a failed rescue is retried.
REPORT_AGAIN_AFTER = APPROVAL_TIMEOUT
# [END rescue_settings]

dead_lockers = Asset(
    name="graphile_worker_dead_lockers",
    watchers=[
        AssetWatcher(
            name="graphile_worker_dead_lockers_watcher",
            trigger=GraphileWorkerDeadLockersTrigger(
                graphile_worker_conn_id=CONN_ID,
                heartbeat_table=HEARTBEAT_TABLE,
                grace_seconds=GRACE.total_seconds(),
                refire_after_seconds=REPORT_AGAIN_AFTER.total_seconds(),
            ),
        )
    ],
)
RESCUE = {
    "graphile_worker_conn_id": CONN_ID,
    "heartbeat_table": HEARTBEAT_TABLE,
    "grace": GRACE,
    "max_crashes": MAX_CRASHES,
}

with DAG(
    dag_id="graphile_worker_rescue",
    description="Unlock dead Graphile Worker workers' jobs, seconds after they die",
    schedule=[dead_lockers],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["graphile-worker"],
) as dag:
    # [START rescue_tasks]
    rescue = GraphileWorkerRescueDeadWorkersOperator(
        task_id="rescue", max_workers=MAX_WORKERS, **RESCUE
    )

    @task.short_circuit
    def too_many_dead(report: dict) -> bool:
        """Go on to the approval only when the rescue held lockers back."""
        return bool(report["held_for_approval"])

    approve = ApprovalOperator(
        task_id="approve_mass_rescue",
        subject="{{ ti.xcom_pull('rescue')['held_for_approval'] | length }} Graphile Worker "
        "lockers look dead at once: unlock their jobs?",
        body=(
            "More workers than expected look dead at the same time. That can be a real mass "
            "crash, or heartbeats that stopped (database failover, network partition). "
            "Approving unlocks the jobs of those still dead when the rescue runs; if any is "
            "alive, its jobs run twice.\n\n| locker | evidence | why |\n|---|---|---|\n"
            "{% for v in ti.xcom_pull('rescue')['held_for_approval'] %}"
            "| {{ v.locker_id }} | {{ v.evidence }} | {{ v.reason }} |\n{% endfor %}"
        ),
        defaults="Reject",  # no answer in time: nothing is unlocked
        response_timeout=APPROVAL_TIMEOUT,
    )
    rescue_approved = GraphileWorkerRescueDeadWorkersOperator(
        task_id="rescue_approved",
        locker_ids="{{ ti.xcom_pull('rescue')['held_for_approval']"
        " | map(attribute='locker_id') | list | tojson }}",
        **RESCUE,
    )
    too_many_dead(rescue.output) >> approve >> rescue_approved
    # [END rescue_tasks]
