"""Part 2: the example DAG graphile_worker_cleanup, with a worker alive and then with none.

While worker B runs, the cleanup deletes the permanently failed jobs and the queues no
job uses, and skips GC_TASK_IDENTIFIERS (workers cache task ids), saying why. At the
end of the demo B is stopped and the cleanup runs again: that step then runs too.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from demo.common import heading, say
from demo.queue import Names, show_queue
from demo.world import World

DAG_ID = "graphile_worker_cleanup"
TASK_IDS = ("cleanup",)


# The demo's jobs failed a minute ago; the DAG keeps failed jobs a week by default.
CONF = {"keep_failed_for_hours": 0}


def shorten_dead_after(dag: Any, seconds: float) -> str:
    """Set the cleanup task's dead_after (DEAD_AFTER in the file) for the demo."""
    task = dag.get_task("cleanup")
    default = task.dead_after
    task.dead_after = timedelta(seconds=seconds)
    default_seconds = default.total_seconds() if isinstance(default, timedelta) else default
    return (
        f"(DEAD_AFTER, {default_seconds:g} s in the DAG file, set to {seconds:g} s as for "
        "the rescue: worker A counts as dead)"
    )


def summarizer(names: Names) -> Any:
    def summarize(task_id: str, result: dict[str, Any] | None) -> str:
        if result is None:
            return "success (no XCom)"
        verb = "would remove" if result["dry_run"] else "removed"
        steps = [f"{step} {verb} {count}" for step, count in result["removed"].items()]
        steps += [
            f"skipped {step}: {names.replace_in(why)}"
            for step, why in result.get("skipped_steps", {}).items()
        ]
        return "; ".join(steps)

    return summarize


def part_two(world: World, dag: Any, dead_after: float) -> bool:
    heading(
        f"2/3  {DAG_ID}: the daily cleanup",
        "Deletes permanently failed jobs and queues no job uses. Deletes task identifiers no "
        "job uses (GC_TASK_IDENTIFIERS) only when no worker is alive by heartbeat and no job "
        "is locked: running workers cache task ids.",
    )
    note = shorten_dead_after(dag, dead_after) + (
        "; keep_failed_for_hours=0: the DAG keeps failed jobs a week by default, and the "
        "demo's failed a minute ago"
    )
    ran = world.run(dag, CONF, TASK_IDS, summarizer(world.names), note=note)
    if ran is None:
        return False
    say()
    show_queue("QUEUE NOW", world.snapshot(), world.names, ran[1])
    return True


def finale(world: World, dag: Any) -> bool:
    """Stop worker B gracefully, run the cleanup again: now no worker is alive."""
    heading(f"Finally: stop worker B, run {DAG_ID} again")
    b = world.fleet.b
    b.stop()
    b.wait(
        lambda: world.fleet.b_id not in world.db.heartbeats(),
        timeout=10,
        what="worker B's heartbeat row to go",
    )
    job = world.db.jobs().get(world.seed.report)
    given_back = job is not None and job["locked_at"] is None
    say(
        "  Stopped worker B with SIGTERM: a graceful stop (not a crash), so it "
        + (f"gave job {world.seed.report} back, " if given_back else "")
        + "unlocked its queue and deleted its heartbeat row. No worker is alive now.",
        indent=2,
    )
    ran = world.run(dag, CONF, TASK_IDS, summarizer(world.names))
    if ran is None:
        return False
    say()
    show_queue("QUEUE AT THE END", world.snapshot(), world.names, ran[1])
    return True
