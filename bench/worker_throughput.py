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
- ``ours@D`` for each duty cycle D of ``--duty`` (default: 1, i.e. no pause, and the
  operators' default): our operators by filter, at the default batch size (2,000) and
  ``duty_cycle=D``: reschedule, then permanently fail, the same 500,000 jobs as in
  ``bench.bulk_by_filter``;
- ``raw``: the same two changes, each as one ``UPDATE`` statement;
- ``indexed``: like ``idle``, but the database has the optional partial index on
  ``locked_at`` (``WHERE locked_at IS NOT NULL``) that ``bench.queue_stats`` measures for
  the stuck-lock poke: what it costs the worker's claims (each claim sets ``locked_at``,
  so it adds an index entry).

Throughput is the number of ``noop`` jobs the worker completed (deleted) from the start
to the end of the window, divided by its length; the window of ``ours`` and ``raw`` is
the time their two operations take. An idle worker slows down as it goes (each claim
steps over the index entries of the jobs deleted before it; autovacuum is off on the
reference server), so a window is compared with the idle window of the same round over
the same length of time: the jobs left are counted every ``SAMPLE_EVERY`` seconds of
every window, and ``--window`` (the idle one) must be at least as long as the longest
bulk window. Each round measures every window in a rotating order; the figures are
per-round ratios to ``idle``. Target: ``ours`` at the default duty cycle keeps at least
90%. Its cost, how much longer the bulk work takes than without a pause, is the
per-round ratio of its window to ``ours@1``'s.

To tell CPU contention from lock waits, each window also records how busy the machine's
CPUs were (``/proc/stat``, all processes) and how much CPU the worker's node process
used (``/proc/<pid>/stat``).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg
from psycopg import sql

from bench.bulk_by_filter import (
    DEFAULT_BATCH,
    GW_CONN,
    JOB_FILTER,
    REASON,
    Operations,
    build_template,
)
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
# Seconds between counts of the noop jobs left during a window.
SAMPLE_EVERY = 5.0
NOOP = JobSpecSQL(task="'noop'", payload="json_build_object('n', i)")


@dataclass
class Window:
    seconds: float
    done: int
    left: int
    busy: float  # share of all CPUs busy during the window (all processes)
    node_cpus: float  # CPUs the worker's node process used (1.0 = one whole CPU)
    paused: float = 0.0  # seconds our operators paused between batches
    changed: int = 0  # jobs our operators changed
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, done)

    @property
    def rate(self) -> float:
        return self.done / self.seconds

    def rate_over(self, seconds: float) -> float:
        """Jobs/s over the first ``seconds`` of the window (all of it if shorter)."""
        seconds = min(seconds, self.seconds)
        points = [*self.samples, (self.seconds, self.done)]
        for (t0, d0), (t1, d1) in itertools.pairwise(points):
            if t0 <= seconds <= t1:
                done = d0 + (d1 - d0) * (seconds - t0) / (t1 - t0) if t1 > t0 else d1
                return done / seconds
        return self.rate


class Progress(threading.Thread):
    """Counts the noop jobs done every ``SAMPLE_EVERY`` seconds of a window."""

    def __init__(self, bench: Bench, dsn: str, before: int, started: float) -> None:
        super().__init__(daemon=True)
        self.bench, self.dsn, self.before, self.started = bench, dsn, before, started
        self.samples: list[tuple[float, int]] = [(0.0, 0)]
        self.stop = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.wait(SAMPLE_EVERY - (self.elapsed() % SAMPLE_EVERY)):
                left, at = self.bench.left(conn), self.elapsed()
                self.samples.append((at, self.before - left))

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def finish(self) -> list[tuple[float, int]]:
        self.stop.set()
        self.join()
        return self.samples


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


def ours_variant(duty: float) -> str:
    return f"ours@{duty:g}"


def parse_duties(text: str) -> list[float]:
    """``--duty``: comma-separated numbers greater than 0 and at most 1, each once."""
    duties = [float(part) for part in text.split(",")]
    if not all(0 < duty <= 1 for duty in duties):
        raise ValueError(f"{text!r}: each duty cycle must be greater than 0 and at most 1")
    return list(dict.fromkeys(duties))


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

    def ours(self, dbname: str, operation: str, duty: float) -> tuple[float, int]:
        """One operation by our operator (default batch size, ``duty``): (paused, changed)."""
        from airflow_graphile.operators.permanently_fail_jobs import (
            GraphileWorkerPermanentlyFailJobsOperator,
        )
        from airflow_graphile.operators.reschedule_jobs import (
            GraphileWorkerRescheduleJobsOperator,
        )

        self.operations.use(dbname)
        common: dict[str, Any] = {
            "task_id": f"ours_{operation}",
            "graphile_worker_conn_id": GW_CONN,
            "job_filter": JOB_FILTER,
            "batch_size": DEFAULT_BATCH,
            "duty_cycle": duty,
        }
        operator: Any
        if operation == "reschedule":
            operator = GraphileWorkerRescheduleJobsOperator(run_at=self.operations.run_at, **common)
        else:
            operator = GraphileWorkerPermanentlyFailJobsOperator(reason=REASON, **common)
        with self.operations.log_file.open("a") as log, contextlib.redirect_stdout(log):
            result = operator.execute({})
        return float(result["paused_seconds"]), int(result["changed"])

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
                progress = Progress(self, dsn, before, started)
                progress.start()
                paused, changed = 0.0, 0
                try:
                    if variant in ("idle", "indexed"):
                        time.sleep(seconds)
                    else:
                        for operation in ("reschedule", "permanently_fail"):
                            if variant.startswith("ours@"):
                                pause, count = self.ours(name, operation, float(variant[5:]))
                                paused, changed = paused + pause, changed + count
                            else:
                                changed += self.operations.raw(name, operation).changed
                finally:
                    samples = progress.finish()
                elapsed = time.perf_counter() - started
                busy = (cpu_ticks()[0] - ticks[0]) / max(1, cpu_ticks()[1] - ticks[1])
                node_cpus = (process_seconds(worker.pid) - node_seconds) / elapsed
                after = self.left(conn)
                if not worker.running():
                    raise RuntimeError(f"the worker died:\n{worker.log_text()}")
            if after == 0:
                raise RuntimeError("the noop backlog ran out during the window: raise --backlog")
            return Window(elapsed, before - after, after, busy, node_cpus, paused, changed, samples)


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    server, work = set_up(stack, "worker")
    from airflow_graphile.hooks.bulk import DEFAULT_DUTY_CYCLE  # after set_up: imports Airflow

    duties = args.duty or list(dict.fromkeys([1.0, DEFAULT_DUTY_CYCLE]))
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
    ours = [ours_variant(duty) for duty in duties]
    variants = ["idle", *ours, "raw", *([] if args.no_indexed else ["indexed"])]
    warm = bench.window(ours[0], args.window, args.settle)
    say(
        f"  warm-up window (untimed): {ours[0]}, {warm.seconds:.1f} s, {warm.rate:,.0f} noop "
        f"jobs/s, {warm.left:,} left"
    )
    say()

    say(
        f"MEASURE  {args.rounds} rounds of the {len(variants)} windows "
        f"({', '.join(variants)}), in rotating order"
    )
    windows: dict[str, list[Window]] = {variant: [] for variant in variants}
    loads: list[float] = []
    for number in range(args.rounds):
        for variant in rotated(variants, number):
            measured = bench.window(variant, args.window, args.settle)
            windows[variant].append(measured)
            paused = f", {measured.paused:.1f} s paused" if variant in ours else ""
            say(
                f"  round {number + 1} {variant:<9} {measured.seconds:6.1f} s{paused}  "
                f"{measured.done:>8,} done  {measured.rate:8,.0f} jobs/s  "
                f"({measured.left:,} left); CPUs busy {measured.busy:.0%}, node "
                f"{measured.node_cpus:.2f} CPU; "
                f"{load_note()}"
            )
        loads.append(os.getloadavg()[0])
    say()
    changed = {window.changed for variant in [*ours, "raw"] for window in windows[variant]}
    if len(changed) != 1:
        raise RuntimeError(f"the bulk variants changed different numbers of jobs: {changed}")

    idle = windows["idle"]
    say(
        "RESULT  noop jobs/s of one worker (--jobs 4): median (min-max); share of the idle "
        "window of the same round over the same length of time ('idle over it'; the idle "
        "row shows its first 20 s)"
    )
    result: dict[str, Any] = {}
    longer = 0
    for variant in variants:
        rows = windows[variant]
        baseline = [base.rate_over(window.seconds) for window, base in zip(rows, idle, strict=True)]
        longer += sum(
            window.seconds > base.seconds for window, base in zip(rows, idle, strict=True)
        )
        ratio = Ratio.of([window.rate for window in rows], baseline)
        seconds = Summary.of([window.seconds for window in rows])
        busy = Summary.of([window.busy * 100 for window in rows])
        node = Summary.of([window.node_cpus for window in rows])
        shown = ratio.variant
        if variant == "idle":  # its first 20 s (the former window), and all of it
            shown = Summary.of([window.rate_over(20.0) for window in rows])
        say(
            f"  {variant:<9} {spread(shown, ' jobs/s', 0):>28}   "
            f"{spread(ratio.ratio, 'x'):>20}   window {spread(seconds, ' s', 1)}   "
            f"idle over it {spread(ratio.baseline, ' jobs/s', 0)}   "
            f"CPUs busy {spread(busy, '%', 0)}, node {spread(node, ' CPU')}"
        )
        result[variant] = {
            "rate": ratio.variant.median,
            "share": ratio.ratio.median,
            "seconds": seconds.median,
            "rounds": [window.rate / base for window, base in zip(rows, baseline, strict=True)],
        }
    say(
        "  share of idle in each round: "
        + "; ".join(
            f"{variant} " + ", ".join(f"{share:.2f}" for share in result[variant]["rounds"])
            for variant in variants
            if variant != "idle"
        )
    )
    if longer:
        say(
            f"  NOTE: {longer} window(s) outlasted the idle window of their round and were "
            "compared with all of it (which favours them): raise --window"
        )
    say()
    unpaused = ours_variant(1.0)
    if unpaused in windows:
        say("COST  the bulk work's window / ours@1's, same round; paused seconds; share of idle")
        base = [window.seconds for window in windows[unpaused]]
        for variant in ours:
            slower = Ratio.of([window.seconds for window in windows[variant]], base)
            pauses = Summary.of([window.paused for window in windows[variant]])
            say(
                f"  {variant:<9} {spread(slower.ratio, 'x'):>20}   paused "
                f"{spread(pauses, ' s', 1)}   keeps {result[variant]['share']:.0%}"
            )
            result[variant]["slower"] = slower.ratio.median
        say()
    default = ours_variant(DEFAULT_DUTY_CYCLE)
    for variant in ours:
        share = result[variant]["share"]
        say(
            f"  {variant}{' (the default)' if variant == default else ''} keeps {share:.0%} of "
            f"the idle throughput; target >= {TARGET_SHARE:.0%}: "
            + ("met" if share >= TARGET_SHARE else "MISSED")
        )
    say(f"  one raw UPDATE per operation instead: {result['raw']['share']:.0%}")
    if "indexed" in result:
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
    parser.add_argument("--backlog", type=int, default=400_000, help="ready noop jobs")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every window")
    parser.add_argument(
        "--window",
        type=float,
        default=90.0,
        help="seconds of the idle window (at least the longest bulk window)",
    )
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before a window")
    parser.add_argument(
        "--duty",
        type=parse_duties,
        help="comma-separated duty cycles of our operators, one window each "
        "(default: 1 = no pause, and the operators' default)",
    )
    parser.add_argument(
        "--no-indexed", action="store_true", help="skip the window with the locked_at index"
    )
    parser.add_argument("--quick", action="store_true", help="200,000 jobs, 1 round")
    args = parser.parse_args(argv)
    if args.quick:
        args.jobs, args.backlog, args.rounds, args.window = 200_000, 150_000, 1, 25.0
    if args.jobs < 10_000 or args.backlog < 1000 or args.rounds < 1 or args.window <= 0:
        parser.error("need --jobs >= 10000, --backlog >= 1000, --rounds >= 1, --window > 0")
    return run_cleanly(
        lambda stack: run(args, stack), "the databases were dropped and the workers stopped."
    )


if __name__ == "__main__":
    sys.exit(main())
