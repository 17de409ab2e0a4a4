"""The embedded broker's lifetime: started once on demand, shared, stopped, persistent."""
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import ROOT
from workers.embedded import EmbeddedBroker, EmbeddedBrokerError


@pytest.fixture
def broker():
    directory = tempfile.mkdtemp(prefix="eb", dir="/tmp")
    embedded = EmbeddedBroker(Path(directory))
    try:
        yield embedded
    finally:
        embedded.stop()
        shutil.rmtree(directory, ignore_errors=True)


START = (
    "import sys; from pathlib import Path; from workers.embedded import EmbeddedBroker; "
    "b = EmbeddedBroker(Path(sys.argv[1])); print(b.ensure_running(), b.pid())"
)


def test_concurrent_starters_share_one_server(broker):
    procs = [
        subprocess.Popen([sys.executable, "-c", START, str(broker.directory)], cwd=ROOT,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [proc.communicate(timeout=30)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sorted(started for started, _ in outputs) == ["False", "False", "True"]
    assert len({pid for _, pid in outputs}) == 1
    # The server outlives the processes that started it.
    assert broker.is_running()


def test_stop_then_start_keeps_queued_messages(broker):
    assert broker.ensure_running() is True
    with broker.client() as client:
        client.lpush("celery", "queued-run")
    assert broker.stop() is True
    assert not broker.is_running()
    assert broker.stop() is False
    assert broker.ensure_running() is True
    with broker.client() as client:
        assert client.lrange("celery", 0, -1) == [b"queued-run"]


def test_socket_path_too_long_is_a_clear_error(tmp_path):
    deep = tmp_path / ("x" * 120)
    with pytest.raises(EmbeddedBrokerError, match="socket path is too long"):
        EmbeddedBroker(deep).ensure_running()


def test_broker_command_reports_and_controls_the_server(broker):
    env_cmd = lambda *args: subprocess.run(  # noqa: E731
        [sys.executable, str(ROOT / "manage.py"), "broker", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=30, env={**__import__("os").environ, "EMBEDDED_BROKER_DIR": str(broker.directory), "CELERY_BROKER_URL": ""},
    )
    status = env_cmd("status")
    assert status.returncode == 3 and status.stdout.startswith("not running: ")
    assert env_cmd("start").stdout.startswith("started: ")
    assert env_cmd("status").stdout.startswith("running: ")
    assert env_cmd("stop").stdout.strip() == "stopped"
    assert not broker.is_running()


@pytest.mark.parametrize("flag", ["--dry-run", "--inline"])
def test_dry_run_and_inline_never_touch_the_broker(manage, broker, tmp_path, flag):
    config = tmp_path / "p.json"
    config.write_text('{"version": "1.0", "nodes": [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]}')
    result = manage("run_pipeline", "--config", str(config), flag,
                    env={"EMBEDDED_BROKER_DIR": str(broker.directory), "CELERY_BROKER_URL": ""})
    assert result.exit_code == 0, result.stderr
    assert not broker.socket_path.exists()
