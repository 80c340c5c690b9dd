"""Act 2 of the demo: the example DAG graphile_worker_unlock_crashed rescues a crashed worker.

Two real workers write heartbeats (the plugin in worker-plugin/). Worker A is killed with
SIGKILL while it holds a job and the lock of queue "billing"; worker B keeps running a long
job in queue "reports". The DAG finds both lockers' long-held locks, tells by heartbeat that
A is dead and B alive, and force-unlocks only A's locks; B then runs A's rescued jobs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from demo.common import (
    SCHEMA,
    VERSION,
    DagRunOutcome,
    id_list,
    output_to,
    report_run,
    run_dag,
    say,
    show_queue,
    table,
)
from tests.support.graphile import (
    DEFAULT_HEARTBEAT_SCHEMA,
    DEFAULT_HEARTBEAT_TABLE,
    GraphileDB,
    WorkerProcess,
    wait_for,
)

EXAMPLE_DAGS_DIR = Path(__file__).resolve().parents[1] / "example_dags"
DAG_ID = "graphile_worker_unlock_crashed"
TASK_IDS = ("find_stuck_locks", "check_heartbeats", "force_unlock_dead_workers", "report")
BEAT_MS = 500
# The DAG's timings, shortened for the demo (its defaults are 60 s and 60 s).
CONF = {"stuck_after_seconds": 2, "dead_after_seconds": 3, "max_workers": 3}
WHY = {
    "stuck_after_seconds": "a lock held longer than this is checked",
    "dead_after_seconds": "a heartbeat older than this means dead",
    "max_workers": "more dead workers at once: unlock nothing",
}


def load_example_dag() -> Any:
    """Import the example DAG file by path, as the DAG processor does."""
    path = EXAMPLE_DAGS_DIR / f"{DAG_ID}.py"
    spec = importlib.util.spec_from_file_location(f"example_{DAG_ID}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the example DAG {path.name}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.dag


def heartbeat_rows(db: GraphileDB) -> list[dict[str, Any]]:
    """The heartbeat table's rows with their age on the database's clock, oldest first."""
    query = sql.SQL(
        "select locker_id, pid, extract(epoch from now() - last_beat_at)::float8 as age "
        "from {} order by started_at"
    ).format(sql.Identifier(DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE))
    return db.query(query)


@dataclass
class Crash:
    a: WorkerProcess
    b: WorkerProcess
    a_id: str  # pool ids, as in locked_by
    b_id: str
    billing: int  # sleep 10 min in queue billing, locked by A; a retry finishes at once
    queued: int  # noop in queue billing, blocked behind A's queue lock
    reports: int  # sleep 10 min in queue reports, locked by B

    @property
    def names(self) -> dict[str, str]:
        return {self.a_id: "A", self.b_id: "B"}


def start_workers(db: GraphileDB, stack: contextlib.ExitStack) -> Crash:
    """Start worker A, give it the billing job, then worker B with the reports job."""

    def locker(job: int, worker: WorkerProcess) -> str:
        try:
            return str(
                wait_for(lambda: db.jobs()[job]["locked_by"], timeout=30, what=f"job {job} locked")
            )
        except TimeoutError as error:
            raise RuntimeError(f"{error}; the worker's output:\n{worker.log_text()}") from None

    a = WorkerProcess(
        db.dsn, VERSION, schema=SCHEMA, jobs=1, heartbeat=True, heartbeat_interval_ms=BEAT_MS
    )
    stack.callback(a.kill)
    billing = db.add_job("sleep", {"ms": 600_000, "onlyFirstAttempt": True}, queue="billing")
    a_id = locker(billing, a)
    queued = db.add_job("noop", {"invoice": 1042}, queue="billing")
    b = WorkerProcess(
        db.dsn, VERSION, schema=SCHEMA, jobs=2, heartbeat=True, heartbeat_interval_ms=BEAT_MS
    )
    stack.callback(b.kill)
    reports = db.add_job("sleep", {"ms": 600_000}, queue="reports")
    b_id = locker(reports, b)
    wait_for(
        lambda: {a_id, b_id} <= set(db.heartbeats()), timeout=10, what="both workers' heartbeats"
    )
    return Crash(a, b, a_id, b_id, billing, queued, reports)


def show_heartbeats(db: GraphileDB, crash: Crash, dead_after: float) -> None:
    say(
        f"  heartbeats ({DEFAULT_HEARTBEAT_SCHEMA}.{DEFAULT_HEARTBEAT_TABLE}, "
        "written by the worker plugin)"
    )
    rows = []
    for beat in heartbeat_rows(db):
        name = crash.names.get(beat["locker_id"], "?")
        state = "killed" if name == "A" else "running"
        age = beat["age"]
        verdict = f"stale (> {dead_after:g} s)" if age > dead_after else "fresh"
        rows.append(
            [beat["locker_id"], f"{name}, {state}", str(beat["pid"]), f"{age:.1f} s ago", verdict]
        )
    for line in table(["locker", "worker", "pid", "last beat", "verdict"], rows):
        say(line)
    say()


def held(job_ids: list[int], queue_names: list[str]) -> str:
    """Locks as words: "job 1, queue billing", "jobs 4, 5, no queue"."""
    jobs = f"job{'s' if len(job_ids) > 1 else ''} {id_list(job_ids)}"
    if not queue_names:
        return f"{jobs}, no queue"
    return f"{jobs}, queue{'s' if len(queue_names) > 1 else ''} {id_list(queue_names)}"


def summarize(task_id: str, result: dict[str, Any], names: dict[str, str]) -> str:
    """One line from a task's XCom; lockers by their demo names A and B."""

    def who(locker: str) -> str:
        return names.get(locker, locker)

    if task_id == "find_stuck_locks":
        lockers = [
            f"{who(item['locker_id'])} ({held(item['job_ids'], item['queue_names'])})"
            for item in result["lockers"]
        ]
        return f"held > {result['stuck_after_seconds']:g} s: {', '.join(lockers) or 'none'}"
    if task_id == "check_heartbeats":
        parts = [
            title + ": " + ", ".join(f"{who(i['locker_id'])} ({i['evidence']})" for i in items)
            for title, items in (
                ("dead", result["dead"]),
                ("alive", result["alive"]),
                ("no heartbeat", result["unknown"]),
            )
            if items
        ]
        return "; ".join(parts) or "no locker to check"
    if task_id == "force_unlock_dead_workers":
        released = [
            f"{who(worker)}'s {held(locks['job_ids'], locks['queue_names'])}"
            for worker, locks in result["by_worker"].items()
        ]
        spared = [f"{who(s['locker_id'])} ({s['evidence']})" for s in result["spared"]]
        return f"re-checked heartbeats, released {'; '.join(released) or 'nothing'}" + (
            f"; spared {', '.join(spared)}" if spared else ""
        )
    if task_id == "report":
        unlocked = ", ".join(who(w) for w in result["unlocked_workers"]) or "none"
        alone = ", ".join(who(w) for w in result["left_alone"]) or "none"
        return f"unlocked workers: {unlocked}; left alone: {alone}"
    return str(result)


def wait_for_rescue(db: GraphileDB, crash: Crash, rescued: list[int]) -> list[str]:
    """Wait until worker B has run the rescued jobs; return its log lines about them."""
    pattern = re.compile(r"Completed task (" + "|".join(map(str, rescued)) + r") \(.*")

    def done() -> list[str]:
        lines = [m.group(0) for m in pattern.finditer(crash.b.log_text())]
        jobs = db.jobs()
        finished = len(lines) == len(rescued) and not any(job in jobs for job in rescued)
        return lines if finished else []

    try:
        return wait_for(done, timeout=30, what="worker B to run the rescued jobs")
    except TimeoutError as error:
        raise RuntimeError(f"{error}; worker B's output:\n{crash.b.log_text()}") from None


def act_two(db: GraphileDB, stack: contextlib.ExitStack, log_file: Path) -> bool:
    """Crash one of two heartbeating workers, run the rescue DAG, show the result."""
    dag = load_example_dag()
    defaults = {key: param.value for key, param in dag.params.items()}
    dead_after = float(CONF["dead_after_seconds"])

    crash = start_workers(db, stack)
    say(
        f"  Worker A    pid {crash.a.pid}, 1 slot, heartbeat every {BEAT_MS / 1000:g} s as "
        f"{crash.a_id}: runs job {crash.billing} (sleep 10 min; a retry ends at once) in queue "
        f"billing; job {crash.queued} (noop) waits behind it in the same queue",
        indent=14,
    )
    say(
        f"  Worker B    pid {crash.b.pid}, 2 slots, heartbeat every {BEAT_MS / 1000:g} s as "
        f"{crash.b_id}: runs job {crash.reports} (sleep 10 min) in queue reports; one slot free",
        indent=14,
    )
    crash.a.kill()
    killed = time.monotonic()
    wait_for(
        lambda: any(
            row["locker_id"] == crash.a_id and row["age"] > dead_after + 0.2
            for row in heartbeat_rows(db)
        ),
        timeout=30,
        what="worker A's heartbeat to go stale",
    )
    say(
        f"  Crash       worker A killed with SIGKILL: its locks stay (for 4 hours) and its "
        f"heartbeat stops; waited {time.monotonic() - killed:.1f} s until it was older than "
        f"{dead_after:g} s",
        indent=14,
    )
    say()

    jobs_before, _ = show_queue("BEFORE", db, crash.names)
    show_heartbeats(db, crash, dead_after)

    conf = {**defaults, **CONF}
    say(f"RUN  dag.test() of the example DAG {DAG_ID} (example_dags/), with this conf:")
    for key, value in CONF.items():
        default = f"(default {defaults[key]:g})"
        say(f"  {key:<20} {value:<3} {default:<13} {WHY[key]}")
    say(
        "  Timings shortened from the DAG's production defaults (locks stuck after 1 minute, "
        "dead after 60 s without a heartbeat) so that the demo is quick.",
        indent=2,
    )
    started = time.monotonic()
    with output_to(log_file):
        outcome: DagRunOutcome = run_dag(dag, conf)
    say(f"  -> {outcome.state}, in {time.monotonic() - started:.1f} s")
    if outcome.succeeded:
        rescued = [crash.billing, crash.queued]
        done = wait_for_rescue(db, crash, rescued)
        say("  Worker B ran the rescued jobs in its free slot; from its log:")
        for line in done:
            say(f"    {line}")
    say()

    jobs_after, _ = show_queue("AFTER", db, crash.names)
    if outcome.succeeded:
        gone = sorted(jobs_before - jobs_after)
        say(f"  Gone since BEFORE: jobs {id_list(gone)}, run by worker B after the unlock")
        job = db.jobs().get(crash.reports)
        queue = db.queues().get("reports")
        if job and queue and job["locked_by"] == queue["locked_by"] == crash.b_id:
            say(
                f"  Untouched: job {crash.reports} and queue reports, still locked by live worker B"
            )
        say()

    say("WHAT EACH TASK DID (from its XCom)")
    for task_id in TASK_IDS:
        state = outcome.task_states.get(task_id, "not run")
        result = outcome.xcom.get(task_id)
        text = summarize(task_id, result, crash.names) if state == "success" and result else state
        say(f"  {task_id:<26} {text}", indent=29)
    say()
    report_run(outcome, log_file)
    crash.b.kill()
    say("Stopped worker B.")
    return outcome.succeeded
