"""The dead-or-alive decision, independent of where heartbeats are stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from airflow_graphile.exceptions import GraphileWorkerError, GraphileWorkerInputError
from airflow_graphile.reports import short_list
from airflow_graphile.validation import parse_bool, parse_duration

# The worker plugin beats every 10 s; six missed beats make a locker dead.
DEFAULT_DEAD_AFTER = timedelta(seconds=60)


class HeartbeatSourceError(GraphileWorkerError):
    """A heartbeat source could not be read: no locker may be declared dead."""


@dataclass(frozen=True)
class Heartbeat:
    """The last heartbeat of one locker.

    ``age_seconds`` is measured on the source's clock where it has one (the database's
    ``now()`` for a table), so Airflow's clock does not matter.
    """

    locker_id: str
    last_beat_at: datetime
    age_seconds: float
    details: dict[str, Any] = field(default_factory=dict)


class HeartbeatSource(Protocol):
    """Where heartbeats are read from."""

    def heartbeats(self, locker_ids: list[str] | None) -> dict[str, Heartbeat]:
        """Return the last heartbeat of each id that has one (None: of every locker it knows).

        Raise if the source fails.
        """
        ...

    def describe(self) -> str:
        """A short name for logs, e.g. ``table public.graphile_worker_heartbeats``."""
        ...


@dataclass
class HeartbeatVerdict:
    """Lockers sorted by a heartbeat check, each with its evidence."""

    dead: list[dict[str, Any]]
    alive: list[dict[str, Any]]
    unknown: list[dict[str, Any]]
    source: str
    dead_after_seconds: float

    @property
    def dead_ids(self) -> list[str]:
        return [item["locker_id"] for item in self.dead]

    def to_xcom(self) -> dict[str, Any]:
        return {
            "dead_ids": self.dead_ids,
            "dead": self.dead,
            "alive": self.alive,
            "unknown": self.unknown,
            "source": self.source,
            "dead_after_seconds": self.dead_after_seconds,
        }

    def summary(self) -> str:
        lines = [
            f"heartbeat check ({self.source}, dead after {self.dead_after_seconds:.0f} s): "
            f"{len(self.dead)} dead, {len(self.alive)} alive, {len(self.unknown)} unknown"
        ]
        for title, items in (("dead", self.dead), ("alive", self.alive)):
            if items:
                lines.append(
                    f"  {title}: "
                    + short_list([f"{i['locker_id']} ({i['evidence']})" for i in items])
                )
        if self.unknown:
            lines.append(
                "  unknown, no heartbeat at all (not unlocked; a worker without the "
                "heartbeat plugin, or opt in with missing_is_dead): "
                + short_list([i["locker_id"] for i in self.unknown])
            )
        return "\n".join(lines)


class HeartbeatCheck:
    """Decide which lockers are dead from their heartbeats.

    :param source: Where heartbeats are read (:class:`PostgresHeartbeatSource`,
        :class:`HttpHeartbeatSource`, :class:`CallableHeartbeatSource`, or your own).
    :param dead_after: A locker whose last heartbeat is older than this is dead: a
        timedelta or seconds. Default 60 s. Keep it several heartbeat intervals long.
    :param missing_is_dead: A locker with no heartbeat at all is "unknown" and never
        unlocked, unless this is true. Turn it on only if every worker writes heartbeats.
    """

    def __init__(
        self,
        source: HeartbeatSource,
        dead_after: timedelta | float | str = DEFAULT_DEAD_AFTER,
        missing_is_dead: bool | str = False,
    ) -> None:
        self.source = source
        self.dead_after = parse_duration(dead_after, "dead_after")
        if self.dead_after <= timedelta(0):
            raise GraphileWorkerInputError(f"dead_after: {dead_after!r} must be more than 0")
        self.missing_is_dead = parse_bool(missing_is_dead, "missing_is_dead")

    def live_lockers(self) -> list[dict[str, Any]]:
        """Every locker the source knows whose heartbeat is not older than ``dead_after``."""
        try:
            beats = self.source.heartbeats(None)
        except Exception as error:
            raise HeartbeatSourceError(
                f"Could not read heartbeats from {self.source.describe()}: "
                f"{type(error).__name__}: {error}"
            ) from error
        limit = self.dead_after.total_seconds()
        return [
            {"locker_id": beat.locker_id, "age_seconds": round(beat.age_seconds, 3)}
            for beat in beats.values()
            if beat.age_seconds <= limit
        ]

    def evaluate(self, locker_ids: list[str]) -> HeartbeatVerdict:
        """Sort ``locker_ids``; raise :class:`HeartbeatSourceError` if the source fails."""
        limit = self.dead_after.total_seconds()
        verdict = HeartbeatVerdict([], [], [], self.source.describe(), limit)
        if not locker_ids:
            return verdict
        try:
            beats = self.source.heartbeats(list(locker_ids))
        except Exception as error:
            raise HeartbeatSourceError(
                f"Could not read heartbeats from {self.source.describe()}: "
                f"{type(error).__name__}: {error}. Nothing is treated as dead."
            ) from error
        for locker_id in locker_ids:
            beat = beats.get(locker_id)
            if beat is None:
                item: dict[str, Any] = {
                    "locker_id": locker_id,
                    "last_beat_at": None,
                    "age_seconds": None,
                }
                if self.missing_is_dead:
                    verdict.dead.append({**item, "evidence": "no heartbeat (missing_is_dead)"})
                else:
                    verdict.unknown.append({**item, "evidence": "no heartbeat"})
                continue
            item = {
                "locker_id": locker_id,
                "last_beat_at": beat.last_beat_at.isoformat(),
                "age_seconds": round(beat.age_seconds, 3),
                **({"details": beat.details} if beat.details else {}),
            }
            if beat.age_seconds > limit:
                verdict.dead.append(
                    {**item, "evidence": f"last heartbeat {beat.age_seconds:.0f} s ago"}
                )
            else:
                verdict.alive.append(
                    {**item, "evidence": f"last heartbeat {beat.age_seconds:.0f} s ago"}
                )
        return verdict
