"""Force unlock: release every job and queue lock a list of lockers holds."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import sql

from airflow_graphile.hooks.session import Tx
from airflow_graphile.reports import UnlockReport


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def force_unlock(tx: Tx, report: UnlockReport) -> None:
    """Read (and row-lock) what ``report.requested`` hold, then unlock it, in ``tx``.

    In a dry run (``report.dry_run``) the locks are only read. Fills ``report.jobs``,
    ``report.queues`` and, on 0.17+ schemas given ``worker-...`` ids, ``report.hint``.
    """
    tables = tx.schema.tables
    ids = report.requested
    lock = sql.SQL("" if report.dry_run else " for update")
    held = sql.SQL(
        "select {columns}, locked_by, locked_at from {table}"
        " where locked_by = any(%(ids)s::text[]) order by {columns}{lock}"
    )
    report.jobs, report.queues = (
        [
            _jsonable(row)
            for row in tx.all(
                held.format(columns=sql.Identifier(column), table=table, lock=lock), {"ids": ids}
            )
        ]
        for column, table in (("id", tables.jobs), ("queue_name", tables.queues))
    )
    if not report.dry_run:
        tx.execute(
            sql.SQL("select {}(%(ids)s::text[])").format(tables.function("force_unlock_workers")),
            {"ids": ids},
        )
    if tx.schema.locked_by_is_pool_id:
        worker_style = [w for w in report.idle_lockers if w.startswith("worker-")]
        if worker_style:
            report.hint = (
                "this schema (revision >= 19, Graphile Worker 0.17+) records pool ids "
                "(pool-...) in locked_by, so worker-... ids never hold locks: "
                + ", ".join(worker_style)
            )
