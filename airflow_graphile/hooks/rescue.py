"""Rescue: judge lockers by the liveness rule and unlock the dead ones, in one transaction.

See :mod:`airflow_graphile.liveness` for the rule. Everything here runs in the
transaction that unlocks, so a verdict cannot go stale before it is acted on: the
rescue holds each judged locker's lease (a transaction-level advisory lock) and its
lease a plugin needs before it may write that locker's row again, until it commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NoReturn

from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerFatalError, GraphileWorkerInputError
from airflow_graphile.hooks import unlock
from airflow_graphile.hooks.job_functions import PREVIOUS_ERROR
from airflow_graphile.hooks.session import Tx
from airflow_graphile.liveness import (
    DEAD,
    HEARTBEAT,
    LEASE_NAMESPACE,
    RESTART_ALLOWANCE,
    UNKNOWN,
    Facts,
    LivenessRule,
    Verdict,
    judge,
)
from airflow_graphile.reports import RescueReport, UnlockReport
from airflow_graphile.validation import validate_schema_name

# The trigger the worker plugin (>= 0.2) puts on its table so that every beat carries
# the database's own time, whoever writes it.
CLOCK_TRIGGER = "airflow_graphile_db_clock"
# Graphile Worker Pro's own tables (it sweeps dead workers itself).
PRO_TABLES = ("_private_pro_workers", "_private_pro_pools")
# Our note on a rescued job starts with this; the crash count is read back from it.
NOTE_PREFIX = "airflow-graphile: "
CRASH_NOTE = re.compile(r"^airflow-graphile: a worker died under this job \(crash (\d+) in a row")


@dataclass(frozen=True)
class HeartbeatTable:
    """The heartbeat table the worker plugin writes, in the worker database."""

    schema: str = "public"
    table: str = "graphile_worker_heartbeats"

    @classmethod
    def parse(cls, value: Any, name: str = "heartbeat_table") -> HeartbeatTable:
        """``"schema.table"`` or ``"table"`` (schema ``public``), or a HeartbeatTable."""
        if isinstance(value, HeartbeatTable):
            return value
        if not isinstance(value, str) or not value.strip():
            raise_input(name, value, "expected 'schema.table' or 'table'")
        parts = value.strip().split(".")
        if len(parts) > 2:
            raise_input(name, value, "expected 'schema.table' or 'table'")
        schema, table = parts if len(parts) == 2 else ("public", parts[0])
        return cls(validate_schema_name(schema, name), validate_schema_name(table, name))

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.table)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


DEFAULT_TABLE = HeartbeatTable()


def raise_input(name: str, value: Any, why: str) -> NoReturn:
    raise GraphileWorkerInputError(f"{name}: {why}, got {str(value)[:200]!r}")


# Who may write the table besides its owner, is the clock enforced, is there a lease
# column, and is this Graphile Worker Pro?
INSPECT = sql.SQL(
    """
    select
      c.oid is not null as present,
      pg_get_userbyid(c.relowner) as owner,
      array(
        select distinct case when a.grantee = 0 then 'PUBLIC'
                             else pg_get_userbyid(a.grantee) end
        from aclexplode(c.relacl) as a
        where a.privilege_type in ('INSERT', 'UPDATE')
          and a.grantee <> c.relowner
          and (a.grantee = 0 or pg_get_userbyid(a.grantee) <> all(%(trusted)s::text[]))
        order by 1
      ) as writers,
      exists (
        select from pg_trigger as t
        where t.tgrelid = c.oid and t.tgname = %(clock)s and t.tgenabled <> 'D'
      ) as clock,
      exists (
        select from pg_attribute as a
        where a.attrelid = c.oid and a.attname = 'lease' and not a.attisdropped
      ) as has_lease,
      array(
        select name from unnest(%(pro)s::text[]) as name
        where to_regclass(format('%%I.%%I', %(worker_schema)s::text, name)) is not null
      ) as pro_tables
    from (select to_regclass(format('%%I.%%I', %(schema)s::text, %(table)s::text)) as oid) as r
    left join pg_class as c on c.oid = r.oid
    """
)

LEASES = sql.SQL(
    "select id as locker_id, pg_try_advisory_xact_lock(%(ns)s, hashtext(id)) as lease_free"
    " from unnest(%(ids)s::text[]) as ids(id) order by id"
)

# The rows of the given lockers, read without row locks (FOR UPDATE would need UPDATE on
# the table, which Airflow's role must not have: see inspect()); the lease the rescue
# holds is what keeps a lease holder from writing its row meanwhile. Ages on the server's
# clock; silence counted from the server's start (plus an allowance) when it restarted
# after the last beat.
BEAT_COLUMNS = sql.SQL(
    "locker_id::text as locker_id, {lease} as lease, last_beat_at,"
    " extract(epoch from clock_timestamp() - last_beat_at)::float8 as age_seconds,"
    " extract(epoch from clock_timestamp() - greatest(last_beat_at,"
    " pg_postmaster_start_time() + %(allowance)s::interval))::float8 as silent_seconds"
)
ROWS = sql.SQL(
    "select {columns} from {table} where locker_id = any(%(ids)s::text[]) order by locker_id"
)
ALL_LOCKERS = sql.SQL("select locker_id::text as locker_id from {table} order by 1")
DELETE_ROWS = sql.SQL("delete from {table} where locker_id = any(%(ids)s::text[])")
HELD_JOBS = sql.SQL(
    "select id, locked_by, attempts, max_attempts, last_error from {jobs}"
    " where locked_by = any(%(ids)s::text[]) order by id{lock}"
)
SET_ATTEMPTS = sql.SQL(
    "update {jobs} as j set attempts = u.attempts, last_error = u.last_error,"
    " updated_at = now()"
    " from unnest(%(ids)s::bigint[], %(attempts)s::int[], %(errors)s::text[])"
    " as u(id, attempts, last_error) where j.id = u.id"
)
NOTIFY = sql.SQL("select pg_notify('jobs:insert', %(payload)s)")


NOW = sql.SQL("select now() as now")

# Non-locking look (triggers): the lease is held when pg_locks shows it granted.
POLL = sql.SQL(
    "select {columns},"
    " exists (select from pg_locks as l where l.locktype = 'advisory' and l.granted"
    " and l.database = (select oid from pg_database where datname = current_database())"
    " and l.classid = %(ns)s::oid and l.objid = hashtext(h.locker_id::text)::oid"
    " and l.objsubid = 2) as lease_held"
    " from {table} as h order by 1"
)


def inspect_params(
    table: HeartbeatTable, trusted_writers: list[str], worker_schema: str
) -> dict[str, Any]:
    return {
        "schema": table.schema,
        "table": table.table,
        "trusted": trusted_writers,
        "clock": CLOCK_TRIGGER,
        "pro": list(PRO_TABLES),
        "worker_schema": worker_schema,
    }


def poll_statement(
    table: HeartbeatTable, found: dict[str, Any]
) -> tuple[sql.Composed, dict[str, Any]]:
    statement = POLL.format(columns=_beat_columns(found), table=table.identifier)
    return statement, {"allowance": RESTART_ALLOWANCE, "ns": LEASE_NAMESPACE}


def judge_polled(row: dict[str, Any], rule: LivenessRule) -> Verdict:
    return judge(_facts(row["locker_id"], not row["lease_held"], row), rule)


def _facts(locker_id: str, lease_free: bool, row: dict[str, Any] | None) -> Facts:
    return Facts(
        locker_id=locker_id,
        lease_free=lease_free,
        has_row=row is not None,
        row_lease=bool(row and row["lease"]),
        silent_seconds=row["silent_seconds"] if row else None,
        age_seconds=row["age_seconds"] if row else None,
        last_beat_at=row["last_beat_at"].isoformat() if row else None,
    )


def inspect(tx: Tx, table: HeartbeatTable, trusted_writers: list[str]) -> dict[str, Any]:
    """The heartbeat table's trust facts and Graphile Worker Pro's tables, if any."""
    found: dict[str, Any] = tx.one(
        INSPECT, inspect_params(table, trusted_writers, tx.schema.schema)
    )
    if found["present"] and found["writers"]:
        writers = ", ".join(found["writers"])
        raise GraphileWorkerFatalError(
            f"heartbeat table {table}: roles other than its owner ({found['owner']}) may "
            f"write it: {writers}. A row forged by one of them could make a live worker "
            f"look dead, so its heartbeats are not trusted and nothing was unlocked. Revoke "
            f"it (revoke insert, update on {table} from {writers}), or, "
            "if they are your workers' roles, list them in trusted_writers."
        )
    return found


def _beat_columns(found: dict[str, Any]) -> sql.Composed:
    # A table made by plugin 0.1 has no lease column: every row is lease-less.
    return BEAT_COLUMNS.format(lease=sql.SQL("lease" if found["has_lease"] else "false"))


def _lock(tx: Tx) -> sql.SQL:
    # A dry run is a read-only transaction: it reads without row locks.
    return sql.SQL("" if tx.cur.connection.read_only else " for update")


def facts(tx: Tx, ids: list[str], table: HeartbeatTable, found: dict[str, Any]) -> list[Facts]:
    """Take each locker's lease if it is free, then read its heartbeat row."""
    found_leases = tx.all(LEASES, {"ns": LEASE_NAMESPACE, "ids": ids})
    free = {r["locker_id"]: bool(r["lease_free"]) for r in found_leases}
    rows: dict[str, dict[str, Any]] = {}
    if found["present"]:
        statement = ROWS.format(columns=_beat_columns(found), table=table.identifier)
        for row in tx.all(statement, {"ids": ids, "allowance": RESTART_ALLOWANCE}):
            rows.setdefault(row["locker_id"], row)
    return [_facts(i, free.get(i, False), rows.get(i)) for i in ids]


def _outside(verdict: Verdict, outside_dead: Mapping[str, str]) -> Verdict:
    """A locker the table knows nothing of, found dead by a heartbeat source elsewhere."""
    reason = outside_dead.get(verdict.locker_id)
    if verdict.state != UNKNOWN or reason is None:
        return verdict
    return replace(verdict, state=DEAD, evidence=HEARTBEAT, reason=f"{reason} (weaker evidence)")


def crash_note(
    job: dict[str, Any], verdict: Verdict, at: datetime, max_crashes: int
) -> tuple[int, str, bool]:
    """The job's new attempts and last_error after its worker died; True if poisoned."""
    previous = job["last_error"] or ""
    match = CRASH_NOTE.match(previous)
    crashes = int(match.group(1)) + 1 if match else 1
    if match and PREVIOUS_ERROR in previous:
        previous = previous.split(PREVIOUS_ERROR, 1)[1]
    elif match:
        previous = ""
    tail = f"{PREVIOUS_ERROR}{previous}" if previous else ""
    when = at.isoformat(timespec="seconds")
    if crashes >= max_crashes:
        note = (
            f"{NOTE_PREFIX}permanently failed: a worker died under this job {crashes} times "
            f"in a row (last: locker {verdict.locker_id}, declared dead at {when}: "
            f"{verdict.reason}). It looks like this job kills its worker; reschedule it "
            "with attempts reset to run it again."
        )
        return job["max_attempts"], note + tail, True
    note = (
        f"{NOTE_PREFIX}a worker died under this job (crash {crashes} in a row, of "
        f"{max_crashes} allowed; locker {verdict.locker_id}, declared dead at {when}: "
        f"{verdict.reason}); the attempt it used was given back"
    )
    return max(job["attempts"] - 1, 0), note + tail, False


def rescue(
    tx: Tx,
    report: RescueReport,
    *,
    table: HeartbeatTable,
    rule: LivenessRule,
    trusted_writers: list[str],
    requested: list[str] | None,
    outside_dead: Mapping[str, str],
    override: bool,
    ignore_pro: bool,
    max_workers: int | None,
    max_crashes: int,
    now: datetime,
) -> None:
    """Judge, then unlock the dead (unless held back), filling ``report``."""
    found = inspect(tx, table, trusted_writers)
    report.clock_enforced = bool(found["clock"]) if found["present"] else None
    report.pro_tables = list(found["pro_tables"])
    if report.pro_tables and not ignore_pro:
        return
    if requested is None:
        ids = (
            [r["locker_id"] for r in tx.all(ALL_LOCKERS.format(table=table.identifier))]
            if found["present"]
            else []
        )
    else:
        ids = requested
    verdicts = [_outside(judge(f, rule), outside_dead) for f in facts(tx, ids, table, found)]
    if override:
        verdicts = [
            Verdict(
                v.locker_id,
                DEAD,
                v.evidence,
                f"skip_liveness_check=True (rule said: {v.state}, {v.reason})",
                v.last_beat_at,
                v.age_seconds,
            )
            for v in verdicts
        ]
    report.verdicts = verdicts
    dead = [v for v in verdicts if v.state == DEAD]
    if max_workers is not None and len(dead) > max_workers:
        report.held = dead
        return
    unlocked = UnlockReport(requested=[v.locker_id for v in dead], dry_run=report.dry_run)
    report.unlock = unlocked
    if not dead:
        return
    ids = unlocked.requested
    by_id = {v.locker_id: v for v in dead}
    jobs = tx.all(HELD_JOBS.format(jobs=tx.schema.tables.jobs, lock=_lock(tx)), {"ids": ids})
    changes = []
    for job in jobs:
        attempts, error, poisoned = crash_note(job, by_id[job["locked_by"]], now, max_crashes)
        changes.append((job["id"], attempts, error))
        (report.poisoned if poisoned else report.given_back).append(job["id"])
    unlock.force_unlock(tx, unlocked)
    if report.dry_run:
        return
    if changes:
        ids_, attempts_, errors_ = (list(c) for c in zip(*changes, strict=True))
        tx.execute(
            SET_ATTEMPTS.format(jobs=tx.schema.tables.jobs),
            {"ids": ids_, "attempts": attempts_, "errors": errors_},
        )
    if found["present"]:
        tx.execute(DELETE_ROWS.format(table=table.identifier), {"ids": ids})
    if report.given_back:
        # Wake idle workers now rather than at their next poll.
        payload = json.dumps({"r": 0, "count": len(report.given_back)})
        tx.execute(NOTIFY, {"payload": payload})
