"""Hook that runs Graphile Worker's admin functions, built on the Postgres provider's hook.

The hook is a facade: one public method per action, each parsing its arguments once
and handing the work to the module of that concern beside it (see README,
"Architecture"). Connections, time bounds and transactions come from its base,
:class:`~airflow_graphile.hooks.connection.GraphileWorkerConnection`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.filters import DEFAULT_BATCH_SIZE, parse_job_filter
from airflow_graphile.hooks import (
    bulk,
    filter_sql,
    job_functions,
    rescue,
    stats,
    stuck_locks,
    unlock,
)
from airflow_graphile.hooks import cleanup as cleanup_sql
from airflow_graphile.hooks.connection import GraphileWorkerConnection, optional_duration
from airflow_graphile.hooks.session import bounded, with_lock_retries
from airflow_graphile.liveness import DEFAULT_MAX_CRASHES, DEFAULT_RULE, LivenessRule, Verdict
from airflow_graphile.reports import (
    BulkReport,
    CleanupReport,
    JobsReport,
    RescueReport,
    UnlockReport,
)
from airflow_graphile.validation import (
    parse_batch_size,
    parse_bool,
    parse_cleanup_tasks,
    parse_duration,
    parse_identifiers,
    parse_job_ids,
    parse_locker_ids,
)

# Permanently failed jobs deleted per transaction by cleanup.
CLEANUP_BATCH_SIZE = 10_000
NOTHING_CHANGED = "Nothing was changed (the transaction was rolled back)."
READ_ONLY = "It only reads; nothing was changed."


class GraphileWorkerHook(GraphileWorkerConnection):
    """Run Graphile Worker's admin functions from Airflow.

    :param graphile_worker_conn_id: Airflow connection to the PostgreSQL database that
        holds Graphile Worker (type ``graphile_worker`` or ``postgres``; the database
        name goes in the connection's schema field).
    :param worker_schema: The schema Graphile Worker is installed in. Default: the
        connection extra ``worker_schema``, else ``graphile_worker``. It is always
        quoted as an identifier, never interpolated.
    :param lock_timeout: How long a statement may wait for a row another transaction
        holds (timedelta or seconds; 0 disables). Default: the connection extra
        ``lock_timeout``, else 2 s.
    :param statement_timeout: How long one statement (a call, a batch, a cleanup step)
        may run (timedelta or seconds; 0 disables). Default: the connection extra
        ``statement_timeout``, else 60 s.

    The connection's role must own Graphile Worker's tables (normally: the role that
    installed its schema) or bypass row-level security; otherwise every call fails
    with :class:`GraphileWorkerPermissionError` instead of silently changing nothing.
    A timeout raises :class:`GraphileWorkerTimeoutError` (retryable) saying what was
    done before it; :meth:`cancel` stops the statements in flight (``on_kill``).
    """

    # --- schema ----------------------------------------------------------------------

    def schema_revision(self) -> int:
        """Return the worker schema's migration number (``max(id)`` of its migrations table)."""
        with self.transaction(read_only=True) as tx:
            return tx.schema.revision

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
        run_at: datetime | timedelta | str | None = None,
        priority: int | None = None,
        attempts: int | None = None,
        max_attempts: int | None = None,
    ) -> list[dict[str, Any]]:
        """Change run_at, priority, attempts and/or max_attempts; None leaves a column as is.

        ``run_at`` is a time with a time zone, or a delay from the database's now: a
        timedelta or text such as ``"+1h"``, ``"+15m"``, ``"+2d"``.

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

        A job whose row another transaction holds past ``lock_timeout`` makes the call
        try again (three times, with backoff); after that the call skips such jobs and
        reports them as ``busy``.
        """
        call = job_functions.job_call(function, arguments)
        ids = parse_job_ids(job_ids)
        if not ids:
            return JobsReport(function, [], [], dry_run=dry_run, rows=[] if with_rows else None)
        what = f"{function} on {len(ids)} job id(s)"
        with bounded(self.timeouts, what, lambda: NOTHING_CHANGED):
            if dry_run:
                with self.transaction(read_only=True) as tx:
                    outcome = job_functions.preview(tx, call, ids, with_rows=with_rows)
            else:
                outcome = with_lock_retries(
                    lambda skip_busy: self._run_ids(call, ids, with_rows, skip_busy),
                    log=self.log,
                    what=what,
                )
        return JobsReport(
            function, ids, outcome.affected, outcome.skips, dry_run=dry_run, rows=outcome.rows
        )

    def _run_ids(
        self, call: job_functions.JobCall, ids: list[int], with_rows: bool, skip_busy: bool
    ) -> job_functions.Outcome:
        with self.transaction() as tx:
            return job_functions.run(tx, call, ids, with_rows=with_rows, skip_busy=skip_busy)

    # --- filtered (bulk) operations --------------------------------------------------

    def run_job_function_on_filter(
        self,
        function: str,
        job_filter: Any,
        *,
        allow_all: bool | str = False,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        dry_run: bool = False,
        sample_size: int = 10,
        duty_cycle: float | str | None = bulk.DEFAULT_DUTY_CYCLE,
        **arguments: Any,
    ) -> BulkReport:
        """Apply a job function to every job a filter selects, in short batches.

        ``function`` is ``complete_jobs``, ``permanently_fail_jobs`` or
        ``reschedule_jobs``; ``arguments`` are its keyword arguments; ``job_filter`` a
        :class:`~airflow_graphile.filters.JobFilter`, a dict of its fields, or a string
        holding a JSON object. An empty filter is refused unless ``allow_all``.

        Jobs are taken in id order, ``batch_size`` at a time, up to the largest id that
        existed when the run began; each batch is one statement in its own transaction
        that hands the batch's ids to Graphile Worker's own function, so locked jobs are
        skipped exactly as it skips them and a worker never waits long. Progress is
        logged. An interrupted run leaves every finished batch done and the one in flight
        undone; running it again is safe, and the error says how far it got. A batch
        that meets rows another transaction holds retries, then skips those rows
        (``skipped_busy``). ``dry_run`` only counts the matching jobs (and how many are
        locked) and returns a sample, in a read-only snapshot.

        ``duty_cycle`` (greater than 0, at most 1; default 0.5, None for the default)
        is the share of wall time the run may spend in batch statements: after a batch
        that took t seconds it pauses t * (1 - duty_cycle) / duty_cycle (at most 5 s),
        with no transaction open, so that live workers keep the machine. 1.0 never
        pauses (fastest, hardest on the workers); ``paused_seconds`` reports the pauses.
        """
        selected = parse_job_filter(job_filter, allow_all=allow_all)
        call = job_functions.job_call(function, arguments)
        size = parse_batch_size(batch_size)
        duty = bulk.parse_duty_cycle(duty_cycle)
        report = BulkReport(
            function, selected.to_dict(), dry_run=dry_run, batch_size=size, duty_cycle=duty
        )
        with bounded(self.timeouts, f"{function} by filter", report.progress):
            bulk.run(self.transaction, selected, call, report, sample_size=sample_size)
        return report

    # --- queue statistics ------------------------------------------------------------

    def find_job_ids(
        self, job_filter: Any, *, limit: int | None = None, allow_all: bool | str = False
    ) -> list[int]:
        """The ids of the jobs a filter selects, ascending (at most ``limit``); reads only.

        ``job_filter`` as for :meth:`run_job_function_on_filter`. For a task that finds
        jobs and hands them to another by XCom, e.g. ``find_billing_jobs()``; for big
        selections prefer ``job_filter`` on the operator itself, which works in batches.
        """
        parsed = parse_job_filter(job_filter, allow_all=allow_all)
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 1
        ):
            raise GraphileWorkerInputError(f"limit: {limit!r} is not a whole number >= 1")
        with (
            bounded(self.timeouts, "finding job ids", lambda: READ_ONLY),
            self.transaction(read_only=True) as tx,
        ):
            bulk.check_pattern(tx, parsed.last_error_pattern)
            statement, params = filter_sql.ids_statement(tx.schema.tables, parsed)
            row = tx.one(statement, {**params, "limit": limit})
        return list(row["ids"])

    def queue_stats(self) -> dict[str, Any]:
        """Count jobs by state, by task identifier and by queue, and describe the locks.

        One scan of the jobs table (in one read-only snapshot), plus the small queues
        table. Returns ``{"total", "by_state", "by_task", "by_queue",
        "oldest_ready_age_seconds", "locks": {"jobs", "oldest_age_seconds",
        "by_locker"}, "locked_queues"}``; states are those of
        :data:`airflow_graphile.filters.STATES`. Ages are in seconds, None when there
        is nothing to measure.
        """
        with (
            bounded(self.timeouts, "queue statistics", lambda: READ_ONLY),
            self.transaction(read_only=True) as tx,
        ):
            return stats.queue_stats(tx)

    # --- force unlock ----------------------------------------------------------------

    def force_unlock_workers(self, locker_ids: Any, *, dry_run: bool = False) -> UnlockReport:
        """Release every job and queue lock held by the given locker ids, whatever its age.

        DANGER: only for workers that are dead. Unlocking a live worker's jobs lets another
        worker run them a second time while the first is still running them.

        A locker id is what ``locked_by`` holds: since Graphile Worker 0.17 the worker
        *pool* id (``pool-...``), not the ``worker-...`` id its logs show (0.16: the
        worker id). Returns the jobs and queues the ids held, read (and row-locked) in
        the same transaction as the unlock. The attempt a crashed run used is not given
        back, as in Graphile Worker. An empty list is a no-op.
        """
        ids = parse_locker_ids(locker_ids)
        report = UnlockReport(requested=ids, dry_run=dry_run)
        if not ids:
            return report
        what = f"force_unlock_workers for {len(ids)} locker(s)"
        with (
            bounded(self.timeouts, what, lambda: NOTHING_CHANGED),
            self.transaction(read_only=dry_run) as tx,
        ):
            unlock.force_unlock(tx, report)
        return report

    def rescue_dead_lockers(
        self,
        locker_ids: Any = None,
        *,
        heartbeat_table: rescue.HeartbeatTable | str = rescue.DEFAULT_TABLE,
        rule: LivenessRule = DEFAULT_RULE,
        trusted_writers: Any = (),
        outside_dead: Mapping[str, str] | None = None,
        skip_liveness_check: bool | str = False,
        ignore_pro: bool | str = False,
        max_workers: int | None = None,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        dry_run: bool = False,
    ) -> RescueReport:
        """Unlock the jobs and queues of dead lockers, judged by the liveness rule.

        In one transaction: take each locker's lease if it is free (so its worker cannot
        take it back, nor write its row, before the commit), read its heartbeat row,
        judge it by ``rule``
        (see :mod:`airflow_graphile.liveness`), and for the dead ones: give back the
        attempt the crash used (``last_error`` says which locker died and when), or
        permanently fail a job whose worker died under it ``max_crashes`` times in a row;
        release their job and queue locks with ``force_unlock_workers``; delete their
        heartbeat rows; wake idle workers. ``locker_ids=None`` judges every locker in the
        heartbeat table. ``outside_dead`` (locker id -> why) are lockers a heartbeat
        source elsewhere found dead: used only for lockers the table knows nothing of and
        whose lease is free, as weaker evidence.

        Changes nothing (and says so) when more than ``max_workers`` lockers are dead at
        once (``held``), or when Graphile Worker Pro is installed (its sweeper does this;
        ``ignore_pro=True`` to act anyway). ``skip_liveness_check=True`` unlocks the given
        ids whatever the rule says (reported). The heartbeat table must not be writable by
        roles other than its owner and ``trusted_writers``: otherwise
        :class:`GraphileWorkerFatalError` naming them, and nothing changes.
        """
        ids = None if locker_ids is None else parse_locker_ids(locker_ids)
        table = rescue.HeartbeatTable.parse(heartbeat_table)
        trusted = parse_identifiers(trusted_writers, "trusted_writers")
        override = parse_bool(skip_liveness_check, "skip_liveness_check")
        if override and ids is None:
            raise GraphileWorkerInputError(
                "skip_liveness_check: True needs the locker ids to unlock (locker_ids); it "
                "never applies to every locker at once. Nothing was changed."
            )
        report = RescueReport(
            dry_run=dry_run,
            override=override,
            liveness=(
                "skipped (skip_liveness_check=True)"
                if override
                else f"lease + heartbeat in {table} (grace {rule.grace.total_seconds():g} s; "
                f"without a lease: dead after {rule.dead_after.total_seconds():g} s)"
            ),
        )
        if ids == []:
            return report
        what = "rescue of dead lockers"
        with (
            bounded(self.timeouts, what, lambda: NOTHING_CHANGED),
            self.transaction(read_only=dry_run) as tx,
        ):
            now = tx.one(rescue.NOW)["now"]
            rescue.rescue(
                tx,
                report,
                table=table,
                rule=rule,
                trusted_writers=trusted,
                requested=ids,
                outside_dead=outside_dead or {},
                override=override,
                ignore_pro=parse_bool(ignore_pro, "ignore_pro"),
                max_workers=max_workers,
                max_crashes=max_crashes,
                now=now,
            )
        return report

    @asynccontextmanager
    async def watch_dead_lockers(
        self, table: rescue.HeartbeatTable, rule: LivenessRule
    ) -> AsyncIterator[Callable[[], Awaitable[list[Verdict]]]]:
        """Open one read-only session; yield ``poll()``, which judges every locker (triggers).

        ``poll()`` reads the heartbeat table and the server's lock table only, never the
        jobs table, so its cost does not grow with the queue, and takes nothing: a free
        lease here is a hint, which the rescue re-judges holding the lease before it
        changes anything. The session stays open between polls; an error (a lost
        connection, a timeout) ends it, and the caller opens a new one.
        """
        connection = await self._aresolve()
        async with self.async_transaction(connection) as (cur, info):

            async def poll() -> list[Verdict]:
                with bounded(self.timeouts, "dead-locker check", lambda: READ_ONLY):
                    params = rescue.inspect_params(table, [], info.schema)
                    await cur.execute(rescue.INSPECT, params)
                    found = await cur.fetchone()
                    if not found or not found["present"]:
                        return []
                    await cur.execute(*rescue.poll_statement(table, found))
                    rows = await cur.fetchall()
                return [rescue.judge_polled(row, rule) for row in rows]

            yield poll

    # --- stuck locks -----------------------------------------------------------------

    def find_stuck_locks(
        self,
        stuck_after: timedelta | float | str,
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
        query = stuck_locks.StuckLockQuery(
            parse_duration(stuck_after, "stuck_after"),
            parse_identifiers(task_identifiers, "task_identifiers") or None,
            parse_identifiers(queue_names, "queue_names") or None,
        )
        with (
            bounded(self.timeouts, "stuck-lock check", lambda: READ_ONLY),
            self.transaction(read_only=True) as tx,
        ):
            rows = tx.all(stuck_locks.statement(tx.schema.tables), query.params())
        return [stuck_locks.locker(row) for row in rows]

    async def afind_stuck_locks(self, query: stuck_locks.StuckLockQuery) -> list[dict[str, Any]]:
        """:meth:`find_stuck_locks` on the async path, with an already checked query."""
        connection = await self._aresolve()
        with bounded(self.timeouts, "stuck-lock check", lambda: READ_ONLY):
            async with self.async_transaction(connection) as (cur, info):
                await cur.execute(stuck_locks.statement(info.tables), query.params())
                rows = await cur.fetchall()
        return [stuck_locks.locker(row) for row in rows]

    # --- cleanup ---------------------------------------------------------------------

    def cleanup(
        self,
        tasks: Any,
        *,
        task_identifiers_to_keep: Any = (),
        dry_run: bool = False,
        allow_untested_schema: bool | str = False,
        permafailed_older_than: Any = None,
        batch_size: int | str = CLEANUP_BATCH_SIZE,
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
        settings = cleanup_sql.CleanupSettings(
            keep=parse_identifiers(task_identifiers_to_keep, "task_identifiers_to_keep"),
            older_than=optional_duration(permafailed_older_than, "permafailed_older_than"),
            batch_size=parse_batch_size(batch_size),
        )
        report = CleanupReport(removed={}, task_identifiers_to_keep=settings.keep, dry_run=dry_run)
        require_tested = not parse_bool(allow_untested_schema, "allow_untested_schema")
        with bounded(self.timeouts, "cleanup", report.progress):
            cleanup_sql.run(self.transaction, steps, settings, report, require_tested)
        return report
