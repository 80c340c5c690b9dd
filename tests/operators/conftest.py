"""Run the test DAGs for real with ``dag.test()`` and read back states and XComs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class DagRunResult:
    state: str
    task_states: dict[str, str]
    tries: dict[str, int]
    xcom: dict[str, Any]


def _run(dag_id: str, conf: dict[str, Any]) -> DagRunResult:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from tests.dags.graphile_operator_runs import DAGS, PARAMS

    # dag.test() keeps the previous run's conf in the DAG object's params: pass every key.
    dag_run = DAGS[dag_id].test(run_conf={**PARAMS, **conf})
    with create_session() as session:
        instances = dag_run.get_task_instances(session=session)
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag_id, XComModel.run_id == dag_run.run_id)
            .filter(XComModel.key == "return_value")
            .all()
        )
        return DagRunResult(
            state=str(dag_run.state),
            task_states={ti.task_id: str(ti.state) for ti in instances},
            tries={ti.task_id: ti.try_number for ti in instances},
            xcom={row.task_id: XComModel.deserialize_value(row) for row in rows},
        )


@pytest.fixture
def run_dag(airflow_db: None) -> Callable[..., DagRunResult]:
    """Run a DAG of tests/dags/graphile_operator_runs.py with a conf; return what happened."""
    return _run
