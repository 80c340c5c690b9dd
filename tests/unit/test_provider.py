"""The package registers with Airflow as a provider and stays cheap to import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import airflow
import jsonschema

from airflow_graphile.get_provider_info import get_provider_info

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    info = get_provider_info()
    jsonschema.validate(info, schema)
    assert info["package-name"] == "airflow-graphile"  # must equal the distribution name


def test_airflow_lists_the_provider_and_its_connection_type() -> None:
    providers = subprocess.run(
        [AIRFLOW, "providers", "list", "-o", "json"], capture_output=True, text=True, check=True
    )
    assert "airflow-graphile" in [p["package_name"] for p in json.loads(providers.stdout)]
    hooks = subprocess.run(
        [AIRFLOW, "providers", "hooks", "-o", "json"], capture_output=True, text=True, check=True
    )
    (ours,) = [h for h in json.loads(hooks.stdout) if h["connection_type"] == "graphile_worker"]
    assert ours["class"] == "airflow_graphile.hooks.graphile_worker.GraphileWorkerHook"
    assert ours["hook_name"] == "Graphile Worker"


def test_importing_operators_sensors_heartbeats_does_not_import_psycopg_or_the_hook() -> None:
    code = (
        "import sys, airflow_graphile.operators, airflow_graphile.sensors, "
        "airflow_graphile.heartbeats; "
        "print('psycopg' in sys.modules, 'airflow_graphile.hooks.graphile_worker' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
