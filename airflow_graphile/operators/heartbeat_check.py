"""Decide which lockers found by the stuck-lock sensor are dead."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_graphile.heartbeats.check import DEFAULT_DEAD_AFTER, HeartbeatCheck, HeartbeatSource
from airflow_graphile.validation import parse_lockers


class GraphileWorkerHeartbeatCheckOperator(BaseOperator):
    """Sort lockers into dead, alive and unknown by their heartbeats; change nothing.

    A locker is dead only when its last heartbeat is older than ``dead_after``. One with
    no heartbeat at all is "unknown" (never unlocked) unless ``missing_is_dead``. If the
    heartbeat source fails or cannot be reached, the task fails, so nothing downstream
    unlocks anything.

    :param lockers: The stuck-lock sensor's result (``sensor.output``), a list of its
        locker dicts, or a list of locker ids (templated).
    :param heartbeat_source: Where heartbeats are read, e.g. ``PostgresHeartbeatSource()``.
    :param dead_after: Heartbeat age, as a timedelta or seconds, after which a locker is
        dead (templated). Default 60 s.
    :param missing_is_dead: Treat a locker with no heartbeat as dead (templated).

    Returns (XCom) ``{"dead_ids", "dead", "alive", "unknown", "source",
    "dead_after_seconds"}``; each item has the locker's ``last_beat_at``, ``age_seconds``,
    ``evidence`` and, when the sensor found them, its ``job_ids`` and ``queue_names``.
    Pass it as ``worker_ids`` to the force-unlock operator.
    """

    # heartbeat_source is listed so that the source's own template_fields get rendered.
    template_fields: Sequence[str] = (
        "lockers",
        "heartbeat_source",
        "dead_after",
        "missing_is_dead",
    )
    ui_color = "#ffd9b3"

    def __init__(
        self,
        *,
        lockers: Any,
        heartbeat_source: HeartbeatSource,
        dead_after: timedelta | float | str = DEFAULT_DEAD_AFTER,
        missing_is_dead: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lockers = lockers
        self.heartbeat_source = heartbeat_source
        self.dead_after = dead_after
        self.missing_is_dead = missing_is_dead

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # Rendering writes into the source object; render a copy, never the DAG's shared one.
        self.heartbeat_source = copy.copy(self.heartbeat_source)
        super().render_template_fields(context, jinja_env)

    def execute(self, context: Context) -> dict[str, Any]:
        lockers = parse_lockers(self.lockers)
        check = HeartbeatCheck(self.heartbeat_source, self.dead_after, self.missing_is_dead)
        verdict = check.evaluate([locker["locker_id"] for locker in lockers])
        found = {locker["locker_id"]: locker for locker in lockers}
        for item in (*verdict.dead, *verdict.alive, *verdict.unknown):
            held = found[item["locker_id"]]
            for key in ("job_ids", "queue_names", "oldest_lock_age_seconds"):
                if key in held:
                    item[key] = held[key]
        self.log.info("%s", verdict.summary())
        return verdict.to_xcom()
