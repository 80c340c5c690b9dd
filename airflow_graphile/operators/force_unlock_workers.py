"""Force-unlock named lockers, by hand: the liveness rule still decides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.heartbeats.check import HeartbeatCheck, HeartbeatSource
from airflow_graphile.operators.rescue import GraphileWorkerRescueDeadWorkersOperator
from airflow_graphile.reports import short_list
from airflow_graphile.validation import parse_bool, parse_locker_ids


def read_locker_ids(value: Any) -> list[str]:
    """Return the ``locker_ids`` argument as a list of ids; refuse another task's result."""
    if isinstance(value, dict) or (isinstance(value, str) and value.strip().startswith("{")):
        raise GraphileWorkerInputError(
            f"locker_ids: expected a list of locker ids, got {str(value)[:200]!r}; to unlock "
            'what a heartbeat check found dead, pass check.output["dead_locker_ids"]'
        )
    return parse_locker_ids(value, "locker_ids")


class GraphileWorkerForceUnlockWorkersOperator(GraphileWorkerRescueDeadWorkersOperator):
    """Release every lock held by the given locker ids - only those the liveness rule finds dead.

    The by-hand form of :class:`GraphileWorkerRescueDeadWorkersOperator`: same rule, same
    transaction, same attempt given back; it takes the ids to unlock, and fails (instead
    of reporting) when more than ``max_workers`` of them are dead. A locker id is what
    ``locked_by`` holds: the worker id on Graphile Worker 0.16; since 0.17 the pool id
    (``pool-...``), not the ``worker-...`` id its logs print.

    :param locker_ids: The locker ids to unlock (templated): a list, a string holding a
        JSON or Python list (as Jinja renders one), or one id. From a heartbeat check:
        ``locker_ids=check.output["dead_locker_ids"]``. An empty list is a logged no-op.
    :param heartbeat_source: Heartbeats kept elsewhere (an HTTP endpoint, another
        database): consulted for lockers the heartbeat table knows nothing of and whose
        lease is free; its verdicts are weaker evidence (heartbeat age only).
    :param skip_liveness_check: DANGER. Unlock the given ids whatever the rule says
        (templated): if one is alive, its jobs run twice. The log and the XCom
        (``override_used``) say it was used.

    Every other argument is the rescue operator's. Returns its XCom.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerRescueDeadWorkersOperator.template_fields,
        "heartbeat_source",
        "skip_liveness_check",
    )
    fail_when_too_many = True

    def __init__(
        self,
        *,
        locker_ids: Any,
        heartbeat_source: HeartbeatSource | None = None,
        skip_liveness_check: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(locker_ids=locker_ids, **kwargs)
        self.heartbeat_source = heartbeat_source
        self.skip_liveness_check = skip_liveness_check
        self.check_literals(
            locker_ids=(locker_ids, read_locker_ids),
            skip_liveness_check=(
                skip_liveness_check,
                lambda v: parse_bool(v, "skip_liveness_check"),
            ),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        locker_ids = read_locker_ids(self.locker_ids)
        override = parse_bool(self.skip_liveness_check, "skip_liveness_check")
        outside: dict[str, str] = {}
        if override and locker_ids:
            self.log.warning(
                "Unlocking %s WITHOUT the liveness rule (skip_liveness_check=True): if any "
                "of them is alive, its jobs will run twice",
                short_list(locker_ids),
            )
        elif self.heartbeat_source is not None and locker_ids:
            rule = self.rule()
            check = HeartbeatCheck(self.heartbeat_source, rule.dead_after, rule.missing_is_dead)
            verdict = check.evaluate(locker_ids)
            self.log.info("Heartbeats elsewhere: %s", verdict.summary())
            source = self.heartbeat_source.describe()
            outside = {d["locker_id"]: f"{source}: {d['evidence']}" for d in verdict.dead}
        if not locker_ids:
            self.log.info("force_unlock_workers: no locker id to unlock, nothing to do")
        report = self.rescue(locker_ids, outside_dead=outside, skip_liveness_check=override)
        return self.report(report)
