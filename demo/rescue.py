"""Part 1: the example DAG graphile_worker_unlock_crashed rescues the crashed worker's jobs.

It finds the locks held too long (A's and B's), tells by heartbeat that A is dead and B
alive, and force-unlocks A's locks only; B then runs A's rescued jobs in its free slot.
"""

from __future__ import annotations

import re
from typing import Any

from demo.common import heading, say
from demo.queue import Names, show_queue
from demo.world import World

DAG_ID = "graphile_worker_unlock_crashed"
TASK_IDS = ("find_stuck_locks", "check_heartbeats", "force_unlock_dead_workers", "report")
# The DAG's timings, shortened for the demo (its defaults are 60 s and 60 s).
CONF = {"stuck_after_seconds": 2, "dead_after_seconds": 3}


def held(job_ids: list[int], queue_names: list[str]) -> str:
    """Locks as words: "job 1, queue billing"."""
    words = [f"job{'s' if len(job_ids) > 1 else ''} {', '.join(map(str, job_ids))}"]
    return ", ".join(words[: bool(job_ids)] + [f"queue {name}" for name in queue_names])


def summarizer(names: Names) -> Any:
    def summarize(task_id: str, result: dict[str, Any] | None) -> str:
        if result is None:
            return "success (no XCom)"
        if task_id == "find_stuck_locks":
            lockers = [
                f"{names(item['locker_id'])} ({held(item['job_ids'], item['queue_names'])})"
                for item in result["lockers"]
            ]
            return f"locks held > {result['stuck_after_seconds']:g} s: {', '.join(lockers)}"
        if task_id == "check_heartbeats":
            parts = [
                f"{title}: "
                + ", ".join(f"{names(i['locker_id'])} ({i['evidence']})" for i in items)
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
                f"{names(worker)}'s {held(locks['job_ids'], locks['queue_names'])}"
                for worker, locks in result["by_locker"].items()
            ]
            spared = [f"{names(s['locker_id'])} ({s['evidence']})" for s in result["spared"]]
            return f"heartbeats re-checked; released {'; '.join(released) or 'nothing'}" + (
                f"; spared {', '.join(spared)}" if spared else ""
            )
        if task_id == "report":
            unlocked = ", ".join(names(w) for w in result["unlocked_locker_ids"]) or "none"
            alone = ", ".join(names(w) for w in result["left_alone_locker_ids"]) or "none"
            return f"unlocked worker(s): {unlocked}; left alone: {alone}"
        return str(result)

    return summarize


def wait_for_rescue(world: World, rescued: list[int]) -> list[str]:
    """Wait until worker B has run the rescued jobs; return its log lines about them."""
    b = world.fleet.b
    pattern = re.compile(r"Completed task (" + "|".join(map(str, rescued)) + r") \(.*")

    def done() -> list[str]:
        lines = [m.group(0) for m in pattern.finditer(b.log_text())]
        jobs = world.db.jobs()
        finished = len(lines) == len(rescued) and not any(job in jobs for job in rescued)
        return lines if finished else []

    return b.wait(done, timeout=60, what="worker B to run the rescued jobs")


def part_one(world: World, dag: Any) -> bool:
    heading(
        f"1/3  {DAG_ID}: free the jobs of a crashed worker",
        "Every minute: wait for locks held too long, ask the heartbeat table which of their "
        "holders are dead, force-unlock only those (re-checking each heartbeat first).",
    )
    defaults = {key: f"{dag.params.get_param(key).value:g}" for key in CONF}
    ran = world.run(
        dag,
        CONF,
        TASK_IDS,
        summarizer(world.names),
        note=f"(defaults {' and '.join(defaults.values())} s, shortened for the demo)",
    )
    if ran is None:
        return False
    _, before = ran
    seed = world.seed
    done = wait_for_rescue(world, [seed.charge, seed.invoice])
    say("  Worker B then ran the rescued jobs in its free slot; from its log:")
    for line in done:
        say(f"    {line}")
    say()
    show_queue("QUEUE NOW", world.snapshot(), world.names, before)
    return True
