"""Runs when workers come late, die, or get a run twice."""
import json
import os
import signal
import subprocess

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import Gate, wait_for

pytestmark = pytest.mark.subprocess

TWO_NODES = {"version": "1.0", "nodes": [
    {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "shape"},
    {"id": "shape", "type": "transform", "config": {"mapping": {"mem": "metrics.checks.memory.value"}}},
]}


@pytest.fixture
def pipeline(transactional_db):
    return PipelineDefinition.objects.create(name="p", config=TWO_NODES)


def test_no_worker_is_reported_and_the_run_waits_for_one(cli, start_worker, pipeline):
    result = cli("run_pipeline", "--definition", "p", "--wait", RUN_PICKUP_TIMEOUT_SECONDS="0.5")
    run = PipelineRun.objects.get()
    assert result.exit_code == 3
    assert result.stderr.startswith(
        f"CommandError: No worker has picked up run {run.pk} within 0.5s, "
        "and no live worker consumes its queue 'celery'.\n"
        "Start one with:  celery -A workers worker -l info\n"
        "The run stays queued and runs when a worker starts.\n"
    )
    assert run.status == "queued"
    start_worker()
    shown = cli("show_run", str(run.pk), "--wait", "--timeout", "60")
    assert shown.exit_code == 0, shown.stderr


def test_definition_edited_after_enqueue_does_not_change_the_run(cli, start_worker, pipeline):
    queued = json.loads(cli("run_pipeline", "--definition", "p", "--json").stdout)
    pipeline.config = {"version": "1.0", "nodes": [{"id": "other", "type": "context", "config": {"include": ["disk"]}}]}
    pipeline.save()
    start_worker()
    shown = cli("show_run", str(queued["run_id"]), "--wait", "--timeout", "60", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["executed_nodes"] == ["metrics", "shape"]


@pytest.mark.rabbitmq
def test_task_delivered_twice_executes_each_node_once(cli, start_worker, pipeline):
    queued = json.loads(cli("run_pipeline", "--definition", "p", "--json").stdout)
    duplicate = cli(
        "shell", "-c",
        f"from workers.celery import app; app.send_task('orchestration.execute_run', args=[{queued['run_id']}])",
    )
    assert duplicate.exit_code == 0, duplicate.stderr
    worker = start_worker(concurrency=2)
    shown = cli("show_run", str(queued["run_id"]), "--wait", "--timeout", "60")
    assert shown.exit_code == 0, shown.stderr
    # Both deliveries reached the worker; only one executed the run.
    assert worker.wait_for_log("Task orchestration.execute_run")
    counts = {node: StageExecution.objects.filter(node_id=node).count() for node in ("metrics", "shape")}
    assert counts == {"metrics": 1, "shape": 1}


@pytest.mark.rabbitmq
def test_run_of_a_killed_worker_process_is_redelivered_and_completes(cli, start_worker, gate, transactional_db):
    # The slow node waits at the gate until its process has been killed, however late the log line comes.
    PipelineDefinition.objects.create(name="slow", config={"version": "1.0", "defaults": Gate.DEFAULTS, "nodes": [
        {"id": "first", "type": "context", "config": {"include": ["memory"]}, "next": "slow"},
        gate.node("slow"),
    ]})
    worker = start_worker(concurrency=1, **gate.env)
    queued = json.loads(cli("run_pipeline", "--definition", "slow", "--json").stdout)
    run = PipelineRun.objects.get(pk=queued["run_id"])
    # Once the slow node is running, kill the process executing it.
    assert worker.wait_for_log(f"event=node.start run_id={run.pk} trace_id={run.trace_id} definition=slow node=slow")
    run.refresh_from_db()
    assert run.status == "running", run.status
    os.kill(int(run.claimed_by.split(":")[1]), signal.SIGKILL)
    gate.open()  # for the attempt after the redelivery
    shown = cli("show_run", str(run.pk), "--wait", "--timeout", "60", "--json")
    assert shown.exit_code == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["status"] == "completed"
    interrupted = StageExecution.objects.get(run=run, node_id="slow", attempt=1)
    assert interrupted.errors[0].startswith("interrupted: the process executing it (")
    # The node that had finished was not run again; the interrupted one was retried.
    assert StageExecution.objects.filter(run=run, node_id="first").count() == 1
    assert list(StageExecution.objects.filter(run=run, node_id="slow").values_list("attempt", "status").order_by("attempt")) == [
        (1, "failed"), (2, "succeeded")
    ]


@pytest.mark.rabbitmq
def test_ctrl_c_while_waiting_detaches_and_the_run_goes_on(cli, broker, start_worker, pipeline):
    proc = cli.popen("run_pipeline", "--definition", "p", "--wait", RUN_PICKUP_TIMEOUT_SECONDS="600")
    try:
        # Until the CLI is subscribed to its run's wake-ups, i.e. waiting.
        def waiting_run():
            run = PipelineRun.objects.first()
            return run if run is not None and broker.subscribers(run.pk) else None

        run = wait_for(waiting_run, what="the CLI to wait on its run")
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            pytest.fail(f"the CLI did not exit after Ctrl-C:\n{out}\n{err}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 3
    assert err == (
        f"CommandError: Detached from run {run.pk}; it goes on in the background.\n"
        f"Follow it:  python manage.py show_run {run.pk} --wait\n"
    )
    assert "Traceback" not in err
    start_worker()
    assert cli("show_run", str(run.pk), "--wait", "--timeout", "60").exit_code == 0
