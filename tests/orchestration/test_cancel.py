"""Cancelling runs: queued ones at once, running ones before their next node."""
import pytest
from django.utils import timezone

from apps.orchestration import engine
from apps.orchestration.models import PipelineRun, StageExecution
from tests.support import make_run

pytestmark = pytest.mark.django_db

NODES = [
    {"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "second"},
    {"id": "second", "type": "transform", "config": {"mapping": {"m": "first.checks.memory.value"}}},
]


def test_cancelled_queued_run_is_never_executed_and_exits_4(run_command):
    run = make_run(NODES)
    result = run_command("cancel_run", str(run.pk))
    assert result.exit_code == 0 and result.stdout == f"Run {run.pk} cancelled.\n"
    assert engine.run_execute(run_id=run.pk).status == "cancelled"
    assert StageExecution.objects.count() == 0
    shown = run_command("show_run", str(run.pk))
    assert shown.exit_code == 4
    assert "\nStatus: CANCELLED\n" in shown.stdout and shown.stdout.endswith("✗ Pipeline cancelled\n")
    assert shown.stderr == "CommandError: Pipeline cancelled: Cancelled on request before it started\n"


def test_running_run_with_a_cancel_request_stops_before_its_next_node():
    run = make_run(NODES)
    # A worker took the run, then died; meanwhile someone asked to cancel it.
    PipelineRun.objects.filter(pk=run.pk).update(status="running", cancel_requested_at=timezone.now())
    run = engine.run_execute(run_id=run.pk)
    assert run.status == "cancelled"
    assert run.error == "Cancelled on request before node 'first'"
    assert run.result["skipped_nodes"] == ["first", "second"]
    assert StageExecution.objects.count() == 0


def test_cancelling_a_finished_or_unknown_run_is_bad_input(run_command):
    run = engine.run_execute(run_id=make_run(NODES).pk)
    finished = run_command("cancel_run", str(run.pk))
    assert finished.exit_code == 2
    assert finished.stderr == f"CommandError: Run {run.pk} has already finished (completed)\n"
    missing = run_command("cancel_run", "999999")
    assert missing.exit_code == 2 and missing.stderr == "CommandError: Pipeline run not found: 999999\n"
