"""run_pipeline as a real child process: exit codes and messages scripts rely on."""
import json
import subprocess

import pytest

from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.support import PROCESS_TIMEOUT, claim_redis_db, make_run, manage_py_popen, require_redis

pytestmark = pytest.mark.subprocess

def test_completed_run_exits_0_and_prints_the_display(manage, health_check):
    result = manage("run_pipeline", "--inline", "--definition", "health-check")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("=" * 60 + "\nPIPELINE RESULT\n")
    assert result.stdout.endswith("✓ Pipeline completed successfully\n")
    # The console driver writes the notification to the run's log.
    assert "health-check" in result.stderr
    assert PipelineRun.objects.get().status == "completed"


def test_failed_run_exits_1(manage, tmp_path):
    path = tmp_path / "fails.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": [
        {"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.nothing"}}}]}))
    result = manage("run_pipeline", "--inline", "--config", str(path))
    assert result.exit_code == 1
    assert result.stderr.strip().endswith("CommandError: Pipeline failed: Node 't' failed: Path not found: payload.nothing")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--definition", "nonexistent"], "CommandError: Pipeline definition not found: nonexistent"),
        (["--config", "missing.json"], "CommandError: Config file not found: missing.json"),
        (["--definition", "a", "--config", "b"], "CommandError: Cannot specify both --definition and --config"),
    ],
)
def test_bad_input_exits_2_without_traceback(manage, args, message):
    result = manage("run_pipeline", "--inline", *args)
    assert result.exit_code == 2
    assert result.stderr.strip() == message
    assert "Traceback" not in result.stderr


def test_json_output_is_pure_json_on_stdout(manage, health_check):
    result = manage("run_pipeline", "--inline", "--definition", "health-check", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["status"] == "completed" and data["exit_code"] == 0


def test_load_pipelines_is_idempotent_and_shipped_definitions_run(manage):
    first = manage("load_pipelines")
    assert first.exit_code == 0, first.stderr
    assert "created: health-check" in first.stdout and "created: alert-triage" in first.stdout
    second = manage("load_pipelines")
    assert "unchanged: health-check" in second.stdout
    assert PipelineDefinition.objects.count() == 2
    run = manage("run_pipeline", "--inline", "--definition", "alert-triage", "--sample", "--source", "alertmanager")
    assert run.exit_code == 0, run.stdout + run.stderr
    assert "--- ingest (ingest) ---" in run.stdout


def test_unreachable_broker_fails_the_run_instead_of_leaving_it_queued(manage, health_check):
    result = manage("run_pipeline", "--definition", "health-check", env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    run = PipelineRun.objects.get()
    assert result.exit_code == 1
    assert result.stderr.startswith(f"CommandError: Could not enqueue run {run.pk}: the broker did not take it (")
    assert run.status == "failed" and run.error.startswith("Could not enqueue run")


def test_a_run_retried_already_is_refused_as_such_whatever_the_broker(manage):
    from django.utils import timezone

    original = make_run(status="failed", error="boom", finished_at=timezone.now())
    retry = make_run(retry_of=original, trigger="retry", status="completed", finished_at=timezone.now())
    # The refusal says what is wrong with the request before the broker is tried.
    result = manage("retry_run", str(original.pk), env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        f"CommandError: Run {original.pk} was already retried as run {retry.pk}: pass --force to retry it again\n"
    )
    assert PipelineRun.objects.count() == 2
    # Forced, it gets as far as the broker, which is down: that is what it says then.
    forced = manage("retry_run", str(original.pk), "--force", env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    assert forced.exit_code == 1
    assert "the broker did not take it" in forced.stderr


def test_launch_inside_an_outer_transaction_with_no_broker_is_logged_and_later_sent_by_the_sweep(
    manage, health_check
):
    launch = (
        "from django.db import transaction\n"
        "from apps.orchestration import inputs, launch, launchrequest\n"
        "with transaction.atomic():\n"
        "    launch.pipeline_run_launch(request=launchrequest.LaunchRequest(resolved=inputs.definition_resolve(name='health-check'), payload={}))\n"
    )
    result = manage("shell", "-c", launch, env={"CELERY_BROKER_URL": "redis://127.0.0.1:1/0"})
    run = PipelineRun.objects.get()
    assert result.exit_code == 0, result.stderr
    assert f"event=run.enqueue_failed run_id={run.pk} trace_id={run.trace_id} error=OperationalError" in result.stderr
    assert run.status == "queued"
    # Once a broker answers, the sweep sends the run that never reached one.
    require_redis()
    url = claim_redis_db()
    try:
        swept = manage("recover_runs", "--grace", "0", env={"CELERY_BROKER_URL": url})
        assert swept.stdout == f"re-sent run {run.pk} (trace id {run.trace_id}): lost message\n1 run(s) re-sent\n"
    finally:
        import redis

        redis.Redis.from_url(url).flushdb()


@pytest.mark.parametrize("command", [["list_runs"], ["show_run", "{run}", "--json"], ["run_pipeline", "--definition", "health-check", "--dry-run"]])
def test_a_reader_that_went_away_ends_the_command_quietly_with_exit_1(health_check, subprocess_env, command):
    run = PipelineRun.objects.create(origin="health-check", config_snapshot={}, status="failed", finished_at="2026-01-01T00:00Z")
    args = [arg.format(run=run.pk) for arg in command]
    proc = manage_py_popen(*args, env=subprocess_env)
    proc.stdout.close()  # like `| head` that has read enough: every write now fails
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1
    assert stderr == ""


@pytest.mark.parametrize("command", [["show_run", "1"], ["list_runs"], ["run_pipeline", "--definition", "x"]])
def test_an_unreachable_database_is_one_line_and_exit_1(manage, command):
    result = manage(*command, env={"DATABASE_URL": "postgres://pipelines:hunter2secret@127.0.0.1:1/none"})
    assert result.exit_code == 1
    assert result.stderr.startswith("CommandError: The database cannot be used: ")
    assert result.stderr.count("\n") == 1 and "hunter2secret" not in result.stderr


def test_dry_run_json_prints_the_plan(manage, health_check):
    result = manage("run_pipeline", "--definition", "health-check", "--dry-run", "--json", "--payload", '{"host": "web-1"}')
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    assert (plan["dry_run"], plan["definition"], plan["payload"]) == (True, "health-check", {"host": "web-1"})
    assert [(n["id"], n["type"], n["next"]) for n in plan["nodes"]] == [
        ("metrics", "context", "analyze"), ("analyze", "intelligence", "notify"), ("notify", "notify", None),
    ]
    assert not PipelineRun.objects.exists()


def test_file_dash_reads_the_payload_from_a_pipe(subprocess_env, tmp_path):
    path = tmp_path / "echo.json"
    path.write_text(json.dumps({"version": "1.0", "nodes": [
        {"id": "t", "type": "transform", "config": {"mapping": {"host": "payload.host"}}}]}))
    proc = manage_py_popen(
        "run_pipeline", "--inline", "--config", str(path), "--file", "-", "--json", env=subprocess_env, stdin=subprocess.PIPE
    )
    out, err = proc.communicate(json.dumps({"host": "db-02"}), timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 0, err
    assert json.loads(out)["node_results"]["t"]["output"] == {"host": "db-02"}
    assert PipelineRun.objects.get().payload == {"host": "db-02"}


def test_file_dash_refuses_an_endless_stream_after_payload_max_bytes(subprocess_env):
    # /dev/zero never ends: the command must stop reading at the limit, not run out of memory.
    with open("/dev/zero", "rb") as endless:
        proc = manage_py_popen("run_pipeline", "--inline", "--file", "-", env=subprocess_env, stdin=endless)
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT)
    assert proc.returncode == 2
    assert out == ""
    assert err == "CommandError: Payload file is larger than 1048576 bytes (PAYLOAD_MAX_BYTES): standard input\n"
    assert PipelineRun.objects.count() == 0
