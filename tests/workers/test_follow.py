"""--follow with a real worker: node lines as they happen, for new and half-done runs,
with cancel requests shown as they come."""
from __future__ import annotations

import json
import threading
import time

import pytest

from apps.orchestration.models import PipelineRun

pytestmark = pytest.mark.subprocess

SLOW_SECONDS = 4
DEFINITION = {
    "version": "1.0",
    "nodes": [
        {"id": "quick", "type": "context", "config": {"include": ["memory"]}, "next": "slow"},
        {
            "id": "slow", "type": "context", "next": "last",
            "config": {"include": ["cpu"], "options": {"cpu": {"interval": SLOW_SECONDS}}},
        },
        {"id": "last", "type": "context", "config": {"include": ["memory"]}},
    ],
}


class Followed:
    """A running command whose stderr lines are collected with the time each arrived."""

    def __init__(self, proc):
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in self.lines:
                if text in line:
                    return at
            time.sleep(0.02)
        raise AssertionError(f"no line with {text!r} within {timeout:g}s: {self.text()}")

    def finish(self, timeout: float = 120) -> tuple[int, str, float]:
        stdout = self.proc.stdout.read()
        code = self.proc.wait(timeout)
        ended = time.monotonic()
        self._reader.join(5)
        return code, stdout, ended

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)


@pytest.fixture
def config_path(tmp_path):
    path = tmp_path / "follow.json"
    path.write_text(json.dumps(DEFINITION))
    return str(path)


def test_follow_prints_each_node_as_it_ends_before_the_run_does(cli, worker, config_path):
    followed = Followed(cli.popen("run_pipeline", "--config", config_path, "--follow"))
    quick_done = followed.wait_for("✓ quick (context) succeeded")
    code, stdout, ended = followed.finish()
    assert code == 0, followed.text()
    # The first node's line came while the slow node was still running, not at the end.
    assert ended - quick_done >= SLOW_SECONDS * 0.75, followed.text()
    lines = [line.split(" ", 1)[1] for _, line in followed.lines]
    assert [line.split(" (")[0] for line in lines] == [
        "▶ quick", "✓ quick", "▶ slow", "✓ slow", "▶ last", "✓ last",
    ], followed.text()
    assert all("attempt 1" in line for line in lines)
    assert "✓ slow (context) succeeded in " in followed.text()
    assert stdout.startswith("=" * 60 + "\nPIPELINE RESULT\n") and stdout.endswith("✓ Pipeline completed successfully\n")


def test_following_a_run_that_is_half_done_shows_what_happened_then_what_happens(cli, worker, config_path):
    queued = cli("run_pipeline", "--config", config_path, "--json")
    run_id = json.loads(queued.stdout)["run_id"]
    deadline = time.monotonic() + 60
    while PipelineRun.objects.get(pk=run_id).current_node != "slow":
        assert time.monotonic() < deadline, "the run never reached its slow node"
        time.sleep(0.05)
    followed = Followed(cli.popen("show_run", str(run_id), "--follow", "--json"))
    code, stdout, _ = followed.finish()
    assert code == 0, followed.text()
    ends = [line for _, line in followed.lines if " ✓ " in line]
    assert [line.split(" ")[2] for line in ends] == ["quick", "slow", "last"], followed.text()
    assert sum(" ▶ slow " in line for _, line in followed.lines) == 1
    assert json.loads(stdout)["status"] == "completed"


def test_a_cancel_request_is_shown_as_it_happens(cli, worker, config_path):
    followed = Followed(cli.popen("run_pipeline", "--config", config_path, "--follow"))
    followed.wait_for("▶ slow (context) started")
    run_id = PipelineRun.objects.order_by("-pk").values_list("pk", flat=True).first()
    assert cli("cancel_run", str(run_id)).exit_code == 0
    followed.wait_for("■ cancellation requested", timeout=30)
    code, _, _ = followed.finish()
    assert code == 4, followed.text()
    assert "▶ last" not in followed.text()
