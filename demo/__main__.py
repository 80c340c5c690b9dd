"""The airflow-graphile demo, end to end. Run from the repo root: `python -m demo [--keep]`.

1. A temp Airflow home (SQLite), migrated in the background while we:
2. find PostgreSQL (or start a throwaway cluster), create a throwaway database and install
   Graphile Worker's schema with its own CLI;
3. seed jobs (demo/seed.py), start two real workers with the heartbeat plugin, let them fail
   jobs for good and for a retry, and kill -9 worker A while it holds a job and a queue;
4. run the three example DAGs of example_dags/ with dag.test(), printing after each what
   each task did (from its XCom) and the queue as a compact table with what changed:
   graphile_worker_unlock_crashed (demo/rescue.py), graphile_worker_cleanup
   (demo/cleanup.py), graphile_worker_admin as from its trigger form (demo/admin.py);
5. stop worker B and run the cleanup again, now that no worker is alive.

Airflow's own output goes to a log file in the temp home; its path is printed only if
something fails. Everything started here is stopped at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import psycopg

from demo.admin import part_three
from demo.cleanup import finale, part_two
from demo.common import CONN_ID, SCHEMA, VERSION, say
from demo.queue import Names, show_jobs, show_queue
from demo.rescue import part_one
from demo.seed import seed_and_crash
from demo.world import World
from devkit.airflow_home import EXAMPLES_BUNDLE, airflow_env, connection_env, start_migrate
from devkit.dag_runs import load_example_dag
from devkit.graphile import GraphileDB
from devkit.paths import EXAMPLE_DAGS_DIR
from devkit.postgres import PostgresServer, drop_database, postgres_server, unique_name
from devkit.process import Terminated, exit_cleanly_on_sigterm, stop_process

DAG_IDS = ("graphile_worker_unlock_crashed", "graphile_worker_cleanup", "graphile_worker_admin")
# A heartbeat older than this means a dead worker, in the demo (the DAGs' default: 60 s).
DEAD_AFTER = 3.0

INTRO = f"""\
airflow-graphile demo: the provider's three example DAGs, run through Airflow (dag.test()) on a
throwaway Graphile Worker {VERSION} queue in PostgreSQL, worked by real workers with heartbeats.
  1. graphile_worker_unlock_crashed  frees the jobs of a worker killed with kill -9, by heartbeat
  2. graphile_worker_cleanup         the daily cleanup: failed jobs, unused queues and task names
  3. graphile_worker_admin           one action from the trigger form: reschedule, fail, ...
"""


# --- Airflow home ----------------------------------------------------------------------


def configure_airflow(home: Path) -> Path:
    """Point Airflow at a fresh home; must run before anything imports airflow.

    dag.test() runs only DAGs that live in a configured bundle. Returns the log file.
    """
    os.environ.update(
        airflow_env(home, dags_folder=EXAMPLE_DAGS_DIR, bundles={EXAMPLES_BUNDLE: EXAMPLE_DAGS_DIR})
    )
    return home / "airflow.log"


# --- PostgreSQL and Graphile Worker ----------------------------------------------------


def drop_quietly(server: PostgresServer, dbname: str) -> None:
    try:
        drop_database(server, dbname)
        say(f"Dropped database {dbname}.")
    except psycopg.Error as error:
        say(f"Could not drop database {dbname}: {error}")


def new_database(
    stack: contextlib.ExitStack, server: PostgresServer, dbname: str, keep: bool, note: str
) -> GraphileDB:
    """Create a throwaway database (dropped at the end unless kept) with the worker schema,
    and point the Airflow connection CONN_ID (the example DAGs' default) at it."""
    if keep:
        stack.callback(say, f"Kept database {dbname}{note}: {server.dsn(dbname)}")
    else:
        stack.callback(drop_quietly, server, dbname)  # registered first: Ctrl-C may come
    db = GraphileDB.create(server, dbname, VERSION, CONN_ID, SCHEMA)
    os.environ.update(connection_env({CONN_ID: server.airflow_connection(dbname)}))
    return db


# --- Main ------------------------------------------------------------------------------


def demo(keep: bool, log_file: Path) -> bool:
    """Set up, run the three example DAGs and report; return whether every run succeeded."""
    with contextlib.ExitStack() as stack:
        say("SETUP")
        migrate = start_migrate(log_file)
        stack.callback(stop_process, migrate)

        # postgres_server() tells on stderr which server it uses: the demo says it below.
        with contextlib.redirect_stderr(io.StringIO()):
            server = stack.enter_context(postgres_server())
        note = " (but the throwaway cluster goes away now)" if server.throwaway else ""
        db = new_database(stack, server, unique_name("graphile_demo"), keep, note)
        kind = "a throwaway cluster" if server.throwaway else "the running server"
        say(f"  PostgreSQL  {server.host}:{server.port} ({kind}), database {db.dbname}")
        say(
            f"  Graphile    Worker {VERSION}'s schema installed with its own CLI; workers run "
            "its CLI with the heartbeat plugin (worker-plugin/)",
            indent=14,
        )
        say(
            f"  Airflow     connection {CONN_ID} (AIRFLOW_CONN_...) = that database; metadata "
            "database (SQLite, temp AIRFLOW_HOME) migrating meanwhile",
            indent=14,
        )
        names = Names()
        seed, fleet = seed_and_crash(db, stack, names, DEAD_AFTER)
        world = World(db, log_file, names, seed, fleet)
        say()
        snap = world.snapshot()
        say("THE QUEUE BEFORE ANY DAG RUNS")
        show_jobs(snap, names)
        show_queue("", snap, names)
        say()

        if migrate.wait() != 0:
            raise RuntimeError(f"`airflow db migrate` failed with exit code {migrate.returncode}")
        unlock, cleanup, admin = (load_example_dag(dag_id, log_file) for dag_id in DAG_IDS)
        steps = (
            lambda: part_one(world, unlock),
            lambda: part_two(world, cleanup, DEAD_AFTER),
            lambda: part_three(world, admin),
            lambda: finale(world, cleanup),
        )
        for step in steps:
            if not step():
                return False
            say()
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo", description=INTRO)
    parser.add_argument(
        "--keep", action="store_true", help="keep the demo databases and print their DSNs"
    )
    args = parser.parse_args(argv)
    exit_cleanly_on_sigterm()

    started = time.monotonic()
    home = Path(tempfile.mkdtemp(prefix="graphile-demo-airflow-"))
    log_file = configure_airflow(home)
    say(INTRO)
    say()
    succeeded, interrupted = False, 0
    try:
        succeeded = demo(args.keep, log_file)
    except KeyboardInterrupt as signal_received:
        interrupted = 128 + (signal.SIGTERM if isinstance(signal_received, Terminated) else 2)
        say("\nInterrupted: stopped everything the demo had started.")
    except Exception:
        say("\nThe demo failed:")
        traceback.print_exc()
    if succeeded or interrupted:
        shutil.rmtree(home, ignore_errors=True)
    if interrupted:
        return interrupted
    if not succeeded:
        say(f"Airflow's log: {log_file}")
        return 1
    say(f"Done in {time.monotonic() - started:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
