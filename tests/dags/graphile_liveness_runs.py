"""DAGs the sensor and heartbeat tests run for real; settings come from the run's conf."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_graphile.heartbeats import HttpHeartbeatSource, PostgresHeartbeatSource
from airflow_graphile.operators import (
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerHeartbeatCheckOperator,
)
from airflow_graphile.sensors import GraphileWorkerStuckLocksSensor
from devkit.dag_runs import make_dag

PARAMS: dict[str, Any] = {
    "conn_id": "graphile_worker_default",
    "stuck_after": 60,
    "tasks": None,
    "queues": None,
    "lockers": [],
    "locker_ids": [],
    "dead_after": 60,
    "missing_is_dead": False,
    "max_workers": None,
    "heartbeat_table": "graphile_worker_heartbeats",
    "heartbeat_id_column": "locker_id",
}
# One retry at once: shows whether a failure is retryable (2 tries) or not (1 try).
RETRY_ONCE = {"default_args": {"retries": 1, "retry_delay": timedelta(0)}}
DAGS: dict[str, DAG] = {}


def _dag(dag_id: str, **kwargs: Any) -> DAG:
    return make_dag(DAGS, dag_id, PARAMS, **kwargs)


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

# Time enough for a lock to become stuck while the trigger waits (it ends at the timeout).
with _dag("gw_test_stuck_locks_deferrable_wait"):
    GraphileWorkerStuckLocksSensor(task_id="stuck", deferrable=True, **{**SENSOR, "timeout": 40})

# The heartbeat table is in the jobs database, read through the same connection.
HEARTBEATS = PostgresHeartbeatSource(
    conn_id="{{ params.conn_id }}",
    table="{{ params.heartbeat_table }}",
    id_column="{{ params.heartbeat_id_column }}",
)
CHECK = {
    "lockers": "{{ params.lockers }}",
    "dead_after": "{{ params.dead_after }}",
    "missing_is_dead": "{{ params.missing_is_dead }}",
}
UNLOCK = {
    "graphile_worker_conn_id": "{{ params.conn_id }}",
    "heartbeat_source": HEARTBEATS,
    "dead_after": "{{ params.dead_after }}",
    "missing_is_dead": "{{ params.missing_is_dead }}",
    "max_workers": "{{ params.max_workers }}",
}

with _dag("gw_test_heartbeat_check", **RETRY_ONCE):
    GraphileWorkerHeartbeatCheckOperator(task_id="check", heartbeat_source=HEARTBEATS, **CHECK)

# Heartbeats from an HTTP endpoint behind the connection gw_beats (set by the test).
with _dag("gw_test_heartbeat_check_http", **RETRY_ONCE):
    GraphileWorkerHeartbeatCheckOperator(
        task_id="check", heartbeat_source=HttpHeartbeatSource("gw_beats"), **CHECK
    )

with _dag("gw_test_unlock_dead", **RETRY_ONCE):
    GraphileWorkerForceUnlockWorkersOperator(
        task_id="unlock", locker_ids="{{ params.locker_ids }}", **UNLOCK
    )

# The unlock pipeline's contract: the check's named XCom is the unlock's input.
with _dag("gw_test_check_then_unlock", **RETRY_ONCE):
    check = GraphileWorkerHeartbeatCheckOperator(
        task_id="check", heartbeat_source=HEARTBEATS, **CHECK
    )
    GraphileWorkerForceUnlockWorkersOperator(
        task_id="unlock", locker_ids=check.output["dead_locker_ids"], **UNLOCK
    )
