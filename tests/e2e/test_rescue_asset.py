"""example_dags/graphile_worker_rescue.py in a real Airflow: its asset is watched in the real
triggerer by GraphileWorkerDeadLockersTrigger, and the DAG runs only when a real worker is
killed - nothing runs while every worker is healthy. Too many dead at once waits for a
person, who answers through the REST API (Required Actions)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from devkit.crash import start_two_workers
from devkit.graphile import GraphileDB, WorkerProcess
from devkit.process import log, wait_for
from devkit.standalone import FINISHED_RUN_STATES, AirflowAPI

pytestmark = [pytest.mark.e2e, pytest.mark.worker]

DAG_ID = "graphile_worker_rescue"
ASSET = "graphile_worker_dead_lockers"
APPROVE = "approve_mass_rescue"
BEAT_MS = 1000
WATCH_TIMEOUT = 90  # the watcher is registered when the DAG file is parsed again (unpaused)
HEALTHY_SECONDS = 20  # workers healthy this long: no run may exist
QUIET_SECONDS = 15  # after the rescue: no second run may come
RUN_TIMEOUT = 120
MASS = 4  # one more than the DAG's MAX_WORKERS
LONG_JOB_MS = 600_000
ANSWER_AFTER = 5  # seconds between the approval task parking and the answer


def _at(stamp: str | None) -> datetime | None:
    return None if stamp is None else datetime.fromisoformat(stamp)


def _since(start: datetime, stamp: str | None) -> str:
    at = _at(stamp)
    return "-" if at is None else f"{(at - start).total_seconds():.1f}"


def _drop_queued_events(airflow: AirflowAPI) -> None:
    """Forget asset events queued for the DAG (204, or 404: there were none)."""
    response = airflow.request("DELETE", f"/dags/{DAG_ID}/assets/queuedEvents")
    assert response.status_code in (204, 404), response.text


def _asset(airflow: AirflowAPI) -> dict[str, Any]:
    found = airflow.ok("GET", "/assets", params={"name_pattern": ASSET, "limit": 100})
    return next(asset for asset in found["assets"] if asset["name"] == ASSET)


def _wait_watched(airflow: AirflowAPI) -> list[dict[str, Any]]:
    """Wait until the asset has its watcher (the DAG processor adds it for an unpaused DAG)."""
    return list(
        wait_for(
            lambda: _asset(airflow)["watchers"],
            timeout=WATCH_TIMEOUT,
            interval=0.5,
            what=f"a watcher on asset {ASSET}",
        )
    )


def _asset_events_since(airflow: AirflowAPI, start: datetime) -> list[dict[str, Any]]:
    asset_id = _asset(airflow)["id"]
    found = airflow.ok(
        "GET",
        "/assets/events",
        params={"asset_id": asset_id, "order_by": "-timestamp", "limit": 50},
    )
    return [e for e in found["asset_events"] if datetime.fromisoformat(e["timestamp"]) >= start]


def _new_runs(airflow: AirflowAPI, before: set[str]) -> list[dict[str, Any]]:
    return [run for run in airflow.runs(DAG_ID) if run["dag_run_id"] not in before]


@contextmanager
def _unpaused(airflow: AirflowAPI) -> Iterator[set[str]]:
    """Unpause the DAG; yield the ids of its runs made before. Paused again at the end,
    its queued asset events dropped and its unfinished runs failed, so that it cannot
    act on the other tests' workers."""
    _drop_queued_events(airflow)
    before = {run["dag_run_id"] for run in airflow.runs(DAG_ID)}
    airflow.set_paused(DAG_ID, False)
    try:
        yield before
    finally:
        airflow.set_paused(DAG_ID, True)
        _drop_queued_events(airflow)
        for run in _new_runs(airflow, before):
            if run["state"] not in FINISHED_RUN_STATES:
                airflow.ok(
                    "PATCH", f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}", json={"state": "failed"}
                )
                log(f"{DAG_ID}: failed the unfinished run {run['dag_run_id']}")


def _wait_asset_run(airflow: AirflowAPI, before: set[str]) -> dict[str, Any]:
    """Wait for the first asset-triggered run made after `before`."""

    def found() -> dict[str, Any] | None:
        runs = [r for r in _new_runs(airflow, before) if r["run_type"] == "asset_triggered"]
        return min(runs, key=lambda r: r["queued_at"] or "") if runs else None

    run = wait_for(found, timeout=RUN_TIMEOUT, interval=0.2, what=f"an asset-triggered {DAG_ID}")
    assert run is not None
    return run


def test_kill_9_rescued_by_the_asset_triggered_dag_and_nothing_runs_while_healthy(
    airflow: AirflowAPI, gw: GraphileDB
) -> None:
    with ExitStack() as stack:
        before = stack.enter_context(_unpaused(airflow))
        unpaused = time.monotonic()
        workers = start_two_workers(gw, heartbeat_interval_ms=BEAT_MS)
        stack.callback(workers.doomed.kill)
        survivor = stack.enter_context(workers.survivor)  # stopped gracefully at the end
        dead_id, live_id = workers.doomed_id, workers.survivor_id
        billing, reports = workers.billing, workers.reports

        watchers = _wait_watched(airflow)
        log(
            f"{DAG_ID}: asset watched by {[w['name'] for w in watchers]} "
            f"{time.monotonic() - unpaused:.1f} s after unpausing"
        )
        healthy_until = time.monotonic() + HEALTHY_SECONDS
        while time.monotonic() < healthy_until:
            assert _new_runs(airflow, before) == [], "a run while every worker is healthy"
            assert workers.doomed.running() and survivor.running()
            time.sleep(1)
        assert set(gw.heartbeats()) >= {dead_id, live_id}

        workers.doomed.kill()
        killed_at = datetime.now(UTC)
        killed = time.monotonic()
        run = _wait_asset_run(airflow, before)
        run_id = run["dag_run_id"]
        run = airflow.wait_run(DAG_ID, run_id, RUN_TIMEOUT, interval=0.3)
        assert run["state"] == "success", airflow.explain(DAG_ID, run_id)
        instances = airflow.task_instances(DAG_ID, run_id)
        states = {task_id: ti["state"] for task_id, ti in instances.items()}
        assert states == {
            "rescue": "success",
            "too_many_dead": "success",
            APPROVE: "skipped",
            "rescue_approved": "skipped",
        }

        report = airflow.xcom(DAG_ID, run_id, "rescue")
        assert [(v["locker_id"], v["state"], v["evidence"]) for v in report["dead"]] == [
            (dead_id, "dead", "lease")
        ]
        spared = {v["locker_id"]: v["state"] for v in report["spared"]}
        assert spared.get(live_id) == "alive", report["spared"]
        assert dead_id not in spared
        assert report["held_for_approval"] == []
        assert report["unlocked_job_ids"] == [billing]
        assert report["given_back_job_ids"] == [billing]
        assert report["poisoned_job_ids"] == []

        workers.wait_rescued()  # the survivor runs the rescued job and the one behind it
        jobs_gone = time.monotonic() - killed
        events = _asset_events_since(airflow, killed_at)
        log(
            f"{DAG_ID}: kill -9 -> asset event "
            f"{', '.join(_since(killed_at, e['timestamp']) for e in events) or '-'} s, "
            f"run created {_since(killed_at, run['queued_at'])} s, "
            f"started {_since(killed_at, run['start_date'])} s, "
            f"rescue done {_since(killed_at, instances['rescue']['end_date'])} s, "
            f"run done {_since(killed_at, run['end_date'])} s, jobs gone {jobs_gone:.1f} s"
        )
        assert gw.jobs()[reports]["locked_by"] == live_id  # the live lock is untouched
        assert gw.queues()["reports"]["locked_by"] == live_id
        assert survivor.running()

        time.sleep(QUIET_SECONDS)
        runs = _new_runs(airflow, before)
        assert [r["dag_run_id"] for r in runs] == [run_id], runs
        assert len(_asset_events_since(airflow, killed_at)) == 1
        assert gw.jobs()[reports]["locked_by"] == live_id


def test_mass_death_waits_for_a_person_then_rescues_what_was_approved(
    airflow: AirflowAPI, gw: GraphileDB
) -> None:
    with ExitStack() as stack:
        before = stack.enter_context(_unpaused(airflow))
        job_of: dict[str, int] = {}  # locker id -> its long job
        workers: list[WorkerProcess] = []
        for n in range(MASS):
            # One at a time, one slot each: each new job can only go to the new worker.
            worker = WorkerProcess(
                gw.dsn,
                gw.version,
                schema=gw.schema,
                jobs=1,
                heartbeat=True,
                heartbeat_interval_ms=BEAT_MS,
            )
            stack.callback(worker.kill)
            workers.append(worker)
            job = gw.add_job("sleep", {"ms": LONG_JOB_MS}, queue=f"mass-{n}")
            job_of[gw.wait_locked(job)] = job
        assert len(job_of) == MASS, job_of  # a different locker holds each job
        lockers = sorted(job_of)
        jobs = sorted(job_of.values())
        wait_for(lambda: set(lockers) <= set(gw.heartbeats()), timeout=30, what="every heartbeat")
        _wait_watched(airflow)
        assert _new_runs(airflow, before) == []

        for worker in workers:
            worker.kill()
        killed_at = datetime.now(UTC)
        run = _wait_asset_run(airflow, before)
        run_id = run["dag_run_id"]

        def approval_waits() -> str | None:
            current = airflow.run(DAG_ID, run_id)
            if current["state"] in FINISHED_RUN_STATES:
                raise AssertionError(airflow.explain(DAG_ID, run_id))
            state = airflow.task_states(DAG_ID, run_id).get(APPROVE)
            return state if state in ("awaiting_input", "deferred") else None

        approve_state = wait_for(
            approval_waits, timeout=RUN_TIMEOUT, interval=0.5, what=f"{APPROVE} waits for a person"
        )
        waiting_at = datetime.now(UTC)
        # A person's reaction time. Answered within about a second of the task parking, the
        # task fails on Airflow 3.3.2: the answer sends it back to scheduled, and it is
        # queued again (same try) before the scheduler has read the executor's "success"
        # for the parking run; the scheduler then takes it for a task whose state was
        # changed externally and marks it failed.
        time.sleep(ANSWER_AFTER)
        assert airflow.task_states(DAG_ID, run_id)[APPROVE] == approve_state
        instances = airflow.task_instances(DAG_ID, run_id)
        assert instances["rescue"]["state"] == "success"
        assert instances["too_many_dead"]["state"] == "success"

        report = airflow.xcom(DAG_ID, run_id, "rescue")
        held = report["held_for_approval"]
        assert sorted(v["locker_id"] for v in held) == lockers
        assert {(v["state"], v["evidence"]) for v in held} == {("dead", "lease")}
        assert report["unlocked_job_ids"] == []
        assert report["given_back_job_ids"] == []
        now = gw.jobs()
        assert {job: now[job]["locked_by"] for job in jobs} == {j: i for i, j in job_of.items()}
        assert set(lockers) <= set(gw.heartbeats())  # nothing was changed

        hitl_path = f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{APPROVE}/-1/hitlDetails"
        detail = airflow.ok("GET", hitl_path)
        assert detail["options"] == ["Approve", "Reject"]
        assert detail["defaults"] == ["Reject"]
        assert detail["response_received"] is False
        assert detail["subject"].startswith(f"{MASS} Graphile Worker lockers look dead")
        for locker in lockers:
            assert f"| {locker} | lease |" in detail["body"], detail["body"]

        answer = airflow.ok(
            "PATCH", hitl_path, json={"chosen_options": ["Approve"], "params_input": {}}
        )
        assert answer["chosen_options"] == ["Approve"]
        answered_at = datetime.now(UTC)
        # A second answer is refused.
        again = airflow.request("PATCH", hitl_path, json={"chosen_options": ["Reject"]})
        assert again.status_code == 409, again.text

        run = airflow.wait_run(DAG_ID, run_id, RUN_TIMEOUT, interval=0.3)
        assert run["state"] == "success", airflow.explain(DAG_ID, run_id)
        states = airflow.task_states(DAG_ID, run_id)
        assert states[APPROVE] == "success"
        assert states["rescue_approved"] == "success"
        assert airflow.ok("GET", hitl_path)["chosen_options"] == ["Approve"]

        approved = airflow.xcom(DAG_ID, run_id, "rescue_approved")
        assert sorted(approved["requested"]) == lockers
        assert sorted(v["locker_id"] for v in approved["dead"]) == lockers
        assert approved["held_for_approval"] == []
        assert sorted(approved["unlocked_job_ids"]) == jobs
        assert approved["given_back_job_ids"] == jobs
        assert sorted(approved["unlocked_queue_names"]) == [f"mass-{n}" for n in range(MASS)]
        now = gw.jobs()
        assert {job: now[job]["locked_by"] for job in jobs} == dict.fromkeys(jobs)
        assert all(now[job]["attempts"] == 0 for job in jobs), now
        assert not set(lockers) & set(gw.heartbeats())
        queues = gw.queues()
        assert all(queues[f"mass-{n}"]["locked_by"] is None for n in range(MASS)), queues
        assert [r["dag_run_id"] for r in _new_runs(airflow, before)] == [run_id]
        rescued = airflow.task_instances(DAG_ID, run_id)["rescue_approved"]
        log(
            f"{DAG_ID}: {MASS} killed -> run created {_since(killed_at, run['queued_at'])} s, "
            f"{APPROVE} {approve_state} at {(waiting_at - killed_at).total_seconds():.1f} s; "
            f"answered -> rescue_approved done {_since(answered_at, rescued['end_date'])} s"
        )
