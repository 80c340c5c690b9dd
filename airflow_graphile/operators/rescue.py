"""Rescue the jobs of dead Graphile Worker workers, judged by the liveness rule."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context

from airflow_graphile.liveness import (
    DEFAULT_DEAD_AFTER,
    DEFAULT_GRACE,
    DEFAULT_MAX_CRASHES,
    LivenessRule,
)
from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.reports import RescueReport
from airflow_graphile.validation import (
    parse_bool,
    parse_duration,
    parse_max_workers,
    parse_smallint,
)

DEFAULT_HEARTBEAT_TABLE = "public.graphile_worker_heartbeats"


class GraphileWorkerRescueDeadWorkersOperator(GraphileWorkerBaseOperator):
    """Unlock the jobs and queues of dead workers, and give back the attempt the crash used.

    A locker (the worker id on Graphile Worker 0.16, the pool id from 0.17, as in
    ``locked_by``) is dead when the worker plugin's lease for it is free - no session of
    its process is left - and it has not beaten for ``grace``; a busy or paused worker
    keeps its lease and is never touched. Lockers written by a plugin without the lease
    are dead when their last beat is older than ``dead_after`` (weaker evidence,
    reported as such). The check and the unlock happen in one transaction that holds
    the lease, so a worker cannot come back halfway. See README, "Liveness".

    For each dead locker's jobs, the attempt the crash used is given back (``last_error``
    names the locker and the time), so a ``max_attempts = 1`` job runs again; a job whose
    worker has died under it ``max_crashes`` times in a row is permanently failed
    instead. The dead lockers' heartbeat rows are deleted, and idle workers are woken.

    :param locker_ids: Judge only these ids (templated); default: every locker in the
        heartbeat table.
    :param heartbeat_table: The worker plugin's table in the worker database,
        ``"schema.table"`` (templated). It must not be writable by roles other than its
        owner and ``trusted_writers``.
    :param trusted_writers: Roles besides the table's owner that may write it (your
        workers' roles, if they do not own it).
    :param grace: How long a lease holder whose lease is free must have been silent to
        be dead (timedelta or seconds; templated); default 3 s.
    :param dead_after: Heartbeat age after which a locker *without* a lease is dead;
        default 60 s.
    :param missing_is_dead: Treat lockers with neither a heartbeat row nor a lease as
        dead (templated); default False.
    :param max_workers: When more lockers than this are dead at once, change nothing and
        report them under ``held_for_approval`` (more likely the heartbeats stopped than
        the workers died; the example DAG then asks a person). Default: no cap.
    :param max_crashes: Crashes in a row after which a job is permanently failed; default 3.
    :param ignore_pro: Act even when Graphile Worker Pro (which sweeps dead workers
        itself) is installed; default False: leave it to Pro and say so.

    Returns (XCom): ``{"function": "rescue", "dry_run", "requested", "unlocked_job_ids",
    "unlocked_queue_names", "by_locker", "held_nothing", "dead", "spared",
    "held_for_approval", "given_back_job_ids", "poisoned_job_ids", "liveness_check",
    "override_used", "graphile_worker_pro", "clock_enforced"}``; ``dead``, ``spared`` and
    ``held_for_approval`` items are ``{"locker_id", "state", "evidence" ("lease",
    "heartbeat" or "none"), "reason", "last_beat_at", "age_seconds"}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "locker_ids",
        "heartbeat_table",
        "trusted_writers",
        "grace",
        "dead_after",
        "missing_is_dead",
        "max_workers",
        "max_crashes",
        "ignore_pro",
    )
    # Too many dead lockers at once: report them (False) or fail the task (True).
    fail_when_too_many = False

    def __init__(
        self,
        *,
        locker_ids: Any = None,
        heartbeat_table: str = DEFAULT_HEARTBEAT_TABLE,
        trusted_writers: Any = (),
        grace: timedelta | float | str = DEFAULT_GRACE,
        dead_after: timedelta | float | str = DEFAULT_DEAD_AFTER,
        missing_is_dead: bool | str = False,
        max_workers: int | str | None = None,
        max_crashes: int | str = DEFAULT_MAX_CRASHES,
        ignore_pro: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.locker_ids = locker_ids
        self.heartbeat_table = heartbeat_table
        self.trusted_writers = trusted_writers
        self.grace = grace
        self.dead_after = dead_after
        self.missing_is_dead = missing_is_dead
        self.max_workers = max_workers
        self.max_crashes = max_crashes
        self.ignore_pro = ignore_pro
        self.check_literals(
            grace=(grace, lambda v: parse_duration(v, "grace")),
            dead_after=(dead_after, lambda v: parse_duration(v, "dead_after")),
            missing_is_dead=(missing_is_dead, lambda v: parse_bool(v, "missing_is_dead")),
            max_workers=(max_workers, parse_max_workers),
            max_crashes=(max_crashes, lambda v: parse_smallint(v, "max_crashes", minimum=1)),
            ignore_pro=(ignore_pro, lambda v: parse_bool(v, "ignore_pro")),
        )

    def rule(self) -> LivenessRule:
        return LivenessRule(
            grace=parse_duration(self.grace, "grace"),
            dead_after=parse_duration(self.dead_after, "dead_after"),
            missing_is_dead=parse_bool(self.missing_is_dead, "missing_is_dead"),
        )

    def rescue(self, locker_ids: Any, **extra: Any) -> RescueReport:
        max_crashes = parse_smallint(self.max_crashes, "max_crashes", minimum=1)
        return self.get_hook().rescue_dead_lockers(
            locker_ids,
            heartbeat_table=self.heartbeat_table,
            rule=self.rule(),
            trusted_writers=self.trusted_writers,
            ignore_pro=self.ignore_pro,
            max_workers=parse_max_workers(self.max_workers),
            max_crashes=DEFAULT_MAX_CRASHES if max_crashes is None else max_crashes,
            dry_run=self.is_dry_run(),
            **extra,
        )

    def report(self, report: RescueReport) -> dict[str, Any]:
        """Log the report and return its XCom; refuse (or flag) too many dead at once."""
        self.log.info("%s", report.summary())
        if report.held:
            ids = ", ".join(v.locker_id for v in report.held)
            message = (
                f"{len(report.held)} lockers are dead at once (max_workers="
                f"{self.max_workers}): {ids}. So many at once more likely means heartbeats "
                "stopped than that the workers died. Nothing was unlocked."
            )
            if self.fail_when_too_many:
                from airflow_graphile.exceptions import GraphileWorkerFatalError

                raise GraphileWorkerFatalError(
                    message + " Check them, then unlock by hand or raise max_workers."
                )
            self.log.warning("%s A person must decide (held_for_approval).", message)
        return report.to_xcom()

    def execute(self, context: Context) -> dict[str, Any]:
        return self.report(self.rescue(self.locker_ids))
