"""Cancelling runs: queued ones at once, running ones before their next node (or, with
--force, with their node stopped: the worker's side is in tests/workers/test_cancel.py)."""
from datetime import timedelta

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


def live_running_run(**fields) -> PipelineRun:
    """A run a live worker holds, executing node 'first'."""
    return make_run(NODES, status="running", current_node="first", claimed_by="w:1:t", started_at=timezone.now(),
                    lease_expires_at=timezone.now() + timedelta(minutes=5), **fields)


def test_force_on_a_running_run_asks_to_stop_its_node(run_command):
    run = live_running_run()
    result = run_command("cancel_run", str(run.pk), "--force")
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == (
        f"Cancellation of run {run.pk} requested: node 'first' is being stopped, and no node after it starts.\n"
    )
    row = PipelineRun.objects.get(pk=run.pk)
    assert (row.status, row.cancel_stop_node) == ("running", True) and row.cancel_requested_at is not None


def test_force_after_a_plain_cancel_keeps_the_first_request_time(run_command):
    run = live_running_run()
    assert "is not interrupted" in run_command("cancel_run", str(run.pk)).stdout
    first = PipelineRun.objects.get(pk=run.pk).cancel_requested_at
    assert "is being stopped" in run_command("cancel_run", str(run.pk), "--force").stdout
    row = PipelineRun.objects.get(pk=run.pk)
    assert row.cancel_stop_node and row.cancel_requested_at == first
    # Asked again: it says what is under way.
    assert "is being stopped" in run_command("cancel_run", str(run.pk)).stdout


@pytest.mark.parametrize("gone", [False, True], ids=["queued", "holder_gone"])
def test_force_on_a_queued_run_or_one_whose_worker_is_gone_is_the_plain_cancel(run_command, gone):
    fields = {"status": "running", "current_node": "first", "claimed_by": "w:1:t",
              "lease_expires_at": timezone.now() - timedelta(minutes=5)} if gone else {}
    run = make_run(NODES, **fields)
    result = run_command("cancel_run", str(run.pk), "--force")
    assert (result.exit_code, result.stdout, result.stderr) == (0, f"Run {run.pk} cancelled.\n", "")
    row = PipelineRun.objects.get(pk=run.pk)
    assert row.status == "cancelled" and not row.cancel_stop_node
    expected = "Cancelled on request; its worker was gone (at node 'first')" if gone else (
        "Cancelled on request before it started"
    )
    assert row.error == expected


@pytest.mark.parametrize("force", [[], ["--force"]], ids=["plain", "force"])
def test_cancelling_a_cancelled_run_says_so_and_changes_nothing(run_command, force):
    run = make_run(NODES)
    assert run_command("cancel_run", str(run.pk)).stdout == f"Run {run.pk} cancelled.\n"
    before = PipelineRun.objects.values().get(pk=run.pk)
    again = run_command("cancel_run", str(run.pk), *force)
    assert (again.exit_code, again.stdout, again.stderr) == (0, f"Run {run.pk} is already cancelled.\n", "")
    assert PipelineRun.objects.values().get(pk=run.pk) == before
