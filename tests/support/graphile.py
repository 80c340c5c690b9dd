"""Run the real Graphile Worker versions installed under graphile/node_modules.

Each version is an npm alias (graphile-worker-0.16 etc., see graphile/package.json),
installed with `npm ci --prefix graphile` (or `make node`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Json

REPO_ROOT = Path(__file__).resolve().parents[2]
GRAPHILE_DIR = REPO_ROOT / "graphile"
CLEANUP_SCRIPT = GRAPHILE_DIR / "scripts" / "cleanup.mjs"
# The worker's cwd: Graphile Worker loads task files from ./tasks.
TASKS_CWD = REPO_ROOT / "tests" / "graphile_tasks"
# Graphile config (passed with `-C`) that enables the heartbeat plugin of worker-plugin/,
# with its options from HEARTBEAT_SCHEMA, HEARTBEAT_TABLE and HEARTBEAT_INTERVAL_MS.
HEARTBEAT_CONFIG = TASKS_CWD / "heartbeat.graphile.config.cjs"
DEFAULT_HEARTBEAT_SCHEMA = "public"
DEFAULT_HEARTBEAT_TABLE = "graphile_worker_heartbeats"

VERSIONS: tuple[str, ...] = ("0.16.6", "0.17.3", "0.18.0")
# 0.15.1 is installed only to check that a schema older than 0.16 is refused.
OLD_VERSION = "0.15.1"
PACKAGES: dict[str, str] = {
    OLD_VERSION: "graphile-worker-0.15",
    "0.16.6": "graphile-worker-0.16",
    "0.17.3": "graphile-worker-0.17",
    "0.18.0": "graphile-worker-0.18",
}
# Schema revision (max(id) of <schema>.migrations) that each version installs.
REVISIONS: dict[str, int] = {"0.16.6": 18, "0.17.3": 19, "0.18.0": 20}
DEFAULT_SCHEMA = "graphile_worker"

T = TypeVar("T")


class GraphileError(RuntimeError):
    """A Graphile Worker command failed or is not installed."""


def node_binary() -> str:
    """Return the path of `node`, or raise if it is not installed."""
    node = shutil.which("node")
    if node is None:
        raise GraphileError("`node` is not on PATH; install Node.js 20 or newer")
    return node


def package_dir(version: str) -> Path:
    """Return the installed package folder of a version."""
    if version not in PACKAGES:
        raise ValueError(f"unknown Graphile Worker version {version!r}; known: {VERSIONS}")
    return GRAPHILE_DIR / "node_modules" / PACKAGES[version]


@cache
def cli_path(version: str) -> Path:
    """Return the CLI script of a version, checking that the right version is installed."""
    folder = package_dir(version)
    cli = folder / "dist" / "cli.js"
    if not cli.exists():
        raise GraphileError(
            f"{cli.relative_to(REPO_ROOT)} is missing: run `npm ci --prefix graphile` "
            "(or `make node`) in the repository root"
        )
    installed = json.loads((folder / "package.json").read_text())["version"]
    if installed != version:
        raise GraphileError(
            f"{folder.name} holds graphile-worker {installed}, expected {version}: "
            "run `npm ci --prefix graphile`"
        )
    return cli


def failure_text(result: subprocess.CompletedProcess[str]) -> str:
    """Format a failed command with its output."""
    return (
        f"`{' '.join(str(arg) for arg in result.args)}` exited {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )


def install_schema(dsn: str, version: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Install or upgrade the worker schema with the version's CLI (`--schema-only`)."""
    result = subprocess.run(
        [node_binary(), str(cli_path(version)), "-c", dsn, "--schema-only", "-s", schema],
        cwd=TASKS_CWD,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise GraphileError(f"schema install of {version} failed: {failure_text(result)}")


def run_cli_cleanup(
    dsn: str, version: str, tasks: Sequence[str], schema: str = DEFAULT_SCHEMA
) -> subprocess.CompletedProcess[str]:
    """Run the CLI's `--cleanup A,B` (it migrates first); return the result, never raise."""
    args = [node_binary(), str(cli_path(version)), "-c", dsn, "-s", schema]
    with tempfile.TemporaryDirectory(prefix="gw-cleanup-") as cwd:
        (Path(cwd) / "tasks").mkdir()
        return subprocess.run(
            [*args, "--cleanup", ",".join(tasks)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )


def run_library_cleanup(
    dsn: str,
    version: str,
    tasks: Sequence[str],
    task_identifiers_to_keep: Sequence[str] = (),
    schema: str = DEFAULT_SCHEMA,
) -> None:
    """Run `WorkerUtils.cleanup({tasks, taskIdentifiersToKeep})` of a version.

    Note: the library, unlike the CLI, does not reject unknown task names.
    """
    cli_path(version)  # checks the install
    options = {
        "connectionString": dsn,
        "schema": schema,
        "tasks": list(tasks),
        "taskIdentifiersToKeep": list(task_identifiers_to_keep),
    }
    result = subprocess.run(
        [node_binary(), str(CLEANUP_SCRIPT), PACKAGES[version], json.dumps(options)],
        cwd=GRAPHILE_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise GraphileError(f"library cleanup of {version} failed: {failure_text(result)}")


def wait_for(
    predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "condition"
) -> T:
    """Call `predicate` until it returns a truthy value; return it, or raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} not met within {timeout} s")
        time.sleep(interval)


class WorkerProcess:
    """A real Graphile Worker (`node cli.js`) running tests/graphile_tasks/tasks.

    Starts on construction. Use as a context manager, or call `stop()`/`kill()`.

    With `heartbeat=True` the worker loads the heartbeat plugin (worker-plugin/) through
    `-C tests/graphile_tasks/heartbeat.graphile.config.cjs`: it creates
    `heartbeat_schema.heartbeat_table` if needed, upserts one row per locker id (the id
    in `locked_by`) every `heartbeat_interval_ms`, and deletes it on a graceful stop.
    """

    def __init__(
        self,
        dsn: str,
        version: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        jobs: int = 1,
        poll_interval: int = 200,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        heartbeat: bool = False,
        heartbeat_interval_ms: int = 1000,
        heartbeat_table: str = DEFAULT_HEARTBEAT_TABLE,
        heartbeat_schema: str = DEFAULT_HEARTBEAT_SCHEMA,
    ) -> None:
        self.version = version
        self.owns_log = log_path is None
        if log_path is None:
            handle, name = tempfile.mkstemp(prefix="gw-worker-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        self.log_path = log_path
        self.final_log: str | None = None
        args = [
            node_binary(),
            str(cli_path(version)),
            "-c", dsn,
            "-s", schema,
            "--jobs", str(jobs),
            "--poll-interval", str(poll_interval),
            *extra_args,
        ]  # fmt: skip
        env: dict[str, str] | None = None
        if heartbeat:
            args += ["--config", str(HEARTBEAT_CONFIG)]
            env = {
                **os.environ,
                "HEARTBEAT_SCHEMA": heartbeat_schema,
                "HEARTBEAT_TABLE": heartbeat_table,
                "HEARTBEAT_INTERVAL_MS": str(heartbeat_interval_ms),
            }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                args,
                cwd=TASKS_CWD,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        """The node process id."""
        return self.process.pid

    def running(self) -> bool:
        """Tell whether the process is still alive."""
        return self.process.poll() is None

    def kill(self) -> int:
        """Crash the worker with SIGKILL; return the exit code."""
        if self.running():
            os.killpg(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        self.finish()
        return code

    def stop(self, timeout: float = 10.0) -> int:
        """Shut down gracefully (SIGTERM); SIGKILL after `timeout` s; return the exit code."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        code = self.process.wait()
        self.finish()
        return code

    def finish(self) -> None:
        """Keep the log in memory and remove a log file we created."""
        if self.final_log is None:
            self.final_log = self.log_path.read_text(errors="replace")
            if self.owns_log:
                self.log_path.unlink(missing_ok=True)

    def log_text(self) -> str:
        """Return the worker's stdout and stderr so far."""
        if self.final_log is not None:
            return self.final_log
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass
class GraphileDB:
    """A fresh test database with one Graphile Worker version's schema installed."""

    dsn: str
    version: str
    dbname: str
    schema: str
    revision: int
    conn_id: str
    connections: list[psycopg.Connection[Any]] = field(default_factory=list, repr=False)

    def connect(self) -> psycopg.Connection[Any]:
        """Open a new autocommit connection (closed by the caller or at teardown)."""
        conn = psycopg.connect(self.dsn, autocommit=True)
        self.connections.append(conn)
        return conn

    def close_connections(self) -> None:
        """Close every connection opened by `connect()`."""
        for conn in self.connections:
            conn.close()
        self.connections.clear()

    def query(self, query: sql.Composed, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Run one statement on a short-lived connection; return its rows as dicts."""
        with (
            psycopg.connect(self.dsn, autocommit=True) as conn,
            conn.cursor(row_factory=dict_row) as cur,
        ):
            cur.execute(query, params)
            return cur.fetchall() if cur.description else []

    def add_job(
        self,
        task: str,
        payload: dict[str, Any] | None = None,
        *,
        queue: str | None = None,
        run_at: datetime | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
    ) -> int:
        """Add a job with the SQL function `add_job`; return its id."""
        args = [sql.SQL("%s::text")]
        params: list[Any] = [task]
        named = [
            ("payload", "json", None if payload is None else Json(payload)),
            ("queue_name", "text", queue),
            ("run_at", "timestamptz", run_at),
            ("max_attempts", "int", max_attempts),
            ("priority", "int", priority),
        ]
        for name, type_name, value in named:
            if value is not None:
                args.append(sql.SQL(f"{name} => %s::{type_name}"))
                params.append(value)
        query = sql.SQL("select id from {}.add_job({})").format(
            sql.Identifier(self.schema), sql.SQL(", ").join(args)
        )
        return int(self.query(query, params)[0]["id"])

    def table_rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        """Return all rows of one worker table as dicts."""
        query = sql.SQL("select * from {}.{} order by {}").format(
            sql.Identifier(self.schema), sql.Identifier(table), sql.Identifier(order_by)
        )
        return self.query(query)

    def jobs(self) -> dict[int, dict[str, Any]]:
        """All rows of `_private_jobs`, keyed by id."""
        return {row["id"]: row for row in self.table_rows("_private_jobs", "id")}

    def queues(self) -> dict[str, dict[str, Any]]:
        """All rows of `_private_job_queues`, keyed by queue_name."""
        rows = self.table_rows("_private_job_queues", "id")
        return {row["queue_name"]: row for row in rows}

    def tasks(self) -> set[str]:
        """The identifiers in `_private_tasks`."""
        return {row["identifier"] for row in self.table_rows("_private_tasks", "id")}

    def heartbeats(
        self, table: str = DEFAULT_HEARTBEAT_TABLE, schema: str = DEFAULT_HEARTBEAT_SCHEMA
    ) -> dict[str, dict[str, Any]]:
        """Rows of the heartbeat plugin's table keyed by locker_id ({} while it does not exist)."""
        query = sql.SQL("select * from {}.{} order by locker_id").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        try:
            rows = self.query(query)
        except psycopg.errors.UndefinedTable:
            return {}
        return {row["locker_id"]: row for row in rows}
