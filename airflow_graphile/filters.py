"""Selecting jobs by what they are, not by id: the filter of the bulk operations.

Pure Python: it checks and holds the filter; the hook turns it into SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.validation import (
    check_text,
    parse_bool,
    parse_identifiers,
    parse_job_ids,
    parse_mapping,
    parse_run_at,
    parse_smallint,
)

# Jobs per batch of a filtered operation: a few tens of milliseconds of work each.
DEFAULT_BATCH_SIZE = 2000

# A job is in exactly one state, judged at the moment of the query:
#   locked     a worker locked it less than 4 hours ago (Graphile Worker's rule)
#   failed     not locked, attempts reached max_attempts: permanently failed
#   retrying   not locked, failed at least once, attempts left
#   scheduled  not locked, never attempted, run_at in the future
#   ready      not locked, never attempted, run_at now or past
STATES: tuple[str, ...] = ("ready", "scheduled", "retrying", "failed", "locked")

FILTER_KEYS: tuple[str, ...] = (
    "job_ids",
    "task_identifiers",
    "queue_names",
    "states",
    "created_before",
    "created_after",
    "run_at_before",
    "run_at_after",
    "min_attempts",
    "last_error_pattern",
)


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a bulk operation touches; every condition given must hold.

    ``last_error_pattern`` is a PostgreSQL regular expression (``~``), matched
    case-sensitively against last_error. Times must carry a time zone.
    """

    job_ids: list[int] = field(default_factory=list)
    task_identifiers: list[str] = field(default_factory=list)
    queue_names: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    created_before: datetime | None = None
    created_after: datetime | None = None
    run_at_before: datetime | None = None
    run_at_after: datetime | None = None
    min_attempts: int | None = None
    last_error_pattern: str | None = None

    @property
    def is_empty(self) -> bool:
        return not any(
            (
                self.job_ids,
                self.task_identifiers,
                self.queue_names,
                self.states,
                self.created_before,
                self.created_after,
                self.run_at_before,
                self.run_at_after,
                self.min_attempts is not None,
                self.last_error_pattern is not None,
            )
        )

    def describe(self) -> str:
        parts = [
            f"{name}={value!r}"
            for name in FILTER_KEYS
            if (value := getattr(self, name)) not in (None, [])
        ]
        return ", ".join(parts) or "all jobs"

    def to_dict(self) -> dict[str, Any]:
        """The filter as JSON-safe values (for XCom and logs)."""
        out: dict[str, Any] = {}
        for name in FILTER_KEYS:
            value = getattr(self, name)
            if value in (None, []):
                continue
            out[name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _time(value: Any, name: str) -> datetime | None:
    try:
        return parse_run_at(value)
    except GraphileWorkerInputError as error:
        raise GraphileWorkerInputError(str(error).replace("run_at", name, 1)) from None


def parse_job_filter(value: Any, *, allow_all: Any = False) -> JobFilter:
    """Check a filter given as a :class:`JobFilter`, a dict (e.g. from a DAG's params), or a
    string holding a JSON object (what Airflow's default rendering makes of a dict).

    Unknown keys and states are refused, naming them and the allowed ones. An empty
    filter selects every job, so it is refused unless ``allow_all`` is true.
    """
    if isinstance(value, JobFilter):
        job_filter = value
    else:
        value = {} if value is None else parse_mapping(value, "job_filter")
        unknown = sorted(set(value) - set(FILTER_KEYS))
        if unknown:
            raise GraphileWorkerInputError(
                f"filter: unknown condition(s) {', '.join(unknown)}; "
                f"allowed: {', '.join(FILTER_KEYS)}"
            )
        states = parse_identifiers(value.get("states"), "states")
        bad_states = [state for state in states if state not in STATES]
        if bad_states:
            raise GraphileWorkerInputError(
                f"states: unknown state(s) {', '.join(map(repr, bad_states))}; "
                f"allowed: {', '.join(STATES)}"
            )
        pattern = value.get("last_error_pattern")
        if pattern is not None and (not isinstance(pattern, str) or not pattern):
            raise GraphileWorkerInputError(
                f"last_error_pattern: {pattern!r} is not a non-empty regular expression"
            )
        if pattern is not None:
            check_text(pattern, "last_error_pattern")
        job_ids = value.get("job_ids")
        job_filter = JobFilter(
            job_ids=parse_job_ids(job_ids) if job_ids not in (None, "") else [],
            task_identifiers=parse_identifiers(value.get("task_identifiers"), "task_identifiers"),
            queue_names=parse_identifiers(value.get("queue_names"), "queue_names"),
            states=states,
            created_before=_time(value.get("created_before"), "created_before"),
            created_after=_time(value.get("created_after"), "created_after"),
            run_at_before=_time(value.get("run_at_before"), "run_at_before"),
            run_at_after=_time(value.get("run_at_after"), "run_at_after"),
            min_attempts=parse_smallint(value.get("min_attempts"), "min_attempts", minimum=0),
            last_error_pattern=pattern,
        )
    if job_filter.is_empty and not parse_bool(allow_all, "allow_all"):
        raise GraphileWorkerInputError(
            "filter: no condition given, which would select every job; "
            "give at least one condition, or pass allow_all=True if you mean every job"
        )
    return job_filter
