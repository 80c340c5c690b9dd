"""Part 3: the example DAG graphile_worker_admin, run as a person would from its trigger form.

A reschedule left on the form's default, dry run; the same for real; then a permanent
failure with a reason, of two jobs of which one is running on worker B (so skipped).
"""

from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from typing import Any

from demo.common import TASK_COLUMN, heading, item_lines, say
from demo.queue import Names, changes, show_queue
from demo.world import World

DAG_ID = "graphile_worker_admin"
VERBS = {
    "complete_jobs": "completed",
    "permanently_fail_jobs": "permanently failed",
    "reschedule_jobs": "rescheduled",
}


def summarizer(names: Names, action: str) -> Any:
    def summarize(task_id: str, result: Any) -> str:
        if task_id == "choose_action":
            return f'branched to "{action}" (the other four tasks are skipped)'
        if result is None:
            return "success (no XCom)"
        verb = VERBS[result["function"]]
        affected = ", ".join(map(str, result["affected"])) or "nothing"
        reasons = {
            "locked": "locked by {who}: a worker is running it, and Graphile Worker leaves "
            "jobs locked less than 4 hours ago alone",
            "unknown": "no such job",
        }
        skipped = [
            f"{item['id']} ("
            + reasons.get(item["reason"], item["reason"]).format(
                who=names(str(item.get("locked_by")))
            )
            + ")"
            for item in result["skipped"]
        ]
        text = (
            f"dry run, nothing changed: would have {verb} {affected}"
            if result["dry_run"]
            else f"{verb} {affected}"
        )
        return text + (f"; skipped {', '.join(skipped)}" if skipped else "")

    return summarize


def part_three(world: World, dag: Any) -> bool:
    heading(
        f"3/3  {DAG_ID}: one admin action by hand, from the trigger form",
        "The form's fields are the DAG's params: action (complete, permanently_fail, "
        "reschedule, force_unlock, cleanup), job ids, ... and Dry run, on by default.",
    )
    seed = world.seed
    tomorrow = datetime.now(timezone.utc).date() + timedelta(days=1)
    run_at = datetime.combine(tomorrow, time(6), timezone.utc).isoformat()
    reschedule = {
        "action": "reschedule",
        "job_ids": [seed.email, seed.newsletter],
        "run_at": run_at,
        "attempts": 0,
    }
    fail = {
        "action": "permanently_fail",
        "job_ids": [seed.weekly, seed.report],
        "reason": "Weekly report discontinued",
        "dry_run": False,
    }
    runs = [
        ("The mail relay is down until 06:00 tomorrow: retry the email then, with all its "
         "attempts back, and send the newsletter then. First with Dry run left on:", reschedule),
        ("The same with Dry run off:", {**reschedule, "dry_run": False}),
        ("Stop the weekly report for good, both the scheduled one and the one B is running:",
         fail),
    ]  # fmt: skip
    for why, conf in runs:
        say()
        say(f"  {why}", indent=2)
        action = str(conf["action"])
        ran = world.run(dag, conf, ("choose_action", action), summarizer(world.names, action))
        if ran is None:
            return False
        changed = changes(ran[1], world.snapshot(), world.names) or ["nothing"]
        for line in item_lines("queue changed", changed, indent=4, column=TASK_COLUMN):
            say(line)
    say()
    show_queue("QUEUE NOW", world.snapshot(), world.names)
    return True
