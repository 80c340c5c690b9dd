"""Seed the demo queue, start two real workers with heartbeats, crash one with kill -9.

Worker A (1 slot) fails two webhook jobs for good (1 attempt allowed) and an email job
once (25 allowed: it keeps retrying), then starts a 10-minute job in queue "billing".
Worker B (2 slots) runs a 10-minute job in queue "reports" and retries the email job in
its free slot. A is killed with SIGKILL: its job and queue "billing" stay locked.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from psycopg import sql

from demo.common import SCHEMA, VERSION, say
from demo.queue import Names
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for
from devkit.versions import DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE

BEAT_MS = 500  # heartbeat interval of the demo's workers (the plugin's default is 10 s)


@dataclass(frozen=True)
class Seed:
    """The ids of the jobs the demo adds."""

    hook_gone: int  # fail, queue webhooks, 1 attempt: fails for good
    hook_missing: int  # fail, queue webhooks, 1 attempt: fails for good
    email: int  # fail, 25 attempts: keeps retrying
    charge: int  # sleep 10 min in queue billing (a retry ends at once): A crashes on it
    invoice: int  # noop in queue billing: blocked behind A's queue lock
    report: int  # sleep 10 min in queue reports: B runs it
    newsletter: int  # noop, due in 2 hours
    weekly: int  # noop, due in 1 day
    imported: int  # import_csv in queue imports: completed at once, leaves its names behind


@dataclass
class Fleet:
    a: WorkerProcess
    b: WorkerProcess
    a_id: str  # pool ids, as in locked_by
    b_id: str


def start_worker(db: GraphileDB, stack: contextlib.ExitStack, slots: int) -> WorkerProcess:
    process = WorkerProcess(
        db.dsn, VERSION, schema=SCHEMA, jobs=slots, heartbeat=True, heartbeat_interval_ms=BEAT_MS
    )
    stack.callback(process.kill)
    return process


def locked_by(db: GraphileDB, job: int, worker: WorkerProcess) -> str:
    """Wait until a job is locked; return its locker (a pool id)."""
    return str(worker.wait(lambda: db.jobs()[job]["locked_by"], 60, f"job {job} locked"))


def seed_and_start(db: GraphileDB, stack: contextlib.ExitStack, names: Names) -> tuple[Seed, Fleet]:
    """Add the jobs and start A, then B; return the job ids and the workers.

    In two steps: a worker fails (and completes) jobs asynchronously while it already
    fetches the next one, so with the long job there from the start, A could take it
    before the webhook queue's lock was released, and never fail the second webhook.
    """
    hook_gone = db.add_job(
        "fail", {"message": "POST /hook: 410 Gone"}, queue="webhooks", max_attempts=1
    )
    hook_missing = db.add_job(
        "fail", {"message": "POST /hook: 404 Not Found"}, queue="webhooks", max_attempts=1
    )
    email = db.add_job("fail", {"message": "SMTP relay timed out"}, max_attempts=25)
    a = start_worker(db, stack, 1)

    def failed() -> bool:
        jobs = db.jobs()
        return all(
            jobs[job]["last_error"] and jobs[job]["locked_at"] is None
            for job in (hook_gone, hook_missing, email)
        )

    a.wait(failed, timeout=60, what="worker A to fail jobs 1, 2 and 3")

    now = datetime.now(timezone.utc)
    seed = Seed(
        hook_gone=hook_gone,
        hook_missing=hook_missing,
        email=email,
        charge=db.add_job("sleep", {"ms": 600_000, "onlyFirstAttempt": True}, queue="billing"),
        invoice=db.add_job("noop", {"invoice": 1042}, queue="billing"),
        report=db.add_job("sleep", {"ms": 600_000}, queue="reports"),
        newsletter=db.add_job("noop", {"newsletter": "May"}, run_at=now + timedelta(hours=2)),
        weekly=db.add_job("noop", {"report": "weekly"}, run_at=now + timedelta(days=1)),
        imported=db.add_job("import_csv", {"file": "2025.csv"}, queue="imports"),
    )
    db.query(
        sql.SQL("select id from {}.complete_jobs(%s)").format(sql.Identifier(SCHEMA)),
        [[seed.imported]],
    )
    a_id = locked_by(db, seed.charge, a)  # A has one slot: job 6 waits for B
    b = start_worker(db, stack, 2)
    b_id = locked_by(db, seed.report, b)
    wait_for(
        lambda: {a_id, b_id} <= set(db.heartbeats()), timeout=30, what="both workers' heartbeats"
    )
    names.add(a_id, "A")
    names.add(b_id, "B")
    return seed, Fleet(a, b, a_id, b_id)


def heartbeat_age(db: GraphileDB, locker: str) -> float:
    """Seconds since the locker's last heartbeat, on the database's clock."""
    query = sql.SQL(
        "select extract(epoch from now() - last_beat_at)::float8 as age from {} "
        "where locker_id = %s"
    ).format(sql.Identifier(DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE))
    rows = db.query(query, [locker])
    return float(rows[0]["age"]) if rows else float("inf")


def seed_and_crash(
    db: GraphileDB, stack: contextlib.ExitStack, names: Names, dead_after: float
) -> tuple[Seed, Fleet]:
    """Seed, start both workers, kill -9 worker A and wait until its heartbeat is stale."""
    seed, fleet = seed_and_start(db, stack, names)
    say()
    say("QUEUE AND WORKERS")
    say(
        f"  Jobs        9 added with add_job(); job {seed.imported} (task import_csv, queue "
        "imports) completed at once with complete_jobs(): an old import whose task name and "
        "queue stay behind, unused",
        indent=14,
    )
    say(
        f"  Worker A    pid {fleet.a.pid}, 1 slot, heartbeat every {BEAT_MS / 1000:g} s: failed "
        f"jobs {seed.hook_gone}, {seed.hook_missing} (1 attempt allowed: for good) and "
        f"{seed.email} (25 allowed: it retries), then started job {seed.charge} (sleep 10 "
        "min) in queue billing",
        indent=14,
    )
    say(
        f"  Worker B    pid {fleet.b.pid}, 2 slots, same heartbeat: runs job {seed.report} "
        f"(sleep 10 min) in queue reports; its free slot retries job {seed.email}",
        indent=14,
    )
    fleet.a.kill()
    killed = time.monotonic()
    wait_for(
        lambda: heartbeat_age(db, fleet.a_id) > dead_after + 0.2,
        timeout=30,
        what="worker A's heartbeat to go stale",
    )
    say(
        f"  Crash       worker A killed with SIGKILL (kill -9): its job and queue locks stay "
        f"for 4 hours, its heartbeat stops (waited {time.monotonic() - killed:.1f} s: now "
        f"older than {dead_after:g} s)",
        indent=14,
    )
    return seed, fleet
