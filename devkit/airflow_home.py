"""A throwaway Airflow home: its settings, its connections, its metadata database.

Nothing here imports Airflow: the settings must be in the environment before it is.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# The bundles dag.test() may run DAGs from ("example_dags" is a name Airflow reserves).
EXAMPLES_BUNDLE = "provider_examples"
TESTS_BUNDLE = "provider_tests"
LOCAL_BUNDLE_CLASS = "airflow.dag_processing.bundles.local.LocalDagBundle"


def airflow_command() -> str:
    """The ``airflow`` command of this Python's environment (else the one on PATH)."""
    airflow = Path(sys.executable).parent / "airflow"
    command = str(airflow) if airflow.exists() else shutil.which("airflow")
    if command is None:
        raise RuntimeError("the `airflow` command is not installed next to this Python")
    return command


def connection_env(connections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` variables (JSON) for connections given as id -> fields."""
    return {
        f"AIRFLOW_CONN_{conn_id.upper()}": json.dumps(dict(fields))
        for conn_id, fields in connections.items()
    }


def airflow_env(
    home: Path,
    connections: Mapping[str, Mapping[str, Any]] | None = None,
    dags_folder: Path | None = None,
    bundles: Mapping[str, Path] | None = None,
) -> dict[str, str]:
    """Settings of an Airflow home in ``home`` with a SQLite metadata database.

    ``connections`` become ``AIRFLOW_CONN_`` variables; ``bundles`` (name -> folder) are
    local DAG bundles, which dag.test() needs. Apply the result (``os.environ.update``)
    before ``airflow`` is imported.
    """
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
    }
    if dags_folder is not None:
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags_folder)
    if bundles:
        env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
            [
                {
                    "name": name,
                    "classpath": LOCAL_BUNDLE_CLASS,
                    "kwargs": {"path": str(folder), "refresh_interval": 0},
                }
                for name, folder in bundles.items()
            ]
        )
    env.update(connection_env(connections or {}))
    return env


def start_migrate(log_file: Path) -> subprocess.Popen[bytes]:
    """Start ``airflow db migrate`` in the background, its output going to the log file."""
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [airflow_command(), "db", "migrate"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def migrate() -> float:
    """Run ``airflow db migrate``; return the seconds it took, or raise with its output."""
    started = time.monotonic()
    result = subprocess.run(
        [airflow_command(), "db", "migrate"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"`airflow db migrate` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return time.monotonic() - started
