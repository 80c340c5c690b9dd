"""What every part of the demo shares: printing, the example DAGs, DAG runs with dag.test()."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.postgres import PostgresServer

VERSION = "0.18.0"
SCHEMA = "graphile_worker"
CONN_ID = "graphile_worker_default"
WIDTH = 100
LABEL = 20  # width of the label column of key/value lines
EXAMPLE_DAGS_DIR = Path(__file__).resolve().parents[1] / "example_dags"


def say(text: str = "", indent: int = 0) -> None:
    """Print, wrapping lines longer than WIDTH under a hanging indent."""
    for line in text.splitlines() or [""]:
        if len(line) > WIDTH:
            line = textwrap.fill(
                line, WIDTH, subsequent_indent=" " * indent, break_on_hyphens=False
            )
        print(line, flush=True)


def heading(text: str) -> None:
    say(f"── {text} ".ljust(WIDTH, "─"))


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
    return ", ".join(str(value) for value in values) or "none"


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@contextlib.contextmanager
def output_to(log_file: Path) -> Iterator[None]:
    """Send all that is written to stdout and stderr, by any library, to the log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with log_file.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def use_database(server: PostgresServer, dbname: str) -> None:
    """Point the Airflow connection CONN_ID (AIRFLOW_CONN_...) at the demo database."""
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
        {
            "conn_type": "graphile_worker",
            "host": server.host,
            "port": server.port,
            "login": server.user,
            "password": server.password,
            "schema": dbname,
        }
    )


def load_example_dag(dag_id: str, log_file: Path) -> Any:
    """Import an example DAG file by path, as the DAG processor does (output to the log)."""
    path = EXAMPLE_DAGS_DIR / f"{dag_id}.py"
    spec = importlib.util.spec_from_file_location(f"example_{dag_id}", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the example DAG {path.name}")
    module = importlib.util.module_from_spec(spec)
    with output_to(log_file):
        spec.loader.exec_module(module)
    return module.dag


# --- DAG runs --------------------------------------------------------------------------


@dataclass
class DagRunOutcome:
    dag_id: str
    state: str
    task_states: dict[str, str]
    xcom: dict[str, Any]
    seconds: float

    def succeeded(self, task_ids: Iterable[str]) -> bool:
        """The run succeeded and so did each of ``task_ids`` (others may be skipped)."""
        return self.state == "success" and all(
            self.task_states.get(task_id) == "success" for task_id in task_ids
        )


def run_dag(dag: Any, conf: dict[str, Any], log_file: Path) -> DagRunOutcome:
    """Run a DAG once with dag.test(), Airflow's output going to the log file.

    Returns its state, task states and XComs. The DAG's file must be in a configured
    DAG bundle.
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    # Airflow's task runner, which dag.test() runs in this process, sets its own SIGTERM
    # handler and leaves it in place. Hold SIGTERM back during the run and put the demo's
    # handler back after it: a SIGTERM received meanwhile then stops the demo at once.
    handler = signal.getsignal(signal.SIGTERM)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    started = time.monotonic()
    try:
        with output_to(log_file):
            dag_run = dag.test(run_conf=conf)
    finally:
        signal.signal(signal.SIGTERM, handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    seconds = time.monotonic() - started
    with create_session() as session:
        instances = dag_run.get_task_instances(session=session)
        rows = (
            session.query(XComModel)
            .filter(XComModel.dag_id == dag.dag_id, XComModel.run_id == dag_run.run_id)
            .filter(XComModel.key == "return_value")
            .all()
        )
        return DagRunOutcome(
            dag_id=dag.dag_id,
            state=str(dag_run.state),
            task_states={ti.task_id: str(ti.state) for ti in instances},
            xcom={row.task_id: XComModel.deserialize_value(row) for row in rows},
            seconds=seconds,
        )


def say_run(conf: dict[str, Any], note: str = "") -> None:
    """The run as a person would start it: the trigger form's values."""
    say(f"  RUN  dag.test(run_conf={json.dumps(conf)})", indent=7)
    if note:
        say(f"       {note}", indent=7)


TASK_COLUMN = LABEL + 11  # where the text of a task line starts


def say_tasks(
    outcome: DagRunOutcome,
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


def check_run(outcome: DagRunOutcome, task_ids: Iterable[str], log_file: Path) -> bool:
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
