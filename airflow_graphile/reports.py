"""What an admin call did, as JSON-safe values for XCom and as a summary for the log.

Pure Python, so operators can use it without importing the hook.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from airflow_graphile.exceptions import GraphileWorkerInputError
from airflow_graphile.liveness import Verdict

# Why a job asked for was not changed.
SKIP_LOCKED = "locked"
SKIP_UNKNOWN = "unknown"
# The row appeared or changed between the function call and our look-up (a race).
SKIP_CHANGED = "changed concurrently"
# Another transaction held the job's row past lock_timeout, even after retries; the call
# skipped it instead of waiting (running again later will reach it).
SKIP_BUSY = "busy"
# The job is already as the call would leave it (permanently failed; at the asked run_at,
# priority, attempts): its row is not touched.
SKIP_ALREADY = "already so"

_SHOWN = 10
# An XCom is a row in Airflow's metadata database: id lists in it stop at this many,
# unless a task asks for all of them (return_ids="all").
XCOM_IDS = 1000
RETURN_IDS = ("sample", "all")


def parse_return_ids(value: Any) -> str:
    """``"sample"`` (counts and the first ids of each kind) or ``"all"`` (every id)."""
    if value not in RETURN_IDS:
        raise GraphileWorkerInputError(
            f"return_ids: {value!r} is not one of {', '.join(map(repr, RETURN_IDS))}"
        )
    return str(value)


def short_list(values: list[Any], limit: int = _SHOWN) -> str:
    """Render a list for a log line, eliding the middle of long ones."""
    if len(values) <= limit:
        return ", ".join(str(v) for v in values)
    return ", ".join(str(v) for v in values[:limit]) + f", ... (+{len(values) - limit} more)"


@dataclass
class Skips:
    """Why ids were left alone, kept compact: a million unknown ids are a list of ints.

    Each list is in id order; ``locked`` holds ``(id, locked_by, locked_at ISO time)``.
    """

    unknown: list[int] = field(default_factory=list)
    busy: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    already: list[int] = field(default_factory=list)
    locked: list[tuple[int, str | None, str]] = field(default_factory=list)

    def __len__(self) -> int:
        lists = (self.unknown, self.busy, self.changed, self.already, self.locked)
        return sum(len(ids) for ids in lists)

    def by_reason(self) -> dict[str, int]:
        counts = {
            SKIP_LOCKED: len(self.locked),
            SKIP_UNKNOWN: len(self.unknown),
            SKIP_BUSY: len(self.busy),
            SKIP_CHANGED: len(self.changed),
            SKIP_ALREADY: len(self.already),
        }
        return {reason: n for reason, n in counts.items() if n}

    def entries(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``{"id", "reason"}`` per skipped id (locked ones with ``locked_by``, ``locked_at``),
        in id order; the first ``limit`` of them."""
        merged = heapq.merge(
            ((i, {"id": i, "reason": SKIP_UNKNOWN}) for i in self.unknown),
            ((i, {"id": i, "reason": SKIP_BUSY}) for i in self.busy),
            ((i, {"id": i, "reason": SKIP_CHANGED}) for i in self.changed),
            ((i, {"id": i, "reason": SKIP_ALREADY}) for i in self.already),
            (
                (i, {"id": i, "reason": SKIP_LOCKED, "locked_by": by, "locked_at": at})
                for i, by, at in self.locked
            ),
            key=lambda pair: pair[0],
        )
        return [entry for _, entry in itertools.islice(merged, limit)]


@dataclass
class JobsReport:
    """The outcome of complete / permanently fail / reschedule for a list of job ids.

    ``affected`` are the ids Graphile Worker's function changed (for a dry run: would
    change), ascending. ``rows`` are the job rows it returned, when asked for. ``skips``
    says why each other id was not changed: ``locked`` (a lock younger than 4 hours, with
    ``locked_by`` and ``locked_at``), ``unknown`` (no such job), ``busy`` (held by another
    transaction past lock_timeout) or ``changed concurrently``.
    """

    function: str
    requested: list[int]
    affected: list[int]
    skips: Skips = field(default_factory=Skips)
    dry_run: bool = False
    rows: list[dict[str, Any]] | None = None

    @property
    def skipped(self) -> list[dict[str, Any]]:
        """One ``{"id", "reason", ...}`` per skipped id, in id order."""
        return self.skips.entries()

    def to_xcom(self, return_ids: str = "sample") -> dict[str, Any]:
        """Counts, and the ids of each kind: the first XCOM_IDS, or all with ``"all"``.

        ``ids_complete`` says whether every list holds every id.
        """
        limit = None if return_ids == "all" else XCOM_IDS
        sizes = (len(self.requested), len(self.affected), len(self.skips))
        return {
            "function": self.function,
            "dry_run": self.dry_run,
            "requested_count": len(self.requested),
            "affected_count": len(self.affected),
            "skipped_count": len(self.skips),
            "skipped_by_reason": self.skips.by_reason(),
            "requested": self.requested[:limit],
            "affected": self.affected[:limit],
            "skipped": self.skips.entries(limit),
            "ids_complete": limit is None or max(sizes) <= limit,
        }

    def summary(self) -> str:
        verb = "would change" if self.dry_run else "changed"
        head = (
            f"{self.function}: {len(self.requested)} requested, {verb} {len(self.affected)}, "
            f"skipped {len(self.skips)}"
        )
        lines = [head + (" (dry run: nothing was changed)" if self.dry_run else "")]
        if self.affected:
            lines.append(f"  {verb}: {short_list(self.affected)}")
        skips = self.skips
        if skips.locked:
            more = len(skips.locked) - _SHOWN
            lines.append(
                "  skipped, locked by a worker less than 4 hours ago (Graphile Worker leaves "
                "these alone): "
                + short_list([f"{i} (by {by} at {at})" for i, by, at in skips.locked[:_SHOWN]])
                + (f", ... (+{more} more)" if more > 0 else "")
            )
        for ids, what in (
            (skips.already, "already so (left untouched)"),
            (skips.unknown, "no such job"),
            (skips.changed, "changed by someone else meanwhile"),
            (skips.busy, "row held by another transaction past lock_timeout (run again later)"),
        ):
            if ids:
                lines.append(f"  skipped, {what}: {short_list(ids)}")
        return "\n".join(lines)


@dataclass
class UnlockReport:
    """The locks ``force_unlock_workers`` released (or, in a dry run, would release)."""

    requested: list[str]
    jobs: list[dict[str, Any]] = field(default_factory=list)
    queues: list[dict[str, Any]] = field(default_factory=list)
    dry_run: bool = False
    hint: str | None = None

    def by_locker(self) -> dict[str, dict[str, list[Any]]]:
        held: dict[str, dict[str, list[Any]]] = {
            worker: {"job_ids": [], "queue_names": []} for worker in self.requested
        }
        for job in self.jobs:
            held[job["locked_by"]]["job_ids"].append(job["id"])
        for queue in self.queues:
            held[queue["locked_by"]]["queue_names"].append(queue["queue_name"])
        return held

    @property
    def idle_lockers(self) -> list[str]:
        """Requested ids that held no lock at all."""
        held = self.by_locker()
        return [w for w in self.requested if not held[w]["job_ids"] and not held[w]["queue_names"]]

    def to_xcom(self) -> dict[str, Any]:
        return {
            "function": "force_unlock_workers",
            "dry_run": self.dry_run,
            "requested": self.requested,
            "unlocked_job_ids": sorted(job["id"] for job in self.jobs),
            "unlocked_queue_names": sorted(queue["queue_name"] for queue in self.queues),
            "by_locker": self.by_locker(),
            "held_nothing": self.idle_lockers,
        }

    def summary(self) -> str:
        verb = "would unlock" if self.dry_run else "unlocked"
        lines = [
            f"force_unlock_workers: {len(self.requested)} worker id(s), {verb} "
            f"{len(self.jobs)} job(s) and {len(self.queues)} queue(s)"
            + (" (dry run: nothing was changed)" if self.dry_run else "")
        ]
        for worker, held in self.by_locker().items():
            if held["job_ids"] or held["queue_names"]:
                lines.append(
                    f"  {worker}: jobs {short_list(held['job_ids']) or '-'}; "
                    f"queues {short_list(held['queue_names']) or '-'}"
                )
        if self.idle_lockers:
            lines.append(f"  held no locks: {short_list(self.idle_lockers)}")
        if self.hint:
            lines.append(f"  note: {self.hint}")
        return "\n".join(lines)


@dataclass
class RescueReport:
    """One rescue: every locker's verdict, and what was unlocked, given back or failed.

    ``held`` is set instead of ``unlock`` when more lockers were dead than allowed at
    once (nothing changed: a person decides). ``pro_tables`` non-empty: Graphile Worker
    Pro was found and, unless told otherwise, the rescue left everything to its sweeper.
    """

    dry_run: bool = False
    override: bool = False
    liveness: str = ""
    verdicts: list[Verdict] = field(default_factory=list)
    held: list[Verdict] = field(default_factory=list)
    unlock: UnlockReport | None = None
    given_back: list[int] = field(default_factory=list)
    poisoned: list[int] = field(default_factory=list)
    pro_tables: list[str] = field(default_factory=list)
    clock_enforced: bool | None = None

    def of_state(self, state: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.state == state]

    @property
    def left_to_pro(self) -> bool:
        return bool(self.pro_tables) and not self.verdicts

    def to_xcom(self) -> dict[str, Any]:
        unlock = (self.unlock or UnlockReport(requested=[], dry_run=self.dry_run)).to_xcom()
        return {
            **unlock,
            "function": "rescue",
            "liveness_check": self.liveness,
            "override_used": self.override,
            "dead": [v.to_xcom() for v in self.of_state("dead")],
            "spared": [v.to_xcom() for v in self.verdicts if v.state != "dead"],
            "held_for_approval": [v.to_xcom() for v in self.held],
            "given_back_job_ids": sorted(self.given_back),
            "poisoned_job_ids": sorted(self.poisoned),
            "graphile_worker_pro": self.pro_tables,
            "clock_enforced": self.clock_enforced,
        }

    def summary(self) -> str:
        if self.left_to_pro:
            return (
                f"Graphile Worker Pro found ({', '.join(self.pro_tables)}): its own sweeper "
                "recovers dead workers' jobs, so this rescue changed nothing (ignore_pro=True "
                "to act anyway)"
            )
        lines = [f"liveness: {self.liveness}"]
        for v in self.verdicts:
            lines.append(f"  {v.locker_id}: {v.state} [{v.evidence}] {v.reason}")
        if self.held:
            lines.append(
                f"{len(self.held)} lockers dead at once, more than max_workers: nothing was "
                "unlocked; a person must decide"
            )
        if self.unlock is not None:
            lines.append(self.unlock.summary())
        verb = "would be" if self.dry_run else "were"
        if self.given_back:
            lines.append(
                f"attempts given back (the crash used them) {verb}: "
                + short_list(sorted(self.given_back))
            )
        if self.poisoned:
            lines.append(
                f"permanently failed {verb}, their worker died under them too often: "
                f"{short_list(sorted(self.poisoned))}"
            )
        if self.clock_enforced is False:
            lines.append(
                "note: the heartbeat table does not enforce the database clock (start a worker "
                "with airflow-graphile-heartbeat >= 0.2 to add its trigger)"
            )
        return "\n".join(lines)


@dataclass
class CleanupReport:
    """Rows each cleanup step removed (or, in a dry run, would remove), in run order.

    GC_JOB_QUEUES also reports the queues it put back, with their ids, because a
    transaction open during its delete added a job to them (``removed`` counts the
    others), the jobs it pointed at a queue of the same name that ``add_job`` made
    meanwhile, and how long it waited for the transactions open at its delete.
    """

    removed: dict[str, int]
    task_identifiers_to_keep: list[str] = field(default_factory=list)
    dry_run: bool = False
    # While running: the step in flight, and the rows each of its committed batches removed.
    running: str | None = None
    batches: list[int] = field(default_factory=list)
    # GC_JOB_QUEUES: the queues (id, queue_name) its delete committed and its check after
    # the wait has not yet, the queues it put back, the jobs it re-pointed, its wait.
    unchecked_queues: list[tuple[int, str]] = field(default_factory=list)
    queues_put_back: list[tuple[int, str]] = field(default_factory=list)
    jobs_repointed: int = 0
    queue_wait_seconds: float = 0.0

    def finished(self) -> str:
        """The steps done before the one in flight."""
        done = ", ".join(
            f"{task} removed {count}"
            for task, count in self.removed.items()
            if task != self.running
        )
        return f"Steps finished before it: {done or 'none'}."

    def progress(self) -> str:
        """What was done before an error stopped the run."""
        parts = [self.finished()]
        if self.running is not None:
            if self.batches:
                parts.append(
                    f"{self.running} committed {len(self.batches)} batch(es) "
                    f"({sum(self.batches)} row(s)) before it."
                )
            if self.unchecked_queues:
                pairs = short_list([f"{name!r} (id {id_})" for id_, name in self.unchecked_queues])
                parts.append(
                    f"{self.running} committed the delete of {len(self.unchecked_queues)} "
                    "empty queue(s), but not its check that no transaction open at that "
                    "moment added a job to one of them: such a job will not run, and "
                    f"running cleanup again cannot find it (the names are gone): {pairs}. "
                    "Put a queue back (insert with overriding system value, same id and "
                    "name) or point its jobs at the queue of the same name."
                )
            else:
                parts.append(
                    f"{self.running} was rolled back where it stopped; running again is safe."
                )
        return " ".join(parts)

    def to_xcom(self) -> dict[str, Any]:
        return {
            "function": "cleanup",
            "dry_run": self.dry_run,
            "tasks": list(self.removed),
            "removed": dict(self.removed),
            "task_identifiers_to_keep": self.task_identifiers_to_keep,
            "queues_put_back": sorted(name for _, name in self.queues_put_back),
            "jobs_repointed": self.jobs_repointed,
            "queue_wait_seconds": round(self.queue_wait_seconds, 3),
        }

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        steps = ", ".join(f"{task} {verb} {count}" for task, count in self.removed.items())
        line = f"cleanup: {steps}" + (" (dry run: nothing was changed)" if self.dry_run else "")
        if self.queue_wait_seconds >= 0.1:
            line += (
                f"; GC_JOB_QUEUES waited {self.queue_wait_seconds:.1f} s for the "
                "transactions open at its delete to end"
            )
        if self.queues_put_back:
            names = short_list(sorted(name for _, name in self.queues_put_back))
            line += (
                f"; it put back {len(self.queues_put_back)} deleted queue(s) that a job "
                f"was added to meanwhile: {names}"
            )
        if self.jobs_repointed:
            line += (
                f"; it pointed {self.jobs_repointed} job(s) added to a deleted queue at the "
                "new queue of the same name"
            )
        return line


@dataclass
class BulkReport:
    """The outcome of a job function applied, batch by batch, to the jobs a filter selects.

    ``matched_at_start`` counts the matching jobs when the run began (ids above the
    largest id at that moment are never touched); ``processed`` the matching jobs the
    batches handed to Graphile Worker's function; ``changed`` the rows it changed;
    ``skipped_locked`` those it left alone because a worker held them;
    ``skipped_already`` those already as the call would leave them (not touched). A dry
    run fills ``locked_at_start`` and ``sample`` and changes nothing. ``seconds`` is the
    whole run, ``paused_seconds`` the part of it spent pausing between batches, as the
    ``duty_cycle`` (the share of time the run may spend in batches) asked.
    """

    function: str
    job_filter: dict[str, Any]
    dry_run: bool
    batch_size: int
    duty_cycle: float = 1.0
    matched_at_start: int = 0
    locked_at_start: int = 0
    processed: int = 0
    changed: int = 0
    batches: int = 0
    seconds: float = 0.0
    longest_batch_seconds: float = 0.0
    paused_seconds: float = 0.0
    skipped_busy: int = 0
    skipped_already: int = 0
    busy_sample: list[int] = field(default_factory=list)
    sample: list[dict[str, Any]] = field(default_factory=list)

    @property
    def skipped_locked(self) -> int:
        return self.processed - self.changed - self.skipped_busy - self.skipped_already

    def progress(self) -> str:
        """What is done so far, for a log line or an error raised midway."""
        return (
            f"{self.batches} batch(es) finished and committed before it: {self.processed} "
            f"matching job(s) handled, {self.changed} changed; the batch in flight was rolled "
            "back, and running again is safe"
        )

    def to_xcom(self) -> dict[str, Any]:
        return {
            "function": self.function,
            "filter": self.job_filter,
            "dry_run": self.dry_run,
            "matched_at_start": self.matched_at_start,
            "locked_at_start": self.locked_at_start,
            "processed": self.processed,
            "changed": self.changed,
            "skipped_locked": self.skipped_locked,
            "skipped_busy": self.skipped_busy,
            "skipped_already": self.skipped_already,
            "busy_sample": self.busy_sample,
            "batches": self.batches,
            "batch_size": self.batch_size,
            "duty_cycle": self.duty_cycle,
            "seconds": round(self.seconds, 3),
            "paused_seconds": round(self.paused_seconds, 3),
            "longest_batch_seconds": round(self.longest_batch_seconds, 4),
            "sample": self.sample,
        }

    def summary(self) -> str:
        if self.dry_run:
            lines = [
                f"{self.function} (dry run, nothing changed): {self.matched_at_start} job(s) "
                f"match, {self.locked_at_start} of them locked by a worker (they would be "
                "skipped)"
            ]
            lines += [
                f"  e.g. job {job['id']} {job['task_identifier']} "
                f"queue={job['queue_name'] or '-'} {job['state']} attempts "
                f"{job['attempts']}/{job['max_attempts']}"
                for job in self.sample
            ]
            return "\n".join(lines)
        rate = self.processed / self.seconds if self.seconds > 0 else 0.0
        busy = (
            f"; {self.skipped_busy} skipped as held by another transaction (e.g. "
            f"{short_list(self.busy_sample)}; run again later)"
            if self.skipped_busy
            else ""
        )
        already = (
            f", {self.skipped_already} already so (left untouched)" if self.skipped_already else ""
        )
        paused = (
            f", {self.paused_seconds:.1f} s of it paused between batches (duty_cycle "
            f"{self.duty_cycle:g})"
            if self.paused_seconds
            else ""
        )
        return (
            f"{self.function}: {self.changed} changed, {self.skipped_locked} skipped (locked "
            f"by a worker){already}, of {self.processed} matching job(s) in {self.batches} "
            f"batch(es) of up to {self.batch_size}; {self.seconds:.1f} s ({rate:.0f} jobs/s)"
            f"{paused}, longest batch {self.longest_batch_seconds * 1000:.0f} ms{busy}"
        )
