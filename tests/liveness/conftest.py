"""Fixtures for the liveness tests: DAG runs, and a heartbeat table shaped like the plugin's."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from psycopg import sql

from tests.support.airflow_runs import DagRunResult
from tests.support.airflow_runs import run_dag as run
from tests.support.graphile import GraphileDB

HEARTBEAT_TABLE = "graphile_worker_heartbeats"


@pytest.fixture
def run_liveness_dag(airflow_db: None) -> Callable[..., DagRunResult]:
    """Run a DAG of tests/dags/graphile_liveness_runs.py with a conf."""
    from tests.dags.graphile_liveness_runs import DAGS, PARAMS

    def _run(dag_id: str, conf: dict[str, Any]) -> DagRunResult:
        return run(DAGS[dag_id], conf, PARAMS)

    return _run


@pytest.fixture
def heartbeats(gw_db: GraphileDB) -> Callable[..., None]:
    """Create the heartbeat table; return ``beat(locker_id, ago=timedelta(0))``."""
    gw_db.query(
        sql.SQL(
            "create table {} (locker_id text primary key, host text not null, "
            "pid integer not null, started_at timestamptz not null default now(), "
            "last_beat_at timestamptz not null)"
        ).format(sql.Identifier("public", HEARTBEAT_TABLE))
    )

    def beat(locker_id: str, ago: timedelta = timedelta(0)) -> None:
        gw_db.query(
            sql.SQL(
                "insert into {} (locker_id, host, pid, last_beat_at) values (%s, 'test', 1, %s) "
                "on conflict (locker_id) do update set last_beat_at = excluded.last_beat_at"
            ).format(sql.Identifier("public", HEARTBEAT_TABLE)),
            [locker_id, datetime.now(timezone.utc) - ago],
        )

    return beat
