"""Force-unlock the jobs and queues of crashed Graphile Worker workers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import Context

from airflow_graphile.exceptions import GraphileWorkerFatalError, GraphileWorkerInputError
from airflow_graphile.heartbeats.check import DEFAULT_DEAD_AFTER, HeartbeatCheck, HeartbeatSource
from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.reports import short_list
from airflow_graphile.validation import (
    parse_bool,
    parse_duration,
    parse_locker_ids,
    parse_max_workers,
)


def read_locker_ids(value: Any) -> list[str]:
    """Return the ``locker_ids`` argument as a list of ids; refuse another task's result."""
    if isinstance(value, dict) or (isinstance(value, str) and value.strip().startswith("{")):
        raise GraphileWorkerInputError(
            f"locker_ids: expected a list of locker ids, got {str(value)[:200]!r}; to unlock "
            'what a heartbeat check found dead, pass check.output["dead_locker_ids"]'
        )
    return parse_locker_ids(value, "locker_ids")


class GraphileWorkerForceUnlockWorkersOperator(GraphileWorkerBaseOperator):
    """Release every lock held by the given locker ids, through ``force_unlock_workers``.

    DANGER: only for workers that are dead. A live worker whose jobs are unlocked keeps
    running them while another worker picks them up and runs them again. Graphile
    Worker itself only frees a crashed worker's locks after 4 hours.

    A locker id is what the ``locked_by`` column holds: the worker id on Graphile
    Worker 0.16; since 0.17 the worker *pool* id (``pool-...``), not the ``worker-...``
    id its logs print.

    It re-checks, right before unlocking, that each id is still dead by its
    ``heartbeat_source``, and spares every id whose heartbeat is fresh or missing
    (unless ``missing_is_dead``). If the source fails, nothing is unlocked and the task
    fails with a retryable error. Without a ``heartbeat_source`` it refuses to unlock
    anything, unless ``skip_liveness_check`` is true: the one, explicit way to unlock
    lockers whose death nothing checks (the log and the XCom say it was used).

    :param locker_ids: The locker ids to unlock (templated): a list, a string holding a
        JSON or Python list (as Jinja renders one), or one id. From a heartbeat check:
        ``locker_ids=check.output["dead_locker_ids"]``. An empty list is a logged no-op.
        (Renamed from ``worker_ids``, which also took the heartbeat check's whole
        result; pass its ``dead_locker_ids`` key instead.)
    :param heartbeat_source: Re-check liveness with this source before unlocking.
    :param dead_after: Heartbeat age after which a locker is dead (timedelta or seconds;
        templated); default 60 s.
    :param missing_is_dead: Treat ids with no heartbeat as dead (templated).
    :param skip_liveness_check: DANGER. Unlock the given ids without any liveness check
        (templated). For a worker you know is dead and that writes no heartbeats.
    :param max_workers: Refuse, unlocking nothing and without retry, when more lockers
        than this are to be unlocked in one run: many "dead" workers at once more likely
        means the heartbeats stopped than that the workers died (templated). Default: no
        cap.

    Returns (XCom) ``{"function", "dry_run", "requested", "unlocked_job_ids",
    "unlocked_queue_names", "by_locker", "held_nothing", "spared", "liveness_check"}``;
    ``spared`` items are the heartbeat re-check's (``{"locker_id", "last_beat_at",
    "age_seconds", "evidence"}``); ``liveness_check`` says how death was checked (the
    source), or that ``skip_liveness_check`` skipped it.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "locker_ids",
        "heartbeat_source",
        "dead_after",
        "missing_is_dead",
        "max_workers",
        "skip_liveness_check",
    )

    def __init__(
        self,
        *,
        locker_ids: Any,
        heartbeat_source: HeartbeatSource | None = None,
        dead_after: timedelta | float | str = DEFAULT_DEAD_AFTER,
        missing_is_dead: bool | str = False,
        max_workers: int | str | None = None,
        skip_liveness_check: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.locker_ids = locker_ids
        self.heartbeat_source = heartbeat_source
        self.dead_after = dead_after
        self.missing_is_dead = missing_is_dead
        self.max_workers = max_workers
        self.skip_liveness_check = skip_liveness_check

    def execute(self, context: Context) -> dict[str, Any]:
        locker_ids = read_locker_ids(self.locker_ids)
        max_workers = parse_max_workers(self.max_workers)
        dry_run = self.is_dry_run()
        skip_check = parse_bool(self.skip_liveness_check, "skip_liveness_check")
        spared: list[dict[str, Any]] = []
        if skip_check:
            liveness = "skipped (skip_liveness_check=True)"
            if locker_ids:
                self.log.warning(
                    "Unlocking %s WITHOUT a liveness check (skip_liveness_check=True): if any "
                    "of them is alive, its jobs will run twice",
                    short_list(locker_ids),
                )
        elif self.heartbeat_source is None:
            if locker_ids:
                raise GraphileWorkerInputError(
                    f"force unlock of {short_list(locker_ids)} refused: nothing checks that "
                    "these lockers are dead. Give heartbeat_source= (their death is then "
                    "re-checked right before the unlock), or, only if you know they are "
                    "dead, skip_liveness_check=True. Nothing was unlocked."
                )
            liveness = "none needed (no locker id)"
        else:
            check = HeartbeatCheck(
                self.heartbeat_source,
                parse_duration(self.dead_after, "dead_after"),
                parse_bool(self.missing_is_dead, "missing_is_dead"),
            )
            liveness = f"heartbeats, {self.heartbeat_source.describe()}"
            if locker_ids:
                verdict = check.evaluate(locker_ids)
                self.log.info("Re-check before unlocking: %s", verdict.summary())
                spared = [*verdict.alive, *verdict.unknown]
                locker_ids = verdict.dead_locker_ids
        if max_workers is not None and len(locker_ids) > max_workers:
            raise GraphileWorkerFatalError(
                f"Refusing to unlock {len(locker_ids)} lockers in one run (max_workers="
                f"{max_workers}): {short_list(locker_ids)}. So many at once more likely means "
                "heartbeats stopped being written than that the workers died; check them, "
                "then unlock by hand or raise max_workers. Nothing was unlocked."
            )
        if not locker_ids:
            self.log.info("force_unlock_workers: no locker id to unlock, nothing to do")
        report = self.get_hook().force_unlock_workers(locker_ids, dry_run=dry_run)
        self.log.info("%s", report.summary())
        if spared:
            self.log.info(
                "Spared, not dead at the re-check: %s",
                short_list([f"{s['locker_id']} ({s['evidence']})" for s in spared]),
            )
        return {**report.to_xcom(), "spared": spared, "liveness_check": liveness}
