"""What every part of the demo shares: its settings and how it prints."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from devkit import process
from devkit.dag_runs import DagRunResult
from devkit.versions import DEFAULT_SCHEMA, LATEST_VERSION

VERSION = LATEST_VERSION
SCHEMA = DEFAULT_SCHEMA
CONN_ID = "graphile_worker_default"
WIDTH = 100
LABEL = 20  # width of the label column of key/value lines

# Print, wrapping lines longer than WIDTH under a hanging indent.
say = partial(process.say, width=WIDTH)


def heading(text: str, intro: str = "") -> None:
    """A section's title, as a rule across the width, then what it is about."""
    say(f"── {text} ".ljust(WIDTH, "─"))
    if intro:
        say(f"  {intro}", indent=2)


def item_lines(
    label: str, items: Iterable[str], sep: str = " · ", indent: int = 2, column: int = LABEL
) -> list[str]:
    """A key/value line: the label, then the items from ``column`` on, wrapped between items."""
    prefix = (" " * indent + label).ljust(column)
    lines: list[str] = []
    line = prefix
    for item in items:
        if line == prefix:
            line += item
        elif len(line) + len(sep) + len(item) <= WIDTH:
            line += sep + item
        else:
            lines.append(line + sep.rstrip())
            line = " " * column + item
    lines.append(line if line != prefix else prefix + "none")
    return [
        textwrap.fill(text, WIDTH, subsequent_indent=" " * column, break_on_hyphens=False)
        for text in lines
    ]


def id_list(values: Iterable[Any]) -> str:
    """``1, 2, 3``, or ``none``."""
    return ", ".join(str(value) for value in values) or "none"


def plural(count: int, word: str) -> str:
    """``1 job``, ``2 jobs``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


def say_run(conf: dict[str, Any], note: str = "") -> None:
    """The run as a person would start it: the trigger form's values."""
    say(f"  RUN  dag.test(run_conf={json.dumps(conf)})", indent=7)
    if note:
        say(f"       {note}", indent=7)


TASK_COLUMN = LABEL + 11  # where the text of a task line starts


def say_tasks(
    outcome: DagRunResult,
    task_ids: Iterable[str],
    summarize: Callable[[str, Any], str],
) -> None:
    """The run's state, then one line per task from its XCom (None if it pushed none)."""
    say(f"  -> {outcome.state} in {outcome.seconds:.1f} s; what each task did (from its XCom):")
    for task_id in task_ids:
        state = outcome.task_states.get(task_id, "not run")
        result = outcome.xcom.get(task_id)
        text = summarize(task_id, result) if state == "success" else state
        say(f"    {task_id:<{TASK_COLUMN - 5}} {text}", indent=TASK_COLUMN)


def task_log(log_file: Path, task_id: str) -> str | None:
    """The lines dag.test() logged while it last ran a task (it writes no per-task files).

    None if the task did not run.
    """
    lines = log_file.read_text(errors="replace").splitlines()
    start = f"[DAG TEST] starting task_id={task_id} "
    end = f"[DAG TEST] end task task_id={task_id} "
    first = max((i for i, line in enumerate(lines) if start in line), default=None)
    if first is None:
        return None
    last = next((i for i in range(first, len(lines)) if end in lines[i]), len(lines) - 1)
    return "\n".join(lines[first : last + 1])


def check_run(outcome: DagRunResult, task_ids: Iterable[str], log_file: Path) -> bool:
    """Say so if the run or an expected task did not succeed, with the failed tasks' logs.

    Without a failed task (e.g. a sensor that soft-failed, so skipped), the logs of the
    expected tasks that ran and did not succeed.
    """
    expected = list(task_ids)
    if outcome.succeeded(expected):
        return True
    say(f"\nThe run of {outcome.dag_id} ended {outcome.state}.")
    failed = [task for task, state in outcome.task_states.items() if state == "failed"]
    if not failed:
        failed = [task for task in expected if outcome.task_states.get(task) != "success"]
    for task_id in failed:
        log = task_log(log_file, task_id)
        if log is not None:
            say(f"\nLog of the task {task_id} ({outcome.task_states.get(task_id)}):")
            print(log, flush=True)
    return False
