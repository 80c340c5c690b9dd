"""Checks that the shared fixtures work against real PostgreSQL and Graphile Worker."""

from __future__ import annotations

import pytest

from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for
from devkit.versions import REVISIONS


def test_gw_db_has_the_version_schema_and_a_connection(gw_db: GraphileDB, airflow_db: None) -> None:
    from airflow.sdk import BaseHook

    assert gw_db.revision == REVISIONS[gw_db.version]
    assert gw_db.jobs() == {}
    connection = BaseHook.get_connection(gw_db.conn_id)
    assert connection.conn_type == "graphile_worker"
    assert connection.schema == gw_db.dbname
    with gw_db.connect() as conn:
        assert conn.execute("select current_database()").fetchone() == (gw_db.dbname,)


def test_add_job_shows_in_tables(gw_db: GraphileDB) -> None:
    job_id = gw_db.add_job("noop", {"n": 1}, queue="q1", max_attempts=3, priority=2)
    job = gw_db.jobs()[job_id]
    assert job["payload"] == {"n": 1}
    assert (job["max_attempts"], job["priority"], job["attempts"]) == (3, 2, 0)
    assert job["job_queue_id"] == gw_db.queues()["q1"]["id"]
    assert gw_db.tasks() == {"noop"}


@pytest.mark.worker
def test_worker_runs_a_noop_job(gw_db: GraphileDB) -> None:
    job_id = gw_db.add_job("noop")
    with WorkerProcess(gw_db.dsn, gw_db.version) as worker:
        wait_for(lambda: job_id not in gw_db.jobs(), timeout=20, what="noop job done")
    assert "Completed task" in worker.log_text()
