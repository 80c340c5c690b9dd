"""Figure 3: a live worker's throughput while a bulk operation by filter runs.

Run from the repository root: ``.venv/bin/python -m bench.worker_throughput [--jobs N]``.

The queue is the one of ``bench.bulk_by_filter`` (``--jobs`` jobs, default 1,000,000,
none ready; the filter selects half of them) plus a backlog of ``--backlog`` ready
``noop`` jobs, which the bulk operation never touches. For each measurement window, a
fresh ``FILE_COPY`` of that database and a real Graphile Worker 0.18.0
(``devkit.graphile.WorkerProcess``: ``node cli.js --jobs 4``, the task files of
``devkit/graphile_tasks/tasks``) draining the ``noop`` backlog. Once it runs steadily
(``--settle`` seconds after its first completed job), one of:

- ``idle``: nothing else, for ``--window`` seconds (the baseline);
- ``ours``: our operators by filter, at the default batch size (2,000): reschedule,
  then permanently fail, the same 500,000 jobs as in ``bench.bulk_by_filter``;
- ``raw``: the same two changes, each as one ``UPDATE`` statement;
- ``indexed``: like ``idle``, but the database has the optional partial index on
  ``locked_at`` (``WHERE locked_at IS NOT NULL``) that ``bench.queue_stats`` measures for
  the stuck-lock poke: what it costs the worker's claims (each claim sets ``locked_at``,
  so it adds an index entry).

Throughput is the number of ``noop`` jobs the worker completed (deleted) from the start
to the end of the window, divided by its length; the window of ``ours`` and ``raw`` is
the time their two operations take. Each round measures the four in a rotating order;
the figures are per-round ratios to ``idle``. Target: ``ours`` keeps at least 90%.

To tell CPU contention from lock waits, each window also records how busy the machine's
CPUs were (``/proc/stat``, all processes) and how much CPU the worker's node process
used (``/proc/<pid>/stat``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.bulk_by_filter import DEFAULT_BATCH, Operations, build_template
from bench.common import (
    WORKER_SCHEMA,
    JobSpecSQL,
    Ratio,
    Summary,
    create_locked_at_index,
    fill_jobs,
    load_note,
    rotated,
    say_machine,
    set_up,
    spread,
    vacuum_analyze,
)
from devkit.graphile import WorkerProcess
from devkit.postgres import (
    PostgresServer,
    clone_database,
    drop_database,
    temporary_copy,
    unique_name,
)
from devkit.process import run_cleanly, say
from devkit.versions import LATEST_VERSION

VERSION = LATEST_VERSION
WORKER_JOBS = 4
TARGET_SHARE = 0.9
VARIANTS = ("idle", "ours", "raw", "indexed")
NOOP = JobSpecSQL(task="'noop'", payload="json_build_object('n', i)")


@dataclass
class Window:
    seconds: float
    done: int
    left: int
    busy: float  # share of all CPUs busy during the window (all processes)
    node_cpus: float  # CPUs the worker's node process used (1.0 = one whole CPU)

    @property
    def rate(self) -> float:
        return self.done / self.seconds


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc/<pid>/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_queue(server: PostgresServer, jobs: int, backlog: int) -> tuple[str, int, float]:
    """The bulk queue plus the noop backlog; returns its name and the first noop id."""
    started = time.monotonic()
    bulk, _ = build_template(server, jobs)
    name = unique_name("bench_worker_template")
    try:
        clone_database(server, bulk, name)
    finally:
        drop_database(server, bulk)
    try:
        dsn = server.dsn(name)
        jobs_table = sql.Identifier(WORKER_SCHEMA, "_private_jobs")
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(sql.SQL("select max(id) from {}").format(jobs_table)).fetchone()
        assert row is not None
        fill_jobs(dsn, backlog, NOOP)
        vacuum_analyze(dsn)
    except BaseException:
        drop_database(server, name)
        raise
    return name, int(row[0]) + 1, time.monotonic() - started


class Bench:
    def __init__(self, server: PostgresServer, template: str, first_noop: int, work: Path):
        self.server = server
        self.template = template
        self.first_noop = first_noop
        self.operations = Operations(server, work / "task.log")
        self.count = sql.SQL("select count(*) from {} where id >= %s").format(
            sql.Identifier(WORKER_SCHEMA, "_private_jobs")
        )

    def left(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute(self.count, [self.first_noop]).fetchone()
        assert row is not None
        return int(row[0])

    def window(self, variant: str, seconds: float, settle: float) -> Window:
        with temporary_copy(self.server, self.template, "bench_worker") as name:
            dsn = self.server.dsn(name)
            if variant == "indexed":  # the optional index of bench.queue_stats
                create_locked_at_index(dsn)
            with (
                psycopg.connect(dsn, autocommit=True) as conn,
                WorkerProcess(dsn, VERSION, jobs=WORKER_JOBS) as worker,
            ):
                backlog = self.left(conn)
                worker.wait(lambda: self.left(conn) < backlog, 60, "the first noop job")
                time.sleep(settle)
                before, started = self.left(conn), time.perf_counter()
                ticks, node_seconds = cpu_ticks(), process_seconds(worker.pid)
                if variant in ("idle", "indexed"):
                    time.sleep(seconds)
                else:
                    for operation in ("reschedule", "permanently_fail"):
                        if variant == "ours":
                            self.operations.ours(name, operation, DEFAULT_BATCH)
                        else:
                            self.operations.raw(name, operation)
                elapsed = time.perf_counter() - started
                busy = (cpu_ticks()[0] - ticks[0]) / max(1, cpu_ticks()[1] - ticks[1])
                node_cpus = (process_seconds(worker.pid) - node_seconds) / elapsed
                after = self.left(conn)
                if not worker.running():
                    raise RuntimeError(f"the worker died:\n{worker.log_text()}")
            if after == 0:
                raise RuntimeError("the noop backlog ran out during the window: raise --backlog")
            return Window(elapsed, before - after, after, busy, node_cpus)


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    server, work = set_up(stack, "worker")
    template, first_noop, build_seconds = build_queue(server, args.jobs, args.backlog)
    stack.callback(drop_database, server, template)
    say_machine(server.dsn(template))
    say("SETUP")
    say(
        f"  {args.jobs:,} jobs as in bench.bulk_by_filter plus {args.backlog:,} ready noop "
        f"jobs (ids from {first_noop:,}), built in {build_seconds:.1f} s; a fresh FILE_COPY "
        f"and a fresh worker (--jobs {WORKER_JOBS}) for every window"
    )
    bench = Bench(server, template, first_noop, work)
    warm = bench.window("ours", args.window, args.settle)
    say(
        f"  warm-up window (untimed): ours, {warm.seconds:.1f} s, {warm.rate:,.0f} noop jobs/s, "
        f"{warm.left:,} left"
    )
    say()

    say(f"MEASURE  {args.rounds} rounds of the four windows, in rotating order")
    windows: dict[str, list[Window]] = {variant: [] for variant in VARIANTS}
    loads: list[float] = []
    for number in range(args.rounds):
        for variant in rotated(list(VARIANTS), number):
            measured = bench.window(variant, args.window, args.settle)
            windows[variant].append(measured)
            say(
                f"  round {number + 1} {variant:<7} {measured.seconds:6.1f} s  "
                f"{measured.done:>8,} done  {measured.rate:8,.0f} jobs/s  "
                f"({measured.left:,} left); CPUs busy {measured.busy:.0%}, node "
                f"{measured.node_cpus:.2f} CPU; "
                f"{load_note()}"
            )
        loads.append(os.getloadavg()[0])
    say()

    idle = [window.rate for window in windows["idle"]]
    say("RESULT  noop jobs/s of one worker (--jobs 4): median (min-max); share of idle")
    result: dict[str, Any] = {}
    for variant in VARIANTS:
        ratio = Ratio.of([window.rate for window in windows[variant]], idle)
        seconds = Summary.of([window.seconds for window in windows[variant]])
        busy = Summary.of([window.busy * 100 for window in windows[variant]])
        node = Summary.of([window.node_cpus for window in windows[variant]])
        say(
            f"  {variant:<7} {spread(ratio.variant, ' jobs/s', 0):>28}   "
            f"{spread(ratio.ratio, 'x'):>20}   window {spread(seconds, ' s', 1)}   "
            f"CPUs busy {spread(busy, '%', 0)}, node {spread(node, ' CPU')}"
        )
        result[variant] = {"rate": ratio.variant.median, "share": ratio.ratio.median}
    say()
    share = result["ours"]["share"]
    say(
        f"  ours keeps {share:.0%} of the idle throughput (raw: "
        f"{result['raw']['share']:.0%}); target >= {TARGET_SHARE:.0%}: "
        + ("met" if share >= TARGET_SHARE else "MISSED")
    )
    say(
        f"  with the partial index on locked_at, an idle worker keeps "
        f"{result['indexed']['share']:.0%} of its throughput without it"
    )
    say(f"  load average (1 min) after each round: {spread(Summary.of(loads))}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.worker_throughput",
        description="A live worker's throughput while a bulk operation by filter runs.",
    )
    parser.add_argument("--jobs", type=int, default=1_000_000, help="jobs of the bulk queue")
    parser.add_argument("--backlog", type=int, default=200_000, help="ready noop jobs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of four windows")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of the idle window")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before a window")
    parser.add_argument("--quick", action="store_true", help="200,000 jobs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.backlog, args.rounds, args.window = 200_000, 60_000, 1, 6.0
    if args.jobs < 10_000 or args.backlog < 1000 or args.rounds < 1 or args.window <= 0:
        parser.error("need --jobs >= 10000, --backlog >= 1000, --rounds >= 1, --window > 0")
    return run_cleanly(
        lambda stack: run(args, stack), "the databases were dropped and the workers stopped."
    )


if __name__ == "__main__":
    sys.exit(main())
