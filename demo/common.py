"""What both acts of the demo share: printing, the queue as tables, DAG runs with dag.test()."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from psycopg import sql

from tests.support.graphile import GraphileDB
from tests.support.postgres import PostgresServer

VERSION = "0.18.0"
SCHEMA = "graphile_worker"
CONN_ID = "graphile_worker_default"
WIDTH = 100
# Graphile Worker's functions ignore a lock older than this.
STALE_LOCK = timedelta(hours=4)


def say(text: str = "", indent: int = 0) -> None:
    """Print, wrapping lines longer than WIDTH under a hanging indent."""
    for line in text.splitlines() or [""]:
        if len(line) > WIDTH:
            line = textwrap.fill(
                line, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False
            )
        print(line, flush=True)


def id_list(values: list[Any]) -> str:
    return ", ".join(str(value) for value in values) or "none"


@contextlib.contextmanager
def output_to(log_file: Path) -> Iterator[None]:
    """Send all that is written to stdout and stderr, by any library, to the log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log_file.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def use_database(server: PostgresServer, dbname: str) -> None:
    """Point the Airflow connection CONN_ID (AIRFLOW_CONN_...) at a demo database."""
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "graphile_worker",
            "host": server.host,
            "port": server.port,
            "login": server.user,
            "password": server.password,
            "schema": dbname,
        }
    )


# --- The queue as tables ---------------------------------------------------------------


def snapshot(db: GraphileDB) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every job with its task and queue, and every queue with its lock and job count."""
    jobs, tasks, queues = (
        sql.Identifier(SCHEMA, table)
        for table in ("_private_jobs", "_private_tasks", "_private_job_queues")
    )
    job_rows = db.query(
        sql.SQL(
            "select j.id, t.identifier as task, q.queue_name, q.locked_by as queue_locked_by, "
            "j.run_at, j.attempts, j.max_attempts, j.last_error, j.locked_by, j.locked_at "
            "from {} j join {} t on t.id = j.task_id left join {} q on q.id = j.job_queue_id "
            "order by j.id"
        ).format(jobs, tasks, queues)
    )
    queue_rows = db.query(
        sql.SQL(
            "select q.queue_name, q.locked_by, q.locked_at, count(j.id) as jobs "
            "from {} q left join {} j on j.job_queue_id = q.id "
            "group by q.id order by q.queue_name"
        ).format(queues, jobs)
    )
    return job_rows, queue_rows


def relative(moment: datetime, now: datetime) -> str:
    """Render a time as "in 2h", "15s ago" or "now"."""
    seconds = (moment - now).total_seconds()
    size = abs(seconds)
    if size < 1:
        return "now"
    units = (("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    unit, length = next((u, n) for u, n in units if size >= 0.95 * n or n == 1)
    text = f"{round(size / length)}{unit}"
    return f"in {text}" if seconds > 0 else f"{text} ago"


def holder(locker: str, names: dict[str, str]) -> str:
    """A locker id, followed by the demo's name for it if it has one: "pool-... (A)"."""
    return f"{locker} ({names[locker]})" if locker in names else locker


def job_state(job: dict[str, Any], now: datetime, names: dict[str, str]) -> str:
    if job["locked_at"] is not None:
        stale = now - job["locked_at"] >= STALE_LOCK
        return f"locked by {holder(job['locked_by'], names)}" + (" (stale)" if stale else "")
    if job["attempts"] >= job["max_attempts"]:
        return "failed permanently"
    if job["queue_locked_by"] is not None:
        return "blocked: queue locked"
    if job["attempts"] > 0 and job["last_error"]:
        return "retrying"
    return "scheduled" if job["run_at"] > now else "ready"


def table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Align columns; the last one is shortened so that lines fit WIDTH."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    room = WIDTH - len(indent) - sum(widths[:-1]) - 2 * (len(widths) - 1)
    lines = []
    for row in [headers, *rows]:
        last = " ".join(row[-1].split())
        if len(last) > room:
            last = last[: room - 1] + "…"
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths[:-1], strict=True)]
        lines.append((indent + "  ".join([*cells, last])).rstrip())
    return lines


def show_queue(
    title: str, db: GraphileDB, names: dict[str, str] | None = None
) -> tuple[set[int], set[str]]:
    """Print the jobs and queues; return the job ids and queue names shown.

    ``names`` maps locker ids to a short name shown next to them, e.g. "A".
    """
    names = names or {}
    jobs, queues = snapshot(db)
    now = datetime.now(timezone.utc)
    say(title)
    job_rows = [
        [
            str(job["id"]),
            job["task"],
            job["queue_name"] or "-",
            job_state(job, now, names),
            f"{job['attempts']}/{job['max_attempts']}",
            relative(job["run_at"], now),
            job["last_error"] or "-",
        ]
        for job in jobs
    ] or [["-", "(none)", "", "", "", "", ""]]
    for line in table(["id", "task", "queue", "state", "tries", "run_at", "last_error"], job_rows):
        say(line)
    say()
    queue_rows = [
        [
            queue["queue_name"],
            str(queue["jobs"]),
            "free"
            if queue["locked_at"] is None
            else f"locked by {holder(queue['locked_by'], names)} since "
            f"{relative(queue['locked_at'], now)}",
        ]
        for queue in queues
    ] or [["(none)", "", ""]]
    for line in table(["queue", "jobs", "lock"], queue_rows):
        say(line)
    say()
    return {job["id"] for job in jobs}, {queue["queue_name"] for queue in queues}


# --- DAG runs --------------------------------------------------------------------------


@dataclass
class DagRunOutcome:
    state: str
    task_states: dict[str, str]
    xcom: dict[str, Any]

    @property
    def succeeded(self) -> bool:
        """The run and every task in it succeeded (a soft-failed sensor skips the rest)."""
        return self.state == "success" and all(
            state == "success" for state in self.task_states.values()
        )


def run_dag(dag: Any, conf: dict[str, Any]) -> DagRunOutcome:
    """Run a DAG once with dag.test(); return its state, task states and XComs.

    The DAG's file must be in a configured DAG bundle.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    # Airflow's task runner, which dag.test() runs in this process, sets its own SIGTERM
    # handler and leaves it in place. Hold SIGTERM back during the run and put the demo's
    # handler back after it: a SIGTERM received meanwhile then stops the demo at once.
    handler = signal.getsignal(signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        dag_run = dag.test(run_conf=conf)
    finally:
        signal.signal(signal.SIGTERM, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    with create_session() as session:
        instances = dag_run.get_task_instances(session=session)
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
            .filter(XComModel.key == "return_value")
            .all()
        )
        return DagRunOutcome(
            state=str(dag_run.state),
            task_states={ti.task_id: str(ti.state) for ti in instances},
            xcom={row.task_id: XComModel.deserialize_value(row) for row in rows},
        )


def task_log(log_file: Path, task_id: str) -> str:
    """The lines dag.test() logged while it ran one task (it writes no per-task files)."""
    lines = log_file.read_text(errors="replace").splitlines()
    start = f"[DAG TEST] starting task_id={task_id} "
    end = f"[DAG TEST] end task task_id={task_id} "
    first = max((i for i, line in enumerate(lines) if start in line), default=None)
    if first is None:
        return "\n".join(lines[-40:])
    last = next((i for i in range(first, len(lines)) if end in lines[i]), len(lines) - 1)
    return "\n".join(lines[first : last + 1])


def report_run(outcome: DagRunOutcome, log_file: Path) -> None:
    """Print the run's state, and the log of every task that failed."""
    say(f"DAG run state: {outcome.state}")
    for task_id, state in outcome.task_states.items():
        if state == "failed":
            say(f"\nLog of the failed task {task_id}:")
            print(task_log(log_file, task_id), flush=True)
