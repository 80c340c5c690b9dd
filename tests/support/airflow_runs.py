"""Run DAGs for real with ``dag.test()`` and read back task states and XComs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class DagRunResult:
    state: str
    task_states: dict[str, str]
    tries: dict[str, int]
    xcom: dict[str, Any]


def run_dag(dag: Any, conf: dict[str, Any], params: dict[str, Any]) -> DagRunResult:
    """Run ``dag`` once with ``conf`` over ``params``; the DAG's file must be in a bundle."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    # dag.test() keeps the previous run's conf in the DAG object's params: pass every key.
    dag_run = dag.test(run_conf={**params, **conf})
    with create_session() as session:
        instances = dag_run.get_task_instances(session=session)
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
            .filter(XComModel.key == "return_value")
            .all()
        )
        return DagRunResult(
            state=str(dag_run.state),
            task_states={ti.task_id: str(ti.state) for ti in instances},
            tries={ti.task_id: ti.try_number for ti in instances},
            xcom={row.task_id: XComModel.deserialize_value(row) for row in rows},
        )
