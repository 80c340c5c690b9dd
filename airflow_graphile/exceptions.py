"""Errors raised by airflow-graphile, by kind.

Two kinds, because Airflow treats them differently:

- :class:`GraphileWorkerFatalError` (and its subclasses) fail the task without
  retrying: retrying cannot fix bad input, a missing schema or a role that cannot
  see the jobs. Nothing was changed when one is raised before any SQL ran.
- :class:`GraphileWorkerTransientError` is retried by Airflow as usual (``retries``):
  a lock or statement timeout, a dropped connection, a heartbeat source that did not
  answer. Its message says what was done before it happened.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowException, AirflowFailException


class GraphileWorkerError(AirflowException):
    """Base class of every error of this provider."""


class GraphileWorkerFatalError(GraphileWorkerError, AirflowFailException):
    """An error that a retry cannot fix: the task fails at once."""


class GraphileWorkerTransientError(GraphileWorkerError):
    """A fault that may pass (timeout, lost connection, unreachable service): retryable."""


class GraphileWorkerInputError(GraphileWorkerFatalError, ValueError):
    """An argument is invalid; nothing was sent to the database."""


class GraphileWorkerSchemaError(GraphileWorkerFatalError):
    """The worker schema is missing, too old, or newer than this provider was tested with."""


class GraphileWorkerPermissionError(GraphileWorkerFatalError):
    """The connection's role cannot see or change Graphile Worker's private tables."""


class GraphileWorkerTimeoutError(GraphileWorkerTransientError):
    """A statement met ``lock_timeout`` or ``statement_timeout`` (or was cancelled)."""
