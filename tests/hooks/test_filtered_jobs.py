"""Bulk operations by filter, in batches, on every pinned Graphile Worker version."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerInputError, GraphileWorkerTransientError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.process import wait_for
from devkit.selection import fail_permanently, lock_job, snapshot


def _set(db: GraphileDB, job: int, **columns: Any) -> None:
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = %s").format(sql.Identifier(column)) for column in columns
    )
    db.query(
        sql.SQL("update {} set {} where id = %s").format(
            sql.Identifier(db.schema, "_private_jobs"), assignments
        ),
        [*columns.values(), job],
    )


def _zoo(db: GraphileDB) -> dict[str, int]:
    """One job in each state, with varied tasks, queues, ages and errors."""
    now = datetime.now(timezone.utc)
    jobs = {
        "ready": db.add_job("send_email"),
        "scheduled": db.add_job("send_email", queue="billing", run_at=now + timedelta(days=1)),
        "retrying": db.add_job("send_email"),
        "failed": db.add_job("charge", queue="billing", max_attempts=3),
        "locked": db.add_job("charge"),
        "old": db.add_job("charge"),
    }
    _set(db, jobs["retrying"], attempts=2, last_error="SMTP timeout")
    fail_permanently(db, jobs["failed"])
    _set(db, jobs["failed"], last_error="card declined")
    lock_job(db, jobs["locked"], "pool-busy")
    _set(db, jobs["old"], created_at=now - timedelta(days=10))
    return jobs


NOW = datetime.now(timezone.utc)


@pytest.mark.parametrize(
    ("job_filter", "expected"),
    [
        ({"task_identifiers": ["send_email"]}, {"ready", "scheduled", "retrying"}),
        ({"queue_names": ["billing"]}, {"scheduled", "failed"}),
        ({"states": ["ready"]}, {"ready", "old"}),
        ({"states": ["scheduled"]}, {"scheduled"}),
        ({"states": ["retrying"]}, {"retrying"}),
        ({"states": ["failed"]}, {"failed"}),
        ({"states": ["retrying", "failed"]}, {"retrying", "failed"}),
        ({"min_attempts": 2}, {"retrying", "failed"}),
        ({"last_error_pattern": "^card"}, {"failed"}),
        ({"created_before": (NOW - timedelta(days=5)).isoformat()}, {"old"}),
        ({"run_at_after": (NOW + timedelta(hours=1)).isoformat()}, {"scheduled"}),
        ({"task_identifiers": ["charge"], "states": ["ready"]}, {"old"}),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_each_condition_selects_the_right_jobs(
    gw_db: GraphileDB, hook: GraphileWorkerHook, job_filter: dict[str, Any], expected: set[str]
) -> None:
    jobs = _zoo(gw_db)
    before = gw_db.jobs()

    report = hook.run_job_function_on_filter("reschedule_jobs", job_filter, priority=7)

    after = gw_db.jobs()
    changed = {name for name, job in jobs.items() if after[job]["priority"] == 7}
    assert changed == expected
    assert report.changed == len(expected)
    for name, job in jobs.items():
        if name not in expected:
            assert after[job] == before[job]


def test_locked_jobs_are_skipped_and_counted(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    jobs = _zoo(gw_db)
    preview = hook.run_job_function_on_filter(
        "complete_jobs", {"task_identifiers": ["charge"]}, dry_run=True
    )
    assert (preview.matched_at_start, preview.locked_at_start) == (3, 1)
    assert [row["id"] for row in preview.sample] == sorted(
        [jobs["failed"], jobs["locked"], jobs["old"]]
    )
    report = hook.run_job_function_on_filter("complete_jobs", {"task_identifiers": ["charge"]})
    assert (report.processed, report.changed, report.skipped_locked) == (3, 2, 1)
    assert set(gw_db.jobs()) == {jobs["ready"], jobs["scheduled"], jobs["retrying"], jobs["locked"]}


def test_batches_and_rerun(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    _many(gw_db, 2_500, "bulk")
    report = hook.run_job_function_on_filter(
        "permanently_fail_jobs", {"task_identifiers": ["bulk"], "states": ["ready"]},
        batch_size=100, reason="bulk",
    )  # fmt: skip
    assert (report.matched_at_start, report.processed, report.changed) == (2500, 2500, 2500)
    assert report.batches == 26  # 25 full batches and the empty one that ends the run
    assert 0 < report.longest_batch_seconds < report.seconds
    again = hook.run_job_function_on_filter(
        "permanently_fail_jobs", {"task_identifiers": ["bulk"], "states": ["ready"]}
    )
    assert (again.matched_at_start, again.changed) == (0, 0)


def test_sparse_matches_are_found_across_scan_windows(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    # A batch reads at most SCAN_FACTOR x batch_size jobs (100 here); the gaps between
    # these matches are longer, then come full batches, then a tail with no match.
    rare = []
    for _ in range(3):
        _many(gw_db, 450, "other")
        rare.append(gw_db.add_job("rare"))
    _many(gw_db, 25, "rare")
    _many(gw_db, 30, "other")
    report = hook.run_job_function_on_filter(
        "reschedule_jobs", {"task_identifiers": ["rare"]}, batch_size=10, priority=5
    )
    assert (report.matched_at_start, report.processed, report.changed) == (28, 28, 28)
    jobs = gw_db.jobs()
    changed = [job for job in jobs.values() if job["priority"] == 5]
    assert len(changed) == 28
    assert {job["task_id"] for job in changed} == {jobs[rare[0]]["task_id"]}
    assert report.batches >= len(jobs) // 100


def test_a_job_ids_filter_reads_only_those_jobs(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    first = gw_db.add_job("other")
    _many(gw_db, 1_000, "other")
    last = gw_db.add_job("other")
    report = hook.run_job_function_on_filter(
        "reschedule_jobs", {"job_ids": [last, first]}, batch_size=10, priority=3
    )
    assert (report.matched_at_start, report.processed, report.changed) == (2, 2, 2)
    assert report.batches == 1  # not one per 100 jobs in between
    jobs = gw_db.jobs()
    assert {job_id for job_id, job in jobs.items() if job["priority"] == 3} == {first, last}


def test_empty_filter_needs_allow_all(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    jobs = _zoo(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError, match="allow_all"):
        hook.run_job_function_on_filter("complete_jobs", {})
    assert snapshot(gw_db) == before
    report = hook.run_job_function_on_filter("complete_jobs", {}, allow_all=True)
    assert report.changed == len(jobs) - 1  # all but the locked one
    assert set(gw_db.jobs()) == {jobs["locked"]}


@pytest.mark.parametrize(
    ("job_filter", "named"),
    [
        ({"states": ["zombie"]}, "unknown state(s) 'zombie'"),
        ({"last_error_pattern": "(unclosed"}, "not a valid PostgreSQL regular expression"),
        ({"colour": "red"}, "unknown condition(s) colour"),
        ({"created_before": "2026-01-01T00:00:00"}, "created_before: '2026-01-01T00:00:00' has"),
        ({"min_attempts": -1}, "min_attempts: -1 is out of range"),
        ({"job_ids": [0]}, "job_ids: 0 is out of range"),
        ("send_email", "expected a dict"),
    ],
)
def test_bad_filters_change_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook, job_filter: Any, named: str
) -> None:
    _zoo(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError) as error:
        hook.run_job_function_on_filter("complete_jobs", job_filter)
    assert named in str(error.value)
    assert snapshot(gw_db) == before


def test_no_match_is_a_no_op(gw_db: GraphileDB, hook: GraphileWorkerHook) -> None:
    _zoo(gw_db)
    before = snapshot(gw_db)
    report = hook.run_job_function_on_filter("complete_jobs", {"task_identifiers": ["nope"]})
    assert (report.matched_at_start, report.changed, report.batches) == (0, 0, 1)
    assert snapshot(gw_db) == before


def _many(db: GraphileDB, count: int, task: str) -> None:
    db.query(
        sql.SQL(
            "select count(*) from {}(array(select row(%s, json_build_object('n', g), null, "
            "null, null, null, null, null)::{} from generate_series(1, %s) g))"
        ).format(sql.Identifier(db.schema, "add_jobs"), sql.Identifier(db.schema, "job_spec")),
        [task, count],
    )


def test_a_run_killed_midway_leaves_only_whole_batches_done(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    batch = 500
    _many(gw_db, 30_000, "bulk")
    failed_count = sql.SQL("select count(*) as n from {} where attempts = max_attempts").format(
        sql.Identifier(gw_db.schema, "_private_jobs")
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            hook.run_job_function_on_filter(
                "permanently_fail_jobs", {"task_identifiers": ["bulk"]}, batch_size=batch
            )
        except BaseException as error:  # the terminated backend
            errors.append(error)

    worker = threading.Thread(target=run)
    worker.start()
    wait_for(lambda: gw_db.query(failed_count)[0]["n"] >= 2 * batch, timeout=60, what="2 batches")
    with psycopg.connect(gw_db.dsn, autocommit=True) as admin:
        admin.execute(
            "select pg_terminate_backend(pid) from pg_stat_activity "
            "where datname = current_database() and pid <> pg_backend_pid() "
            "and query like %s",
            ["%with batch as%"],
        )
    worker.join(timeout=60)
    # A lost connection is retryable, and the error says how far the run got.
    assert errors and isinstance(errors[0], GraphileWorkerTransientError), errors
    done = gw_db.query(failed_count)[0]["n"]
    assert 0 < done < 30_000 and done % batch == 0  # no batch half-done
    assert f"{done // batch} batch(es) finished and committed" in str(errors[0])
    assert f"{done} changed" in str(errors[0])

    time.sleep(0.1)
    rest = hook.run_job_function_on_filter("permanently_fail_jobs", {"states": ["ready"]})
    assert rest.changed == 30_000 - done
    assert gw_db.query(failed_count)[0]["n"] == 30_000


def test_rows_with_times_python_cannot_hold_do_not_break_reports(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    """Graphile Worker's own add_job accepts any run_at; a dry run must still describe it."""
    far = gw_db.add_job("send_email")
    _set(gw_db, far, run_at="9999-12-31T23:59:59-14:00")  # stored as year 10000
    old = gw_db.add_job("send_email")
    _set(gw_db, old, run_at="0001-01-01T00:00:00+14:00")  # stored as 1 BC
    report = hook.run_job_function_on_filter(
        "complete_jobs", {"task_identifiers": ["send_email"]}, dry_run=True
    )
    times = {row["id"]: row["run_at"] for row in report.sample}
    assert times[far].startswith("10000-01-01") and times[old].endswith("BC")
    assert hook.queue_stats()["total"] == 2
    with pytest.raises(GraphileWorkerInputError, match=r"^run_at: "):
        hook.reschedule_jobs([far], run_at="9999-12-31T23:59:59-14:00")


def test_find_job_ids_returns_what_a_filter_selects(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    jobs = _zoo(gw_db)
    billing = hook.find_job_ids({"queue_names": ["billing"]})
    assert billing == sorted([jobs["scheduled"], jobs["failed"]])
    assert hook.find_job_ids({"states": ["ready"]}, limit=1) == [jobs["ready"]]
    assert hook.find_job_ids({}, allow_all=True) == sorted(gw_db.jobs())
    with pytest.raises(GraphileWorkerInputError, match=r"^limit: "):
        hook.find_job_ids({"states": ["ready"]}, limit=0)
    with pytest.raises(GraphileWorkerInputError, match="last_error_pattern"):
        hook.find_job_ids({"last_error_pattern": "(("})


def _paced_run(
    gw_db: GraphileDB,
    hook: GraphileWorkerHook,
    monkeypatch: pytest.MonkeyPatch,
    duty_cycle: float,
) -> tuple[Any, list[float], list[float], list[tuple[str, Any]]]:
    """run_batches with a fake sleep: the report, the pauses asked for, each batch's
    statement time, and what the session's transaction state was during each pause."""
    from airflow_graphile.filters import parse_job_filter
    from airflow_graphile.hooks import bulk, job_functions
    from airflow_graphile.reports import BulkReport

    job_filter = parse_job_filter({"task_identifiers": ["bulk"]})
    call = job_functions.job_call("reschedule_jobs", {"priority": 4})
    report = BulkReport(
        "reschedule_jobs", job_filter.to_dict(), dry_run=False, batch_size=100,
        duty_cycle=duty_cycle,
    )  # fmt: skip
    pauses: list[float] = []
    statements: list[float] = []
    seen: list[tuple[str, Any]] = []
    with (
        psycopg.connect(gw_db.dsn, autocommit=True) as admin,
        hook.transaction(autocommit=True) as tx,
    ):
        up_to = bulk.start(tx, job_filter, report)
        pid = tx.cur.connection.info.backend_pid
        one = tx.one

        def timed_one(statement: Any, params: Any = None) -> Any:
            began = time.monotonic()
            try:
                return one(statement, params)
            finally:
                statements.append(time.monotonic() - began)

        def fake_sleep(seconds: float) -> None:
            row = admin.execute(
                "select state, backend_xid from pg_stat_activity where pid = %s", [pid]
            ).fetchone()
            assert row is not None
            seen.append((row[0], row[1]))
            assert tx.cur.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            pauses.append(seconds)

        monkeypatch.setattr(tx, "one", timed_one)
        bulk.run_batches(tx, job_filter, call, report, up_to, sleep=fake_sleep)
    return report, pauses, statements, seen


def test_the_duty_cycle_pauses_between_batches_with_no_transaction_open(
    gw_db: GraphileDB, hook: GraphileWorkerHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    _many(gw_db, 1_000, "bulk")
    report, pauses, statements, seen = _paced_run(gw_db, hook, monkeypatch, 0.25)

    assert (report.processed, report.changed, report.batches) == (1_000, 1_000, 11)
    # A pause after each batch but the last (the empty one that ends the run), three
    # times as long as the batch took at duty_cycle 0.25: t * (1 - d) / d.
    assert len(statements) == 11 and len(pauses) == 10
    for pause, took in zip(pauses, statements[:10], strict=True):
        assert pause == pytest.approx(took * 3, rel=0.1, abs=0.003)
    assert sum(pauses) == pytest.approx(sum(statements[:10]) * 3, rel=0.05, abs=0.01)
    assert report.paused_seconds == pytest.approx(sum(pauses))
    # Between batches the session is idle: no transaction, no transaction id.
    assert seen == [("idle", None)] * 10
    assert {job["priority"] for job in gw_db.jobs().values()} == {4}


def test_duty_cycle_one_never_pauses(
    gw_db: GraphileDB, hook: GraphileWorkerHook, monkeypatch: pytest.MonkeyPatch
) -> None:
    _many(gw_db, 500, "bulk")
    report, pauses, _statements, _seen = _paced_run(gw_db, hook, monkeypatch, 1.0)
    assert (report.changed, report.batches) == (500, 6)
    assert pauses == [] and report.paused_seconds == 0
    assert "paused" not in report.summary()


def test_the_hook_paces_by_its_duty_cycle_and_reports_the_pauses(
    gw_db: GraphileDB, hook: GraphileWorkerHook
) -> None:
    from airflow_graphile.hooks import bulk

    _many(gw_db, 600, "bulk")
    flat = hook.run_job_function_on_filter(
        "reschedule_jobs", {"task_identifiers": ["bulk"]}, batch_size=100, priority=1,
        duty_cycle=1,
    )  # fmt: skip
    assert (flat.changed, flat.duty_cycle, flat.paused_seconds) == (600, 1.0, 0.0)

    paced = hook.run_job_function_on_filter(
        "reschedule_jobs", {"task_identifiers": ["bulk"]}, batch_size=100, priority=2,
        duty_cycle="0.5",
    )  # fmt: skip
    assert (paced.changed, paced.duty_cycle) == (600, 0.5)
    # At 0.5 the run pauses as long as its batches took: at most half of its time.
    assert 0 < paced.paused_seconds < paced.seconds / 2
    xcom = paced.to_xcom()
    assert (xcom["duty_cycle"], xcom["paused_seconds"]) == (0.5, round(paced.paused_seconds, 3))
    assert "paused between batches (duty_cycle 0.5)" in paced.summary()

    default = hook.run_job_function_on_filter(
        "reschedule_jobs", {"task_identifiers": ["bulk"]}, priority=3
    )
    assert default.duty_cycle == bulk.DEFAULT_DUTY_CYCLE
    assert default.changed == 600


def test_a_pause_is_bounded() -> None:
    from airflow_graphile.hooks import bulk

    assert bulk.pause_after(0.04, 0.25) == pytest.approx(0.12)
    assert bulk.pause_after(0.04, 1.0) == 0
    assert bulk.pause_after(60.0, 0.1) == bulk.MAX_PAUSE_SECONDS


@pytest.mark.parametrize(
    "value", [0, -0.5, 1.5, "abc", "0", "nan", float("inf"), True, [0.5], "1.01"]
)
def test_bad_duty_cycles_are_refused_naming_the_argument(
    gw_db: GraphileDB, hook: GraphileWorkerHook, value: Any
) -> None:
    _zoo(gw_db)
    before = snapshot(gw_db)
    with pytest.raises(GraphileWorkerInputError) as error:
        hook.run_job_function_on_filter(
            "complete_jobs", {"task_identifiers": ["charge"]}, duty_cycle=value
        )
    assert str(error.value).startswith(f"duty_cycle: {value!r} is not a number greater than 0")
    assert snapshot(gw_db) == before
