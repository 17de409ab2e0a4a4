"""cancel_run --force with real processes: the node being executed is interrupted in the
worker's pool process (asleep, or waiting on a socket), recorded as interrupted, no later
node starts, the run ends cancelled, and the same pool process goes on with the next run.
A plain cancel, which lets the node finish, is tested in test_recovery.py."""
from __future__ import annotations

import json
import time

import pytest

from apps.orchestration.interrupt import INTERRUPTED_ERROR
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import Gate, StderrLines, wait_for

pytestmark = pytest.mark.subprocess

# The node left alone takes this long at least (two samples of the longest interval the checks
# allow, each a sleep); it must be stopped well before.
NODE_SECONDS = 20
AFTER = {"id": "after", "type": "context", "config": {"include": ["memory"]}}


def sleepy(name: str = "sleepy") -> PipelineDefinition:
    """A definition whose node ``slow`` sleeps NODE_SECONDS (CPU samples), then ``after``."""
    half = {"interval": NODE_SECONDS / 2}
    slow = {"id": "slow", "type": "context", "next": "after",
            "config": {"include": ["cpu", "processes"], "options": {"cpu": half, "processes": half}}}
    return PipelineDefinition.objects.create(name=name, config={"version": "1.0", "nodes": [slow, AFTER]})


def quick() -> PipelineDefinition:
    return PipelineDefinition.objects.create(name="quick", config={"version": "1.0", "nodes": [AFTER]})


def node_started(run: PipelineRun, node: str) -> str:
    return f"event=node.start run_id={run.pk} trace_id={run.trace_id} definition={run.origin} node={node}"


def pool_pid(run: PipelineRun) -> str:
    """The pid of the process that executed ``run`` (its lease token is host:pid:random)."""
    return PipelineRun.objects.get(pk=run.pk).claimed_by.split(":")[1]


def assert_interrupted(run: PipelineRun, worker) -> StageExecution:
    """``run`` ended cancelled with node ``slow`` interrupted and ``after`` never started."""
    run = PipelineRun.objects.get(pk=run.pk)
    assert run.status == "cancelled", run.error
    assert run.error == "Cancelled on request: node 'slow' was interrupted"
    assert run.result["skipped_nodes"] == ["after"]
    assert run.result["node_results"]["slow"]["error"] == INTERRUPTED_ERROR
    stage = StageExecution.objects.get(run=run, node_id="slow")
    assert (stage.status, stage.errors, stage.output) == ("failed", [INTERRUPTED_ERROR], {})
    assert not StageExecution.objects.filter(run=run, node_id="after").exists()
    assert node_started(run, "after") not in worker.log()
    return stage


@pytest.mark.rabbitmq
def test_force_stops_a_sleeping_node_and_the_same_pool_process_runs_the_next_run(cli, start_worker, transactional_db):
    sleepy()
    quick()
    worker = start_worker(concurrency=1)
    waiting = StderrLines(cli.popen("run_pipeline", "--definition", "sleepy", "--wait", "--timeout", "120"))
    try:
        run = wait_for(lambda: PipelineRun.objects.filter(definition__name="sleepy").first(), what="the run")
        assert worker.wait_for_log(node_started(run, "slow")), worker.log()
        asked = time.monotonic()
        cancel = cli("cancel_run", str(run.pk), "--force")
        assert cancel.exit_code == 0, cancel.stderr
        assert cancel.stdout == (
            f"Cancellation of run {run.pk} requested: node 'slow' is being stopped, and no node after it starts.\n"
        )
        wait_for(lambda: PipelineRun.objects.filter(pk=run.pk, status="cancelled").exists(),
                 timeout=NODE_SECONDS * 3, what="the run to end cancelled")
        seen = time.monotonic() - asked
        code, _, _ = waiting.finish()
    finally:
        waiting.stop()
    # The waiting run_pipeline exits 4, as for any cancelled run.
    assert code == 4, waiting.text()
    assert waiting.text().endswith("CommandError: Pipeline cancelled: Cancelled on request: node 'slow' was interrupted")
    stage = assert_interrupted(run, worker)
    run.refresh_from_db()
    assert run.cancel_stop_node
    # On the database's clock: from the stored request to the run's end.
    took = (run.finished_at - run.cancel_requested_at).total_seconds()
    print(f"\ncancel_run --force: run ended {took:.2f}s after the request was stored "
          f"({seen:.2f}s after cancel_run started, process start included); the node ran {stage.duration_ms:.0f}ms")
    assert took < NODE_SECONDS and stage.duration_ms < NODE_SECONDS * 1000
    # The worker goes on: the same pool process executes the next run to its end.
    assert worker.proc.poll() is None
    nxt = cli("run_pipeline", "--definition", "quick", "--wait", "--timeout", "90", "--json")
    assert nxt.exit_code == 0, nxt.stderr + worker.log()
    nxt_run = PipelineRun.objects.get(pk=json.loads(nxt.stdout)["run_id"])
    assert nxt_run.status == "completed"
    assert pool_pid(nxt_run) == pool_pid(run)
    assert "exited with" not in worker.log()  # billiard's line for a pool process that died


@pytest.mark.rabbitmq
def test_force_after_a_plain_cancel_stops_a_node_waiting_on_a_socket(cli, start_worker, gate, transactional_db):
    # The node waits for an HTTP answer (the gate, never opened here): a blocking socket read.
    PipelineDefinition.objects.create(name="gated", config={
        "version": "1.0", "defaults": Gate.DEFAULTS, "nodes": [gate.node("slow", "after"), AFTER],
    })
    worker = start_worker(concurrency=1, **gate.env)
    followed = StderrLines(cli.popen("run_pipeline", "--definition", "gated", "--follow"))
    try:
        followed.wait_for("▶ slow (notify) started")
        wait_for(gate.reached, what="the node at the gate")
        run = PipelineRun.objects.get(definition__name="gated")
        plain = cli("cancel_run", str(run.pk))
        assert plain.stdout == (
            f"Cancellation of run {run.pk} requested: node 'slow' is not interrupted, and no node after it starts.\n"
        )
        assert worker.wait_for_log(f"event=run.cancel_requested run_id={run.pk}"), worker.log()
        followed.wait_for("■ cancellation requested: the node being executed finishes")
        forced = cli("cancel_run", str(run.pk), "--force")
        assert forced.exit_code == 0, forced.stderr
        assert "node 'slow' is being stopped" in forced.stdout
        followed.wait_for("■ cancellation requested: the node being executed is stopped and no later node starts")
        code, _, _ = followed.finish()
    finally:
        followed.stop()
    # Followers see the node end as interrupted, and the run's end.
    assert code == 4, followed.text()
    assert "✗ slow (notify) failed in " in followed.text()
    assert f"attempt 1: {INTERRUPTED_ERROR}" in followed.text()
    assert followed.text().endswith("CommandError: Pipeline cancelled: Cancelled on request: node 'slow' was interrupted")
    assert "▶ after" not in followed.text()
    assert_interrupted(run, worker)
    assert len(gate.server.requests) == 1  # not retried
    # Cancelling it again says so, with or without --force, and changes nothing.
    for extra in ([], ["--force"]):
        again = cli("cancel_run", str(run.pk), *extra)
        assert (again.exit_code, again.stdout, again.stderr) == (0, f"Run {run.pk} is already cancelled.\n", "")
    shown = cli("show_run", str(run.pk))
    assert shown.exit_code == 4
    assert shown.stderr == "CommandError: Pipeline cancelled: Cancelled on request: node 'slow' was interrupted\n"
    assert worker.proc.poll() is None


def test_force_stops_the_node_of_an_inline_run(cli, start_worker, transactional_db):
    # Executed by run_pipeline itself; the cancel comes from another shell. (The worker only
    # keeps the embedded broker up, so the inline run hears the request as a worker would.)
    sleepy()
    worker = start_worker(concurrency=1)
    inline = StderrLines(cli.popen("run_pipeline", "--definition", "sleepy", "--inline"))
    try:
        run = wait_for(
            lambda: PipelineRun.objects.filter(definition__name="sleepy", status="running").first(),
            what="the inline run to start",
        )
        cancel = cli("cancel_run", str(run.pk), "--force")
        assert cancel.exit_code == 0, cancel.stderr
        code, stdout, _ = inline.finish(timeout=NODE_SECONDS * 3)
    finally:
        inline.stop()
    assert code == 4, inline.text()
    assert stdout.rstrip().endswith("✗ Pipeline cancelled")
    stage = assert_interrupted(run, worker)
    assert stage.duration_ms < NODE_SECONDS * 1000
