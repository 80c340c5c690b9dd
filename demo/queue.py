"""The demo queue as compact tables: jobs by state, locks by locker, queues, task names."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import sql

from demo.common import SCHEMA, WIDTH, id_list, item_lines, plural, say
from devkit.graphile import GraphileDB
from devkit.versions import DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE

# Graphile Worker's functions ignore a lock older than this.
STALE_LOCK = timedelta(hours=4)
STATES = ("locked", "blocked", "ready", "scheduled", "retrying", "failed permanently")
STATE_LABELS = {"blocked": "blocked (queue locked)"}


@dataclass
class Snapshot:
    """Every job, queue, task identifier and heartbeat, read at one moment."""

    now: datetime
    jobs: dict[int, dict[str, Any]]
    queues: dict[str, dict[str, Any]]
    tasks: dict[str, int]  # identifier -> jobs using it
    beats: dict[str, float]  # locker id -> age of its last heartbeat, in seconds


def snapshot(db: GraphileDB) -> Snapshot:
    jobs, tasks, queues = (
        sql.Identifier(SCHEMA, table)
        for table in ("_private_jobs", "_private_tasks", "_private_job_queues")
    )
    now = db.query(sql.SQL("select now() as now").format())[0]["now"]
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
    task_rows = db.query(
        sql.SQL(
            "select t.identifier, count(j.id) as jobs from {} t left join {} j "
            "on j.task_id = t.id group by t.id order by count(j.id) = 0, t.identifier"
        ).format(tasks, jobs)
    )
    beat_rows = db.query(
        sql.SQL(
            "select locker_id, extract(epoch from now() - last_beat_at)::float8 as age from {}"
        ).format(sql.Identifier(DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE))
    )
    return Snapshot(
        now=now,
        jobs={row["id"]: row for row in job_rows},
        queues={row["queue_name"]: row for row in queue_rows},
        tasks={row["identifier"]: row["jobs"] for row in task_rows},
        beats={row["locker_id"]: row["age"] for row in beat_rows},
    )


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


def state_of(job: dict[str, Any], now: datetime) -> str:
    """One of STATES."""
    if job["locked_at"] is not None and now - job["locked_at"] < STALE_LOCK:
        return "locked"
    if job["attempts"] >= job["max_attempts"]:
        return "failed permanently"
    if job["queue_locked_by"] is not None:
        return "blocked"
    if job["attempts"] > 0 and job["last_error"]:
        return "retrying"
    return "scheduled" if job["run_at"] > now else "ready"


class Names:
    """The demo's short names for lockers (pool ids): "A", "B"."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}

    def __call__(self, locker: str) -> str:
        return self.names.get(locker, locker)

    def add(self, locker: str, name: str) -> None:
        self.names[locker] = name

    def replace_in(self, text: str) -> str:
        """Put the short names in place of the ids in a text."""
        for locker, name in self.names.items():
            text = text.replace(locker, name)
        return text


def job_label(job: dict[str, Any], snap: Snapshot, names: Names) -> str:
    """A job's state in words, for the job list and the "changed" line."""
    state = state_of(job, snap.now)
    if state == "locked":
        return f"locked by {names(job['locked_by'])}"
    if state == "scheduled":
        return f"scheduled {relative(job['run_at'], snap.now)}"
    return STATE_LABELS.get(state, state)


def queue_label(queue: dict[str, Any], names: Names) -> str:
    return "free" if queue["locked_at"] is None else f"locked by {names(queue['locked_by'])}"


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


def show_jobs(snap: Snapshot, names: Names) -> None:
    """Every job, one per line."""
    rows = [
        [
            str(job["id"]),
            job["task"],
            job["queue_name"] or "-",
            job_label(job, snap, names),
            f"{job['attempts']}/{job['max_attempts']}",
            relative(job["run_at"], snap.now),
            job["last_error"] or "-",
        ]
        for job in snap.jobs.values()
    ] or [["-", "(none)", "", "", "", "", ""]]
    for line in table(["id", "task", "queue", "state", "tries", "run_at", "last_error"], rows):
        say(line)


def lockers(snap: Snapshot, names: Names) -> list[str]:
    """Locked jobs and queues by locker, with its heartbeat's age."""
    held: dict[str, tuple[list[int], list[str]]] = {}
    for job in snap.jobs.values():
        if state_of(job, snap.now) == "locked":
            held.setdefault(job["locked_by"], ([], []))[0].append(job["id"])
    for queue in snap.queues.values():
        if queue["locked_at"] is not None:
            held.setdefault(queue["locked_by"], ([], []))[1].append(queue["queue_name"])
    items = []
    for locker, (job_ids, queue_names) in sorted(held.items(), key=lambda kv: names(kv[0])):
        age = snap.beats.get(locker)
        beat = "no heartbeat" if age is None else f"last heartbeat {age:.1f} s ago"
        name = names(locker)
        who = f"{name} = {locker}" if name != locker else locker
        locks = [f"job{'s' if len(job_ids) > 1 else ''} {id_list(job_ids)}"] if job_ids else []
        locks += [f"queue {q}" for q in queue_names]
        items.append(f"{who} ({beat}): {', '.join(locks)}")
    return items


def show_queue(title: str, snap: Snapshot, names: Names, before: Snapshot | None = None) -> None:
    """The compact table: jobs by state, locks by locker, queues, task identifiers.

    With ``before``, a last row says what changed since then.
    """
    say(title)
    by_state: dict[str, list[int]] = {}
    for job in snap.jobs.values():
        by_state.setdefault(state_of(job, snap.now), []).append(job["id"])
    lines = item_lines(
        "jobs by state",
        [
            f"{STATE_LABELS.get(state, state)} {id_list(by_state[state])}"
            for state in STATES
            if state in by_state
        ],
    )
    for number, locker_line in enumerate(lockers(snap, names) or ["none"]):
        lines += item_lines("" if number else "locks by locker", [locker_line])
    lines += item_lines(
        "queues",
        [
            f"{name} {plural(queue['jobs'], 'job')}"
            + ("" if queue["locked_at"] is None else f", locked by {names(queue['locked_by'])}")
            for name, queue in snap.queues.items()
        ],
    )
    lines += item_lines(
        "task identifiers", [f"{task} {plural(count, 'job')}" for task, count in snap.tasks.items()]
    )
    if before is not None:
        lines += item_lines("changed", changes(before, snap, names) or ["nothing"])
    for line in lines:
        say(line)


def changes(before: Snapshot, after: Snapshot, names: Names) -> list[str]:
    """What differs between two snapshots, grouped: "jobs 1, 2: failed permanently → gone"."""
    moves: dict[tuple[str, str], list[str]] = {}

    def note(kind: str, key: str, old: str, new: str) -> None:
        if old != new:
            moves.setdefault((f"{kind}:{old}", new), []).append(key)

    for job_id in sorted(before.jobs.keys() | after.jobs.keys()):
        old_job, new_job = before.jobs.get(job_id), after.jobs.get(job_id)
        old = job_label(old_job, before, names) if old_job else "absent"
        new = job_label(new_job, after, names) if new_job else "gone"
        note("job", str(job_id), old, new)
    for name in sorted(before.queues.keys() | after.queues.keys()):
        old_queue, new_queue = before.queues.get(name), after.queues.get(name)
        note(
            "queue",
            name,
            queue_label(old_queue, names) if old_queue else "absent",
            queue_label(new_queue, names) if new_queue else "gone",
        )
    for task in sorted(before.tasks.keys() | after.tasks.keys()):
        old = "" if task in before.tasks else "absent"
        note("task", task, old, "" if task in after.tasks else "gone")
    items = []
    for (kind_old, new), keys in moves.items():
        kind, old = kind_old.split(":", 1)
        noun = kind if len(keys) == 1 else f"{kind}s"
        if kind == "task":
            noun = "task identifier" + ("s" if len(keys) > 1 else "")
        arrow = f"{old} → {new}" if old else new
        items.append(f"{noun} {id_list(keys)}: {arrow}")
    return items
