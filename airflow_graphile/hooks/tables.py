"""The names of Graphile Worker's tables and functions in one worker schema.

The only place that turns the schema name into SQL: always as a quoted identifier
(``psycopg.sql.Identifier``), never as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from psycopg import sql

# Graphile Worker's functions treat a lock older than this as no lock (its 4-hour rule).
LOCK_EXPIRY = timedelta(hours=4)


@dataclass(frozen=True)
class Tables:
    """Identifiers of Graphile Worker's objects in ``schema``."""

    schema: str

    def _name(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    @property
    def jobs(self) -> sql.Identifier:
        return self._name("_private_jobs")

    @property
    def queues(self) -> sql.Identifier:
        return self._name("_private_job_queues")

    @property
    def tasks(self) -> sql.Identifier:
        return self._name("_private_tasks")

    @property
    def migrations(self) -> sql.Identifier:
        return self._name("migrations")

    def function(self, name: str) -> sql.Identifier:
        """One of Graphile Worker's SQL functions, e.g. ``complete_jobs``."""
        return self._name(name)


# A job's state, judged at the moment of the query, for the jobs table aliased ``j``;
# needs the parameter %(lock_expiry)s (LOCK_EXPIRY). See airflow_graphile.filters.STATES.
JOB_STATE = sql.SQL(
    "case"
    " when j.locked_at >= now() - %(lock_expiry)s::interval then 'locked'"
    " when j.attempts >= j.max_attempts then 'failed'"
    " when j.attempts > 0 then 'retrying'"
    " when j.run_at > now() then 'scheduled'"
    " else 'ready' end"
)
