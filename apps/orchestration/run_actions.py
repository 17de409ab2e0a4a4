"""What an operator does to a run that exists: cancel it, or retry it
(as a new run, through the launcher)."""
from __future__ import annotations

from django.db import transaction
from django.db.models.functions import Coalesce, Now

from apps.orchestration import events, lease, rollup
from apps.orchestration.launch import pipeline_run_launch
from apps.orchestration.launchrequest import (
    AlreadyRetried,
    LaunchError,
    LaunchRequest,
    Refusal,
    ResolvedDefinition,
)
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.selectors import RUN_ID_MAX, run_newest_retry_id
from apps.orchestration.validation import node_path


def pipeline_run_cancel(*, run_id: int, stop_node: bool = False) -> PipelineRun:
    """Cancel run ``run_id``.

    A queued run is cancelled at once (a worker that receives it later
    leaves it alone), and so is a running run whose holder is gone (its lease
    ran out). A live run is asked to stop: the request is published to its
    worker at once and also read at every node boundary, so no later node
    starts; the node being executed finishes, or with ``stop_node`` is
    interrupted (``cancel_stop_node``; its worker process goes on), and the
    run ends cancelled. A request to stop the node may follow a plain one.

    The run is returned as read afterwards, with ``already_cancelled`` set:
    True when it had been cancelled before this call. Raises LaunchError for
    an unknown run or one that finished otherwise.
    """
    cancelled = {
        "status": PipelineRun.Status.CANCELLED,
        "finished_at": Now(),
        "current_node": "",
        "cancel_requested_at": Now(),
    }
    if not 0 < run_id <= RUN_ID_MAX:
        raise LaunchError(f"Pipeline run not found: {run_id}", Refusal.NOT_FOUND)
    runs = PipelineRun.objects.filter(pk=run_id)
    already_cancelled = False
    if _queued_run_cancel(run_id=run_id, fields=cancelled):
        events.run_event_publish(run_id=run_id, status=PipelineRun.Status.CANCELLED)
    elif lease.run_end_abandoned(run_id=run_id, fields=cancelled, reason="Cancelled on request"):
        events.run_event_publish(run_id=run_id, status=PipelineRun.Status.CANCELLED)
    elif _running_run_cancel_request(run_id=run_id, stop_node=stop_node):
        event = lease.CANCEL_STOP_NODE_EVENT if stop_node else lease.CANCEL_EVENT
        events.run_event_publish(run_id=run_id, status=event)
    else:
        already_cancelled = True  # unless the read below finds it running (a request made before) or not cancelled
    run = runs.first()
    if run is None:
        raise LaunchError(f"Pipeline run not found: {run_id}", Refusal.NOT_FOUND)
    if run.is_terminal and run.status != PipelineRun.Status.CANCELLED:
        raise LaunchError(f"Run {run_id} has already finished ({run.status})", Refusal.STATE)
    run.already_cancelled = already_cancelled and run.status == PipelineRun.Status.CANCELLED
    return run


def _running_run_cancel_request(*, run_id: int, stop_node: bool) -> bool:
    """Record a cancel request on run ``run_id`` when it is running and has
    none yet (with ``stop_node``: none that stops the node); whether it did."""
    running = PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.RUNNING)
    if stop_node:
        # A plain request made earlier keeps its time; the node is stopped now.
        return bool(running.filter(cancel_stop_node=False).update(
            cancel_stop_node=True, cancel_requested_at=Coalesce("cancel_requested_at", Now())
        ))
    return bool(running.filter(cancel_requested_at__isnull=True).update(cancel_requested_at=Now()))


def _queued_run_cancel(*, run_id: int, fields: dict) -> bool:
    """End run ``run_id`` with ``fields`` when it is still queued, counted in the
    metrics' rollup in the same transaction; whether it was queued."""
    with transaction.atomic():
        if not PipelineRun.objects.filter(pk=run_id, status=PipelineRun.Status.QUEUED).update(
            error="Cancelled on request before it started", duration_ms=0, **fields
        ):
            return False
        rollup.run_end_tally(run_id=run_id)
    return True


def retry_request(*, run_id: int, from_failed: bool = False, force: bool = False) -> LaunchRequest:
    """The launch request of a retry of run ``run_id``: its snapshot,
    payload, origin, source, environment and host, a new trace id,
    ``trigger`` retry and the link to it; with ``from_failed``, the node
    results of the nodes that succeeded before its first failed node, to be
    reused; with ``force``, launched even when the run has a retry already
    (the launcher refuses that otherwise). Reads only; raises LaunchError for
    an unknown run, a run still queued or running, and ``from_failed`` for a
    run with no failed node; AlreadyRetried (without ``force``) for a run
    retried already, before anything else is tried (the broker), and checked
    again as the retry is stored, for two retries at once."""
    original = PipelineRun.objects.filter(pk=run_id).first() if 0 < run_id <= RUN_ID_MAX else None
    if original is None:
        raise LaunchError(f"Pipeline run not found: {run_id}", Refusal.NOT_FOUND)
    if not original.is_terminal:
        raise LaunchError(f"Run {run_id} is still {original.status}: retry it once it has finished", Refusal.STATE)
    reused: dict = {}
    if from_failed:
        before = _reused_before_failure(original)
        if before is None:
            raise LaunchError(
                f"Run {run_id} did not fail at a node ({original.status}, no failed node): "
                "there is nothing to retry from; retry it without --from-failed",
                Refusal.STATE,
            )
        reused = before
    if not force:
        newest = run_newest_retry_id(run_id=original.pk)
        if newest is not None:
            raise AlreadyRetried(original.pk, newest)
    resolved = ResolvedDefinition(original.config_snapshot, original.origin_kind, original.origin, original.definition)
    return LaunchRequest(
        resolved=resolved, payload=original.payload, source=original.source, environment=original.environment,
        trigger=PipelineRun.Trigger.RETRY, retry_of=original, retry_again=force, reused_results=reused,
        target_host=original.target_host,
    )


def _reused_before_failure(run: PipelineRun) -> dict | None:
    """``run``'s node_results entries of the nodes that succeeded before its
    first failed node along the snapshot's path; None when no node failed."""
    node_results = (run.result or {}).get("node_results") or {}
    reused: dict[str, dict] = {}
    for node in node_path(run.config_snapshot.get("nodes") or []):
        entry = node_results.get(node["id"])
        if entry is None:
            return None  # reached a node that never ran: the run stopped before any failure
        if entry.get("status") == StageExecution.Status.FAILED:
            return reused
        if entry.get("status") == StageExecution.Status.SUCCEEDED:
            reused[node["id"]] = {key: value for key, value in entry.items() if key != "reused"}
    return None


def pipeline_run_retry(*, run_id: int, from_failed: bool = False, force: bool = False) -> PipelineRun:
    """Launch a new run retrying run ``run_id`` (see retry_request), through
    pipeline_run_launch: stored as queued and enqueued for a worker once
    committed. With ``from_failed`` the nodes before the original's first
    failed node are not executed again: the engine reuses their recorded
    outputs. Raises LaunchError (nothing stored) for a run that cannot be
    retried, AlreadyRetried for one retried already (without ``force``; of
    two retries at once, one is refused so), and as pipeline_run_launch does."""
    return pipeline_run_launch(request=retry_request(run_id=run_id, from_failed=from_failed, force=force))
