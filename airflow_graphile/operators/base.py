"""What the Graphile Worker operators share: connection, time bounds, dry run, on_kill."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_graphile.validation import parse_bool, parse_duration

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook


def is_literal(value: Any) -> bool:
    """True for a value written in the DAG file: no template, no upstream result."""
    if isinstance(value, str):
        return "{{" not in value and "{%" not in value
    if isinstance(value, (list, tuple)):
        return all(type(item) is int for item in value) or all(is_literal(v) for v in value)
    if isinstance(value, dict):
        return all(is_literal(v) for v in value.values())
    return isinstance(value, (int, float, bool, datetime, timedelta)) or value is None


class GraphileWorkerBaseOperator(BaseOperator):
    """Base class: holds the connection id, the worker schema, time bounds and dry run.

    :param graphile_worker_conn_id: Airflow connection to Graphile Worker's database.
    :param worker_schema: Schema Graphile Worker is installed in; default: the
        connection extra ``worker_schema``, else ``graphile_worker``.
    :param dry_run: When true, change nothing and report what would change and what
        would be skipped.
    :param lock_timeout: How long a statement may wait for a row another transaction
        holds (timedelta or seconds; templated). Default: the connection extra
        ``lock_timeout``, else 2 s. Work that meets it is retried, then skips those rows.
    :param statement_timeout: How long one statement (a call, a batch, a cleanup step)
        may run (timedelta or seconds; templated). Default: the connection extra
        ``statement_timeout``, else 60 s. Meeting it fails the task as retryable, saying
        what was done before it.

    Killing the task (``on_kill``) cancels the statement it is running on the server.
    """

    # The dry-run flag is stored as dry_run_setting: BaseOperator already has a dry_run() method.
    template_fields: Sequence[str] = (
        "graphile_worker_conn_id",
        "worker_schema",
        "dry_run_setting",
        "lock_timeout",
        "statement_timeout",
    )
    ui_color = "#ffd9b3"

    def __init__(
        self,
        *,
        graphile_worker_conn_id: str = "graphile_worker_default",
        worker_schema: str | None = None,
        dry_run: bool | str = False,
        lock_timeout: timedelta | float | str | None = None,
        statement_timeout: timedelta | float | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self.worker_schema = worker_schema
        self.dry_run_setting = dry_run
        self.lock_timeout = lock_timeout
        self.statement_timeout = statement_timeout
        self._hook: GraphileWorkerHook | None = None
        self.check_literals(
            dry_run=(dry_run, lambda v: parse_bool(v, "dry_run")),
            lock_timeout=(lock_timeout, lambda v: parse_duration(v, "lock_timeout")),
            statement_timeout=(
                statement_timeout,
                lambda v: parse_duration(v, "statement_timeout"),
            ),
        )

    @staticmethod
    def check_literals(**checks: tuple[Any, Callable[[Any], object]]) -> None:
        """Check the arguments given as plain values when the DAG file is parsed.

        A typo in a daily DAG then fails at import, in the DAG's import errors, not at
        midnight. Templates, XComs and None are checked when the task runs.
        """
        for value, check in checks.values():
            if value is not None and is_literal(value):
                check(value)

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # Rendering writes into a heartbeat source object; render a copy, never the one
        # the DAG shares between tasks.
        source = getattr(self, "heartbeat_source", None)
        if source is not None:
            self.heartbeat_source = copy.copy(source)
        super().render_template_fields(context, jinja_env)

    def get_hook(self) -> GraphileWorkerHook:
        """The task's hook (made once; the hook checks the schema name and the bounds)."""
        if self._hook is None:
            # Imported here so that parsing a DAG file does not import psycopg.
            from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook

            self._hook = GraphileWorkerHook(
                graphile_worker_conn_id=self.graphile_worker_conn_id,
                worker_schema=self.worker_schema or None,
                lock_timeout=self.lock_timeout,
                statement_timeout=self.statement_timeout,
            )
        return self._hook

    def on_kill(self) -> None:
        if self._hook is not None:
            self.log.info("Task killed: cancelling the statement running on the server")
            self._hook.cancel()

    def is_dry_run(self) -> bool:
        return parse_bool(self.dry_run_setting, "dry_run")
