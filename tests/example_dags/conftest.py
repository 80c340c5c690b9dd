"""Run the example DAGs (example_dags/) for real, with the run's conf over their params."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_runs import DagRunResult, run_dag

EXAMPLES = Path(__file__).resolve().parents[2] / "example_dags"


def load_example(name: str) -> Any:
    """Import an example DAG file the way the DAG processor does: by path."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


@pytest.fixture
def run_example(airflow_db: None) -> Callable[..., DagRunResult]:
    def _run(name: str, conf: dict[str, Any]) -> DagRunResult:
        dag = load_example(name)
        defaults = {key: param.value for key, param in dag.params.items()}
        return run_dag(dag, conf, defaults)

    return _run
