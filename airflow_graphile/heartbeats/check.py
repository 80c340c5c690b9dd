"""The dead-or-alive decision, independent of where heartbeats are stored."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from airflow_graphile.exceptions import (
    GraphileWorkerFatalError,
    GraphileWorkerInputError,
    GraphileWorkerTransientError,
)
from airflow_graphile.reports import short_list

# The worker plugin beats every 10 s; six missed beats make a locker dead.
DEFAULT_DEAD_AFTER = timedelta(seconds=60)


# Secrets in URLs: the userinfo (user:token@) and the query string (?api_key=...).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@'\"]+@")
_QUERY = re.compile(r"\?[^\s'\"#]*")


def redact(text: str) -> str:
    """``text`` with the userinfo and the query string of every URL in it hidden."""
    return _QUERY.sub("?***", _USERINFO.sub(r"\g<scheme>***@", text))


def scrub(error: BaseException, depth: int = 8) -> None:
    """Redact an exception's arguments and those of the exceptions it chains, in place.

    The chain is kept (it says where a failure came from), without the secrets a URL in
    it may carry.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo and len(seen) < depth:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        with contextlib.suppress(AttributeError, TypeError):  # read-only args
            current.args = tuple(redact(a) if isinstance(a, str) else a for a in current.args)
        todo += [current.__cause__, current.__context__]


class HeartbeatSourceError(GraphileWorkerTransientError):
    """A heartbeat source could not be read: no locker may be declared dead.

    Retryable: a 503, an unreachable endpoint, a dropped database connection or a
    heartbeat table no worker has created yet may pass. A source that is misconfigured
    in a way a retry cannot fix raises :class:`GraphileWorkerInputError` instead.
    """


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
    """Lockers sorted by a heartbeat check, each with its evidence.

    Each item of ``dead``, ``alive`` and ``unknown`` is ``{"locker_id", "last_beat_at"
    (ISO time or None), "age_seconds" (or None), "evidence"}``, plus ``details`` (the
    source's other fields) when the source has any.
    """

    dead: list[dict[str, Any]]
    alive: list[dict[str, Any]]
    unknown: list[dict[str, Any]]
    source: str
    dead_after_seconds: float

    @property
    def dead_locker_ids(self) -> list[str]:
        return [item["locker_id"] for item in self.dead]

    def to_xcom(self) -> dict[str, Any]:
        return {
            "dead_locker_ids": self.dead_locker_ids,
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

    Takes typed values: parse user input (templates, forms) where it enters, e.g. with
    :func:`airflow_graphile.validation.parse_duration` in an operator's ``execute``.

    :param source: Where heartbeats are read (:class:`PostgresHeartbeatSource`,
        :class:`HttpHeartbeatSource`, :class:`CallableHeartbeatSource`, or your own).
    :param dead_after: A locker whose last heartbeat is older than this is dead; more
        than 0. Default 60 s. Keep it several heartbeat intervals long.
    :param missing_is_dead: A locker with no heartbeat at all is "unknown" and never
        unlocked, unless this is true. Turn it on only if every worker writes heartbeats.

    A source that fails raises :class:`HeartbeatSourceError` (retryable), and nothing is
    declared dead; a source error that a retry cannot fix (a
    :class:`GraphileWorkerFatalError`, such as a column the table lacks) is raised as is.
    """

    def __init__(
        self,
        source: HeartbeatSource,
        dead_after: timedelta = DEFAULT_DEAD_AFTER,
        missing_is_dead: bool = False,
    ) -> None:
        if not isinstance(dead_after, timedelta):
            raise TypeError(
                f"dead_after: expected a timedelta, got {type(dead_after).__name__} "
                f"{dead_after!r}; parse input with parse_duration first"
            )
        if not isinstance(missing_is_dead, bool):
            # A rendered template "False" is truthy: it would unlock every silent worker.
            raise TypeError(
                f"missing_is_dead: expected a bool, got {type(missing_is_dead).__name__} "
                f"{missing_is_dead!r}; parse input with parse_bool first"
            )
        if dead_after <= timedelta(0):
            raise GraphileWorkerInputError(
                f"dead_after: {dead_after.total_seconds():g} s must be more than 0"
            )
        self.source = source
        self.dead_after = dead_after
        self.missing_is_dead = missing_is_dead

    def _read(self, locker_ids: list[str] | None, consequence: str) -> dict[str, Heartbeat]:
        try:
            return self.source.heartbeats(locker_ids)
        except GraphileWorkerFatalError:
            raise
        except Exception as error:
            scrub(error)
            raise HeartbeatSourceError(
                f"Could not read heartbeats from {self.source.describe()}: "
                f"{type(error).__name__}: {error}.{consequence}"
            ) from error

    def live_lockers(self) -> list[dict[str, Any]]:
        """Every locker the source knows whose heartbeat is not older than ``dead_after``.

        Returns ``[{"locker_id", "age_seconds"}]``; raises :class:`HeartbeatSourceError`
        if the source fails.
        """
        beats = self._read(None, "")
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
        beats = self._read(list(locker_ids), " Nothing is treated as dead.")
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
