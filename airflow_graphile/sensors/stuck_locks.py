"""Sensor that fires when a Graphile Worker lock has been held longer than it should."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

from airflow_graphile.exceptions import GraphileWorkerTransientError
from airflow_graphile.reports import short_list
from airflow_graphile.validation import parse_duration, parse_identifiers

# How much longer than the sensor's timeout Airflow's defer timeout waits, as a backstop.
BACKSTOP_SECONDS = 30

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook
    from airflow_graphile.hooks.stuck_locks import StuckLockQuery


class GraphileWorkerStuckLocksSensor(BaseSensorOperator):
    """Wait until some job or named-queue lock has been held longer than ``stuck_after``.

    A worker that crashed (OOM kill, node drain, kill -9) keeps its locks; Graphile
    Worker frees them only after 4 hours. This sensor finds them in minutes. It does
    not decide that a locker is dead: a slow job holds its lock too. Follow it with a
    heartbeat check before force-unlocking anything.

    :param stuck_after: How old a lock must be to count as stuck: a timedelta or
        seconds (templated). A live worker's long job is "stuck" too; the heartbeat
        check that follows tells them apart.
    :param task_identifiers: Only consider jobs of these tasks (templated).
    :param queue_names: Only consider these named queues and their jobs (templated).
    :param graphile_worker_conn_id: Airflow connection to Graphile Worker's database.
    :param worker_schema: Schema Graphile Worker is installed in.
    :param deferrable: Wait in the triggerer instead of a worker slot; default from
        ``[operators] default_deferrable``.

    Returns (XCom) ``{"stuck_after_seconds", "lockers": [{"locker_id", "job_ids",
    "queue_names", "oldest_locked_at", "oldest_lock_age_seconds"}]}``, where locker_id is
    the worker id (Graphile Worker 0.16) or pool id (0.17+) found in ``locked_by``.
    """

    template_fields: Sequence[str] = (
        "graphile_worker_conn_id",
        "worker_schema",
        "stuck_after",
        "task_identifiers",
        "queue_names",
    )
    ui_color = "#ffe4c4"

    def __init__(
        self,
        *,
        stuck_after: timedelta | float | str,
        task_identifiers: Any = None,
        queue_names: Any = None,
        graphile_worker_conn_id: str = "graphile_worker_default",
        worker_schema: str | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.stuck_after = stuck_after
        self.task_identifiers = task_identifiers
        self.queue_names = queue_names
        self.graphile_worker_conn_id = graphile_worker_conn_id
        self.worker_schema = worker_schema
        self.deferrable = deferrable
        self._checked: StuckLockQuery | None = None
        self._hook: GraphileWorkerHook | None = None

    def _query(self) -> StuckLockQuery:
        """The rendered arguments, checked once per task run and handed on typed."""
        if self._checked is None:
            from airflow_graphile.hooks.stuck_locks import StuckLockQuery

            self._checked = StuckLockQuery(
                parse_duration(self.stuck_after, "stuck_after"),
                parse_identifiers(self.task_identifiers, "task_identifiers") or None,
                parse_identifiers(self.queue_names, "queue_names") or None,
            )
        return self._checked

    def _get_hook(self) -> GraphileWorkerHook:
        if self._hook is None:
            from airflow_graphile.hooks.graphile_worker import GraphileWorkerHook

            self._hook = GraphileWorkerHook(
                graphile_worker_conn_id=self.graphile_worker_conn_id,
                worker_schema=self.worker_schema or None,
            )
        return self._hook

    def _result(self, lockers: list[dict[str, Any]]) -> dict[str, Any]:
        for locker in lockers:
            self.log.info(
                "Stuck: %s holds jobs [%s] and queues [%s]; oldest lock %.0f s old",
                locker["locker_id"],
                short_list(locker["job_ids"]),
                short_list(locker["queue_names"]),
                locker["oldest_lock_age_seconds"],
            )
        seconds = self._query().stuck_after.total_seconds()
        return {"stuck_after_seconds": seconds, "lockers": lockers}

    def poke(self, context: Context) -> PokeReturnValue:
        query = self._query()
        lockers = self._get_hook().find_stuck_locks(
            query.stuck_after,
            task_identifiers=query.task_identifiers,
            queue_names=query.queue_names,
        )
        if not lockers:
            self.log.info("No lock held longer than %s", query.stuck_after)
            return PokeReturnValue(is_done=False)
        return PokeReturnValue(is_done=True, xcom_value=self._result(lockers))

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.cancel()

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        # Poke once here, so a bad connection, schema or role fails at once and a
        # stuck lock that is already there needs no trigger.
        first = self.poke(context)
        if first.is_done:
            return first.xcom_value
        from airflow_graphile.triggers.stuck_locks import GraphileWorkerStuckLocksTrigger

        query = self._query()
        # The trigger ends itself at the sensor's timeout; Airflow's own defer timeout is
        # only a backstop (it cancels the trigger and logs an error).
        self.defer(
            trigger=GraphileWorkerStuckLocksTrigger(
                graphile_worker_conn_id=self.graphile_worker_conn_id,
                worker_schema=self._get_hook().worker_schema,
                stuck_after_seconds=query.stuck_after.total_seconds(),
                task_identifiers=query.task_identifiers,
                queue_names=query.queue_names,
                poll_interval=self.poke_interval,
                end_by=time.time() + self.timeout,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + max(self.poke_interval, BACKSTOP_SECONDS)),
        )

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "timeout":
            message = f"Stuck-lock sensor timed out: {event.get('message')}"
            if self.soft_fail:
                raise AirflowSkipException(message)
            raise AirflowSensorTimeout(message)
        if event.get("status") != "success":
            # Retryable: the database may be back by the next try.
            raise GraphileWorkerTransientError(
                f"Stuck-lock check failed in the triggerer: {event.get('message', event)}"
            )
        return self._result(event["lockers"])
