"""Celery tasks: thin wrappers that take an id and call a service."""
from celery import shared_task

from apps.orchestration.dispatch import EXECUTE_RUN_TASK, RECOVER_RUNS_TASK
from apps.orchestration.engine import run_execute
from apps.orchestration.recovery import runs_recover


@shared_task(name=EXECUTE_RUN_TASK)
def execute_run(run_id: int) -> None:
    """Execute PipelineRun ``run_id``.

    A missing or finished run is left alone, and so is one that another live
    process holds (a duplicate message): should that process die, its lease
    runs out and the recovery sweep sends the run again.
    """
    run_execute(run_id=run_id)


@shared_task(name=RECOVER_RUNS_TASK, ignore_result=True)
def recover_runs() -> int:
    """One recovery sweep (the beat entry); returns how many runs were re-published."""
    return len(runs_recover())
