"""An operator's actions on a definition's schedule: pause it, resume it, run it now.

Pausing is kept on the definition (``schedule_paused``), so ``load_pipelines``
run later keeps the schedule paused; the PeriodicTask's ``enabled`` flag is
what beat reads, and it is changed with ``save()`` so django-celery-beat's
change marker moves and beat re-reads its schedules' clocks.
"""
from __future__ import annotations

from django.db import transaction

from apps.orchestration.launchrequest import LaunchError, Refusal
from apps.orchestration.models import PipelineDefinition, PipelineRun
from apps.orchestration.schedules import schedule_sync
from apps.orchestration.ticks import pipeline_run_schedule
from apps.orchestration.validation import DEFINITION_NAME
from apps.text import printable


def _scheduled_definition(name: str, *, lock: bool = False) -> PipelineDefinition:
    """The stored definition ``name`` that has a schedule; LaunchError (bad input) otherwise."""
    definitions = PipelineDefinition.objects.select_for_update() if lock else PipelineDefinition.objects.all()
    # A name no definition can have is not looked up (PostgreSQL refuses text with a NUL in it).
    definition = definitions.filter(name=name).first() if DEFINITION_NAME.fullmatch(name) else None
    if definition is None:
        raise LaunchError(f"Pipeline definition not found: {printable(name)}", Refusal.NOT_FOUND)
    config = definition.config if isinstance(definition.config, dict) else {}
    if not config.get("schedule"):
        raise LaunchError(f"Pipeline definition {printable(name)} has no schedule", Refusal.BAD_INPUT)
    if not definition.is_active:
        raise LaunchError(
            f"Pipeline definition {printable(name)} is inactive: its schedule does not run", Refusal.BAD_INPUT
        )
    return definition


def pipeline_schedule_pause(*, name: str, paused: bool) -> bool:
    """Pause (``paused``) or resume the schedule of the definition ``name``:
    records it on the definition and disables or enables its PeriodicTask
    (creating it when it is missing). Returns False when it was already so.
    Raises LaunchError (bad input) for an unknown definition, one without a
    schedule, or an inactive one; nothing is changed then."""
    from django_celery_beat.models import PeriodicTask

    from apps.orchestration.schedules import task_name

    with transaction.atomic():
        definition = _scheduled_definition(name, lock=True)
        task = PeriodicTask.objects.filter(name=task_name(definition.name)).first()
        already = definition.schedule_paused == paused and task is not None and task.enabled == (not paused)
        if definition.schedule_paused != paused:
            definition.schedule_paused = paused
            definition.save(update_fields=["schedule_paused"])
        schedule_sync(definition=definition)
    return not already


def pipeline_schedule_run_now(*, name: str) -> list[PipelineRun]:
    """Launch the schedule of the definition ``name`` once now, as a tick of
    it does (trigger ``schedule``, its payload, hosts and overlap policy),
    whether the schedule is paused or not. Returns the runs (queued, or one
    failed run saying why the definition cannot run), or an empty list when
    the overlap policy "skip" found a scheduled run of it queued or running.
    Raises LaunchError (bad input) as pipeline_schedule_pause does."""
    _scheduled_definition(name)
    return pipeline_run_schedule(definition_name=name)


def pipeline_schedule_active_run(*, name: str) -> PipelineRun | None:
    """The newest queued or running run the schedule of ``name`` launched (the one an overlap skip waits for)."""
    return (
        PipelineRun.objects.filter(
            definition_name=name, trigger=PipelineRun.Trigger.SCHEDULE, status__in=PipelineRun.ACTIVE
        )
        .order_by("-created_at", "-pk")
        .only("pk", "status")
        .first()
    )
