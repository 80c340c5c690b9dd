"""GC_JOB_QUEUES on a live queue: a job added to an empty queue while it is deleted.

``add_job`` reads a queue's id without locking its row, and no foreign key ties jobs to
queues: a transaction that added a job to an empty queue, still open while cleanup
deletes that queue, commits a job pointing at a queue that no longer exists. Each test
holds such a transaction open across the delete (no timing guesses: it commits only
once the delete is visible and cleanup is still waiting).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerTimeoutError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from airflow_graphile.reports import CleanupReport
from devkit.graphile import GraphileDB, WorkerProcess, run_cli_cleanup
from devkit.postgres import PostgresServer
from devkit.process import wait_for

GC = ["GC_JOB_QUEUES"]
# How long the open transaction stays open once cleanup is waiting for it.
HELD_SECONDS = 1.0


def _empty_queue(db: GraphileDB, name: str) -> int:
    """Make queue ``name`` exist with no job (as a finished job leaves it); return its id."""
    job = db.add_job("noop", queue=name)
    db.query(
        sql.SQL("delete from {} where id = %s").format(sql.Identifier(db.schema, "_private_jobs")),
        [job],
    )
    return int(db.queues()[name]["id"])


@contextmanager
def _open_add_job(db: GraphileDB, queue: str) -> Iterator[tuple[psycopg.Connection[Any], int]]:
    """A transaction that called add_job into ``queue`` and has not committed: (conn, job id).

    The caller commits or rolls back; leaving the block without either rolls back.
    """
    with psycopg.connect(db.dsn) as conn:
        row = conn.execute(
            sql.SQL("select id from {}.add_job('noop', queue_name => %s)").format(
                sql.Identifier(db.schema)
            ),
            [queue],
        ).fetchone()
        assert row is not None
        try:
            yield conn, int(row[0])
        finally:
            conn.rollback()


def _cleanup_in_background(
    pool: ThreadPoolExecutor, hook: GraphileWorkerHook, db: GraphileDB, deleted: str
) -> Future[CleanupReport]:
    """Start GC_JOB_QUEUES; return once queue ``deleted`` is gone and cleanup still waits."""
    future = pool.submit(hook.cleanup, GC)
    wait_for(lambda: deleted not in db.queues(), timeout=20, what=f"queue {deleted!r} deleted")
    time.sleep(HELD_SECONDS)
    assert not future.done(), "cleanup ended while a transaction open at its delete was open"
    return future


def _queue_of(db: GraphileDB, job_id: int) -> dict[str, Any] | None:
    """The queue row the job points at, or None if that id names no queue (stranded)."""
    queue_id = db.jobs()[job_id]["job_queue_id"]
    return next((q for q in db.queues().values() if q["id"] == queue_id), None)


@pytest.mark.worker
def test_queue_deleted_under_an_open_add_job_is_put_back(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    queue_id = _empty_queue(gw_db, "q")
    _empty_queue(gw_db, "idle")
    with _open_add_job(gw_db, "q") as (conn, job_id), ThreadPoolExecutor(1) as pool:
        future = _cleanup_in_background(pool, hook, gw_db, "q")
        conn.commit()
        report = future.result(timeout=30)

    assert report.removed == {"GC_JOB_QUEUES": 1}  # idle; q was put back
    assert report.queues_put_back == [(queue_id, "q")]
    assert report.jobs_repointed == 0
    assert report.queue_wait_seconds >= HELD_SECONDS / 2
    assert report.to_xcom()["queues_put_back"] == ["q"]
    assert "put back 1 deleted queue(s) that a job was added to meanwhile: q" in report.summary()
    assert set(gw_db.queues()) == {"q"}
    assert gw_db.queues()["q"]["id"] == queue_id
    assert gw_db.jobs()[job_id]["job_queue_id"] == queue_id
    # Not stranded: a real worker runs it.
    with WorkerProcess(gw_db.dsn, gw_db.version) as worker:
        worker.wait(lambda: job_id not in gw_db.jobs(), timeout=30, what=f"job {job_id} run")


def test_job_follows_a_queue_add_job_made_again_meanwhile(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    old_id = _empty_queue(gw_db, "q")
    with _open_add_job(gw_db, "q") as (conn, late_job), ThreadPoolExecutor(1) as pool:
        future = _cleanup_in_background(pool, hook, gw_db, "q")
        new_job = gw_db.add_job("noop", queue="q")  # a new row named q, a new id
        new_id = int(gw_db.queues()["q"]["id"])
        conn.commit()
        report = future.result(timeout=30)

    assert new_id != old_id
    assert report.removed == {"GC_JOB_QUEUES": 1}
    assert report.queues_put_back == []
    assert report.jobs_repointed == 1
    assert "pointed 1 job(s) added to a deleted queue at the new queue" in report.summary()
    assert gw_db.queues()["q"]["id"] == new_id
    assert gw_db.jobs()[late_job]["job_queue_id"] == new_id
    assert gw_db.jobs()[new_job]["job_queue_id"] == new_id


def test_put_back_waits_for_an_uncommitted_queue_of_the_same_name(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    """A later add_job makes q again and stays open: the check retries past lock_timeout."""
    patient = GraphileWorkerHook(graphile_worker_conn_id=gw_db.conn_id, lock_timeout=0.2)
    _empty_queue(gw_db, "q")
    with _open_add_job(gw_db, "q") as (conn, late_job), ThreadPoolExecutor(1) as pool:
        future = _cleanup_in_background(pool, patient, gw_db, "q")
        wait_for(lambda: _polling(gw_db), timeout=20, what="cleanup waiting")
        with _open_add_job(gw_db, "q") as (later, later_job):  # a new q, not committed
            conn.commit()
            time.sleep(HELD_SECONDS)
            assert not future.done(), "cleanup did not wait for the uncommitted queue"
            later.commit()
        report = future.result(timeout=30)

    new_id = int(gw_db.queues()["q"]["id"])
    assert report.queues_put_back == []
    assert report.jobs_repointed == 1
    assert gw_db.jobs()[late_job]["job_queue_id"] == new_id
    assert gw_db.jobs()[later_job]["job_queue_id"] == new_id


def _polling(db: GraphileDB) -> bool:
    """Whether cleanup has listed the open transactions (so later ones are not waited for)."""
    rows = db.query(
        sql.SQL(
            "select 1 from pg_stat_activity where datname = current_database()"
            " and pid <> pg_backend_pid() and query like %s"
        ),
        ["%pg_locks%"],
    )
    return bool(rows)


def test_brand_new_queue_of_an_open_add_job_is_left_alone(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    _empty_queue(gw_db, "idle")
    with _open_add_job(gw_db, "fresh") as (conn, job_id), ThreadPoolExecutor(1) as pool:
        future = _cleanup_in_background(pool, hook, gw_db, "idle")
        conn.commit()
        report = future.result(timeout=30)

    assert report.removed == {"GC_JOB_QUEUES": 1}
    assert report.queues_put_back == []
    assert report.jobs_repointed == 0
    assert set(gw_db.queues()) == {"fresh"}
    assert _queue_of(gw_db, job_id) == gw_db.queues()["fresh"]


def test_rolled_back_add_job_leaves_the_queue_deleted(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    _empty_queue(gw_db, "q")
    with _open_add_job(gw_db, "q") as (conn, job_id), ThreadPoolExecutor(1) as pool:
        future = _cleanup_in_background(pool, hook, gw_db, "q")
        conn.rollback()
        report = future.result(timeout=30)

    assert report.removed == {"GC_JOB_QUEUES": 1}
    assert report.queues_put_back == []
    assert report.jobs_repointed == 0
    assert gw_db.queues() == {}
    assert job_id not in gw_db.jobs()


def test_wait_bound_puts_every_free_name_back_and_names_the_rest(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    bounded = GraphileWorkerHook(graphile_worker_conn_id=gw_db.conn_id, statement_timeout=3)
    queue_id = _empty_queue(gw_db, "q")
    taken_id = _empty_queue(gw_db, "taken")
    with _open_add_job(gw_db, "q") as (conn, job_id), ThreadPoolExecutor(1) as pool:
        future = pool.submit(bounded.cleanup, GC)
        wait_for(lambda: "q" not in gw_db.queues(), timeout=20, what="queue q deleted")
        gw_db.add_job("noop", queue="taken")  # add_job makes "taken" again: a new id
        with pytest.raises(GraphileWorkerTimeoutError) as raised:
            future.result(timeout=30)
        # The still-open transaction's job finds its queue when it commits.
        assert gw_db.queues()["q"]["id"] == queue_id
        conn.commit()

    message = str(raised.value)
    assert "waited 3 s (statement_timeout" in message
    assert f"put back with their ids ('q' (id {queue_id}))" in message
    taken = f"a new queue of the same name meanwhile: 'taken' (id {taken_id})"
    assert taken in message
    assert gw_db.jobs()[job_id]["job_queue_id"] == queue_id
    assert gw_db.queues()["taken"]["id"] != taken_id


def test_transactions_of_other_databases_are_not_waited_for(
    pg_server: PostgresServer, gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    _empty_queue(gw_db, "idle")
    with psycopg.connect(pg_server.dsn("postgres")) as elsewhere:
        elsewhere.execute("select txid_current()")  # open, with an xid, in another database
        report = hook.cleanup(GC)
        elsewhere.rollback()
    assert report.removed == {"GC_JOB_QUEUES": 1}
    assert report.queue_wait_seconds < HELD_SECONDS


def test_graphile_worker_cli_cleanup_strands_the_job(gw_db: GraphileDB) -> None:
    """Upstream behaviour, for the record: its --cleanup does not wait, and the job is lost."""
    queue_id = _empty_queue(gw_db, "q")
    with _open_add_job(gw_db, "q") as (conn, job_id):
        result = run_cli_cleanup(gw_db.dsn, gw_db.version, GC)
        assert result.returncode == 0, result.stderr
        assert "q" not in gw_db.queues()
        conn.commit()

    assert gw_db.jobs()[job_id]["job_queue_id"] == queue_id
    assert _queue_of(gw_db, job_id) is None  # points at no queue: no worker will run it


def test_an_interrupted_check_names_the_deleted_queues() -> None:
    report = CleanupReport(removed={"GC_JOB_QUEUES": 2}, running="GC_JOB_QUEUES")
    report.unchecked_queues = [(7, "q"), (9, "idle")]
    progress = report.progress()
    assert "Steps finished before it: none." in progress
    assert "'q' (id 7), 'idle' (id 9)" in progress
    assert "running again is safe" not in progress
    report.unchecked_queues = []
    assert "was rolled back where it stopped; running again is safe" in report.progress()
