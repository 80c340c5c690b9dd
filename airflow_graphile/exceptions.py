"""Errors raised by airflow-graphile.

All of them fail the Airflow task without retrying: retrying cannot fix bad
input, a missing schema or a role that cannot see the jobs.
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException


class GraphileWorkerError(AirflowFailException):
    """Base class for the errors of this provider."""


class GraphileWorkerInputError(GraphileWorkerError, ValueError):
    """An argument is invalid; nothing was sent to the database."""


class GraphileWorkerSchemaError(GraphileWorkerError):
    """The worker schema is missing, too old, or newer than this provider was tested with."""


class GraphileWorkerPermissionError(GraphileWorkerError):
    """The connection's role cannot see or change Graphile Worker's private tables."""
