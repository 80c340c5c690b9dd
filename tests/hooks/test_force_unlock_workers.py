"""force_unlock_workers through the hook, on every pinned Graphile Worker version."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import lock_job, snapshot

# (locked by, queue), as in Graphile Worker's own forceUnlockWorkers test.
SPECS = [
    ("worker1", None),
    ("worker1", "test"),
    ("worker2", None),
    ("worker2", "test2"),
    ("worker2", "test3"),
    ("worker3", None),
    (None, None),
    (None, "test"),
    (None, "test2"),
    (None, "test3"),
]


def _lock_specs(db: GraphileDB) -> list[int]:
    ids = []
    for n, (worker, queue) in enumerate(SPECS):
        job = db.add_job("job3", {"a": n}, queue=queue)
        if worker:
            lock_job(db, job, worker, ago=timedelta(minutes=n + 1))
        ids.append(job)
    return ids


def test_unlocks_jobs_and_queues_of_the_given_workers_only(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    ids = _lock_specs(gw_db)
    before = gw_db.jobs()

    report = hook.force_unlock_workers(["worker2", "worker3"])

    after = gw_db.jobs()
    for job_id, (worker, _queue) in zip(ids, SPECS, strict=True):
        if worker in ("worker2", "worker3"):
            assert (after[job_id]["locked_by"], after[job_id]["locked_at"]) == (None, None)
            # The crashed run's attempt is not given back.
            assert after[job_id]["attempts"] == before[job_id]["attempts"]
        else:
            assert after[job_id] == before[job_id]
    locked_queues = {q: r["locked_by"] for q, r in gw_db.queues().items() if r["locked_at"]}
    assert locked_queues == {"test": "worker1"}

    xcom = report.to_xcom()
    json.dumps(xcom)
    assert xcom["unlocked_job_ids"] == [ids[2], ids[3], ids[4], ids[5]]
    assert xcom["unlocked_queue_names"] == ["test2", "test3"]
    assert xcom["by_locker"]["worker3"] == {"job_ids": [ids[5]], "queue_names": []}
    assert xcom["held_nothing"] == []


def test_dry_run_reports_the_same_locks_and_changes_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    _lock_specs(gw_db)
    before = snapshot(gw_db)
    preview = hook.force_unlock_workers(["worker2", "nobody"], dry_run=True)
    assert snapshot(gw_db) == before
    report = hook.force_unlock_workers(["worker2", "nobody"])
    assert preview.to_xcom() | {"dry_run": False} == report.to_xcom()
    assert report.to_xcom()["held_nothing"] == ["nobody"]


def test_worker_style_ids_get_a_hint_on_pool_id_versions(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    report = hook.force_unlock_workers(["worker-0123456789abcdef01"], dry_run=True)
    if gw_db.revision >= 19:
        assert report.hint is not None and "pool ids" in report.hint
    else:
        assert report.hint is None


@pytest.mark.parametrize("bad", [[""], ["a", "a"], [3], "[unterminated", ["a,b"]], ids=str)
def test_bad_locker_ids_change_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook, bad: object
) -> None:
    _lock_specs(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match="locker_ids"):
        hook.force_unlock_workers(bad)
    assert snapshot(gw_db) == before
