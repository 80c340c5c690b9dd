"""permanently_fail_jobs through the hook, on every pinned Graphile Worker version."""

from __future__ import annotations

import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import make_selection_of_jobs, snapshot


def test_fails_the_jobs_and_leaves_others_unaffected(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = gw_db.jobs()

    rows = hook.permanently_fail_jobs([s.failed, s.regular1, s.locked, s.regular2], "TESTING!")

    assert sorted(row["id"] for row in rows) == [s.regular1, s.regular2]
    after = gw_db.jobs()
    for job_id in (s.regular1, s.regular2):
        assert after[job_id]["attempts"] == after[job_id]["max_attempts"]
        assert after[job_id]["last_error"] == "TESTING!"
    # Already permanently failed: left as it was (its error and its updated_at, which
    # cleanup's age bound counts from), not rewritten.
    for job_id in (s.failed, s.locked, s.untouched):
        assert after[job_id] == before[job_id]


def test_a_rerun_reports_already_so_and_touches_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    job = gw_db.add_job("job3", run_at=None)
    first = hook.run_job_function("permanently_fail_jobs", [job], reason="gone")
    assert first.affected == [job]
    before = snapshot(gw_db)
    again = hook.run_job_function("permanently_fail_jobs", [job], reason="other")
    assert (again.affected, again.skipped) == ([], [{"id": job, "reason": "already so"}])
    preview = hook.run_job_function("permanently_fail_jobs", [job], dry_run=True)
    assert preview.skipped == [{"id": job, "reason": "already so"}]
    assert snapshot(gw_db) == before
    moved = hook.run_job_function("reschedule_jobs", [job], priority=5)
    assert moved.affected == [job]
    same = hook.run_job_function("reschedule_jobs", [job], priority=5)
    assert same.skipped == [{"id": job, "reason": "already so"}]
    bulk = hook.run_job_function_on_filter("reschedule_jobs", {"job_ids": [job]}, priority=5)
    assert (bulk.changed, bulk.skipped_already, bulk.skipped_locked) == (0, 1, 0)


def test_default_reason_is_graphile_workers(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    job = gw_db.add_job("job3")
    (row,) = hook.permanently_fail_jobs([job])
    assert row["last_error"] == "Manually marked as failed"
    assert gw_db.jobs()[job]["last_error"] == "Manually marked as failed"


def test_dry_run_matches_and_changes_nothing(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    preview = hook.run_job_function("permanently_fail_jobs", [s.locked, s.regular1], dry_run=True)
    assert snapshot(gw_db) == before
    report = hook.run_job_function("permanently_fail_jobs", [s.locked, s.regular1])
    assert preview.affected == report.affected == [s.regular1]
    assert preview.skipped == report.skipped


def test_a_reason_that_is_not_text_changes_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match="reason"):
        hook.permanently_fail_jobs([s.regular1], reason=["no"])  # type: ignore[arg-type]
    assert snapshot(gw_db) == before


def test_the_error_that_made_someone_give_up_is_kept(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    bounced, fresh = gw_db.add_job("send_email"), gw_db.add_job("send_email")
    gw_db.query(
        sql.SQL("update {} set attempts = 3, last_error = %s where id = %s").format(
            sql.Identifier(gw_db.schema, "_private_jobs")
        ),
        ["550 mailbox unavailable", bounced],
    )
    report = hook.run_job_function("permanently_fail_jobs", [bounced, fresh], reason="gave up")
    assert report.affected == [bounced, fresh]
    jobs = gw_db.jobs()
    assert jobs[bounced]["last_error"] == "gave up\n-- previous error --\n550 mailbox unavailable"
    assert jobs[fresh]["last_error"] == "gave up"
    assert jobs[bounced]["attempts"] == jobs[bounced]["max_attempts"]
    by_filter = gw_db.add_job("send_email")
    gw_db.query(
        sql.SQL("update {} set last_error = 'timeout' where id = %s").format(
            sql.Identifier(gw_db.schema, "_private_jobs")
        ),
        [by_filter],
    )
    bulk = hook.run_job_function_on_filter("permanently_fail_jobs", {"job_ids": [by_filter]})
    assert bulk.changed == 1
    assert gw_db.jobs()[by_filter]["last_error"] == (
        "Manually marked as failed\n-- previous error --\ntimeout"
    )
