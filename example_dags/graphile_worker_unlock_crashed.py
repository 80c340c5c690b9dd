"""Rescue the jobs of crashed Graphile Worker workers in minutes, never a live worker's.

A worker killed mid-job (OOM kill, node drain, kill -9) keeps its job and queue locks,
and Graphile Worker frees them only after 4 hours. Every minute this DAG:

1. waits (in the triggerer) for locks held longer than ``stuck_after_seconds``;
2. asks the heartbeat table which of their holders are dead;
3. force-unlocks only those the liveness rule finds dead in the unlock's own
   transaction (lease free and silent, or without a lease a heartbeat older than
   ``dead_after``), at most ``max_workers`` of them in one run, giving back the attempt
   the crash used;
4. reports what it released.

Needs the ``airflow-graphile-heartbeat`` plugin in every worker (``worker-plugin/`` in
this repository): it holds a lease per locker and writes
``public.graphile_worker_heartbeats`` every second. A worker without heartbeats is
reported, never unlocked. With a triggerer, ``graphile_worker_rescue`` does the same
seconds after a worker dies, and runs only then.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_graphile.heartbeats import PostgresHeartbeatSource
from airflow_graphile.operators import (
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerHeartbeatCheckOperator,
)
from airflow_graphile.sensors import GraphileWorkerStuckLocksSensor

# [START unlock_crashed_settings]
CONN_ID = "graphile_worker_default"  # the database Graphile Worker uses
CHECK_EVERY = timedelta(minutes=1)  # how often a run starts
STUCK_AFTER = timedelta(minutes=1)  # a lock this old gets its holder's heartbeat checked
DEAD_AFTER = timedelta(seconds=60)  # no heartbeat this long = dead (without a lease)
MAX_WORKERS = 3  # more dead workers than this at once: unlock nothing, fail, alert a human
# [END unlock_crashed_settings]

heartbeats = PostgresHeartbeatSource(conn_id=CONN_ID, table="graphile_worker_heartbeats")

with DAG(
    dag_id="graphile_worker_unlock_crashed",
    description="Force-unlock the jobs of crashed Graphile Worker workers (by heartbeat)",
    schedule=CHECK_EVERY,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=CHECK_EVERY * 3,
    render_template_as_native_obj=True,
    tags=["graphile-worker"],
    params={
        "stuck_after_seconds": Param(STUCK_AFTER.total_seconds(), type="number", minimum=1),
        "dead_after_seconds": Param(DEAD_AFTER.total_seconds(), type="number", minimum=1),
        "max_workers": Param(MAX_WORKERS, type="integer", minimum=1),
    },
) as dag:
    # [START unlock_crashed_tasks]
    stuck = GraphileWorkerStuckLocksSensor(
        task_id="find_stuck_locks",
        graphile_worker_conn_id=CONN_ID,
        stuck_after="{{ params.stuck_after_seconds }}",
        deferrable=True,
        poke_interval=15,
        timeout=CHECK_EVERY.total_seconds() - 15,
        soft_fail=True,  # nothing stuck: the run is skipped, not failed
    )
    check = GraphileWorkerHeartbeatCheckOperator(
        task_id="check_heartbeats",
        lockers=stuck.output,  # the sensor's {"stuck_after_seconds", "lockers": [...]}
        heartbeat_source=heartbeats,
        dead_after="{{ params.dead_after_seconds }}",
    )
    unlocked = GraphileWorkerForceUnlockWorkersOperator(
        task_id="force_unlock_dead_workers",
        graphile_worker_conn_id=CONN_ID,
        locker_ids=check.output["dead_locker_ids"],  # a list of locker ids
        dead_after="{{ params.dead_after_seconds }}",
        max_workers="{{ params.max_workers }}",
    )

    @task
    def report(check: dict[str, Any], unlock: dict[str, Any]) -> dict[str, Any]:
        """One line per locker: what was found and what was done."""
        released = unlock["by_locker"]
        for item in check["dead"]:
            held = released.get(item["locker_id"], {"job_ids": [], "queue_names": []})
            print(
                f"DEAD  {item['locker_id']}: {item['evidence']}; released jobs "
                f"{held['job_ids']} and queues {held['queue_names']}"
            )
        for item in check["alive"]:
            print(f"ALIVE {item['locker_id']}: {item['evidence']}; left alone")
        for item in check["unknown"]:
            print(
                f"UNKNOWN {item['locker_id']}: no heartbeat; left alone "
                f"(jobs {item.get('job_ids')})"
            )
        return {
            "unlocked_locker_ids": unlock["requested"],
            "unlocked_job_ids": unlock["unlocked_job_ids"],
            "unlocked_queue_names": unlock["unlocked_queue_names"],
            "left_alone_locker_ids": [i["locker_id"] for i in check["alive"] + check["unknown"]],
        }

    report(check.output, unlocked.output)
    # [END unlock_crashed_tasks]
