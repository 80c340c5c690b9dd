"""Checks and conversions for the values users pass to the hook and the operators.

Every function here is pure: it raises :class:`GraphileWorkerInputError`, naming
the bad value, before anything is sent to the database. Values may arrive as
Python objects (literals, XCom results) or as strings (Jinja renders lists as
text, and the Airflow trigger form sends text), so list arguments also accept a
string holding a JSON or Python list.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow_graphile.exceptions import GraphileWorkerInputError

BIGINT_MAX = 2**63 - 1
SMALLINT_MIN = -(2**15)
SMALLINT_MAX = 2**15 - 1
# PostgreSQL silently truncates longer identifiers, which would address another schema.
IDENTIFIER_MAX_BYTES = 63
DEFAULT_WORKER_SCHEMA = "graphile_worker"

# Graphile Worker's cleanup steps, in the order it runs them.
CLEANUP_TASKS: tuple[str, ...] = (
    "DELETE_PERMAFAILED_JOBS",
    "GC_TASK_IDENTIFIERS",
    "GC_JOB_QUEUES",
)

_SHOWN = 10
# Whole numbers as text: ASCII digits only ("²" and other Unicode digits pass isdigit()).
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)
# The longest duration accepted (a timedelta holds up to ~2.7 million years, an interval
# ~178 million; a century is far beyond any sensible bound).
DURATION_MAX = timedelta(days=36_525)
# run_at is kept between these, in UTC: every reader (Python, psycopg, JavaScript) can
# read them back; PostgreSQL stores later times as year 10000+ and earlier as "BC".
RUN_AT_MIN = datetime(1970, 1, 1, tzinfo=timezone.utc)
RUN_AT_MAX = datetime(9999, 12, 30, tzinfo=timezone.utc)


def _integer(value: Any) -> Any:
    """``value`` as an int if it is decimal text (ASCII digits), else as given."""
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return value


def check_text(value: str, name: str) -> str:
    """Refuse text PostgreSQL cannot store (a NUL byte), naming the argument."""
    if "\x00" in value:
        raise GraphileWorkerInputError(
            f"{name}: {value[:200]!r} contains a NUL byte (\\x00), which PostgreSQL text "
            "cannot hold"
        )
    return value


def _show(values: Iterable[Any]) -> str:
    items = list(values)
    shown = ", ".join(repr(v) for v in items[:_SHOWN])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN else "")


def parse_text(value: str, name: str, expected: str = "a list such as [1, 2, 3]") -> Any:
    """Read a value that a template rendered as text: JSON, else a Python literal."""
    text = value.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise GraphileWorkerInputError(
            f"{name}: cannot read {value[:200]!r}; pass {expected}, or it as JSON in a string"
        ) from None


def parse_mapping(value: Any, name: str) -> dict[str, Any]:
    """Return a dict given as a dict or as a string holding a JSON (or Python) object.

    Airflow's default template rendering turns a templated dict into its text.
    """
    parsed = value
    if isinstance(value, str):
        try:
            parsed = parse_text(value, name)
        except GraphileWorkerInputError:
            parsed = None
    if not isinstance(parsed, dict):
        raise GraphileWorkerInputError(
            f"{name}: expected a dict or a JSON object, got {type(value).__name__} {value!r}"
        )
    return parsed


def _as_list(value: Any, name: str) -> list[Any]:
    """Turn a list, a tuple, or a string holding one, into a list.

    A lone scalar becomes a one-item list. Sets are refused: their order is arbitrary.
    """
    if isinstance(value, str):
        value = parse_text(value, name)
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (set, frozenset, dict)) or value is None:
        raise GraphileWorkerInputError(
            f"{name}: expected a list, got {type(value).__name__} {value!r}"
        )
    return [value]


def _reject_duplicates(values: list[Any], name: str) -> None:
    if len(set(values)) == len(values):
        return
    seen: set[Any] = set()
    duplicates: dict[Any, None] = {}  # ordered, and linear however many repeat
    for value in values:
        if value in seen:
            duplicates[value] = None
        seen.add(value)
    raise GraphileWorkerInputError(f"{name}: duplicate values {_show(duplicates)}")


def _job_id(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise GraphileWorkerInputError(f"{name}: {value!r} is not a job id (an integer)")
    # Graphile Worker's JavaScript API hands out job ids as strings.
    value = _integer(value)
    if not isinstance(value, int):
        raise GraphileWorkerInputError(f"{name}: {value!r} is not a job id (an integer)")
    if not 1 <= value <= BIGINT_MAX:
        raise GraphileWorkerInputError(
            f"{name}: {value} is out of range; job ids are from 1 to {BIGINT_MAX}"
        )
    return value


def parse_job_ids(value: Any, name: str = "job_ids") -> list[int]:
    """Return the job ids as a list of distinct positive bigints, in the order given.

    Accepts a list or tuple of integers (or of decimal strings, as Graphile Worker's
    JavaScript API gives them), one integer, or a string holding a JSON or Python list.
    An empty list is valid and means "nothing to do".
    """
    items = _as_list(value, name)
    if all(type(item) is int for item in items) and (
        not items or (min(items) >= 1 and max(items) <= BIGINT_MAX)
    ):
        ids: list[int] = items  # the common case (a list of ints), checked in bulk
    else:
        ids = [_job_id(item, name) for item in items]
    _reject_duplicates(ids, name)
    return ids


def parse_locker_ids(value: Any, name: str = "locker_ids") -> list[str]:
    """Return locker ids (what `locked_by` holds: worker ids on 0.16, pool ids from 0.17).

    Accepts a list, a string holding a JSON or Python list, or one id as a plain string.
    An empty list is valid and means "nothing to do".
    """
    if isinstance(value, str) and not value.strip().startswith(("[", "(")):
        items: list[Any] = [value]
    else:
        items = _as_list(value, name)
    ids = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise GraphileWorkerInputError(
                f"{name}: {item!r} is not a locker id (a worker or pool id: a non-empty string)"
            )
        if item != item.strip() or "," in item:
            raise GraphileWorkerInputError(
                f"{name}: {item!r} has a comma or surrounding spaces; pass one id per list item"
            )
        ids.append(check_text(item, name))
    _reject_duplicates(ids, name)
    return ids


def parse_identifiers(value: Any, name: str) -> list[str]:
    """Return a list of distinct non-empty strings (task identifiers, queue names)."""
    if value is None or value == "":
        return []
    items = _as_list(value, name)
    for item in items:
        if not isinstance(item, str) or not item:
            raise GraphileWorkerInputError(f"{name}: {item!r} is not a non-empty string")
        check_text(item, name)
    _reject_duplicates(items, name)
    return items


def parse_cleanup_tasks(value: Any) -> list[str]:
    """Return the cleanup steps asked for, in the order Graphile Worker runs them.

    Accepts a list of step names, a string holding a JSON list, or a comma-separated
    string as Graphile Worker's ``--cleanup`` option takes it.
    """
    if isinstance(value, str) and not value.strip().startswith("["):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    else:
        items = _as_list(value, "tasks")
    unknown = [item for item in items if item not in CLEANUP_TASKS]
    if unknown or not items:
        raise GraphileWorkerInputError(
            f"tasks: invalid cleanup tasks {_show(unknown) if unknown else '(none given)'}; "
            f"allowed values: {', '.join(CLEANUP_TASKS)}"
        )
    return [task for task in CLEANUP_TASKS if task in items]


def parse_run_at(value: Any) -> datetime | None:
    """Return ``run_at`` as a time-zone-aware datetime, or None for "leave unchanged".

    Accepts an aware datetime or an ISO 8601 string with an offset (``Z`` or ``+02:00``).
    A naive time is refused: it is ambiguous, and PostgreSQL would read it in the
    session's time zone.
    """
    if value is None or value == "":
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
        except ValueError:
            raise GraphileWorkerInputError(
                f"run_at: cannot parse {value!r}; use ISO 8601 with a time zone, "
                "e.g. 2026-01-31T18:00:00+00:00"
            ) from None
    elif isinstance(value, datetime):
        parsed = value
    else:
        raise GraphileWorkerInputError(
            f"run_at: expected a datetime or an ISO 8601 string, got {type(value).__name__} "
            f"{value!r}"
        )
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise GraphileWorkerInputError(
            f"run_at: {value!r} has no time zone; add one, e.g. "
            f"{parsed.replace(tzinfo=None).isoformat()}+00:00"
        )
    try:
        in_range = RUN_AT_MIN <= parsed <= RUN_AT_MAX
    except OverflowError:  # the offset takes it past year 1 or 9999
        in_range = False
    if not in_range:
        raise GraphileWorkerInputError(
            f"run_at: {value!r} is out of range; use a time from "
            f"{RUN_AT_MIN.date().isoformat()} to {RUN_AT_MAX.date().isoformat()} (UTC)"
        )
    return parsed


_RELATIVE = re.compile(r"\s*([+-])\s*([0-9]+(?:\.[0-9]+)?)\s*([smhdw])\s*", re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_run_at_or_delay(value: Any) -> datetime | timedelta | None:
    """``run_at`` as a time (see :func:`parse_run_at`) or as a delay from the database's now.

    A delay is a timedelta, or text with a sign, a number and a unit (s, m, h, d, w):
    ``"+90s"``, ``"+15m"``, ``"+1h"``, ``"-2d"``.
    """
    if isinstance(value, timedelta):
        if abs(value) > DURATION_MAX:
            raise GraphileWorkerInputError(f"run_at: {value!r} is further than a century")
        return value
    if isinstance(value, str) and (match := _RELATIVE.fullmatch(value)):
        sign, number, unit = match.groups()
        seconds = float(number) * _UNIT_SECONDS[unit] * (-1 if sign == "-" else 1)
        if abs(seconds) > DURATION_MAX.total_seconds():
            raise GraphileWorkerInputError(f"run_at: {value!r} is further than a century")
        return timedelta(seconds=seconds)
    return parse_run_at(value)


def parse_smallint(value: Any, name: str, minimum: int = SMALLINT_MIN) -> int | None:
    """Return an integer in ``[minimum, 32767]`` (Graphile Worker stores it as smallint).

    None or an empty string means "not given". Decimal strings are accepted, since
    templates and forms produce text.
    """
    if value is None or value == "":
        return None
    number = _integer(value)
    if isinstance(number, bool) or not isinstance(number, int):
        raise GraphileWorkerInputError(f"{name}: {value!r} is not an integer")
    if not minimum <= number <= SMALLINT_MAX:
        raise GraphileWorkerInputError(
            f"{name}: {number} is out of range; Graphile Worker allows {minimum} to {SMALLINT_MAX}"
        )
    return number


def parse_reason(value: Any) -> str | None:
    """Return the failure reason, or None for Graphile Worker's default message."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (int, float)):
        # A template rendered as a native object turns the text "404" into a number.
        return str(value)
    if not isinstance(value, str):
        raise GraphileWorkerInputError(
            f"reason: expected text, got {type(value).__name__} {value!r}"
        )
    return check_text(value, "reason")


def parse_duration(value: Any, name: str) -> timedelta:
    """Return a non-negative duration given as a timedelta or a number of seconds."""
    if isinstance(value, timedelta):
        duration = value
    else:
        seconds = value
        if isinstance(value, str):
            try:
                seconds = float(value)
            except ValueError:
                raise GraphileWorkerInputError(
                    f"{name}: {value!r} is not a number of seconds"
                ) from None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise GraphileWorkerInputError(
                f"{name}: expected a timedelta or seconds, got {type(value).__name__} {value!r}"
            )
        if not math.isfinite(seconds) or abs(seconds) > DURATION_MAX.total_seconds():
            raise GraphileWorkerInputError(
                f"{name}: {value!r} is not a usable number of seconds (at most "
                f"{DURATION_MAX.total_seconds():.0f}, about a century)"
            )
        duration = timedelta(seconds=seconds)
    if duration < timedelta(0):
        raise GraphileWorkerInputError(f"{name}: {value!r} is negative")
    if duration > DURATION_MAX:
        raise GraphileWorkerInputError(f"{name}: {value!r} is longer than a century")
    return duration


def validate_schema_name(value: Any, name: str = "worker_schema") -> str:
    """Return a schema, table or column name if PostgreSQL can address it exactly.

    Any characters are allowed (the name is always quoted as an identifier); an empty
    name, a NUL byte, or more than 63 bytes (PostgreSQL would truncate it) is refused,
    naming the argument.
    """
    if not isinstance(value, str) or not value:
        raise GraphileWorkerInputError(f"{name}: {value!r} is not a PostgreSQL name")
    if "\x00" in value or len(value.encode()) > IDENTIFIER_MAX_BYTES:
        raise GraphileWorkerInputError(
            f"{name}: {value!r} is not a valid PostgreSQL identifier "
            f"(at most {IDENTIFIER_MAX_BYTES} bytes, no NUL)"
        )
    return value


def parse_bool(value: Any, name: str) -> bool:
    """Return a flag given as a bool or as the text a template renders ("True", "false")."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise GraphileWorkerInputError(f"{name}: expected true or false, got {value!r}")


def parse_max_workers(value: Any) -> int | None:
    """Return the cap on lockers unlocked in one run (None: no cap)."""
    if value is None or value == "":
        return None
    number = _integer(value)
    if isinstance(number, bool) or not isinstance(number, int) or number < 1:
        raise GraphileWorkerInputError(f"max_workers: {value!r} is not a whole number >= 1")
    return number


def parse_batch_size(value: Any, name: str = "batch_size") -> int:
    """Return a batch size from 1 to 100,000."""
    number = _integer(value)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 100_000:
        raise GraphileWorkerInputError(f"{name}: {value!r} is not a whole number from 1 to 100000")
    return number
