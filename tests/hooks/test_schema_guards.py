"""The checks every hook call makes before it changes anything."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from airflow_graphile.exceptions import (
    GraphileWorkerInputError,
    GraphileWorkerPermissionError,
    GraphileWorkerSchemaError,
)
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB, install_schema
from devkit.postgres import PostgresServer, create_database, drop_database
from devkit.selection import make_selection_of_jobs, snapshot
from devkit.versions import OLD_VERSION, REVISIONS


def _connection(
    monkeypatch: pytest.MonkeyPatch, server: PostgresServer, db: str, **extra: object
) -> str:
    conn_id = f"gw_guard_{uuid.uuid4().hex[:8]}"
    connection = {
        **server.airflow_connection(db),
        "login": extra.pop("login", server.user),
        "extra": extra,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
    return conn_id


@pytest.fixture
def empty_db(pg_server: PostgresServer) -> Iterator[str]:
    name = f"agt_empty_{uuid.uuid4().hex[:8]}"
    create_database(pg_server, name)
    yield name
    drop_database(pg_server, name)


def test_schema_revision(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    assert hook.schema_revision() == REVISIONS[gw_db.version]
    ok, message = hook.test_connection()
    assert ok and f"revision {REVISIONS[gw_db.version]}" in message


def test_missing_schema_names_schema_and_database(
    pg_server: PostgresServer, empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = GraphileWorkerHook(_connection(monkeypatch, pg_server, empty_db))
    with pytest.raises(GraphileWorkerSchemaError) as error:
        hook.complete_jobs([1])
    assert "'graphile_worker'" in str(error.value) and repr(empty_db) in str(error.value)
    ok, message = hook.test_connection()
    assert not ok and "not installed" in message


def test_wrong_worker_schema_from_connection_extra(
    gw_db: GraphileDB, pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = _connection(monkeypatch, pg_server, gw_db.dbname, worker_schema="jobs_elsewhere")
    with pytest.raises(GraphileWorkerSchemaError, match="'jobs_elsewhere'"):
        GraphileWorkerHook(conn_id).complete_jobs([1])
    # The argument overrides the extra.
    hook = GraphileWorkerHook(conn_id, worker_schema="graphile_worker")
    assert hook.schema_revision() == gw_db.revision


def test_schema_older_than_0_16_is_refused(
    pg_server: PostgresServer, empty_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_schema(pg_server.dsn(empty_db), OLD_VERSION)
    with psycopg.connect(pg_server.dsn(empty_db), autocommit=True) as conn:
        conn.execute("select graphile_worker.add_job('job3')")
        before = conn.execute("select * from graphile_worker.jobs").fetchall()
        hook = GraphileWorkerHook(_connection(monkeypatch, pg_server, empty_db))
        with pytest.raises(GraphileWorkerSchemaError) as error:
            hook.complete_jobs([1])
        message = str(error.value)
        assert "older than Graphile Worker 0.16" in message and "revision" in message
        assert conn.execute("select * from graphile_worker.jobs").fetchall() == before


@pytest.fixture
def rls_role(pg_server: PostgresServer, gw_db: GraphileDB) -> Iterator[str]:
    """A login role with every privilege on the worker schema, but not its owner."""
    role = f"gw_ops_{uuid.uuid4().hex[:8]}"
    schema = sql.Identifier(gw_db.schema)
    ident = sql.Identifier(role)
    with psycopg.connect(gw_db.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("create role {} login").format(ident))
        conn.execute(sql.SQL("grant usage on schema {} to {}").format(schema, ident))
        conn.execute(sql.SQL("grant all on all tables in schema {} to {}").format(schema, ident))
        conn.execute(sql.SQL("grant all on all functions in schema {} to {}").format(schema, ident))
    yield role
    with psycopg.connect(gw_db.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("drop owned by {}").format(ident))
        conn.execute(sql.SQL("drop role {}").format(ident))


def test_row_level_security_trap_is_detected(
    gw_db: GraphileDB, pg_server: PostgresServer, rls_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    conn_id = _connection(monkeypatch, pg_server, gw_db.dbname, login=rls_role)
    hook = GraphileWorkerHook(conn_id)
    # Graphile Worker's function itself "succeeds" for this role, changing nothing.
    with psycopg.connect(gw_db.dsn, user=rls_role) as conn:
        query = "select * from graphile_worker.complete_jobs(%s)"
        assert conn.execute(query, [[s.regular1]]).fetchall() == []

    with pytest.raises(GraphileWorkerPermissionError) as error:
        hook.complete_jobs([s.regular1])

    message = str(error.value)
    assert repr(rls_role) in message and "_private_jobs" in message and "BYPASSRLS" in message
    assert snapshot(gw_db) == before

    # The fix the message suggests works.
    with psycopg.connect(gw_db.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("alter role {} bypassrls").format(sql.Identifier(rls_role)))
    assert [row["id"] for row in GraphileWorkerHook(conn_id).complete_jobs([s.regular1])] == [
        s.regular1
    ]


ODD_SCHEMA = 'gw "odd"; drop table x; --'


def test_a_schema_name_that_is_not_a_plain_identifier_is_quoted(
    pg_server: PostgresServer, empty_db: str, monkeypatch: pytest.MonkeyPatch, gw_version: str
) -> None:
    install_schema(pg_server.dsn(empty_db), gw_version, schema=ODD_SCHEMA)
    db = GraphileDB(pg_server.dsn(empty_db), gw_version, empty_db, ODD_SCHEMA, 0, "")
    s = make_selection_of_jobs(db)
    hook = GraphileWorkerHook(
        _connection(monkeypatch, pg_server, empty_db, worker_schema=ODD_SCHEMA)
    )

    assert hook.schema_revision() == REVISIONS[gw_version]
    assert [r["id"] for r in hook.complete_jobs([s.regular1])] == [s.regular1]
    assert [r["id"] for r in hook.permanently_fail_jobs([s.regular2])] == [s.regular2]
    assert [r["id"] for r in hook.reschedule_jobs([s.untouched], priority=1)] == [s.untouched]
    assert hook.force_unlock_workers(["test"]).to_xcom()["unlocked_job_ids"] == [s.locked]
    assert hook.cleanup(["DELETE_PERMAFAILED_JOBS"]).removed["DELETE_PERMAFAILED_JOBS"] == 2
    assert sorted(db.jobs()) == [s.locked, s.untouched]


def test_the_schema_in_the_database_field_is_explained(
    gw_db: GraphileDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(gw_db.dsn)
    uri = urlunsplit(("postgresql", parts.netloc, "/graphile_worker", "", ""))
    monkeypatch.setenv("AIRFLOW_CONN_GW_MIXED_UP", uri)
    hook = GraphileWorkerHook(graphile_worker_conn_id="gw_mixed_up")
    with pytest.raises(GraphileWorkerInputError, match="worker_schema extra") as error:
        hook.queue_stats()
    assert "'graphile_worker' does not exist" in str(error.value)
