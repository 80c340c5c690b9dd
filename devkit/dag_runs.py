"""Run DAGs for real with ``dag.test()`` and read back their task states and XComs.

A DAG's file must be in a DAG bundle that Airflow is configured with
(`airflow_home.airflow_env(bundles=...)`): ``dag.test()`` runs only those.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pendulum

from devkit.paths import EXAMPLE_DAGS_DIR

if TYPE_CHECKING:
    from airflow.sdk import DAG


@dataclass
class DagRunResult:
    """What one run did: its state, each task's state and tries, each task's XCom."""

    dag_id: str
    state: str
    task_states: dict[str, str]
    tries: dict[str, int]
    xcom: dict[str, Any]  # task_id -> its return_value XCom
    seconds: float

    def succeeded(self, task_ids: Iterable[str]) -> bool:
        """The run succeeded and so did each of ``task_ids`` (others may be skipped)."""
        return self.state == "success" and all(
            self.task_states.get(task_id) == "success" for task_id in task_ids
        )


@contextlib.contextmanager
def output_to(log_file: Path | None) -> Iterator[None]:
    """Send all that is written to stdout and stderr, by any library, to the log file.

    With None, nothing is redirected.
    """
    if log_file is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log_file.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def load_example_dag(name: str, log_file: Path | None = None) -> Any:
    """Import ``example_dags/<name>.py`` by path, as the DAG processor does; return its ``dag``.

    With ``log_file``, what the import prints goes there.
    """
    path = EXAMPLE_DAGS_DIR / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the example DAG {path.name}")
    module = importlib.util.module_from_spec(spec)
    with output_to(log_file):
        spec.loader.exec_module(module)
    return module.dag


def make_dag(
    registry: dict[str, Any],
    dag_id: str,
    params: dict[str, Any],
    native: bool = True,
    **kwargs: Any,
) -> DAG:
    """A DAG that runs only when triggered, for the tests' own DAG files; kept in ``registry``.

    With ``native`` its templates render to Python objects, else to strings (Airflow's
    default). ``kwargs`` go to ``DAG`` (``default_args``, ...).
    """
    from airflow.sdk import DAG

    dag = DAG(
        dag_id,
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params=params,
        render_template_as_native_obj=native,
        **kwargs,
    )
    registry[dag_id] = dag
    return dag


def param_defaults(dag: Any) -> dict[str, Any]:
    """The default value of each of the DAG's params."""
    return {key: param.value for key, param in dag.params.items()}


def run_dag(
    dag: Any,
    conf: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    log_file: Path | None = None,
) -> DagRunResult:
    """Run ``dag`` once with ``dag.test()`` and ``conf`` over ``defaults``; return what it did.

    Pass every param in ``defaults`` when one DAG object runs more than once: dag.test()
    keeps the previous run's conf in the DAG's params. With ``log_file``, Airflow's output
    goes there.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    # Airflow's task runner, which dag.test() runs in this process, sets its own SIGTERM
    # handler and leaves it in place. Hold SIGTERM back during the run and put the
    # caller's handler back after it: a SIGTERM received meanwhile is then handled by it.
    handler = signal.getsignal(signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    started = time.monotonic()
    try:
        with output_to(log_file):
            dag_run = dag.test(run_conf={**(defaults or {}), **conf})
    finally:
        if handler is not None:
            signal.signal(signal.SIGTERM, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    seconds = time.monotonic() - started
    with create_session() as session:
        instances = dag_run.get_task_instances(session=session)
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
            .filter(XComModel.key == "return_value")
            .all()
        )
        return DagRunResult(
            dag_id=dag.dag_id,
            state=str(dag_run.state),
            task_states={ti.task_id: str(ti.state) for ti in instances},
            tries={ti.task_id: ti.try_number for ti in instances},
            xcom={row.task_id: XComModel.deserialize_value(row) for row in rows},
            seconds=seconds,
        )
