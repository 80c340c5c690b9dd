"""Heartbeat checks: the three built-in sources and the dead/alive/unknown rules."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.heartbeats import (
    CallableHeartbeatSource,
    HeartbeatCheck,
    HttpHeartbeatSource,
    PostgresHeartbeatSource,
)
from airflow_graphile.heartbeats.check import HeartbeatSourceError
from tests.support.airflow_runs import DagRunResult
from tests.support.graphile import GraphileDB


def test_table_source_dead_alive_unknown(
    gw_db: GraphileDB, heartbeats: Callable[..., None]
) -> None:
    heartbeats("pool-dead", ago=timedelta(seconds=90))
    heartbeats("pool-alive", ago=timedelta(seconds=5))
    check = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id), dead_after=60)

    verdict = check.evaluate(["pool-dead", "pool-alive", "pool-silent"])

    assert verdict.dead_ids == ["pool-dead"]
    assert [i["locker_id"] for i in verdict.alive] == ["pool-alive"]
    assert [i["locker_id"] for i in verdict.unknown] == ["pool-silent"]
    dead = verdict.dead[0]
    assert 89 < dead["age_seconds"] < 120 and dead["details"]["host"] == "test"
    json.dumps(verdict.to_xcom())
    opted_in = HeartbeatCheck(check.source, dead_after=60, missing_is_dead=True)
    assert opted_in.evaluate(["pool-silent"]).dead_ids == ["pool-silent"]


@pytest.mark.parametrize(("age", "dead"), [(59, False), (61, True)])
def test_both_sides_of_dead_after(
    gw_db: GraphileDB, heartbeats: Callable[..., None], age: int, dead: bool
) -> None:
    heartbeats("pool-x", ago=timedelta(seconds=age))
    verdict = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id), dead_after=60).evaluate(
        ["pool-x"]
    )
    assert (verdict.dead_ids == ["pool-x"]) is dead


def test_missing_table_fails_the_check(gw_db: GraphileDB) -> None:
    check = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id, table="no_such_table"))
    with pytest.raises(HeartbeatSourceError, match="no_such_table does not exist"):
        check.evaluate(["pool-x"])


def test_callable_source() -> None:
    now = datetime.now(timezone.utc)
    beats = {"pool-old": now - timedelta(minutes=5), "pool-new": now, "pool-none": None}
    check = HeartbeatCheck(CallableHeartbeatSource(lambda ids: beats), dead_after=60)
    verdict = check.evaluate(["pool-old", "pool-new", "pool-none"])
    assert verdict.dead_ids == ["pool-old"]
    assert [i["locker_id"] for i in verdict.unknown] == ["pool-none"]

    def broken(ids: list[str]) -> dict[str, datetime]:
        raise ConnectionError("registry down")

    with pytest.raises(HeartbeatSourceError, match="registry down"):
        HeartbeatCheck(CallableHeartbeatSource(broken)).evaluate(["pool-old"])
    naive = CallableHeartbeatSource(lambda ids: {"pool-old": datetime(2026, 1, 1)})
    with pytest.raises(HeartbeatSourceError, match="no time zone"):
        HeartbeatCheck(naive).evaluate(["pool-old"])


@pytest.mark.parametrize("bad", [0, -5, "soon"])
def test_bad_dead_after_is_refused(bad: object) -> None:
    with pytest.raises(GraphileWorkerInputError, match="dead_after"):
        HeartbeatCheck(CallableHeartbeatSource(dict), dead_after=bad)  # type: ignore[arg-type]


@pytest.fixture
def heartbeat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A local HTTP endpoint serving heartbeats, and an Airflow HTTP connection to it."""
    state: dict[str, Any] = {"status": 200, "body": {}, "queries": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["queries"].append(self.path)
            payload = json.dumps(state["body"]).encode()
            self.send_response(state["status"])
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    monkeypatch.setenv("AIRFLOW_CONN_GW_BEATS", f"http://{host}:{port}")
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_http_source(heartbeat_server: dict[str, Any]) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    heartbeat_server["body"] = {
        "now": now.isoformat(),
        "heartbeats": [
            {"locker_id": "pool-a", "last_beat_at": (now - timedelta(seconds=300)).isoformat()},
            {"locker_id": "pool-b", "last_beat_at": "2026-11-28T11:59:55Z"},
        ],
    }
    check = HeartbeatCheck(HttpHeartbeatSource("gw_beats", "heartbeats"), dead_after=60)
    verdict = check.evaluate(["pool-a", "pool-b", "pool-c"])
    assert verdict.dead_ids == ["pool-a"]
    assert verdict.dead[0]["age_seconds"] == 300
    assert [i["locker_id"] for i in verdict.alive] == ["pool-b"]
    assert [i["locker_id"] for i in verdict.unknown] == ["pool-c"]
    assert heartbeat_server["queries"] == ["/heartbeats?locker_ids=pool-a%2Cpool-b%2Cpool-c"]


def test_http_source_error_fails_the_check(heartbeat_server: dict[str, Any]) -> None:
    heartbeat_server["status"] = 503
    with pytest.raises(HeartbeatSourceError, match="503"):
        HeartbeatCheck(HttpHeartbeatSource("gw_beats")).evaluate(["pool-a"])


def test_http_source_unreachable_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_GW_BEATS_DOWN", "http://127.0.0.1:1")
    with pytest.raises(HeartbeatSourceError, match="HTTP gw_beats_down"):
        HeartbeatCheck(HttpHeartbeatSource("gw_beats_down")).evaluate(["pool-a"])


def test_operator_in_a_dag_run_passes_the_sensor_evidence_on(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
) -> None:
    heartbeats("pool-dead", ago=timedelta(minutes=5))
    heartbeats("pool-alive")
    sensor_result = {
        "stuck_after_seconds": 60,
        "lockers": [
            {"locker_id": "pool-dead", "job_ids": [1, 2], "queue_names": ["billing"]},
            {"locker_id": "pool-alive", "job_ids": [3], "queue_names": []},
            {"locker_id": "pool-silent", "job_ids": [4], "queue_names": []},
        ],
    }
    result = run_liveness_dag(
        "gw_test_heartbeat_check", {"conn_id": gw_db.conn_id, "lockers": sensor_result}
    )
    assert result.state == "success"
    xcom = result.xcom["check"]
    assert xcom["dead_ids"] == ["pool-dead"]
    assert xcom["dead"][0]["job_ids"] == [1, 2] and xcom["dead"][0]["queue_names"] == ["billing"]
    assert [i["locker_id"] for i in xcom["unknown"]] == ["pool-silent"]


def test_operator_fails_when_the_source_is_down(
    gw_db: GraphileDB, run_liveness_dag: Callable[..., DagRunResult]
) -> None:
    # No heartbeat table at all: the check must fail, not call everyone dead or alive.
    result = run_liveness_dag(
        "gw_test_heartbeat_check", {"conn_id": gw_db.conn_id, "lockers": ["pool-a"]}
    )
    assert result.task_states["check"] == "failed"
