"""Operators, one per Graphile Worker admin function."""

from __future__ import annotations

from airflow_graphile.operators.cleanup import GraphileWorkerCleanupOperator
from airflow_graphile.operators.complete_jobs import GraphileWorkerCompleteJobsOperator
from airflow_graphile.operators.force_unlock_workers import GraphileWorkerForceUnlockWorkersOperator
from airflow_graphile.operators.heartbeat_check import GraphileWorkerHeartbeatCheckOperator
from airflow_graphile.operators.permanently_fail_jobs import (
    GraphileWorkerPermanentlyFailJobsOperator,
)
from airflow_graphile.operators.queue_stats import GraphileWorkerQueueStatsOperator
from airflow_graphile.operators.reschedule_jobs import GraphileWorkerRescheduleJobsOperator
from airflow_graphile.operators.rescue import GraphileWorkerRescueDeadWorkersOperator

__all__ = [
    "GraphileWorkerCleanupOperator",
    "GraphileWorkerCompleteJobsOperator",
    "GraphileWorkerForceUnlockWorkersOperator",
    "GraphileWorkerHeartbeatCheckOperator",
    "GraphileWorkerPermanentlyFailJobsOperator",
    "GraphileWorkerQueueStatsOperator",
    "GraphileWorkerRescheduleJobsOperator",
    "GraphileWorkerRescueDeadWorkersOperator",
]
