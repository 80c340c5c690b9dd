"""Hook that runs Graphile Worker's admin functions, built on the Postgres provider's hook.

Every public method runs in one transaction on a new connection, and first checks that
the worker schema is one this provider understands and that the connection's role can
see Graphile Worker's private tables (see :meth:`GraphileWorkerHook.schema_info`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg import sql
from psycopg.rows import dict_row

from airflow_graphile.exceptions import (
    GraphileWorkerError,
    GraphileWorkerInputError,
    GraphileWorkerPermissionError,
    GraphileWorkerSchemaError,
)
from airflow_graphile.filters import DEFAULT_BATCH_SIZE, STATES, parse_job_filter
from airflow_graphile.hooks import job_queries
from airflow_graphile.hooks.job_queries import LOCK_TIMEOUT
from airflow_graphile.reports import (
    SKIP_CHANGED,
    SKIP_LOCKED,
    SKIP_UNKNOWN,
    BulkReport,
    CleanupReport,
    JobsReport,
    UnlockReport,
)
from airflow_graphile.validation import (
    CLEANUP_TASKS,
    DEFAULT_WORKER_SCHEMA,
    parse_batch_size,
    parse_cleanup_tasks,
    parse_duration,
    parse_identifiers,
    parse_job_ids,
    parse_reason,
    parse_run_at,
    parse_smallint,
    parse_locker_ids,
    validate_schema_name,
)

# Schema revisions (max id in <schema>.migrations) this provider is tested against:
# 18 = Graphile Worker 0.16.x, 19 = 0.17.x, 20 = 0.18.0.
TESTED_REVISIONS = (18, 19, 20)
# From revision 19 (0.17.0) locked_by holds the worker pool's id, not the worker's.
POOL_ID_REVISION = 19

# How a job function receives its ids: one array parameter.
JOB_IDS_PARAM = sql.SQL("%(job_ids)s::bigint[]")
# Permanently failed jobs deleted per transaction by cleanup.
CLEANUP_BATCH_SIZE = 10_000
# How often a filtered operation logs its progress.
PROGRESS_EVERY_SECONDS = 5.0

PRIVATE_TABLES = ("_private_jobs", "_private_job_queues", "_private_tasks")
ADMIN_FUNCTIONS = (
    "complete_jobs",
    "permanently_fail_jobs",
    "reschedule_jobs",
    "force_unlock_workers",
)
JOB_FUNCTIONS = ("complete_jobs", "permanently_fail_jobs", "reschedule_jobs")


@dataclass(frozen=True)
class SchemaInfo:
    """What the hook found in the worker schema."""

    schema: str
    revision: int
    role: str

    @property
    def tested(self) -> bool:
        return self.revision in TESTED_REVISIONS

    @property
    def locked_by_is_pool_id(self) -> bool:
        """True when ``locked_by`` holds pool ids (``pool-...``), from Graphile Worker 0.17."""
        return self.revision >= POOL_ID_REVISION


class GraphileWorkerHook(PostgresHook):
    """Run Graphile Worker's admin functions from Airflow.

    :param graphile_worker_conn_id: Airflow connection to the PostgreSQL database that
        holds Graphile Worker (type ``graphile_worker`` or ``postgres``; the database
        name goes in the connection's schema field).
    :param worker_schema: The schema Graphile Worker is installed in. Default: the
        connection extra ``worker_schema``, else ``graphile_worker``. It is always
        quoted as an identifier, never interpolated.

    The connection's role must own Graphile Worker's tables (normally: the role that
    installed its schema) or bypass row-level security; otherwise every call fails
    with :class:`GraphileWorkerPermissionError` instead of silently changing nothing.
    """

    conn_name_attr = "graphile_worker_conn_id"
    default_conn_name = "graphile_worker_default"
    conn_type = "graphile_worker"
    hook_name = "Graphile Worker"
    ignored_extra_options = PostgresHook.ignored_extra_options | {
        "worker_schema",
        "extra__graphile_worker__worker_schema",
    }

    def __init__(
        self,
        graphile_worker_conn_id: str = default_conn_name,
        worker_schema: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(graphile_worker_conn_id=graphile_worker_conn_id, **kwargs)
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self._worker_schema = None if worker_schema is None else validate_schema_name(worker_schema)
        self.schema_info: SchemaInfo | None = None

    @property
    def worker_schema(self) -> str:
        """The schema name in use: the argument, else the connection extra, else the default."""
        if self._worker_schema is None:
            extra = self.connection.extra_dejson
            self._worker_schema = validate_schema_name(
                extra.get("worker_schema")
                or extra.get("extra__graphile_worker__worker_schema")
                or DEFAULT_WORKER_SCHEMA
            )
        return self._worker_schema

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.worker_schema, name)

    # --- connection and guards -------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        conn = self.get_conn()
        if not isinstance(conn, psycopg.Connection):
            conn.close()
            raise GraphileWorkerError(
                "airflow-graphile needs psycopg 3 and SQLAlchemy 2 (the Postgres provider "
                "then uses psycopg 3); install 'psycopg[binary]>=3.1'"
            )
        return conn

    @contextmanager
    def _transaction(
        self, *, read_only: bool = False, require_tested: bool = False
    ) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """Open a connection, check the schema, and yield a cursor inside one transaction.

        A read-only transaction is also REPEATABLE READ, so every query in it sees
        the same snapshot.
        """
        conn = self._connect()
        try:
            conn.read_only = read_only
            if read_only:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
                info = self._inspect_schema(cur)
                self._require_usable(info, require_tested=require_tested)
                yield cur
        finally:
            conn.close()

    def _execute(
        self, cur: psycopg.Cursor[Any], statement: sql.Composed | sql.SQL, params: Any = None
    ) -> None:
        self.log.debug("Running: %s", statement.as_string(cur))
        cur.execute(statement, params)

    def _inspect_schema(self, cur: psycopg.Cursor[dict[str, Any]]) -> SchemaInfo:
        schema = self.worker_schema
        self._execute(
            cur,
            sql.SQL(
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
                  exists (
                    select from pg_class c join pg_namespace n on n.oid = c.relnamespace
                    where n.nspname = %(schema)s and c.relname = 'migrations'
                  ) as has_migrations,
                  current_user as role,
                  current_database() as database
                """
            ),
            {"schema": schema, "tables": list(PRIVATE_TABLES), "functions": list(ADMIN_FUNCTIONS)},
        )
        found = cur.fetchone()
        assert found is not None
        if not found["schema_exists"] or not found["has_migrations"]:
            raise GraphileWorkerSchemaError(
                f"Graphile Worker is not installed in schema {schema!r} of database "
                f"{found['database']!r} (no such schema, or no migrations table). Check the "
                "connection's database and worker_schema, or install the schema with "
                "`graphile-worker --schema-only`."
            )
        self._execute(
            cur, sql.SQL("select max(id) as revision from {}").format(self._table("migrations"))
        )
        row = cur.fetchone()
        revision = int(row["revision"]) if row and row["revision"] is not None else 0
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
        info = SchemaInfo(schema=schema, revision=revision, role=found["role"])
        self.schema_info = info
        return info

    def _require_usable(self, info: SchemaInfo, *, require_tested: bool) -> None:
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
        self.log.warning("%s Graphile Worker's own SQL functions are called as usual.", message)

    def schema_revision(self) -> int:
        """Return the worker schema's migration number (``max(id)`` of its migrations table)."""
        with self._transaction(read_only=True):
            assert self.schema_info is not None
            return self.schema_info.revision

    def test_connection(self) -> tuple[bool, str]:  # type: ignore[override]
        """Check that the connection reaches a usable Graphile Worker schema."""
        try:
            revision = self.schema_revision()
        except Exception as error:
            return False, str(error)
        return True, f"Graphile Worker schema {self.worker_schema!r} at revision {revision}"

    # --- complete / permanently fail / reschedule ------------------------------------

    def complete_jobs(self, job_ids: Any) -> list[dict[str, Any]]:
        """Delete the given jobs, as Graphile Worker's ``complete_jobs`` does.

        Jobs locked less than 4 hours ago, and unknown ids, are skipped silently:
        the rows returned (the deleted jobs) can be fewer than the ids asked for.
        Use :meth:`run_job_function` to learn why each id was skipped.
        """
        return self.run_job_function("complete_jobs", job_ids, with_rows=True).rows or []

    def permanently_fail_jobs(
        self, job_ids: Any, reason: str | None = None
    ) -> list[dict[str, Any]]:
        """Mark jobs as permanently failed: attempts = max_attempts, last_error = ``reason``.

        ``reason=None`` uses Graphile Worker's default message. Locked jobs are skipped.
        Returns the updated rows.
        """
        report = self.run_job_function(
            "permanently_fail_jobs", job_ids, with_rows=True, reason=reason
        )
        return report.rows or []

    def reschedule_jobs(
        self,
        job_ids: Any,
        *,
        run_at: datetime | str | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        max_attempts: int | None = None,
    ) -> list[dict[str, Any]]:
        """Change run_at, priority, attempts and/or max_attempts; None leaves a column as is.

        Locked jobs are skipped. Returns the updated rows.
        """
        report = self.run_job_function(
            "reschedule_jobs",
            job_ids,
            with_rows=True,
            run_at=run_at,
            priority=priority,
            attempts=attempts,
            max_attempts=max_attempts,
        )
        return report.rows or []

    def run_job_function(
        self,
        function: str,
        job_ids: Any,
        *,
        dry_run: bool = False,
        with_rows: bool = False,
        **arguments: Any,
    ) -> JobsReport:
        """Call one of Graphile Worker's three job functions and explain the result.

        ``function`` is ``complete_jobs``, ``permanently_fail_jobs`` or ``reschedule_jobs``;
        ``arguments`` are the keyword arguments of the hook method of that name.

        All arguments are checked before anything is sent. With ``dry_run=True`` nothing is
        changed: a read-only transaction reports which jobs the call would change and which
        it would skip, by Graphile Worker's rule (a job locked less than 4 hours ago is
        skipped). An empty ``job_ids`` is a no-op that does not touch the database.
        ``with_rows`` also returns the job rows as JSON-safe dicts (payload included);
        without it only ids come back, which is much cheaper for large lists.
        """
        call, params = self._job_function_call(function, arguments)
        ids = parse_job_ids(job_ids)
        rows: list[dict[str, Any]] | None = [] if with_rows else None
        if not ids:
            return JobsReport(function, [], [], [], dry_run=dry_run, rows=rows)
        with self._transaction(read_only=dry_run) as cur:
            if dry_run:
                affected, skipped, rows = self._preview_job_function(cur, ids, with_rows)
            else:
                result_sql = (
                    "select coalesce(json_agg(j order by j.id), '[]') as rows from {} as j"
                    if with_rows
                    else "select coalesce(array_agg(j.id order by j.id), '{{}}') as ids "
                    "from {} as j"
                )
                self._execute(cur, sql.SQL(result_sql).format(call), {"job_ids": ids, **params})
                result = cur.fetchone()
                assert result is not None
                if with_rows:
                    rows = result["rows"]
                    affected = [row["id"] for row in result["rows"]]
                else:
                    affected = list(result["ids"])
                skipped = self._explain_skipped(cur, ids, set(affected))
        return JobsReport(function, ids, affected, skipped, dry_run=dry_run, rows=rows)

    def _job_function_call(
        self,
        function: str,
        arguments: dict[str, Any],
        ids: sql.Composable = JOB_IDS_PARAM,
    ) -> tuple[sql.Composable, dict[str, Any]]:
        """Return the function call (its ids given by ``ids``) and its checked arguments."""
        name = sql.Identifier(self.worker_schema, function)
        if function == "complete_jobs" and not arguments:
            return sql.SQL("{}({})").format(name, ids), {}
        if function == "permanently_fail_jobs" and set(arguments) <= {"reason"}:
            reason = {"reason": parse_reason(arguments.get("reason"))}
            return sql.SQL("{}({}, %(reason)s::text)").format(name, ids), reason
        if function == "reschedule_jobs" and set(arguments) <= {
            "run_at",
            "priority",
            "attempts",
            "max_attempts",
        }:
            changes: dict[str, Any] = {
                "run_at": parse_run_at(arguments.get("run_at")),
                "priority": parse_smallint(arguments.get("priority"), "priority"),
                "attempts": parse_smallint(arguments.get("attempts"), "attempts", minimum=0),
                "max_attempts": parse_smallint(
                    arguments.get("max_attempts"), "max_attempts", minimum=1
                ),
            }
            _check_reschedule(changes)
            return (
                sql.SQL(
                    "{}({}, run_at => %(run_at)s::timestamptz, "
                    "priority => %(priority)s::int, attempts => %(attempts)s::int, "
                    "max_attempts => %(max_attempts)s::int)"
                ).format(name, ids),
                changes,
            )
        if function not in JOB_FUNCTIONS:
            raise GraphileWorkerError(
                f"Unknown job function {function!r}; expected one of {', '.join(JOB_FUNCTIONS)}"
            )
        raise GraphileWorkerError(
            f"{function} does not take the argument(s) {', '.join(sorted(arguments))}"
        )

    def _explain_skipped(
        self, cur: psycopg.Cursor[dict[str, Any]], ids: list[int], changed: set[int]
    ) -> list[dict[str, Any]]:
        """Say why each id that the function left alone was skipped (same transaction)."""
        left = [job_id for job_id in ids if job_id not in changed]
        if not left:
            return []
        self._execute(
            cur,
            sql.SQL(
                "select id, locked_by, locked_at from {} where id = any(%(ids)s::bigint[])"
            ).format(self._table("_private_jobs")),
            {"ids": left},
        )
        found = {row["id"]: row for row in cur.fetchall()}
        skipped = []
        for job_id in sorted(left):
            row = found.get(job_id)
            if row is None:
                skipped.append({"id": job_id, "reason": SKIP_UNKNOWN})
            elif row["locked_at"] is not None:
                skipped.append(_locked(row))
            else:
                skipped.append({"id": job_id, "reason": SKIP_CHANGED})
        return skipped

    def _preview_job_function(
        self, cur: psycopg.Cursor[dict[str, Any]], ids: list[int], with_rows: bool
    ) -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]] | None]:
        """Affected ids, skipped entries and (optionally) rows, by Graphile Worker's rule."""
        self._execute(
            cur,
            sql.SQL(
                "select j.id, j.locked_by, j.locked_at, "
                "coalesce(j.locked_at >= now() - %(timeout)s::interval, false) as locked{} "
                "from {} as j where j.id = any(%(ids)s::bigint[]) order by j.id"
            ).format(
                sql.SQL(", to_json(j) as row" if with_rows else ""),
                self._table("_private_jobs"),
            ),
            {"ids": ids, "timeout": LOCK_TIMEOUT},
        )
        found = {row["id"]: row for row in cur.fetchall()}
        affected = [job_id for job_id, row in found.items() if not row["locked"]]
        rows = [found[job_id]["row"] for job_id in affected] if with_rows else None
        skipped = []
        for job_id in sorted(ids):
            row = found.get(job_id)
            if row is None:
                skipped.append({"id": job_id, "reason": SKIP_UNKNOWN})
            elif row["locked"]:
                skipped.append(_locked(row))
        return affected, skipped, rows

    # --- filtered (bulk) operations --------------------------------------------------

    def run_job_function_on_filter(
        self,
        function: str,
        job_filter: Any,
        *,
        allow_all: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        dry_run: bool = False,
        sample_size: int = 10,
        **arguments: Any,
    ) -> BulkReport:
        """Apply a job function to every job a filter selects, in short batches.

        ``function`` is ``complete_jobs``, ``permanently_fail_jobs`` or
        ``reschedule_jobs``; ``arguments`` are its keyword arguments; ``job_filter`` a
        :class:`~airflow_graphile.filters.JobFilter` or a dict of its fields. An empty
        filter is refused unless ``allow_all``.

        Jobs are taken in id order, ``batch_size`` at a time, up to the largest id that
        existed when the run began; each batch is one statement in its own transaction
        that hands the batch's ids to Graphile Worker's own function, so locked jobs are
        skipped exactly as it skips them and a worker never waits long. Progress is
        logged. An interrupted run leaves every finished batch done and the one in flight
        undone; running it again is safe. ``dry_run`` only counts the matching jobs (and
        how many are locked) and returns a sample.
        """
        selected = parse_job_filter(job_filter, allow_all=allow_all)
        size = parse_batch_size(batch_size)
        ids = sql.SQL("(select coalesce(array_agg(id), '{}') from batch)::bigint[]")
        call, call_params = self._job_function_call(function, arguments, ids=ids)
        report = BulkReport(function, selected.to_dict(), dry_run=dry_run, batch_size=size)
        started = time.monotonic()
        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor(row_factory=dict_row) as cur:
                self._require_usable(self._inspect_schema(cur), require_tested=False)
                self._check_pattern(cur, selected.last_error_pattern)
                self._execute(
                    cur,
                    sql.SQL("select coalesce(max(id), 0) as up_to from {}").format(
                        self._table("_private_jobs")
                    ),
                )
                up_to = int(cur.fetchone()["up_to"])  # type: ignore[index]
                statement, params = job_queries.count_statement(self.worker_schema, selected)
                self._execute(cur, statement, {**params, "up_to": up_to})
                counted = cur.fetchone()
                assert counted is not None
                report.matched_at_start = int(counted["matched"])
                report.locked_at_start = int(counted["locked"])
                if dry_run:
                    statement, params = job_queries.sample_statement(self.worker_schema, selected)
                    self._execute(cur, statement, {**params, "up_to": up_to, "limit": sample_size})
                    report.sample = [_jsonable(row) for row in cur.fetchall()]
                    return report
                self.log.info(
                    "%s: %d job(s) match %s; working in batches of %d",
                    function,
                    report.matched_at_start,
                    selected.describe(),
                    size,
                )
                statement, params = job_queries.batch_statement(self.worker_schema, selected, call)
                params = {
                    **params,
                    **call_params,
                    "up_to": up_to,
                    "batch_size": size,
                    "scan_limit": size * job_queries.SCAN_FACTOR,
                }
                after, last_log = 0, time.monotonic()
                while True:
                    batch_started = time.monotonic()
                    self._execute(cur, statement, {**params, "after": after})
                    row = cur.fetchone()
                    assert row is not None
                    took = time.monotonic() - batch_started
                    report.batches += 1
                    report.longest_batch_seconds = max(report.longest_batch_seconds, took)
                    report.processed += int(row["matched"])
                    report.changed += int(row["changed"])
                    if row["matched"] == size:
                        after = int(row["last_id"])  # a full batch: more may follow it
                    elif row["scanned_to"] is None or row["scanned_to"] >= up_to:
                        break  # the window reached the end
                    else:
                        after = int(row["scanned_to"])  # the window was read to its end
                    if time.monotonic() - last_log >= PROGRESS_EVERY_SECONDS:
                        last_log = time.monotonic()
                        self._log_progress(report, started)
        finally:
            conn.close()
            report.seconds = time.monotonic() - started
        return report

    def _log_progress(self, report: BulkReport, started: float) -> None:
        elapsed = time.monotonic() - started
        total = max(report.matched_at_start, 1)
        self.log.info(
            "%s: %d/%d matching jobs done (%.0f%%), %d changed, %d skipped as locked, %.0f jobs/s",
            report.function,
            report.processed,
            report.matched_at_start,
            100 * report.processed / total,
            report.changed,
            report.skipped_locked,
            report.processed / elapsed if elapsed > 0 else 0,
        )

    def _check_pattern(self, cur: psycopg.Cursor[dict[str, Any]], pattern: str | None) -> None:
        """Refuse a last_error pattern PostgreSQL cannot compile, before anything runs."""
        if pattern is None:
            return
        try:
            with cur.connection.transaction():
                self._execute(cur, sql.SQL("select '' ~ %(pattern)s as ok"), {"pattern": pattern})
        except psycopg.errors.InvalidRegularExpression as error:
            raise GraphileWorkerInputError(
                f"last_error_pattern: {pattern!r} is not a valid PostgreSQL regular "
                f"expression: {error}"
            ) from None

    # --- queue statistics ------------------------------------------------------------

    def queue_stats(self) -> dict[str, Any]:
        """Count jobs by state, by task identifier and by queue, and describe the locks.

        One scan of the jobs table (in one read-only snapshot), plus the small queues
        table. Returns ``{"total", "by_state", "by_task", "by_queue",
        "oldest_ready_age_seconds", "locks": {"jobs", "oldest_age_seconds",
        "by_locker"}, "locked_queues"}``; states are those of
        :data:`airflow_graphile.filters.STATES`. Ages are in seconds, None when there
        is nothing to measure.
        """
        states = dict.fromkeys(STATES, 0)
        stats: dict[str, Any] = {
            "total": 0,
            "by_state": dict(states),
            "by_task": {},
            "by_queue": {},
            "oldest_ready_age_seconds": None,
            "locks": {"jobs": 0, "oldest_age_seconds": None, "by_locker": {}},
            "locked_queues": [],
        }
        with self._transaction(read_only=True) as cur:
            statement, params = job_queries.stats_statement(self.worker_schema)
            self._execute(cur, statement, params)
            rows = cur.fetchall()
            self._execute(cur, job_queries.locked_queues_statement(self.worker_schema))
            stats["locked_queues"] = [_jsonable(row) for row in cur.fetchall()]
        for row in rows:
            state, count = row["state"], int(row["jobs"])
            if row["by_task"]:
                stats["by_task"].setdefault(row["task"], dict(states))[state] = count
            elif row["by_queue"]:
                if row["queue"] is not None:
                    stats["by_queue"].setdefault(row["queue"], dict(states))[state] = count
            elif row["by_locker"]:
                if state == "locked" and row["locked_by"] is not None:
                    stats["locks"]["by_locker"][row["locked_by"]] = {
                        "jobs": count,
                        "oldest_age_seconds": _round(row["oldest_lock_age"]),
                    }
            else:
                stats["by_state"][state] = count
                stats["total"] += count
                if state == "ready":
                    stats["oldest_ready_age_seconds"] = _round(row["oldest_run_at_age"])
                if state == "locked":
                    stats["locks"]["jobs"] = count
                    stats["locks"]["oldest_age_seconds"] = _round(row["oldest_lock_age"])
        return stats

    # --- force unlock ----------------------------------------------------------------

    def force_unlock_workers(self, worker_ids: Any, *, dry_run: bool = False) -> UnlockReport:
        """Release every job and queue lock held by the given worker ids, whatever its age.

        DANGER: only for workers that are dead. Unlocking a live worker's jobs lets another
        worker run them a second time while the first is still running them.

        Since Graphile Worker 0.17, ``locked_by`` holds the worker *pool* id (``pool-...``),
        not the ``worker-...`` id its logs show. Returns the jobs and queues the ids held,
        read (and row-locked) in the same transaction as the unlock. The attempt a crashed
        run used is not given back, as in Graphile Worker. An empty list is a no-op.
        """
        ids = parse_locker_ids(worker_ids)
        report = UnlockReport(requested=ids, dry_run=dry_run)
        if not ids:
            return report
        with self._transaction(read_only=dry_run) as cur:
            lock = sql.SQL("" if dry_run else " for update")
            self._execute(
                cur,
                sql.SQL(
                    "select id, locked_by, locked_at from {} "
                    "where locked_by = any(%(ids)s::text[]) order by id{}"
                ).format(self._table("_private_jobs"), lock),
                {"ids": ids},
            )
            report.jobs = [_jsonable(row) for row in cur.fetchall()]
            self._execute(
                cur,
                sql.SQL(
                    "select queue_name, locked_by, locked_at from {} "
                    "where locked_by = any(%(ids)s::text[]) order by queue_name{}"
                ).format(self._table("_private_job_queues"), lock),
                {"ids": ids},
            )
            report.queues = [_jsonable(row) for row in cur.fetchall()]
            if not dry_run:
                self._execute(
                    cur,
                    sql.SQL("select {}(%(ids)s::text[])").format(
                        sql.Identifier(self.worker_schema, "force_unlock_workers")
                    ),
                    {"ids": ids},
                )
            assert self.schema_info is not None
            if self.schema_info.locked_by_is_pool_id:
                worker_style = [w for w in report.idle_workers if w.startswith("worker-")]
                if worker_style:
                    report.hint = (
                        "this schema (revision >= 19, Graphile Worker 0.17+) records pool ids "
                        "(pool-...) in locked_by, so worker-... ids never hold locks: "
                        + ", ".join(worker_style)
                    )
        return report

    # --- stuck locks -----------------------------------------------------------------

    def find_stuck_locks(
        self,
        stuck_after: timedelta,
        *,
        task_identifiers: Any = None,
        queue_names: Any = None,
    ) -> list[dict[str, Any]]:
        """Return the lockers holding a job or queue lock taken more than ``stuck_after`` ago.

        One dict per locker id (a worker id in Graphile Worker 0.16, a pool id from 0.17):
        ``{"locker_id", "job_ids", "queue_names", "oldest_locked_at",
        "oldest_lock_age_seconds"}``, oldest first. ``task_identifiers`` and
        ``queue_names`` narrow the search (None: no narrowing); with a task filter, a
        queue lock is reported only for a locker that also holds a matching job. Reads
        only; a sequential scan of the jobs table (there is no index on locked_at).
        """
        statement = stuck_locks_statement(self.worker_schema)
        params = stuck_locks_params(stuck_after, task_identifiers, queue_names)
        with self._transaction(read_only=True) as cur:
            self._execute(cur, statement, params)
            return [stuck_locker(row) for row in cur.fetchall()]

    # --- cleanup ---------------------------------------------------------------------

    def cleanup(
        self,
        tasks: Any,
        *,
        task_identifiers_to_keep: Any = (),
        dry_run: bool = False,
        allow_untested_schema: bool = False,
        permafailed_older_than: Any = None,
        batch_size: int = CLEANUP_BATCH_SIZE,
    ) -> CleanupReport:
        """Run Graphile Worker's cleanup steps, with its semantics and in its order.

        Steps (any subset, always run in this order, each in its own transaction, as
        Graphile Worker runs them):

        - ``DELETE_PERMAFAILED_JOBS``: delete unlocked jobs whose attempts reached max_attempts.
        - ``GC_TASK_IDENTIFIERS``: delete task identifiers no job uses, except
          ``task_identifiers_to_keep``. DANGER: unsafe while any worker runs (workers cache
          task ids; a re-created identifier gets a new id they will not match).
        - ``GC_JOB_QUEUES``: delete unlocked queues no job uses.

        ``permafailed_older_than`` (a timedelta or seconds; None: no bound) keeps
        permanently failed jobs that failed more recently than that (by ``updated_at``),
        so people can still look at them. DELETE_PERMAFAILED_JOBS deletes in batches of
        ``batch_size`` jobs, each its own transaction; the end result is Graphile Worker's.

        Returns the rows each step removed. ``dry_run=True`` counts what each step would
        remove, in one read-only snapshot, allowing for the steps before it. These
        statements touch Graphile Worker's private tables, so they refuse to run on a
        schema revision this provider was not tested with unless ``allow_untested_schema``.
        """
        steps = parse_cleanup_tasks(tasks)
        keep = parse_identifiers(task_identifiers_to_keep, "task_identifiers_to_keep")
        size = parse_batch_size(batch_size)
        older_than = (
            None
            if permafailed_older_than in (None, "")
            else parse_duration(permafailed_older_than, "permafailed_older_than")
        )
        params = {"keep": keep, "older_than": older_than, "batch_size": size}

        report = CleanupReport(removed={}, task_identifiers_to_keep=keep, dry_run=dry_run)
        require_tested = not allow_untested_schema
        if dry_run:
            with self._transaction(read_only=True, require_tested=require_tested) as cur:
                after_delete = "DELETE_PERMAFAILED_JOBS" in steps
                for step in steps:
                    table, where = self._cleanup_target(step, skip_permafailed=after_delete)
                    self._execute(
                        cur,
                        sql.SQL("select count(*) as n from {} where {}").format(table, where),
                        params,
                    )
                    counted = cur.fetchone()
                    report.removed[step] = int(counted["n"]) if counted else 0
            return report
        for step in steps:
            if step == "DELETE_PERMAFAILED_JOBS":
                report.removed[step] = self._delete_permafailed_in_batches(params, require_tested)
                continue
            with self._transaction(require_tested=require_tested) as cur:
                table, where = self._cleanup_target(step, skip_permafailed=False)
                self._execute(cur, sql.SQL("delete from {} where {}").format(table, where), params)
                report.removed[step] = cur.rowcount
        return report

    def _delete_permafailed_in_batches(self, params: dict[str, Any], require_tested: bool) -> int:
        """DELETE_PERMAFAILED_JOBS, ``batch_size`` jobs per transaction, in id order."""
        table, where = self._cleanup_target("DELETE_PERMAFAILED_JOBS", skip_permafailed=False)
        statement = sql.SQL(
            "with batch as (select jobs.id from {table} where jobs.id > %(after)s and {where}"
            " order by jobs.id limit %(batch_size)s),"
            " gone as (delete from {jobs} as doomed using batch where doomed.id = batch.id"
            " returning doomed.id)"
            " select (select count(*) from batch) as matched, (select max(id) from batch)"
            " as last_id, (select count(*) from gone) as removed"
        ).format(table=table, where=where, jobs=self._table("_private_jobs"))
        removed, after = 0, 0
        with self._transaction(require_tested=require_tested):
            pass  # checks the schema and the role once, before the first batch
        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor(row_factory=dict_row) as cur:
                while True:
                    self._execute(cur, statement, {**params, "after": after})
                    row = cur.fetchone()
                    assert row is not None
                    removed += int(row["removed"])
                    if row["last_id"] is None or row["matched"] < params["batch_size"]:
                        return removed
                    after = int(row["last_id"])
        finally:
            conn.close()

    def _cleanup_target(
        self, step: str, *, skip_permafailed: bool
    ) -> tuple[sql.Composed, sql.Composable]:
        """Return the table (with alias) and condition of a cleanup step.

        ``skip_permafailed`` makes the garbage-collection steps ignore the jobs that
        DELETE_PERMAFAILED_JOBS would have removed before them (used by dry runs).
        """
        jobs = self._table("_private_jobs")
        permafailed = sql.SQL(
            "jobs.attempts = jobs.max_attempts and jobs.locked_at is null"
            " and (%(older_than)s::interval is null"
            " or jobs.updated_at < now() - %(older_than)s::interval)"
        )
        remaining: sql.Composable = sql.SQL("")
        if skip_permafailed:
            remaining = sql.SQL(" and not ({})").format(permafailed)
        if step == "DELETE_PERMAFAILED_JOBS":
            return sql.SQL("{} as jobs").format(jobs), permafailed
        if step == "GC_TASK_IDENTIFIERS":
            return sql.SQL("{} as tasks").format(self._table("_private_tasks")), sql.SQL(
                "tasks.identifier <> all(%(keep)s::text[]) and not exists ("
                "select from {} as jobs where jobs.task_id = tasks.id{})"
            ).format(jobs, remaining)
        if step == "GC_JOB_QUEUES":
            return sql.SQL("{} as job_queues").format(self._table("_private_job_queues")), sql.SQL(
                "job_queues.locked_at is null and not exists ("
                "select from {} as jobs where jobs.job_queue_id = job_queues.id{})"
            ).format(jobs, remaining)
        raise GraphileWorkerError(
            f"Unknown cleanup step {step!r}; allowed: {', '.join(CLEANUP_TASKS)}"
        )


def _check_reschedule(params: dict[str, Any]) -> None:
    if all(value is None for value in params.values()):
        raise GraphileWorkerInputError(
            "reschedule_jobs: nothing to change; give run_at, priority, attempts or max_attempts"
        )
    attempts, max_attempts = params["attempts"], params["max_attempts"]
    if attempts is not None and max_attempts is not None and attempts > max_attempts:
        raise GraphileWorkerInputError(
            f"attempts: {attempts} is more than max_attempts {max_attempts}"
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 3)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _locked(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "reason": SKIP_LOCKED,
        "locked_by": row["locked_by"],
        "locked_at": row["locked_at"].isoformat(),
    }


def stuck_locks_statement(schema: str) -> sql.Composed:
    """The query behind :meth:`GraphileWorkerHook.find_stuck_locks` (also run by the trigger)."""
    return sql.SQL(
        """
        with stuck_jobs as (
          select j.locked_by, j.id, j.locked_at
          from {jobs} as j
          join {tasks} as t on t.id = j.task_id
          left join {queues} as q on q.id = j.job_queue_id
          where j.locked_at < now() - %(stuck_after)s::interval
            and j.locked_by is not null
            and (%(tasks)s::text[] is null or t.identifier = any(%(tasks)s::text[]))
            and (%(queues)s::text[] is null or q.queue_name = any(%(queues)s::text[]))
        ), stuck_queues as (
          select q.locked_by, q.queue_name, q.locked_at
          from {queues} as q
          where q.locked_at < now() - %(stuck_after)s::interval
            and q.locked_by is not null
            and (%(queues)s::text[] is null or q.queue_name = any(%(queues)s::text[]))
            and (%(tasks)s::text[] is null
                 or q.locked_by in (select locked_by from stuck_jobs))
        ), locks as (
          select locked_by, id, null::text as queue_name, locked_at from stuck_jobs
          union all
          select locked_by, null, queue_name, locked_at from stuck_queues
        )
        select
          locked_by as locker_id,
          coalesce(array_agg(id order by id) filter (where id is not null), '{{}}') as job_ids,
          coalesce(
            array_agg(queue_name order by queue_name) filter (where queue_name is not null),
            '{{}}'
          ) as queue_names,
          min(locked_at) as oldest_locked_at,
          extract(epoch from now() - min(locked_at))::float8 as oldest_lock_age_seconds
        from locks
        group by locked_by
        order by min(locked_at), locked_by
        """
    ).format(
        jobs=sql.Identifier(schema, "_private_jobs"),
        tasks=sql.Identifier(schema, "_private_tasks"),
        queues=sql.Identifier(schema, "_private_job_queues"),
    )


def stuck_locks_params(
    stuck_after: timedelta, task_identifiers: Any, queue_names: Any
) -> dict[str, Any]:
    """Check the stuck-lock filters and return them as query parameters."""
    return {
        "stuck_after": parse_duration(stuck_after, "stuck_after"),
        "tasks": parse_identifiers(task_identifiers, "task_identifiers") or None,
        "queues": parse_identifiers(queue_names, "queue_names") or None,
    }


def stuck_locker(row: dict[str, Any]) -> dict[str, Any]:
    """A row of :func:`stuck_locks_statement` as a JSON-safe dict."""
    return {
        "locker_id": row["locker_id"],
        "job_ids": list(row["job_ids"]),
        "queue_names": list(row["queue_names"]),
        "oldest_locked_at": row["oldest_locked_at"].isoformat(),
        "oldest_lock_age_seconds": round(float(row["oldest_lock_age_seconds"]), 3),
    }


def connect_kwargs(connection: Any, ignored: set[str] | frozenset[str]) -> dict[str, Any]:
    """psycopg ``connect()`` arguments for an Airflow connection, as PostgresHook builds them."""
    kwargs: dict[str, Any] = {
        "host": connection.host,
        "port": connection.port,
        "user": connection.login,
        "password": connection.password,
        "dbname": connection.schema,
    }
    for name, value in connection.extra_dejson.items():
        if name not in ignored:
            kwargs[name] = value
    return {name: value for name, value in kwargs.items() if value is not None}
