"""The worker heartbeat plugin (worker-plugin/) on real workers of each Graphile Worker version.

The row's locker_id must be exactly what the worker writes into `locked_by`: the worker
id on 0.16, the pool id from 0.17 on. A killed worker's row stays and goes stale.
"""

from __future__ import annotations

import socket
import time

import pytest

from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import wait_for

pytestmark = pytest.mark.worker

INTERVAL_MS = 200


def test_row_follows_locked_by_and_goes_stale_after_kill(gw_db: GraphileDB) -> None:
    job_id = gw_db.add_job("sleep", {"ms": 60_000}, queue="q")

    worker = WorkerProcess(
        gw_db.dsn, gw_db.version, heartbeat=True, heartbeat_interval_ms=INTERVAL_MS
    )
    try:
        locker = wait_for(
            lambda: gw_db.jobs()[job_id]["locked_by"], timeout=30, what="the worker locks the job"
        )
        assert locker.startswith("pool-" if gw_db.revision >= 19 else "worker-")
        assert gw_db.queues()["q"]["locked_by"] == locker

        first = wait_for(lambda: gw_db.heartbeats().get(locker), timeout=10, what="its heartbeat")
        assert set(gw_db.heartbeats()) == {locker}
        assert (first["pid"], first["host"]) == (worker.pid, socket.gethostname())
        assert first["started_at"] <= gw_db.jobs()[job_id]["locked_at"]  # beat before lock
        wait_for(
            lambda: gw_db.heartbeats()[locker]["last_beat_at"] > first["last_beat_at"],
            timeout=10,
            what="last_beat_at to advance",
        )
        # One INFO line says that beating started, for which locker and how often.
        started = f"heartbeat started for {locker} in "
        lines = [line for line in worker.log_text().splitlines() if started in line]
        assert len(lines) == 1 and f"every {INTERVAL_MS} ms" in lines[0], worker.log_text()
    finally:
        assert worker.kill() == -9, worker.log_text()

    dead = gw_db.heartbeats()[locker]
    time.sleep(5 * INTERVAL_MS / 1000)
    assert gw_db.heartbeats() == {locker: dead}  # still there, no longer updated
    assert gw_db.jobs()[job_id]["locked_by"] == locker


def test_graceful_stop_deletes_the_row(gw_db: GraphileDB) -> None:
    table = "custom_heartbeats"
    with WorkerProcess(
        gw_db.dsn,
        gw_db.version,
        heartbeat=True,
        heartbeat_interval_ms=INTERVAL_MS,
        heartbeat_table=table,
    ) as worker:
        rows = wait_for(lambda: gw_db.heartbeats(table), timeout=30, what="a heartbeat row")
        assert [row["pid"] for row in rows.values()] == [worker.pid]
    assert gw_db.heartbeats(table) == {}
    # It logs one INFO line when it starts beating, and otherwise only problems.
    lines = [line for line in worker.log_text().splitlines() if "AirflowGraphileHeartbeat" in line]
    assert len(lines) == 1 and "heartbeat started for " in lines[0], worker.log_text()


def test_workers_without_heartbeat_write_no_rows(gw_db: GraphileDB) -> None:
    job_id = gw_db.add_job("noop")
    with WorkerProcess(gw_db.dsn, gw_db.version):
        wait_for(lambda: job_id not in gw_db.jobs(), timeout=30, what="noop job done")
    assert gw_db.heartbeats() == {}
