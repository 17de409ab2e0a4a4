"""--follow with a real worker: node lines as they happen, for new and half-done runs,
with cancel requests shown as they come.

The middle node waits at a gate the test opens (tests.support.Gate): "while the node runs"
then lasts as long as the test needs, on an idle machine or a loaded one."""
from __future__ import annotations

import json

import pytest

from apps.orchestration.models import PipelineRun
from tests.support import Gate, StderrLines, wait_for
from tests.workers.conftest import module_gate_fixtures

pytestmark = pytest.mark.subprocess


# The module's worker may reach the gate; each test starts with it closed.
gated_env, gate_per_test = module_gate_fixtures()


@pytest.fixture
def config_path(tmp_path, module_gate):
    # The slow node waits at the gate until the test opens it, however long starting a process takes.
    definition = {
        "version": "1.0",
        "defaults": Gate.DEFAULTS,
        "nodes": [
            {"id": "quick", "type": "context", "config": {"include": ["memory"]}, "next": "slow"},
            module_gate.node("slow", "last"),
            {"id": "last", "type": "context", "config": {"include": ["memory"]}},
        ],
    }
    path = tmp_path / "follow.json"
    path.write_text(json.dumps(definition))
    return str(path)


@pytest.mark.rabbitmq
def test_follow_prints_each_node_as_it_ends_before_the_run_does(cli, broker, worker, gate, config_path):
    # The command listens to its run's events only once it has launched it: the worker is held
    # until it does, or a loaded machine could run the first node before anyone listens.
    worker.freeze()
    try:
        followed = StderrLines(cli.popen("run_pipeline", "--config", config_path, "--follow"))
    except BaseException:
        worker.thaw()
        raise
    try:
        try:
            wait_for(lambda: (run := PipelineRun.objects.first()) is not None and broker.subscribers(run.pk),
                     what="the command to listen to its run's events")
        finally:
            worker.thaw()
        followed.wait_for("✓ quick (context) succeeded")
        # The first node's line came while the slow node was still held, not at the end.
        assert not any("✓ slow" in line for _, line in followed.lines), followed.text()
        assert followed.proc.poll() is None, followed.text()
        gate.open()
        code, stdout, _ = followed.finish()
    finally:
        followed.stop()
    assert code == 0, followed.text()
    lines = [line.split(" ", 1)[1] for _, line in followed.lines]
    assert [line.split(" (")[0] for line in lines] == [
        "▶ quick", "✓ quick", "▶ slow", "✓ slow", "▶ last", "✓ last",
    ], followed.text()
    assert all("attempt 1" in line for line in lines), followed.text()
    assert "✓ slow (notify) succeeded in " in followed.text()
    assert stdout.startswith("=" * 60 + "\nPIPELINE RESULT\n") and stdout.endswith("✓ Pipeline completed successfully\n")


def test_following_a_run_that_is_half_done_shows_what_happened_then_what_happens(cli, worker, gate, config_path):
    queued = cli("run_pipeline", "--config", config_path, "--json")
    run_id = json.loads(queued.stdout)["run_id"]
    wait_for(gate.reached, what="the run to reach its slow node")
    assert PipelineRun.objects.get(pk=run_id).current_node == "slow"
    followed = StderrLines(cli.popen("show_run", str(run_id), "--follow", "--json"))
    try:
        # What happened before the follower came, shown while the run is still half done...
        followed.wait_for(" ✓ quick ")
        assert PipelineRun.objects.get(pk=run_id).status == "running"
        # ...then what happens.
        gate.open()
        code, stdout, _ = followed.finish()
    finally:
        followed.stop()
    assert code == 0, followed.text()
    ends = [line for _, line in followed.lines if " ✓ " in line]
    assert [line.split(" ")[2] for line in ends] == ["quick", "slow", "last"], followed.text()
    assert sum(" ▶ slow " in line for _, line in followed.lines) == 1
    assert json.loads(stdout)["status"] == "completed"


@pytest.mark.rabbitmq
def test_a_cancel_request_is_shown_as_it_happens(cli, worker, gate, config_path):
    followed = StderrLines(cli.popen("run_pipeline", "--config", config_path, "--follow"))
    try:
        followed.wait_for("▶ slow (notify) started")
        run_id = PipelineRun.objects.order_by("-pk").values_list("pk", flat=True).first()
        assert cli("cancel_run", str(run_id)).exit_code == 0
        followed.wait_for("■ cancellation requested")
        gate.open()
        code, _, _ = followed.finish()
    finally:
        followed.stop()
    assert code == 4, followed.text()
    assert "▶ last" not in followed.text()
