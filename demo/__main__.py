"""The airflow-graphile demo, end to end. Run from the repo root: `python -m demo [--keep]`.

1. A temp Airflow home (SQLite), migrated in the background while we:
2. find PostgreSQL (or start a throwaway cluster), create a throwaway database per act and
   install Graphile Worker's schema with its own CLI.
3. Act 1: seed a small queue with the SQL function add_job, let a real worker fail two
   jobs, then kill -9 it while it holds a long job and the lock of queue "reports"; run
   the DAG demo/dags/graphile_worker_demo.py (five admin operators) with dag.test() and
   print the queue before and after, and what each task reported.
4. Act 2 (demo/rescue.py): two real workers write heartbeats; kill -9 one of them, run the
   example DAG example_dags/graphile_worker_unlock_crashed.py with dag.test() and show
   that only the dead worker's locks were released, and that the live worker ran its jobs.

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
import time
import traceback
import uuid
from dataclasses import astuple, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

from demo import rescue
from demo.common import (
    CONN_ID,
    SCHEMA,
    VERSION,
    WIDTH,
    id_list,
    output_to,
    report_run,
    run_dag,
    say,
    show_queue,
    use_database,
)
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

INTRO = f"""\
airflow-graphile demo: two acts on throwaway Graphile Worker {VERSION} queues in PostgreSQL.
  Act 1  crash a real worker mid-job (kill -9), then run the DAG {DAG_ID}: its five
         tasks complete, fail, reschedule and unlock jobs, then clean up.
  Act 2  two workers write heartbeats; kill -9 one of them, then run the example DAG
         {rescue.DAG_ID}: it unlocks the jobs of the dead worker only.
"""


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
                        "name": name,
                        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
                        "kwargs": {"path": str(path), "refresh_interval": 0},
                    }
                    # ("example_dags" is a name Airflow reserves.)
                    for name, path in (
                        ("graphile_demo", DAGS_DIR),
                        ("provider_examples", rescue.EXAMPLE_DAGS_DIR),
                    )
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


def heading(text: str) -> None:
    say(f"── {text} ".ljust(WIDTH, "─"))


def new_database(
    stack: contextlib.ExitStack, server: PostgresServer, dbname: str, keep: bool, note: str
) -> GraphileDB:
    """Create a throwaway database (dropped at the end unless kept) with the worker schema."""
    if keep:
        stack.callback(say, f"Kept database {dbname}{note}: {server.dsn(dbname)}")
    else:
        stack.callback(drop_quietly, server, dbname)  # registered first: Ctrl-C may come
    create_database(server, dbname)
    install_schema(server.dsn(dbname), VERSION, SCHEMA)
    return GraphileDB(server.dsn(dbname), VERSION, dbname, SCHEMA, REVISIONS[VERSION], CONN_ID)


def act_one(db: GraphileDB, migrate: subprocess.Popen[bytes], log_file: Path) -> bool:
    """Crash a worker, run the five-operator DAG, show the queue; return the run's success."""
    heading(f"ACT 1: five admin operators, on the queue of a crashed worker ({db.dbname})")
    seed = seed_jobs(db)
    say(f"  Queue       {len(astuple(seed))} jobs added with add_job()")
    pool_id = crash_a_worker(db, seed)
    say(
        f"  Worker      a real worker failed jobs {seed.bounced} and {seed.flaky}, started job "
        f"{seed.report} and was killed with SIGKILL: job {seed.report} and queue reports "
        f"stay locked by its pool id {pool_id} (Graphile Worker frees them only after "
        "4 hours). It has no handler for send_email and charge_card: those jobs just wait.",
        indent=14,
    )
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
    if migrate.wait() != 0:
        raise RuntimeError(f"`airflow db migrate` failed with exit code {migrate.returncode}")
    say(f"RUN  dag.test() of the DAG {DAG_ID}, with this conf:")
    value_width = max(len(json.dumps(conf[key])) for key in why)
    for key, value in conf.items():
        say(f"  {key:<20} {json.dumps(value):<{value_width}}  {why.get(key, '')}".rstrip())
    started = time.monotonic()
    with output_to(log_file):
        from demo.dags.graphile_worker_demo import dag

        outcome = run_dag(dag, conf)
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
    report_run(outcome, log_file)
    return outcome.succeeded


def demo(keep: bool, log_file: Path) -> bool:
    """Set up, run both acts and report; return whether both DAG runs succeeded."""
    with contextlib.ExitStack() as stack:
        say("SETUP")
        migrate = start_db_migrate(log_file)
        stack.callback(stop_process, migrate)

        messages = io.StringIO()  # postgres_server() tells on stderr which server it uses
        with contextlib.redirect_stderr(messages):
            server = stack.enter_context(postgres_server())
        throwaway = "throwaway" in messages.getvalue()
        note = " (but the throwaway cluster goes away now)" if throwaway else ""
        suffix = uuid.uuid4().hex[:8]
        dbs = [
            new_database(stack, server, f"graphile_{act}_{suffix}", keep, note)
            for act in ("demo", "rescue")
        ]
        kind = "a throwaway cluster" if throwaway else "a running server"
        say(
            f"  PostgreSQL  {server.host}:{server.port} ({kind}), a database per act: "
            f"{dbs[0].dbname} and {dbs[1].dbname}",
            indent=14,
        )
        say(f"  Graphile    Worker {VERSION} schema installed in both, with its own CLI")
        say("  Airflow     metadata database (SQLite, in a temp AIRFLOW_HOME) migrating meanwhile")
        say()

        use_database(server, dbs[0].dbname)
        first = act_one(dbs[0], migrate, log_file)
        say()
        use_database(server, dbs[1].dbname)  # the example DAG uses graphile_worker_default
        heading(f"ACT 2: rescue a crashed worker by heartbeat ({dbs[1].dbname})")
        second = rescue.act_two(dbs[1], stack, log_file)
        say()
        return first and second


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that everything started gets stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=INTRO)
    parser.add_argument(
        "--keep", action="store_true", help="keep the demo databases and print their DSNs"
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
