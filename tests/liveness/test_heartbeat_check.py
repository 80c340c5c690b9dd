"""Heartbeat checks: the three built-in sources and the dead/alive/unknown rules."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
import pytest
from airflow.sdk.exceptions import AirflowFailException
from psycopg import sql

from airflow_graphile.exceptions import (
    GraphileWorkerFatalError,
    GraphileWorkerInputError,
    GraphileWorkerTimeoutError,
    GraphileWorkerTransientError,
)
from airflow_graphile.heartbeats import (
    CallableHeartbeatSource,
    HeartbeatCheck,
    HttpHeartbeatSource,
    PostgresHeartbeatSource,
)
from airflow_graphile.heartbeats.check import HeartbeatSourceError
from airflow_graphile.operators.heartbeat_check import read_lockers
from devkit.dag_runs import DagRunResult
from devkit.graphile import GraphileDB

MINUTE = timedelta(seconds=60)
# The stuck-lock sensor's documented XCom.
SENSOR_RESULT: dict[str, Any] = {
    "stuck_after_seconds": 60.0,
    "lockers": [
        {
            "locker_id": "pool-dead",
            "job_ids": [1, 2],
            "queue_names": ["billing"],
            "oldest_locked_at": "2026-11-28T11:50:00+00:00",
            "oldest_lock_age_seconds": 600.0,
        },
        {"locker_id": "pool-alive", "job_ids": [3], "queue_names": []},
        {"locker_id": "pool-silent", "job_ids": [4], "queue_names": []},
    ],
}


def test_table_source_dead_alive_unknown(
    gw_db: GraphileDB, heartbeats: Callable[..., None]
) -> None:
    heartbeats("pool-dead", ago=timedelta(seconds=90))
    heartbeats("pool-alive", ago=timedelta(seconds=5))
    check = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id), dead_after=MINUTE)

    verdict = check.evaluate(["pool-dead", "pool-alive", "pool-silent"])

    assert verdict.dead_locker_ids == ["pool-dead"]
    assert [i["locker_id"] for i in verdict.alive] == ["pool-alive"]
    assert [i["locker_id"] for i in verdict.unknown] == ["pool-silent"]
    dead = verdict.dead[0]
    assert 89 < dead["age_seconds"] < 120 and dead["details"]["host"] == "test"
    json.dumps(verdict.to_xcom())
    opted_in = HeartbeatCheck(check.source, dead_after=MINUTE, missing_is_dead=True)
    assert opted_in.evaluate(["pool-silent"]).dead_locker_ids == ["pool-silent"]


@pytest.mark.parametrize(("age", "dead"), [(59, False), (61, True)])
def test_both_sides_of_dead_after(
    gw_db: GraphileDB, heartbeats: Callable[..., None], age: int, dead: bool
) -> None:
    heartbeats("pool-x", ago=timedelta(seconds=age))
    verdict = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id), dead_after=MINUTE).evaluate(
        ["pool-x"]
    )
    assert (verdict.dead_locker_ids == ["pool-x"]) is dead


def test_several_rows_for_one_locker_read_as_the_newest(gw_db: GraphileDB) -> None:
    """A table without a key may hold an old row beside the live one: the newest counts."""
    gw_db.query(sql.SQL("create table public.beats (locker_id text, last_beat_at timestamptz)"))
    now = datetime.now(timezone.utc)
    for ago in (timedelta(seconds=1), timedelta(hours=2), None):
        gw_db.query(
            sql.SQL("insert into public.beats values ('pool-live', %s)"),
            [None if ago is None else now - ago],
        )
    source = PostgresHeartbeatSource(gw_db.conn_id, table="beats")
    verdict = HeartbeatCheck(source, dead_after=MINUTE).evaluate(["pool-live"])
    assert verdict.dead == [] and [i["locker_id"] for i in verdict.alive] == ["pool-live"]
    assert verdict.alive[0]["age_seconds"] < 30


def test_missing_table_fails_the_check(gw_db: GraphileDB) -> None:
    check = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id, table="no_such_table"))
    with pytest.raises(HeartbeatSourceError, match="no_such_table does not exist"):
        check.evaluate(["pool-x"])


def test_callable_source() -> None:
    now = datetime.now(timezone.utc)
    beats = {"pool-old": now - timedelta(minutes=5), "pool-new": now, "pool-none": None}
    check = HeartbeatCheck(CallableHeartbeatSource(lambda ids: beats), dead_after=MINUTE)
    verdict = check.evaluate(["pool-old", "pool-new", "pool-none"])
    assert verdict.dead_locker_ids == ["pool-old"]
    assert [i["locker_id"] for i in verdict.unknown] == ["pool-none"]

    def broken(ids: list[str]) -> dict[str, datetime]:
        raise ConnectionError("registry down")

    with pytest.raises(HeartbeatSourceError, match="registry down"):
        HeartbeatCheck(CallableHeartbeatSource(broken)).evaluate(["pool-old"])
    naive = CallableHeartbeatSource(lambda ids: {"pool-old": datetime(2026, 1, 1)})
    with pytest.raises(HeartbeatSourceError, match="no time zone"):
        HeartbeatCheck(naive).evaluate(["pool-old"])


@pytest.mark.parametrize("bad", [timedelta(0), timedelta(seconds=-5)])
def test_dead_after_must_be_more_than_zero(bad: timedelta) -> None:
    with pytest.raises(GraphileWorkerInputError, match="dead_after"):
        HeartbeatCheck(CallableHeartbeatSource(dict), dead_after=bad)


@pytest.mark.parametrize(
    ("dead_after", "missing_is_dead", "named"),
    [(60, False, "dead_after"), (MINUTE, "False", "missing_is_dead")],
)
def test_check_takes_typed_values_only(
    dead_after: object, missing_is_dead: object, named: str
) -> None:
    # Parsing is the operator's job; a template's "False" must never reach the check.
    with pytest.raises(TypeError, match=named):
        HeartbeatCheck(
            CallableHeartbeatSource(dict),
            dead_after=dead_after,  # type: ignore[arg-type]
            missing_is_dead=missing_is_dead,  # type: ignore[arg-type]
        )


@pytest.mark.parametrize(
    ("argument", "value"),
    [("table", ""), ("schema", "s" * 64), ("id_column", "a\x00b"), ("time_column", 7)],
)
def test_bad_table_source_names_are_refused_naming_the_argument(
    argument: str, value: object
) -> None:
    with pytest.raises(GraphileWorkerInputError, match=f"^{argument}: "):
        PostgresHeartbeatSource(**{argument: value})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ({"id_column": "lockr_id"}, "id_column: .* no column 'lockr_id'"),
        ({"time_column": "host"}, "time_column: column 'host' .* is text"),
        ({"time_column": "beat"}, "time_column: column 'beat' .* does not exist"),
    ],
)
def test_table_without_the_columns_fails_without_retry(
    gw_db: GraphileDB, heartbeats: Callable[..., None], source: dict[str, str], named: str
) -> None:
    heartbeats("pool-x")
    check = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id, **source))
    with pytest.raises(GraphileWorkerInputError, match=named) as error:
        check.evaluate(["pool-x"])
    assert isinstance(error.value, GraphileWorkerFatalError)
    with pytest.raises(GraphileWorkerInputError, match=named):
        check.live_lockers()


def test_source_failures_are_retryable(gw_db: GraphileDB) -> None:
    missing = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id))
    with pytest.raises(HeartbeatSourceError) as error:
        missing.evaluate(["pool-x"])
    assert isinstance(error.value, GraphileWorkerTransientError)
    assert not isinstance(error.value, AirflowFailException)


@contextmanager
def table_locked_exclusively(db: GraphileDB) -> Iterator[None]:
    """Another session holds an ACCESS EXCLUSIVE lock on the heartbeat table (an ALTER)."""
    with psycopg.connect(db.dsn) as other:
        other.execute(
            sql.SQL("lock table {} in access exclusive mode").format(
                sql.Identifier("public", "graphile_worker_heartbeats")
            )
        )
        yield


def test_table_read_meets_lock_timeout_and_is_retryable(
    gw_db: GraphileDB, heartbeats: Callable[..., None]
) -> None:
    heartbeats("pool-x")
    check = HeartbeatCheck(PostgresHeartbeatSource(gw_db.conn_id))
    with table_locked_exclusively(gw_db):
        started = time.monotonic()
        with pytest.raises(HeartbeatSourceError, match=r"lock_timeout \(2 s\)") as error:
            check.evaluate(["pool-x"])
        assert time.monotonic() - started < 8
    assert isinstance(error.value.__cause__, GraphileWorkerTimeoutError)


def test_table_read_meets_statement_timeout(
    gw_db: GraphileDB, heartbeats: Callable[..., None]
) -> None:
    from airflow_graphile.hooks.heartbeats import HeartbeatTableHook
    from airflow_graphile.hooks.session import Timeouts

    heartbeats("pool-x")
    hook = HeartbeatTableHook(
        postgres_conn_id=gw_db.conn_id,
        timeouts=Timeouts(lock_timeout=timedelta(0), statement_timeout=timedelta(seconds=1)),
    )
    names = {
        "schema": "public",
        "table": "graphile_worker_heartbeats",
        "id_column": "locker_id",
        "time_column": "last_beat_at",
    }
    with (
        table_locked_exclusively(gw_db),
        pytest.raises(GraphileWorkerTimeoutError, match=r"statement_timeout \(1 s\)"),
    ):
        hook.read_heartbeats(["pool-x"], **names)
    assert [row["locker_id"] for row in hook.read_heartbeats(None, **names)] == ["pool-x"]


@pytest.fixture
def heartbeat_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A local HTTP endpoint serving heartbeats, and an Airflow HTTP connection to it.

    It answers ``state["statuses"]`` in turn (one per request), then ``state["status"]``.
    """
    state: dict[str, Any] = {"status": 200, "statuses": [], "body": {}, "queries": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state["queries"].append(self.path)
            status = state["statuses"].pop(0) if state["statuses"] else state["status"]
            payload = json.dumps(state["body"]).encode()
            self.send_response(status)
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


def http_beats(now: datetime, ages: dict[str, float]) -> dict[str, Any]:
    return {
        "now": now.isoformat(),
        "heartbeats": [
            {"locker_id": locker_id, "last_beat_at": (now - timedelta(seconds=age)).isoformat()}
            for locker_id, age in ages.items()
        ],
    }


def test_http_source(heartbeat_server: dict[str, Any]) -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
    heartbeat_server["body"] = {
        "now": now.isoformat(),
        "heartbeats": [
            {"locker_id": "pool-a", "last_beat_at": (now - timedelta(seconds=300)).isoformat()},
            {"locker_id": "pool-b", "last_beat_at": "2026-11-28T11:59:55Z"},
        ],
    }
    check = HeartbeatCheck(HttpHeartbeatSource("gw_beats", "heartbeats"), dead_after=MINUTE)
    verdict = check.evaluate(["pool-a", "pool-b", "pool-c"])
    assert verdict.dead_locker_ids == ["pool-a"]
    assert verdict.dead[0]["age_seconds"] == 300
    assert [i["locker_id"] for i in verdict.alive] == ["pool-b"]
    assert [i["locker_id"] for i in verdict.unknown] == ["pool-c"]
    assert heartbeat_server["queries"] == ["/heartbeats?locker_ids=pool-a%2Cpool-b%2Cpool-c"]


def test_http_source_error_fails_the_check_as_retryable(heartbeat_server: dict[str, Any]) -> None:
    heartbeat_server["status"] = 503
    with pytest.raises(HeartbeatSourceError, match="503") as error:
        HeartbeatCheck(HttpHeartbeatSource("gw_beats")).evaluate(["pool-a"])
    assert isinstance(error.value, GraphileWorkerTransientError)


def _chain_text(error: BaseException) -> str:
    parts, current, seen = [], error, set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


def test_http_source_keeps_a_token_out_of_errors_logs_and_xcom(
    heartbeat_server: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-token"
    source = HttpHeartbeatSource("gw_beats", f"heartbeats?api_key={secret}")
    assert secret not in source.describe()
    heartbeat_server["body"] = http_beats(datetime.now(timezone.utc), {"pool-a": 1})
    with caplog.at_level(logging.DEBUG):
        verdict = HeartbeatCheck(source).evaluate(["pool-a"])
    assert verdict.alive and secret not in json.dumps(verdict.to_xcom())
    assert heartbeat_server["queries"] == [f"/heartbeats?api_key={secret}&locker_ids=pool-a"]
    heartbeat_server["status"] = 503
    with pytest.raises(HeartbeatSourceError) as error:
        HeartbeatCheck(source).evaluate(["pool-a"])
    # A token in the connection's userinfo, on an endpoint that is down.
    monkeypatch.setenv("AIRFLOW_CONN_GW_BEATS_AUTH", f"http://user:{secret}@127.0.0.1:1")
    with pytest.raises(HeartbeatSourceError) as down:
        HeartbeatCheck(HttpHeartbeatSource("gw_beats_auth", f"b?key={secret}")).evaluate(["x"])
    for failure in (error.value, down.value):
        assert failure.__cause__ is not None  # the chain is kept ...
        assert secret not in _chain_text(failure)  # ... without the secret
    assert secret not in caplog.text


def test_http_source_unreachable_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_GW_BEATS_DOWN", "http://127.0.0.1:1")
    with pytest.raises(HeartbeatSourceError, match="HTTP gw_beats_down"):
        HeartbeatCheck(HttpHeartbeatSource("gw_beats_down")).evaluate(["pool-a"])


def test_http_source_request_is_time_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    # A listening socket that never answers: the request ends at timeout_seconds.
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        host, port = silent.getsockname()[:2]
        monkeypatch.setenv("AIRFLOW_CONN_GW_BEATS_SILENT", f"http://{host}:{port}")
        source = HttpHeartbeatSource("gw_beats_silent", timeout_seconds=0.5)
        started = time.monotonic()
        with pytest.raises(HeartbeatSourceError, match="imed out"):
            HeartbeatCheck(source).evaluate(["pool-a"])
        assert time.monotonic() - started < 5
    finally:
        silent.close()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, []),
        ([], []),
        ("pool-a", [{"locker_id": "pool-a"}]),
        (["pool-a", "pool-b"], [{"locker_id": "pool-a"}, {"locker_id": "pool-b"}]),
        ("['pool-a']", [{"locker_id": "pool-a"}]),
        (SENSOR_RESULT, SENSOR_RESULT["lockers"]),
        (json.dumps(SENSOR_RESULT), SENSOR_RESULT["lockers"]),
        (repr(SENSOR_RESULT), SENSOR_RESULT["lockers"]),  # Jinja's text of a dict
        ({"stuck_after_seconds": 60, "lockers": []}, []),
    ],
)
def test_lockers_input_reads_the_sensor_result_or_ids(value: object, expected: object) -> None:
    assert read_lockers(value) == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"dead_locker_ids": ["pool-a"]}, "stuck-lock sensor's result"),
        ({"lockers": ["pool-a"]}, "stuck-lock sensor's result"),
        ({"lockers": [{"job_ids": [1]}]}, "None is not a locker id"),
        ({"lockers": [{"locker_id": "pool-a"}, {"locker_id": "pool-a"}]}, "duplicate"),
        ([{"locker_id": "pool-a"}], "is not a locker id"),
        ("{not json", "cannot read"),
        (["pool-a", ""], "''"),
    ],
)
def test_lockers_input_refused_naming_it(value: object, named: str) -> None:
    with pytest.raises(GraphileWorkerInputError, match=r"^lockers: ") as error:
        read_lockers(value)
    assert named in str(error.value)


def test_operator_in_a_dag_run_passes_the_sensor_evidence_on(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
    pushed_xcom: Callable[..., Any],
) -> None:
    heartbeats("pool-dead", ago=timedelta(minutes=5))
    heartbeats("pool-alive")
    result = run_liveness_dag(
        "gw_test_heartbeat_check", {"conn_id": gw_db.conn_id, "lockers": SENSOR_RESULT}
    )
    assert result.state == "success"
    xcom = result.xcom["check"]
    assert xcom["dead_locker_ids"] == ["pool-dead"]
    dead = xcom["dead"][0]
    assert (dead["locker_id"], dead["job_ids"], dead["queue_names"]) == (
        "pool-dead",
        [1, 2],
        ["billing"],
    )
    assert dead["oldest_lock_age_seconds"] == 600.0
    assert dead["evidence"].startswith("last heartbeat") and dead["last_beat_at"]
    assert [i["locker_id"] for i in xcom["alive"]] == ["pool-alive"]
    assert [i["locker_id"] for i in xcom["unknown"]] == ["pool-silent"]
    assert pushed_xcom(result, "check", "dead_locker_ids") == ["pool-dead"]


def test_operator_pushes_an_empty_list_when_none_is_dead(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
    pushed_xcom: Callable[..., Any],
) -> None:
    heartbeats("pool-alive")
    conf = {"conn_id": gw_db.conn_id, "lockers": '["pool-alive", "pool-silent"]'}
    result = run_liveness_dag("gw_test_heartbeat_check", conf)
    assert result.state == "success"
    assert result.xcom["check"]["dead_locker_ids"] == []
    assert pushed_xcom(result, "check", "dead_locker_ids") == []


def test_operator_fails_when_the_source_is_down_and_retries(
    gw_db: GraphileDB, run_liveness_dag: Callable[..., DagRunResult]
) -> None:
    # No heartbeat table at all: the check must fail, not call everyone dead or alive;
    # a worker with the plugin may create the table later, so it is retried.
    result = run_liveness_dag(
        "gw_test_heartbeat_check", {"conn_id": gw_db.conn_id, "lockers": ["pool-a"]}
    )
    assert (result.task_states["check"], result.tries["check"]) == ("failed", 2)


def test_operator_retries_a_503_and_succeeds(
    heartbeat_server: dict[str, Any],
    run_liveness_dag: Callable[..., DagRunResult],
    pushed_xcom: Callable[..., Any],
) -> None:
    heartbeat_server["statuses"] = [503]  # then 200
    heartbeat_server["body"] = http_beats(
        datetime.now(timezone.utc), {"pool-dead": 300, "pool-alive": 1}
    )
    result = run_liveness_dag(
        "gw_test_heartbeat_check_http", {"lockers": ["pool-dead", "pool-alive"]}
    )
    assert (result.state, result.tries["check"]) == ("success", 2)
    assert len(heartbeat_server["queries"]) == 2
    assert result.xcom["check"]["dead_locker_ids"] == ["pool-dead"]
    assert pushed_xcom(result, "check", "dead_locker_ids") == ["pool-dead"]


@pytest.mark.parametrize(
    "conf",
    [
        {"heartbeat_id_column": "lockr_id"},  # the table has no such column
        {"lockers": {"dead_locker_ids": ["pool-a"]}},  # not the sensor's shape
        {"dead_after": "soon"},
        {"missing_is_dead": "maybe"},
    ],
)
def test_operator_fails_without_retry_on_what_a_retry_cannot_fix(
    gw_db: GraphileDB,
    heartbeats: Callable[..., None],
    run_liveness_dag: Callable[..., DagRunResult],
    conf: dict[str, Any],
) -> None:
    heartbeats("pool-a")
    result = run_liveness_dag(
        "gw_test_heartbeat_check", {"conn_id": gw_db.conn_id, "lockers": ["pool-a"], **conf}
    )
    assert (result.task_states["check"], result.tries["check"]) == ("failed", 1)
