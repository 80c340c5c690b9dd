"""Run Graphile Worker's cleanup steps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import Context

from airflow_graphile.heartbeats.check import (
    DEFAULT_DEAD_AFTER,
    HeartbeatCheck,
    HeartbeatSource,
    HeartbeatSourceError,
)
from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.reports import CleanupReport, short_list
from airflow_graphile.validation import (
    parse_batch_size,
    parse_cleanup_tasks,
    parse_duration,
    parse_identifiers,
)

if TYPE_CHECKING:
    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook

GC_TASK_IDENTIFIERS = "GC_TASK_IDENTIFIERS"


class GraphileWorkerCleanupOperator(GraphileWorkerBaseOperator):
    """Delete permanently failed jobs and unused task identifiers and queues.

    The same statements, semantics and order as Graphile Worker's ``cleanup``
    (``graphile-worker --cleanup``): DELETE_PERMAFAILED_JOBS, then GC_TASK_IDENTIFIERS,
    then GC_JOB_QUEUES, each in its own transaction.

    DANGER: GC_TASK_IDENTIFIERS is unsafe while any worker runs (workers cache task ids),
    unless every identifier in use is in ``task_identifiers_to_keep``. Give a
    ``heartbeat_source`` and, without a keep-list, that step runs only when no worker is
    alive: no heartbeat younger than ``dead_after`` and no job locked. Otherwise it is
    skipped and the log and XCom say why; the other steps still run.

    :param tasks: Steps to run: a list of names, a JSON list, or a comma-separated
        string as ``--cleanup`` takes it (templated). Unknown names are refused.
    :param task_identifiers_to_keep: Task identifiers GC_TASK_IDENTIFIERS must keep
        (templated).
    :param allow_untested_schema: Run even on a schema revision this provider was not
        tested with. These statements write to Graphile Worker's private tables.
    :param heartbeat_source: Where worker heartbeats are read, to decide whether
        GC_TASK_IDENTIFIERS is safe (see above).
    :param dead_after: A heartbeat younger than this means a live worker (templated).
    :param permafailed_older_than: Delete only permanently failed jobs that failed longer
        ago than this (timedelta or seconds; templated). Default: all of them.
    :param batch_size: Permanently failed jobs deleted per transaction (default 10,000).

    Returns (XCom) ``{"function", "dry_run", "tasks", "removed": {step: rows},
    "skipped_steps": {step: reason}, ...}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "tasks",
        "task_identifiers_to_keep",
        "heartbeat_source",
        "dead_after",
        "permafailed_older_than",
    )

    def __init__(
        self,
        *,
        tasks: Any,
        task_identifiers_to_keep: Any = (),
        allow_untested_schema: bool | str = False,
        heartbeat_source: HeartbeatSource | None = None,
        dead_after: timedelta | float | str = DEFAULT_DEAD_AFTER,
        permafailed_older_than: timedelta | float | str | None = None,
        batch_size: int | str = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = tasks
        self.task_identifiers_to_keep = task_identifiers_to_keep
        self.allow_untested_schema = allow_untested_schema
        self.heartbeat_source = heartbeat_source
        self.dead_after = dead_after
        self.permafailed_older_than = permafailed_older_than
        self.batch_size = batch_size
        self.check_literals(
            tasks=(tasks, parse_cleanup_tasks),
            task_identifiers_to_keep=(
                task_identifiers_to_keep,
                lambda v: parse_identifiers(v, "task_identifiers_to_keep"),
            ),
            dead_after=(dead_after, lambda v: parse_duration(v, "dead_after")),
            permafailed_older_than=(
                permafailed_older_than,
                lambda v: parse_duration(v, "permafailed_older_than"),
            ),
            batch_size=(batch_size, parse_batch_size),
        )

    def execute(self, context: Context) -> dict[str, Any]:
        # Parsed here because this operator decides on them; the hook checks the rest.
        tasks = parse_cleanup_tasks(self.tasks)
        keep = parse_identifiers(self.task_identifiers_to_keep, "task_identifiers_to_keep")
        dry_run = self.is_dry_run()
        hook = self.get_hook()
        skipped: dict[str, str] = {}
        if GC_TASK_IDENTIFIERS in tasks and not keep:
            reason = self._why_task_gc_is_unsafe(hook)
            if reason:
                tasks.remove(GC_TASK_IDENTIFIERS)
                skipped[GC_TASK_IDENTIFIERS] = reason
                self.log.warning("Skipping %s: %s", GC_TASK_IDENTIFIERS, reason)
        report = CleanupReport(removed={}, task_identifiers_to_keep=keep, dry_run=dry_run)
        if tasks:
            report = hook.cleanup(
                tasks,
                task_identifiers_to_keep=keep,
                dry_run=dry_run,
                allow_untested_schema=self.allow_untested_schema,
                permafailed_older_than=self.permafailed_older_than,
                batch_size=self.batch_size,
            )
        self.log.info("%s", report.summary())
        return {**report.to_xcom(), "skipped_steps": skipped}

    def _why_task_gc_is_unsafe(self, hook: GraphileWorkerHook) -> str | None:
        """Say why a worker may be running, or None when none can be."""
        if self.heartbeat_source is None:
            self.log.warning(
                "%s runs without a liveness check (no heartbeat_source, no keep-list): "
                "it is unsafe if any worker is running",
                GC_TASK_IDENTIFIERS,
            )
            return None
        check = HeartbeatCheck(self.heartbeat_source, parse_duration(self.dead_after, "dead_after"))
        try:
            live = check.live_lockers()
        except HeartbeatSourceError as error:
            return f"a worker may be running: {error}"
        if live:
            ids = short_list([f"{w['locker_id']} ({w['age_seconds']:.0f} s ago)" for w in live])
            return f"{len(live)} worker(s) alive by heartbeat: {ids}"
        locked = hook.find_stuck_locks(timedelta(0))
        if locked:
            ids = short_list([locker["locker_id"] for locker in locked])
            return f"jobs are locked by {ids}, so a worker may be running without heartbeats"
        return None
