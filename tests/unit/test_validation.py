"""Input checks: every bad value is refused with a message that names it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.validation import (
    BIGINT_MAX,
    parse_bool,
    parse_cleanup_tasks,
    parse_duration,
    parse_identifiers,
    parse_job_ids,
    parse_locker_ids,
    parse_run_at,
    parse_smallint,
    validate_schema_name,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ([3, 1, 2], [3, 1, 2]),
        ((5,), [5]),
        (7, [7]),
        ("[1, 2, 3]", [1, 2, 3]),  # a JSON list, as Jinja renders an XCom list
        ("1, 2, 3", [1, 2, 3]),  # what a person types
        ('["12", "13"]', [12, 13]),  # Graphile Worker's JS API gives ids as strings
        ([BIGINT_MAX], [BIGINT_MAX]),
        ([], []),
        ("[]", []),
    ],
)
def test_job_ids_accepted(value: object, expected: list[int]) -> None:
    assert parse_job_ids(value) == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ([1, "abc"], "'abc'"),
        ([1, 2.5], "2.5"),
        ([1, True], "True"),
        ([0], "0"),
        ([-4], "-4"),
        ([BIGINT_MAX + 1], str(BIGINT_MAX + 1)),
        ([1, None], "None"),
        ("not a list", "'not a list'"),
        ("[1, 2", "'[1, 2'"),
        ({1, 2}, "set"),
        (None, "None"),
        ([4, 5, 4], "duplicate values 4"),
    ],
)
def test_job_ids_refused_naming_the_value(value: object, named: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match="job_ids") as error:
        parse_job_ids(value)
    assert named in str(error.value)


def test_locker_ids() -> None:
    assert parse_locker_ids(["pool-a", "pool-b"]) == ["pool-a", "pool-b"]
    assert parse_locker_ids("pool-a") == ["pool-a"]
    assert parse_locker_ids("['pool-a', 'pool-b']") == ["pool-a", "pool-b"]  # Python repr
    assert parse_locker_ids('["pool-a"]') == ["pool-a"]
    assert parse_locker_ids([]) == []


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ([""], "''"),
        (["pool-a", 3], "3"),
        (["pool-a,pool-b"], "'pool-a,pool-b'"),
        ([" pool-a"], "' pool-a'"),
        (["pool-a", "pool-a"], "duplicate values 'pool-a'"),
        ("[pool-a]", "'[pool-a]'"),
    ],
)
def test_locker_ids_refused(value: object, named: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match="locker_ids") as error:
        parse_locker_ids(value)
    assert named in str(error.value)


def test_cleanup_tasks_run_in_graphile_order_whatever_the_order_given() -> None:
    assert parse_cleanup_tasks(["GC_JOB_QUEUES", "DELETE_PERMAFAILED_JOBS"]) == [
        "DELETE_PERMAFAILED_JOBS",
        "GC_JOB_QUEUES",
    ]
    assert parse_cleanup_tasks("GC_JOB_QUEUES,GC_TASK_IDENTIFIERS") == [
        "GC_TASK_IDENTIFIERS",
        "GC_JOB_QUEUES",
    ]
    assert parse_cleanup_tasks('["GC_JOB_QUEUES"]') == ["GC_JOB_QUEUES"]


@pytest.mark.parametrize("value", [["GC_JOB_QUEUES", "VACUUM"], "gc_job_queues", [], ""])
def test_cleanup_tasks_refused_with_allowed_values(value: object) -> None:
    with pytest.raises(GraphileWorkerInputError) as error:
        parse_cleanup_tasks(value)
    message = str(error.value)
    assert "allowed values: DELETE_PERMAFAILED_JOBS, GC_TASK_IDENTIFIERS, GC_JOB_QUEUES" in message
    if value == ["GC_JOB_QUEUES", "VACUUM"]:
        assert "'VACUUM'" in message


def test_run_at() -> None:
    aware = datetime(2026, 1, 31, 18, 0, tzinfo=timezone.utc)
    assert parse_run_at(aware) == aware
    assert parse_run_at("2026-01-31T18:00:00Z") == aware
    assert parse_run_at("2026-01-31T19:00:00+01:00") == aware
    assert parse_run_at(None) is None
    assert parse_run_at("") is None


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("2026-01-31T18:00:00", "has no time zone"),
        (datetime(2026, 1, 31, 18, 0), "has no time zone"),
        ("tomorrow", "cannot parse 'tomorrow'"),
        ("2026-13-01T00:00:00Z", "cannot parse"),
        (1767225600, "1767225600"),
    ],
)
def test_run_at_refused(value: object, named: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match="run_at") as error:
        parse_run_at(value)
    assert named in str(error.value)


def test_smallint_ranges_follow_graphile_worker_columns() -> None:
    assert parse_smallint(-32768, "priority") == -32768
    assert parse_smallint("12", "priority") == 12
    assert parse_smallint(None, "priority") is None
    assert parse_smallint(0, "attempts", minimum=0) == 0
    for value, minimum in [(32768, -32768), (-32769, -32768), (-1, 0), (0, 1)]:
        with pytest.raises(GraphileWorkerInputError, match=str(value)):
            parse_smallint(value, "x", minimum=minimum)
    for value in ["high", 1.5, True]:
        with pytest.raises(GraphileWorkerInputError, match="is not an integer"):
            parse_smallint(value, "priority")


def test_identifiers_and_schema_names() -> None:
    assert parse_identifiers(None, "keep") == []
    assert parse_identifiers('["a", "b"]', "keep") == ["a", "b"]
    with pytest.raises(GraphileWorkerInputError, match="''"):
        parse_identifiers(["a", ""], "keep")
    assert validate_schema_name('odd "name"; drop') == 'odd "name"; drop'
    for bad in ["", "x" * 64, "a\x00b", 5]:
        with pytest.raises(GraphileWorkerInputError, match="worker_schema"):
            validate_schema_name(bad)


def test_bool_and_duration() -> None:
    assert parse_bool("True", "dry_run") is True
    assert parse_bool("false", "dry_run") is False
    with pytest.raises(GraphileWorkerInputError, match="'yes'"):
        parse_bool("yes", "dry_run")
    assert parse_duration(90, "stuck_after") == timedelta(seconds=90)
    assert parse_duration(timedelta(minutes=2), "stuck_after") == timedelta(minutes=2)
    with pytest.raises(GraphileWorkerInputError, match="negative"):
        parse_duration(-1, "stuck_after")
