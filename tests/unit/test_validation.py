"""Input checks: every bad value is refused with a message that names it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.filters import parse_job_filter
from airflow_graphile.validation import (
    BIGINT_MAX,
    parse_batch_size,
    parse_bool,
    parse_cleanup_tasks,
    parse_duration,
    parse_identifiers,
    parse_job_ids,
    parse_locker_ids,
    parse_max_workers,
    parse_reason,
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


@pytest.mark.parametrize(
    ("call", "named"),
    [
        # Unicode digits pass str.isdigit() but are no number we accept.
        (lambda: parse_job_ids(["²"]), "job_ids"),
        (lambda: parse_job_ids("٣"), "job_ids"),
        (lambda: parse_smallint("²", "priority"), "priority"),
        (lambda: parse_max_workers("²"), "max_workers"),
        (lambda: parse_batch_size("¹⁰"), "batch_size"),
        # Durations a timedelta cannot hold, or no duration at all.
        (lambda: parse_duration("inf", "dead_after"), "dead_after"),
        (lambda: parse_duration("nan", "grace"), "grace"),
        (lambda: parse_duration(1e20, "statement_timeout"), "statement_timeout"),
        (lambda: parse_duration(float("-inf"), "lock_timeout"), "lock_timeout"),
        # NUL bytes: PostgreSQL text cannot hold them.
        (lambda: parse_reason("bad\x00reason"), "reason"),
        (lambda: parse_locker_ids(["pool-\x00"]), "locker_ids"),
        (lambda: parse_identifiers(["q\x00"], "queue_names"), "queue_names"),
        (
            lambda: parse_identifiers(["t\x00"], "task_identifiers_to_keep"),
            "task_identifiers_to_keep",
        ),
        (lambda: parse_job_filter({"last_error_pattern": "a\x00"}), "last_error_pattern"),
        (lambda: parse_job_filter({"task_identifiers": ["x\x00"]}), "task_identifiers"),
        # Times outside what every reader can read back.
        (lambda: parse_run_at("9999-12-31T23:59:59-14:00"), "run_at"),
        (lambda: parse_run_at("0001-01-01T00:00:00+14:00"), "run_at"),
        (lambda: parse_run_at("1969-12-31T23:59:59+00:00"), "run_at"),
    ],
)
def test_hostile_input_is_our_error_naming_the_argument(call: object, named: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match=rf"^{named}: "):
        call()  # type: ignore[operator]


def test_ascii_numbers_and_sane_times_still_pass() -> None:
    assert parse_job_ids([" 7 ", "+8"]) == [7, 8]
    assert parse_smallint("-3", "priority") == -3
    assert parse_max_workers("2") == 2
    assert parse_duration("1.5", "grace") == timedelta(seconds=1.5)
    assert parse_run_at("9999-12-29T00:00:00+00:00") is not None
    assert parse_run_at("1970-01-01T00:00:00Z") is not None
