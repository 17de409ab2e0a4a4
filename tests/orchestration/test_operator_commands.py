"""The operator's commands on definitions and schedules: pause_schedule,
resume_schedule, run_schedule, list_pipelines, show_pipeline."""
from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django_celery_beat.models import PeriodicTask, PeriodicTasks

from apps.orchestration import beatstate
from apps.orchestration.models import PipelineDefinition, PipelineRun, ScheduleState
from apps.orchestration.schedules import schedule_sync, task_name
from tests.support import make_run

pytestmark = pytest.mark.django_db

NODES = [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]


@pytest.fixture(autouse=True)
def no_embedded_broker(settings):
    # Launches here are never sent (the test's transaction does not commit): no broker is started for them.
    settings.CELERY_BROKER_IS_EMBEDDED = False


def scheduled(name="tick", **top) -> PipelineDefinition:
    top.setdefault("schedule", {"every": 60})
    made = PipelineDefinition.objects.create(
        name=name, description=top.get("description", ""), config={"version": "1.0", "nodes": NODES, **top}
    )
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
    # The listings say why it is not enabled.
    listed = json.loads(run_command("list_schedules", "--json").stdout)
    assert [(item["definition"], item["enabled"], item["paused"]) for item in listed] == [("tick", False, True)]
    assert "no (paused)" in run_command("list_schedules").stdout.splitlines()[1]


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
    listed = json.loads(run_command("list_schedules", "--json").stdout)
    assert [(item["enabled"], item["paused"]) for item in listed] == [(True, False)]
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


# -- list_pipelines / show_pipeline ----------------------------------------------------


def some_definitions() -> None:
    scheduled("tick", description="Every minute", schedule={"every": 60, "overlap": "allow"},
              triggers=[{"alert": {"source": "alertmanager"}}])
    PipelineDefinition.objects.create(
        name="plain", config={"version": "1.0", "nodes": [*NODES, {"id": "n", "type": "notify", "config": {}}]}
    )


def test_list_pipelines_shows_each_definition_with_schedule_triggers_and_last_run(run_command):
    some_definitions()
    make_run(name="tick")
    newest = make_run(name="tick", trigger="schedule")
    run_command("pause_schedule", "tick")
    result = run_command("list_pipelines")
    assert result.exit_code == 0
    header, plain, tick = [re.split(r"\s{2,}", line.strip()) for line in result.stdout.splitlines()]
    assert header[:5] == ["NAME", "ACTIVE", "NODES", "SCHEDULE", "TRIGGERS"]
    assert plain == ["plain", "yes", "2", "-", "-", "-"]
    assert tick[:5] == ["tick", "yes", "1", "every 60s, overlap allowed (paused)", "alert:alertmanager"]
    assert tick[5].startswith(f"{newest.pk} queued 20") and tick[6] == "Every minute"


def test_list_pipelines_json(run_command):
    some_definitions()
    run = make_run(name="tick")
    result = run_command("list_pipelines", "--json")
    plain, tick = result.json()
    assert plain == {
        "name": "plain", "description": "", "is_active": True, "node_count": 2, "schedule": None,
        "schedule_paused": False, "triggers": [], "last_run": None,
    }
    assert (tick["schedule"], tick["triggers"], tick["last_run"]["run_id"], tick["last_run"]["status"]) == (
        "every 60s, overlap allowed", ["alert:alertmanager"], run.pk, "queued",
    )


def test_list_pipelines_with_none_stored_says_how_to_load_them(run_command):
    result = run_command("list_pipelines")
    assert (result.exit_code, result.stdout) == (0, "No pipeline definitions. Load them with: python manage.py load_pipelines\n")
    assert run_command("list_pipelines", "--json").json() == []


def test_list_pipelines_reads_the_last_runs_in_one_query_whatever_the_number_of_definitions(
    run_command, django_assert_max_num_queries
):
    for i in range(12):
        PipelineDefinition.objects.create(name=f"d{i}", config={"version": "1.0", "nodes": NODES})
        make_run(name=f"d{i}")
    with django_assert_max_num_queries(3):
        assert run_command("list_pipelines").exit_code == 0


def test_show_pipeline_lists_nodes_as_the_dry_run_does_with_schedule_triggers_and_runs(run_command):
    some_definitions()
    runs = [make_run(name="tick") for _ in range(6)]
    result = run_command("show_pipeline", "tick")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    dry = run_command("run_pipeline", "--definition", "tick", "--dry-run").stdout
    nodes = out[out.index("Nodes (1):"):out.index("Schedule:")]
    assert nodes in dry
    assert out.startswith("Definition: tick\nDescription: Every minute\n\nNodes (1):\n  1. [context] m\n")
    assert "Schedule: every 60s, overlap allowed — enabled, next due " in out
    assert "Triggers: alert:alertmanager\n" in out
    assert "Last runs (5):\n" in out
    listed = [int(line.split()[0]) for line in out.split("Last runs (5):\n")[1].splitlines()[1:]]
    assert listed == [run.pk for run in reversed(runs[1:])]
    run_command("pause_schedule", "tick")
    assert "Schedule: every 60s, overlap allowed — paused\n" in run_command("show_pipeline", "tick").stdout


def test_show_pipeline_without_schedule_or_runs(run_command):
    some_definitions()
    out = run_command("show_pipeline", "plain").stdout
    assert "Schedule: none\nTriggers: none\n\nLast runs: none\n" in out
    assert "  2. [notify] n\n" in out


def test_show_pipeline_json(run_command):
    some_definitions()
    run = make_run(name="tick")
    shown = run_command("show_pipeline", "tick", "--json").json()
    assert (shown["name"], shown["node_count"], shown["schedule_enabled"]) == ("tick", 1, True)
    assert shown["nodes"] == [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]
    assert shown["next_due_at"] is not None
    assert [r["run_id"] for r in shown["runs"]] == [run.pk]
    plain = run_command("show_pipeline", "plain", "--json").json()
    assert (plain["schedule"], plain["schedule_enabled"], plain["next_due_at"], plain["runs"]) == (None, None, None, [])


def test_show_pipeline_of_an_unknown_name_is_exit_2_with_run_pipelines_wording(run_command):
    result = run_command("show_pipeline", "nope")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", "CommandError: Pipeline definition not found: nope\n")
    assert run_command("run_pipeline", "--definition", "nope").stderr == result.stderr


def test_the_last_runs_of_list_pipelines_are_read_along_the_definition_index():
    from apps.orchestration.selectors import pipeline_definitions_overview
    from tests.orchestration.test_list_plans import assert_indexed, plans, some_runs

    some_runs(60)
    for name in ("d1", "d2", "never-ran"):
        PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": NODES})
    found = plans(pipeline_definitions_overview)
    for plan in found:
        assert_indexed(plan, ordered=False)
    (listing,) = [plan for plan in found if "orchestration_pipelinedefinition" in plan.split("\n--\n")[0]]
    assert "pipelinerun_definition_created" in listing.split("\n--\n")[1], listing
