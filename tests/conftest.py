"""Shared fixtures: a PostgreSQL server, Graphile Worker databases, an Airflow home.

The Airflow settings below are made at import, before anything imports airflow. They
are forced, not defaults: the tests must never touch a developer's real Airflow home.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="airflow-graphile-home-"))
atexit.register(shutil.rmtree, AIRFLOW_HOME, ignore_errors=True)

os.environ["AIRFLOW_HOME"] = str(AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "example_dags")
# dag.test() runs only DAGs found in a bundle: the example DAGs and the tests' own DAGs.
os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps(
    [
        {
            "name": name,
            "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
            "kwargs": {"path": str(REPO_ROOT / folder), "refresh_interval": 0},
        }
        for name, folder in (
            ("provider_examples", "example_dags"),
            ("provider_tests", "tests/dags"),
        )
    ]
)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{AIRFLOW_HOME / 'airflow.db'}"

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from tests.support.graphile import (  # noqa: E402
    DEFAULT_SCHEMA,
    VERSIONS,
    GraphileDB,
    install_schema,
)
from tests.support.postgres import (  # noqa: E402
    PostgresServer,
    create_database,
    drop_database,
    log,
    postgres_server,
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
    dbname = f"agt_{uuid.uuid4().hex[:12]}"
    create_database(pg_server, dbname, template=gw_template)
    try:
        dsn = pg_server.dsn(dbname)
        query = sql.SQL("select max(id) from {}.migrations").format(sql.Identifier(DEFAULT_SCHEMA))
        with psycopg.connect(dsn) as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        conn_id = f"gw_test_{uuid.uuid4().hex[:8]}"
        connection = {
            "conn_type": "graphile_worker",
            "host": pg_server.host,
            "port": pg_server.port,
            "login": pg_server.user,
            "password": pg_server.password,
            "schema": dbname,
        }
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
        db = GraphileDB(
            dsn=dsn,
            version=gw_version,
            dbname=dbname,
            schema=DEFAULT_SCHEMA,
            revision=int(row[0]),
            conn_id=conn_id,
        )
        try:
            yield db
        finally:
            db.close_connections()
    finally:
        drop_database(pg_server, dbname)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[None]:
    """Migrate the Airflow metadata database (SQLite in the temp AIRFLOW_HOME) once."""
    airflow = Path(sys.executable).parent / "airflow"
    command = str(airflow) if airflow.exists() else shutil.which("airflow")
    if command is None:
        raise RuntimeError("the `airflow` command is not installed next to this Python")
    started = time.monotonic()
    result = subprocess.run([command, "db", "migrate"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(
            f"`airflow db migrate` failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    log(f"airflow db migrate took {time.monotonic() - started:.2f} s")
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
