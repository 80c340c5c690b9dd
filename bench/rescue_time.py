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
import random
import re
import shutil
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

import requests
from psycopg import sql

from bench.common import Summary, load_note, say_machine
from devkit.crash import start_two_workers
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.paths import EXAMPLE_DAGS_DIR
from devkit.postgres import (
    PostgresServer,
    create_database,
    drop_database,
    postgres_server,
    unique_name,
)
from devkit.process import run_cleanly, say, wait_for
from devkit.standalone import AirflowAPI, Standalone, standalone_settings
from devkit.versions import DEFAULT_SCHEMA, LATEST_VERSION

VERSION = LATEST_VERSION
SCHEMA = DEFAULT_SCHEMA
CONN_ID = "graphile_worker_default"
DAG_ID = "graphile_worker_unlock_crashed"
# The example DAG's settings (example_dags/graphile_worker_unlock_crashed.py), for the
# explanation only: the DAG runs with its own values.
CHECK_EVERY = 60.0
DEAD_AFTER = 60.0
POKE_INTERVAL = 15.0
HEARTBEAT_MS = 10_000  # the heartbeat plugin's default
POLL_MS = 2_000  # Graphile Worker's default --poll-interval
LONG_JOB_MS = 3_600_000  # the workers' jobs outlast a trial
TASKS = ("find_stuck_locks", "check_heartbeats", "force_unlock_dead_workers", "report")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- Airflow standalone ----------------------------------------------------------------


@dataclass
class Airflow:
    """A running ``airflow standalone`` and its REST API, seen from the DAG under test."""

    standalone: Standalone
    api: AirflowAPI

    def check_alive(self) -> None:
        self.standalone.check_alive()

    def runs(self, since: datetime) -> list[dict[str, Any]]:
        """The DAG's runs whose run_after is at or after ``since``, oldest first."""
        return self.api.runs(DAG_ID, run_after_gte=since.isoformat(), order_by="run_after")

    def task_instances(self, run_id: str) -> dict[str, dict[str, Any]]:
        return self.api.task_instances(DAG_ID, run_id)

    def xcom(self, run_id: str, task_id: str) -> Any:
        """A task's return value, None if it has none."""
        return self.api.xcom(DAG_ID, run_id, task_id, missing_ok=True)


@contextmanager
def airflow_standalone(
    server: PostgresServer, meta_db: str, graphile_db: str, home: Path
) -> Iterator[Airflow]:
    """Start ``airflow standalone``; on exit pause the DAG and stop Airflow."""
    settings = standalone_settings(
        server,
        meta_db,
        EXAMPLE_DAGS_DIR,
        {CONN_ID: server.airflow_connection(graphile_db)},
        # Other example DAGs live in the same folder: they stay paused, ours is unpaused.
        AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="True",
    )
    standalone = Standalone(home, settings)
    api = AirflowAPI(standalone.base_url)
    try:
        yield Airflow(standalone, api)
    finally:
        with suppress(requests.RequestException):  # no new runs while it shuts down
            api.request("PATCH", f"/dags/{DAG_ID}", json={"is_paused": True}, timeout=10)
        seconds, killed = standalone.stop(timeout=90)
        say(
            f"  airflow standalone stopped in {seconds:.0f} s"
            + (f"; SIGKILLed what was left: {killed}" if killed else "")
        )


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
    db.empty()  # what a previous trial left
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

    home = Path(tempfile.mkdtemp(prefix="bench-rescue-airflow-"))
    clean = [False]

    def finish_home() -> None:
        if clean[0] and not args.keep_home:
            shutil.rmtree(home, ignore_errors=True)
        else:
            say(f"Airflow home kept: {home} (standalone.log, task logs under logs/)")

    stack.callback(finish_home)
    airflow = stack.enter_context(airflow_standalone(server, meta_db, graphile_db, home))
    say(
        f"  airflow standalone started (pid {airflow.standalone.process.pid}); waiting for it "
        "to be healthy"
    )
    started = time.monotonic()
    airflow.standalone.wait_healthy(args.startup_timeout)
    seconds = time.monotonic() - started
    say(f"  healthy after {seconds:.0f} s (metadata DB migrated on PostgreSQL)")
    warm_since = utcnow() - timedelta(minutes=1)
    airflow.api.wait_dag(DAG_ID, args.startup_timeout)  # registered by the DAG processor
    airflow.api.set_paused(DAG_ID, False)
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
    started = time.monotonic()
    interrupted = "everything started was stopped and the databases dropped."
    if run_cleanly(lambda stack: run(args, stack), interrupted):
        return 130
    say(f"Done in {(time.monotonic() - started) / 60:.1f} min; all stopped, databases dropped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
