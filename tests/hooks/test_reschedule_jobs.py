"""reschedule_jobs through the hook, on every pinned Graphile Worker version."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import make_selection_of_jobs, snapshot


def test_reschedules_the_jobs_and_leaves_others_unaffected(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = gw_db.jobs()
    tonight = datetime(2030, 1, 1, 22, 0, tzinfo=timezone.utc)

    rows = hook.reschedule_jobs(
        [s.failed, s.regular1, s.locked, s.regular2],
        run_at=tonight,
        priority=5,
        attempts=2,
        max_attempts=10,
    )

    assert sorted(row["id"] for row in rows) == [s.failed, s.regular1, s.regular2]
    after = gw_db.jobs()
    for job_id in (s.failed, s.regular1, s.regular2):
        job = after[job_id]
        assert (job["run_at"], job["priority"], job["attempts"], job["max_attempts"]) == (
            tonight,
            5,
            2,
            10,
        )
    assert after[s.locked] == before[s.locked]
    assert after[s.untouched] == before[s.untouched]


def test_none_leaves_a_column_unchanged_and_zero_is_a_value(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = gw_db.jobs()[s.failed]

    hook.reschedule_jobs([s.failed], attempts=0)

    after = gw_db.jobs()[s.failed]
    assert after["attempts"] == 0  # the failed job gets its retries back
    for column in ("run_at", "priority", "max_attempts", "last_error"):
        assert after[column] == before[column]


def test_run_at_as_iso_text(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    job = gw_db.add_job("job3")
    hook.reschedule_jobs([job], run_at="2030-06-01T12:00:00+02:00")
    assert gw_db.jobs()[job]["run_at"] == datetime(2030, 6, 1, 10, 0, tzinfo=timezone.utc)


def test_dry_run_matches_and_changes_nothing(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    ids = [s.locked, s.regular1, 424242]
    preview = hook.run_job_function("reschedule_jobs", ids, priority=3, dry_run=True)
    assert snapshot(gw_db) == before
    report = hook.run_job_function("reschedule_jobs", ids, priority=3)
    assert preview.affected == report.affected == [s.regular1]
    assert preview.skipped == report.skipped


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"run_at": "2030-01-01T00:00:00"}, "has no time zone"),
        ({"run_at": datetime(2030, 1, 1)}, "has no time zone"),
        ({"run_at": "next tuesday"}, "cannot parse 'next tuesday'"),
        ({"priority": 40000}, "priority: 40000 is out of range"),
        ({"priority": "urgent"}, "priority: 'urgent' is not an integer"),
        ({"attempts": -1}, "attempts: -1 is out of range"),
        ({"max_attempts": 0}, "max_attempts: 0 is out of range"),
        ({"max_attempts": 2**15}, "max_attempts: 32768 is out of range"),
        ({"attempts": 5, "max_attempts": 3}, "attempts: 5 is more than max_attempts 3"),
        ({}, "nothing to change"),
    ],
)
def test_bad_arguments_change_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook, changes: dict[str, Any], named: str
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError) as error:
        hook.reschedule_jobs([s.regular1], **changes)
    assert named in str(error.value)
    assert snapshot(gw_db) == before


def test_in_the_past_makes_a_job_due_now(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    job = gw_db.add_job("job3", run_at=datetime.now(timezone.utc) + timedelta(days=1))
    hook.reschedule_jobs([job], run_at=datetime(2000, 1, 1, tzinfo=timezone.utc))
    assert gw_db.jobs()[job]["run_at"] < datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("run_at", "seconds"),
    [("+1h", 3600), (" +15m ", 900), ("-2d", -172800), (timedelta(minutes=5), 300)],
)
def test_relative_run_at_counts_from_the_database_clock(
    gw_db: GraphileDB, hook: GraphileWorkerHook, run_at: object, seconds: float
) -> None:
    job = gw_db.add_job("job3")
    (row,) = hook.reschedule_jobs([job], run_at=run_at)  # type: ignore[arg-type]
    (now,) = gw_db.query(sql.SQL("select now() as now"))
    moved = (
        datetime.fromisoformat(row["run_at"]) if isinstance(row["run_at"], str) else row["run_at"]
    )
    assert abs((moved - now["now"]).total_seconds() - seconds) < 60


@pytest.mark.parametrize("bad", ["+1y", "+", "1h", "+1e9h", "+100000w"])
def test_relative_run_at_refused_naming_it(hook: GraphileWorkerHook, bad: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match=r"^run_at: "):
        hook.reschedule_jobs([1], run_at=bad)
