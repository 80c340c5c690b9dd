"""Run the real Graphile Worker versions installed under graphile/node_modules.

Each version is an npm alias (graphile-worker-0.16 etc., see graphile/package.json),
installed with `npm ci --prefix graphile` (or `make node`). `GraphileDB` is a database
with one version's schema, installed by that version's own CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
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

from devkit.paths import GRAPHILE_DIR, GRAPHILE_TASKS_DIR, REPO_ROOT
from devkit.postgres import PostgresServer, create_database, drop_database
from devkit.process import wait_for
from devkit.versions import (
    DEFAULT_HEARTBEAT_SCHEMA,
    DEFAULT_HEARTBEAT_TABLE,
    DEFAULT_SCHEMA,
    PACKAGES,
    VERSIONS,
)

CLEANUP_SCRIPT = GRAPHILE_DIR / "scripts" / "cleanup.mjs"
# Graphile config (passed with `-C`) that enables the heartbeat plugin of worker-plugin/,
# with its options from HEARTBEAT_SCHEMA, HEARTBEAT_TABLE and HEARTBEAT_INTERVAL_MS.
HEARTBEAT_CONFIG = GRAPHILE_TASKS_DIR / "heartbeat.graphile.config.cjs"

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


def run_node(args: Sequence[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``node args...`` in ``cwd``; return the result with its output, never raise."""
    return subprocess.run(
        [node_binary(), *args], cwd=cwd, capture_output=True, text=True, check=False
    )


def install_schema(dsn: str, version: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Install or upgrade the worker schema with the version's CLI (`--schema-only`)."""
    result = run_node(
        [str(cli_path(version)), "-c", dsn, "--schema-only", "-s", schema], GRAPHILE_TASKS_DIR
    )
    if result.returncode != 0:
        raise GraphileError(f"schema install of {version} failed: {failure_text(result)}")


def run_cli_cleanup(
    dsn: str, version: str, tasks: Sequence[str], schema: str = DEFAULT_SCHEMA
) -> subprocess.CompletedProcess[str]:
    """Run the CLI's `--cleanup A,B` (it migrates first); return the result, never raise."""
    args = [str(cli_path(version)), "-c", dsn, "-s", schema, "--cleanup", ",".join(tasks)]
    with tempfile.TemporaryDirectory(prefix="gw-cleanup-") as cwd:
        (Path(cwd) / "tasks").mkdir()
        return run_node(args, Path(cwd))


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
    result = run_node([str(CLEANUP_SCRIPT), PACKAGES[version], json.dumps(options)], GRAPHILE_DIR)
    if result.returncode != 0:
        raise GraphileError(f"library cleanup of {version} failed: {failure_text(result)}")


class WorkerProcess:
    """A real Graphile Worker (`node cli.js`) running the task files of graphile_tasks/tasks.

    Starts on construction. Use as a context manager, or call `stop()`/`kill()`.

    With `heartbeat=True` the worker loads the heartbeat plugin (worker-plugin/) through
    `-C graphile_tasks/heartbeat.graphile.config.cjs`: it creates
    `heartbeat_schema.heartbeat_table` if needed, holds a lease (an advisory lock) per
    locker id (the id in `locked_by`) on a connection of its own, beats its row every
    `heartbeat_interval_ms` from a thread, and deletes it on a graceful stop.
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
                cwd=GRAPHILE_TASKS_DIR,
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

    def wait(self, predicate: Callable[[], T], timeout: float, what: str) -> T:
        """`wait_for(predicate)`; on timeout the TimeoutError holds this worker's output."""
        try:
            return wait_for(predicate, timeout=timeout, what=what)
        except TimeoutError as error:
            raise TimeoutError(f"{error}; the worker's output:\n{self.log_text()}") from None

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def schema_revision(dsn: str, schema: str = DEFAULT_SCHEMA) -> int:
    """The revision of the installed Graphile Worker schema: max(id) of <schema>.migrations."""
    query = sql.SQL("select max(id) from {}.migrations").format(sql.Identifier(schema))
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    if row is None or row[0] is None:
        raise GraphileError(f"no Graphile Worker migrations in schema {schema!r}")
    return int(row[0])


@dataclass
class GraphileDB:
    """A database with one Graphile Worker version's schema installed.

    ``conn_id`` is the Airflow connection that points at it (set by whoever made it).
    Made by `create()`, it is also a context manager that drops the database at the end.
    """

    dsn: str
    version: str
    dbname: str
    schema: str
    revision: int
    conn_id: str
    connections: list[psycopg.Connection[Any]] = field(default_factory=list, repr=False)
    # The server it was created on by `create()`, which drops it on leaving a `with` block.
    server: PostgresServer | None = field(default=None, repr=False)

    @classmethod
    def create(
        cls,
        server: PostgresServer,
        dbname: str,
        version: str,
        conn_id: str,
        schema: str = DEFAULT_SCHEMA,
        template: str | None = None,
    ) -> GraphileDB:
        """Create the database, as a copy of ``template`` (which already holds the schema)
        or empty with the version's schema installed by its CLI.

        Use the result in a ``with`` block to drop the database at its end; otherwise
        dropping it is up to the caller (`drop_database`). If the schema cannot be
        installed, the new database is dropped before the error is raised.
        """
        create_database(server, dbname, template=template)
        dsn = server.dsn(dbname)
        try:
            if template is None:
                install_schema(dsn, version, schema)
            revision = schema_revision(dsn, schema)
        except BaseException:
            drop_database(server, dbname)
            raise
        return cls(dsn, version, dbname, schema, revision, conn_id, server=server)

    def __enter__(self) -> GraphileDB:
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the connections of `connect()`; drop the database if `create()` made it."""
        self.close_connections()
        if self.server is not None:
            drop_database(self.server, self.dbname)

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

    def wait_locked(self, job_id: int, timeout: float = 30.0) -> str:
        """Wait until a worker locks the job; return its locker id (`locked_by`)."""
        return str(
            wait_for(
                lambda: self.jobs()[job_id]["locked_by"],
                timeout=timeout,
                what=f"job {job_id} locked",
            )
        )

    def empty(self) -> None:
        """Remove every job and queue, and the heartbeat plugin's table (workers recreate it)."""
        for table in ("_private_jobs", "_private_job_queues"):
            self.query(sql.SQL("delete from {}").format(sql.Identifier(self.schema, table)))
        self.query(
            sql.SQL("drop table if exists {}").format(
                sql.Identifier(DEFAULT_HEARTBEAT_SCHEMA, DEFAULT_HEARTBEAT_TABLE)
            )
        )

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
