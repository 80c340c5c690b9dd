"""DAGs the sensor and heartbeat tests run for real; settings come from the run's conf."""

from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG

from airflow_graphile.heartbeats import PostgresHeartbeatSource
from airflow_graphile.operators import (
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerHeartbeatCheckOperator,
)
from airflow_graphile.sensors import GraphileWorkerStuckLocksSensor

PARAMS: dict[str, Any] = {
    "conn_id": "graphile_worker_default",
    "stuck_after": 60,
    "tasks": None,
    "queues": None,
    "lockers": [],
    "dead_after": 60,
    "missing_is_dead": False,
    "max_workers": None,
    "heartbeat_table": "graphile_worker_heartbeats",
}
DAGS: dict[str, DAG] = {}


def _dag(dag_id: str) -> DAG:
    DAGS[dag_id] = DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params=PARAMS,
        render_template_as_native_obj=True,
    )
    return DAGS[dag_id]


SENSOR = {
    "graphile_worker_conn_id": "{{ params.conn_id }}",
    "stuck_after": "{{ params.stuck_after }}",
    "task_identifiers": "{{ params.tasks }}",
    "queue_names": "{{ params.queues }}",
    "poke_interval": 1,
    "timeout": 6,
}

for mode in ("poke", "reschedule", "deferrable"):
    for soft_fail in (False, True):
        with _dag(f"gw_test_stuck_locks_{mode}" + ("_soft" if soft_fail else "")):
            GraphileWorkerStuckLocksSensor(
                task_id="stuck",
                mode="reschedule" if mode == "reschedule" else "poke",
                deferrable=mode == "deferrable",
                soft_fail=soft_fail,
                **SENSOR,
            )

# The heartbeat table is in the jobs database, read through the same connection.
HEARTBEATS = PostgresHeartbeatSource(
    conn_id="{{ params.conn_id }}", table="graphile_worker_heartbeats"
)

with _dag("gw_test_heartbeat_check"):
    GraphileWorkerHeartbeatCheckOperator(
        task_id="check",
        lockers="{{ params.lockers }}",
        heartbeat_source=HEARTBEATS,
        dead_after="{{ params.dead_after }}",
        missing_is_dead="{{ params.missing_is_dead }}",
    )

with _dag("gw_test_unlock_dead"):
    GraphileWorkerForceUnlockWorkersOperator(
        task_id="unlock",
        graphile_worker_conn_id="{{ params.conn_id }}",
        worker_ids="{{ params.lockers }}",
        heartbeat_source=HEARTBEATS,
        dead_after="{{ params.dead_after }}",
        missing_is_dead="{{ params.missing_is_dead }}",
        max_workers="{{ params.max_workers }}",
    )
