"""Run every benchmark of the suite, one after the other: ``.venv/bin/python -m bench``.

Each runs in its own Python process (``python -m bench.<name>``), so each sets up its own
Airflow home and connections before Airflow is imported. ``--quick`` runs smaller sizes
(a few minutes in all, for checking that everything works; the figures in BENCHMARKS.md
come from the full sizes). ``--only a,b`` or ``--skip a,b`` choose benchmarks by name.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.paths import REPO_ROOT
from devkit.process import Terminated, exit_cleanly_on_sigterm, say

# name: (what it measures, full-size arguments, --quick arguments)
SUITE: dict[str, tuple[str, list[str], list[str]]] = {
    "import_cost": ("5. import cost of the provider in a DAG file", [], ["--quick"]),
    "bulk_by_ids": ("1. 100,000 jobs by id: ours vs raw SQL and others", [], ["--quick"]),
    "bulk_by_filter": ("2. 500,000 of 1,000,000 jobs by filter vs one UPDATE", [], ["--quick"]),
    "worker_throughput": ("3. a live worker's throughput during (2)", [], ["--quick"]),
    "queue_stats": ("4. queue_stats() and the poke on 1,000,000 jobs", [], ["--quick"]),
    "stuck_locks_poke": (
        "the stuck-lock poke in detail",
        [],
        ["--jobs", "100000", "--repeat", "5"],
    ),
    "rescue_time": (
        "crash rescue, both rescue DAGs: kill -9 to jobs running again; runs per healthy hour",
        [],
        ["--trials", "1", "--healthy-minutes", "1"],
    ),
}


def names(text: str) -> list[str]:
    chosen = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(SUITE))
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(SUITE)}"
        )
    return chosen


def run_one(name: str, arguments: list[str]) -> int:
    """Run ``python -m bench.<name>``; on Ctrl-C or SIGTERM stop it and let it clean up."""
    child = subprocess.Popen([sys.executable, "-m", f"bench.{name}", *arguments], cwd=REPO_ROOT)
    try:
        return child.wait()
    except KeyboardInterrupt:
        # Ctrl-C reached the child too (same process group); SIGTERM did not.
        if isinstance(sys.exc_info()[1], Terminated) and child.poll() is None:
            child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=180)
        except subprocess.TimeoutExpired:
            child.kill()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the airflow-graphile benchmark suite."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes")
    parser.add_argument("--only", type=names, default=None, help="comma-separated names")
    parser.add_argument("--skip", type=names, default=[], help="comma-separated names")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, (what, _full, _quick) in SUITE.items():
            say(f"{name:<18} {what}")
        return 0
    chosen = [n for n in (args.only or list(SUITE)) if n not in args.skip]
    exit_cleanly_on_sigterm()
    results: dict[str, tuple[int, float]] = {}
    try:
        for name in chosen:
            what, full, quick = SUITE[name]
            arguments = quick if args.quick else full
            say(f"\n===== bench.{name} {' '.join(arguments)}: {what} =====\n")
            started = time.monotonic()
            results[name] = (run_one(name, arguments), time.monotonic() - started)
    except KeyboardInterrupt:
        say("\nInterrupted.")
        return 130
    say("\n===== summary =====")
    for name, (code, seconds) in results.items():
        say(f"  {name:<18} {'ok' if code == 0 else f'FAILED ({code})':<12} {seconds:7.0f} s")
    return 0 if all(code == 0 for code, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
