"""Schema guards: is the worker schema there, new enough, and visible to this role?

Run at the start of every transaction the hook opens, before anything changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerPermissionError, GraphileWorkerSchemaError
from airflow_graphile.hooks.tables import Tables

# Schema revisions (max id in <schema>.migrations) this provider is tested against:
# 18 = Graphile Worker 0.16.x, 19 = 0.17.x, 20 = 0.18.0.
TESTED_REVISIONS = (18, 19, 20)
# From revision 19 (0.17.0) locked_by holds the worker pool's id, not the worker's.
POOL_ID_REVISION = 19

PRIVATE_TABLES = ("_private_jobs", "_private_job_queues", "_private_tasks")
ADMIN_FUNCTIONS = (
    "complete_jobs",
    "permanently_fail_jobs",
    "reschedule_jobs",
    "force_unlock_workers",
)


@dataclass(frozen=True)
class SchemaInfo:
    """What the hook found in the worker schema, for the transaction it was found in."""

    schema: str
    revision: int
    role: str

    @property
    def tables(self) -> Tables:
        return Tables(self.schema)

    @property
    def tested(self) -> bool:
        return self.revision in TESTED_REVISIONS

    @property
    def locked_by_is_pool_id(self) -> bool:
        """True when ``locked_by`` holds pool ids (``pool-...``), from Graphile Worker 0.17."""
        return self.revision >= POOL_ID_REVISION


# One round trip: everything the guards need. Revision is read only when the
# migrations table exists, so a missing schema is reported, not a SQL error.
INSPECT = sql.SQL(
    """
    select
      exists (select from pg_namespace where nspname = %(schema)s) as schema_exists,
      array(
        select c.relname::text from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %(schema)s and c.relname = any(%(tables)s)
      ) as tables,
      array(
        select c.relname::text from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %(schema)s and c.relname = any(%(tables)s)
          and row_security_active(c.oid)
        order by c.relname
      ) as hidden_tables,
      (
        select pg_get_userbyid(c.relowner) from pg_class c
        join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = %(schema)s and c.relname = '_private_jobs'
      ) as owner,
      array(
        select distinct p.proname::text from pg_proc p
        join pg_namespace n on n.oid = p.pronamespace
        where n.nspname = %(schema)s and p.proname = any(%(functions)s)
      ) as functions,
      to_regclass(format('%%I.migrations', %(schema)s::text)) is not null as has_migrations,
      current_user as role,
      current_database() as database
    """
)


def inspect_params(schema: str) -> dict[str, Any]:
    return {"schema": schema, "tables": list(PRIVATE_TABLES), "functions": list(ADMIN_FUNCTIONS)}


def revision_statement(tables: Tables) -> sql.Composed:
    return sql.SQL("select max(id) as revision from {}").format(tables.migrations)


def check_installed(schema: str, found: dict[str, Any]) -> None:
    """Raise unless the schema and its migrations table exist."""
    if not found["schema_exists"] or not found["has_migrations"]:
        raise GraphileWorkerSchemaError(
            f"Graphile Worker is not installed in schema {schema!r} of database "
            f"{found['database']!r} (no such schema, or no migrations table). Check the "
            "connection's database and worker_schema, or install the schema with "
            "`graphile-worker --schema-only`."
        )


def schema_info(schema: str, found: dict[str, Any], revision_row: dict[str, Any]) -> SchemaInfo:
    """Check what :data:`INSPECT` found; return the facts or raise a fatal error."""
    revision = int(revision_row["revision"]) if revision_row["revision"] is not None else 0
    missing = sorted(
        (set(PRIVATE_TABLES) - set(found["tables"]))
        | (set(ADMIN_FUNCTIONS) - set(found["functions"]))
    )
    if missing:
        raise GraphileWorkerSchemaError(
            f"Schema {schema!r} is at revision {revision} and lacks {', '.join(missing)}: "
            "it is older than Graphile Worker 0.16 (or not a Graphile Worker schema). "
            "airflow-graphile needs Graphile Worker 0.16 or newer; upgrade it first."
        )
    if found["hidden_tables"]:
        role, owner = found["role"], found["owner"]
        raise GraphileWorkerPermissionError(
            f"Role {role!r} cannot see the rows of "
            + ", ".join(f"{schema}.{t}" for t in found["hidden_tables"])
            + f": row-level security is on for those tables with no policies, and {role!r} "
            f"is not their owner ({owner!r}), a superuser, or a role with BYPASSRLS. Every "
            "admin call would report success and change nothing. Connect as "
            f"{owner!r} (the role that installed Graphile Worker's schema), or run "
            f'GRANT "{owner}" TO "{role}"; or ALTER ROLE "{role}" BYPASSRLS;'
        )
    return SchemaInfo(schema=schema, revision=revision, role=found["role"])


def require_usable(info: SchemaInfo, *, require_tested: bool, log: logging.Logger | Any) -> None:
    """Refuse (``require_tested``) or warn about a revision this provider was not tested with."""
    if info.tested:
        return
    message = (
        f"Schema {info.schema!r} is at revision {info.revision}; airflow-graphile is tested "
        f"with revisions {TESTED_REVISIONS[0]}-{TESTED_REVISIONS[-1]} (Graphile Worker "
        "0.16 to 0.18)."
    )
    if require_tested:
        raise GraphileWorkerSchemaError(
            message + " Cleanup writes to Graphile Worker's private tables, whose layout "
            "may have changed; pass allow_untested_schema=True to run it anyway."
        )
    log.warning("%s Graphile Worker's own SQL functions are called as usual.", message)
