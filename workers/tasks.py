"""Celery tasks: thin wrappers that take an id and call a service."""
import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import DatabaseError

from apps.broker.names import EXECUTE_RUN_TASK, PRUNE_RUNS_TASK, RECOVER_RUNS_TASK, RUN_SCHEDULED_TASK
from apps.orchestration.engine import run_execute
from apps.orchestration.models import PipelineRun
from apps.orchestration.pruning import pipeline_runs_prune
from apps.orchestration.recovery import runs_recover
from apps.orchestration.ticks import pipeline_run_schedule

logger = logging.getLogger("workers.tasks")


class RunUnsuccessful(Exception):
    """The run this task executed ended failed or cancelled. Declared in the
    task's ``throws``: Celery records the task as failed (Flower counts it)
    and logs one INFO line, without a traceback."""


# The end of a run is in its row; the task only reports it, so a long error is cut here.
_ERROR_CHARS = 200


@shared_task(  # type: ignore[call-overload]  # celery-types predates the acks_on_failure option
    name=EXECUTE_RUN_TASK,
    throws=(RunUnsuccessful,),
    # Acknowledged when it raises (Celery's default, stated): a failed run is recorded, never redelivered.
    acks_on_failure=True,
)
def execute_run(run_id: int, definition: str | None = None, trace_id: str | None = None) -> str | None:
    """Execute PipelineRun ``run_id``; returns its status when this delivery
    completed it.

    ``definition`` and ``trace_id`` only label the message (Flower shows
    them); messages with only ``run_id`` work the same. A missing or finished
    run is left alone, and so is one that another live process holds (a
    duplicate message), one at its definition's concurrency limit, and one
    this process lost midway (lease lost, database gone): those return None.
    Should a holder die, its lease runs out and the recovery sweep sends the
    run again. Raises RunUnsuccessful when this delivery ended the run
    failed or cancelled.
    """
    run = run_execute(run_id=run_id)
    if run is None or not run.ended_here:
        return None
    if run.status in (PipelineRun.Status.FAILED, PipelineRun.Status.CANCELLED):
        error = run.error if len(run.error) <= _ERROR_CHARS else run.error[: _ERROR_CHARS - 3] + "..."
        raise RunUnsuccessful(f"run {run.pk} {run.status}: {error}")
    return run.status


@shared_task(name=RECOVER_RUNS_TASK, ignore_result=True)
def recover_runs() -> int:
    """One recovery sweep (the beat entry); returns how many runs were re-published."""
    return len(runs_recover())


@shared_task(name=RUN_SCHEDULED_TASK, ignore_result=True)
def run_scheduled(definition: str, due: str | None = None) -> list[int] | None:
    """One tick of a definition's schedule (sent by beat): launch its runs
    (one, or one per host) through the launcher. Returns their ids (none
    when the tick is skipped).

    A database that cannot be reached is logged in one line; the next tick
    tries again (a tick is not retried: it would come late and overlap the next).
    """
    try:
        runs = pipeline_run_schedule(definition_name=definition, due=due)
    except DatabaseError as exc:
        logger.error(
            "event=schedule.failed definition=%s due=%s error=%s", definition, due, f"{type(exc).__name__}: {exc}"
        )
        return None
    return [run.pk for run in runs]


@shared_task(name=PRUNE_RUNS_TASK, ignore_result=True)
def prune_runs(days: int | None = None) -> int:
    """Delete finished runs older than ``days`` (default: this worker's
    RUN_RETENTION_DAYS) with their stages, in batches; returns how many runs
    were deleted. The daily ``prune-runs`` beat entry sends it without
    ``days``, so with RUN_RETENTION_DAYS at 0 it deletes nothing, even when
    beat's table still holds the entry from before retention was turned off.
    """
    days = settings.RUN_RETENTION_DAYS if days is None else days
    if days <= 0:
        logger.info("event=runs.prune_skipped reason=retention_off")
        return 0
    return pipeline_runs_prune(older_than=timedelta(days=days)).runs
