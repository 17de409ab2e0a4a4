"""Waiting for a run to end (``--wait``): wake-ups, bounded reads, honest notices.

The row is read once at the start, once per wake-up from the run's channel,
and as a safety net at intervals that double up to 30 s. While waiting, the
watcher says once what holds the run up: that it is queued behind others
while workers are busy, or that the worker holding it stopped renewing its
lease and the recovery sweep will hand it to another. It gives up only when
``timeout`` passes, or when the run is still queued after the pickup timeout
and no live worker consumes its queue.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from django.conf import settings

from apps.orchestration import dispatch, events
from apps.orchestration.lease import CANCEL_EVENTS, CANCEL_STOP_NODE_EVENT, same_origin
from apps.orchestration.models import PipelineRun
from apps.orchestration.store import run_db_now, run_read
from apps.text import printable

MAX_CHECK_INTERVAL = 30.0


class Progress(Protocol):
    """Told what a watched run does (``--follow``): its progress events as
    heard, its row as read, and a cancel request once seen."""

    def event(self, event: dict) -> None: ...

    def row(self, run: PipelineRun) -> None: ...

    def cancel_requested(self, *, stop_node: bool = False) -> None: ...


@dataclass
class WaitOutcome:
    run: PipelineRun
    reason: str  # "finished", "timeout" or "no_worker"
    queries: int  # reads of the run row while waiting


def _holder_lost(run: PipelineRun) -> bool:
    return (
        run.status == PipelineRun.Status.RUNNING
        and run.lease_expires_at is not None
        and run.lease_expires_at <= run_db_now(run)
    )


def pipeline_run_wait(
    *,
    run_id: int,
    timeout: float | None = None,
    pickup_timeout: float | None = None,
    notice: Callable[[str], None] | None = None,
    progress: Progress | None = None,
) -> WaitOutcome:
    """Watch run ``run_id`` until it is terminal or ``timeout`` passes.

    When the run is still queued after ``pickup_timeout`` seconds, the live
    workers are asked which queues they consume: with none on the run's
    queue the wait ends with reason "no_worker"; otherwise it goes on and
    ``notice`` is told once how many runs wait ahead. ``notice`` is also told
    once when the run's holder stops renewing its lease, and the wait ends
    with "no_worker" then too when the run is for a host no live worker
    serves (only such a worker may take it over). KeyboardInterrupt
    propagates: the run itself goes on.

    With ``progress`` (``--follow``), each node's start and end are reported
    to it as the worker's progress events arrive, without reading the row,
    and from the row whenever it is read anyway (a run followed when half
    done, or events that were missed).
    """
    pickup_timeout = settings.RUN_PICKUP_TIMEOUT_SECONDS if pickup_timeout is None else pickup_timeout
    say = notice or (lambda text: None)
    start = time.monotonic()
    deadline = start + timeout if timeout is not None else None
    pickup_deadline: float | None = start + pickup_timeout
    told_lost = False
    with events.run_events(run_id=run_id) as subscription:
        run = run_read(run_id)
        queries = 1
        if progress is not None:
            progress.row(run)
        interval = 1.0 if events.has_channel() else 0.05
        next_check = start + interval
        while not run.is_terminal:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return WaitOutcome(run, "timeout", queries)
            if run.status != PipelineRun.Status.QUEUED:
                pickup_deadline = None
            elif pickup_deadline is not None and now >= pickup_deadline:
                pickup_deadline = None
                workers = dispatch.live_consumers(host=run.target_host)
                run, queries = run_read(run_id), queries + 1
                if run.status == PipelineRun.Status.QUEUED:
                    if not workers:
                        return WaitOutcome(run, "no_worker", queries)
                    say(_queued_notice(run, workers))
                continue
            if _holder_lost(run) and not told_lost:
                told_lost = True
                # Only a worker of its host may take over a run for a host: with none alive, nobody will.
                if run.target_host and dispatch.live_consumers(host=run.target_host) == []:
                    run, queries = run_read(run_id), queries + 1
                    if _holder_lost(run):
                        return WaitOutcome(run, "no_worker", queries)
                    continue
                say(
                    f"The worker holding run {run.pk} ({run.claimed_by}) stopped renewing its lease; "
                    "waiting for another worker to take it over."
                )
            wake_at = min(t for t in (deadline, next_check, pickup_deadline) if t is not None)
            event = subscription.wait(wake_at - now)
            step = events.progress_event(event)
            if step is not None:
                if progress is not None:
                    progress.event(step)
                continue  # progress only: the row has nothing new worth a read
            if event in CANCEL_EVENTS and progress is not None:
                progress.cancel_requested(stop_node=event == CANCEL_STOP_NODE_EVENT)
            if event == PipelineRun.Status.RUNNING:
                pickup_deadline = None  # taken by a worker: only its end is worth a read
                continue
            if event is None and time.monotonic() < next_check:
                continue
            run, queries = run_read(run_id), queries + 1
            if progress is not None:
                progress.row(run)
            if event is None:
                interval = min(interval * 2, MAX_CHECK_INTERVAL)
                next_check = time.monotonic() + _until_lease_end(run, interval)
    if progress is not None:
        progress.row(run)
    return WaitOutcome(run, "finished", queries)


def _until_lease_end(run: PipelineRun, interval: float) -> float:
    """When to read the row next: no later than just after the holder's lease
    ends, so a lost holder is noticed."""
    if run.status == PipelineRun.Status.RUNNING and run.lease_expires_at:
        now = run_db_now(run)
        if run.lease_expires_at > now:
            return min(interval, (run.lease_expires_at - now).total_seconds() + 0.5)
    return interval


def _queued_notice(run: PipelineRun, workers: list[str]) -> str:
    limit = run.config_snapshot.get("max_concurrent")
    if limit:
        running = same_origin(run).filter(status=PipelineRun.Status.RUNNING).count()
        if running >= limit:
            return (
                f"Run {run.pk} waits for a free slot: {printable(run.origin)} allows {limit} "
                f"run{'s' if limit != 1 else ''} at a time (max_concurrent) and {running} are running."
            )
    live = (
        f"{len(workers)} live worker{'s' if len(workers) != 1 else ''} "
        f"consume{'' if len(workers) != 1 else 's'} its queue"
    )
    waiting = dispatch.queued_run_ids(hosts=[run.target_host])
    if waiting is not None and run.pk not in waiting:
        return (
            f"Run {run.pk} is still queued and has no message in the queue ({live}); "
            "the recovery sweep sends it again."
        )
    count = dispatch.queue_length(host=run.target_host)
    queue = f" with {count} message(s) in the queue" if count else ""
    return f"Run {run.pk} is still queued{queue}; {live}, waiting for a free one."
