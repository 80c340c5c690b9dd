"""Shared fixtures: a PostgreSQL server, Graphile Worker databases, an Airflow home.

The Airflow settings below are made at import, before anything imports airflow. They
are forced, not defaults: the tests must never touch a developer's real Airflow home.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from psycopg import sql

from devkit import airflow_home
from devkit.graphile import GraphileDB, install_schema
from devkit.paths import EXAMPLE_DAGS_DIR, TEST_DAGS_DIR
from devkit.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    postgres_server,
    unique_name,
)
from devkit.process import log
from devkit.versions import VERSIONS

if TYPE_CHECKING:
    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook

AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-graphile-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)
# dag.test() runs only DAGs found in a bundle: the example DAGs and the tests' own DAGs.
os.environ.update(
    airflow_home.airflow_env(
        AIRFLOW_HOME,
        dags_folder=EXAMPLE_DAGS_DIR,
        bundles={
            airflow_home.EXAMPLES_BUNDLE: EXAMPLE_DAGS_DIR,
            airflow_home.TESTS_BUNDLE: TEST_DAGS_DIR,
        },
    )
)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """The PostgreSQL server the tests use (found, or a throwaway cluster)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session", params=VERSIONS, ids=lambda version: f"gw{version}")
def gw_version(request: pytest.FixtureRequest) -> str:
    """Each tested Graphile Worker version, e.g. "0.18.0"."""
    return str(request.param)


@pytest.fixture(scope="session")
def gw_template(pg_server: PostgresServer, gw_version: str) -> Iterator[str]:
    """A database with the version's schema installed, copied by `gw_db`."""
    name = f"agtpl_{os.getpid()}_{gw_version.replace('.', '_')}"
    drop_database(pg_server, name)
    create_database(pg_server, name)
    try:
        started = time.monotonic()
        install_schema(pg_server.dsn(name), gw_version)
        log(f"schema {gw_version} installed in {time.monotonic() - started:.2f} s")
        yield name
    finally:
        drop_database(pg_server, name)


@pytest.fixture
def gw_db(
    pg_server: PostgresServer, gw_version: str, gw_template: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GraphileDB]:
    """A fresh database with the worker schema, and an Airflow connection to it."""
    dbname, conn_id = unique_name("agt", 12), unique_name("gw_test")
    with GraphileDB.create(pg_server, dbname, gw_version, conn_id, template=gw_template) as db:
        connection = {conn_id: pg_server.airflow_connection(dbname)}
        for name, value in airflow_home.connection_env(connection).items():
            monkeypatch.setenv(name, value)
        yield db


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """Migrate the Airflow metadata database (SQLite in the temp AIRFLOW_HOME) once."""
    log(f"airflow db migrate took {airflow_home.migrate():.2f} s")
    yield


@pytest.fixture
def heartbeats(gw_db: GraphileDB) -> Callable[..., None]:
    """Create the heartbeat table; return ``beat(locker_id, ago=timedelta(0))``."""
    gw_db.query(
        sql.SQL(
            "create table {} (locker_id text primary key, host text not null, "
            "pid integer not null, started_at timestamptz not null default now(), "
            "last_beat_at timestamptz not null)"
        ).format(sql.Identifier("public", "graphile_worker_heartbeats"))
    )

    def beat(locker_id: str, ago: timedelta = timedelta(0)) -> None:
        gw_db.query(
            sql.SQL(
                "insert into {} (locker_id, host, pid, last_beat_at) values (%s, 'test', 1, %s) "
                "on conflict (locker_id) do update set last_beat_at = excluded.last_beat_at"
            ).format(sql.Identifier("public", "graphile_worker_heartbeats")),
            [locker_id, datetime.now(timezone.utc) - ago],
        )

    return beat


@pytest.fixture
def hook(gw_db: GraphileDB) -> GraphileWorkerHook:
    """The hook, on the test database's connection."""
    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook

    return GraphileWorkerHook(graphile_worker_conn_id=gw_db.conn_id)
