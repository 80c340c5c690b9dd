"""Run the DAGs of tests/dags/graphile_liveness_runs.py for real."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from devkit.dag_runs import DagRunResult
from devkit.dag_runs import run_dag as run


@pytest.fixture
def run_liveness_dag(airflow_db: None) -> Callable[..., DagRunResult]:
    """Run a DAG of tests/dags/graphile_liveness_runs.py with a conf."""
    from tests.dags.graphile_liveness_runs import DAGS, PARAMS

    def _run(dag_id: str, conf: dict[str, Any]) -> DagRunResult:
        return run(DAGS[dag_id], conf, PARAMS)

    return _run


@pytest.fixture
def pushed_xcom(airflow_db: None) -> Callable[..., Any]:
    """Read an XCom a task pushed under a named key in the latest run of a DAG."""

    def _read(result: DagRunResult, task_id: str, key: str) -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter(XComModel.dag_id == result.dag_id, XComModel.task_id == task_id)
                .filter(XComModel.key == key)
                .order_by(XComModel.timestamp.desc())
                .first()
            )
            return None if row is None else XComModel.deserialize_value(row)

    return _read
