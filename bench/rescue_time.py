"""Time from ``kill -9`` of a Graphile Worker to its jobs running again on a survivor.

Run from the repository root: ``.venv/bin/python -m bench.rescue_time [--trials N]``.

What runs, all real and on this machine:

- ``airflow standalone`` (scheduler, DAG processor, triggerer, API server, LocalExecutor)
  in a temp AIRFLOW_HOME, with a throwaway PostgreSQL metadata database, a free API
  port, ``example_dags/`` of this repository as the DAGs folder, and the connection
  ``graphile_worker_default`` from ``AIRFLOW_CONN_GRAPHILE_WORKER_DEFAULT``. DAGs are
  paused at creation and only ``graphile_worker_unlock_crashed`` is unpaused (through the
  REST API), so that no other example DAG touches the benchmark's database. The DAG runs
  with its own settings, unchanged: a run every minute, STUCK_AFTER 1 min,
  DEAD_AFTER 60 s, sensor poke interval 15 s.
- A throwaway database with Graphile Worker 0.18.0's schema and two real workers with the
  heartbeat plugin of ``worker-plugin/`` at its default interval (10 s) and Graphile
  Worker's default poll interval (2 s):
  worker A (``--jobs 1``) runs a 10-minute ``sleep`` job in queue ``billing``, with a
  ``noop`` job queued behind it; worker B (``--jobs 2``) runs a long job in queue
  ``reports`` and has a free slot.

Each trial (fresh jobs and workers, same Airflow): wait a random 10-70 s, ``kill -9``
worker A, and measure until both ``billing`` jobs are gone from the jobs table (run by B,
checked in B's log). Before the first trial the DAG must have completed a run, so the
scheduler, triggerer and task runners are warm.

Breakdown per trial, in seconds after the kill: A's last heartbeat (from the heartbeat
table), the moment A counts as dead (last heartbeat + DEAD_AFTER), the unlocking DAG run
(its scheduled time and start, from the REST API), the force-unlock task's start and
end, and the jobs gone.

The bound, from the settings: A is dead DEAD_AFTER after its last beat (50-60 s after
the kill, as it beats every 10 s); the first run whose heartbeat check starts after that
unlocks it: up to CHECK_EVERY (60 s) later, plus the run's task overhead (the stuck-lock
poke usually returns at once, since A's and B's locks are older than STUCK_AFTER by
then; the 15 s poke interval counts only when A's lock is still younger than that);
then B finds the jobs at its next poll (<= 2 s). So from about 50 s + overhead to
122 s + overhead (+15 s), i.e. roughly 1 to 2.5 minutes.

Everything started here is stopped at exit, also on Ctrl-C or SIGTERM: the workers,
Airflow (SIGINT, then SIGKILL to what is left of its process group), both databases.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import psycopg
from psycopg import sql

from bench.common import REPO_ROOT, Summary, load_note, machine_facts
from tests.support.graphile import (
    REVISIONS,
    GraphileDB,
    WorkerProcess,
    install_schema,
    wait_for,
)
from tests.support.postgres import PostgresServer, create_database, drop_database, postgres_server

VERSION = "0.18.0"
SCHEMA = "graphile_worker"
CONN_ID = "graphile_worker_default"
DAG_ID = "graphile_worker_unlock_crashed"
DAGS_FOLDER = REPO_ROOT / "example_dags"
HEARTBEAT_TABLE = "graphile_worker_heartbeats"
# The example DAG's settings (example_dags/graphile_worker_unlock_crashed.py), for the
# explanation only: the DAG runs with its own values.
CHECK_EVERY = 60.0
DEAD_AFTER = 60.0
POKE_INTERVAL = 15.0
HEARTBEAT_MS = 10_000  # the heartbeat plugin's default
POLL_MS = 2_000  # Graphile Worker's default --poll-interval
BILLING_SLEEP_MS = 600_000
REPORTS_SLEEP_MS = 3_600_000
TERMINAL = {"success", "failed"}
TASKS = ("find_stuck_locks", "check_heartbeats", "force_unlock_dead_workers", "report")


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C so that everything started gets stopped."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def say(text: str = "") -> None:
    print(text, flush=True)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- Airflow standalone ----------------------------------------------------------------


@dataclass
class Airflow:
    """A running ``airflow standalone`` and a REST API client for it."""

    process: subprocess.Popen[bytes]
    home: Path
    log_path: Path
    api: httpx.Client

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def healthy(self) -> bool:
        try:
            health = self.get("/api/v2/monitor/health")
        except (httpx.HTTPError, ValueError):
            return False
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"airflow standalone exited with {self.process.returncode}; see {self.log_path}"
            )

    def runs(self, since: datetime) -> list[dict[str, Any]]:
        """The DAG's runs whose run_after is at or after ``since``, oldest first."""
        found = self.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns",
            run_after_gte=since.isoformat(),
            order_by="run_after",
            limit=100,
        )
        return list(found["dag_runs"])

    def task_instances(self, run_id: str) -> dict[str, dict[str, Any]]:
        found = self.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in found["task_instances"]}

    def xcom(self, run_id: str, task_id: str) -> Any:
        response = self.api.get(
            f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}"
            "/xcomEntries/return_value"
        )
        if response.status_code == 404:
            return None
        response.raise_for_status()
        value = response.json()["value"]
        return json.loads(value) if isinstance(value, str) else value


def sqlalchemy_url(server: PostgresServer, dbname: str) -> str:
    return "postgresql+psycopg2://" + server.dsn(dbname).removeprefix("postgresql://")


@contextmanager
def airflow_standalone(
    server: PostgresServer, meta_db: str, graphile_db: str, home: Path
) -> Iterator[Airflow]:
    """Start ``airflow standalone``; on exit stop it with SIGINT, then kill what is left."""
    port = free_port()
    airflow = Path(sys.executable).parent / "airflow"
    if not airflow.exists():
        raise RuntimeError(f"the `airflow` command is not installed next to {sys.executable}")
    env = {
        **os.environ,
        # standalone starts its components as `airflow ...`: this venv's must come first.
        "PATH": f"{airflow.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sqlalchemy_url(server, meta_db),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        # Other example DAGs live in the same folder: they stay paused, ours is unpaused.
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        # Fixed by default (8793, 8794): free ones, in case another Airflow runs here.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Pick the DAG folder up fast.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(
            {
                "conn_type": "graphile_worker",
                "host": server.host,
                "port": server.port,
                "login": server.user,
                "password": server.password,
                "schema": graphile_db,
            }
        ),
    }
    log_path = home / "standalone.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(airflow), "standalone"],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A background job ignores SIGINT, and standalone stops cleanly only on SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            start_new_session=True,
        )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:
        yield Airflow(process=process, home=home, log_path=log_path, api=api)
    finally:
        with suppress(httpx.HTTPError):  # no new runs while it shuts down
            api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": True}, timeout=10)
        api.close()
        stop_standalone(process)


def group_members(pgid: int) -> list[str]:
    """``pid name`` of the live processes in a process group (read from /proc)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(f"{stat.parent.name} {name}")
    return members


def stop_standalone(process: subprocess.Popen[bytes], grace: float = 90.0) -> None:
    """SIGINT to standalone (it then stops its components), then SIGKILL its group."""
    if process.poll() is None:
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            process.wait(grace)
            say(f"  airflow standalone stopped {time.monotonic() - started:.0f} s after SIGINT")
        except subprocess.TimeoutExpired:
            say(
                f"  airflow standalone still running {grace:.0f} s after SIGINT; killing its "
                f"process group: {', '.join(group_members(process.pid))}"
            )
    # Leftovers in its session (task runners, log servers, ...), by their group id.
    left = group_members(process.pid)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    if left and process.returncode is not None:
        say(f"  killed leftovers of airflow standalone: {', '.join(left)}")
    process.wait()


def wait_until_ready(airflow: Airflow, timeout: float) -> float:
    started = time.monotonic()
    while not airflow.healthy():
        airflow.check_alive()
        if time.monotonic() - started > timeout:
            raise TimeoutError(
                f"Airflow not healthy within {timeout:.0f} s; see {airflow.log_path}"
            )
        time.sleep(1)
    return time.monotonic() - started


def unpause_dag(airflow: Airflow, timeout: float) -> None:
    """Wait for the DAG processor to register the DAG, then unpause it."""
    deadline = time.monotonic() + timeout
    while True:
        airflow.check_alive()
        response = airflow.api.get(f"/api/v2/dags/{DAG_ID}")
        if response.status_code == 200:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"DAG {DAG_ID} not registered within {timeout:.0f} s")
        time.sleep(1)
    response = airflow.api.patch(f"/api/v2/dags/{DAG_ID}", json={"is_paused": False})
    response.raise_for_status()


def wait_for_warm_run(airflow: Airflow, since: datetime, timeout: float) -> dict[str, Any]:
    """Wait until a run of the DAG succeeded; return it. Failed runs are reported."""
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    while True:
        airflow.check_alive()
        for run in airflow.runs(since):
            if run["state"] == "success":
                return run
            if run["state"] == "failed" and run["dag_run_id"] not in reported:
                reported.add(run["dag_run_id"])
                states = {
                    task: ti["state"]
                    for task, ti in airflow.task_instances(run["dag_run_id"]).items()
                }
                say(f"  warm-up run {run['dag_run_id']} failed: {states}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no successful run of {DAG_ID} within {timeout:.0f} s")
        time.sleep(2)


# --- One trial -------------------------------------------------------------------------


@dataclass
class Trial:
    number: int
    started: datetime
    delay: float
    doomed_id: str = ""
    survivor_id: str = ""
    billing_ids: list[int] = field(default_factory=list)
    killed_at: datetime | None = None
    done_at: datetime | None = None
    last_beat_at: datetime | None = None
    unlock_run: dict[str, Any] | None = None
    unlock_tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs_seen: list[str] = field(default_factory=list)
    ran_by_survivor: bool = False

    @property
    def rescue_seconds(self) -> float:
        assert self.killed_at is not None and self.done_at is not None
        return (self.done_at - self.killed_at).total_seconds()

    def after_kill(self, moment: datetime | None) -> float | None:
        if moment is None or self.killed_at is None:
            return None
        return (moment - self.killed_at).total_seconds()

    def milestones(self) -> dict[str, float | None]:
        """Seconds after the kill of each observed moment."""
        run = self.unlock_run or {}
        tis = self.unlock_tasks
        stale = self.last_beat_at + timedelta(seconds=DEAD_AFTER) if self.last_beat_at else None

        def task_time(task_id: str, key: str) -> float | None:
            return self.after_kill(parse_time(tis.get(task_id, {}).get(key)))

        return {
            "last_beat": self.after_kill(self.last_beat_at),
            "dead_by_rule": self.after_kill(stale),
            "run_after": self.after_kill(parse_time(run.get("run_after"))),
            "run_start": self.after_kill(parse_time(run.get("start_date"))),
            "sensor_end": task_time("find_stuck_locks", "end_date"),
            "check_start": task_time("check_heartbeats", "start_date"),
            "unlock_start": task_time("force_unlock_dead_workers", "start_date"),
            "unlock_end": task_time("force_unlock_dead_workers", "end_date"),
            "jobs_gone": self.rescue_seconds,
        }


def reset_queue(db: GraphileDB) -> None:
    """Remove every job, queue and heartbeat row left by a previous trial."""
    for table in ("_private_jobs", "_private_job_queues"):
        db.query(sql.SQL("delete from {}").format(sql.Identifier(SCHEMA, table)))
    with suppress(psycopg.errors.UndefinedTable):
        db.query(sql.SQL("delete from {}").format(sql.Identifier("public", HEARTBEAT_TABLE)))


def locker(db: GraphileDB, job_id: int, what: str) -> str:
    return str(wait_for(lambda: db.jobs()[job_id]["locked_by"], timeout=60, what=what))


def completed_in_log(worker: WorkerProcess, job_ids: list[int]) -> bool:
    text = worker.log_text()
    return all(re.search(rf"Completed task {job_id}\b", text) for job_id in job_ids)


def find_unlock_run(
    airflow: Airflow, trial: Trial, timeout: float
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
    """The run whose force-unlock released the doomed worker, once its tasks have ended."""
    deadline = time.monotonic() + timeout
    while True:
        for run in airflow.runs(trial.started - timedelta(minutes=2)):
            tis = airflow.task_instances(run["dag_run_id"])
            unlock = tis.get("force_unlock_dead_workers", {})
            if unlock.get("state") != "success" or not unlock.get("end_date"):
                continue
            result = airflow.xcom(run["dag_run_id"], "force_unlock_dead_workers") or {}
            if trial.doomed_id in result.get("requested", []):
                return run, tis
        if time.monotonic() > deadline:
            return None
        time.sleep(2)


def describe_runs(airflow: Airflow, trial: Trial) -> list[str]:
    """One line per DAG run since the trial started: what its heartbeat check decided."""
    names = {trial.doomed_id: "A", trial.survivor_id: "B"}
    lines = []
    for run in airflow.runs(trial.started):
        started = parse_time(run.get("start_date"))
        when = f"{trial.after_kill(started):+6.1f} s" if started else "   -   "
        check = airflow.xcom(run["dag_run_id"], "check_heartbeats")
        if check is None:
            verdict = "no heartbeat check (nothing stuck yet, or still running)"
        else:
            verdict = "; ".join(
                f"{kind} " + ",".join(names.get(i["locker_id"], i["locker_id"]) for i in items)
                for kind in ("dead", "alive", "unknown")
                if (items := check.get(kind))
            )
        lines.append(f"run started {when}: {run['state']}, {verdict or 'no lockers'}")
    return lines


def run_trial(
    number: int, db: GraphileDB, airflow: Airflow, rng: random.Random, timeout: float
) -> Trial:
    trial = Trial(number=number, started=utcnow(), delay=rng.uniform(10, 70))
    reset_queue(db)
    worker_args: dict[str, Any] = {
        "schema": SCHEMA,
        "poll_interval": POLL_MS,
        "heartbeat": True,
        "heartbeat_interval_ms": HEARTBEAT_MS,
    }
    with ExitStack() as stack:
        doomed = WorkerProcess(db.dsn, VERSION, jobs=1, **worker_args)
        stack.callback(doomed.kill)
        billing = db.add_job(
            "sleep", {"ms": BILLING_SLEEP_MS, "onlyFirstAttempt": True}, queue="billing"
        )
        trial.doomed_id = locker(db, billing, "worker A to take the billing job")
        queued = db.add_job("noop", {"behind": billing}, queue="billing")
        trial.billing_ids = [billing, queued]

        survivor = WorkerProcess(db.dsn, VERSION, jobs=2, **worker_args)
        stack.callback(survivor.stop)
        reports = db.add_job("sleep", {"ms": REPORTS_SLEEP_MS}, queue="reports")
        trial.survivor_id = locker(db, reports, "worker B to take the reports job")
        if trial.survivor_id == trial.doomed_id:
            raise RuntimeError("both jobs were taken by the same worker pool")
        wait_for(
            lambda: {trial.doomed_id, trial.survivor_id} <= set(db.heartbeats()),
            timeout=30,
            what="both workers' heartbeats",
        )
        say(
            f"  trial {number}: A={trial.doomed_id} holds jobs {trial.billing_ids} (billing), "
            f"B={trial.survivor_id} holds job {reports} (reports); kill A in {trial.delay:.1f} s"
        )
        time.sleep(trial.delay)

        trial.killed_at = utcnow()
        doomed.kill()  # SIGKILL: its locks stay
        killed = time.monotonic()
        while True:
            left = db.query(
                sql.SQL("select count(*) as n from {} where id = any(%s)").format(
                    sql.Identifier(SCHEMA, "_private_jobs")
                ),
                [trial.billing_ids],
            )[0]["n"]
            if left == 0:
                trial.done_at = utcnow()
                break
            if time.monotonic() - killed > timeout:
                raise TimeoutError(
                    f"trial {number}: billing jobs still there {timeout:.0f} s after the kill"
                )
            airflow.check_alive()
            time.sleep(0.25)

        beat = db.heartbeats().get(trial.doomed_id)
        trial.last_beat_at = beat["last_beat_at"] if beat else None
        try:
            trial.ran_by_survivor = wait_for(
                lambda: completed_in_log(survivor, trial.billing_ids),
                timeout=10,
                what="B's log to show the billing jobs",
            )
        except TimeoutError:
            trial.ran_by_survivor = False
        if db.jobs()[reports]["locked_by"] != trial.survivor_id:
            raise RuntimeError(f"trial {number}: the live worker's job lost its lock")
        found = find_unlock_run(airflow, trial, timeout=120)
        if found is not None:
            trial.unlock_run, trial.unlock_tasks = found
        trial.runs_seen = describe_runs(airflow, trial)
    return trial


# --- Output ----------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


MILESTONE_LABELS = {
    "last_beat": "A's last heartbeat",
    "dead_by_rule": "A dead by rule (last beat + DEAD_AFTER 60 s)",
    "run_after": "unlocking run: scheduled (run_after)",
    "run_start": "unlocking run: started",
    "sensor_end": "find_stuck_locks ended",
    "check_start": "check_heartbeats started",
    "unlock_start": "force_unlock_dead_workers started",
    "unlock_end": "force_unlock_dead_workers ended",
    "jobs_gone": "billing jobs gone (run by B)",
}


def print_trial(trial: Trial) -> None:
    marks = trial.milestones()
    say(f"  trial {trial.number}: rescued in {trial.rescue_seconds:.1f} s")
    for key, label in MILESTONE_LABELS.items():
        say(f"    {label:<46} {fmt(marks[key]):>7} s after the kill")
    if trial.unlock_run is None:
        say("    (the unlocking run was not found through the REST API)")
    say(f"    jobs run by B (its log): {'yes' if trial.ran_by_survivor else 'NO'}")
    say("    DAG runs during the trial (start relative to the kill):")
    for line in trial.runs_seen:
        say(f"      {line}")


def print_summary(trials: list[Trial]) -> None:
    rescue = Summary.of([trial.rescue_seconds for trial in trials])
    say()
    say(f"RESULT  {len(trials)} trials, seconds from kill -9 of A to its jobs done by B")
    say(
        "  per trial: "
        + ", ".join(f"{trial.rescue_seconds:.1f}" for trial in trials)
        + f"\n  median {rescue.median:.1f} s, min {rescue.minimum:.1f} s, "
        f"max {rescue.maximum:.1f} s"
    )
    say()
    say("  Median breakdown, seconds after the kill:")
    for key, label in MILESTONE_LABELS.items():
        values = [v for t in trials if (v := t.milestones()[key]) is not None]
        if values:
            say(
                f"    {label:<46} {median(values):>+7.1f}   "
                f"(min {min(values):+.1f}, max {max(values):+.1f})"
            )
    phases = {
        "kill -> A dead by rule": ("kill", "dead_by_rule"),
        "dead -> heartbeat check starts": ("dead_by_rule", "check_start"),
        "check starts -> unlock committed": ("check_start", "unlock_end"),
        "unlock -> jobs gone (B polls)": ("unlock_end", "jobs_gone"),
    }
    notes = {
        "kill -> A dead by rule": f"DEAD_AFTER {DEAD_AFTER:.0f} s minus the 0-"
        f"{HEARTBEAT_MS / 1000:.0f} s since A's last beat",
        "dead -> heartbeat check starts": f"schedule phase: 0 .. CHECK_EVERY {CHECK_EVERY:.0f} "
        f"s, + scheduling, + the sensor (at once, or {POKE_INTERVAL:.0f} s polls if A's lock "
        "was still young)",
        "check starts -> unlock committed": "two task starts on the LocalExecutor",
        "unlock -> jobs gone (B polls)": f"B's poll <= {POLL_MS / 1000:.0f} s; the task's end "
        "time is written after the commit, so this can look short",
    }
    say()
    say("  Where the time goes (in each trial they add up to its total), median [min, max] in s:")
    for label, (start, end) in phases.items():
        values = []
        for trial in trials:
            marks = trial.milestones()
            first = 0.0 if start == "kill" else marks[start]
            last = marks[end]
            if first is not None and last is not None:
                values.append(last - first)
        if values:
            say(
                f"    {label:<34} {median(values):6.1f} [{min(values):.1f}, {max(values):.1f}]"
                f"   {notes[label]}"
            )
    low = DEAD_AFTER - HEARTBEAT_MS / 1000
    high = DEAD_AFTER + CHECK_EVERY + POLL_MS / 1000
    say(
        f"  Bound from the settings: A is dead DEAD_AFTER ({DEAD_AFTER:.0f} s) after its last "
        f"beat, which came 0-{HEARTBEAT_MS / 1000:.0f} s before the kill; the next run's check "
        f"comes 0-{CHECK_EVERY:.0f} s later (+{POKE_INTERVAL:.0f} s if the sensor had to "
        "defer); then a few seconds of task starts and B's poll. So from about "
        f"{low:.0f} s + overhead to {high:.0f} s + overhead."
    )


# --- main ------------------------------------------------------------------------------


def run(args: argparse.Namespace, stack: ExitStack) -> list[Trial]:
    rng = random.Random(args.seed)
    server = stack.enter_context(postgres_server())
    tag = uuid.uuid4().hex[:8]
    graphile_db, meta_db = f"bench_rescue_{tag}", f"bench_rescue_airflow_{tag}"
    # Registered before Airflow starts, so they run after it has stopped.
    stack.callback(drop_database, server, meta_db)
    stack.callback(drop_database, server, graphile_db)
    create_database(server, graphile_db)
    create_database(server, meta_db)
    dsn = server.dsn(graphile_db)

    say("MACHINE")
    for line in machine_facts(dsn):
        say(f"  {line}")
    say()
    say("SETUP")
    install_schema(dsn, VERSION, SCHEMA)
    db = GraphileDB(dsn, VERSION, graphile_db, SCHEMA, REVISIONS[VERSION], CONN_ID)
    say(f"  Graphile Worker {VERSION} schema in database {graphile_db}")

    home = Path(tempfile.mkdtemp(prefix="bench-rescue-airflow-"))
    clean = [False]

    def finish_home() -> None:
        if clean[0] and not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"Airflow home kept: {home} (standalone.log, task logs under logs/)")

    stack.callback(finish_home)
    airflow = stack.enter_context(airflow_standalone(server, meta_db, graphile_db, home))
    say(f"  airflow standalone started (pid {airflow.process.pid}); waiting for it to be healthy")
    seconds = wait_until_ready(airflow, timeout=args.startup_timeout)
    say(f"  healthy after {seconds:.0f} s (metadata DB migrated on PostgreSQL)")
    warm_since = utcnow() - timedelta(minutes=1)
    unpause_dag(airflow, timeout=args.startup_timeout)
    say(f"  {DAG_ID} registered and unpaused; waiting for a successful run (warm-up)")
    warm = wait_for_warm_run(airflow, warm_since, timeout=args.startup_timeout)
    states = {t: ti["state"] for t, ti in airflow.task_instances(warm["dag_run_id"]).items()}
    say(f"  warm: run {warm['dag_run_id']} {warm['state']} {states}")
    say(f"  {load_note()}")
    say()

    say(
        f"TRIALS  DAG settings as shipped: a run every {CHECK_EVERY:.0f} s, STUCK_AFTER 60 s, "
        f"DEAD_AFTER {DEAD_AFTER:.0f} s, poke interval {POKE_INTERVAL:.0f} s; workers beat "
        f"every {HEARTBEAT_MS / 1000:.0f} s, poll every {POLL_MS / 1000:.0f} s"
    )
    trials = []
    for number in range(1, args.trials + 1):
        trial = run_trial(number, db, airflow, rng, timeout=args.trial_timeout)
        trials.append(trial)
        print_trial(trial)
        say(f"    {load_note()}")
    print_summary(trials)
    say(
        "  Spread: one trial takes minutes and other work may run on this machine; the "
        "kill moment is random over a whole schedule cycle, so min-max is mostly phase."
    )
    clean[0] = True
    return trials


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rescue_time",
        description="Time from kill -9 of a Graphile Worker to its jobs running on a survivor, "
        "with the example DAG graphile_worker_unlock_crashed run by a real Airflow scheduler.",
    )
    parser.add_argument("--trials", type=int, default=3, help="kills to time (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random kill delay")
    parser.add_argument(
        "--startup-timeout", type=float, default=600, help="s for Airflow to start and warm up"
    )
    parser.add_argument(
        "--trial-timeout", type=float, default=420, help="s from a kill to give up on a trial"
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the temp AIRFLOW_HOME")
    args = parser.parse_args(argv)
    if args.trials < 1:
        parser.error("--trials must be at least 1")
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            run(args, stack)
    except KeyboardInterrupt:
        say("\nInterrupted: everything started was stopped and the databases dropped.")
        return 130
    say(f"Done in {(time.monotonic() - started) / 60:.1f} min; all stopped, databases dropped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
