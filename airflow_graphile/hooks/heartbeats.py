"""Hook that reads a heartbeat table (see the worker plugin in this repository)."""

from __future__ import annotations

from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg import sql
from psycopg.rows import dict_row

from airflow_graphile.exceptions import GraphileWorkerError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook


class HeartbeatTableHook(PostgresHook):
    """Read the last heartbeat of worker (pool) ids from a PostgreSQL table.

    Works with ``postgres`` and ``graphile_worker`` connections alike.
    """

    ignored_extra_options = GraphileWorkerHook.ignored_extra_options

    def read_heartbeats(
        self,
        locker_ids: list[str] | None,
        *,
        schema: str,
        table: str,
        id_column: str,
        time_column: str,
    ) -> list[dict[str, Any]]:
        """Return ``{"locker_id", "last_beat_at", "age_seconds", "details"}`` per id found.

        ``locker_ids=None`` returns every row.

        ``age_seconds`` is measured with the database's clock. ``details`` holds the
        row's other columns (host, pid, ...). A missing table is an error, not "no
        heartbeats".
        """
        conn = self.get_conn()
        try:
            with conn.cursor(row_factory=dict_row) as cur:
                cur.execute(
                    "select to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text))"
                    " is not null as present",
                    {"schema": schema, "table": table},
                )
                found = cur.fetchone()
                if not found or not found["present"]:
                    raise GraphileWorkerError(
                        f"Heartbeat table {schema}.{table} does not exist: enable the "
                        "airflow-graphile-heartbeat plugin in your workers, or point the "
                        "heartbeat source at the right table"
                    )
                cur.execute(
                    sql.SQL(
                        "select {id}::text as locker_id, {time} as last_beat_at, "
                        "extract(epoch from now() - {time})::float8 as age_seconds, "
                        "to_jsonb(h) - {id_name} - {time_name} as details "
                        "from {table} as h "
                        "where %(ids)s::text[] is null or {id}::text = any(%(ids)s::text[])"
                    ).format(
                        id=sql.Identifier("h", id_column),
                        time=sql.Identifier("h", time_column),
                        id_name=sql.Literal(id_column),
                        time_name=sql.Literal(time_column),
                        table=sql.Identifier(schema, table),
                    ),
                    {"ids": None if locker_ids is None else list(locker_ids)},
                )
                rows = cur.fetchall()
        finally:
            conn.close()  # read only: closing discards the transaction
        return rows
