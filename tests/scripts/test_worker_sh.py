"""scripts/worker.sh runs a background worker and one beat beside it.

The script runs for real, on the test database and a private embedded broker,
with its pid files and logs in a temporary folder (WORKER_STATE_DIR), never
the checkout's var/. Every process it started is killed at the end even when
a test fails.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from apps.orchestration.models import PipelineRun
from tests.support import PROCESS_TIMEOUT, ROOT, CommandResult

pytestmark = pytest.mark.subprocess

SCRIPT_TIMEOUT = 120  # seconds for one `worker.sh` call (its own waits are bounded to 30 s each)
RUNS_TIMEOUT = PROCESS_TIMEOUT  # seconds for an every-1-second schedule to complete its first runs


class WorkerScript:
    """Calls `bash scripts/worker.sh ...` and remembers every process it started."""

    def __init__(self, env: dict, state: Path):
        self.env, self.state = env, state
        self.started: dict[int, psutil.Process] = {}

    def __call__(self, command: str) -> CommandResult:
        proc = subprocess.run(
            ["bash", str(ROOT / "scripts" / "worker.sh"), command],
            cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
        )
        self._remember()
        return CommandResult(proc.returncode, proc.stdout, proc.stderr)

    def pid(self, name: str) -> int:
        return int((self.state / f"{name}.pid").read_text())

    def _remember(self) -> None:
        """Note the processes behind the pid files and their children (the worker's pool)."""
        for name in ("worker", "beat"):
            try:
                main = psutil.Process(self.pid(name))
                for proc in (main, *main.children(recursive=True)):
                    self.started.setdefault(proc.pid, proc)
            except (OSError, ValueError, psutil.Error):
                continue

    def kill_leftovers(self) -> None:
        """SIGKILL whatever the script started and is still alive (psutil checks each is the same process)."""
        self._remember()
        alive = [proc for proc in self.started.values() if proc.is_running()]
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=10)

    def alive(self) -> list[psutil.Process]:
        return [proc for proc in self.started.values()
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def worker_sh(subprocess_env, tmp_path):
    from apps.broker.embedded import EmbeddedBroker

    broker_dir = Path(tempfile.mkdtemp(prefix="ws", dir="/tmp"))  # short: a unix socket lives there
    state = tmp_path / "state"
    env = {**subprocess_env, "CELERY_BROKER_URL": "", "EMBEDDED_BROKER_DIR": str(broker_dir),
           "WORKER_STATE_DIR": str(state), "LOG_FORMAT": "text"}
    script = WorkerScript(env, state)
    try:
        yield script
    finally:
        try:
            script("stop")
        finally:
            script.kill_leftovers()
            EmbeddedBroker(broker_dir).stop()
            shutil.rmtree(broker_dir, ignore_errors=True)


def beats_of(state: Path) -> list[psutil.Process]:
    """Live beat processes writing their schedule file into ``state`` (this test's beats)."""
    marker = str(state / "celerybeat-schedule")
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if "beat" in cmdline and marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def wait_for_completed_scheduled_runs(name: str, count: int) -> list[PipelineRun]:
    deadline = time.monotonic() + RUNS_TIMEOUT
    while time.monotonic() < deadline:
        runs = list(PipelineRun.objects.filter(definition_name=name, trigger="schedule", status="completed"))
        if len(runs) >= count:
            return runs
        time.sleep(0.2)
    pytest.fail(f"fewer than {count} completed scheduled runs of {name} after {RUNS_TIMEOUT}s: "
                f"{list(PipelineRun.objects.values_list('pk', 'trigger', 'status', 'error'))}")


def test_start_runs_a_worker_and_a_beat_that_fire_a_loaded_schedule(worker_sh, manage, tmp_path):
    definitions = tmp_path / "definitions"
    definitions.mkdir()
    (definitions / "every-second.json").write_text(
        '{"version": "1.0", "schedule": {"every": 1},'
        ' "nodes": [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]}'
    )
    loaded = manage("load_pipelines", "--dir", str(definitions))
    assert loaded.exit_code == 0, loaded.stderr

    started = worker_sh("start")
    assert started.exit_code == 0, started.stdout + started.stderr
    worker_pid, beat_pid = worker_sh.pid("worker"), worker_sh.pid("beat")
    state = worker_sh.state
    assert started.stdout == (f"worker started (pid {worker_pid}), log: {state}/worker.log\n"
                              f"beat started (pid {beat_pid}), log: {state}/beat.log\n")
    assert "beat: Starting..." in (state / "beat.log").read_text()

    status = worker_sh("status")
    assert status.exit_code == 0
    assert status.stdout == (f"worker running (pid {worker_pid}), log: {state}/worker.log\n"
                             f"beat running (pid {beat_pid}), log: {state}/beat.log\n")

    # Nothing more is needed for the schedule to launch runs that a worker completes.
    runs = wait_for_completed_scheduled_runs("every-second", 2)
    assert all(run.idempotency_key.startswith("schedule:every-second:") for run in runs)

    again = worker_sh("start")
    assert again.exit_code == 0
    assert again.stdout == (f"worker already running (pid {worker_pid}), log: {state}/worker.log\n"
                            f"beat already running (pid {beat_pid}), log: {state}/beat.log\n")
    assert [proc.pid for proc in beats_of(state)] == [beat_pid]

    stopped = worker_sh("stop")
    assert stopped.exit_code == 0
    assert stopped.stdout == "beat stopped\nworker stopped\n"
    assert worker_sh.alive() == []
    assert not (state / "worker.pid").exists() and not (state / "beat.pid").exists()

    after = worker_sh("status")
    assert after.exit_code == 3
    assert after.stdout == "worker not running\nbeat not running\n"
    assert worker_sh("stop").stdout == "beat not running\nworker not running\n"


def test_status_says_which_one_is_down_and_start_brings_back_only_that_one(worker_sh):
    assert worker_sh("start").exit_code == 0
    worker_pid, beat_pid = worker_sh.pid("worker"), worker_sh.pid("beat")
    beat = psutil.Process(beat_pid)
    beat.terminate()
    beat.wait(30)

    status = worker_sh("status")
    assert status.exit_code == 3
    assert status.stdout == (f"worker running (pid {worker_pid}), log: {worker_sh.state}/worker.log\n"
                             "beat not running\n")

    # The pid file still names the beat that is gone: start replaces it, the worker stays.
    restarted = worker_sh("start")
    assert restarted.exit_code == 0, restarted.stdout + restarted.stderr
    new_beat = worker_sh.pid("beat")
    assert new_beat != beat_pid
    assert restarted.stdout == (f"worker already running (pid {worker_pid}), log: {worker_sh.state}/worker.log\n"
                                f"beat started (pid {new_beat}), log: {worker_sh.state}/beat.log\n")
    assert [proc.pid for proc in beats_of(worker_sh.state)] == [new_beat]

    assert worker_sh("stop").exit_code == 0
    assert worker_sh.alive() == []
