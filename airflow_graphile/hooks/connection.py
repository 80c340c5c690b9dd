"""The connection side of the hook: connect arguments, time bounds, transactions, cancel.

:class:`GraphileWorkerHook` (the facade users call) inherits from this class; the
rooms of SQL never see it, only the :class:`~airflow_graphile.hooks.session.Tx` that
:meth:`GraphileWorkerConnection.transaction` yields.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from copy import deepcopy
from datetime import datetime, timedelta
from typing import Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg.abc import Buffer
from psycopg.rows import dict_row
from psycopg.types.datetime import TimestamptzLoader

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.hooks import id_array, schema
from airflow_graphile.hooks.schema import SchemaInfo
from airflow_graphile.hooks.session import (
    DEFAULT_CONNECT_TIMEOUT_SECONDS,
    TIMEOUT_EXTRAS,
    Timeouts,
    Tx,
    arun_steps,
    opening,
    run_steps,
)
from airflow_graphile.validation import DEFAULT_WORKER_SCHEMA, parse_duration, validate_schema_name

# Shown in pg_stat_activity, so an administrator can tell our sessions apart.
APPLICATION_NAME = "airflow-graphile"


class GraphileWorkerConnection(PostgresHook):
    """Connections to Graphile Worker's database, bounded and checked (base of the hook).

    Takes the arguments documented on :class:`~airflow_graphile.hooks.graphile_worker.
    GraphileWorkerHook`. Every connection, sync or async, is built by
    :meth:`connect_kwargs`; every transaction starts with the time bounds and the schema
    guards (:func:`~airflow_graphile.hooks.session.opening`).
    """

    conn_name_attr = "graphile_worker_conn_id"
    default_conn_name = "graphile_worker_default"
    conn_type = "graphile_worker"
    hook_name = "Graphile Worker"
    ignored_extra_options = PostgresHook.ignored_extra_options | {
        "worker_schema",
        "extra__graphile_worker__worker_schema",
        "cursor",
        *TIMEOUT_EXTRAS,
    }

    def __init__(
        self,
        graphile_worker_conn_id: str = default_conn_name,
        worker_schema: str | None = None,
        *,
        lock_timeout: timedelta | float | str | None = None,
        statement_timeout: timedelta | float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(graphile_worker_conn_id=graphile_worker_conn_id, **kwargs)
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self._worker_schema = None if not worker_schema else validate_schema_name(worker_schema)
        self._lock_timeout = optional_duration(lock_timeout, "lock_timeout")
        self._statement_timeout = optional_duration(statement_timeout, "statement_timeout")
        self._timeouts: Timeouts | None = None
        self._open: set[psycopg.Connection[Any] | psycopg.AsyncConnection[Any]] = set()

    # --- connection ------------------------------------------------------------------

    @property
    def worker_schema(self) -> str:
        """The schema name in use: the argument, else the connection extra, else the default."""
        if self._worker_schema is None:
            self._worker_schema = _schema_from(self.connection.extra_dejson)
        return self._worker_schema

    @property
    def timeouts(self) -> Timeouts:
        """The time bounds in use: the arguments, else the connection extras, else defaults."""
        if self._timeouts is None:
            self._timeouts = Timeouts.resolve(
                lock_timeout=self._lock_timeout,
                statement_timeout=self._statement_timeout,
                extra=self.connection.extra_dejson,
            )
        return self._timeouts

    def connect_kwargs(self, connection: Any) -> dict[str, Any]:
        """psycopg ``connect()`` arguments for an Airflow connection; sync and async use them.

        Built as ``PostgresHook.get_conn`` builds them (IAM token, the ``database``
        override, ``options``, extras other than the ones this hook reads), plus an
        ``application_name`` and a ``connect_timeout`` unless the extras set them.
        """
        conn = deepcopy(connection)
        if conn.extra_dejson.get("iam", False):
            conn.login, conn.password, conn.port = self.get_iam_token(conn)
        kwargs: dict[str, Any] = {
            "host": conn.host,
            "port": conn.port,
            "user": conn.login,
            "password": conn.password,
            "dbname": self.database or conn.schema,
            "application_name": APPLICATION_NAME,
            "connect_timeout": DEFAULT_CONNECT_TIMEOUT_SECONDS,
        }
        if self.options:
            kwargs["options"] = self.options
        for name, value in conn.extra_dejson.items():
            if name not in self.ignored_extra_options:
                kwargs[name] = value
        return {name: value for name, value in kwargs.items() if value is not None}

    def get_conn(self) -> psycopg.Connection[Any]:
        """A new psycopg 3 connection (not yet tracked for :meth:`cancel`)."""
        kwargs = self.connect_kwargs(self.connection)
        try:
            self.conn = psycopg.Connection.connect(**kwargs)
        except psycopg.OperationalError as error:
            raise_if_no_database(error, kwargs.get("dbname"), self.graphile_worker_conn_id)
            raise
        self.conn.adapters.register_loader("timestamptz", LenientTimestamptzLoader)
        id_array.register(self.conn)
        return self.conn

    def cancel(self) -> None:
        """Cancel the statements this hook is running (from another thread: ``on_kill``)."""
        for conn in list(self._open):
            try:
                conn.cancel_safe() if hasattr(conn, "cancel_safe") else conn.cancel()
            except Exception as error:  # the connection may be closing meanwhile
                self.log.warning("Could not cancel a statement: %s", error)

    @contextmanager
    def transaction(
        self, *, read_only: bool = False, autocommit: bool = False, require_tested: bool = False
    ) -> Iterator[Tx]:
        """Open a connection, bound it, check the schema, and yield a :class:`Tx`.

        One transaction, or with ``autocommit`` a session in which each statement is
        its own transaction (batched work). A read-only transaction is also REPEATABLE
        READ, so every query in it sees the same snapshot. The schema guards run first:
        nothing runs on a missing, too old or invisible schema.
        """
        conn = self.get_conn()
        self._open.add(conn)
        try:
            conn.autocommit = autocommit
            if read_only:
                conn.read_only = True
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.cursor(row_factory=dict_row) as cur:
                if autocommit:
                    yield self._start(cur, local=False, require_tested=require_tested)
                else:
                    with conn.transaction():
                        yield self._start(cur, local=True, require_tested=require_tested)
        finally:
            self._open.discard(conn)
            conn.close()

    def _start(self, cur: psycopg.Cursor[Any], *, local: bool, require_tested: bool) -> Tx:
        version = cur.connection.info.server_version
        steps = opening(self.timeouts, self.worker_schema, local=local, server_version=version)
        info = run_steps(cur, steps)
        schema.require_usable(info, require_tested=require_tested, log=self.log)
        return Tx(cur=cur, schema=info, timeouts=self.timeouts, log=self.log)

    async def _aresolve(self) -> Any:
        """Look the connection up on the async path; settle the schema name and bounds."""
        from airflow.sdk import BaseHook

        connection = await BaseHook.aget_connection(self.graphile_worker_conn_id)
        if self._worker_schema is None:
            self._worker_schema = _schema_from(connection.extra_dejson)
        if self._timeouts is None:
            self._timeouts = Timeouts.resolve(
                lock_timeout=self._lock_timeout,
                statement_timeout=self._statement_timeout,
                extra=connection.extra_dejson,
            )
        return connection

    @asynccontextmanager
    async def async_transaction(
        self, connection: Any
    ) -> AsyncIterator[tuple[psycopg.AsyncCursor[Any], SchemaInfo]]:
        """The async path (triggers): a read-only autocommit session, bounded and checked.

        ``connection`` comes from :meth:`_aresolve` (``BaseHook.aget_connection``); the
        connect arguments, time bounds and schema guards are the sync path's.
        """
        kwargs = await asyncio.to_thread(self.connect_kwargs, connection)
        try:
            conn = await psycopg.AsyncConnection.connect(**kwargs, autocommit=True)
        except psycopg.OperationalError as error:
            raise_if_no_database(error, kwargs.get("dbname"), self.graphile_worker_conn_id)
            raise
        conn.adapters.register_loader("timestamptz", LenientTimestamptzLoader)
        id_array.register(conn)
        self._open.add(conn)
        try:
            await conn.set_read_only(True)
            async with conn.cursor(row_factory=dict_row) as cur:
                version = conn.info.server_version
                steps = opening(
                    self.timeouts, self.worker_schema, local=False, server_version=version
                )
                yield cur, await arun_steps(cur, steps)
        finally:
            self._open.discard(conn)
            await conn.close()


def raise_if_no_database(error: Exception, dbname: Any, conn_id: str) -> None:
    """A connection naming a database that does not exist is a setting to fix, not retry.

    A common mix-up: Graphile Worker's schema (graphile_worker) in the Database field.
    """
    if f'database "{dbname}" does not exist' not in str(error):
        return
    hint = (
        f" If {dbname!r} is Graphile Worker's schema, put the database's name in the "
        "Database field and the schema in the worker_schema extra."
        if dbname == DEFAULT_WORKER_SCHEMA or str(dbname).startswith("graphile")
        else ""
    )
    raise GraphileWorkerInputError(
        f"connection {conn_id!r}: the database {dbname!r} does not exist on this server "
        f"(the connection's Database field names the database).{hint}"
    ) from error


class LenientTimestamptzLoader(TimestamptzLoader):
    """Read a time Python cannot hold (year 10000 and later, BC) as PostgreSQL's text.

    Such rows can exist (Graphile Worker's own functions accept any run_at); a report
    that samples one must not fail because of it.
    """

    def load(self, data: Buffer) -> datetime | str:  # type: ignore[override]
        try:
            return super().load(data)
        except psycopg.DataError:
            return bytes(data).decode()


def optional_duration(value: Any, name: str) -> timedelta | None:
    return None if value is None or value == "" else parse_duration(value, name)


def _schema_from(extra: dict[str, Any]) -> str:
    return validate_schema_name(
        extra.get("worker_schema")
        or extra.get("extra__graphile_worker__worker_schema")
        or DEFAULT_WORKER_SCHEMA
    )
