"""permanently_fail_jobs through the hook, on every pinned Graphile Worker version."""

from __future__ import annotations

import pytest

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

    assert sorted(row["id"] for row in rows) == [s.failed, s.regular1, s.regular2]
    after = gw_db.jobs()
    for job_id in (s.failed, s.regular1, s.regular2):
        assert after[job_id]["attempts"] == after[job_id]["max_attempts"]
        assert after[job_id]["last_error"] == "TESTING!"
    assert after[s.locked] == before[s.locked]
    assert after[s.untouched] == before[s.untouched]


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
