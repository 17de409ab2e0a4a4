"""The operator's commands on definitions and schedules: pause_schedule,
resume_schedule, run_schedule, list_pipelines, show_pipeline."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from apps.orchestration import beatstate
from apps.orchestration.models import PipelineDefinition, ScheduleState
from apps.orchestration.schedules import schedule_sync, task_name

pytestmark = pytest.mark.django_db

NODES = [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]


@pytest.fixture(autouse=True)
def no_embedded_broker(settings):
    # Launches here are never sent (the test's transaction does not commit): no broker is started for them.
    settings.CELERY_BROKER_IS_EMBEDDED = False


def scheduled(name="tick", **top) -> PipelineDefinition:
    top.setdefault("schedule", {"every": 60})
    made = PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": NODES, **top})
    schedule_sync(definition=made)
    return made


def enabled(name="tick") -> bool:
    return PeriodicTask.objects.get(name=task_name(name)).enabled


# -- pause_schedule / resume_schedule ---------------------------------------------------


def test_pause_disables_the_periodic_task_moves_beats_change_marker_and_drops_the_clock(run_command):
    scheduled()
    beatstate.schedule_states_sync(now=datetime.now(UTC))
    assert ScheduleState.objects.filter(definition_name="tick").exists()
    marker = PeriodicTasks.last_change()
    result = run_command("pause_schedule", "tick")
    assert (result.exit_code, result.stdout.strip()) == (0, "Schedule of tick paused.")
    assert not enabled()
    assert PipelineDefinition.objects.get(name="tick").schedule_paused
    assert PeriodicTasks.last_change() > marker  # beat's schedule_changed() sees it and re-syncs its clocks
    beatstate.schedule_states_sync(now=datetime.now(UTC))
    assert not ScheduleState.objects.filter(definition_name="tick").exists()


def test_pausing_twice_says_it_is_already_paused(run_command):
    scheduled()
    run_command("pause_schedule", "tick")
    result = run_command("pause_schedule", "tick")
    assert (result.exit_code, result.stdout.strip()) == (0, "Schedule of tick is already paused.")
    assert not enabled()


def test_resume_enables_it_again_and_beat_gets_its_clock_back(run_command):
    scheduled()
    run_command("pause_schedule", "tick")
    result = run_command("resume_schedule", "tick")
    assert (result.exit_code, result.stdout.strip()) == (0, "Schedule of tick resumed.")
    assert enabled() and not PipelineDefinition.objects.get(name="tick").schedule_paused
    beatstate.schedule_states_sync(now=datetime.now(UTC))
    assert ScheduleState.objects.filter(definition_name="tick").exists()
    again = run_command("resume_schedule", "tick")
    assert (again.exit_code, again.stdout.strip()) == (0, "Schedule of tick is not paused.")


def test_load_pipelines_keeps_a_paused_schedule_paused(run_command, tmp_path: Path):
    config = {"version": "1.0", "nodes": NODES, "schedule": {"every": 60}}
    (tmp_path / "tick.json").write_text(json.dumps(config))
    assert run_command("load_pipelines", "--dir", str(tmp_path)).exit_code == 0
    assert enabled()
    run_command("pause_schedule", "tick")
    (tmp_path / "tick.json").write_text(json.dumps({**config, "schedule": {"every": 120}}))
    assert run_command("load_pipelines", "--dir", str(tmp_path)).exit_code == 0
    assert not enabled()
    assert PeriodicTask.objects.get(name=task_name("tick")).interval.every == 120
    run_command("resume_schedule", "tick")
    assert enabled()


@pytest.mark.parametrize("command", ["pause_schedule", "resume_schedule"])
def test_bad_names_exit_2_with_one_line_and_change_nothing(run_command, command):
    scheduled()
    PipelineDefinition.objects.create(name="plain", config={"version": "1.0", "nodes": NODES})
    for name, message in [
        ("nope", "CommandError: Pipeline definition not found: nope"),
        ("plain", "CommandError: Pipeline definition plain has no schedule"),
    ]:
        result = run_command(command, name)
        assert (result.exit_code, result.stdout, result.stderr.strip()) == (2, "", message)
    assert enabled()
    assert not PipelineDefinition.objects.filter(schedule_paused=True).exists()
    assert not PeriodicTask.objects.filter(name=task_name("plain")).exists()
