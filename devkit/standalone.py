"""Run a real `airflow standalone` (api-server, scheduler, dag-processor, triggerer) and talk
to its REST API v2.

Only a few things here are not obvious:

- The child environment is built from scratch: the in-process tests set AIRFLOW_HOME, a
  bundle list and a SQLite path at import (tests/conftest.py), and none of that may leak in.
  `standalone_settings()` gives what every standalone here needs.
- `[api] base_url` must be set along with the port: the execution API URL that tasks call
  defaults to http://localhost:8080/execution/ whatever `[api] port` says.
- The worker and triggerer log servers listen on fixed ports (8793, 8794) unless told
  otherwise, and may be taken by another Airflow on the machine.
- Stopping: SIGINT to the standalone process alone. It then stops its components with
  SIGTERM and waits for them. SIGINT to the whole process group also reaches the
  scheduler directly, which then hangs in the LocalExecutor's shutdown (seen every time
  on Airflow 3.3.2). SIGTERM to the standalone process orphans the components.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import requests

from devkit.airflow_home import connection_env
from devkit.ports import LOOPBACK, free_port
from devkit.postgres import PostgresServer
from devkit.process import log, processes_with_env

HEALTH_COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
FINISHED_RUN_STATES = {"success", "failed"}


def standalone_settings(
    server: PostgresServer,
    metadata_db: str,
    dags_folder: Path,
    connections: Mapping[str, Mapping[str, Any]],
    **extra: str,
) -> dict[str, str]:
    """The settings of a standalone: metadata in ``metadata_db`` of ``server``, free ports.

    No login (every user is an admin); the DAG folder is looked at every few seconds;
    ``connections`` (id -> fields) become ``AIRFLOW_CONN_`` variables; ``extra`` settings
    (``AIRFLOW__...`` names) are added last.
    """
    port = free_port()
    base_url = f"http://{LOOPBACK}:{port}"
    return {
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # no login, API or UI
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": server.sqlalchemy_url(metadata_db),
        "AIRFLOW__API__HOST": LOOPBACK,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        # Fixed by default (8793, 8794): free ones, in case another Airflow runs here.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Pick the DAG folder up fast.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
        **connection_env(connections),
        **extra,
    }


class Standalone:
    """`airflow standalone` in its own AIRFLOW_HOME and session, stopped by `stop()`."""

    def __init__(self, home: Path, settings: Mapping[str, str]) -> None:
        self.home = home
        self.port = int(settings["AIRFLOW__API__PORT"])
        self.base_url = f"http://{LOOPBACK}:{self.port}"
        self.log_path = home / "standalone.log"
        bindir = Path(sys.executable).parent
        airflow = bindir / "airflow"
        if not airflow.exists():
            raise RuntimeError(f"`airflow` is not installed next to {sys.executable}")
        self.env = {
            # The components are started as `airflow ...` from PATH: ours first.
            "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": os.environ.get("HOME", str(home)),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "TZ": "UTC",
            "PYTHONUNBUFFERED": "1",
            "NO_COLOR": "1",
            "AIRFLOW_HOME": str(home),
            **settings,
        }
        self.started = time.monotonic()
        with self.log_path.open("wb") as out:
            self.process = subprocess.Popen(
                [str(airflow), "standalone"],
                env=self.env,
                cwd=home,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # pytest may run with SIGINT ignored or handled: standalone needs the default.
                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
            )

    def log_tail(self, lines: int = 60) -> str:
        """The last lines of the standalone's output (all of its components)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def check_alive(self) -> None:
        """Raise, with the end of its log, if the standalone process has exited."""
        if self.process.poll() is not None:
            raise RuntimeError(
                f"airflow standalone exited with {self.process.returncode}:\n{self.log_tail()}"
            )

    def wait_healthy(self, timeout: float) -> dict[str, Any]:
        """Wait until /api/v2/monitor/health reports every component healthy."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                response = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                last = response.json() if response.ok else response.status_code
            except (requests.RequestException, ValueError) as error:
                last = repr(error)
            if isinstance(last, dict) and all(
                (last.get(name) or {}).get("status") == "healthy" for name in HEALTH_COMPONENTS
            ):
                return last
            time.sleep(0.5)
        raise TimeoutError(
            f"Airflow not healthy within {timeout} s (last answer: {last}):\n{self.log_tail()}"
        )

    def own_processes(self) -> list[int]:
        """Every live process started from this standalone (they all carry its AIRFLOW_HOME)."""
        return processes_with_env("AIRFLOW_HOME", str(self.home))

    def stop(self, timeout: float = 30.0) -> tuple[float, list[int]]:
        """Stop Airflow; return (seconds taken, pids that had to be SIGKILLed)."""
        started = time.monotonic()
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        deadline = time.monotonic() + 5
        while self.own_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        killed = self.own_processes()
        if killed or self.process.poll() is None:
            log(f"airflow standalone did not stop within {timeout} s: SIGKILL {killed}")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            for pid in killed:  # also any that left the process group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.process.wait(10)
            deadline = time.monotonic() + 10
            while self.own_processes() and time.monotonic() < deadline:
                time.sleep(0.2)
        left = self.own_processes()
        if left:
            raise RuntimeError(f"Airflow processes still running after SIGKILL: {left}")
        return time.monotonic() - started, killed


class AirflowAPI:
    """A thin client of the REST API v2 (no login: all users are admins)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request to ``/api/v2<path>`` (30 s timeout unless given)."""
        kwargs.setdefault("timeout", 30)
        return self.http.request(method, f"{self.base_url}/api/v2{path}", **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        """`request()`, whose answer must be a success; return its JSON body."""
        response = self.request(method, path, **kwargs)
        if not response.ok:
            raise AssertionError(
                f"{method} {path} -> {response.status_code}: {response.text[:2000]}"
            )
        return response.json()

    def wait_dag(self, dag_id: str, timeout: float) -> dict[str, Any]:
        """Wait until the DAG processor has parsed `dag_id`."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.request("GET", f"/dags/{dag_id}")
            if response.ok:
                return dict(response.json())
            if time.monotonic() > deadline:
                errors = self.ok("GET", "/importErrors")
                raise TimeoutError(f"DAG {dag_id} not parsed within {timeout} s: {errors}")
            time.sleep(0.5)

    def set_paused(self, dag_id: str, paused: bool) -> None:
        """Pause or unpause a DAG."""
        self.ok("PATCH", f"/dags/{dag_id}", json={"is_paused": paused})

    def trigger(self, dag_id: str, conf: Mapping[str, Any]) -> requests.Response:
        """Trigger a run now with ``conf``; return the answer as it is."""
        return self.request(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf)}
        )

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One DAG run."""
        return dict(self.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def runs(self, dag_id: str, **params: Any) -> list[dict[str, Any]]:
        """Up to 100 runs of a DAG; ``params`` filter and order them (e.g. run_after_gte)."""
        found = self.ok("GET", f"/dags/{dag_id}/dagRuns", params={"limit": 100, **params})
        return list(found["dag_runs"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict[str, Any]]:
        """The task instances of a run, by task id."""
        body = self.ok("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """The state of each task of a run."""
        instances = self.task_instances(dag_id, run_id)
        return {task_id: ti["state"] for task_id, ti in instances.items()}

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1) -> str:
        """The log of one try of a task, as newline-delimited JSON."""
        response = self.request(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}",
            headers={"Accept": "application/x-ndjson"},
        )
        return response.text

    def xcom(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        key: str = "return_value",
        missing_ok: bool = False,
    ) -> Any:
        """A task's XCom value; with ``missing_ok``, None when it has none."""
        path = f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        response = self.request("GET", path)
        if missing_ok and response.status_code == 404:
            return None
        if not response.ok:
            raise AssertionError(f"GET {path} -> {response.status_code}: {response.text[:2000]}")
        value = response.json()["value"]
        return json.loads(value) if isinstance(value, str) else value

    def wait_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        on_poll: Callable[[dict[str, Any]], None] | None = None,
        interval: float = 0.5,
    ) -> dict[str, Any]:
        """Poll a run until it finishes; return it. `on_poll(run)` is called at every poll."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.run(dag_id, run_id)
            if on_poll is not None:
                on_poll(run)
            if run["state"] in FINISHED_RUN_STATES:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"run {run_id} of {dag_id} still {run['state']} after {timeout} s: "
                    f"{self.task_states(dag_id, run_id)}"
                )
            time.sleep(interval)

    def explain(self, dag_id: str, run_id: str, tasks: Iterable[str] | None = None) -> str:
        """Task states and the logs of failed tasks, for assertion messages."""
        states = self.task_states(dag_id, run_id)
        parts = [f"task states: {states}"]
        for task_id, state in states.items():
            if state in ("failed", "up_for_retry") and (tasks is None or task_id in tasks):
                parts.append(f"--- log of {task_id}:\n{self.task_log(dag_id, run_id, task_id)}")
        return "\n".join(parts)
