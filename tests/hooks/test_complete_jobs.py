"""complete_jobs through the hook, on every pinned Graphile Worker version."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import lock_job, make_selection_of_jobs, snapshot


def test_completes_the_jobs_and_leaves_others_unaffected(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = gw_db.jobs()

    rows = hook.complete_jobs([s.failed, s.regular1, s.locked, s.regular2])

    assert sorted(row["id"] for row in rows) == [s.failed, s.regular1, s.regular2]
    json.dumps(rows)  # rows survive XCom
    assert rows[0]["payload"] == {"a": 1}
    remaining = gw_db.jobs()
    assert remaining == {s.locked: before[s.locked], s.untouched: before[s.untouched]}


def test_report_says_why_each_id_was_skipped(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    s = make_selection_of_jobs(gw_db)
    missing = s.untouched + 1000

    report = hook.run_job_function("complete_jobs", [s.regular1, s.locked, missing])

    assert report.affected == [s.regular1]
    assert [(item["id"], item["reason"]) for item in report.skipped] == [
        (s.locked, "locked"),
        (missing, "unknown"),
    ]
    assert report.skipped[0]["locked_by"] == "test"
    assert "skipped, no such job: " + str(missing) in report.summary()
    json.dumps(report.to_xcom())


@pytest.mark.parametrize(
    ("lock_age", "completed"),
    [
        (timedelta(hours=4, minutes=1), True),  # stale: counts as no lock
        (timedelta(hours=3, minutes=59), False),
    ],
    ids=["lock-older-than-4h", "lock-younger-than-4h"],
)
def test_four_hour_rule(
    gw_db: GraphileDB, hook: GraphileWorkerHook, lock_age: timedelta, completed: bool
) -> None:
    job = gw_db.add_job("job3", queue="q")
    lock_job(gw_db, job, "pool-dead", ago=lock_age)

    preview = hook.run_job_function("complete_jobs", [job], dry_run=True)
    report = hook.run_job_function("complete_jobs", [job])

    assert (report.affected == [job]) is completed
    assert preview.affected == report.affected
    assert [i["id"] for i in preview.skipped] == [i["id"] for i in report.skipped]
    assert (job in gw_db.jobs()) is not completed
    # complete_jobs never releases the queue's lock, even when it ignored a stale job lock.
    assert gw_db.queues()["q"]["locked_by"] == "pool-dead"


def test_dry_run_reports_the_real_outcome_and_changes_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    s = make_selection_of_jobs(gw_db)
    ids = [s.failed, s.locked, s.regular2, 999_999]
    before = snapshot(gw_db)

    preview = hook.run_job_function("complete_jobs", ids, dry_run=True)
    assert snapshot(gw_db) == before
    report = hook.run_job_function("complete_jobs", ids)

    assert preview.dry_run and "would change" in preview.summary()
    assert preview.affected == report.affected == [s.failed, s.regular2]
    assert preview.skipped == report.skipped


def test_empty_list_is_a_no_op(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    assert hook.complete_jobs([]) == []
    assert snapshot(gw_db) == before


@pytest.mark.parametrize(
    "bad",
    [[1, "x"], [0], [-1], [2**63], [1, 1], "[1,", [1.5], {1, 2}],
    ids=["not-int", "zero", "negative", "beyond-bigint", "duplicate", "bad-json", "float", "set"],
)
def test_bad_ids_change_nothing(gw_db: GraphileDB, hook: GraphileWorkerHook, bad: object) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    ids = [s.regular1, *bad] if isinstance(bad, list) else bad
    with pytest.raises(GraphileWorkerInputError, match="job_ids"):
        hook.complete_jobs(ids)
    assert snapshot(gw_db) == before
