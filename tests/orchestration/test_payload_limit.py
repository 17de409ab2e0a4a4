"""RUN_MAX_PAYLOAD_BYTES: a payload larger than the limit (as compact JSON) is refused
with one line by the launcher's own check, whichever entry point launched it, and
nothing is stored. The API and the alert receiver are in tests/api/test_payload_limit.py."""
from __future__ import annotations

import html
import io
import json
import sys

import pytest

from apps import jsondata
from apps.orchestration import engine, inputs, launch, launchrequest, run_actions, ticks
from apps.orchestration.launchrequest import LaunchError
from apps.orchestration.models import PipelineDefinition, PipelineRun
from tests.support import TINY_NODES

pytestmark = pytest.mark.django_db

LIMIT = 200
TINY = {"version": "1.0", "nodes": TINY_NODES}
MESSAGE = f"Payload is larger than {LIMIT} bytes (RUN_MAX_PAYLOAD_BYTES): "


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.RUN_MAX_PAYLOAD_BYTES = LIMIT
    settings.CELERY_BROKER_IS_EMBEDDED = False  # nothing is sent: the transaction never commits


def payload_of(size: int) -> dict:
    """A payload whose compact JSON is exactly ``size`` bytes (``{"blob":"..."}`` is 11 bytes of it)."""
    payload = {"blob": "x" * (size - 11)}
    assert jsondata.encoded_size(payload) == size
    return payload


def test_encoded_size_is_the_compact_utf8_json():
    assert jsondata.encoded_size({"a": [1, 2]}) == len('{"a":[1,2]}')
    assert jsondata.encoded_size({"é": "€"}) == len('{"é":"€"}'.encode())


def test_a_payload_at_the_limit_launches_and_one_byte_more_is_refused_with_one_line(tiny):
    resolved = inputs.definition_resolve(name="tiny")
    run = launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload=payload_of(LIMIT)))
    assert run.status == "queued"
    with pytest.raises(LaunchError) as refused:
        launch.pipeline_run_create(request=launchrequest.LaunchRequest(resolved=resolved, payload=payload_of(LIMIT + 1)))
    assert str(refused.value) == f"{MESSAGE}{LIMIT + 1} bytes as JSON"
    assert refused.value.refusal is launchrequest.Refusal.BAD_INPUT
    assert list(PipelineRun.objects.values_list("pk", flat=True)) == [run.pk]


@pytest.fixture
def tiny(db):
    return PipelineDefinition.objects.create(name="tiny", config=TINY)


@pytest.mark.parametrize("how", ["payload", "file", "stdin", "sample"])
@pytest.mark.parametrize("inline", [False, True])
def test_run_pipeline_refuses_a_large_payload_from_every_source_with_exit_2(
    run_command, tiny, tmp_path, monkeypatch, how, inline
):
    text = json.dumps(payload_of(LIMIT + 1))
    args = {"payload": ["--payload", text], "file": ["--file", str(tmp_path / "p.json")],
            "stdin": ["--file", "-"], "sample": ["--sample", "--source", "alertmanager"]}[how]
    (tmp_path / "p.json").write_text(text)
    if how == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    result = run_command("run_pipeline", "--definition", "tiny", *args, *(["--inline"] if inline else []))
    assert result.exit_code == 2, result
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"CommandError: {MESSAGE}") and line.endswith(" bytes as JSON")
    assert not PipelineRun.objects.exists()


def test_a_retry_of_a_run_whose_payload_is_now_too_large_is_refused(settings, tiny, admin_client):
    settings.RUN_MAX_PAYLOAD_BYTES = 10_000
    done = engine.run_execute(run_id=launch.pipeline_run_create(request=launchrequest.LaunchRequest(
        resolved=inputs.definition_resolve(name="tiny"), payload=payload_of(LIMIT + 1))).pk)
    assert done.status == "completed"
    settings.RUN_MAX_PAYLOAD_BYTES = LIMIT
    with pytest.raises(LaunchError, match=r"^Payload is larger than 200 bytes \(RUN_MAX_PAYLOAD_BYTES\): 201 bytes"):
        run_actions.pipeline_run_retry(run_id=done.pk)
    # The admin's retry action goes through the same launcher.
    response = admin_client.post(
        "/admin/orchestration/pipelinerun/", {"action": "retry_runs", "_selected_action": [done.pk], "index": 0},
        follow=True,
    )
    assert f"Run {done.pk} not retried: {MESSAGE}{LIMIT + 1} bytes as JSON" in html.unescape(response.content.decode())
    assert PipelineRun.objects.count() == 1


def test_a_schedule_tick_with_a_too_large_payload_records_a_failed_run_saying_why():
    PipelineDefinition.objects.create(
        name="tick", config={**TINY, "schedule": {"every": 60, "payload": payload_of(LIMIT + 1)}}
    )
    [run] = ticks.pipeline_run_schedule(definition_name="tick", due="t1")
    assert (run.status, run.payload) == ("failed", {})
    assert run.error == f"Scheduled definition 'tick' cannot run: {MESSAGE}{LIMIT + 1} bytes as JSON"

