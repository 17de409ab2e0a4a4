"""load_pipelines validates each file and refuses invalid ones."""
import json
from pathlib import Path

import pytest

from apps.orchestration.models import PipelineDefinition
from tests.support import manage_py

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


def definition_of_size(size: int) -> str:
    """A valid definition whose JSON text is exactly ``size`` bytes (padded in its description)."""
    base = {"version": "1.0", "description": "", "nodes": [{"id": "m", "type": "context"}]}
    text = json.dumps(base)
    return json.dumps({**base, "description": "d" * (size - len(text))})


def test_a_file_over_definition_max_bytes_is_refused_unread_and_the_others_load(run_command, tmp_path, settings):
    settings.DEFINITION_MAX_BYTES = 4096
    (tmp_path / "at-limit.json").write_text(definition_of_size(4096))
    (tmp_path / "over-limit.json").write_text(definition_of_size(4097))
    # 100 MB of nothing (a sparse file): refused by its size before any of it is read as JSON.
    with open(tmp_path / "huge.json", "wb") as handle:
        handle.truncate(100 * 1024 * 1024)
    result = run_command("load_pipelines", "--dir", str(tmp_path))
    assert result.exit_code == 2
    for name in ("huge", "over-limit"):
        assert (
            f"refused: {tmp_path / (name + '.json')}\n"
            f"  - Config file is larger than 4096 bytes (DEFINITION_MAX_BYTES): {tmp_path / (name + '.json')}\n"
        ) in result.stderr
    assert result.stdout.endswith("1 loaded, 2 refused\n")
    assert list(PipelineDefinition.objects.values_list("name", flat=True)) == ["at-limit"]


def test_a_file_larger_than_its_size_says_is_refused_while_it_is_read(run_command, tmp_path, settings):
    # /proc files report a size of 0 and hold more, as a file growing after the size check would.
    environ = Path("/proc/self/environ")
    if not environ.is_file() or len(environ.read_bytes()) <= 100:
        pytest.skip("no /proc/self/environ of more than 100 bytes here")
    settings.DEFINITION_MAX_BYTES = 100
    (tmp_path / "growing.json").symlink_to(environ)
    result = run_command("load_pipelines", "--dir", str(tmp_path))
    assert result.exit_code == 2
    assert "  - Config file is larger than 100 bytes (DEFINITION_MAX_BYTES): " in result.stderr
    assert PipelineDefinition.objects.count() == 0


@pytest.mark.subprocess
def test_the_definition_limit_comes_from_the_environment(subprocess_env, tmp_path):
    (tmp_path / "small.json").write_text(definition_of_size(600))
    for limit, loaded in (("599", 0), ("600", 1)):
        result = manage_py("load_pipelines", "--dir", str(tmp_path), env={**subprocess_env, "DEFINITION_MAX_BYTES": limit})
        assert result.stdout.endswith(f"{loaded} loaded, {1 - loaded} refused\n"), result.stderr
