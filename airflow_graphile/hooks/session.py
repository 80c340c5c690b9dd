"""How every statement reaches PostgreSQL: one transaction object, time bounds, error kinds.

The hook opens connections; this module holds what a room of SQL needs once it has
one: :class:`Tx` (the cursor and the schema facts of one transaction or session),
the :class:`Timeouts` every statement runs under, and :func:`bounded`, which turns a
timeout, a cancellation or a lost connection into an error that names the bound and
says what was done before it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerTimeoutError, GraphileWorkerTransientError
from airflow_graphile.hooks import schema
from airflow_graphile.hooks.schema import SchemaInfo
from airflow_graphile.hooks.tables import Tables
from airflow_graphile.validation import parse_duration

if TYPE_CHECKING:
    from psycopg import AsyncCursor, Cursor

# How long a statement may wait for a row or table lock held by another transaction.
# A worker holds a job's row lock for milliseconds while it claims or finishes it, so
# a couple of seconds separates "busy for a moment" from "held by a long transaction";
# waiting longer would keep workers behind our own locks.
DEFAULT_LOCK_TIMEOUT = timedelta(seconds=2)
# How long one statement (one call, one batch, one cleanup step) may run. Our longest
# statements on 1,000,000 jobs take a few seconds (queue statistics ~1 s, a batch of
# 2,000 well under 1 s, complete_jobs on 1,000,000 ids ~2 s): 60 s is far above
# normal and still ends a runaway (a pathological regular expression) within a minute.
DEFAULT_STATEMENT_TIMEOUT = timedelta(seconds=60)
# How long to wait for a connection to be established.
DEFAULT_CONNECT_TIMEOUT_SECONDS = 10
# Work that meets a row held by another transaction (lock_timeout) is tried again this
# many times, after 0.5 s, 1 s, 2 s; then once more skipping the rows it cannot reach.
LOCK_RETRIES = 3
FIRST_BACKOFF_SECONDS = 0.5
# Connection extras read by the hook itself (kept out of psycopg's connect arguments).
TIMEOUT_EXTRAS = ("lock_timeout", "statement_timeout")


def _seconds(value: timedelta) -> str:
    return f"{value.total_seconds():g} s"


@dataclass(frozen=True)
class Timeouts:
    """The time bounds of every statement; ``timedelta(0)`` disables one (not advised)."""

    lock_timeout: timedelta = DEFAULT_LOCK_TIMEOUT
    statement_timeout: timedelta = DEFAULT_STATEMENT_TIMEOUT

    @classmethod
    def resolve(
        cls, *, lock_timeout: Any, statement_timeout: Any, extra: Mapping[str, Any]
    ) -> Timeouts:
        """Each bound from the argument, else the connection extra, else the default.

        Values are a timedelta or seconds (a number, or a string holding one).
        """

        def pick(name: str, given: Any, default: timedelta) -> timedelta:
            for value in (given, extra.get(name)):
                if value is not None and value != "":
                    return parse_duration(value, name)
            return default

        return cls(
            lock_timeout=pick("lock_timeout", lock_timeout, DEFAULT_LOCK_TIMEOUT),
            statement_timeout=pick(
                "statement_timeout", statement_timeout, DEFAULT_STATEMENT_TIMEOUT
            ),
        )

    def params(self, *, local: bool) -> dict[str, Any]:
        return {
            "lock_timeout": str(int(self.lock_timeout.total_seconds() * 1000)),
            "statement_timeout": str(int(self.statement_timeout.total_seconds() * 1000)),
            "local": local,
        }

    def describe(self) -> str:
        return (
            f"lock_timeout {_seconds(self.lock_timeout)}, "
            f"statement_timeout {_seconds(self.statement_timeout)}"
        )


# Bound parameters, not SET: psycopg binds values on the server, where SET takes none.
# local=true lasts for the transaction; false for the session (autocommit work).
SET_TIMEOUTS = sql.SQL(
    "select set_config('lock_timeout', %(lock_timeout)s, %(local)s),"
    " set_config('statement_timeout', %(statement_timeout)s, %(local)s)"
)
# PostgreSQL 14+ checks, while a statement runs, that its client is still there; a task
# killed with SIGKILL then leaves nothing running on the server within a second.
CLIENT_CHECK_MS = "1000"
SET_CLIENT_CHECK = sql.SQL(
    "select set_config('client_connection_check_interval', %(interval)s, false)"
)
CLIENT_CHECK_SERVER_VERSION = 140000


@dataclass
class Tx:
    """One open transaction (or autocommit session) and what the hook found in the schema.

    Rooms of SQL receive this instead of the hook: they run statements through
    :meth:`execute` (which logs them at debug level) and read ``schema.tables``.
    """

    cur: psycopg.Cursor[dict[str, Any]]
    schema: SchemaInfo
    timeouts: Timeouts
    log: logging.Logger | Any

    def execute(
        self, statement: sql.Composed | sql.SQL, params: Mapping[str, Any] | None = None
    ) -> None:
        self.log.debug("Running: %s", statement.as_string(self.cur))
        self.cur.execute(statement, params)

    def one(
        self, statement: sql.Composed | sql.SQL, params: Mapping[str, Any] | None = None
    ) -> Any:
        self.execute(statement, params)
        row = self.cur.fetchone()
        assert row is not None, "statement returned no row"
        return row

    def all(
        self, statement: sql.Composed | sql.SQL, params: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        self.execute(statement, params)
        return self.cur.fetchall()


# The statements that open every transaction or session, as a generator that yields
# (statement, params) and receives each statement's first row: one logic for the sync
# and the async connection (the way psycopg itself shares code between them).
Steps = Generator[tuple[sql.Composed | sql.SQL, Mapping[str, Any] | None], Any, SchemaInfo]


def opening(timeouts: Timeouts, name: str, *, local: bool, server_version: int) -> Steps:
    """Set the bounds, then run the schema guards; return what they found."""
    yield SET_TIMEOUTS, timeouts.params(local=local)
    if server_version >= CLIENT_CHECK_SERVER_VERSION:
        yield SET_CLIENT_CHECK, {"interval": CLIENT_CHECK_MS}
    found = yield schema.INSPECT, schema.inspect_params(name)
    schema.check_installed(name, found)
    revision = yield schema.revision_statement(Tables(name)), None
    return schema.schema_info(name, found, revision)


def run_steps(cur: Cursor[dict[str, Any]], steps: Steps) -> SchemaInfo:
    row = None
    try:
        while True:
            statement, params = steps.send(row)
            cur.execute(statement, params)
            row = cur.fetchone()
    except StopIteration as done:
        return done.value


async def arun_steps(cur: AsyncCursor[dict[str, Any]], steps: Steps) -> SchemaInfo:
    row = None
    try:
        while True:
            statement, params = steps.send(row)
            await cur.execute(statement, params)
            row = await cur.fetchone()
    except StopIteration as done:
        return done.value


# The hook's ``transaction(read_only=..., autocommit=..., require_tested=...)``, as rooms
# that need more than one transaction receive it.
OpenTx = Callable[..., AbstractContextManager[Tx]]


@contextmanager
def bounded(timeouts: Timeouts, what: str, progress: Callable[[], str]) -> Iterator[None]:
    """Re-raise timeouts, cancellations and lost connections as retryable errors.

    ``what`` names the work ("complete_jobs on 3 ids"); ``progress()`` says what was
    done before the fault ("nothing was changed", "4 batches committed"), read only
    when a fault happens.
    """
    try:
        yield
    except psycopg.errors.LockNotAvailable as error:
        raise GraphileWorkerTimeoutError(
            f"{what}: lock_timeout ({_seconds(timeouts.lock_timeout)}) reached: another "
            f"transaction held a row or table it needed for longer than that. "
            f"{progress()} Retry later, or raise lock_timeout."
        ) from error
    except psycopg.errors.QueryCanceled as error:
        if "statement timeout" in str(error):
            raise GraphileWorkerTimeoutError(
                f"{what}: statement_timeout ({_seconds(timeouts.statement_timeout)}) reached. "
                f"{progress()} Use a smaller batch or a narrower filter, or raise "
                "statement_timeout."
            ) from error
        # The server's message is in English unless lc_messages says otherwise.
        raise GraphileWorkerTimeoutError(
            f"{what}: the statement was cancelled (the task was stopped, an administrator "
            f"cancelled it, or it reached statement_timeout "
            f"{_seconds(timeouts.statement_timeout)}). {progress()}"
        ) from error
    except psycopg.OperationalError as error:
        raise GraphileWorkerTransientError(
            f"{what}: the database connection failed: {error}. {progress()}"
        ) from error


T = TypeVar("T")


def with_lock_retries(
    work: Callable[[bool], T],
    *,
    log: logging.Logger | Any,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``work(skip_busy=False)``; on lock_timeout retry with backoff, then skip busy rows.

    ``work`` must be safe to repeat: each try is its own transaction, rolled back when
    it meets the lock. The last try, ``work(True)``, must not wait for rows at all.
    """
    delay = FIRST_BACKOFF_SECONDS
    for attempt in range(1, LOCK_RETRIES + 1):
        try:
            return work(False)
        except psycopg.errors.LockNotAvailable:
            log.info(
                "%s: waited past lock_timeout for a row another transaction holds; "
                "trying again in %.1f s (%d/%d)",
                what,
                delay,
                attempt,
                LOCK_RETRIES,
            )
            sleep(delay)
            delay *= 2
    log.warning("%s: rows are still held by another transaction; skipping them", what)
    return work(True)
