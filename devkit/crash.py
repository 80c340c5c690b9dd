"""Two real workers with heartbeats, one of them about to be killed: what a rescue is for.

The doomed worker (one slot) holds a long job in queue ``billing``, with a job queued
behind it; the survivor (two slots) holds a long job in queue ``reports`` and has a free
slot for the rescued jobs. The caller kills the doomed one (`WorkerProcess.kill()`:
SIGKILL, so its locks stay) when it wants to.
"""

from __future__ import annotations

from dataclasses import dataclass

from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for


@dataclass
class TwoWorkers:
    """The two workers, their locker ids (as in ``locked_by``) and the jobs' ids."""

    db: GraphileDB
    doomed: WorkerProcess
    survivor: WorkerProcess
    doomed_id: str
    survivor_id: str
    billing: int  # the doomed worker's long job, in queue billing
    queued: int  # a noop job waiting behind it in queue billing
    reports: int  # the survivor's long job, in queue reports

    def wait_rescued(self, timeout: float = 30.0) -> None:
        """Wait until the survivor has run both jobs of queue billing (they are gone)."""
        self.survivor.wait(
            lambda: not {self.billing, self.queued} & set(self.db.jobs()),
            timeout=timeout,
            what="the survivor runs the rescued jobs",
        )


def start_two_workers(
    db: GraphileDB,
    heartbeat_interval_ms: int,
    poll_interval: int = 200,
    long_job_ms: int = 600_000,
    timeout: float = 30.0,
) -> TwoWorkers:
    """Start both workers and wait until each holds its job and has a heartbeat row.

    If anything fails, both workers are killed before the error is raised.
    """

    def start(jobs: int) -> WorkerProcess:
        return WorkerProcess(
            db.dsn,
            db.version,
            schema=db.schema,
            jobs=jobs,
            poll_interval=poll_interval,
            heartbeat=True,
            heartbeat_interval_ms=heartbeat_interval_ms,
        )

    doomed = start(1)
    survivor: WorkerProcess | None = None
    try:
        billing = db.add_job(
            "sleep", {"ms": long_job_ms, "onlyFirstAttempt": True}, queue="billing"
        )
        doomed_id = db.wait_locked(billing, timeout)
        queued = db.add_job("noop", queue="billing")  # blocked behind the doomed lock
        survivor = start(2)
        reports = db.add_job("sleep", {"ms": long_job_ms}, queue="reports")
        survivor_id = db.wait_locked(reports, timeout)
        if survivor_id == doomed_id:
            raise RuntimeError("both jobs were taken by the same worker")
        wait_for(
            lambda: {doomed_id, survivor_id} <= set(db.heartbeats()),
            timeout=timeout,
            what="both workers' heartbeats",
        )
    except BaseException:
        doomed.kill()
        if survivor is not None:
            survivor.kill()
        raise
    return TwoWorkers(db, doomed, survivor, doomed_id, survivor_id, billing, queued, reports)
