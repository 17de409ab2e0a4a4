"""Per-run logs with a real worker: the lines its execution logs (the engine's, the console
driver's message) are kept with the run, and `--follow --logs` prints them as the run goes.

Two gates (tests.support.Gate) hold the run where the test needs it: before its first
node, so the run has gone on long enough for its lines to be written at each node
boundary on every database (runlogs.LIVE_AFTER_SECONDS), and after the node that
logs, so "printed while the run goes on" is seen while the run is held."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db.models.functions import Now

from apps.orchestration.models import PipelineRun
from apps.orchestration.runlogs import LIVE_AFTER_SECONDS
from apps.orchestration.selectors import run_log_lines_list
from tests.support import Gate, StderrLines, wait_for

pytestmark = pytest.mark.subprocess


class SecondGate(Gate):
    URL_ENV = "TEST_SECOND_GATE_URL"


@pytest.fixture(scope="module")
def gates():
    first, second = Gate(), SecondGate()
    try:
        yield first, second
    finally:
        first.stop()
        second.stop()


@pytest.fixture(scope="module", name="base_env")
def gated_base_env(base_env, gates):
    return {**base_env, **gates[0].env, **gates[1].env}


@pytest.fixture
def held(gates):
    """Both gates, closed at the start of the test and opened at its end."""
    for gate in gates:
        gate.reset()
    try:
        yield gates
    finally:
        for gate in gates:
            gate.open()


def write_definition(tmp_path, nodes: list[dict], name: str = "logs.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"version": "1.0", "defaults": Gate.DEFAULTS, "nodes": nodes}))
    return str(path)


def test_a_run_on_a_worker_keeps_its_engine_and_console_driver_lines(cli, worker, tmp_path):
    path = write_definition(tmp_path, [
        {"id": "metrics", "type": "context", "config": {"include": ["memory"]}, "next": "notify"},
        {"id": "notify", "type": "notify", "config": {"driver": "console"}},
    ])
    result = cli("run_pipeline", "--config", path, "--wait", "--logs")
    assert result.exit_code == 0, result.stderr
    run = PipelineRun.objects.get()
    lines = run_log_lines_list(run_id=run.pk)
    assert [line.seq for line in lines] == list(range(1, len(lines) + 1))
    assert lines[0].message.startswith("event=run.start ") and lines[-1].message.startswith("event=run.end ")
    console = [line for line in lines if line.logger == "apps.notify.console"]
    assert len(console) == 1 and console[0].node_id == "notify"
    assert console[0].message.startswith(f"[OK] {run.origin} on ")
    assert [line.node_id for line in lines if line.message.startswith("event=node.start ")] == ["metrics", "notify"]
    # The display as without --logs, then the lines, one each, their newlines escaped.
    display, block = result.stdout.split("\nLogs (", 1)
    assert display.rstrip().endswith("✓ Pipeline completed successfully")
    shown = block.strip("\n").split("\n")[1:]
    assert len(shown) == len(lines)
    assert any(" INFO apps.notify.console [notify] [OK] " in line and "\\nPipeline: " in line for line in shown)


def test_follow_with_logs_prints_the_lines_as_the_run_goes(cli, worker, held, tmp_path):
    first, second = held
    path = write_definition(tmp_path, [
        first.node("hold", "talk"),
        {"id": "talk", "type": "notify", "config": {"driver": "console"}, "next": "slow"},
        second.node("slow", "last"),
        {"id": "last", "type": "context", "config": {"include": ["memory"]}},
    ])
    queued = cli("run_pipeline", "--config", path, "--json")
    assert queued.exit_code == 0, queued.stderr
    run_id = json.loads(queued.stdout)["run_id"]
    followed = StderrLines(cli.popen("show_run", str(run_id), "--follow", "--logs"))
    try:
        wait_for(first.reached, what="the run to reach its first gate")
        wait_for(
            lambda: PipelineRun.objects.filter(
                # A second more: the worker's buffer starts a moment after the claim stamps started_at.
                pk=run_id, started_at__lt=Now() - timedelta(seconds=LIVE_AFTER_SECONDS + 1)
            ).exists(),
            what="the run to be older than LIVE_AFTER_SECONDS",
        )
        first.open()
        followed.wait_for(" apps.notify.console [talk] [OK] ")
        # Printed while the run is held at its later node, not at its end.
        wait_for(second.reached, what="the run to reach its second gate")
        assert PipelineRun.objects.get(pk=run_id).status == "running"
        assert "event=run.end " not in followed.text() and "✓ slow" not in followed.text()
        second.open()
        code, stdout, _ = followed.finish()
    finally:
        followed.stop()
    assert code == 0, followed.text()
    text = [line for _, line in followed.lines]
    console = next(i for i, line in enumerate(text) if " apps.notify.console [talk] " in line)
    talk_end = next(i for i, line in enumerate(text) if " ✓ talk " in line)
    assert console < talk_end, followed.text()  # a node's lines come before its end line
    assert sum(" apps.notify.console [talk] " in line for line in text) == 1, followed.text()
    assert any("event=run.end " in line for line in text[talk_end:]), followed.text()
    # Shown live on stderr: not again after the display.
    assert "Logs (" not in stdout and stdout.rstrip().endswith("✓ Pipeline completed successfully")
    assert len(run_log_lines_list(run_id=run_id)) == sum(" UTC " in line.split(" [", 1)[0] for line in text)
