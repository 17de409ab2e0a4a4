"""NODE_MAX_OUTPUT_BYTES: a node output larger than the limit is stored as a marker
with a preview; the node still succeeds, later nodes read the marker, and the result
display and --json show it."""
from __future__ import annotations

import json

import pytest

from apps import jsondata
from apps.orchestration import engine, rendering
from apps.orchestration.models import StageExecution
from tests.support import make_run

pytestmark = pytest.mark.django_db

LIMIT = 1000
NODES = [
    {"id": "big", "type": "transform", "config": {"mapping": {"blob": "payload.blob"}}, "next": "after"},
    {"id": "after", "type": "transform", "config": {"mapping": {"cut": "big.truncated", "size": "big.bytes"}}},
]


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.NODE_MAX_OUTPUT_BYTES = LIMIT


def test_cut_to_keeps_data_within_the_limit_and_marks_larger_data_with_its_size_and_a_preview():
    small = {"blob": "x" * (LIMIT - 11)}
    assert jsondata.cut_to(small, LIMIT) is small
    large = {"blob": "é" * LIMIT}
    marker = jsondata.cut_to(large, LIMIT)
    assert marker == {"truncated": True, "bytes": jsondata.encoded_size(large),
                      "preview": json.dumps(large, ensure_ascii=False, separators=(",", ":"))[: jsondata.PREVIEW_CHARS]}
    assert jsondata.is_cut(marker) and not jsondata.is_cut(small) and not jsondata.is_cut({"truncated": True})


def test_a_node_output_over_the_limit_is_stored_cut_and_the_node_and_run_succeed():
    blob = "y" * 5000
    run = engine.run_execute(run_id=make_run(NODES, payload={"blob": blob}).pk)
    assert run.status == "completed", run.error
    size = jsondata.encoded_size({"blob": blob})
    marker = {"truncated": True, "bytes": size, "preview": '{"blob":"' + "y" * (jsondata.PREVIEW_CHARS - 9)}
    stages = {stage.node_id: stage for stage in StageExecution.objects.filter(run=run)}
    assert stages["big"].status == "succeeded" and stages["big"].output == marker
    assert run.result["node_results"]["big"]["output"] == marker
    # The next node read what was stored, not the original.
    assert stages["after"].output == {"cut": True, "size": size}
    display = rendering.render_result(run)
    assert f"  Output cut: {size} bytes (NODE_MAX_OUTPUT_BYTES)" in display.splitlines()
    assert blob not in display
    as_json = rendering.run_as_dict(run)
    assert as_json["node_results"]["big"]["output"] == marker


def test_an_output_at_the_limit_is_stored_whole():
    blob = "z" * (LIMIT - len('{"blob":""}'))
    run = engine.run_execute(run_id=make_run(NODES, payload={"blob": blob}).pk)
    assert StageExecution.objects.get(run=run, node_id="big").output == {"blob": blob}
