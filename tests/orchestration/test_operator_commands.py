"""The operator's commands on definitions and schedules: pause_schedule,
resume_schedule, run_schedule, list_pipelines, show_pipeline."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from apps.orchestration import beatstate
from apps.orchestration.models import PipelineDefinition, PipelineRun, ScheduleState
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


# -- run_schedule ------------------------------------------------------------------------


def test_run_schedule_queues_one_scheduled_run_with_the_schedules_payload(run_command):
    scheduled(schedule={"every": 60, "payload": {"server": "web-01"}})
    run_command("pause_schedule", "tick")  # a paused schedule can still be run by hand
    result = run_command("run_schedule", "tick")
    run = PipelineRun.objects.get()
    assert result.exit_code == 0
    assert result.stdout.startswith(f"Run {run.pk} queued (trace id {run.trace_id}).\n")
    assert (run.trigger, run.status, run.payload, run.definition_name) == ("schedule", "queued", {"server": "web-01"}, "tick")


def test_run_schedule_json_prints_the_queued_run(run_command):
    scheduled()
    result = run_command("run_schedule", "tick", "--json")
    run = PipelineRun.objects.get()
    assert result.exit_code == 0
    assert (result.json()["run_id"], result.json()["status"]) == (run.pk, "queued")


def test_run_schedule_skips_while_a_scheduled_run_is_active_with_overlap_skip(run_command):
    scheduled()
    first = run_command("run_schedule", "tick")
    assert first.exit_code == 0
    run = PipelineRun.objects.get()
    PipelineRun.objects.filter(pk=run.pk).update(status="running")
    result = run_command("run_schedule", "tick")
    assert (result.exit_code, result.stdout.strip()) == (0, f"skipped: run {run.pk} is still running (overlap: skip)")
    assert PipelineRun.objects.count() == 1


def test_run_schedule_with_overlap_allow_launches_beside_an_active_run(run_command):
    scheduled(schedule={"every": 60, "overlap": "allow"})
    run_command("run_schedule", "tick")
    assert run_command("run_schedule", "tick").exit_code == 0
    assert PipelineRun.objects.filter(trigger="schedule", status="queued").count() == 2


def test_run_schedule_of_an_invalid_definition_records_a_failed_run_and_exits_1(run_command):
    tick = scheduled()
    PipelineDefinition.objects.filter(pk=tick.pk).update(config={**tick.config, "nodes": [{"id": "x", "type": "nope"}]})
    result = run_command("run_schedule", "tick")
    run = PipelineRun.objects.get()
    assert (result.exit_code, run.status, run.trigger) == (1, "failed", "schedule")
    assert result.stderr.startswith("CommandError: Pipeline failed: Scheduled definition 'tick' cannot run: it is invalid")


def test_run_schedule_bad_names_exit_2_with_one_line_and_launch_nothing(run_command):
    PipelineDefinition.objects.create(name="plain", config={"version": "1.0", "nodes": NODES})
    for name, message in [
        ("nope", "CommandError: Pipeline definition not found: nope"),
        ("plain", "CommandError: Pipeline definition plain has no schedule"),
    ]:
        result = run_command("run_schedule", name)
        assert (result.exit_code, result.stdout, result.stderr.strip()) == (2, "", message)
    assert not PipelineRun.objects.exists()
    assert not PeriodicTask.objects.exists()
