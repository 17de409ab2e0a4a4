"""load_pipelines validates each file and refuses invalid ones."""
import json

import pytest

from apps.orchestration.models import PipelineDefinition

pytestmark = pytest.mark.django_db


def test_invalid_file_is_refused_with_messages_and_valid_ones_load(run_command, tmp_path):
    (tmp_path / "good.json").write_text(json.dumps({"version": "1.0", "nodes": [{"id": "m", "type": "context"}]}))
    (tmp_path / "bad.json").write_text(json.dumps({"version": "1.0", "nodes": [{"id": "m", "type": "ai"}]}))
    (tmp_path / "broken.json").write_text("{")
    result = run_command("load_pipelines", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert f"refused: {tmp_path / 'bad.json'}\n  - Node 'm' has unknown type: ai\n" in result.stderr
    assert f"refused: {tmp_path / 'broken.json'}\n  - Invalid JSON in config file: " in result.stderr
    assert list(PipelineDefinition.objects.values_list("name", flat=True)) == ["good"]


def test_changed_file_updates_the_definition(run_command, tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"version": "1.0", "description": "one", "nodes": [{"id": "m", "type": "context"}]}))
    run_command("load_pipelines", "--dir", str(tmp_path))
    path.write_text(json.dumps({"version": "1.0", "description": "two", "nodes": [{"id": "m", "type": "context"}]}))
    result = run_command("load_pipelines", "--dir", str(tmp_path))
    assert "updated: p" in result.stdout
    assert PipelineDefinition.objects.get(name="p").description == "two"


def test_shipped_definitions_are_valid(run_command, settings):
    result = run_command("load_pipelines")
    assert result.exit_code == 0, result.stderr
    assert set(PipelineDefinition.objects.values_list("name", flat=True)) >= {"health-check", "alert-triage"}


def test_a_trigger_with_a_bad_match_is_refused_with_its_position(run_command, tmp_path):
    config = {
        "version": "1.0", "nodes": [{"id": "m", "type": "context"}],
        "triggers": [{"alert": {"source": "alertmanager", "match": 'alert.severity == "critical" &&'}}],
    }
    (tmp_path / "triggered.json").write_text(json.dumps(config))
    result = run_command("load_pipelines", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert (
        f"refused: {tmp_path / 'triggered.json'}\n"
        "  - triggers[0].alert.match: line 1, column 30: the expression ends too early\n"
    ) in result.stderr
    assert not PipelineDefinition.objects.exists()
    config["triggers"][0]["alert"]["match"] = 'alert.severity == "critical"'
    (tmp_path / "triggered.json").write_text(json.dumps(config))
    assert run_command("load_pipelines", "--dir", str(tmp_path)).exit_code == 0
    assert PipelineDefinition.objects.get(name="triggered").config["triggers"] == config["triggers"]
