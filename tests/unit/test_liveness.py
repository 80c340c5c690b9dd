"""The liveness rule and the crash note: pure logic."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks.rescue import HeartbeatTable, crash_note
from airflow_graphile.liveness import ALIVE, DEAD, UNKNOWN, Facts, LivenessRule, Verdict, judge

RULE = LivenessRule(grace=timedelta(seconds=3), dead_after=timedelta(seconds=60))


@pytest.mark.parametrize(
    ("facts", "state", "evidence"),
    [
        # A held lease is life, whatever the row says (busy, paused, forged row).
        (
            Facts(
                "a",
                lease_free=False,
                has_row=True,
                row_lease=True,
                silent_seconds=3600,
                age_seconds=3600,
            ),
            ALIVE,
            "lease",
        ),
        (Facts("a", lease_free=False), ALIVE, "lease"),
        # Lease free and silent past the grace: dead.
        (
            Facts(
                "a",
                lease_free=True,
                has_row=True,
                row_lease=True,
                silent_seconds=3.0,
                age_seconds=3.0,
            ),
            DEAD,
            "lease",
        ),
        # Lease free but it beat just now: reconnecting, alive.
        (
            Facts(
                "a",
                lease_free=True,
                has_row=True,
                row_lease=True,
                silent_seconds=1.0,
                age_seconds=1.0,
            ),
            ALIVE,
            "lease",
        ),
        # Without a lease: heartbeat age only.
        (
            Facts("a", lease_free=True, has_row=True, silent_seconds=61, age_seconds=61),
            DEAD,
            "heartbeat",
        ),
        (
            Facts("a", lease_free=True, has_row=True, silent_seconds=59, age_seconds=59),
            ALIVE,
            "heartbeat",
        ),
        # Nothing known.
        (Facts("a", lease_free=True), UNKNOWN, "none"),
    ],
)
def test_rule(facts: Facts, state: str, evidence: str) -> None:
    verdict = judge(facts, RULE)
    assert (verdict.state, verdict.evidence) == (state, evidence)


def test_missing_is_dead_only_when_asked() -> None:
    rule = LivenessRule(missing_is_dead=True)
    assert judge(Facts("a", lease_free=True), rule).state == DEAD
    assert judge(Facts("a", lease_free=False), rule).state == ALIVE


AT = datetime(2026, 11, 29, 12, tzinfo=timezone.utc)
DIED = Verdict("pool-x", DEAD, "lease", "lease free and no beat for 4.0 s")


def test_crash_note_counts_crashes_in_a_row_and_keeps_the_first_error() -> None:
    job = {"attempts": 1, "max_attempts": 1, "last_error": "550 mailbox unavailable"}
    attempts, error, poisoned = crash_note(job, DIED, AT, 3)
    assert (attempts, poisoned) == (0, False)
    assert error.startswith("airflow-graphile: a worker died under this job (crash 1 in a row")
    assert error.endswith("\n-- previous error --\n550 mailbox unavailable")
    attempts, error, poisoned = crash_note({**job, "last_error": error}, DIED, AT, 3)
    assert (attempts, poisoned) == (0, False)
    assert "(crash 2 in a row" in error and error.count("550 mailbox") == 1
    attempts, error, poisoned = crash_note({**job, "last_error": error}, DIED, AT, 3)
    assert (attempts, poisoned) == (1, True)
    assert "died under this job 3 times in a row" in error
    assert error.endswith("550 mailbox unavailable")


@pytest.mark.parametrize("bad", ["", "a.b.c", 7, None, "public.bad\x00name"])
def test_heartbeat_table_names_the_argument(bad: object) -> None:
    with pytest.raises(GraphileWorkerInputError, match="heartbeat_table"):
        HeartbeatTable.parse(bad)


def test_heartbeat_table_default_schema() -> None:
    assert str(HeartbeatTable.parse("beats")) == "public.beats"
    assert str(HeartbeatTable.parse("ops.beats")) == "ops.beats"
