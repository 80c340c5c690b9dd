"""Sensors of the Graphile Worker provider."""

from __future__ import annotations

from airflow_graphile.sensors.stuck_locks import GraphileWorkerStuckLocksSensor

__all__ = ["GraphileWorkerStuckLocksSensor"]
