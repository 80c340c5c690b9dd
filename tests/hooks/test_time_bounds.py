"""Every statement is bounded: lock waits, runaway statements, and where the bounds come from."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import psycopg
import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError, GraphileWorkerTimeoutError
from airflow_graphile.hooks import session
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import snapshot


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(session, "FIRST_BACKOFF_SECONDS", 0.01)


@contextmanager
def row_held(db: GraphileDB, job_id: int) -> Iterator[None]:
    """Another transaction holds the job's row (as a long admin transaction would)."""
    with psycopg.connect(db.dsn) as other:
        other.execute(
            sql.SQL("select id from {} where id = %s for update").format(
                sql.Identifier(db.schema, "_private_jobs")
            ),
            [job_id],
        )
        yield
        other.rollback()


def _jobs(db: GraphileDB, count: int, task: str = "bounded") -> list[int]:
    return [db.add_job(task, {"n": n}) for n in range(count)]


def test_an_id_call_skips_a_row_another_transaction_holds(gw_db: GraphileDB) -> None:
    held, free = _jobs(gw_db, 2)
    hook = GraphileWorkerHook(gw_db.conn_id, lock_timeout=0.2)
    started = time.monotonic()
    with row_held(gw_db, held):
        report = hook.run_job_function("complete_jobs", [held, free])
    # Three tries of 0.2 s each, then the call skips the held row instead of waiting.
    assert time.monotonic() - started < 5
    assert report.affected == [free]
    assert report.skipped == [{"id": held, "reason": "busy"}]
    assert set(gw_db.jobs()) == {held}
    again = hook.run_job_function("complete_jobs", [held])  # the row is free now
    assert again.affected == [held]


def test_a_filter_run_skips_held_rows_and_finishes_the_rest(gw_db: GraphileDB) -> None:
    ids = _jobs(gw_db, 50)
    hook = GraphileWorkerHook(gw_db.conn_id, lock_timeout=0.2)
    with row_held(gw_db, ids[10]), row_held(gw_db, ids[40]):
        report = hook.run_job_function_on_filter(
            "permanently_fail_jobs", {"task_identifiers": ["bounded"]}, batch_size=20
        )
    assert report.skipped_busy == 2
    assert report.busy_sample == [ids[10], ids[40]]
    assert report.changed == 48
    assert report.to_xcom()["skipped_busy"] == 2
    failed = {i for i, job in gw_db.jobs().items() if job["attempts"] == job["max_attempts"]}
    assert failed == set(ids) - {ids[10], ids[40]}
    assert "held by another transaction" in report.summary()


def test_a_runaway_regex_ends_at_the_statement_timeout(gw_db: GraphileDB) -> None:
    ids = _jobs(gw_db, 30)
    gw_db.query(
        sql.SQL("update {} set last_error = repeat('abcde fghij ', 20)").format(
            sql.Identifier(gw_db.schema, "_private_jobs")
        )
    )
    before = snapshot(gw_db)
    hook = GraphileWorkerHook(gw_db.conn_id, statement_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(GraphileWorkerTimeoutError, match=r"statement_timeout \(0.5 s\) reached"):
        hook.run_job_function_on_filter(
            "complete_jobs", {"last_error_pattern": r"(.{1,50}){1,50}\1b"}
        )
    assert time.monotonic() - started < 5
    assert snapshot(gw_db) == before
    assert len(ids) == 30


def test_timeouts_come_from_the_argument_else_the_connection_extra(
    gw_db: GraphileDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = json.loads(os.environ[f"AIRFLOW_CONN_{gw_db.conn_id.upper()}"])
    connection["extra"] = {"lock_timeout": 7, "statement_timeout": "90"}
    monkeypatch.setenv("AIRFLOW_CONN_GW_BOUNDED", json.dumps(connection))
    from_extra = GraphileWorkerHook("gw_bounded")
    assert from_extra.timeouts == session.Timeouts(timedelta(seconds=7), timedelta(seconds=90))
    given = GraphileWorkerHook("gw_bounded", lock_timeout=1, statement_timeout=timedelta(seconds=3))
    assert given.timeouts == session.Timeouts(timedelta(seconds=1), timedelta(seconds=3))
    default = GraphileWorkerHook(gw_db.conn_id)
    assert default.timeouts == session.Timeouts()
    # The extras are the hook's own, not connect arguments, and the calls still work.
    assert "lock_timeout" not in from_extra.connect_kwargs(from_extra.connection)
    assert from_extra.schema_revision() == gw_db.revision
    with from_extra.transaction() as tx:
        row = tx.one(
            sql.SQL(
                "select current_setting('lock_timeout') as lock,"
                " current_setting('statement_timeout') as statement"
            )
        )
    assert row == {"lock": "7s", "statement": "90s"}


@pytest.mark.parametrize("bad", ["soon", -1, "nan"])
def test_a_bad_timeout_is_refused_naming_it(gw_db: GraphileDB, bad: object) -> None:
    with pytest.raises(GraphileWorkerInputError, match="statement_timeout"):
        GraphileWorkerHook(gw_db.conn_id, statement_timeout=bad)
