"""The airflow-graphile demo, end to end. Run from the repo root: `python -m demo [--keep]`.

1. A temp Airflow home (SQLite), migrated in the background while we:
2. find PostgreSQL (or start a throwaway cluster), create a throwaway database and
   install Graphile Worker's schema with its own CLI;
3. seed a small queue with the SQL function add_job, let a real worker fail two jobs,
   then kill -9 it while it holds a long job and the lock of queue "reports";
4. run the DAG demo/dags/graphile_worker_demo.py with dag.test() and print the queue
   before and after, and what each task reported.

Airflow's own output goes to a log file in the temp home; its path is printed only if
something fails. Everything started here is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from tests.support.graphile import (
    REVISIONS,
    GraphileDB,
    WorkerProcess,
    install_schema,
    wait_for,
)
from tests.support.postgres import PostgresServer, create_database, drop_database, postgres_server

DAGS_DIR = Path(__file__).resolve().parent / "dags"
DAG_ID = "graphile_worker_demo"
TASK_IDS = (
    "complete_jobs",
    "permanently_fail_jobs",
    "reschedule_jobs",
    "force_unlock_workers",
    "cleanup",
)
VERSION = "0.18.0"
SCHEMA = "graphile_worker"
CONN_ID = "graphile_worker_default"
WIDTH = 100
# Graphile Worker's functions ignore a lock older than this.
STALE_LOCK = timedelta(hours=4)

INTRO = f"""\
airflow-graphile demo: seed a throwaway Graphile Worker {VERSION} queue in PostgreSQL, crash a
real worker mid-job (kill -9), then run the Airflow DAG {DAG_ID}: its five tasks
complete, fail, reschedule and unlock jobs, then clean up. The queue is shown before and after.
"""


def say(text: str = "", indent: int = 0) -> None:
    """Print, wrapping lines longer than WIDTH under a hanging indent."""
    for line in text.splitlines() or [""]:
        if len(line) > WIDTH:
            line = textwrap.fill(
                line, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False
            )
        print(line, flush=True)


# --- Airflow home ----------------------------------------------------------------------


def configure_airflow(home: Path) -> Path:
    """Point Airflow at a fresh home; must run before anything imports airflow."""
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            # dag.test() runs only DAGs that live in a configured bundle.
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(
                [
                    {
                        "name": "graphile_demo",
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(DAGS_DIR), "refresh_interval": 0},
                    }
                ]
            ),
        }
    )
    return home / "airflow.log"


def start_db_migrate(log_file: Path) -> subprocess.Popen[bytes]:
    """Start `airflow db migrate` in the background, its output going to the log file."""
    airflow = Path(sys.executable).parent / "airflow"
    command = str(airflow) if airflow.exists() else shutil.which("airflow")
    if command is None:
        raise RuntimeError("the `airflow` command is not installed next to this Python")
    with log_file.open("ab") as log:
        return subprocess.Popen(
            [command, "db", "migrate"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


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


# --- PostgreSQL and Graphile Worker ----------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """The jobs the demo adds, in id order."""

    welcome: int  # send_email, due now
    receipt: int  # send_email, due now
    newsletter: int  # send_email, due in 2 hours
    charge: int  # charge_card in queue "billing"
    bounced: int  # fail, 1 attempt allowed: the worker fails it for good
    flaky: int  # fail, 5 attempts allowed: the worker fails it once, it will retry
    report: int  # sleep 10 minutes in queue "reports": the worker crashes while running it
    weekly: int  # noop in queue "reports": blocked behind the crashed worker's queue lock


def seed_jobs(db: GraphileDB) -> Seed:
    in_2h = datetime.now(timezone.utc) + timedelta(hours=2)
    return Seed(
        welcome=db.add_job("send_email", {"to": "ana@example.com", "template": "welcome"}),
        receipt=db.add_job("send_email", {"to": "ben@example.com", "template": "receipt"}),
        newsletter=db.add_job("send_email", {"template": "newsletter"}, run_at=in_2h),
        charge=db.add_job("charge_card", {"order": 1042, "cents": 4999}, queue="billing"),
        bounced=db.add_job("fail", {"message": "550: no such mailbox"}, max_attempts=1),
        flaky=db.add_job("fail", {"message": "SMTP relay timed out"}, max_attempts=5),
        report=db.add_job("sleep", {"ms": 600_000}, queue="reports"),
        weekly=db.add_job("noop", {"report": "weekly"}, queue="reports"),
    )


def crash_a_worker(db: GraphileDB, seed: Seed) -> str:
    """Let a real worker fail two jobs and start the report, kill -9 it; return its pool id."""
    worker = WorkerProcess(db.dsn, VERSION, schema=SCHEMA, jobs=3)
    try:

        def busy() -> str:
            jobs = db.jobs()
            failed = jobs[seed.bounced]["last_error"] and jobs[seed.flaky]["last_error"]
            report = jobs[seed.report]
            return str(report["locked_by"]) if failed and report["locked_at"] else ""

        pool_id = wait_for(busy, timeout=30, what="the worker to run its first jobs")
    except TimeoutError as error:
        worker.kill()
        raise RuntimeError(f"{error}; the worker's output:\n{worker.log_text()}") from None
    finally:
        worker.kill()  # SIGKILL: a crash, so its locks stay
    return pool_id


def drop_quietly(server: PostgresServer, dbname: str) -> None:
    try:
        drop_database(server, dbname)
        say(f"Dropped database {dbname}.")
    except psycopg.Error as error:
        say(f"Could not drop database {dbname}: {error}")


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


def job_state(job: dict[str, Any], now: datetime) -> str:
    if job["locked_at"] is not None:
        stale = now - job["locked_at"] >= STALE_LOCK
        return f"locked by {job['locked_by']}" + (" (stale)" if stale else "")
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


def show_queue(title: str, db: GraphileDB) -> tuple[set[int], set[str]]:
    """Print the jobs and queues; return the job ids and queue names shown."""
    jobs, queues = snapshot(db)
    now = datetime.now(timezone.utc)
    say(title)
    job_rows = [
        [
            str(job["id"]),
            job["task"],
            job["queue_name"] or "-",
            job_state(job, now),
            f"{job['attempts']}/{job['max_attempts']}",
            relative(job["run_at"], now),
            job["last_error"] or "-",
        ]
        for job in jobs
    ]
    for line in table(["id", "task", "queue", "state", "tries", "run_at", "last_error"], job_rows):
        say(line)
    say()
    queue_rows = [
        [
            queue["queue_name"],
            str(queue["jobs"]),
            "free"
            if queue["locked_at"] is None
            else f"locked by {queue['locked_by']} since {relative(queue['locked_at'], now)}",
        ]
        for queue in queues
    ] or [["(none)", "", ""]]
    for line in table(["queue", "jobs", "lock"], queue_rows):
        say(line)
    say()
    return {job["id"] for job in jobs}, {queue["queue_name"] for queue in queues}


# --- The DAG run -----------------------------------------------------------------------


@dataclass
class DagRunOutcome:
    state: str
    task_states: dict[str, str]
    xcom: dict[str, Any]


def run_dag(conf: dict[str, Any]) -> DagRunOutcome:
    """Run the demo DAG once with dag.test(); return its state, task states and XComs."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    from demo.dags.graphile_worker_demo import dag

    dag_run = dag.test(run_conf=conf)
    with create_session() as session:
        instances = dag_run.get_task_instances(session=session)
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == DAG_ID, XComModel.run_id == dag_run.run_id)
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


def id_list(values: list[Any]) -> str:
    return ", ".join(str(value) for value in values) or "none"


def summarize(task_id: str, result: dict[str, Any]) -> str:
    """One line from a task's XCom."""
    if task_id == "force_unlock_workers":
        text = (
            f"unlocked job(s) {id_list(result['unlocked_job_ids'])} and queue(s) "
            f"{id_list(result['unlocked_queue_names'])}"
        )
        idle = result["held_nothing"]
        return text + (f"; held nothing: {id_list(idle)}" if idle else "")
    if task_id == "cleanup":
        return ", ".join(f"{step} removed {count}" for step, count in result["removed"].items())
    verb = {
        "complete_jobs": "completed (so deleted)",
        "permanently_fail_jobs": "permanently failed",
        "reschedule_jobs": "rescheduled",
    }[task_id]
    reasons = {"locked": "locked by {locked_by}", "unknown": "no such job"}
    skipped = [
        f"{item['id']} ({reasons.get(item['reason'], item['reason']).format(**item)})"
        for item in result["skipped"]
    ]
    text = f"{verb} {id_list(result['affected'])}"
    return text + (f"; skipped {', '.join(skipped)}" if skipped else "")


# --- Main ------------------------------------------------------------------------------


def demo(keep: bool, log_file: Path) -> bool:
    """Set up, run the DAG and report; return whether the DAG run succeeded."""
    with contextlib.ExitStack() as stack:
        say("SETUP")
        migrate = start_db_migrate(log_file)
        stack.callback(stop_process, migrate)

        messages = io.StringIO()  # postgres_server() tells on stderr which server it uses
        with contextlib.redirect_stderr(messages):
            server = stack.enter_context(postgres_server())
        throwaway = "throwaway" in messages.getvalue()
        dbname = f"graphile_demo_{uuid.uuid4().hex[:8]}"
        dsn = server.dsn(dbname)
        if keep:
            note = " (but the throwaway cluster goes away now)" if throwaway else ""
            stack.callback(say, f"Kept database {dbname}{note}: {dsn}")
        else:
            stack.callback(drop_quietly, server, dbname)  # registered first: Ctrl-C may come
        create_database(server, dbname)
        kind = "a throwaway cluster" if throwaway else "a running server"
        say(f"  PostgreSQL  {server.host}:{server.port} ({kind}), database {dbname}")

        install_schema(dsn, VERSION, SCHEMA)
        db = GraphileDB(dsn, VERSION, dbname, SCHEMA, REVISIONS[VERSION], CONN_ID)
        seed = seed_jobs(db)
        say(
            f"  Graphile    Worker {VERSION} schema installed with its own CLI; "
            f"{len(astuple(seed))} jobs added with add_job()"
        )
        pool_id = crash_a_worker(db, seed)
        say(
            f"  Worker      a real worker failed jobs {seed.bounced} and {seed.flaky}, started job "
            f"{seed.report} and was killed with SIGKILL: job {seed.report} and queue reports "
            f"stay locked by its pool id {pool_id} (Graphile Worker frees them only after "
            "4 hours). It has no handler for send_email and charge_card: those jobs just wait.",
            indent=14,
        )
        if migrate.wait() != 0:
            raise RuntimeError(f"`airflow db migrate` failed with exit code {migrate.returncode}")
        say("  Airflow     metadata database migrated (SQLite, in a temp AIRFLOW_HOME)")
        say()

        jobs_before, queues_before = show_queue("BEFORE", db)

        unknown = 999
        conf: dict[str, Any] = {
            "complete_job_ids": [seed.welcome, seed.report, unknown],
            "fail_job_ids": [seed.charge],
            "fail_reason": "Order 1042 cancelled by the customer",
            "reschedule_job_ids": [seed.flaky],
            "reschedule_run_at": (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(
                timespec="seconds"
            ),
            "reschedule_attempts": 0,
            "crashed_worker_ids": [pool_id],
        }
        why = {
            "complete_job_ids": f"{seed.report} is locked; {unknown} does not exist",
            "fail_job_ids": "the billing job: stop it from ever running",
            "reschedule_job_ids": "the retrying job: in 1 hour, attempts back to 0",
            "crashed_worker_ids": "the killed worker's pool id (its locked_by)",
        }
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
        say(f"RUN  dag.test() of the DAG {DAG_ID}, with this conf:")
        value_width = max(len(json.dumps(conf[key])) for key in why)
        for key, value in conf.items():
            say(f"  {key:<20} {json.dumps(value):<{value_width}}  {why.get(key, '')}".rstrip())
        started = time.monotonic()
        with output_to(log_file):
            outcome = run_dag(conf)
        say(f"  -> {outcome.state}, in {time.monotonic() - started:.1f} s")
        say()

        jobs_after, queues_after = show_queue("AFTER", db)
        gone = f"jobs {id_list(sorted(jobs_before - jobs_after))}"
        if queues_before - queues_after:
            gone += f"; queue(s) {id_list(sorted(queues_before - queues_after))}"
        say(f"  Gone since BEFORE: {gone}")
        say()

        say("WHAT EACH TASK DID (from its XCom)")
        for task_id in TASK_IDS:
            state = outcome.task_states.get(task_id, "not run")
            result = outcome.xcom.get(task_id)
            text = summarize(task_id, result) if state == "success" and result else state
            say(f"  {task_id:<22} {text}", indent=25)
        say()
        say(f"DAG run state: {outcome.state}")
        for task_id, state in outcome.task_states.items():
            if state == "failed":
                say(f"\nLog of the failed task {task_id}:")
                print(task_log(log_file, task_id), flush=True)
        return outcome.state == "success"


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that everything started gets stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=INTRO)
    parser.add_argument(
        "--keep", action="store_true", help="keep the demo database and print its DSN"
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)

    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="graphile-demo-airflow-"))
    log_file = configure_airflow(home)
    say(INTRO)
    say()
    succeeded, interrupted = False, 0
    try:
        succeeded = demo(args.keep, log_file)
    except KeyboardInterrupt as signal_received:
        interrupted = 128 + (signal.SIGTERM if isinstance(signal_received, Terminated) else 2)
        say("\nInterrupted: stopped everything the demo had started.")
    except Exception:
        say("\nThe demo failed:")
        traceback.print_exc()
    if succeeded or interrupted:
        shutil.rmtree(home, ignore_errors=True)
    if interrupted:
        return interrupted
    if not succeeded:
        say(f"Airflow's log: {log_file}")
        return 1
    say(f"Done in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
