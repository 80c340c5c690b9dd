"""What the complete, permanently fail and reschedule operators share: ids or a filter."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow_graphile.exceptions import GraphileWorkerFatalError, GraphileWorkerInputError
from airflow_graphile.filters import DEFAULT_BATCH_SIZE, parse_job_filter
from airflow_graphile.operators.base import GraphileWorkerBaseOperator, is_literal
from airflow_graphile.reports import parse_return_ids
from airflow_graphile.validation import parse_batch_size, parse_bool, parse_job_ids


class GraphileWorkerJobsOperator(GraphileWorkerBaseOperator):
    """Base class of the operators that call a job function, by ids or by filter.

    :param job_ids: Job ids: a list, an XCom result, or a string holding a JSON list
        (templated). An empty list is a logged no-op.
    :param job_filter: Instead of ids, the jobs to select: a dict, or a string holding a
        JSON object (templated), with any of
        ``task_identifiers``, ``queue_names``, ``states`` (ready, scheduled, retrying,
        failed, locked), ``created_before``/``created_after``,
        ``run_at_before``/``run_at_after`` (ISO 8601 with a time zone), ``min_attempts``,
        ``last_error_pattern`` (a PostgreSQL regular expression) and ``job_ids``. Applied
        in batches of ``batch_size``, each its own short transaction.
    :param allow_all: Let an empty ``job_filter`` select every job.
    :param batch_size: Jobs per batch with ``job_filter`` (1 to 100,000; default 2,000).
    :param duty_cycle: With ``job_filter``, the share of wall time the run may spend in
        batches, greater than 0 and at most 1 (templated; default 0.5): after a batch
        that took t seconds it pauses t * (1 - duty_cycle) / duty_cycle (at most 5 s), so
        that live workers keep the machine. 1.0 never pauses (fastest, hardest on the
        workers).
    :param fail_if_nothing_changed: Fail the task (without retry) when the call changed no
        job although some were asked for or matched - for example because every one was
        locked by a worker - so that the run shows red (templated). Default: succeed and
        report the skipped jobs. A dry run never fails for this.
    :param return_ids: With ``job_ids``, what the XCom lists: ``"sample"`` (default: the
        counts, and the first 1,000 ids of each kind) or ``"all"`` (every id; at a million
        ids that is megabytes in Airflow's metadata database).

    With ``job_ids`` the XCom is ``{"function", "dry_run", "requested_count",
    "affected_count", "skipped_count", "skipped_by_reason", "requested", "affected",
    "skipped", "ids_complete"}``; ``skipped`` items are ``{"id", "reason"}`` (reasons:
    ``locked``, with ``locked_by`` and ``locked_at``; ``unknown``; ``busy``; ``changed
    concurrently``).

    With ``job_filter`` the XCom is ``{"function", "filter", "dry_run", "matched_at_start",
    "processed", "changed", "skipped_locked", "batches", "seconds", "duty_cycle",
    "paused_seconds", "longest_batch_seconds", "sample"}`` (a dry run fills
    ``locked_at_start`` and ``sample`` instead of changing anything).
    """

    template_fields: Sequence[str] = (
        *GraphileWorkerBaseOperator.template_fields,
        "job_ids",
        "job_filter",
        "allow_all",
        "batch_size",
        "duty_cycle",
        "return_ids",
        "fail_if_nothing_changed",
    )

    def __init__(
        self,
        *,
        job_ids: Any = None,
        job_filter: Any = None,
        allow_all: bool | str = False,
        batch_size: int | str = DEFAULT_BATCH_SIZE,
        duty_cycle: float | str | None = None,
        return_ids: str = "sample",
        fail_if_nothing_changed: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_ids = job_ids
        self.job_filter = job_filter
        self.allow_all = allow_all
        self.batch_size = batch_size
        self.duty_cycle = duty_cycle
        self.return_ids = return_ids
        self.fail_if_nothing_changed = fail_if_nothing_changed
        self.check_literals(
            job_ids=(job_ids, parse_job_ids),
            job_filter=(
                job_filter,
                # A templated allow_all is only known at run time: check the rest now.
                lambda v: parse_job_filter(
                    v, allow_all=allow_all if is_literal(allow_all) else True
                ),
            ),
            batch_size=(batch_size, parse_batch_size),
            return_ids=(return_ids, parse_return_ids),
            fail_if_nothing_changed=(
                fail_if_nothing_changed,
                lambda v: parse_bool(v, "fail_if_nothing_changed"),
            ),
        )

    def run_job_function(self, function: str, **arguments: Any) -> dict[str, Any]:
        """Call the hook once, log the summary, return the XCom.

        The hook checks every value (once); this only chooses ids or filter.
        """
        by_filter = self.job_filter is not None and self.job_filter != ""
        if by_filter == (self.job_ids is not None):
            raise GraphileWorkerInputError(
                f"{function}: give either job_ids or job_filter (got "
                f"{'both' if by_filter else 'neither'})"
            )
        return_ids = parse_return_ids(self.return_ids)
        must_change = parse_bool(self.fail_if_nothing_changed, "fail_if_nothing_changed")
        hook = self.get_hook()
        if by_filter:
            bulk = hook.run_job_function_on_filter(
                function,
                self.job_filter,
                allow_all=self.allow_all,
                batch_size=self.batch_size,
                duty_cycle=self.duty_cycle,
                dry_run=self.is_dry_run(),
                **arguments,
            )
            if not bulk.dry_run and bulk.matched_at_start == 0:
                self.log.info("%s: no job matches %s; nothing to do", function, bulk.job_filter)
            self.log.info("%s", bulk.summary())
            if must_change and not bulk.dry_run and bulk.processed and not bulk.changed:
                raise GraphileWorkerFatalError(
                    f"{function}: {bulk.processed} job(s) matched and none was changed "
                    f"(fail_if_nothing_changed=True): {bulk.summary()}"
                )
            return bulk.to_xcom()
        report = hook.run_job_function(
            function, self.job_ids, dry_run=self.is_dry_run(), **arguments
        )
        if not report.requested:
            self.log.info("%s: job_ids is empty, nothing to do", function)
        self.log.info("%s", report.summary())
        if must_change and not report.dry_run and report.requested and not report.affected:
            raise GraphileWorkerFatalError(
                f"{function}: none of the {len(report.requested)} job(s) asked for was changed "
                f"(fail_if_nothing_changed=True): {report.summary()}"
            )
        return report.to_xcom(return_ids)
