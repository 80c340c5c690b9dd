"""Heartbeat checks: decide which Graphile Worker lockers are dead, with evidence.

Open-source Graphile Worker has no liveness of its own. Workers write heartbeats
somewhere (see the ``airflow-graphile-heartbeat`` worker plugin in this repository);
a :class:`HeartbeatCheck` reads them from a source and sorts locker ids into dead,
alive and unknown. A source that fails makes the whole check fail with a retryable
:class:`HeartbeatSourceError`: nothing is declared dead on a guess.
"""

from __future__ import annotations

from airflow_graphile.heartbeats.check import (
    DEFAULT_DEAD_AFTER,
    Heartbeat,
    HeartbeatCheck,
    HeartbeatSource,
    HeartbeatSourceError,
    HeartbeatVerdict,
)
from airflow_graphile.heartbeats.sources import (
    CallableHeartbeatSource,
    HttpHeartbeatSource,
    PostgresHeartbeatSource,
)

__all__ = [
    "DEFAULT_DEAD_AFTER",
    "CallableHeartbeatSource",
    "Heartbeat",
    "HeartbeatCheck",
    "HeartbeatSource",
    "HeartbeatSourceError",
    "HeartbeatVerdict",
    "HttpHeartbeatSource",
    "PostgresHeartbeatSource",
]
