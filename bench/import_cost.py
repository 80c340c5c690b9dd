"""Figure 5: what importing the provider adds to a DAG file's imports.

Run from the repository root: ``.venv/bin/python -m bench.import_cost [--repeat N]``.

A DAG file that uses the provider imports ``airflow.sdk`` and our operators, sensors and
heartbeat sources; the DAG processor pays that at every parse of the file (each in a
fresh process). Measured here: a fresh interpreter each time (a subprocess, this
virtualenv's Python), wall time from start to exit, of

- ``A``: ``python -c "import airflow.sdk"``
- ``B``: ``python -c "import airflow.sdk; import airflow_graphile.operators,
  airflow_graphile.sensors, airflow_graphile.heartbeats"``

alternating A and B (which goes first switches every pair), ``--repeat`` pairs after
two untimed pairs. Reported: the median of the per-pair differences B - A, with its
spread, the ratio B / A, and which modules B loads that A does not (are psycopg or the
Postgres hook among them?). As the start-up of a fresh interpreter that imports Airflow
varies by far more than the difference, B is also run ``--repeat`` more times timing its
provider imports from inside (``time.perf_counter()`` around them, after
``airflow.sdk``): the same cost without the start-up noise. Target: under 50 ms more.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make `bench` and `devkit` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Ratio, Summary, load_note, spread
from devkit.airflow_home import airflow_env
from devkit.paths import REPO_ROOT
from devkit.process import run_cleanly, say

TARGET_MS = 50.0
AIRFLOW_ONLY = "import airflow.sdk"
PROVIDER_IMPORTS = (
    "import airflow_graphile.operators, airflow_graphile.sensors, airflow_graphile.heartbeats"
)
WITH_PROVIDER = "import airflow.sdk; " + PROVIDER_IMPORTS
# B again, also timing its second line from inside (perf_counter around the imports).
WITH_PROVIDER_TIMED = (
    "import time; import airflow.sdk; started = time.perf_counter(); "
    + PROVIDER_IMPORTS
    + "; print((time.perf_counter() - started) * 1000)"
)
HEAVY = ("psycopg", "psycopg2", "sqlalchemy", "sqlparse", "airflow.providers.postgres")
NEW_MODULES = (
    "import sys, json; import airflow.sdk; before = set(sys.modules); " + WITH_PROVIDER + "; "
    "print(json.dumps(sorted(set(sys.modules) - before)))"
)


def timed(code: str, env: dict[str, str]) -> tuple[float, str]:
    """Seconds from spawning ``python -c code`` to its exit, and what it printed."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return time.perf_counter() - started, result.stdout


def new_modules(env: dict[str, str]) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", NEW_MODULES],
        env=env,
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    modules: list[str] = json.loads(result.stdout.strip().splitlines()[-1])
    return modules


def run(args: argparse.Namespace, home: Path) -> dict[str, Any]:
    env = {**os.environ, **airflow_env(home)}
    say("MACHINE")
    say(f"  CPUs (nproc): {os.cpu_count()}   {load_note()}")
    say(f"  Python {sys.version.split()[0]} at {Path(sys.executable).name} (this virtualenv)")
    say()
    for _ in range(2):  # untimed: the first run writes airflow.cfg; warms the page cache
        timed(AIRFLOW_ONLY, env)
        timed(WITH_PROVIDER, env)
    added = new_modules(env)
    ours = [name for name in added if name.split(".")[0] == "airflow_graphile"]
    heavy = [name for name in added if name.startswith(HEAVY)]
    say("SETUP")
    say(
        f"  B loads {len(added)} modules that A does not: {len(ours)} of airflow_graphile, "
        f"{len(added) - len(ours)} others"
        + (f"; heavy ones: {', '.join(heavy[:8])}" if heavy else "; none of " + ", ".join(HEAVY))
    )
    others = [name for name in added if name.split(".")[0] != "airflow_graphile"]
    if others:
        say(f"  the others: {', '.join(others[:20])}" + (" ..." if len(others) > 20 else ""))
    say()

    say(
        f"MEASURE  {args.repeat} pairs (A, B), alternating which goes first; then "
        f"{args.repeat} more fresh interpreters of B that time their provider imports "
        "from inside"
    )
    only: list[float] = []
    both: list[float] = []
    for number in range(args.repeat):
        if number % 2 == 0:
            only.append(timed(AIRFLOW_ONLY, env)[0])
            both.append(timed(WITH_PROVIDER, env)[0])
        else:
            both.append(timed(WITH_PROVIDER, env)[0])
            only.append(timed(AIRFLOW_ONLY, env)[0])
    inside = Summary.of(
        [float(timed(WITH_PROVIDER_TIMED, env)[1].split()[-1]) for _ in range(args.repeat)]
    )
    say(f"  {load_note()}")
    say()

    ratio = Ratio.of(both, only)
    difference = Summary.of([(b - a) * 1000 for a, b in zip(only, both, strict=True)])
    say("RESULT  seconds per fresh interpreter: median (min-max)")
    say(f"  A  import airflow.sdk                       {spread(ratio.baseline, ' s', 3)}")
    say(f"  B  + operators, sensors, heartbeats         {spread(ratio.variant, ' s', 3)}")
    say(f"  B / A (per pair)                            {spread(ratio.ratio, 'x', 3)}")
    say(
        f"  B - A (per pair)                            {spread(difference, ' ms', 0)}; "
        f"median of the medians' difference "
        f"{(ratio.variant.median - ratio.baseline.median) * 1000:.0f} ms"
    )
    say(f"  the provider's imports timed inside B (after airflow.sdk): {spread(inside, ' ms', 1)}")
    say(
        f"  target < {TARGET_MS:.0f} ms more: "
        + ("met" if difference.median < TARGET_MS else "MISSED")
        + f" by the wall-clock pairs; {'met' if inside.median < TARGET_MS else 'MISSED'} by "
        "the in-process timing (start-up noise of a 2-3 s interpreter is much larger "
        "than the difference: compare the spreads)"
    )
    return {
        "difference_ms": difference.median,
        "inside_ms": inside.median,
        "ratio": ratio.ratio.median,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.import_cost",
        description="Extra import time of the provider in a DAG file, fresh interpreters.",
    )
    parser.add_argument("--repeat", type=int, default=30, help="timed pairs")
    parser.add_argument("--quick", action="store_true", help="8 pairs")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 8
    if args.repeat < 2:
        parser.error("--repeat must be at least 2")

    def body(stack: ExitStack) -> None:
        home = Path(tempfile.mkdtemp(prefix="bench-import-"))
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        run(args, home)

    return run_cleanly(body, "the temp Airflow home was removed.")


if __name__ == "__main__":
    sys.exit(main())
