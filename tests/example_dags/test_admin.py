"""example_dags/graphile_worker_admin.py: one action per run, from the trigger form's params."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB
from devkit.selection import lock_job, make_selection_of_jobs, snapshot

ACTIONS = ["complete", "permanently_fail", "reschedule", "force_unlock", "cleanup"]


@pytest.fixture
def admin(run_example: Callable[..., DagRunResult]) -> Callable[..., DagRunResult]:
    """Run the admin DAG against the test database (it uses graphile_worker_default)."""

    def run(**conf: Any) -> DagRunResult:
        return run_example("graphile_worker_admin", conf)

    return run


def _only(result: DagRunResult, action: str) -> dict[str, Any]:
    assert result.state == "success", result.task_states
    for other in ACTIONS:
        assert result.task_states[other] == ("success" if other == action else "skipped")
    return dict(result.xcom[action])


def test_dry_run_is_the_default_and_changes_nothing(
    gw_db: GraphileDB, admin: Callable[..., DagRunResult]
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    xcom = _only(admin(action="complete", job_ids=[s.regular1, s.locked]), "complete")
    assert xcom["dry_run"] is True and xcom["affected"] == [s.regular1]
    assert snapshot(gw_db) == before


def test_each_action_applies_when_dry_run_is_off(
    gw_db: GraphileDB, admin: Callable[..., DagRunResult], heartbeats: Callable[..., None]
) -> None:
    s = make_selection_of_jobs(gw_db)

    done = _only(admin(action="complete", job_ids=[s.regular1], dry_run=False), "complete")
    assert done["affected"] == [s.regular1] and s.regular1 not in gw_db.jobs()

    failed = _only(
        admin(action="permanently_fail", job_ids=[s.regular2], reason="404", dry_run=False),
        "permanently_fail",
    )
    assert failed["affected"] == [s.regular2]
    assert gw_db.jobs()[s.regular2]["last_error"] == "404"

    later = datetime(2030, 1, 1, 22, 0, tzinfo=timezone.utc)
    moved = _only(
        admin(
            action="reschedule",
            job_ids=[s.untouched],
            run_at=later.isoformat(),
            priority=3,
            dry_run=False,
        ),
        "reschedule",
    )
    assert moved["affected"] == [s.untouched]
    assert (gw_db.jobs()[s.untouched]["run_at"], gw_db.jobs()[s.untouched]["priority"]) == (
        later,
        3,
    )

    # force_unlock re-checks heartbeats: the dead locker is unlocked, a live one (fresh
    # heartbeat) and a silent one (none) are left alone, unless the override is used.
    crashed = gw_db.add_job("job3", queue="billing")
    lock_job(gw_db, crashed, "pool-dead", ago=timedelta(minutes=9))
    running = gw_db.add_job("job3", queue="reports")
    lock_job(gw_db, running, "pool-live", ago=timedelta(minutes=9))
    silent = gw_db.add_job("job3")
    lock_job(gw_db, silent, "pool-silent", ago=timedelta(minutes=9))
    heartbeats("pool-dead", ago=timedelta(minutes=9))
    heartbeats("pool-live")
    unlocked = _only(
        admin(
            action="force_unlock",
            locker_ids=["pool-dead", "pool-live", "pool-silent"],
            dry_run=False,
        ),
        "force_unlock",
    )
    assert unlocked["unlocked_job_ids"] == [crashed]
    assert unlocked["unlocked_queue_names"] == ["billing"]
    assert sorted(s["locker_id"] for s in unlocked["spared"]) == ["pool-live", "pool-silent"]
    assert unlocked["liveness_check"].startswith("lease + heartbeat in public.")
    assert gw_db.jobs()[running]["locked_by"] == "pool-live"
    overridden = _only(
        admin(
            action="force_unlock",
            locker_ids=["pool-silent"],
            skip_liveness_check=True,
            dry_run=False,
        ),
        "force_unlock",
    )
    assert overridden["unlocked_job_ids"] == [silent]
    assert overridden["liveness_check"] == "skipped (skip_liveness_check=True)"

    cleaned = _only(admin(action="cleanup", dry_run=False), "cleanup")
    assert cleaned["removed"]["DELETE_PERMAFAILED_JOBS"] == 2  # the selection's and job 2
    assert s.failed not in gw_db.jobs()


@pytest.mark.parametrize(
    "conf",
    [
        {"action": "delete_everything"},
        {"job_ids": [0]},
        {"job_ids": ["12abc"]},
        {"job_ids": [5, 5]},
        {"priority": 40000},
        {"attempts": -1},
        {"max_attempts": 0},
        {"run_at": "tomorrow"},
        {"run_at": "2030-01-01T22:00:00"},  # no time zone
        {"cleanup_tasks": ["VACUUM"]},
        {"dry_run": "maybe"},
    ],
    ids=lambda conf: next(iter(conf)) + "=" + str(next(iter(conf.values()))),
)
def test_the_form_refuses_bad_values_before_any_task_runs(
    gw_db: GraphileDB, admin: Callable[..., DagRunResult], conf: dict[str, Any]
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(ParamValidationError):
        admin(**{"action": "reschedule", "job_ids": [s.regular1], "dry_run": False, **conf})
    assert snapshot(gw_db) == before


@pytest.mark.parametrize(
    "conf",
    [
        {"action": "reschedule"},  # nothing to change
        {"action": "reschedule", "attempts": 9, "max_attempts": 3},
    ],
)
def test_the_operators_refuse_what_the_form_cannot_check(
    gw_db: GraphileDB, admin: Callable[..., DagRunResult], conf: dict[str, Any]
) -> None:
    s = make_selection_of_jobs(gw_db)
    before = snapshot(gw_db)
    result = admin(job_ids=[s.regular1], dry_run=False, **conf)
    assert result.task_states["reschedule"] == "failed"
    assert snapshot(gw_db) == before
