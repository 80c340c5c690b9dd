"""The liveness rule: when is a locker (a worker or pool id in ``locked_by``) dead?

Pure logic, no database: the hook's rescue transaction and the event trigger measure
the facts (is the lease free? when was the last beat?) and this module judges them.

The rule, from what PostgreSQL guarantees:

* The worker plugin (airflow-graphile-heartbeat >= 0.2) takes a *lease* for each locker
  id: the session-level advisory lock ``(LEASE_NAMESPACE, hashtext(locker_id))``, held
  on a connection of its own for as long as the locker lives, and it writes the
  heartbeat row (``lease = true``) on that same connection, from a thread that a busy
  event loop does not stop. A session-level advisory lock is released exactly when its
  session ends: a killed process (kill -9, OOM) loses it within milliseconds; a busy or
  paused process (synchronous CPU work, SIGSTOP, a long GC pause) keeps it.
* The rescue takes that same lock itself, as a transaction-level lock, inside the
  transaction that unlocks the jobs. If it gets it, no session holds the lease, and
  the worker cannot take it back before the unlock is committed: check and act are one.
* A lease can also be free for a moment while its process lives: its connection was cut
  (an administrator's ``pg_terminate_backend``, a server restart, a network reset) and
  the plugin is reconnecting. So a locker is dead only when its lease is free AND it has
  not beaten for ``grace`` (default 3 s, three beats) - counted from the server's start
  plus ``RESTART_ALLOWANCE`` when the server restarted since, so that a restart never
  looks like every worker dying. A plugin that comes back after being declared dead
  finds its row gone and stops its process (see the plugin's README).
* Heartbeat age is evidence only for lockers without a lease (plugin 0.1, or beats
  written by something else): dead when the last beat is older than ``dead_after``
  (default 60 s). This is weaker evidence - a worker busy for longer than ``dead_after``
  looks dead - and is reported as such.
* A lease held means alive, whatever the heartbeat row says: a forged or stale row can
  never make a live lease-holding worker look dead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

# First key of the two-int advisory lock that is a locker's lease ("gwls"); the second
# is hashtext(locker_id). Shared with the worker plugin: change both or neither.
LEASE_NAMESPACE = 1735879795
# A lease-holding locker is dead when its lease is free and it has not beaten for this
# long. The plugin beats every second and reconnects every 0.5 s after a cut.
DEFAULT_GRACE = timedelta(seconds=3)
# After a server (re)start, lease holders get this long to reconnect before silence
# counts against them.
RESTART_ALLOWANCE = timedelta(seconds=30)
# Lockers without a lease: dead when their last beat is older than this.
DEFAULT_DEAD_AFTER = timedelta(seconds=60)
# A job whose worker died under it this many times in a row is permanently failed.
DEFAULT_MAX_CRASHES = 3

ALIVE = "alive"
DEAD = "dead"
UNKNOWN = "unknown"

# How strong the evidence of a verdict is.
LEASE = "lease"  # the lease: exact
HEARTBEAT = "heartbeat"  # heartbeat age only: weaker
NONE = "none"


@dataclass(frozen=True)
class LivenessRule:
    """The thresholds of the rule (see the module docstring)."""

    grace: timedelta = DEFAULT_GRACE
    dead_after: timedelta = DEFAULT_DEAD_AFTER
    missing_is_dead: bool = False


DEFAULT_RULE = LivenessRule()


@dataclass(frozen=True)
class Facts:
    """What the database said about one locker, at one moment.

    ``lease_free``: nobody holds the lease (the rescue holds it now); ``has_row``: a
    heartbeat row exists; ``row_lease``: that row was written by a lease holder;
    ``silent_seconds``: seconds since its last beat, or since the server's start plus
    the restart allowance if that is later; ``age_seconds``: seconds since the last beat.
    """

    locker_id: str
    lease_free: bool
    has_row: bool = False
    row_lease: bool = False
    silent_seconds: float | None = None
    age_seconds: float | None = None
    last_beat_at: str | None = None


@dataclass(frozen=True)
class Verdict:
    """One locker's state, the strength of the evidence, and why, in words."""

    locker_id: str
    state: str
    evidence: str
    reason: str
    last_beat_at: str | None = None
    age_seconds: float | None = None

    def to_xcom(self) -> dict[str, Any]:
        return {
            "locker_id": self.locker_id,
            "state": self.state,
            "evidence": self.evidence,
            "reason": self.reason,
            "last_beat_at": self.last_beat_at,
            "age_seconds": None if self.age_seconds is None else round(self.age_seconds, 3),
        }


def _s(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.1f} s"


def judge(facts: Facts, rule: LivenessRule) -> Verdict:
    """Apply the rule to one locker's facts."""

    def verdict(state: str, evidence: str, reason: str) -> Verdict:
        return Verdict(
            facts.locker_id, state, evidence, reason, facts.last_beat_at, facts.age_seconds
        )

    if not facts.lease_free:
        return verdict(
            ALIVE, LEASE, "lease held: a session of its process is open (busy or paused is alive)"
        )
    if facts.has_row and facts.row_lease:
        silent = facts.silent_seconds or 0.0
        if silent >= rule.grace.total_seconds():
            return verdict(
                DEAD,
                LEASE,
                f"lease free (no session of its process is left) and no beat for {_s(silent)}",
            )
        return verdict(
            ALIVE,
            LEASE,
            f"lease free but it beat {_s(silent)} ago (within grace "
            f"{_s(rule.grace.total_seconds())}): it may be reconnecting",
        )
    if facts.has_row:
        age = facts.age_seconds or 0.0
        if age >= rule.dead_after.total_seconds():
            return verdict(
                DEAD,
                HEARTBEAT,
                f"no lease (plugin without one): last beat {_s(age)} ago, over dead_after "
                f"{_s(rule.dead_after.total_seconds())} - weaker evidence, a worker busy "
                "that long looks the same",
            )
        return verdict(ALIVE, HEARTBEAT, f"no lease; last beat {_s(age)} ago")
    if rule.missing_is_dead:
        return verdict(DEAD, NONE, "no heartbeat row and no lease (missing_is_dead=True)")
    return verdict(UNKNOWN, NONE, "no heartbeat row and no lease held: nothing says it is dead")
