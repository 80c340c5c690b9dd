"""Find a PostgreSQL server for the tests, the demo and the benchmarks, or start a throwaway one.

Order of discovery in `postgres_server()`:

1. `AIRFLOW_GRAPHILE_TEST_DSN`: a libpq URI; the server it points at is used.
2. The libpq variables `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, if any is set
   (defaults for the others: 127.0.0.1, 5432, postgres, no password).
3. 127.0.0.1:5432 as user postgres.

If 1 or 2 is given but the server does not answer, that is an error. If nothing is
given and 3 does not answer, a throwaway cluster is started with `initdb`/`pg_ctl`
in a temp folder (as the `postgres` user when running as root) and removed at exit.

`AIRFLOW_GRAPHILE_TEST_THROWAWAY=1` skips discovery and always starts a throwaway
cluster.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from devkit.ports import free_port
from devkit.process import log

DSN_ENV = "AIRFLOW_GRAPHILE_TEST_DSN"
THROWAWAY_ENV = "AIRFLOW_GRAPHILE_TEST_THROWAWAY"
LIBPQ_ENVS = ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD")
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
CONNECT_TIMEOUT = 3


@dataclass(frozen=True)
class PostgresServer:
    """Where a PostgreSQL server listens and who to log in as.

    ``throwaway`` is true for a cluster started by `throwaway_cluster()`, which goes away
    when its block ends.
    """

    host: str
    port: int
    user: str
    password: str | None
    throwaway: bool = False

    def dsn(self, dbname: str) -> str:
        """Return a libpq URI for one database of this server."""
        host = self.host
        if host.startswith("/"):
            host = quote(host, safe="")
        elif ":" in host:
            host = f"[{host}]"
        auth = quote(self.user, safe="")
        if self.password is not None:
            auth += ":" + quote(self.password, safe="")
        return f"postgresql://{auth}@{host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def admin_dsn(self) -> str:
        """The URI of the `postgres` database, for creating and dropping others."""
        return self.dsn("postgres")

    def sqlalchemy_url(self, dbname: str) -> str:
        """The SQLAlchemy URL (psycopg2 driver) of one database, for Airflow's metadata."""
        return "postgresql+psycopg2://" + self.dsn(dbname).removeprefix("postgresql://")

    def airflow_connection(self, dbname: str, conn_type: str = "graphile_worker") -> dict[str, Any]:
        """An Airflow connection to one database of this server, as JSON fields."""
        return {
            "conn_type": conn_type,
            "host": self.host,
            "port": self.port,
            "login": self.user,
            "password": self.password,
            "schema": dbname,
        }


def is_reachable(server: PostgresServer) -> bool:
    """Tell whether a connection to the `postgres` database succeeds."""
    try:
        with psycopg.connect(server.admin_dsn, connect_timeout=CONNECT_TIMEOUT):
            return True
    except psycopg.Error:
        return False


def server_from_dsn(dsn: str) -> PostgresServer:
    """Build a PostgresServer from a libpq URI or key=value string."""
    params = conninfo_to_dict(dsn)
    return PostgresServer(
        host=str(params.get("host") or DEFAULT_HOST),
        port=int(params.get("port") or DEFAULT_PORT),
        user=str(params.get("user") or DEFAULT_USER),
        password=None if params.get("password") is None else str(params["password"]),
    )


def server_from_libpq_env() -> PostgresServer:
    """Build a PostgresServer from the PG* variables, with our defaults."""
    return PostgresServer(
        host=os.environ.get("PGHOST") or DEFAULT_HOST,
        port=int(os.environ.get("PGPORT") or DEFAULT_PORT),
        user=os.environ.get("PGUSER") or DEFAULT_USER,
        password=os.environ.get("PGPASSWORD"),
    )


def describe(server: PostgresServer) -> str:
    """Describe a server for log and error messages (no password)."""
    return f"{server.host}:{server.port} as {server.user}"


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yield a reachable server; a throwaway cluster lives until the block ends."""
    if os.environ.get(THROWAWAY_ENV) == "1":
        log(f"{THROWAWAY_ENV}=1: starting a throwaway cluster")
        with throwaway_cluster() as server:
            yield server
        return

    explicit: tuple[str, PostgresServer] | None = None
    if os.environ.get(DSN_ENV):
        explicit = (DSN_ENV, server_from_dsn(os.environ[DSN_ENV]))
    elif any(os.environ.get(name) for name in LIBPQ_ENVS):
        explicit = ("PGHOST/PGPORT/PGUSER/PGPASSWORD", server_from_libpq_env())

    if explicit is not None:
        source, server = explicit
        if not is_reachable(server):
            raise RuntimeError(
                f"PostgreSQL at {describe(server)} (from {source}) is not reachable; "
                f"fix {source}, or unset it to fall back to 127.0.0.1:5432 or a "
                "throwaway cluster"
            )
        log(f"using PostgreSQL at {describe(server)} (from {source})")
        yield server
        return

    server = PostgresServer(DEFAULT_HOST, DEFAULT_PORT, DEFAULT_USER, None)
    if is_reachable(server):
        log(f"using PostgreSQL at {describe(server)} (default)")
        yield server
        return

    log(f"no PostgreSQL at {describe(server)}: starting a throwaway cluster")
    with throwaway_cluster() as server:
        yield server


def find_bindir() -> Path:
    """Find the folder that holds initdb and pg_ctl."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).parent
    if shutil.which("pg_config"):
        result = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=False
        )
        bindir = Path(result.stdout.strip())
        if result.returncode == 0 and (bindir / "initdb").exists():
            return bindir

    def major(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major, reverse=True):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "no reachable PostgreSQL and no initdb/pg_ctl found (PATH, pg_config --bindir, "
        f"/usr/lib/postgresql/*/bin); install PostgreSQL or set {DSN_ENV}"
    )


@contextmanager
def throwaway_cluster() -> Iterator[PostgresServer]:
    """Run a fast, non-durable cluster in a temp folder; remove it afterwards."""
    bindir = find_bindir()
    pg_ctl = str(bindir / "pg_ctl")
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    base = Path(tempfile.mkdtemp(prefix="airflow-graphile-pg-"))
    data = base / "data"
    sockets = base / "sockets"
    log_file = data / "server.log"

    def run(args: list[str], check: bool = True) -> None:
        result = subprocess.run(
            prefix + args, cwd=base, capture_output=True, text=True, check=False
        )
        if result.returncode != 0 and check:
            server_log = log_file.read_text() if log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{server_log}"
            )

    started = False
    try:
        if as_root:
            base.chmod(0o755)
            for folder in (data, sockets):
                subprocess.run(
                    ["install", "-d", "-o", "postgres", "-g", "postgres", "-m", "700", folder],
                    check=True,
                )
        else:
            data.mkdir(mode=0o700)
            sockets.mkdir(mode=0o700)
        run(
            [
                str(bindir / "initdb"),
                "-D", str(data),
                "-A", "trust",
                "-U", DEFAULT_USER,
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )  # fmt: skip
        port = free_port()
        options = (
            f"-p {port} -k {sockets} -c listen_addresses={DEFAULT_HOST} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        run([pg_ctl, "-D", str(data), "-l", str(log_file), "-w", "-o", options, "start"])
        started = True
        server = PostgresServer(DEFAULT_HOST, port, DEFAULT_USER, None, throwaway=True)
        if not is_reachable(server):
            raise RuntimeError(f"throwaway cluster started but {describe(server)} refuses")
        log(f"using throwaway PostgreSQL at {describe(server)} in {base}")
        yield server
    finally:
        if started:
            run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], check=False)
        shutil.rmtree(base, ignore_errors=True)


def admin_connect(server: PostgresServer) -> psycopg.Connection:
    """Open an autocommit connection to the `postgres` database."""
    return psycopg.connect(server.admin_dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT)


def unique_name(prefix: str, length: int = 8) -> str:
    """A database name no one else uses: ``prefix`` and ``length`` random hex digits."""
    return f"{prefix}_{uuid.uuid4().hex[:length]}"


def create_database(
    server: PostgresServer, name: str, template: str | None = None, file_copy: bool = False
) -> None:
    """Create a database, optionally as a copy of `template` (which must be idle).

    With ``file_copy`` the copy is made with ``STRATEGY FILE_COPY`` (PostgreSQL 15+).
    """
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    if file_copy:
        query = sql.SQL("{} STRATEGY FILE_COPY").format(query)
    with admin_connect(server) as conn:
        conn.execute(query)


def clone_database(server: PostgresServer, template: str, name: str) -> float:
    """Copy ``template`` to a new database ``name`` with FILE_COPY; return the seconds.

    FILE_COPY copies the files (no WAL for the data) between two checkpoints, so every
    copy starts from the same state: same pages, hint bits, statistics and an empty
    WAL backlog. The template must have no open connection.
    """
    started = time.monotonic()
    create_database(server, name, template=template, file_copy=True)
    return time.monotonic() - started


@contextmanager
def temporary_copy(server: PostgresServer, template: str, prefix: str) -> Iterator[str]:
    """A FILE_COPY of ``template`` for the block (`clone_database`), dropped at its end.

    Yields the copy's name, made of ``prefix`` and random hex digits.
    """
    name = unique_name(prefix)
    clone_database(server, template, name)
    try:
        yield name
    finally:
        drop_database(server, name)


def drop_database(server: PostgresServer, name: str) -> None:
    """Drop a database if it exists, ending its sessions."""
    with admin_connect(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
