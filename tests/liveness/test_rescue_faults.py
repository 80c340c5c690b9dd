"""The liveness rule against real worker processes: every fault, every version.

Workers run the heartbeat plugin (lease + beats every second from a thread). A worker
busy in synchronous CPU work, a paused one and a forged heartbeat row must never be
rescued; a killed one and one whose sessions the server lost must be, with the attempt
the crash used given back (a max_attempts = 1 job runs again), and a job that kills
its worker every time must be stopped after three crashes.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerFatalError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from airflow_graphile.liveness import LEASE_NAMESPACE
from airflow_graphile.reports import RescueReport
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for

pytestmark = pytest.mark.worker

BUSY_SECONDS = 90  # a synchronous job far longer than any heartbeat threshold
LONG_MS = 600_000
HEARTBEATS = sql.Identifier("public", "graphile_worker_heartbeats")


def _worker(db: GraphileDB, jobs: int = 1) -> WorkerProcess:
    return WorkerProcess(
        db.dsn, db.version, schema=db.schema, jobs=jobs, heartbeat=True, heartbeat_interval_ms=1000
    )


def _lease_backend(db: GraphileDB, locker_id: str) -> int | None:
    rows = db.query(
        sql.SQL(
            "select pid from pg_locks where locktype = 'advisory' and granted"
            " and classid = %s::oid and objid = hashtext(%s)::oid and objsubid = 2"
        ),
        [LEASE_NAMESPACE, locker_id],
    )
    return rows[0]["pid"] if rows else None


def _runs(db: GraphileDB) -> dict[int, int]:
    rows = db.query(sql.SQL("select job_id, count(*) as n from public.job_runs group by 1"))
    return {row["job_id"]: row["n"] for row in rows}


def _dead(report: RescueReport) -> set[str]:
    return {v.locker_id for v in report.of_state("dead")}


@pytest.fixture
def job_runs(gw_db: GraphileDB) -> None:
    gw_db.query(
        sql.SQL(
            "create table public.job_runs (job_id bigint, attempts int, pid int,"
            " at timestamptz default clock_timestamp())"
        )
    )


@pytest.fixture
def workers() -> Iterator[ExitStack]:
    """Workers entered here are stopped (or killed) at the end, even if paused."""
    with ExitStack() as stack:
        yield stack


def _start_holding(
    db: GraphileDB, stack: ExitStack, task: str, payload: dict[str, Any], **job: Any
) -> tuple[WorkerProcess, str, int]:
    """Start a worker, give it one job, wait until it holds it and has its lease."""
    worker = stack.enter_context(_worker(db))
    stack.callback(_resume, worker)
    job_id = db.add_job(task, {**payload, "record": True}, queue=f"q_{job_id_hint()}", **job)
    locker = db.wait_locked(job_id)
    worker.wait(lambda: _lease_backend(db, locker), timeout=15, what=f"lease of {locker}")
    return worker, locker, job_id


_counter = iter(range(10**6))


def job_id_hint() -> int:
    return next(_counter)


def _resume(worker: WorkerProcess) -> None:
    if worker.running():
        os.kill(worker.pid, signal.SIGCONT)


@pytest.mark.usefixtures("job_runs")
def test_busy_paused_and_forged_are_spared_killed_and_lost_are_rescued(
    gw_db: GraphileDB, hook: GraphileWorkerHook, workers: ExitStack
) -> None:
    db = gw_db
    busy, busy_id, busy_job = _start_holding(db, workers, "busy", {"seconds": BUSY_SECONDS})
    paused, paused_id, paused_job = _start_holding(db, workers, "sleep", {"ms": LONG_MS})
    doomed, doomed_id, doomed_job = _start_holding(
        db, workers, "sleep", {"ms": LONG_MS, "onlyFirstAttempt": True}, max_attempts=1
    )
    lost, lost_id, lost_job = _start_holding(
        db, workers, "sleep", {"ms": LONG_MS, "onlyFirstAttempt": True}
    )
    survivor = workers.enter_context(_worker(db, jobs=2))
    started = time.monotonic()

    # The faults.
    os.kill(paused.pid, signal.SIGSTOP)  # a paused process (frozen VM, long GC pause)
    os.kill(lost.pid, signal.SIGSTOP)  # a machine that vanished ...
    lost_backend = _lease_backend(db, lost_id)
    db.query(sql.SQL("select pg_terminate_backend(%s)"), [lost_backend])  # ... its sessions end
    doomed.kill()  # kill -9

    # A heartbeat table another role may write is not trusted: the rescue names it.
    role = f"forger_{db.dbname}"
    db.query(sql.SQL("create role {}").format(sql.Identifier(role)))
    try:
        db.query(
            sql.SQL("grant select, update on {} to {}").format(HEARTBEATS, sql.Identifier(role))
        )
        with pytest.raises(GraphileWorkerFatalError, match=role):
            hook.rescue_dead_lockers()
        # What such a role writes carries the database's clock anyway.
        with db.connect() as conn:
            conn.execute(sql.SQL("set role {}").format(sql.Identifier(role)))
            conn.execute(
                sql.SQL("update {} set last_beat_at = '2000-01-01' where locker_id = %s").format(
                    HEARTBEATS
                ),
                [busy_id],
            )
        assert db.heartbeats()[busy_id]["last_beat_at"].year > 2000
        db.query(
            sql.SQL("revoke select, update on {} from {}").format(HEARTBEATS, sql.Identifier(role))
        )
    finally:
        db.query(sql.SQL("drop owned by {}; drop role {}").format(*[sql.Identifier(role)] * 2))

    # Rescue every two seconds while the busy job blocks its worker's event loop.
    rescued: dict[str, float] = {}
    spared_ever: set[str] = set()
    while busy_job in db.jobs():
        report = hook.rescue_dead_lockers()
        for locker in _dead(report):
            rescued.setdefault(locker, time.monotonic() - started)
        spared_ever |= {v.locker_id for v in report.verdicts if v.state != "dead"}
        assert not _dead(report) & {busy_id, paused_id}, report.summary()
        assert time.monotonic() - started < BUSY_SECONDS + 60, "the busy job never ended"
        time.sleep(2)

    assert set(rescued) == {doomed_id, lost_id}
    assert {busy_id, paused_id} <= spared_ever
    assert max(rescued.values()) < 15, rescued  # lease free + 3 s grace, not 60 s
    # The killed worker's max_attempts = 1 job got its attempt back and ran again.
    survivor.wait(lambda: doomed_job not in db.jobs(), 30, "the rescued job runs again")
    survivor.wait(lambda: lost_job not in db.jobs(), 30, "the lost worker's job runs again")
    # The lost machine comes back: its plugin finds it was rescued and stops the process.
    os.kill(lost.pid, signal.SIGCONT)
    wait_for(lambda: not lost.running(), timeout=20, what="the returning lost worker stops")
    assert "declared dead" in lost.log_text()
    # The paused worker resumes its job, which was never unlocked.
    os.kill(paused.pid, signal.SIGCONT)
    assert db.jobs()[paused_job]["locked_by"] == paused_id
    assert busy.running() and paused.running()
    runs = _runs(db)
    assert runs[busy_job] == 1  # finished once, by its own worker
    assert runs[paused_job] == 1
    assert runs[doomed_job] == 2  # the crashed run and the rerun
    assert runs[lost_job] == 2


def _crash_and_rescue(
    db: GraphileDB, hook: GraphileWorkerHook, workers: ExitStack, job: int, crash: int
) -> RescueReport:
    worker = workers.enter_context(_worker(db))
    wait_for(lambda: not worker.running(), timeout=30, what=f"crash {crash}")
    worker.finish()
    locker = db.jobs()[job]["locked_by"]
    assert locker

    def rescued() -> RescueReport | None:
        report = hook.rescue_dead_lockers([locker])
        return report if report.unlock and report.unlock.jobs else None

    return wait_for(rescued, timeout=15, what=f"rescue after crash {crash}")


def test_a_poison_pill_is_failed_after_three_crashes(
    gw_db: GraphileDB, hook: GraphileWorkerHook, workers: ExitStack
) -> None:
    db = gw_db
    job = db.add_job("crash", max_attempts=25)
    for crash in (1, 2):
        report = _crash_and_rescue(db, hook, workers, job, crash)
        row = db.jobs()[job]
        assert report.given_back == [job]
        assert (row["locked_by"], row["attempts"]) == (None, 0)
        assert f"crash {crash} in a row" in row["last_error"]
    report = _crash_and_rescue(db, hook, workers, job, 3)
    assert report.poisoned == [job]
    row = db.jobs()[job]
    assert (row["locked_by"], row["attempts"]) == (None, row["max_attempts"])
    assert "died under this job 3 times in a row" in row["last_error"]


def _holding_one_job(
    db: GraphileDB, workers: ExitStack, queue: str
) -> tuple[WorkerProcess, str, int]:
    worker = workers.enter_context(_worker(db))
    job = db.add_job("sleep", {"ms": LONG_MS}, queue=queue)
    locker = db.wait_locked(job)
    worker.wait(lambda: _lease_backend(db, locker), timeout=15, what="lease")
    return worker, locker, job


def _rescue_twice_at_once(db: GraphileDB) -> list[RescueReport]:
    results: list[RescueReport] = []
    barrier = threading.Barrier(2)

    def rescue() -> None:
        hook = GraphileWorkerHook(graphile_worker_conn_id=db.conn_id)
        barrier.wait()
        results.append(hook.rescue_dead_lockers())

    threads = [threading.Thread(target=rescue) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_two_rescues_at_once_give_the_attempt_back_once(
    gw_db: GraphileDB, workers: ExitStack
) -> None:
    db = gw_db
    for round_ in range(3):
        worker, _, job = _holding_one_job(db, workers, f"twice_{round_}")
        worker.kill()
        time.sleep(3.5)  # past the grace
        results = _rescue_twice_at_once(db)
        given = sorted((r.given_back for r in results), key=len)
        assert given == [[], [job]], [r.summary() for r in results]
        row = db.jobs()[job]
        assert (row["attempts"], row["locked_by"]) == (0, None)
        _delete_job(db, job)


@contextmanager
def _stopped(worker: WorkerProcess) -> Iterator[None]:
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        _resume(worker)


def _return_during_rescue(
    db: GraphileDB, hook: GraphileWorkerHook, workers: ExitStack, delay: float
) -> None:
    worker, locker, job = _holding_one_job(db, workers, f"back_{delay}")
    result: list[RescueReport] = []
    rescuer = threading.Thread(target=lambda: result.append(hook.rescue_dead_lockers([locker])))
    with _stopped(worker):
        db.query(sql.SQL("select pg_terminate_backend(%s)"), [_lease_backend(db, locker)])
        time.sleep(3.5)  # silent past the grace: dead by the rule if nothing changes
        rescuer.start()
        time.sleep(delay)
    rescuer.join(30)
    if _dead(result[0]):
        # Rescued first: the worker finds its row gone at its next lease and stops.
        wait_for(lambda: not worker.running(), timeout=20, what="the rescued worker stops")
        assert db.jobs()[job]["locked_by"] != locker
    else:
        # It took its lease back first: spared, and it keeps its job.
        assert worker.running()
        assert db.jobs()[job]["locked_by"] == locker
    worker.kill()
    _delete_job(db, job)


def _delete_job(db: GraphileDB, job: int) -> None:
    db.query(
        sql.SQL("delete from {} where id = %s").format(sql.Identifier(db.schema, "_private_jobs")),
        [job],
    )


def test_a_worker_returning_during_the_rescue_is_never_both_alive_and_rescued(
    gw_db: GraphileDB, hook: GraphileWorkerHook, workers: ExitStack
) -> None:
    """Its lease session was cut while it was paused; it resumes as the rescue runs."""
    for delay in (0.0, 0.05, 0.3):
        _return_during_rescue(gw_db, hook, workers, delay)


def test_only_the_lease_holder_can_mark_a_row_as_leased(
    gw_db: GraphileDB, workers: ExitStack
) -> None:
    """The plugin's trigger: anyone else writing lease = true gets lease = false stored."""
    db = gw_db
    worker, locker, _ = _holding_one_job(db, workers, "mine")
    db.query(
        sql.SQL(
            "insert into {} (locker_id, host, pid, last_beat_at, lease)"
            " values ('pool-forged', 'x', 1, '2000-01-01', true)"
        ).format(HEARTBEATS)
    )
    db.query(
        sql.SQL("update {} set lease = true where locker_id = %s").format(HEARTBEATS), [locker]
    )
    beats = db.heartbeats()
    assert beats["pool-forged"]["lease"] is False
    assert beats["pool-forged"]["last_beat_at"].year > 2000
    # The worker's own next beat (from the session holding its lease) says lease again.
    worker.wait(lambda: db.heartbeats()[locker]["lease"], timeout=5, what="the worker's beat")
