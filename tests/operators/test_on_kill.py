"""A task killed mid-batch leaves nothing running on the server, and no half-done batch."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devkit.graphile import GraphileDB
from devkit.process import wait_for

BATCH = 1000
REPO_ROOT = Path(__file__).resolve().parents[2]


def _ours(db: GraphileDB) -> list[dict[str, object]]:
    """The provider's sessions in the test database that are running a statement."""
    return db.query(
        sql.SQL(
            "select pid, state, wait_event_type from pg_stat_activity"
            " where datname = %s and application_name = 'airflow-graphile' and state <> 'idle'"
        ),
        [db.dbname],
    )


def _failed(db: GraphileDB) -> int:
    query = sql.SQL("select count(*) as n from {} where attempts = max_attempts")
    return int(db.query(query.format(sql.Identifier(db.schema, "_private_jobs")))[0]["n"])


# What is checked here is our session on the server, the same for every Graphile Worker
# version: one version is enough.
@pytest.mark.parametrize("gw_version", ["0.18.0"], indirect=True)
@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGKILL"])
def test_a_killed_task_leaves_nothing_running(
    gw_db: GraphileDB,
    airflow_db: None,
    signal_name: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    gw_db.query(
        sql.SQL(
            "select count(*) from {}(array(select row('kill', json_build_object('n', g), null, "
            "null, null, null, null, null)::{} from generate_series(1, %s) g))"
        ).format(
            sql.Identifier(gw_db.schema, "add_jobs"), sql.Identifier(gw_db.schema, "job_spec")
        ),
        [3 * BATCH],
    )
    ids = sorted(gw_db.jobs())
    # A long lock_timeout from the connection extra, so the second batch waits on the row
    # held below, as a statement does that meets a long transaction.
    connection = json.loads(os.environ[f"AIRFLOW_CONN_{gw_db.conn_id.upper()}"])
    connection["extra"] = {"lock_timeout": 600}
    monkeypatch.setenv("AIRFLOW_CONN_GW_PATIENT", json.dumps(connection))
    conf = {"conn_id": "gw_patient", "filter": {"task_identifiers": ["kill"]}, "batch_size": BATCH}
    airflow = str(Path(sys.executable).parent / "airflow")
    with psycopg.connect(gw_db.dsn) as other, (tmp_path / "task.log").open("wb") as log:
        other.execute(
            sql.SQL("select id from {} where id = %s for update").format(
                sql.Identifier(gw_db.schema, "_private_jobs")
            ),
            [ids[BATCH + 10]],
        )
        task = subprocess.Popen(
            [airflow, "dags", "test", "gw_test_bulk_fail_once", "-c", json.dumps(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )

        def waiting() -> bool:
            if task.poll() is not None:
                raise AssertionError(
                    "the task ended early:\n" + (tmp_path / "task.log").read_text()[-3000:]
                )
            return any(row["wait_event_type"] == "Lock" for row in _ours(gw_db))

        try:
            wait_for(
                waiting,
                timeout=120,
                what="the second batch waiting on the held row",
            )
            task.send_signal(getattr(signal, signal_name))
            wait_for(lambda: not _ours(gw_db), timeout=10, what="no statement of ours running")
            task.wait(timeout=120)
        finally:
            if task.poll() is None:
                os.killpg(task.pid, signal.SIGKILL)
                task.wait()
        other.rollback()
    # The first batch committed; the one in flight left nothing half-done.
    assert _failed(gw_db) == BATCH, (tmp_path / "task.log").read_text()[-3000:]
    if signal_name == "SIGTERM":
        assert "cancelling the statement" in (tmp_path / "task.log").read_text()
