"""What the Graphile Worker operators share: connection arguments, dry run, the hook."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_graphile.validation import parse_bool, validate_schema_name

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook


class GraphileWorkerBaseOperator(BaseOperator):
    """Base class: holds the connection id, the worker schema and the dry-run flag.

    :param graphile_worker_conn_id: Airflow connection to Graphile Worker's database.
    :param worker_schema: Schema Graphile Worker is installed in; default: the
        connection extra ``worker_schema``, else ``graphile_worker``.
    :param dry_run: When true, change nothing and report what would change and what
        would be skipped.
    """

    # The dry-run flag is stored as dry_run_setting: BaseOperator already has a dry_run() method.
    template_fields: Sequence[str] = (
        "graphile_worker_conn_id",
        "worker_schema",
        "dry_run_setting",
    )
    ui_color = "#ffd9b3"

    def __init__(
        self,
        *,
        graphile_worker_conn_id: str = "graphile_worker_default",
        worker_schema: str | None = None,
        dry_run: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self.worker_schema = worker_schema
        self.dry_run_setting = dry_run

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        # Rendering writes into a heartbeat source object; render a copy, never the one
        # the DAG shares between tasks.
        source = getattr(self, "heartbeat_source", None)
        if source is not None:
            self.heartbeat_source = copy.copy(source)
        super().render_template_fields(context, jinja_env)

    def get_hook(self) -> GraphileWorkerHook:
        # Imported here so that parsing a DAG file does not import psycopg.
        from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook

        schema = self.worker_schema
        if schema is not None and schema != "":
            schema = validate_schema_name(schema)
        return GraphileWorkerHook(
            graphile_worker_conn_id=self.graphile_worker_conn_id, worker_schema=schema or None
        )

    def is_dry_run(self) -> bool:
        return parse_bool(self.dry_run_setting, "dry_run")
