"""Decide which lockers found by the stuck-lock sensor are dead."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.heartbeats.check import DEFAULT_DEAD_AFTER, HeartbeatCheck, HeartbeatSource
from airflow_graphile.validation import parse_bool, parse_duration, parse_locker_ids, parse_text

# The XCom key under which the check pushes its dead locker ids (a list of strings).
DEAD_LOCKER_IDS = "dead_locker_ids"
# What the check copies from the sensor's locker items onto its own verdict items.
SENSOR_EVIDENCE = ("job_ids", "queue_names", "oldest_lock_age_seconds")


def read_lockers(value: Any) -> list[dict[str, Any]]:
    """Return ``[{"locker_id", ...}]`` from what the ``lockers`` argument was given.

    Two shapes are read:

    - the stuck-lock sensor's result, ``{"stuck_after_seconds", "lockers": [{"locker_id",
      "job_ids", "queue_names", "oldest_locked_at", "oldest_lock_age_seconds"}]}``, as an
      object or as its text (JSON, or Python's repr as Jinja renders a dict);
    - locker ids, as :func:`~airflow_graphile.validation.parse_locker_ids` reads them (a
      list, a string holding a JSON or Python list, or one id).

    None (no sensor result) means no locker. Anything else is refused, naming ``lockers``.
    """
    if value is None:
        return []
    if isinstance(value, str) and value.strip().startswith("{"):
        value = parse_text(
            value, "lockers", "the stuck-lock sensor's result or a list of locker ids"
        )
    if not isinstance(value, dict):
        return [{"locker_id": locker_id} for locker_id in parse_locker_ids(value, "lockers")]
    items = value.get("lockers")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise GraphileWorkerInputError(
            "lockers: expected the stuck-lock sensor's result ({'stuck_after_seconds': ..., "
            f"'lockers': [{{'locker_id': ..., ...}}]}}) or a list of locker ids, got {value!r}"
        )
    ids = parse_locker_ids([item.get("locker_id") for item in items], "lockers")
    return [{**item, "locker_id": locker_id} for item, locker_id in zip(items, ids, strict=True)]


class GraphileWorkerHeartbeatCheckOperator(BaseOperator):
    """Sort lockers into dead, alive and unknown by their heartbeats; change nothing.

    A locker is dead only when its last heartbeat is older than ``dead_after``. One with
    no heartbeat at all is "unknown" (never unlocked) unless ``missing_is_dead``. If the
    heartbeat source fails or cannot be reached, the task fails with a retryable error
    (Airflow's ``retries`` apply), so nothing downstream unlocks anything; a source that
    is misconfigured (a column its table lacks) fails without retry.

    :param lockers: The stuck-lock sensor's result (``sensor.output``), or locker ids:
        a list, a JSON or Python list in a string, or one id (templated). A locker id is
        what ``locked_by`` holds: the worker id on Graphile Worker 0.16, the pool id on
        0.17+.
    :param heartbeat_source: Where heartbeats are read, e.g. ``PostgresHeartbeatSource()``.
    :param dead_after: Heartbeat age, as a timedelta or seconds, after which a locker is
        dead; more than 0 (templated). Default 60 s.
    :param missing_is_dead: Treat a locker with no heartbeat as dead (templated).

    Returns (XCom) ``{"dead_locker_ids", "dead", "alive", "unknown", "source",
    "dead_after_seconds"}``. Each item of ``dead``, ``alive`` and ``unknown`` has the
    locker's ``locker_id``, ``last_beat_at``, ``age_seconds``, ``evidence``, its
    ``details`` when the source has any and, when the sensor found them, its
    ``job_ids``, ``queue_names`` and ``oldest_lock_age_seconds``.

    Pushes XCom key ``dead_locker_ids``: ``list[str]``, the dead lockers' ids (empty
    when none). Hand it to the force-unlock operator:
    ``locker_ids=check.output["dead_locker_ids"]``.
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
        lockers = read_lockers(self.lockers)
        check = HeartbeatCheck(
            self.heartbeat_source,
            parse_duration(self.dead_after, "dead_after"),
            parse_bool(self.missing_is_dead, "missing_is_dead"),
        )
        verdict = check.evaluate([locker["locker_id"] for locker in lockers])
        found = {locker["locker_id"]: locker for locker in lockers}
        for item in (*verdict.dead, *verdict.alive, *verdict.unknown):
            held = found[item["locker_id"]]
            item.update({key: held[key] for key in SENSOR_EVIDENCE if key in held})
        self.log.info("%s", verdict.summary())
        context["ti"].xcom_push(key=DEAD_LOCKER_IDS, value=verdict.dead_locker_ids)
        return verdict.to_xcom()
