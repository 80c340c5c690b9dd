"""A real Airflow (`airflow standalone`) for the end-to-end tests, started once per session.

Its metadata database and the Graphile Worker database it administers (connection
``graphile_worker_default``, as the example DAGs expect) are both created for the session
on the tests' PostgreSQL server, and dropped at the end.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.e2e.standalone import AirflowAPI, Standalone, free_port
from tests.support.graphile import DEFAULT_SCHEMA, REVISIONS, GraphileDB, install_schema
from tests.support.postgres import PostgresServer, create_database, drop_database, log

REPO_ROOT = Path(__file__).resolve().parents[2]
GW_VERSION = "0.18.0"
CONN_ID = "graphile_worker_default"
DAG_IDS = ("graphile_worker_admin", "graphile_worker_unlock_crashed")
STARTUP_TIMEOUT = 240  # seconds; ~30-70 s seen on a busy 2-core machine
PARSE_TIMEOUT = 120
HEARTBEATS = "graphile_worker_heartbeats"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: runs a real Airflow (airflow standalone), workers and a browser"
    )


@pytest.fixture(scope="session")
def e2e_db(pg_server: PostgresServer) -> Iterator[GraphileDB]:
    """The Graphile Worker database (schema of 0.18.0) that the session's Airflow administers."""
    dbname = f"agt_e2e_{uuid.uuid4().hex[:12]}"
    create_database(pg_server, dbname)
    try:
        dsn = pg_server.dsn(dbname)
        install_schema(dsn, GW_VERSION)
        with psycopg.connect(dsn) as conn:
            row = conn.execute("select max(id) from graphile_worker.migrations").fetchone()
        assert row is not None and row[0] == REVISIONS[GW_VERSION]
        db = GraphileDB(
            dsn=dsn,
            version=GW_VERSION,
            dbname=dbname,
            schema=DEFAULT_SCHEMA,
            revision=int(row[0]),
            conn_id=CONN_ID,
        )
        try:
            yield db
        finally:
            db.close_connections()
    finally:
        drop_database(pg_server, dbname)


@pytest.fixture(scope="session")
def airflow(pg_server: PostgresServer, e2e_db: GraphileDB) -> Iterator[AirflowAPI]:
    """A running `airflow standalone` with both example DAGs parsed; its API client."""
    home = Path(tempfile.mkdtemp(prefix="airflow-graphile-e2e-"))
    metadata_db = f"agt_e2e_meta_{uuid.uuid4().hex[:12]}"
    create_database(pg_server, metadata_db)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    graphile_connection = {
        "conn_type": "graphile_worker",
        "host": pg_server.host,
        "port": pg_server.port,
        "login": pg_server.user,
        "password": pg_server.password,
        "schema": e2e_db.dbname,
    }
    settings = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "example_dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # no login, API or UI
        "AIRFLOW__CORE__PARALLELISM": "4",  # LocalExecutor starts this many worker processes
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg_server.dsn(metadata_db).replace(
            "postgresql://", "postgresql+psycopg2://", 1
        ),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(graphile_connection),
    }
    standalone: Standalone | None = None
    try:
        standalone = Standalone(home, settings)
        standalone.wait_healthy(STARTUP_TIMEOUT)
        healthy = time.monotonic() - standalone.started
        api = AirflowAPI(standalone.base_url)
        for dag_id in DAG_IDS:
            api.wait_dag(dag_id, PARSE_TIMEOUT)
        log(
            f"airflow standalone on {standalone.base_url}: healthy after {healthy:.1f} s, "
            f"DAGs parsed after {time.monotonic() - standalone.started:.1f} s"
        )
        yield api
    finally:
        try:
            if standalone is not None:
                took, killed = standalone.stop()
                log(f"airflow standalone stopped in {took:.1f} s (SIGKILLed: {killed or 'none'})")
        finally:
            drop_database(pg_server, metadata_db)
            shutil.rmtree(home, ignore_errors=True)


def _empty(db: GraphileDB) -> None:
    """Remove every job, queue and heartbeat row: a stuck lock left behind would fire the
    unlock DAG's sensor at once."""
    for table in ("_private_jobs", "_private_job_queues"):
        db.query(sql.SQL("delete from {}").format(sql.Identifier(db.schema, table)))
    db.query(sql.SQL("drop table if exists {}").format(sql.Identifier("public", HEARTBEATS)))


@pytest.fixture
def gw(e2e_db: GraphileDB) -> Iterator[GraphileDB]:
    """The session's Graphile Worker database, emptied before and after the test."""
    _empty(e2e_db)
    yield e2e_db
    _empty(e2e_db)
