"""cleanup through the hook, checked against Graphile Worker's own CLI and library."""

from __future__ import annotations

from datetime import timedelta

import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError, GraphileWorkerSchemaError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import (
    GraphileDB,
    run_cli_cleanup,
    run_library_cleanup,
)
from devkit.postgres import PostgresServer, create_database, drop_database
from devkit.selection import fail_permanently, lock_job, make_selection_of_jobs, snapshot

ALL = ["DELETE_PERMAFAILED_JOBS", "GC_TASK_IDENTIFIERS", "GC_JOB_QUEUES"]


def _seed_mixed_state(db: GraphileDB) -> None:
    """Jobs, queues and tasks in every state each cleanup step looks at."""
    make_selection_of_jobs(db)  # task job3: a permafailed job, a locked one, regular ones
    only_failed = db.add_job("only_failed", queue="q_failed")  # task and queue freed by step 1
    db.query(
        sql.SQL("update {} set attempts = max_attempts where id = %s").format(
            sql.Identifier(db.schema, "_private_jobs")
        ),
        [only_failed],
    )
    locked_failed = db.add_job("locked_failed", queue="q_locked_failed")
    db.query(
        sql.SQL("update {} set attempts = max_attempts where id = %s").format(
            sql.Identifier(db.schema, "_private_jobs")
        ),
        [locked_failed],
    )
    lock_job(db, locked_failed, "pool-dead", ago=timedelta(hours=5))  # locked: kept
    gone = db.add_job("gone", queue="q_gone")
    db.query(
        sql.SQL("delete from {} where id = %s").format(sql.Identifier(db.schema, "_private_jobs")),
        [gone],
    )  # leaves task "gone" and queue "q_gone" unused
    empty_locked = db.add_job("kept_task", queue="q_empty_locked")
    lock_job(db, empty_locked, "pool-x")
    db.query(
        sql.SQL("delete from {} where id = %s").format(sql.Identifier(db.schema, "_private_jobs")),
        [empty_locked],
    )  # queue locked but unused: GC_JOB_QUEUES keeps it


def _copy(pg_server: PostgresServer, db: GraphileDB, name: str) -> str:
    create_database(pg_server, name, template=db.dbname)
    return pg_server.dsn(name)


@pytest.mark.parametrize(
    "tasks",
    [ALL, ["DELETE_PERMAFAILED_JOBS"], ["GC_TASK_IDENTIFIERS"], ["GC_JOB_QUEUES"]],
    ids=lambda t: "+".join(t),
)
def test_same_result_as_graphile_worker_cli(
    pg_server: PostgresServer,
    gw_db: GraphileDB,
    hook: GraphileWorkerHook,
    tasks: list[str],
) -> None:
    _seed_mixed_state(gw_db)
    gw_db.close_connections()
    twin = f"{gw_db.dbname}_cli"
    dsn = _copy(pg_server, gw_db, twin)
    try:
        result = run_cli_cleanup(dsn, gw_db.version, tasks)
        assert result.returncode == 0, result.stderr
        expected = snapshot(GraphileDB(dsn, gw_db.version, twin, gw_db.schema, 0, ""))

        report = hook.cleanup(tasks)

        assert snapshot(gw_db) == expected
        assert list(report.removed) == [t for t in ALL if t in tasks]
    finally:
        drop_database(pg_server, twin)


def test_keep_list_matches_graphile_worker_library(
    pg_server: PostgresServer, gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    _seed_mixed_state(gw_db)
    keep = ["gone", "never_existed"]
    twin = f"{gw_db.dbname}_lib"
    dsn = _copy(pg_server, gw_db, twin)
    try:
        run_library_cleanup(dsn, gw_db.version, ALL, keep, gw_db.schema)
        expected = snapshot(GraphileDB(dsn, gw_db.version, twin, gw_db.schema, 0, ""))

        hook.cleanup(ALL, task_identifiers_to_keep=keep)

        assert snapshot(gw_db) == expected
        assert "gone" in gw_db.tasks()
    finally:
        drop_database(pg_server, twin)


def test_counts_and_dry_run(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    _seed_mixed_state(gw_db)
    before = snapshot(gw_db)

    preview = hook.cleanup(ALL, dry_run=True)
    assert snapshot(gw_db) == before
    report = hook.cleanup(ALL)

    # 2 unlocked permafailed jobs; tasks only_failed, gone, kept_task; queues q_failed, q_gone.
    assert report.removed == {
        "DELETE_PERMAFAILED_JOBS": 2,
        "GC_TASK_IDENTIFIERS": 3,
        "GC_JOB_QUEUES": 2,
    }
    assert preview.removed == report.removed
    assert gw_db.tasks() == {"job3", "locked_failed"}
    assert set(gw_db.queues()) == {"q_locked_failed", "q_empty_locked"}


def test_graphile_worker_examples(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    """The three scenarios of Graphile Worker's own cleanup tests."""
    s = make_selection_of_jobs(gw_db)
    hook.permanently_fail_jobs([s.failed, s.regular1, s.regular2], "TESTING!")
    hook.cleanup(["DELETE_PERMAFAILED_JOBS"])
    assert sorted(gw_db.jobs()) == [s.locked, s.untouched]

    jobs = [gw_db.add_job(f"test_job{n}", {"a": n}, queue=f"test{n}") for n in (1, 2, 3)]
    for n, job in enumerate(jobs, start=1):
        lock_job(gw_db, job, f"worker{n}", ago=timedelta(minutes=n))
    hook.force_unlock_workers(["worker3"])
    hook.complete_jobs([jobs[2]])
    hook.cleanup(["GC_JOB_QUEUES"])
    assert set(gw_db.queues()) == {"test1", "test2"}

    done = gw_db.add_job("test_job4")
    hook.complete_jobs([done])
    hook.cleanup(["GC_TASK_IDENTIFIERS"])
    assert gw_db.tasks() == {"job3", "test_job1", "test_job2"}


def test_unknown_task_is_refused_like_graphile_worker(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    _seed_mixed_state(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match="'VACUUM'"):
        hook.cleanup(["GC_JOB_QUEUES", "VACUUM"])
    cli = run_cli_cleanup(gw_db.dsn, gw_db.version, ["GC_JOB_QUEUES", "VACUUM"])
    assert cli.returncode == 1
    assert snapshot(gw_db) == before


def test_untested_revision_refuses_unless_allowed(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    # No newer Graphile Worker exists to install: pretend one ran its next migration.
    gw_db.query(
        sql.SQL("insert into {} (id, ts) values (%s, now())").format(
            sql.Identifier(gw_db.schema, "migrations")
        ),
        [99],
    )
    _seed_mixed_state(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerSchemaError, match="revision 99"):
        hook.cleanup(ALL)
    assert snapshot(gw_db) == before
    # Graphile Worker's own functions still run on it.
    assert hook.run_job_function("complete_jobs", [1], dry_run=True).requested == [1]
    report = hook.cleanup(ALL, allow_untested_schema=True)
    assert report.removed["DELETE_PERMAFAILED_JOBS"] == 2


def test_age_bound_and_batches_for_permafailed_jobs(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    old = [gw_db.add_job("report", queue="q_old") for _ in range(250)]
    recent = gw_db.add_job("report", queue="q_recent")
    for job in [*old, recent]:
        fail_permanently(gw_db, job)
    gw_db.query(
        sql.SQL("update {} set updated_at = now() - interval '2 days' where id = any(%s)").format(
            sql.Identifier(gw_db.schema, "_private_jobs")
        ),
        [old],
    )
    steps = ["DELETE_PERMAFAILED_JOBS", "GC_JOB_QUEUES"]

    preview = hook.cleanup(steps, permafailed_older_than=timedelta(days=1), dry_run=True)
    report = hook.cleanup(steps, permafailed_older_than=86_400, batch_size=100)

    assert report.removed == preview.removed == {"DELETE_PERMAFAILED_JOBS": 250, "GC_JOB_QUEUES": 1}
    assert set(gw_db.jobs()) == {recent}
    assert set(gw_db.queues()) == {"q_recent"}
    with pytest.raises(GraphileWorkerInputError, match="permafailed_older_than"):
        hook.cleanup(steps, permafailed_older_than="a while")
