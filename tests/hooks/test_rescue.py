"""rescue_dead_lockers without workers: evidence, guards and what it refuses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from psycopg import sql

from airflow_graphile.exceptions import GraphileWorkerFatalError, GraphileWorkerInputError
from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
from devkit.graphile import GraphileDB
from devkit.selection import lock_job, snapshot

HEARTBEATS = sql.Identifier("public", "graphile_worker_heartbeats")


def _locked(db: GraphileDB, locker: str, attempts: int = 1) -> int:
    job = db.add_job("send_email", queue=f"q_{locker}")
    lock_job(db, job, locker, ago=timedelta(minutes=5))
    db.query(
        sql.SQL("update {} set attempts = %s where id = %s").format(
            sql.Identifier(db.schema, "_private_jobs")
        ),
        [attempts, job],
    )
    return job


def test_heartbeat_age_alone_is_reported_as_weaker_evidence(
    gw_db: GraphileDB, hook: GraphileWorkerHook, heartbeats: Callable[..., None]
) -> None:
    """A table of plugin 0.1 (no lease column): the 60 s rule, labelled."""
    dead, slow = _locked(gw_db, "pool-dead", attempts=2), _locked(gw_db, "pool-slow")
    heartbeats("pool-dead", ago=timedelta(minutes=5))
    heartbeats("pool-slow", ago=timedelta(seconds=5))
    report = hook.rescue_dead_lockers()
    (verdict,) = report.of_state("dead")
    assert (verdict.locker_id, verdict.evidence) == ("pool-dead", "heartbeat")
    assert "weaker evidence" in verdict.reason
    assert report.clock_enforced is False
    assert report.given_back == [dead]
    jobs = gw_db.jobs()
    assert (jobs[dead]["locked_by"], jobs[dead]["attempts"]) == (None, 1)
    assert jobs[slow]["locked_by"] == "pool-slow"
    assert "pool-dead" not in gw_db.heartbeats() and "pool-slow" in gw_db.heartbeats()


def test_dry_run_and_mass_death_change_nothing(
    gw_db: GraphileDB, hook: GraphileWorkerHook, heartbeats: Callable[..., None]
) -> None:
    for name in ("a", "b", "c"):
        _locked(gw_db, f"pool-{name}")
        heartbeats(f"pool-{name}", ago=timedelta(minutes=5))
    before = snapshot(gw_db), gw_db.heartbeats()
    dry = hook.rescue_dead_lockers(dry_run=True)
    assert len(dry.unlock.jobs if dry.unlock else []) == 3 and sorted(dry.given_back)
    held = hook.rescue_dead_lockers(max_workers=2)
    assert [v.locker_id for v in held.held] == ["pool-a", "pool-b", "pool-c"]
    assert held.unlock is None
    assert (snapshot(gw_db), gw_db.heartbeats()) == before
    assert held.to_xcom()["held_for_approval"][0]["locker_id"] == "pool-a"


def test_a_table_others_may_write_is_refused_naming_them(
    gw_db: GraphileDB, hook: GraphileWorkerHook, heartbeats: Callable[..., None]
) -> None:
    _locked(gw_db, "pool-dead")
    heartbeats("pool-dead", ago=timedelta(minutes=5))
    before = snapshot(gw_db)
    gw_db.query(sql.SQL("grant update on {} to public").format(HEARTBEATS))
    with pytest.raises(GraphileWorkerFatalError, match="PUBLIC"):
        hook.rescue_dead_lockers()
    assert snapshot(gw_db) == before


def test_graphile_worker_pro_is_left_to_its_own_sweeper(
    gw_db: GraphileDB, hook: GraphileWorkerHook, heartbeats: Callable[..., None]
) -> None:
    _locked(gw_db, "pool-dead")
    heartbeats("pool-dead", ago=timedelta(minutes=5))
    gw_db.query(
        sql.SQL("create table {} (id text)").format(
            sql.Identifier(gw_db.schema, "_private_pro_pools")
        )
    )
    before = snapshot(gw_db)
    report = hook.rescue_dead_lockers()
    assert report.pro_tables == ["_private_pro_pools"] and report.left_to_pro
    assert "Graphile Worker Pro" in report.summary()
    assert snapshot(gw_db) == before
    assert hook.rescue_dead_lockers(ignore_pro=True).of_state("dead")


def test_the_override_needs_named_lockers(hook: GraphileWorkerHook) -> None:
    with pytest.raises(GraphileWorkerInputError, match="skip_liveness_check"):
        hook.rescue_dead_lockers(None, skip_liveness_check=True)
    with pytest.raises(GraphileWorkerInputError, match="heartbeat_table"):
        hook.rescue_dead_lockers(heartbeat_table="a.b.c")


def test_a_role_with_select_and_delete_on_the_heartbeat_table_can_rescue(
    gw_db: GraphileDB, hook: GraphileWorkerHook, heartbeats: Callable[..., None]
) -> None:
    """What the README grants Airflow: the schema's tables, and SELECT, DELETE on beats."""
    dead = _locked(gw_db, "pool-dead")
    heartbeats("pool-dead", ago=timedelta(minutes=5))
    role = f"airflow_{gw_db.dbname}"
    owner = sql.Identifier(role)
    gw_db.query(sql.SQL("create role {} bypassrls").format(owner))
    try:
        gw_db.query(
            sql.SQL(
                "grant usage on schema {schema} to {role};"
                " grant select, update, delete on all tables in schema {schema} to {role};"
                " grant execute on all functions in schema {schema} to {role};"
                " grant select, delete on {beats} to {role}"
            ).format(schema=sql.Identifier(gw_db.schema), role=owner, beats=HEARTBEATS)
        )
        with gw_db.connect() as conn:
            conn.execute(sql.SQL("set role {}").format(owner))
            hook.get_conn = lambda: conn  # type: ignore[method-assign]
            conn.close = lambda: None  # type: ignore[method-assign]
            report = hook.rescue_dead_lockers()
        assert report.given_back == [dead], report.summary()
        assert "pool-dead" not in gw_db.heartbeats()
    finally:
        gw_db.query(sql.SQL("drop owned by {role}; drop role {role}").format(role=owner))
