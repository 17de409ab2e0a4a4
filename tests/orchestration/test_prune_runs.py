"""prune_runs: old finished runs and their stages go, in batches, and the monitoring state no
run has refreshed since; nothing else does."""
from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_celery_beat.models import PeriodicTask

from apps.orchestration.models import MonitorNotice, MonitorState, PipelineRun, StageExecution
from apps.orchestration.pruning import pipeline_runs_prune
from tests.orchestration.test_hostile_input import HOSTILE_TEXT, Verdicts, cli
from tests.orchestration.test_list_runs import past_run
from tests.support import ROOT
from workers.tasks import prune_runs

pytestmark = pytest.mark.django_db(transaction=True)

OLD, NEW = timedelta(days=40), timedelta(days=5)


def with_stages(run: PipelineRun, count: int = 3) -> PipelineRun:
    for index in range(count):
        StageExecution.objects.create(run=run, node_id=f"n{index}", node_type="transform", status="succeeded")
    return run


@pytest.fixture
def history():
    """Old and new runs of every status, each with stages."""
    runs = {
        "old_completed": with_stages(past_run(age=OLD, status="completed")),
        "old_failed": with_stages(past_run(age=OLD, status="failed", error="boom"), 2),
        "old_cancelled": with_stages(past_run(age=OLD, status="cancelled"), 1),
        "old_queued": past_run(age=OLD, status="queued"),
        "old_running": with_stages(past_run(age=OLD, status="running"), 1),
        "new_completed": with_stages(past_run(age=NEW, status="completed")),
        "new_failed": with_stages(past_run(age=NEW, status="failed", error="boom")),
    }
    return {name: run.pk for name, run in runs.items()}


def remaining(history: dict) -> set[str]:
    left = set(PipelineRun.objects.values_list("pk", flat=True))
    return {name for name, pk in history.items() if pk in left}


def test_old_finished_runs_and_their_stages_are_deleted_and_counted(history):
    runs_before, stages_before = PipelineRun.objects.count(), StageExecution.objects.count()
    result = cli("prune_runs", "--older-than", "30d")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Deleted 3 runs and 6 stages (finished runs created before ")
    assert remaining(history) == {"old_queued", "old_running", "new_completed", "new_failed"}
    assert PipelineRun.objects.count() == runs_before - 3
    assert StageExecution.objects.count() == stages_before - 6
    assert not StageExecution.objects.exclude(run__in=PipelineRun.objects.all()).exists()


def test_only_the_given_statuses_are_deleted(history):
    result = cli("prune_runs", "--older-than", "30d", "--status", "failed", "--status", "cancelled")
    assert result.stdout.startswith("Deleted 2 runs and 3 stages")
    assert remaining(history) == {"old_completed", "old_queued", "old_running", "new_completed", "new_failed"}
    result = cli("prune_runs", "--older-than", "1d", "--status", "failed", "completed")
    assert result.stdout.startswith("Deleted 3 runs and 9 stages")
    assert remaining(history) == {"old_queued", "old_running"}


def test_a_dry_run_deletes_nothing_and_reports_what_a_real_one_deletes(history):
    before = PipelineRun.objects.count(), StageExecution.objects.count()
    dry = cli("prune_runs", "--older-than", "30d", "--dry-run")
    assert dry.exit_code == 0 and dry.stdout.startswith("Would delete 3 runs and 6 stages (")
    assert (PipelineRun.objects.count(), StageExecution.objects.count()) == before
    assert cli("prune_runs", "--older-than", "30d").stdout.startswith("Deleted 3 runs and 6 stages (")


def test_queued_and_running_runs_are_never_deleted(history):
    assert cli("prune_runs", "--older-than", "1s").stdout.startswith("Deleted 5 runs and 12 stages")
    assert remaining(history) == {"old_queued", "old_running"}
    assert StageExecution.objects.filter(run_id=history["old_running"]).count() == 1
    with pytest.raises(ValueError):
        pipeline_runs_prune(older_than=OLD, statuses=["queued"])
    with pytest.raises(ValueError):
        pipeline_runs_prune(older_than=timedelta(0))


def test_runs_are_deleted_in_batches_each_its_own_statement(history):
    extra = [with_stages(past_run(age=OLD), 2).pk for _ in range(4)]
    with CaptureQueriesContext(connection) as queries:
        counts = pipeline_runs_prune(older_than=timedelta(days=30), batch_size=2)
    assert (counts.runs, counts.stages) == (3 + 4, 6 + 8)
    assert not PipelineRun.objects.filter(pk__in=extra).exists()
    assert remaining(history) == {"old_queued", "old_running", "new_completed", "new_failed"}
    run_deletes = [q["sql"] for q in queries if q["sql"].upper().startswith('DELETE FROM "ORCHESTRATION_PIPELINERUN"')]
    assert len(run_deletes) == 4  # 7 runs, 2 a batch
    # No statement reads the runs' blobs to delete them.
    for blob in ("config_snapshot", "payload", "result"):
        assert not any(f'"{blob}"' in q["sql"] for q in queries), blob


def board(definition: str, host: str, *, ran: timedelta, notified: timedelta | None = None) -> None:
    """A state of the monitoring board last refreshed ``ran`` ago, with a notice record of its
    notify node claimed ``notified`` ago when given."""
    now = timezone.now()
    MonitorState.objects.create(definition=definition, host=host, severity="critical", since=now - ran,
                                last_run_id=1, last_run_at=now - ran)
    if notified is not None:
        MonitorNotice.objects.create(definition=definition, host=host, node_id="notify", severity="critical",
                                     since=now - notified, notified_at=now - notified, run_id=1)


def test_monitoring_states_no_run_refreshed_since_go_with_the_runs(history):
    board("renamed", "web-1", ran=OLD, notified=OLD)  # its definition is gone: off the board
    board("disk", "db-gone", ran=OLD)
    board("disk", "db-1", ran=NEW, notified=OLD)  # still critical, notified long ago: both stay
    board("disk", "db-2", ran=NEW, notified=NEW)
    MonitorNotice.objects.create(definition="mute", host="", node_id="notify", severity="warning",
                                 since=timezone.now() - OLD, notified_at=timezone.now() - OLD, run_id=1)
    keys = lambda model: set(model.objects.values_list("definition", "host"))  # noqa: E731
    before = keys(MonitorState), keys(MonitorNotice)

    assert cli("prune_runs", "--older-than", "30d", "--status", "failed").stdout.count("\n") == 1
    assert (keys(MonitorState), keys(MonitorNotice)) == before  # runs of one status: the board stays
    dry = cli("prune_runs", "--older-than", "30d", "--dry-run").stdout.splitlines()
    assert dry[1] == "Would delete 2 monitoring states and 2 notice records no run has refreshed since then."
    assert (keys(MonitorState), keys(MonitorNotice)) == before

    pruned = cli("prune_runs", "--older-than", "30d")
    assert pruned.exit_code == 0, pruned.stderr
    assert pruned.stdout.splitlines()[1] == (
        "Deleted 2 monitoring states and 2 notice records no run has refreshed since then.")
    assert keys(MonitorState) == {("disk", "db-1"), ("disk", "db-2")}
    assert keys(MonitorNotice) == {("disk", "db-1"), ("disk", "db-2")}
    assert "renamed" not in cli("list_states").stdout


def test_nothing_old_enough_deletes_nothing(history):
    before = PipelineRun.objects.count(), StageExecution.objects.count()
    assert cli("prune_runs", "--older-than", "90d").stdout.startswith("Deleted 0 runs and 0 stages")
    assert (PipelineRun.objects.count(), StageExecution.objects.count()) == before


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--older-than", "30"],
        ["--older-than", "0d"],
        ["--older-than", "-30d"],
        ["--older-than", "30d", "--status", "queued"],
        ["--older-than", "30d", "--status", "running"],
        ["--older-than", "30d", "--status"],
        ["--older-than", "30d", "--status", "done"],
        ["--older-than", "99999999999d"],
    ],
)
def test_bad_input_is_one_line_exit_2_and_deletes_nothing(history, argv):
    before = PipelineRun.objects.count(), StageExecution.objects.count()
    result = cli("prune_runs", *argv)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (PipelineRun.objects.count(), StageExecution.objects.count()) == before


def test_hostile_text_in_every_prune_runs_option(history):
    verdicts = Verdicts()
    for text in HOSTILE_TEXT:
        verdicts.run("prune_runs", "--older-than", text, refused=True)
        verdicts.run("prune_runs", "--older-than", "30d", "--status", text, refused=True)
        verdicts.run("prune_runs", "--dry-run", "--older-than", text, refused=True)
    verdicts.assert_clean()
    assert len(remaining(history)) == len(history)


def test_the_task_prunes_with_the_retention_setting(history, settings):
    settings.RUN_RETENTION_DAYS = 30
    assert prune_runs() == 3
    assert remaining(history) == {"old_queued", "old_running", "new_completed", "new_failed"}
    assert prune_runs(days=1) == 2
    assert remaining(history) == {"old_queued", "old_running"}


def test_the_task_deletes_nothing_when_retention_is_off(history, settings):
    settings.RUN_RETENTION_DAYS = 0
    assert prune_runs() == 0
    assert len(remaining(history)) == len(history)


def test_beat_installs_the_daily_prune_entry_in_its_table():
    from workers.beat import PipelineScheduler
    from workers.celery import app

    scheduler = PipelineScheduler(app=app)
    task = PeriodicTask.objects.get(name="prune-runs")
    assert task.task == "orchestration.prune_runs" and task.enabled and task.kwargs == "{}"
    assert (task.crontab.minute, task.crontab.hour) == ("30", "4")
    # The database scheduler skips crontabs far from their hour, except hour 4: it is loaded at any time.
    assert "prune-runs" in scheduler.all_as_schedule()


@pytest.mark.parametrize("days, present", [("0", False), ("7", True)])
def test_the_beat_entry_exists_only_when_retention_is_on(days, present):
    env = {**os.environ, "RUN_RETENTION_DAYS": days}
    env.pop("PYTHONPATH", None)
    code = "import config.settings as s; print('prune-runs' in s.CELERY_BEAT_SCHEDULE)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == str(present), out.stderr


def test_expired_alert_dedup_records_are_pruned_and_live_ones_kept():
    from django.utils import timezone

    from apps.orchestration.models import AlertDelivery

    now = timezone.now()
    AlertDelivery.objects.create(key="a" * 64, definition_name="p", run_ids=[1], created_at=now - NEW,
                                 expires_at=now - timedelta(seconds=1))
    AlertDelivery.objects.create(key="b" * 64, definition_name="p", run_ids=[2], created_at=now,
                                 expires_at=now + timedelta(minutes=5))
    assert pipeline_runs_prune(older_than=OLD, dry_run=True).deliveries == 0
    assert AlertDelivery.objects.count() == 2
    counts = pipeline_runs_prune(older_than=OLD)
    assert counts.deliveries == 1
    assert list(AlertDelivery.objects.values_list("key", flat=True)) == ["b" * 64]
