"""Time from ``kill -9`` of a Graphile Worker to its jobs running again on a survivor, with
the two example rescue DAGs side by side on one real Airflow.

Run from the repository root:
``.venv/bin/python -m bench.rescue_time [--dag rescue|unlock_crashed|both] [--trials N]``.

What runs, all real and on this machine:

- One ``airflow standalone`` for the whole run (scheduler, DAG processor, triggerer, API
  server, LocalExecutor) in a temp AIRFLOW_HOME, with a throwaway PostgreSQL metadata
  database, free ports, ``example_dags/`` of this repository as the DAGs folder, and the
  connection ``graphile_worker_default`` from ``AIRFLOW_CONN_GRAPHILE_WORKER_DEFAULT``.
  DAGs are paused at creation; only the DAG under test is unpaused (through the REST
  API), so that the two rescue DAGs never act on the same dead worker and no other
  example DAG touches the benchmark's database. Both DAGs run with their own settings,
  unchanged:

  - ``graphile_worker_rescue`` (the asset DAG): the triggerer runs the asset watcher
    ``GraphileWorkerDeadLockersTrigger``, which polls the heartbeat table and the
    server's lock table every second (never the jobs table) and updates the asset
    ``graphile_worker_dead_lockers`` when a locker is dead: its lease is free and it has
    been silent for GRACE (3 s). The DAG is scheduled on that asset; its task ``rescue``
    re-judges every locker holding its lease, unlocks the dead ones' jobs, gives back
    the attempt the crash used, deletes their heartbeat rows and wakes idle workers.
  - ``graphile_worker_unlock_crashed`` (the sensor DAG): a run every minute, a deferrable
    stuck-lock sensor (STUCK_AFTER 1 min, poke interval 15 s), a heartbeat check
    (DEAD_AFTER 60 s on the heartbeat's age), force unlock, report.

- A throwaway database with Graphile Worker 0.18.0's schema and two real workers with the
  heartbeat plugin of ``worker-plugin/`` at its default interval (a beat and a held lease
  every 1 s) and Graphile Worker's default poll interval (2 s): worker A (``--jobs 1``)
  runs a one-hour ``sleep`` job in queue ``billing`` (payload ``onlyFirstAttempt``, so
  the rerun after a rescue returns at once), with a ``noop`` job queued behind it;
  worker B (``--jobs 2``) runs a one-hour job in queue ``reports`` and has a free slot.

Each trial (fresh jobs and workers, same Airflow): wait a random delay, ``kill -9``
worker A, and measure, polling every 0.1 s, until both ``billing`` jobs are gone from
the jobs table (run by B, checked in B's log). Then check that B's own job and queue
kept B's lock and that no run unlocked B or judged it dead ("live-worker unlocks", goal
0), and take the rescuing run's timeline from the REST API. The delay is 2-8 s for the
asset DAG (two heartbeat and watcher cycles and more), 10-70 s for the sensor DAG (a
whole schedule cycle). Before its first counted trial the asset DAG has one warm-up
trial, and the sensor DAG a first successful run, so that the scheduler, triggerer and
task runners are warm.

Milestones, in seconds after the kill. Asset DAG: A's last heartbeat (read from the
heartbeat table until the rescue deletes the row), A dead by the rule (last beat +
GRACE; its lease went free at the kill), the asset event (the watcher fired), the run's
run_after and creation (queued_at), its start, the ``rescue`` task's scheduled, queued,
start and end times, and the jobs gone. Sensor DAG: A's last heartbeat, A dead by the
heartbeat check's rule (last beat + DEAD_AFTER), the unlocking run's scheduled time and
start, its sensor's end, heartbeat check start, force unlock start and end, jobs gone.

The bounds, from the settings:

- Asset DAG: A is dead GRACE (3 s) after its last beat, which came 0-1 s before the kill,
  so 2-3 s after it; the watcher sees that at its next poll (<= 1 s) and the triggerer
  hands the event over in its loop (~1 s); the scheduler creates the run at its next
  loop (~1 s), starts it and queues ``rescue`` on the LocalExecutor, which starts a task
  process (it loads the DAG file: seconds on a small machine); the unlock is one
  transaction, after which B is woken (NOTIFY) and runs both jobs at once. So about 5 s
  plus the task start, whatever the phase: goal median < 10 s, p95 < 20 s.
- Sensor DAG: A is dead by its check DEAD_AFTER (60 s) after its last beat, so 59-60 s
  after the kill; the first run whose heartbeat check starts after that unlocks it: up
  to CHECK_EVERY (60 s) later, plus the run's task starts (the stuck-lock poke returns
  at once when A's lock is older than STUCK_AFTER by then; 15 s more when it is not);
  then B polls (<= 2 s). So from about 59 s + overhead to 122 s + overhead (+15 s).

DAG runs per healthy hour: with both workers alive and beating (nothing killed) and the
DAG unpaused, the runs it creates in a window of ``--healthy-minutes`` (default 5) are
counted and extrapolated to an hour: the asset DAG should make none (its asset events
are counted too), the sensor DAG makes one a minute.

Everything started here is stopped at exit, also on Ctrl-C or SIGTERM: the workers,
Airflow (the DAGs paused, then SIGINT, then SIGKILL to what is left of its process
group), both databases.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from statistics import median
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
import requests
from psycopg import sql

from bench.common import Summary, load_note, say_machine
from devkit.crash import TwoWorkers, start_two_workers
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.paths import EXAMPLE_DAGS_DIR, GRAPHILE_TASKS_DIR, REPO_ROOT, WORKER_PLUGIN_DIR
from devkit.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    postgres_server,
    unique_name,
)
from devkit.process import run_cleanly, say, wait_for
from devkit.standalone import FINISHED_RUN_STATES, AirflowAPI, Standalone, standalone_settings
from devkit.versions import (
    DEFAULT_HEARTBEAT_SCHEMA,
    DEFAULT_HEARTBEAT_TABLE,
    DEFAULT_SCHEMA,
    LATEST_VERSION,
)

VERSION = LATEST_VERSION
SCHEMA = DEFAULT_SCHEMA
CONN_ID = "graphile_worker_default"

RESCUE = "rescue"  # example_dags/graphile_worker_rescue.py, scheduled on an asset
UNLOCK = "unlock_crashed"  # example_dags/graphile_worker_unlock_crashed.py, every minute
DAG_IDS = {RESCUE: "graphile_worker_rescue", UNLOCK: "graphile_worker_unlock_crashed"}
LABELS = {
    RESCUE: "asset DAG graphile_worker_rescue (event-driven)",
    UNLOCK: "sensor DAG graphile_worker_unlock_crashed (every minute)",
}
DEFAULT_TRIALS = {RESCUE: 10, UNLOCK: 3}
KILL_DELAY = {RESCUE: (2.0, 8.0), UNLOCK: (10.0, 70.0)}  # s from start to kill -9
ASSET = "graphile_worker_dead_lockers"
# The example DAGs' settings, for the explanation only: the DAGs run with their own values.
GRACE = 3.0  # graphile_worker_rescue: lease free and silent this long = dead
WATCH_POLL = 1.0  # GraphileWorkerDeadLockersTrigger's default poll interval
CHECK_EVERY = 60.0  # graphile_worker_unlock_crashed: a run every minute
STUCK_AFTER = 60.0
DEAD_AFTER = 60.0
POKE_INTERVAL = 15.0
HEARTBEAT_MS = 1_000  # the heartbeat plugin's default
POLL_MS = 2_000  # Graphile Worker's default --poll-interval
LONG_JOB_MS = 3_600_000  # the workers' jobs outlast a trial
JOBS_POLL = 0.1  # s between looks at the jobs table after the kill
GOAL_MEDIAN = 10.0  # the asset DAG's goals, kill -9 to jobs done, s
GOAL_P95 = 20.0
# The code under test; a trial during which it changes is not counted but repeated.
WATCHED_SOURCES = (
    (EXAMPLE_DAGS_DIR, "*.py"),
    (REPO_ROOT / "airflow_graphile", "**/*.py"),
    (WORKER_PLUGIN_DIR, "*.js"),
    (GRAPHILE_TASKS_DIR, "tasks/*.cjs"),
)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def source_fingerprint() -> str:
    """A digest of the code under test: the DAGs, the provider, the plugin, the tasks."""
    digest = hashlib.sha256()
    for folder, pattern in WATCHED_SOURCES:
        for path in sorted(folder.glob(pattern)):
            digest.update(str(path.relative_to(REPO_ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def code_version() -> str:
    """The commit of the code under test, and whether it has uncommitted changes."""
    paths = ["airflow_graphile", "example_dags", "worker-plugin", "devkit/graphile_tasks"]

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", *paths)
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


def nearest_rank(samples: list[float], percent: float) -> float:
    """Nearest-rank percentile: a value that was seen (the maximum for few samples)."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


# --- Airflow standalone ----------------------------------------------------------------


@dataclass
class Airflow:
    """A running ``airflow standalone`` and its REST API."""

    standalone: Standalone
    api: AirflowAPI

    def check_alive(self) -> None:
        self.standalone.check_alive()

    def runs(self, dag_id: str, since: datetime) -> list[dict[str, Any]]:
        """The DAG's runs whose run_after is at or after ``since``, oldest first."""
        return self.api.runs(dag_id, run_after_gte=since.isoformat(), order_by="run_after")

    def runs_created(self, dag_id: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The DAG's runs created (queued_at) from ``start`` to ``end``."""
        return [
            run
            for run in self.runs(dag_id, start - timedelta(minutes=2))
            if (queued := parse_time(run.get("queued_at"))) and start <= queued <= end
        ]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        return self.api.task_instances(dag_id, run_id)

    def xcom(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """A task's return value, None if it has none."""
        return self.api.xcom(dag_id, run_id, task_id, missing_ok=True)

    def watcher_saw(self, locker_id: str) -> datetime | None:
        """When the watcher logged the locker dead (the triggerer's log line), if it did."""
        text = self.standalone.log_path.read_text(errors="replace")
        found = re.search(
            rf"^triggerer\s*\| (\S+) .*Dead lockers: .*{re.escape(locker_id)}", text, re.MULTILINE
        )
        return parse_time(found.group(1)) if found else None

    def asset(self) -> dict[str, Any] | None:
        """The rescue DAG's asset (None until the DAG processor has registered it)."""
        found = self.api.ok("GET", "/assets", params={"name_pattern": ASSET, "limit": 100})
        return next((a for a in found["assets"] if a["name"] == ASSET), None)

    def asset_events(self, since: datetime) -> list[dict[str, Any]]:
        """The asset's events at or after ``since``, oldest first."""
        asset = self.asset()
        if asset is None:
            return []
        found = self.api.ok(
            "GET",
            "/assets/events",
            params={
                "asset_id": asset["id"],
                "timestamp_gte": since.isoformat(),
                "order_by": "timestamp",
                "limit": 100,
            },
        )
        return list(found["asset_events"])

    def drop_queued_events(self, dag_id: str) -> None:
        """Forget asset events queued for a DAG (204, or 404: there were none)."""
        response = self.api.request("DELETE", f"/dags/{dag_id}/assets/queuedEvents")
        if response.status_code not in (204, 404):
            raise AssertionError(f"dropping queued events -> {response.status_code}")


@contextmanager
def airflow_standalone(
    server: PostgresServer,
    meta_db: str,
    graphile_db: str,
    home: Path,
    extra: dict[str, str],
) -> Iterator[Airflow]:
    """Start ``airflow standalone``; on exit pause both DAGs and stop Airflow.

    Its DAGs folder is a copy of ``example_dags/`` taken now: an edit of the repository
    during the run cannot make the DAG processor register a DAG or its watcher again.
    """
    dags = home / "dags"
    dags.mkdir()
    for path in EXAMPLE_DAGS_DIR.glob("*.py"):
        shutil.copy2(path, dags / path.name)
    settings = standalone_settings(
        server,
        meta_db,
        dags,
        {CONN_ID: server.airflow_connection(graphile_db)},
        # Other example DAGs live in the same folder: they stay paused, ours is unpaused.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
        **extra,
    )
    standalone = Standalone(home, settings)
    api = AirflowAPI(standalone.base_url)
    try:
        yield Airflow(standalone, api)
    finally:
        for dag_id in DAG_IDS.values():  # no new runs while it shuts down
            with suppress(requests.RequestException):
                api.request("PATCH", f"/dags/{dag_id}", json={"is_paused": True}, timeout=10)
        seconds, killed = standalone.stop(timeout=90)
        say(
            f"  airflow standalone stopped in {seconds:.0f} s"
            + (f"; SIGKILLed what was left: {killed}" if killed else "")
        )


def activate(airflow: Airflow, key: str, timeout: float) -> None:
    """Unpause the DAG under test; for the asset DAG wait until its watcher runs."""
    dag_id = DAG_IDS[key]
    airflow.api.wait_dag(dag_id, timeout)  # registered by the DAG processor
    if key == RESCUE:
        airflow.drop_queued_events(dag_id)
    airflow.api.set_paused(dag_id, False)
    if key != RESCUE:
        say(f"  {dag_id} unpaused")
        return
    started = time.monotonic()
    # The DAG processor adds the watcher's trigger when it parses the file of an
    # unpaused DAG again; the triggerer takes it up in its next loop (~1 s).
    watchers: list[dict[str, Any]] = wait_for(
        lambda: (airflow.asset() or {}).get("watchers") or [],
        timeout=timeout,
        interval=0.5,
        what=f"a watcher on asset {ASSET}",
    )
    time.sleep(3)
    say(
        f"  {dag_id} unpaused; its watcher {[w['name'] for w in watchers]} registered "
        f"after {time.monotonic() - started - 3:.0f} s"
    )


def deactivate(airflow: Airflow, key: str, last: bool, timeout: float = 120) -> None:
    """Pause the DAG; unless it is the last one measured, let its runs finish (else fail
    them) and wait until the asset DAG's watcher is gone."""
    dag_id = DAG_IDS[key]
    airflow.api.set_paused(dag_id, True)
    if last:
        say(f"  {dag_id} paused")
        return
    since = utcnow() - timedelta(hours=3)

    def unfinished() -> list[dict[str, Any]]:
        return [r for r in airflow.runs(dag_id, since) if r["state"] not in FINISHED_RUN_STATES]

    with suppress(TimeoutError):
        wait_for(lambda: not unfinished(), timeout=90, interval=1, what="runs to finish")
    for run in unfinished():
        airflow.api.ok(
            "PATCH", f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}", json={"state": "failed"}
        )
        say(f"  {dag_id}: failed the unfinished run {run['dag_run_id']}")
    if key == RESCUE:
        airflow.drop_queued_events(dag_id)
        try:
            wait_for(
                lambda: not (airflow.asset() or {}).get("watchers"),
                timeout=timeout,
                interval=1,
                what=f"the watcher of asset {ASSET} to be removed",
            )
        except TimeoutError as error:
            say(f"  NOTE: {error} (the DAG is paused: no run can come of it)")
    say(f"  {dag_id} paused")


def wait_for_warm_run(
    airflow: Airflow, dag_id: str, since: datetime, timeout: float
) -> dict[str, Any]:
    """Wait until a run of the DAG succeeded; return it. Failed runs are reported."""
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    while True:
        airflow.check_alive()
        for run in airflow.runs(dag_id, since):
            if run["state"] == "success":
                return run
            if run["state"] == "failed" and run["dag_run_id"] not in reported:
                reported.add(run["dag_run_id"])
                states = {
                    task: ti["state"]
                    for task, ti in airflow.task_instances(dag_id, run["dag_run_id"]).items()
                }
                say(f"  warm-up run {run['dag_run_id']} failed: {states}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no successful run of {dag_id} within {timeout:.0f} s")
        time.sleep(2)


# --- The worker database -----------------------------------------------------------------


def reset(db: GraphileDB) -> None:
    """Remove every job and queue and every heartbeat row.

    The heartbeat table itself stays, as it does in production: the watcher would
    otherwise fail its polls until a worker creates it again, and retry every 5 s.
    """
    for table in ("_private_jobs", "_private_job_queues"):
        db.query(sql.SQL("delete from {}").format(sql.Identifier(SCHEMA, table)))
    with suppress(psycopg.errors.UndefinedTable):
        db.query(
            sql.SQL("delete from {}").format(
                sql.Identifier(DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE)
            )
        )


def jobs_left(db: GraphileDB, job_ids: list[int]) -> int:
    rows = db.query(
        sql.SQL("select count(*) as n from {} where id = any(%s)").format(
            sql.Identifier(SCHEMA, "_private_jobs")
        ),
        [job_ids],
    )
    return int(rows[0]["n"])


def last_beat(db: GraphileDB, locker_id: str) -> datetime | None:
    """The locker's last heartbeat; None once its row is gone (the rescue deletes it)."""
    row = db.heartbeats().get(locker_id)
    return parse_time(row["last_beat_at"]) if row else None


def completed_in_log(worker: WorkerProcess, job_ids: list[int]) -> bool:
    text = worker.log_text()
    return all(re.search(rf"Completed task {job_id}\b", text) for job_id in job_ids)


def own_locks_kept(db: GraphileDB, workers: TwoWorkers) -> list[str]:
    """What a live worker lost: its job's or queue's lock (nothing, if all is well)."""
    lost = []
    jobs, queues = db.jobs(), db.queues()
    held = [(workers.survivor_id, workers.reports, "reports")]
    if workers.doomed.running():
        held.append((workers.doomed_id, workers.billing, "billing"))
    for locker, job_id, queue in held:
        if (jobs.get(job_id) or {}).get("locked_by") != locker:
            lost.append(f"job {job_id} of live {locker} lost its lock")
        if (queues.get(queue) or {}).get("locked_by") != locker:
            lost.append(f"queue {queue} of live {locker} lost its lock")
    return lost


# --- What a DAG run did ------------------------------------------------------------------


def unlocked_by_run(airflow: Airflow, key: str, run_id: str) -> tuple[list[str], list[str]]:
    """(lockers judged dead, lockers unlocked) by a run; empty until its unlock ran."""
    if key == RESCUE:
        report = airflow.xcom(DAG_IDS[key], run_id, "rescue") or {}
        dead = [v["locker_id"] for v in report.get("dead", [])]
    else:
        check = airflow.xcom(DAG_IDS[key], run_id, "check_heartbeats") or {}
        dead = list(check.get("dead_locker_ids", []))
        report = airflow.xcom(DAG_IDS[key], run_id, "force_unlock_dead_workers") or {}
    unlocked = sorted(set(report.get("requested", [])) | set(report.get("by_locker", {})))
    return dead, unlocked


def describe_run(airflow: Airflow, key: str, run: dict[str, Any], names: dict[str, str]) -> str:
    """What a run decided about the lockers, in a few words."""
    dag_id, run_id = DAG_IDS[key], run["dag_run_id"]

    def name(locker_id: str) -> str:
        return names.get(locker_id, locker_id)

    if key == RESCUE:
        report = airflow.xcom(dag_id, run_id, "rescue")
        if report is None:
            return "no rescue report (still running?)"
        parts = [
            f"{kind} " + ",".join(f"{name(v['locker_id'])} ({v['state']})" for v in items)
            for kind in ("dead", "spared", "held_for_approval")
            if (items := report.get(kind))
        ]
        return "; ".join(parts) or "no lockers"
    check = airflow.xcom(dag_id, run_id, "check_heartbeats")
    if check is None:
        return "no heartbeat check (nothing stuck yet, or still running)"
    verdict = "; ".join(
        f"{kind} " + ",".join(name(i["locker_id"]) for i in items)
        for kind in ("dead", "alive", "unknown")
        if (items := check.get(kind))
    )
    return verdict or "no lockers"


# --- One trial -------------------------------------------------------------------------


@dataclass
class Trial:
    key: str  # RESCUE or UNLOCK
    number: int  # 0: the asset DAG's warm-up, not counted
    started: datetime
    delay: float
    doomed_id: str = ""
    survivor_id: str = ""
    billing_ids: list[int] = field(default_factory=list)
    killed_at: datetime | None = None
    done_at: datetime | None = None
    last_beat_at: datetime | None = None
    run: dict[str, Any] | None = None  # the run that unlocked A
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    watcher_saw_at: datetime | None = None
    asset_event_at: datetime | None = None
    runs_seen: list[str] = field(default_factory=list)
    ran_by_survivor: bool = False
    live_unlocks: int = 0
    notes: list[str] = field(default_factory=list)  # anything odd

    @property
    def rescue_seconds(self) -> float:
        assert self.killed_at is not None and self.done_at is not None
        return (self.done_at - self.killed_at).total_seconds()

    def after_kill(self, moment: datetime | None) -> float | None:
        if moment is None or self.killed_at is None:
            return None
        return (moment - self.killed_at).total_seconds()

    def task_time(self, task_id: str, key: str) -> float | None:
        return self.after_kill(parse_time(self.tasks.get(task_id, {}).get(key)))

    def milestones(self) -> dict[str, float | None]:
        """Seconds after the kill of each observed moment."""
        run = self.run or {}
        rule = GRACE if self.key == RESCUE else DEAD_AFTER
        dead = self.last_beat_at + timedelta(seconds=rule) if self.last_beat_at else None
        common = {
            "last_beat": self.after_kill(self.last_beat_at),
            "dead_by_rule": self.after_kill(dead),
            "run_after": self.after_kill(parse_time(run.get("run_after"))),
        }
        if self.key == RESCUE:
            return {
                **common,
                "watcher_saw": self.after_kill(self.watcher_saw_at),
                "asset_event": self.after_kill(self.asset_event_at),
                "run_queued": self.after_kill(parse_time(run.get("queued_at"))),
                "run_start": self.after_kill(parse_time(run.get("start_date"))),
                "task_scheduled": self.task_time("rescue", "scheduled_when"),
                "task_queued": self.task_time("rescue", "queued_when"),
                "task_start": self.task_time("rescue", "start_date"),
                "task_end": self.task_time("rescue", "end_date"),
                "jobs_gone": self.rescue_seconds,
            }
        return {
            **common,
            "run_start": self.after_kill(parse_time(run.get("start_date"))),
            "sensor_end": self.task_time("find_stuck_locks", "end_date"),
            "check_start": self.task_time("check_heartbeats", "start_date"),
            "unlock_start": self.task_time("force_unlock_dead_workers", "start_date"),
            "unlock_end": self.task_time("force_unlock_dead_workers", "end_date"),
            "jobs_gone": self.rescue_seconds,
        }


def find_rescuing_run(
    airflow: Airflow, trial: Trial, timeout: float
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]] | None:
    """The run that unlocked the doomed worker, once it has finished; None if none did."""
    key, dag_id = trial.key, DAG_IDS[trial.key]
    task_id = "rescue" if key == RESCUE else "force_unlock_dead_workers"
    deadline = time.monotonic() + timeout
    while True:
        for run in airflow.runs(dag_id, trial.started - timedelta(minutes=2)):
            tis = airflow.task_instances(dag_id, run["dag_run_id"])
            ti = tis.get(task_id, {})
            if ti.get("state") != "success" or not ti.get("end_date"):
                continue
            _dead, unlocked = unlocked_by_run(airflow, key, run["dag_run_id"])
            if trial.doomed_id in unlocked:
                left = max(10.0, deadline - time.monotonic())
                run = airflow.api.wait_run(dag_id, run["dag_run_id"], left, interval=0.5)
                return run, airflow.task_instances(dag_id, run["dag_run_id"])
        if time.monotonic() > deadline:
            return None
        time.sleep(1)


def check_runs(airflow: Airflow, trial: Trial, workers: TwoWorkers) -> None:
    """Look at every run since the trial began: what it decided, whom it unlocked."""
    key, names = trial.key, {trial.doomed_id: "A", trial.survivor_id: "B"}
    runs = (
        airflow.runs_created(DAG_IDS[key], trial.started, utcnow())
        if key == RESCUE
        else airflow.runs(DAG_IDS[key], trial.started)
    )
    for run in runs:
        dead, unlocked = unlocked_by_run(airflow, key, run["dag_run_id"])
        if trial.survivor_id in set(dead) | set(unlocked):
            trial.live_unlocks += 1
            trial.notes.append(f"run {run['dag_run_id']} judged or unlocked live B")
        started = parse_time(run.get("queued_at") if key == RESCUE else run.get("start_date"))
        when = f"{trial.after_kill(started):+6.1f} s" if started else "   -   "
        trial.runs_seen.append(
            f"run {'created' if key == RESCUE else 'started'} {when}: {run['state']}, "
            + describe_run(airflow, key, run, names)
        )
    if key == RESCUE:
        if len(runs) != 1:
            trial.notes.append(f"{len(runs)} asset-triggered runs in the trial (expected 1)")
        if trial.run is not None:
            report = airflow.xcom(DAG_IDS[key], trial.run["dag_run_id"], "rescue") or {}
            dead = [v["locker_id"] for v in report.get("dead", [])]
            if dead != [trial.doomed_id]:
                trial.notes.append(f"the rescue XCom's dead lockers are {dead}, not only A")
    lost = own_locks_kept(workers.db, workers)
    if lost:
        trial.notes.extend(lost)
        if trial.live_unlocks == 0:
            trial.live_unlocks = 1


def run_trial(
    key: str,
    number: int,
    db: GraphileDB,
    airflow: Airflow,
    rng: random.Random,
    timeout: float,
) -> Trial:
    trial = Trial(key=key, number=number, started=utcnow(), delay=rng.uniform(*KILL_DELAY[key]))
    reset(db)  # what a previous trial left
    with ExitStack() as stack:
        workers = start_two_workers(
            db,
            heartbeat_interval_ms=HEARTBEAT_MS,
            poll_interval=POLL_MS,
            long_job_ms=LONG_JOB_MS,
            timeout=60,
        )
        doomed, survivor, reports = workers.doomed, workers.survivor, workers.reports
        stack.callback(doomed.kill)
        stack.callback(survivor.stop)
        trial.doomed_id, trial.survivor_id = workers.doomed_id, workers.survivor_id
        trial.billing_ids = [workers.billing, workers.queued]
        say(
            f"  {'warm-up' if number == 0 else f'trial {number}'}: A={trial.doomed_id} holds "
            f"jobs {trial.billing_ids} (billing), B={trial.survivor_id} holds job {reports} "
            f"(reports); kill A in {trial.delay:.1f} s"
        )
        time.sleep(trial.delay)

        trial.killed_at = utcnow()
        doomed.kill()  # SIGKILL: its locks stay, its lease goes free
        killed = time.monotonic()
        beat_seen = True
        while True:
            if beat_seen:  # until the rescue deletes A's row: its last beat
                beat = last_beat(db, trial.doomed_id)
                beat_seen = beat is not None
                trial.last_beat_at = beat or trial.last_beat_at
            if jobs_left(db, trial.billing_ids) == 0:
                trial.done_at = utcnow()
                break
            if time.monotonic() - killed > timeout:
                raise TimeoutError(
                    f"{key} trial {number}: billing jobs still there {timeout:.0f} s after the kill"
                )
            airflow.check_alive()
            time.sleep(JOBS_POLL)

        try:
            trial.ran_by_survivor = wait_for(
                lambda: completed_in_log(survivor, trial.billing_ids),
                timeout=10,
                what="B's log to show the billing jobs",
            )
        except TimeoutError:
            trial.ran_by_survivor = False
        found = find_rescuing_run(airflow, trial, timeout=180)
        if found is not None:
            trial.run, trial.tasks = found
        else:
            trial.notes.append("the unlocking run was not found through the REST API")
        if key == RESCUE:
            events = airflow.asset_events(trial.killed_at - timedelta(seconds=1))
            if events:
                trial.asset_event_at = parse_time(events[0]["timestamp"])
            if len(events) != 1:
                trial.notes.append(f"{len(events)} asset events after the kill (expected 1)")
            trial.watcher_saw_at = airflow.watcher_saw(trial.doomed_id)
        check_runs(airflow, trial, workers)
    return trial


# --- DAG runs while every worker is healthy ------------------------------------------------


@dataclass
class Healthy:
    key: str
    minutes: float = 0.0  # the window's real length
    runs: list[dict[str, Any]] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    asset_events: int | None = None
    live_unlocks: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def per_hour(self) -> float:
        return len(self.runs) * 60 / self.minutes


def healthy_window(db: GraphileDB, airflow: Airflow, key: str, minutes: float) -> Healthy:
    """Count the runs the unpaused DAG creates while both workers are alive and beating."""
    reset(db)
    result = Healthy(key)
    with ExitStack() as stack:
        workers = start_two_workers(
            db,
            heartbeat_interval_ms=HEARTBEAT_MS,
            poll_interval=POLL_MS,
            long_job_ms=LONG_JOB_MS,
            timeout=60,
        )
        stack.callback(workers.doomed.stop)
        stack.callback(workers.survivor.stop)
        names = {workers.doomed_id: "A", workers.survivor_id: "B"}
        say(
            f"  healthy window: A={workers.doomed_id} and B={workers.survivor_id} each hold a "
            f"long job; watching {DAG_IDS[key]} for {minutes:g} min"
        )
        start, started = utcnow(), time.monotonic()
        deadline = started + minutes * 60
        while (left := deadline - time.monotonic()) > 0:
            airflow.check_alive()
            if not (workers.doomed.running() and workers.survivor.running()):
                raise RuntimeError("a worker of the healthy window exited")
            time.sleep(min(5.0, left))
        end = utcnow()
        result.minutes = (time.monotonic() - started) / 60
        result.runs = airflow.runs_created(DAG_IDS[key], start, end)
        if key == RESCUE:
            result.asset_events = len(
                [
                    e
                    for e in airflow.asset_events(start)
                    if (parse_time(e["timestamp"]) or end) <= end
                ]
            )
        for run in result.runs:
            dead, unlocked = unlocked_by_run(airflow, key, run["dag_run_id"])
            harmed = set(names) & (set(dead) | set(unlocked))
            result.live_unlocks += len(harmed)
            if harmed:
                result.notes.append(f"run {run['dag_run_id']} judged or unlocked {harmed}")
            tis = airflow.task_instances(DAG_IDS[key], run["dag_run_id"])
            states = ", ".join(f"{t} {ti['state']}" for t, ti in tis.items())
            result.lines.append(
                f"{run['dag_run_id']}: {run['state']} ({states}); "
                + describe_run(airflow, key, run, names)
            )
        lost = own_locks_kept(db, workers)
        result.notes.extend(lost)
        if lost and result.live_unlocks == 0:
            result.live_unlocks = 1
    return result


# --- Output ----------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


MILESTONE_LABELS = {
    RESCUE: {
        "last_beat": "A's last heartbeat",
        "dead_by_rule": f"A dead by rule (lease free, silent {GRACE:.0f} s)",
        "watcher_saw": "watcher saw A dead (triggerer log)",
        "asset_event": "watcher fired: asset event",
        "run_after": "rescue run: run_after",
        "run_queued": "rescue run: created (queued_at)",
        "run_start": "rescue run: started",
        "task_scheduled": "task rescue: scheduled",
        "task_queued": "task rescue: queued (LocalExecutor)",
        "task_start": "task rescue: started",
        "task_end": "task rescue: ended (unlock committed)",
        "jobs_gone": "billing jobs gone (run by B)",
    },
    UNLOCK: {
        "last_beat": "A's last heartbeat",
        "dead_by_rule": f"A dead by rule (last beat + DEAD_AFTER {DEAD_AFTER:.0f} s)",
        "run_after": "unlocking run: scheduled (run_after)",
        "run_start": "unlocking run: started",
        "sensor_end": "find_stuck_locks ended",
        "check_start": "check_heartbeats started",
        "unlock_start": "force_unlock_dead_workers started",
        "unlock_end": "force_unlock_dead_workers ended",
        "jobs_gone": "billing jobs gone (run by B)",
    },
}

# label: (from, to, what sets it); a leading space marks a part of the row above.
PHASES = {
    RESCUE: {
        "kill -> A dead by rule": (
            "kill",
            "dead_by_rule",
            f"GRACE {GRACE:.0f} s minus the 0-{HEARTBEAT_MS / 1000:.0f} s since A's last beat",
        ),
        "dead -> watcher fired": (
            "dead_by_rule",
            "asset_event",
            f"watcher poll <= {WATCH_POLL:.0f} s, then the triggerer's loop (~1 s)",
        ),
        "  dead -> watcher saw it": ("dead_by_rule", "watcher_saw", "the watcher's poll phase"),
        "  watcher saw it -> asset event": (
            "watcher_saw",
            "asset_event",
            "the triggerer's loop hands the event over",
        ),
        "watcher fired -> run created": ("asset_event", "run_queued", "the scheduler's loop"),
        "run created -> rescue started": (
            "run_queued",
            "task_start",
            "scheduler: run started, task scheduled and queued; LocalExecutor: task process",
        ),
        "  created -> run started": ("run_queued", "run_start", "scheduler"),
        "  run started -> task queued": ("run_start", "task_queued", "scheduler"),
        "  task queued -> task started": ("task_queued", "task_start", "LocalExecutor"),
        "rescue started -> ended": (
            "task_start",
            "task_end",
            "the task: load the DAG file, connect, one transaction",
        ),
        "rescue ended -> jobs gone": (
            "task_end",
            "jobs_gone",
            "NOTIFY wakes B, which runs both jobs; the task's end time is written after "
            "the commit, so this can look short",
        ),
    },
    UNLOCK: {
        "kill -> A dead by rule": (
            "kill",
            "dead_by_rule",
            f"DEAD_AFTER {DEAD_AFTER:.0f} s minus the 0-{HEARTBEAT_MS / 1000:.0f} s since "
            "A's last beat",
        ),
        "dead -> heartbeat check starts": (
            "dead_by_rule",
            "check_start",
            f"schedule phase: 0 .. CHECK_EVERY {CHECK_EVERY:.0f} s, + scheduling, + the "
            f"sensor (at once, or {POKE_INTERVAL:.0f} s polls if A's lock was still young)",
        ),
        "check starts -> unlock committed": (
            "check_start",
            "unlock_end",
            "two task starts on the LocalExecutor",
        ),
        "unlock -> jobs gone (B polls)": (
            "unlock_end",
            "jobs_gone",
            f"B's poll <= {POLL_MS / 1000:.0f} s; the task's end time is written after the "
            "commit, so this can look short",
        ),
    },
}


def phase_values(trials: list[Trial], start: str, end: str) -> list[float]:
    values = []
    for trial in trials:
        marks = trial.milestones()
        first = 0.0 if start == "kill" else marks[start]
        last = marks[end]
        if first is not None and last is not None:
            values.append(last - first)
    return values


def print_trial(trial: Trial) -> None:
    marks = trial.milestones()
    what = "warm-up" if trial.number == 0 else f"trial {trial.number}"
    say(f"  {what}: rescued in {trial.rescue_seconds:.1f} s")
    for key, label in MILESTONE_LABELS[trial.key].items():
        say(f"    {label:<46} {fmt(marks[key]):>7} s after the kill")
    say(f"    jobs run by B (its log): {'yes' if trial.ran_by_survivor else 'NO'}")
    say(f"    live-worker unlocks: {trial.live_unlocks}")
    say("    DAG runs during the trial (relative to the kill):")
    for line in trial.runs_seen:
        say(f"      {line}")
    for note in trial.notes:
        say(f"    NOTE: {note}")


@dataclass
class Outcome:
    """What a DAG's part of the run measured."""

    key: str
    trials: list[Trial] = field(default_factory=list)
    discarded: list[Trial] = field(default_factory=list)  # the code changed meanwhile
    healthy: Healthy | None = None
    loads: list[float] = field(default_factory=list)

    @property
    def seconds(self) -> list[float]:
        return [t.rescue_seconds for t in self.trials]

    @property
    def live_unlocks(self) -> int:
        return sum(t.live_unlocks for t in self.trials + self.discarded) + (
            self.healthy.live_unlocks if self.healthy else 0
        )


def print_summary(outcome: Outcome) -> None:
    key, trials = outcome.key, outcome.trials
    rescue = Summary.of(outcome.seconds)
    p95 = nearest_rank(outcome.seconds, 95)
    say()
    say(f"RESULT  {LABELS[key]}")
    say(f"  {len(trials)} trials, seconds from kill -9 of A to its jobs done by B:")
    say("  per trial: " + ", ".join(f"{s:.1f}" for s in outcome.seconds))
    say(
        f"  median {rescue.median:.1f} s, p95 {p95:.1f} s"
        + (" (= max: fewer than 20 trials)" if len(trials) < 20 else "")
        + f", min {rescue.minimum:.1f} s, max {rescue.maximum:.1f} s"
    )
    if key == RESCUE:
        say(
            f"  goals: median < {GOAL_MEDIAN:.0f} s "
            f"{'met' if rescue.median < GOAL_MEDIAN else 'MISSED'}, p95 < {GOAL_P95:.0f} s "
            f"{'met' if p95 < GOAL_P95 else 'MISSED'}"
        )
    say(f"  live-worker unlocks (trials and healthy window): {outcome.live_unlocks} (goal 0)")
    if outcome.discarded:
        say(
            f"  not counted: {len(outcome.discarded)} trials during which the code under test "
            "changed (" + ", ".join(f"{t.rescue_seconds:.1f} s" for t in outcome.discarded) + ")"
        )
    say()
    say("  Median breakdown, seconds after the kill:")
    for mark, label in MILESTONE_LABELS[key].items():
        values = [v for t in trials if (v := t.milestones()[mark]) is not None]
        if values:
            say(
                f"    {label:<46} {median(values):>+7.1f}   "
                f"(min {min(values):+.1f}, max {max(values):+.1f})"
            )
    say()
    say("  Where the time goes (unindented rows add up to each total), median [min, max] in s:")
    for label, (start, end, note) in PHASES[key].items():
        values = phase_values(trials, start, end)
        if values:
            say(
                f"    {label:<34} {median(values):6.1f} [{min(values):.1f}, {max(values):.1f}]"
                f"   {note}"
            )
    if key == RESCUE:
        say(
            f"  Bound from the settings: A is dead {GRACE:.0f} s after its last beat (0-1 s "
            f"before the kill); the watcher polls every {WATCH_POLL:.0f} s; then the "
            "triggerer's and the scheduler's loops (~1 s each), the task start on the "
            "LocalExecutor and a transaction; B is woken at once. About 5 s + the task start."
        )
    else:
        low = DEAD_AFTER - HEARTBEAT_MS / 1000
        high = DEAD_AFTER + CHECK_EVERY + POLL_MS / 1000
        say(
            f"  Bound from the settings: A is dead DEAD_AFTER ({DEAD_AFTER:.0f} s) after its "
            f"last beat, which came 0-{HEARTBEAT_MS / 1000:.0f} s before the kill; the next "
            f"run's check comes 0-{CHECK_EVERY:.0f} s later (+{POKE_INTERVAL:.0f} s if the "
            "sensor had to defer); then a few seconds of task starts and B's poll. So from "
            f"about {low:.0f} s + overhead to {high:.0f} s + overhead."
        )
    if outcome.healthy is not None:
        print_healthy(outcome.healthy)


def print_healthy(healthy: Healthy) -> None:
    say()
    say(
        f"  DAG runs while both workers were healthy: {len(healthy.runs)} in "
        f"{healthy.minutes:.1f} min = {healthy.per_hour:.0f} per hour (extrapolated)"
        + (f"; asset events: {healthy.asset_events}" if healthy.asset_events is not None else "")
    )
    for line in healthy.lines:
        say(f"    {line}")
    say(f"    live-worker unlocks: {healthy.live_unlocks}")
    for note in healthy.notes:
        say(f"    NOTE: {note}")


def print_side_by_side(outcomes: list[Outcome]) -> None:
    if not outcomes:
        return
    say()
    say("SIDE BY SIDE  seconds from kill -9 to both jobs done by the live worker")
    header = f"  {'':<34}" + "".join(f"{o.key:>18}" for o in outcomes)
    say(header)

    def row(label: str, cells: list[str]) -> None:
        say(f"  {label:<34}" + "".join(f"{c:>18}" for c in cells))

    row("trials", [str(len(o.trials)) for o in outcomes])
    row("median", [f"{median(o.seconds):.1f}" for o in outcomes])
    row("p95 (nearest rank; max if n<20)", [f"{nearest_rank(o.seconds, 95):.1f}" for o in outcomes])
    row("min", [f"{min(o.seconds):.1f}" for o in outcomes])
    row("max", [f"{max(o.seconds):.1f}" for o in outcomes])
    row("live-worker unlocks", [str(o.live_unlocks) for o in outcomes])
    row(
        "DAG runs per healthy hour",
        [
            f"{o.healthy.per_hour:.0f} ({len(o.healthy.runs)}/{o.healthy.minutes:.0f}min)"
            if o.healthy
            else "-"
            for o in outcomes
        ],
    )
    row(
        "load average during (1 min)",
        [f"{min(o.loads):.1f}-{max(o.loads):.1f}" if o.loads else "-" for o in outcomes],
    )
    say("  (runs per hour: the window's count extrapolated to an hour)")


# --- main ------------------------------------------------------------------------------


def measure_dag(
    key: str,
    args: argparse.Namespace,
    db: GraphileDB,
    airflow: Airflow,
    rng: random.Random,
    last: bool,
) -> Outcome:
    outcome = Outcome(key)
    dag_id = DAG_IDS[key]
    trials = args.trials if args.trials is not None else DEFAULT_TRIALS[key]
    say(f"===== {LABELS[key]} =====")
    warm_since = utcnow() - timedelta(minutes=1)
    activate(airflow, key, args.startup_timeout)
    if key == RESCUE:
        say(
            f"  settings as shipped: watcher poll {WATCH_POLL:.0f} s, GRACE {GRACE:.0f} s; "
            f"workers beat every {HEARTBEAT_MS / 1000:.0f} s, poll every "
            f"{POLL_MS / 1000:.0f} s; warm-up: one kill, not counted"
        )
        warm = run_trial(key, 0, db, airflow, rng, timeout=args.trial_timeout)
        print_trial(warm)
    else:
        say(f"  waiting for a successful run of {dag_id} (warm-up)")
        run = wait_for_warm_run(airflow, dag_id, warm_since, timeout=args.startup_timeout)
        states = {
            t: ti["state"] for t, ti in airflow.task_instances(dag_id, run["dag_run_id"]).items()
        }
        say(f"  warm: run {run['dag_run_id']} {run['state']} {states}")
        say(
            f"  settings as shipped: a run every {CHECK_EVERY:.0f} s, STUCK_AFTER "
            f"{STUCK_AFTER:.0f} s, DEAD_AFTER {DEAD_AFTER:.0f} s, poke interval "
            f"{POKE_INTERVAL:.0f} s; workers beat every {HEARTBEAT_MS / 1000:.0f} s, poll "
            f"every {POLL_MS / 1000:.0f} s"
        )
    say(f"  {load_note()}")
    number = 0
    while len(outcome.trials) < trials:
        number += 1
        code = source_fingerprint()
        trial = run_trial(key, number, db, airflow, rng, timeout=args.trial_timeout)
        print_trial(trial)
        outcome.loads.append(load_average())
        say(f"    {load_note()}")
        if source_fingerprint() != code:
            say("    NOTE: the code under test changed during this trial: not counted, repeated")
            outcome.discarded.append(trial)
            if len(outcome.discarded) > trials:
                raise RuntimeError("the code under test keeps changing: no stable trials")
        else:
            outcome.trials.append(trial)
    if args.healthy_minutes > 0:
        code = source_fingerprint()
        outcome.healthy = healthy_window(db, airflow, key, args.healthy_minutes)
        if source_fingerprint() != code:
            outcome.healthy.notes.append("the code under test changed during the window")
        outcome.loads.append(load_average())
    print_summary(outcome)
    deactivate(airflow, key, last)
    say()
    return outcome


def load_average() -> float:
    return os.getloadavg()[0]


def run(args: argparse.Namespace, stack: ExitStack) -> list[Outcome]:
    rng = random.Random(args.seed)
    server = stack.enter_context(postgres_server())
    graphile_db = unique_name("bench_rescue")
    meta_db = graphile_db.replace("bench_rescue", "bench_rescue_airflow", 1)
    # Registered before Airflow starts, so they run after it has stopped.
    stack.callback(drop_database, server, meta_db)
    stack.callback(drop_database, server, graphile_db)
    db = GraphileDB.create(server, graphile_db, VERSION, CONN_ID, SCHEMA)
    create_database(server, meta_db)

    say_machine(db.dsn)
    say("SETUP")
    say(f"  Graphile Worker {VERSION} schema in database {graphile_db}")
    say(f"  code under test: {code_version()}")
    start_code = source_fingerprint()
    extra = {name: value for name, _, value in (s.partition("=") for s in args.airflow_setting)}
    for name, value in extra.items():
        say(f"  EXTRA Airflow setting (not the default): {name}={value}")

    home = Path(tempfile.mkdtemp(prefix="bench-rescue-airflow-"))
    clean = [False]

    def finish_home() -> None:
        if clean[0] and not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"Airflow home kept: {home} (standalone.log, task logs under logs/)")

    stack.callback(finish_home)
    airflow = stack.enter_context(airflow_standalone(server, meta_db, graphile_db, home, extra))
    say(
        f"  airflow standalone started (pid {airflow.standalone.process.pid}); waiting for it "
        "to be healthy"
    )
    started = time.monotonic()
    airflow.standalone.wait_healthy(args.startup_timeout)
    say(f"  healthy after {time.monotonic() - started:.0f} s (metadata DB migrated on PostgreSQL)")
    for dag_id in DAG_IDS.values():
        airflow.api.wait_dag(dag_id, args.startup_timeout)
    say(f"  {load_note()}")
    say()

    keys = [RESCUE, UNLOCK] if args.dag == "both" else [args.dag]
    outcomes = [measure_dag(key, args, db, airflow, rng, last=key == keys[-1]) for key in keys]
    print_side_by_side(outcomes)
    if source_fingerprint() != start_code:
        say(
            "  NOTE: the code under test changed during the run (trials during a change were "
            f"repeated); now: {code_version()}"
        )
    say(
        "  Spread: other work may run on this machine. For the sensor DAG the kill moment is "
        "random over a whole schedule cycle, so its min-max is mostly phase."
    )
    clean[0] = True
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rescue_time",
        description="Time from kill -9 of a Graphile Worker to its jobs running on a survivor, "
        "with the example DAGs graphile_worker_rescue (asset-triggered) and "
        "graphile_worker_unlock_crashed (every minute) run by a real Airflow.",
    )
    parser.add_argument(
        "--dag",
        choices=(RESCUE, UNLOCK, "both"),
        default="both",
        help="the DAG(s) to measure, one after the other in one Airflow (default both)",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"kills to time per DAG (default {DEFAULT_TRIALS[RESCUE]} for {RESCUE}, "
        f"{DEFAULT_TRIALS[UNLOCK]} for {UNLOCK})",
    )
    parser.add_argument(
        "--healthy-minutes",
        type=float,
        default=5.0,
        help="minutes to count each DAG's runs while both workers are healthy (0: skip)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the random kill delay")
    parser.add_argument(
        "--airflow-setting",
        action="append",
        default=[],
        metavar="AIRFLOW__SECTION__KEY=VALUE",
        help="an extra Airflow setting (repeatable), reported as such",
    )
    parser.add_argument(
        "--startup-timeout", type=float, default=600, help="s for Airflow to start and warm up"
    )
    parser.add_argument(
        "--trial-timeout", type=float, default=420, help="s from a kill to give up on a trial"
    )
    parser.add_argument("--keep-home", action="store_true", help="keep the temp AIRFLOW_HOME")
    args = parser.parse_args(argv)
    if args.trials is not None and args.trials < 1:
        parser.error("--trials must be at least 1")
    if args.healthy_minutes < 0:
        parser.error("--healthy-minutes must not be negative")
    for setting in args.airflow_setting:
        if not re.fullmatch(r"AIRFLOW__[A-Z0-9_]+__[A-Z0-9_]+=.*", setting):
            parser.error(f"--airflow-setting {setting!r}: expected AIRFLOW__SECTION__KEY=VALUE")
    started = time.monotonic()
    interrupted = "everything started was stopped and the databases dropped."
    if run_cleanly(lambda stack: run(args, stack), interrupted):
        return 130
    say(f"Done in {(time.monotonic() - started) / 60:.1f} min; all stopped, databases dropped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
