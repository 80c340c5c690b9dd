"""What the three parts of the demo work on, and how each runs a DAG and reports on it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo.common import check_run, say_run, say_tasks
from demo.queue import Names, Snapshot, snapshot
from demo.seed import Fleet, Seed
from devkit.dag_runs import DagRunResult, run_dag
from devkit.graphile import GraphileDB


@dataclass
class World:
    db: GraphileDB
    log_file: Path
    names: Names
    seed: Seed
    fleet: Fleet

    def snapshot(self) -> Snapshot:
        return snapshot(self.db)

    def run(
        self,
        dag: Any,
        conf: dict[str, Any],
        task_ids: Sequence[str],
        summarize: Callable[[str, Any], str],
        note: str = "",
    ) -> tuple[DagRunResult, Snapshot] | None:
        """Run the DAG, say what each task did; return the run and the queue before it.

        None if the run or one of ``task_ids`` did not succeed (their logs are printed).
        """
        say_run(conf, note)
        before = self.snapshot()
        outcome = run_dag(dag, conf, log_file=self.log_file)
        say_tasks(outcome, task_ids, summarize)
        if not check_run(outcome, task_ids, self.log_file):
            return None
        return outcome, before
