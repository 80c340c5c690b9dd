"""Run Graphile Worker's cleanup steps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Context

from airflow_graphile.operators.base import GraphileWorkerBaseOperator
from airflow_graphile.validation import parse_bool, parse_cleanup_tasks, parse_identifiers


class GraphileWorkerCleanupOperator(GraphileWorkerBaseOperator):
    """Delete permanently failed jobs and unused task identifiers and queues.

    The same statements, semantics and order as Graphile Worker's ``cleanup``
    (``graphile-worker --cleanup``): DELETE_PERMAFAILED_JOBS, then GC_TASK_IDENTIFIERS,
    then GC_JOB_QUEUES, each in its own transaction.

    DANGER: GC_TASK_IDENTIFIERS is unsafe while any worker runs (workers cache task ids),
    unless every identifier in use is in ``task_identifiers_to_keep``.

    :param tasks: Steps to run: a list of names, a JSON list, or a comma-separated
        string as ``--cleanup`` takes it (templated). Unknown names are refused.
    :param task_identifiers_to_keep: Task identifiers GC_TASK_IDENTIFIERS must keep
        (templated).
    :param allow_untested_schema: Run even on a schema revision this provider was not
        tested with. These statements write to Graphile Worker's private tables.

    Returns (XCom) ``{"function", "dry_run", "tasks", "removed": {step: rows}, ...}``.
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "tasks",
        "task_identifiers_to_keep",
    )

    def __init__(
        self,
        *,
        tasks: Any,
        task_identifiers_to_keep: Any = (),
        allow_untested_schema: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tasks = tasks
        self.task_identifiers_to_keep = task_identifiers_to_keep
        self.allow_untested_schema = allow_untested_schema

    def execute(self, context: Context) -> dict[str, Any]:
        tasks = parse_cleanup_tasks(self.tasks)
        keep = parse_identifiers(self.task_identifiers_to_keep, "task_identifiers_to_keep")
        report = self.get_hook().cleanup(
            tasks,
            task_identifiers_to_keep=keep,
            dry_run=self.is_dry_run(),
            allow_untested_schema=parse_bool(self.allow_untested_schema, "allow_untested_schema"),
        )
        self.log.info("%s", report.summary())
        return report.to_xcom()
