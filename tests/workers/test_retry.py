"""retry_run --from-failed through a real worker: the node before the failed
one is not executed again (its webhook is called once in all) and its output
is reused by the retry."""
import json

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.httpserver import start_server

pytestmark = pytest.mark.subprocess

FLAKY = {
    "version": "1.0",
    "nodes": [
        {"id": "announce", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_A_URL"}, "next": "check"},
        {"id": "check", "type": "notify", "config": {"driver": "webhook", "url_env": "HOOK_B_URL"}, "next": "report"},
        {"id": "report", "type": "transform", "config": {"mapping": {"announced": "announce.succeeded"}}},
    ],
}


@pytest.fixture
def hooks():
    """``a`` for the first node; ``b`` for the second, which answers 500 once, then 200."""
    a, stop_a = start_server()
    b, stop_b = start_server()
    b.queue_json({"error": "down"}, status=500)
    try:
        yield a, b
    finally:
        stop_a()
        stop_b()


def test_retry_from_failed_does_not_call_the_first_nodes_webhook_again(cli, start_worker, hooks, transactional_db):
    a, b = hooks
    PipelineDefinition.objects.create(name="flaky", config=FLAKY)
    start_worker(OUTBOUND_ALLOW_HOSTS="127.0.0.1", HOOK_A_URL=a.url("/announce"), HOOK_B_URL=b.url("/check"))

    failed = cli("run_pipeline", "--definition", "flaky", "--wait", "--json")
    assert failed.exit_code == 1, failed.stderr
    original = json.loads(failed.stdout)
    assert original["status"] == "failed" and original["skipped_nodes"] == ["report"]
    assert original["error"] == "Node 'check' failed: Notification failed (webhook: HTTP 500)"

    retried = cli("retry_run", str(original["run_id"]), "--from-failed", "--wait", "--json")
    assert retried.exit_code == 0, retried.stderr
    data = json.loads(retried.stdout)
    assert data["status"] == "completed" and data["trigger"] == "retry" and data["retry_of"] == original["run_id"]
    assert data["executed_nodes"] == ["announce", "check", "report"]
    announce = data["node_results"]["announce"]
    assert announce["reused"] is True and announce["output"] == original["node_results"]["announce"]["output"]
    assert data["node_results"]["report"]["output"] == {"announced": 1}
    # The first node's side effect happened once in all; the failed node ran again and got its 200.
    assert len(a.requests) == 1 and len(b.requests) == 2
    retry = PipelineRun.objects.get(pk=data["run_id"])
    assert retry.claimed_by.split(":")[1] != ""  # executed by the worker
    assert list(StageExecution.objects.filter(run=retry).values_list("node_id", flat=True)) == ["check", "report"]

    listed = cli("list_runs", "--status", "failed", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [row["run_id"] for row in json.loads(listed.stdout)] == [original["run_id"]]


def test_retry_without_waiting_prints_the_queued_run(cli, start_worker, hooks, transactional_db):
    a, b = hooks
    PipelineDefinition.objects.create(name="flaky", config=FLAKY)
    start_worker(OUTBOUND_ALLOW_HOSTS="127.0.0.1", HOOK_A_URL=a.url("/announce"), HOOK_B_URL=b.url("/check"))
    original = json.loads(cli("run_pipeline", "--definition", "flaky", "--wait", "--json").stdout)
    queued = cli("retry_run", str(original["run_id"]))
    retry = PipelineRun.objects.get(retry_of_id=original["run_id"])
    assert queued.exit_code == 0, queued.stderr
    assert queued.stdout.startswith(f"Run {retry.pk} queued (trace id {retry.trace_id}).\n")
    shown = cli("show_run", str(retry.pk), "--wait", "--timeout", "60")
    assert shown.exit_code == 0, shown.stderr
    assert f"\nRun ID: {retry.pk}\nRetry of: run {original['run_id']}\n" in shown.stdout
    # A plain retry runs every node again.
    assert len(a.requests) == 2
