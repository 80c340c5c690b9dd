"""Hook that reads a heartbeat table (see the worker plugin in this repository)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.postgres.hooks.postgres import PostgresHook
from psycopg import sql
from psycopg.rows import dict_row

from airflow_graphile.exceptions import GraphileWorkerInputError, GraphileWorkerTransientError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from airflow_graphile.hooks.session import SET_TIMEOUTS, Timeouts, bounded

# A heartbeat read is one small query on a table with a row per worker: it answers in
# milliseconds. 10 s is far above that and still lets the check fail (and retry) long
# before a run's deadline. It takes no lock but the table's share lock, so a lock wait
# means someone holds an exclusive lock (ALTER, TRUNCATE): 2 s, as for job statements.
HEARTBEAT_TIMEOUTS = Timeouts(
    lock_timeout=timedelta(seconds=2), statement_timeout=timedelta(seconds=10)
)
NOTHING_CHANGED = "Nothing was changed (heartbeats are only read)."

# Is the table there, and which columns (with their types) does it have?
TABLE_COLUMNS = sql.SQL(
    "select t.oid is not null as present, "
    "(select coalesce(jsonb_object_agg(a.attname, format_type(a.atttypid, a.atttypmod)), "
    "'{}'::jsonb) from pg_attribute as a "
    "where a.attrelid = t.oid and a.attnum > 0 and not a.attisdropped) as columns "
    "from (select to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) as oid) as t"
)


class HeartbeatTableHook(PostgresHook):
    """Read the last heartbeat of locker ids (worker or pool ids) from a PostgreSQL table.

    Works with ``postgres`` and ``graphile_worker`` connections alike. Every read runs
    in one transaction bounded by ``timeouts`` (default: lock_timeout 2 s,
    statement_timeout 10 s); the connection's timeout extras, meant for job work, are
    not used here.
    """

    ignored_extra_options = GraphileWorkerHook.ignored_extra_options

    def __init__(self, *args: Any, timeouts: Timeouts = HEARTBEAT_TIMEOUTS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts = timeouts

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

        One row per locker: with several rows for a locker, the newest beat counts.
        ``age_seconds`` is measured with the database's clock. ``details`` holds the
        row's other columns (host, pid, ...). A missing table is a retryable error, not
        "no heartbeats"; a table without ``id_column``, or whose ``time_column`` is not
        a ``timestamptz``, is a :class:`GraphileWorkerInputError`. A timeout or a lost
        connection raises a retryable error naming the bound.
        """
        what = f"reading heartbeats from {schema}.{table}"
        with bounded(self.timeouts, what, lambda: NOTHING_CHANGED):
            conn = self.get_conn()
            try:
                with conn.cursor(row_factory=dict_row) as cur:
                    cur.execute(SET_TIMEOUTS, self.timeouts.params(local=True))
                    cur.execute(TABLE_COLUMNS, {"schema": schema, "table": table})
                    found = cur.fetchone()
                    _check_table(found, schema, table, id_column, time_column)
                    cur.execute(
                        # Several rows for one locker (a table without a key): the
                        # newest counts, so an old row can never make a live one look dead.
                        sql.SQL(
                            "select distinct on ({id}::text) {id}::text as locker_id,"
                            " {time} as last_beat_at,"
                            " extract(epoch from now() - {time})::float8 as age_seconds,"
                            " to_jsonb(h) - {id_name} - {time_name} as details"
                            " from {table} as h where {time} is not null and"
                            " (%(ids)s::text[] is null or {id}::text = any(%(ids)s::text[]))"
                            " order by {id}::text, {time} desc"
                        ).format(
                            id=sql.Identifier("h", id_column),
                            time=sql.Identifier("h", time_column),
                            id_name=sql.Literal(id_column),
                            time_name=sql.Literal(time_column),
                            table=sql.Identifier(schema, table),
                        ),
                        {"ids": None if locker_ids is None else list(locker_ids)},
                    )
                    rows: list[dict[str, Any]] = cur.fetchall()
            finally:
                conn.close()  # read only: closing discards the transaction
        return rows


def _check_table(
    found: dict[str, Any] | None, schema: str, table: str, id_column: str, time_column: str
) -> None:
    if not found or not found["present"]:
        raise GraphileWorkerTransientError(
            f"Heartbeat table {schema}.{table} does not exist: enable the "
            "airflow-graphile-heartbeat plugin in your workers (it creates the table when "
            "the first worker starts), or point the heartbeat source at the right table"
        )
    columns: dict[str, str] = found["columns"]
    listed = ", ".join(columns)
    if id_column not in columns:
        raise GraphileWorkerInputError(
            f"id_column: the heartbeat table {schema}.{table} has no column {id_column!r} "
            f"(its columns: {listed})"
        )
    if columns.get(time_column) != "timestamp with time zone":
        kind = f"is {columns[time_column]}" if time_column in columns else "does not exist"
        raise GraphileWorkerInputError(
            f"time_column: column {time_column!r} of the heartbeat table {schema}.{table} "
            f"{kind}; it must be a timestamptz (its columns: {listed})"
        )
