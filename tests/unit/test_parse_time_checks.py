"""Arguments written as plain values in a DAG file are checked when the file is parsed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.operators import (
    GraphileWorkerCleanupOperator,
    GraphileWorkerCompleteJobsOperator,
    GraphileWorkerForceUnlockWorkersOperator,
    GraphileWorkerPermanentlyFailJobsOperator,
    GraphileWorkerQueueStatsOperator,
    GraphileWorkerRescheduleJobsOperator,
    GraphileWorkerRescueDeadWorkersOperator,
)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: GraphileWorkerCompleteJobsOperator(task_id="t", job_ids=[1, 1]), "job_ids"),
        (
            lambda: GraphileWorkerCompleteJobsOperator(task_id="t", job_ids=[1], dry_run="yes"),
            "dry_run",
        ),
        (
            lambda: GraphileWorkerCompleteJobsOperator(
                task_id="t", job_filter={"states": ["nope"]}
            ),
            "states",
        ),
        (
            lambda: GraphileWorkerCompleteJobsOperator(task_id="t", job_ids=[1], batch_size=0),
            "batch_size",
        ),
        (
            lambda: GraphileWorkerRescheduleJobsOperator(
                task_id="t", job_ids=[1], run_at="tomorrow"
            ),
            "run_at",
        ),
        (
            lambda: GraphileWorkerRescheduleJobsOperator(task_id="t", job_ids=[1], priority=99999),
            "priority",
        ),
        (
            lambda: GraphileWorkerPermanentlyFailJobsOperator(
                task_id="t", job_ids=[1], reason="a\x00"
            ),
            "reason",
        ),
        (lambda: GraphileWorkerCleanupOperator(task_id="t", tasks=["VACUUM"]), "tasks"),
        (
            lambda: GraphileWorkerCleanupOperator(
                task_id="t", tasks="GC_JOB_QUEUES", lock_timeout="soon"
            ),
            "lock_timeout",
        ),
        (
            lambda: GraphileWorkerQueueStatsOperator(task_id="t", thresholds={"readdy": 1}),
            "thresholds",
        ),
        (lambda: GraphileWorkerRescueDeadWorkersOperator(task_id="t", grace="inf"), "grace"),
        (
            lambda: GraphileWorkerForceUnlockWorkersOperator(task_id="t", locker_ids=[""]),
            "locker_ids",
        ),
    ],
)
def test_a_typo_fails_when_the_dag_is_parsed(make: Callable[[], Any], named: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match=rf"^{named}: "):
        make()


def test_templates_and_upstream_results_wait_for_the_run() -> None:
    GraphileWorkerRescheduleJobsOperator(
        task_id="t", job_ids="{{ params.ids }}", run_at="{{ params.when }}", priority="{{ p }}"
    )
    GraphileWorkerCompleteJobsOperator(
        task_id="t", job_filter={"states": "{{ params.states }}"}, allow_all="{{ params.all }}"
    )
    GraphileWorkerCleanupOperator(task_id="t", tasks="{{ params.tasks }}")
