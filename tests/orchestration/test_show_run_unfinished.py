"""show_run of a queued or running run: what is known so far, exit 3, no error line."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from apps.orchestration.models import PipelineRun
from tests.support import make_run

pytestmark = pytest.mark.django_db

NODES = [
    {"id": "first", "type": "transform", "config": {"mapping": {"x": "payload.x"}, "defaults": {"x": 0}}, "next": "second"},
    {"id": "second", "type": "transform", "config": {"mapping": {"y": "payload.x"}, "defaults": {"x": 0}}},
]


def running_in_second_node() -> PipelineRun:
    run = make_run(NODES)
    PipelineRun.objects.filter(pk=run.pk).update(
        status="running", started_at=datetime.now(UTC), current_node="second",
        result={"executed_nodes": ["first"], "skipped_nodes": [], "node_results": {
            "first": {"type": "transform", "status": "succeeded", "duration_ms": 1.5, "output": {"x": 0}},
        }},
    )
    run.refresh_from_db()
    return run


def test_a_running_run_shows_the_nodes_ended_so_far_and_the_current_node_exit_3(run_command):
    run = running_in_second_node()
    shown = run_command("show_run", str(run.pk))
    assert shown.exit_code == 3
    assert shown.stderr == ""
    assert "\nStatus: RUNNING\n" in shown.stdout
    assert "--- transform (first) ---\n" in shown.stdout and "  Duration: 1.50ms\n" in shown.stdout
    assert shown.stdout.endswith(
        "Current node: second (transform)\n\n… Pipeline running\n"
        f"Not finished yet: show_run {run.pk} --wait follows it to its end.\n"
    )


def test_a_queued_run_shows_its_status_and_exit_3(run_command):
    run = make_run(NODES)
    shown = run_command("show_run", str(run.pk))
    assert (shown.exit_code, shown.stderr) == (3, "")
    assert "\nStatus: QUEUED\n" in shown.stdout and "Current node" not in shown.stdout
    assert shown.stdout.endswith(f"… Pipeline queued\nNot finished yet: show_run {run.pk} --wait follows it to its end.\n")


def test_json_of_a_running_run_carries_its_exit_code_and_nodes_so_far(run_command):
    run = running_in_second_node()
    shown = run_command("show_run", str(run.pk), "--json")
    record = json.loads(shown.stdout)
    assert (shown.exit_code, shown.stderr) == (3, "")
    assert (record["status"], record["exit_code"], record["executed_nodes"]) == ("running", 3, ["first"])


def test_an_unknown_run_is_still_bad_input(run_command):
    shown = run_command("show_run", "999999")
    assert (shown.exit_code, shown.stdout, shown.stderr) == (2, "", "CommandError: Pipeline run not found: 999999\n")


@pytest.mark.subprocess
def test_the_exit_code_reaches_the_shell(manage):
    run = make_run(NODES)
    shown = manage("show_run", str(run.pk))
    assert (shown.exit_code, shown.stderr) == (3, "")
    assert "Status: QUEUED" in shown.stdout
