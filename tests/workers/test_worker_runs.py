"""run_pipeline through a real worker, on the embedded broker and on Redis."""
import json

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution

pytestmark = [pytest.mark.subprocess, pytest.mark.rabbitmq]

@pytest.fixture
def failing(transactional_db):
    return PipelineDefinition.objects.create(
        name="failing",
        config={"version": "1.0", "nodes": [{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.nothing"}}}]},
    )


def test_wait_prints_the_result_display_from_the_worker(cli, worker, health_check):
    result = cli("run_pipeline", "--definition", "health-check", "--wait", "--trace-id", "trace-ok-1")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("=" * 60 + "\nPIPELINE RESULT\n" + "=" * 60 + "\n\nStatus: COMPLETED\nDefinition: health-check\nTrace ID: trace-ok-1\n")
    assert "--- context (metrics) ---\n  Checks run: 3\n" in result.stdout
    assert result.stdout.endswith("✓ Pipeline completed successfully\n")
    run = PipelineRun.objects.get()
    assert run.claimed_by.split(":")[1] != ""  # executed by a worker process
    # The worker log tells the run's story by trace id: run start, each node, run end.
    assert worker.wait_for_log(f"event=run.end run_id={run.pk} trace_id=trace-ok-1")
    story = [line for line in worker.log().splitlines() if "trace-ok-1" in line and "event=" in line]
    events = [line.split("event=")[1].split()[0] for line in story]
    assert events == ["run.start"] + ["node.start", "node.end"] * 3 + ["run.end"]
    assert all(f"run_id={run.pk}" in line and "definition=health-check" in line for line in story)


def test_wait_on_a_failing_run_exits_1_with_the_display(cli, worker, failing):
    result = cli("run_pipeline", "--definition", "failing", "--wait")
    assert result.exit_code == 1
    assert "Status: FAILED\n" in result.stdout and result.stdout.endswith("✗ Pipeline failed\n")
    assert result.stderr.strip() == "CommandError: Pipeline failed: Node 't' failed: Path not found: payload.nothing"


def test_wait_json_prints_the_record(cli, worker, health_check):
    result = cli("run_pipeline", "--definition", "health-check", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "completed" and data["exit_code"] == 0
    assert data["executed_nodes"] == ["metrics", "analyze", "notify"]


def test_fire_and_forget_then_the_run_completes(cli, worker, health_check):
    result = cli("run_pipeline", "--definition", "health-check", "--json")
    assert result.exit_code == 0, result.stderr
    queued = json.loads(result.stdout)
    assert queued["status"] == "queued" and set(queued) == {"run_id", "trace_id", "status", "target_host", "group_id"}
    assert queued["target_host"] is None and queued["group_id"] is None
    shown = cli("show_run", str(queued["run_id"]), "--wait", "--timeout", "60")
    assert shown.exit_code == 0, shown.stderr
    assert f"Run ID: {queued['run_id']}\n" in shown.stdout


def test_fire_and_forget_text_says_how_to_follow(cli, worker, health_check):
    log = "/var/log/pipelines/worker.log"
    result = cli("run_pipeline", "--definition", "health-check", "--trace-id", "t-ff", WORKER_LOG_PATH=log, LOG_FORMAT="text")
    run = PipelineRun.objects.get()
    assert result.exit_code == 0
    assert result.stdout == (
        f"Run {run.pk} queued (trace id t-ff).\n"
        f"Follow it:  python manage.py show_run {run.pk} --wait\n"
        f"Worker log: grep -E ' trace_id=t-ff( |$)' {log}\n"
    )


def test_two_clis_at_once(cli, worker, health_check):
    procs = [cli.popen("run_pipeline", "--definition", "health-check", "--wait", "--json") for _ in range(2)]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, err
        outputs.append(json.loads(out))
    assert {o["status"] for o in outputs} == {"completed"}
    assert len({o["run_id"] for o in outputs}) == 2
    assert StageExecution.objects.count() == 6


def test_timeout_gives_up_with_exit_3_and_the_run_goes_on(cli, worker, transactional_db):
    PipelineDefinition.objects.create(name="slow", config={"version": "1.0", "nodes": [
        {"id": "cpu", "type": "context", "config": {"include": ["cpu"], "options": {"cpu": {"interval": 2}}}}]})
    result = cli("run_pipeline", "--definition", "slow", "--wait", "--timeout", "0.5")
    run = PipelineRun.objects.get()
    assert result.exit_code == 3
    assert f"CommandError: Gave up waiting for run {run.pk} after 0.5s (status: " in result.stderr
    assert "The run goes on in the background.\n" in result.stderr
    assert f"Follow it:  python manage.py show_run {run.pk} --wait" in result.stderr
    assert cli("show_run", str(run.pk), "--wait", "--timeout", "60").exit_code == 0
