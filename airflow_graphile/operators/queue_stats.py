"""Graphile Worker queue statistics, with optional thresholds that fail the task."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import Context

from airflow_graphile.exceptions import GraphileWorkerFatalError, GraphileWorkerInputError
from airflow_graphile.filters import STATES
from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.validation import parse_mapping

# What a threshold can watch: the jobs in a state, or an age in seconds.
THRESHOLD_KEYS: tuple[str, ...] = (
    "total",
    *STATES,
    "oldest_ready_age_seconds",
    "oldest_lock_age_seconds",
)
_SHOWN = 10


class GraphileWorkerThresholdError(GraphileWorkerFatalError):
    """A queue statistic is beyond the threshold the DAG set for it."""


# Thresholds per task identifier or per queue watch the jobs in a state, or all of them.
GROUP_KEYS: tuple[str, ...] = ("total", *STATES)
GROUPS = ("by_task", "by_queue")


@dataclass(frozen=True)
class Thresholds:
    """Maxima for the whole queue, and per task identifier / queue name."""

    overall: dict[str, float] = field(default_factory=dict)
    by_task: dict[str, dict[str, float]] = field(default_factory=dict)
    by_queue: dict[str, dict[str, float]] = field(default_factory=dict)


def _limits(value: Any, allowed: tuple[str, ...], where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise GraphileWorkerInputError(f"thresholds: {where} must be an object, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise GraphileWorkerInputError(
            f"thresholds: unknown statistic(s) {', '.join(map(str, unknown))}"
            f"{' in ' + where if where != 'thresholds' else ''}; allowed: {', '.join(allowed)}"
        )
    limits = {}
    for key, limit in value.items():
        if (
            isinstance(limit, bool)
            or not isinstance(limit, (int, float))
            or not math.isfinite(limit)
            or limit < 0
        ):
            raise GraphileWorkerInputError(f"thresholds: {key}={limit!r} is not a number >= 0")
        limits[key] = float(limit)
    return limits


def parse_thresholds(value: Any) -> Thresholds:
    """Check the thresholds (a dict or a JSON object in a string).

    ``{statistic: maximum}`` with names from :data:`THRESHOLD_KEYS`, plus optionally
    ``"by_task"`` and ``"by_queue"``: ``{name: {statistic: maximum}}`` with names from
    :data:`GROUP_KEYS`.
    """
    if value in (None, "", {}):
        return Thresholds()
    value = dict(parse_mapping(value, "thresholds"))  # a copy: the groups are taken out
    groups = {group: value.pop(group) for group in GROUPS if group in value}
    parsed = {}
    for group, per_name in groups.items():
        if not isinstance(per_name, dict):
            raise GraphileWorkerInputError(
                f"thresholds: {group} must map names to thresholds, got {per_name!r}"
            )
        parsed[group] = {
            str(name): _limits(limits, GROUP_KEYS, f"{group}.{name}")
            for name, limits in per_name.items()
        }
    return Thresholds(_limits(value, THRESHOLD_KEYS, "thresholds"), **parsed)


def breaches(limits: Thresholds, stats: dict[str, Any]) -> list[str]:
    """Every statistic above its threshold, in words."""
    locks = stats["locks"]
    values = {
        "total": stats["total"],
        **stats["by_state"],
        "oldest_ready_age_seconds": stats["oldest_ready_age_seconds"],
        "oldest_lock_age_seconds": locks["oldest_age_seconds"],
    }
    found = [
        f"{key} is {values[key]} (threshold {limit:g})"
        for key, limit in limits.overall.items()
        if values[key] is not None and values[key] > limit
    ]
    for group, per_name in (("by_task", limits.by_task), ("by_queue", limits.by_queue)):
        for name, group_limits in per_name.items():
            counts = stats[group].get(name, {})
            group_values = {"total": sum(counts.values()), **counts}
            found += [
                f"{group}[{name}].{key} is {group_values.get(key, 0)} (threshold {limit:g})"
                for key, limit in group_limits.items()
                if group_values.get(key, 0) > limit
            ]
    return found


def _top(counts: dict[str, dict[str, int]]) -> str:
    totals = sorted(((sum(c.values()), name) for name, c in counts.items()), reverse=True)
    shown = [
        f"{name} {total} ("
        + ", ".join(f"{state} {n}" for state, n in counts[name].items() if n)
        + ")"
        for total, name in totals[:_SHOWN]
    ]
    more = f"; +{len(totals) - _SHOWN} more" if len(totals) > _SHOWN else ""
    return "; ".join(shown) + more


class GraphileWorkerQueueStatsOperator(GraphileWorkerBaseOperator):
    """Count jobs by state, task identifier and queue, and describe the locks; change nothing.

    One scan of the jobs table, cheap enough to run every few minutes on millions of jobs.
    States: ready, scheduled, retrying, failed (permanently), locked (by a worker, less
    than 4 hours ago).

    :param thresholds: Optional ``{statistic: maximum}`` (templated); the task fails,
        so Airflow's alerting fires, when a statistic is above its maximum. Statistics:
        ``total``, a state name (jobs in that state), ``oldest_ready_age_seconds``,
        ``oldest_lock_age_seconds``; and per task identifier or queue, under ``"by_task"``
        / ``"by_queue"``, ``total`` or a state. Example: ``{"oldest_ready_age_seconds":
        600, "failed": 100, "by_task": {"send_email": {"ready": 1000}}, "by_queue":
        {"billing": {"failed": 0}}}``.

    Returns (XCom) the statistics of :meth:`GraphileWorkerHook.queue_stats`.
    """

    template_fields: Sequence[str] = (*GraphileWorkerBaseOperator.template_fields, "thresholds")

    def __init__(self, *, thresholds: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.thresholds = thresholds
        self.check_literals(thresholds=(thresholds, parse_thresholds))

    def execute(self, context: Context) -> dict[str, Any]:
        limits = parse_thresholds(self.thresholds)
        stats = self.get_hook().queue_stats()
        locks = stats["locks"]
        by_state = ", ".join(f"{state} {n}" for state, n in stats["by_state"].items())
        self.log.info(
            "Graphile Worker queue: %d job(s): %s; oldest ready job waiting %s s\n"
            "  locks: %d job(s) held by %d locker(s), oldest %s s; %d named queue(s) locked\n"
            "  by task: %s\n  by queue: %s",
            stats["total"],
            by_state,
            stats["oldest_ready_age_seconds"],
            locks["jobs"],
            len(locks["by_locker"]),
            locks["oldest_age_seconds"],
            len(stats["locked_queues"]),
            _top(stats["by_task"]) or "-",
            _top(stats["by_queue"]) or "-",
        )
        beyond = breaches(limits, stats)
        if beyond:
            raise GraphileWorkerThresholdError(
                "Graphile Worker queue beyond its thresholds: " + "; ".join(beyond)
            )
        return stats
