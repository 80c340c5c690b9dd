"""Built-in heartbeat sources: a PostgreSQL table, an HTTP endpoint, a Python callable."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.heartbeats.check import Heartbeat, redact
from airflow_graphile.validation import validate_schema_name

# How long one HTTP heartbeat request may take; a heartbeat service answers in milliseconds.
DEFAULT_HTTP_TIMEOUT_SECONDS = 10.0
# The arguments of PostgresHeartbeatSource that name a table, its schema or a column.
SQL_NAMES = ("schema", "table", "id_column", "time_column")


class PostgresHeartbeatSource:
    """Heartbeats in a PostgreSQL table, such as the one the worker plugin writes.

    Ages are computed with the database's ``now()``.

    :param conn_id: Airflow connection to the database holding the table (a
        ``graphile_worker`` or ``postgres`` connection; may differ from the jobs database).
    :param table: Table name. Default ``graphile_worker_heartbeats``.
    :param schema: Schema of the table. Default ``public``.
    :param id_column: Column holding the locker id (as in ``locked_by``).
    :param time_column: ``timestamptz`` column holding the last heartbeat.

    All five are templated when the source is given to an operator. A name that
    PostgreSQL cannot address (empty, over 63 bytes) is refused when the source is
    built, or, for a template, when it is read; a table without ``id_column`` or a
    ``timestamptz`` ``time_column`` fails the task without retry
    (:class:`GraphileWorkerInputError`). A missing table is retryable: the worker
    plugin creates it when the first worker starts.
    """

    template_fields = ("conn_id", "table", "schema", "id_column", "time_column")

    def __init__(
        self,
        conn_id: str = "graphile_worker_default",
        table: str = "graphile_worker_heartbeats",
        schema: str = "public",
        id_column: str = "locker_id",
        time_column: str = "last_beat_at",
    ) -> None:
        self.conn_id = conn_id
        self.table = table
        self.schema = schema
        self.id_column = id_column
        self.time_column = time_column
        for name in SQL_NAMES:
            value = getattr(self, name)
            if not (isinstance(value, str) and "{{" in value):  # a template: checked once read
                validate_schema_name(value, name)

    def describe(self) -> str:
        return f"table {self.schema}.{self.table} via {self.conn_id}"

    def heartbeats(self, locker_ids: list[str] | None) -> dict[str, Heartbeat]:
        from airflow_graphile.hooks.heartbeats import HeartbeatTableHook

        names = {name: validate_schema_name(getattr(self, name), name) for name in SQL_NAMES}
        rows = HeartbeatTableHook(postgres_conn_id=self.conn_id).read_heartbeats(
            locker_ids, **names
        )
        return {
            row["locker_id"]: Heartbeat(
                locker_id=row["locker_id"],
                last_beat_at=row["last_beat_at"],
                age_seconds=float(row["age_seconds"]),
                details=row["details"],
            )
            for row in rows
        }


def _parse_time(value: Any, what: str) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    else:
        raise ValueError(f"{what}: expected an ISO 8601 time, got {value!r}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{what}: {value!r} has no time zone")
    return moment


URLLIB3_REQUEST_LOGGER = "urllib3.connectionpool"


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """Keep a logger's debug lines out while a request runs."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    if logger.getEffectiveLevel() < logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.setLevel(level)


class HttpHeartbeatSource:
    """Heartbeats served by an HTTP endpoint, through an Airflow HTTP connection.

    The endpoint is called with ``GET <endpoint>?locker_ids=a,b`` and must answer JSON:
    ``{"now": "<ISO time>", "heartbeats": [{"locker_id": "...", "last_beat_at": "<ISO
    time>"}]}`` (or just the list, or a ``{locker_id: time}`` mapping). Times need a
    time zone. ``now`` is optional; without it ages use Airflow's clock, so keep the
    clocks in sync. Needs ``apache-airflow-providers-http``.

    :param http_conn_id: Airflow HTTP connection (base URL, auth headers).
    :param endpoint: Path of the heartbeat endpoint.
    :param timeout_seconds: How long one request may take (connect and read), in
        seconds; it overrides the connection's ``timeout`` extra. Default 10 s.

    ``http_conn_id`` and ``endpoint`` are templated when the source is given to an
    operator. An error status (a 503), a timeout or an unreachable endpoint fails the
    check with a retryable error.
    """

    template_fields = ("http_conn_id", "endpoint")

    def __init__(
        self,
        http_conn_id: str = "http_default",
        endpoint: str = "heartbeats",
        timeout_seconds: float = DEFAULT_HTTP_TIMEOUT_SECONDS,
    ) -> None:
        if isinstance(timeout_seconds, bool) or not (
            isinstance(timeout_seconds, (int, float)) and timeout_seconds > 0
        ):
            raise GraphileWorkerInputError(
                f"timeout_seconds: {timeout_seconds!r} is not a number of seconds above 0"
            )
        self.http_conn_id = http_conn_id
        self.endpoint = endpoint
        self.timeout_seconds = timeout_seconds

    def describe(self) -> str:
        return redact(f"HTTP {self.http_conn_id}/{self.endpoint}")

    def heartbeats(self, locker_ids: list[str] | None) -> dict[str, Heartbeat]:
        try:
            from airflow.providers.http.hooks.http import HttpHook
        except ImportError:
            raise ImportError(
                "HttpHeartbeatSource needs apache-airflow-providers-http: "
                "pip install 'airflow-graphile[http]'"
            ) from None

        # A query in the endpoint (an API key) goes as parameters, so that the URL the
        # HTTP hook logs does not show it.
        path, _, query_text = self.endpoint.partition("?")
        query: dict[str, Any] = dict(parse_qsl(query_text, keep_blank_values=True))
        if locker_ids is not None:
            query["locker_ids"] = ",".join(locker_ids)
        with _quiet(URLLIB3_REQUEST_LOGGER):  # it logs each request line, query and all
            response = HttpHook(method="GET", http_conn_id=self.http_conn_id).run(
                path, data=query or None, extra_options={"timeout": self.timeout_seconds}
            )
        body = response.json()
        now = datetime.now(timezone.utc)
        if isinstance(body, dict) and "heartbeats" in body:
            if body.get("now") is not None:
                now = _parse_time(body["now"], "now")
            body = body["heartbeats"]
        if isinstance(body, dict):
            items = [{"locker_id": k, "last_beat_at": v} for k, v in body.items()]
        elif isinstance(body, list):
            items = body
        else:
            raise ValueError(f"unexpected heartbeat response: {str(body)[:200]}")
        wanted = None if locker_ids is None else set(locker_ids)
        beats = {}
        for item in items:
            locker_id = str(item["locker_id"])
            if (wanted is None or locker_id in wanted) and item.get("last_beat_at") is not None:
                last = _parse_time(item["last_beat_at"], f"last_beat_at of {locker_id}")
                beats[locker_id] = Heartbeat(locker_id, last, (now - last).total_seconds())
        return beats


class CallableHeartbeatSource:
    """Heartbeats from your own Python function.

    :param function: Called with the locker ids (None: every locker it knows, used to
        ask whether any worker is alive); returns ``{locker_id: last heartbeat}`` as
        time-zone-aware datetimes (None or a missing key: no heartbeat). Ages use
        Airflow's clock. Raise to make the check fail.
    :param name: Name shown in logs.
    """

    def __init__(
        self,
        function: Callable[[list[str] | None], Mapping[str, datetime | None]],
        name: str | None = None,
    ) -> None:
        self.function = function
        self.name = name or getattr(function, "__name__", "callable")

    def describe(self) -> str:
        return f"callable {self.name}"

    def heartbeats(self, locker_ids: list[str] | None) -> dict[str, Heartbeat]:
        now = datetime.now(timezone.utc)
        beats = {}
        asked = None if locker_ids is None else list(locker_ids)
        for locker_id, last in self.function(asked).items():
            if last is None:
                continue
            moment = _parse_time(last, f"heartbeat of {locker_id}")
            beats[str(locker_id)] = Heartbeat(
                str(locker_id), moment, (now - moment).total_seconds()
            )
        return beats
