"""Celery tasks: thin wrappers that take an id and call the engine."""
from celery import shared_task
from django.conf import settings

from apps.orchestration.engine import RunBusy, run_execute

EXECUTE_RUN = "orchestration.execute_run"


@shared_task(name=EXECUTE_RUN, bind=True, max_retries=None)
def execute_run(self, run_id: int) -> None:
    """Execute PipelineRun ``run_id``; a missing or finished run is left alone.

    When another live worker holds the run (a duplicate delivery), check
    again after its lease: by then it has finished or its holder is gone.
    """
    try:
        run_execute(run_id=run_id)
    except RunBusy as exc:
        raise self.retry(exc=exc, countdown=settings.RUN_LEASE_SECONDS)
