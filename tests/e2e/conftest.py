"""A real Airflow (`airflow standalone`) for the end-to-end tests, started once per session.

Its metadata database and the Graphile Worker database it administers (connection
``graphile_worker_default``, as the example DAGs expect) are both created for the session
on the tests' PostgreSQL server, and dropped at the end.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.graphile import GraphileDB
from devkit.paths import EXAMPLE_DAGS_DIR
from devkit.postgres import PostgresServer, create_database, drop_database, unique_name
from devkit.process import log
from devkit.standalone import AirflowAPI, Standalone, standalone_settings
from devkit.versions import LATEST_VERSION, REVISIONS

CONN_ID = "graphile_worker_default"
DAG_IDS = ("graphile_worker_admin", "graphile_worker_unlock_crashed", "graphile_worker_rescue")
STARTUP_TIMEOUT = 240  # seconds; ~30-70 s seen on a busy 2-core machine
PARSE_TIMEOUT = 120


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: runs a real Airflow (airflow standalone), workers and a browser"
    )


@pytest.fixture(scope="session")
def e2e_db(pg_server: PostgresServer) -> Iterator[GraphileDB]:
    """The Graphile Worker database (latest version's schema) the session's Airflow administers."""
    dbname = unique_name("agt_e2e", 12)
    with GraphileDB.create(pg_server, dbname, LATEST_VERSION, CONN_ID) as db:
        assert db.revision == REVISIONS[LATEST_VERSION]
        yield db


@pytest.fixture(scope="session")
def airflow(pg_server: PostgresServer, e2e_db: GraphileDB) -> Iterator[AirflowAPI]:
    """A running `airflow standalone` with the example DAGs parsed; its API client."""
    home = Path(tempfile.mkdtemp(prefix="airflow-graphile-e2e-"))
    metadata_db = unique_name("agt_e2e_meta", 12)
    create_database(pg_server, metadata_db)
    settings = standalone_settings(
        pg_server,
        metadata_db,
        EXAMPLE_DAGS_DIR,
        {CONN_ID: pg_server.airflow_connection(e2e_db.dbname)},
        # LocalExecutor starts this many worker processes.
        AIRFLOW__CORE__PARALLELISM="4",
    )
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


@pytest.fixture
def gw(e2e_db: GraphileDB) -> Iterator[GraphileDB]:
    """The session's Graphile Worker database, emptied before and after the test (a stuck
    lock left behind would fire the unlock DAG's sensor at once)."""
    e2e_db.empty()
    yield e2e_db
    e2e_db.empty()
