"""run_pipeline end to end through call_command: real engine, real handlers."""
import io
import json
import re

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.alerts.models import Alert, Incident
from apps.orchestration.models import PipelineDefinition, PipelineRun, StageExecution
from tests.support import HEALTH_CHECK_NODES as SPEC_NODES
from tests.support import TINY_NODES

pytestmark = pytest.mark.django_db

@pytest.fixture
def config_file(tmp_path):
    def _write(config, name="custom.json"):
        path = tmp_path / name
        path.write_text(json.dumps(config) if not isinstance(config, str) else config)
        return str(path)

    return _write


def test_dry_run_prints_the_spec_layout(run_command, health_check):
    result = run_command("run_pipeline", "--inline", "--definition", "health-check", "--dry-run", "--payload", '{"server": "web-01"}')
    assert result.exit_code == 0
    assert result.stdout == (
        "=== DRY RUN ===\n"
        "\n"
        "Pipeline Definition: health-check\n"
        "Source: cli\n"
        "Environment: development\n"
        "\n"
        "Nodes (3):\n"
        "  1. [context] metrics\n"
        '     Config: {"include": ["cpu", "memory", "disk"]}\n'
        "     → next: analyze\n"
        "\n"
        "  2. [intelligence] analyze\n"
        '     Config: {"provider": "local"}\n'
        "     → next: notify\n"
        "\n"
        "  3. [notify] notify\n"
        '     Config: {"driver": "console"}\n'
        "     → end\n"
        "\n"
        "Payload:\n"
        "{\n"
        '  "server": "web-01"\n'
        "}\n"
        "\n"
        "Use without --dry-run to execute\n"
    )
    assert PipelineRun.objects.count() == 0


def test_dry_run_of_a_config_file_names_the_file(run_command, config_file):
    path = config_file({"version": "1.0", "nodes": SPEC_NODES})
    result = run_command("run_pipeline", "--inline", "--config", path, "--dry-run", "--environment", "production", "--source", "grafana")
    assert result.exit_code == 0
    assert f"\nPipeline Config: {path}\nSource: grafana\nEnvironment: production\n" in result.stdout
    assert "Payload:\n{}\n" in result.stdout


def test_run_prints_the_result_display_with_real_readings(run_command, health_check):
    result = run_command("run_pipeline", "--inline", "--definition", "health-check", "--trace-id", "abc-123")
    assert result.exit_code == 0, result.stderr
    run = PipelineRun.objects.get()
    pattern = (
        r"={60}\nPIPELINE RESULT\n={60}\n\n"
        r"Status: COMPLETED\nDefinition: health-check\nTrace ID: abc-123\n"
        rf"Run ID: {run.pk}\nDuration: \d+\.\d\dms\n\n"
        r"--- context \(metrics\) ---\n  Checks run: 3\n  Duration: \d+\.\d\dms\n\n"
        r"--- intelligence \(analyze\) ---\n  Summary: (?P<summary>.+)\n  Provider: local\n  Duration: \d+\.\d\dms\n\n"
        r"--- notify \(notify\) ---\n  Driver: console\n  Channels attempted: 1\n  Succeeded: 1\n  Duration: \d+\.\d\dms\n\n"
        r"✓ Pipeline completed successfully\n$"
    )
    match = re.fullmatch(pattern, result.stdout)
    assert match, result.stdout
    # The summary carries the numbers psutil read for this run.
    checks = run.result["node_results"]["metrics"]["output"]["checks"]
    assert any(f"{check['value']}" in match["summary"] for check in checks.values()), match["summary"]
    assert run.status == "completed" and run.trace_id == "abc-123"
    assert StageExecution.objects.filter(run=run, status="succeeded").count() == 3


def test_config_run_says_config_path(run_command, config_file):
    path = config_file({"version": "1.0", "nodes": SPEC_NODES})
    result = run_command("run_pipeline", "--inline", "--config", path)
    assert result.exit_code == 0
    assert f"\nStatus: COMPLETED\nConfig: {path}\nTrace ID: " in result.stdout


def test_json_output_has_the_run_record(run_command, health_check):
    result = run_command("run_pipeline", "--inline", "--definition", "health-check", "--json")
    assert result.exit_code == 0
    data = result.json()
    run = PipelineRun.objects.get()
    assert data["run_id"] == run.pk
    assert data["trace_id"] == run.trace_id
    assert data["definition"] == "health-check"
    assert data["status"] == "completed"
    assert data["error"] is None
    assert data["exit_code"] == 0
    assert data["executed_nodes"] == ["metrics", "analyze", "notify"]
    assert data["skipped_nodes"] == []
    assert data["duration_ms"] > 0
    assert set(data["node_results"]["metrics"]["output"]["checks"]) == {"cpu", "memory", "disk"}


def test_failed_required_node_fails_the_run_and_skips_the_rest(run_command, config_file):
    nodes = [
        {"id": "metrics", "type": "context", "config": {"include": ["disk"], "options": {"disk": {"paths": ["/no/such/mount"]}}}, "next": "analyze"},
        {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}},
    ]
    result = run_command("run_pipeline", "--inline", "--config", config_file({"version": "1.0", "nodes": nodes}))
    assert result.exit_code == 1
    run = PipelineRun.objects.get()
    assert run.status == "failed"
    assert run.error.startswith("Node 'metrics' failed: ")
    assert "Status: FAILED\n" in result.stdout
    assert "--- context (metrics) ---\n  Status: FAILED\n  Error: " in result.stdout
    assert "Skipped: analyze\n" in result.stdout
    assert result.stdout.endswith("✗ Pipeline failed\n")
    assert f"CommandError: Pipeline failed: {run.error}" in result.stderr


def test_optional_node_may_fail_without_failing_the_run(run_command, config_file):
    nodes = [
        {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "flaky"},
        {"id": "flaky", "type": "transform", "required": False, "config": {"mapping": {"x": "nowhere.value"}}, "next": "shape"},
        {"id": "shape", "type": "transform", "config": {"mapping": {"mem": "metrics.checks.memory.value"}}},
    ]
    result = run_command("run_pipeline", "--inline", "--config", config_file({"version": "1.0", "nodes": nodes}), "--json")
    assert result.exit_code == 0, result.stdout
    data = result.json()
    assert data["status"] == "completed"
    assert data["node_results"]["flaky"]["status"] == "failed"
    assert data["node_results"]["flaky"]["error"] == "Path not found: nowhere.value"
    assert data["node_results"]["shape"]["output"]["mem"] == data["node_results"]["metrics"]["output"]["checks"]["memory"]["value"]


def test_failed_run_json_repeats_exit_code(run_command, config_file):
    nodes = [{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.missing"}}}]
    result = run_command("run_pipeline", "--inline", "--config", config_file({"version": "1.0", "nodes": nodes}), "--json")
    assert result.exit_code == 1
    data = result.json()
    assert data["status"] == "failed" and data["exit_code"] == 1
    assert data["error"] == "Node 't' failed: Path not found: payload.missing"


def test_max_retries_records_each_attempt(run_command, config_file):
    config = {
        "version": "1.0",
        "defaults": {"max_retries": 2},
        "nodes": [{"id": "t", "type": "transform", "config": {"mapping": {"x": "payload.nope"}}}],
    }
    result = run_command("run_pipeline", "--inline", "--config", config_file(config))
    assert result.exit_code == 1
    assert list(StageExecution.objects.values_list("attempt", flat=True).order_by("attempt")) == [1, 2, 3]


def test_builtin_pipeline_runs_ingest_check_analyze_notify(run_command):
    result = run_command("run_pipeline", "--inline", "--sample", "--source", "grafana")
    assert result.exit_code == 0, result.stdout + result.stderr
    for header in ("--- INGEST ---", "--- CHECK ---", "--- ANALYZE ---", "--- NOTIFY ---"):
        assert f"\n{header}\n" in result.stdout
    assert "\nPipeline: built-in (INGEST → CHECK → ANALYZE → NOTIFY)\n" in result.stdout
    assert Alert.objects.filter(source="grafana").exists()
    assert Incident.objects.count() == 1


def test_builtin_dry_run_lists_its_stages(run_command):
    result = run_command("run_pipeline", "--inline", "--sample", "--source", "alertmanager", "--dry-run", "--notify-driver", "webhook")
    assert result.exit_code == 0, result.stderr
    assert "Pipeline: built-in (INGEST → CHECK → ANALYZE → NOTIFY)\nSource: alertmanager\n" in result.stdout
    assert "  4. NOTIFY [notify]\n     Config: {\"driver\": \"webhook\"}\n" in result.stdout
    assert '"alerts": [' in result.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--definition", "nonexistent"], "Pipeline definition not found: nonexistent"),
        (["--config", "missing.json"], "Config file not found: missing.json"),
        (["--definition", "a", "--config", "b.json"], "Cannot specify both --definition and --config"),
        (["--payload", "{nope"], "Invalid JSON payload: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        (["--payload", "[1]"], "Payload must be a JSON object, not list"),
        (["--file", "nowhere.json"], "Payload file not found: nowhere.json"),
        (["--payload", "{}", "--sample"], "Cannot specify more than one of --payload, --sample"),
        (["--definition", "x", "--notify-driver", "console"], "--notify-driver applies only to the built-in pipeline"),
    ],
)
def test_bad_input_gets_the_spec_error_and_exit_code_2(run_command, args, message):
    result = run_command("run_pipeline", "--inline", *args)
    assert result.exit_code == 2
    assert result.stderr == f"CommandError: {message}\n"
    assert PipelineRun.objects.count() == 0


def test_invalid_json_config_file(run_command, config_file):
    result = run_command("run_pipeline", "--inline", "--config", config_file('{"version": "1.0",'))
    assert result.exit_code == 2
    assert result.stderr.startswith("CommandError: Invalid JSON in config file: Expecting property name")


def test_invalid_definition_lists_every_message_and_changes_nothing(run_command, config_file):
    nodes = [dict(n) for n in SPEC_NODES]
    nodes[1]["type"] = "ai"
    nodes[2]["next"] = "missing"
    path = config_file({"version": "1.0", "nodes": nodes})
    for extra in ([], ["--dry-run"]):
        result = run_command("run_pipeline", "--inline", "--config", path, *extra)
        assert result.exit_code == 2
        assert result.stderr == (
            "CommandError: Pipeline definition invalid:\n"
            "  - Node 'analyze' has unknown type: ai\n"
            "  - Node 'notify' references non-existent next: 'missing'\n"
        )
    assert PipelineRun.objects.count() == 0 and StageExecution.objects.count() == 0


def test_a_config_file_over_definition_max_bytes_is_refused_before_it_is_read(run_command, config_file, settings):
    settings.DEFINITION_MAX_BYTES = 2048
    text = json.dumps({"version": "1.0", "nodes": SPEC_NODES})
    within = config_file(text + " " * (2048 - len(text)), "within.json")
    over = config_file(text + " " * (2049 - len(text)), "over.json")
    for extra in ([], ["--dry-run"]):
        result = run_command("run_pipeline", "--inline", "--config", over, *extra)
        assert result.exit_code == 2
        assert result.stderr == f"CommandError: Config file is larger than 2048 bytes (DEFINITION_MAX_BYTES): {over}\n"
    assert PipelineRun.objects.count() == 0
    assert run_command("run_pipeline", "--inline", "--config", within, "--dry-run").exit_code == 0


def test_inactive_definition_is_refused(run_command, health_check):
    health_check.is_active = False
    health_check.save()
    result = run_command("run_pipeline", "--inline", "--definition", "health-check")
    assert result.exit_code == 2
    assert result.stderr == "CommandError: Pipeline definition is inactive: health-check\n"


def test_payload_from_standard_input_with_file_dash(tmp_path):
    payload = json.dumps({"name": "DiskFull", "host": "db-02", "severity": "critical"}).encode()
    out = io.StringIO()
    call_command("run_pipeline", "--inline", "--file", "-", "--json", stdin=io.BytesIO(payload), stdout=out)
    assert json.loads(out.getvalue())["node_results"]["ingest"]["output"]["source"] == "generic"
    assert Alert.objects.get().host == "db-02"
    assert PipelineRun.objects.get().payload == json.loads(payload)


def test_standard_input_over_payload_max_bytes_is_refused(settings):
    settings.PAYLOAD_MAX_BYTES = 64
    for size, refused in ((64, False), (65, True)):
        text = b'{"pad": "' + b"p" * (size - 11) + b'"}'
        assert len(text) == size
        try:
            call_command("run_pipeline", "--file", "-", "--dry-run", stdin=io.BytesIO(text), stdout=io.StringIO())
        except CommandError as exc:
            assert refused and exc.returncode == 2
            assert str(exc) == "Payload file is larger than 64 bytes (PAYLOAD_MAX_BYTES): standard input"
        else:
            assert not refused
    assert PipelineRun.objects.count() == 0


def test_a_payload_file_over_payload_max_bytes_is_refused(run_command, tmp_path, settings):
    settings.PAYLOAD_MAX_BYTES = 64
    path = tmp_path / "big.json"
    path.write_text('{"pad": "' + "p" * 60 + '"}')
    result = run_command("run_pipeline", "--inline", "--file", str(path))
    assert result.exit_code == 2
    assert result.stderr == f"CommandError: Payload file is larger than 64 bytes (PAYLOAD_MAX_BYTES): {path}\n"
    assert PipelineRun.objects.count() == 0


def test_payload_file_is_used(run_command, tmp_path):
    payload = tmp_path / "alert.json"
    payload.write_text(json.dumps({"name": "DiskFull", "host": "db-02", "severity": "critical"}))
    result = run_command("run_pipeline", "--inline", "--file", str(payload), "--json")
    assert result.exit_code == 0, result.stdout
    ingest = result.json()["node_results"]["ingest"]["output"]
    assert ingest["source"] == "generic"
    assert Alert.objects.get().host == "db-02"


def test_dry_run_refuses_a_trigger_whose_match_is_not_cel(run_command, config_file):
    path = config_file({
        "version": "1.0", "nodes": SPEC_NODES,
        "triggers": [{"alert": {"source": "alertmanager", "match": "alert.labels.team = 'ops'"}}],
    })
    result = run_command("run_pipeline", "--inline", "--config", path, "--dry-run")
    assert result.exit_code == 2
    assert result.stderr == (
        "CommandError: Pipeline definition invalid:\n"
        "  - triggers[0].alert.match: line 1, column 19: unexpected character '='\n"
    )
    assert PipelineRun.objects.count() == 0


def test_dry_run_of_a_definition_with_triggers_prints_the_usual_layout(run_command, config_file):
    plain = run_command("run_pipeline", "--inline", "--config", config_file({"version": "1.0", "nodes": SPEC_NODES}), "--dry-run")
    path = config_file({
        "version": "1.0", "nodes": SPEC_NODES,
        "triggers": [{"alert": {"source": "alertmanager", "match": 'alert.severity == "critical"'}}],
    })
    result = run_command("run_pipeline", "--inline", "--config", path, "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == plain.stdout


def test_an_idempotency_key_of_another_definitions_run_is_refused(run_command, health_check, config_file):
    PipelineDefinition.objects.create(name="tiny", config={"version": "1.0", "nodes": TINY_NODES})
    path = config_file({"version": "1.0", "nodes": TINY_NODES})
    other_path = config_file({"version": "1.0", "nodes": TINY_NODES}, name="other.json")
    tiny = run_command("run_pipeline", "--definition", "tiny", "--inline", "--idempotency-key", "k1", "--json")
    from_file = run_command("run_pipeline", "--config", path, "--inline", "--idempotency-key", "k2", "--json")
    builtin = run_command("run_pipeline", "--inline", "--idempotency-key", "k3", "--json")
    # The built-in pipeline fails without an alert in the payload: its run holds the key all the same.
    assert [result.exit_code for result in (tiny, from_file, builtin)] == [0, 0, 1]
    owners = {
        "k1": f"run {tiny.json()['run_id']} of definition tiny",
        "k2": f"run {from_file.json()['run_id']} of config {path}",
        "k3": f"run {builtin.json()['run_id']} of the built-in pipeline",
    }
    before = PipelineRun.objects.count()
    others = {
        "k1": [["--definition", "health-check"], ["--config", path], []],
        "k2": [["--definition", "tiny"], ["--config", other_path], []],
        "k3": [["--definition", "tiny"], ["--config", path]],
    }
    for key, launches in others.items():
        for which in launches:
            for how in ([], ["--inline"], ["--wait", "--json"]):
                refused = run_command("run_pipeline", *which, *how, "--idempotency-key", key)
                assert refused.exit_code == 2, (key, which, how)
                assert refused.stderr == f"CommandError: Idempotency key {key} belongs to {owners[key]}\n"
                assert refused.stdout == ""
    assert PipelineRun.objects.count() == before
    # The scheduler's keys are its own: taken by hand, a tick would return that run instead.
    for how in ([], ["--inline"], ["--wait"]):
        refused = run_command("run_pipeline", "--definition", "tiny", *how,
                              "--idempotency-key", "schedule:tiny:2026-12-07T09:00:00+00:00")
        assert (refused.exit_code, refused.stdout) == (2, "")
        assert refused.stderr == (
            "CommandError: --idempotency-key must not start with 'schedule:': those keys are the scheduler's\n")
    assert PipelineRun.objects.count() == before
    # The key's own definition still finds its run, as before.
    again = run_command("run_pipeline", "--definition", "tiny", "--idempotency-key", "k1", "--json")
    assert again.exit_code == 0 and again.json()["run_id"] == tiny.json()["run_id"]
    assert f"Run {tiny.json()['run_id']} already exists for idempotency key k1" in again.stderr
