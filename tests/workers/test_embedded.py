"""The embedded broker's lifetime: started once on demand, shared, stopped, persistent,
and owned by one server that a slow answer never replaces."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest

from apps.broker.embedded import EXIT_TIMEOUT_SECONDS, SHUTDOWN_ANSWER_SECONDS, EmbeddedBroker, EmbeddedBrokerError
from tests.support import PROCESS_TIMEOUT, ROOT, manage_py_popen, wait_for


def servers(broker: EmbeddedBroker) -> list[int]:
    """Pids of the live redis-server processes whose command line names the broker's socket."""
    return sorted(
        process.pid
        for process in psutil.process_iter(["name", "cmdline", "status"])
        if process.info["name"] == "redis-server"
        and process.info["status"] != psutil.STATUS_ZOMBIE
        and str(broker.socket_path) in " ".join(process.info["cmdline"] or ())
    )


@pytest.fixture
def broker():
    # Short path under /tmp: unix socket paths are limited to ~107 bytes.
    directory = tempfile.mkdtemp(prefix="eb", dir="/tmp")
    embedded = EmbeddedBroker(Path(directory))
    try:
        yield embedded
    finally:
        try:
            embedded.stop()
        finally:
            # Whatever a failed test left behind on this private socket, by pid (SIGKILL acts on stopped ones too).
            for pid in servers(embedded):
                os.kill(pid, signal.SIGKILL)
            shutil.rmtree(directory, ignore_errors=True)


def manage_broker(broker: EmbeddedBroker, *args: str, **kwargs) -> subprocess.Popen:
    """`manage.py broker ...` as a child process on this broker's directory."""
    env = {**os.environ, "EMBEDDED_BROKER_DIR": str(broker.directory), "CELERY_BROKER_URL": ""}
    return manage_py_popen("broker", *args, env=env, **kwargs)


def finish(processes: list[subprocess.Popen], timeout: float = PROCESS_TIMEOUT) -> list[tuple[int, str, str]]:
    """Wait (bounded) for child processes; kills any still running, by pid, on the way out."""
    try:
        deadline = time.monotonic() + timeout
        results = []
        for p in processes:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((p.returncode, out, err))
        return results
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.wait()


START = (
    "import sys; from pathlib import Path; from apps.broker.embedded import EmbeddedBroker; "
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


@pytest.mark.parametrize("who", ["run_pipeline", "worker"])
def test_a_broker_directory_that_cannot_be_created_is_one_line_and_exit_1(manage, subprocess_env, tmp_path, who):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"EMBEDDED_BROKER_DIR": str(blocker / "broker"), "CELERY_BROKER_URL": ""}
    if who == "run_pipeline":
        config = tmp_path / "p.json"
        config.write_text('{"version": "1.0", "nodes": [{"id": "m", "type": "context"}]}')
        result = manage("run_pipeline", "--config", str(config), env=env)
        code, stderr = result.exit_code, result.stderr
    else:
        proc = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-P", "solo", "-l", "warning"],
            cwd=ROOT, env={**subprocess_env, **env}, capture_output=True, text=True, timeout=120,
        )
        code, stderr = proc.returncode, proc.stderr
    [line] = [line for line in stderr.splitlines() if "EMBEDDED_BROKER_DIR" in line]
    assert code == 1, stderr
    assert "Traceback" not in stderr
    assert f"cannot use the directory {blocker / 'broker'} (Not a directory)" in line
    from apps.orchestration.models import PipelineRun

    assert not PipelineRun.objects.exists()


def test_broker_command_reports_and_controls_the_server(broker):
    def command(*args):
        [(code, out, _)] = finish([manage_broker(broker, *args)])
        return code, out

    code, out = command("status")
    assert code == 3 and out.startswith("not running: ")
    assert command("start") == (0, f"started: {broker.socket_path}\n")
    assert command("status") == (0, f"running: {broker.socket_path} (pid {broker.pid()})\n")
    assert command("stop") == (0, "stopped\n")
    assert not broker.is_running()
    assert command("stop") == (0, "not running\n")


@pytest.mark.parametrize("flag", ["--dry-run", "--inline"])
def test_dry_run_and_inline_never_touch_the_broker(manage, broker, tmp_path, flag):
    config = tmp_path / "p.json"
    config.write_text('{"version": "1.0", "nodes": [{"id": "m", "type": "context", "config": {"include": ["memory"]}}]}')
    result = manage("run_pipeline", "--config", str(config), flag,
                    env={"EMBEDDED_BROKER_DIR": str(broker.directory), "CELERY_BROKER_URL": ""})
    assert result.exit_code == 0, result.stderr
    assert not broker.socket_path.exists()


def test_a_server_that_does_not_answer_is_waited_for_and_never_replaced(broker):
    assert broker.ensure_running() is True
    pid = broker.pid()
    socket_inode = broker.socket_path.stat().st_ino
    with broker.client() as client:
        client.lpush("celery", "queued-run")
    waited: list[tuple[bool | Exception, float]] = []

    began: list[float] = []

    def ensure_running_in_a_thread():
        started = time.monotonic()
        began.append(started)
        try:
            result = EmbeddedBroker(broker.directory).ensure_running()
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            result = exc
        waited.append((result, time.monotonic() - started))

    children: list[subprocess.Popen] = []
    threads = [threading.Thread(target=ensure_running_in_a_thread) for _ in range(3)]
    os.kill(pid, signal.SIGSTOP)
    try:
        # Several starters at once, while the owner takes far longer than a 1 s PING to answer.
        children += [
            subprocess.Popen([sys.executable, "-c", START, str(broker.directory)], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        children.append(manage_broker(broker, "start"))
        for thread in threads:
            thread.start()
        # Each starter in ensure_running for well past the old 1 s PING timeout before the owner wakes.
        wait_for(lambda: len(began) == 3 and time.monotonic() - max(began) >= 2.5,
                 what="the three starters to have waited 2.5 s")
        assert not broker.answers(timeout=0.2)
    finally:
        os.kill(pid, signal.SIGCONT)
        for thread in threads:
            thread.join(timeout=30)
        results = finish(children)

    assert len(waited) == 3
    for result, seconds in waited:
        assert result is False
        assert seconds > 1.0  # it waited past the old 1 s PING timeout instead of replacing the owner
    for code, out, err in results[:3]:
        assert (code, out.split()) == (0, ["False", str(pid)]), err
    assert results[3][:2] == (0, f"already running: {broker.socket_path}\n"), results[3][2]
    assert servers(broker) == [pid]
    assert broker.pid_path.read_text().strip() == str(pid)
    assert broker.socket_path.stat().st_ino == socket_inode
    with broker.client() as client:
        assert client.lrange("celery", 0, -1) == [b"queued-run"]


def test_a_killed_server_is_replaced_by_a_fresh_one_on_the_same_queue(broker):
    assert broker.ensure_running() is True
    old = broker.pid()
    with broker.client() as client:
        client.lpush("celery", "queued-run")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not servers(broker), what="the killed server to be gone")
    # Its pid file and socket are left behind, naming a dead process.
    assert broker.pid_path.read_text().strip() == str(old) and broker.socket_path.exists()
    assert not broker.is_running()

    assert broker.ensure_running() is True
    new = broker.pid()
    assert new not in (None, old)
    assert servers(broker) == [new]
    with broker.client() as client:
        assert client.lrange("celery", 0, -1) == [b"queued-run"]


def test_a_pid_file_naming_another_live_process_is_stale(broker):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # As after a reboot: the recorded pid now belongs to an unrelated process, the socket is stale.
        broker.directory.mkdir(parents=True, exist_ok=True)
        broker.pid_path.write_text(f"{sleeper.pid}\n")
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(broker.socket_path))
        assert not broker.is_running()

        assert broker.ensure_running() is True
        assert broker.pid() not in (None, sleeper.pid)
        assert servers(broker) == [broker.pid()]
        assert broker.stop() is True
        assert sleeper.poll() is None  # never signalled
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_lost_pid_file_does_not_start_a_second_server(broker):
    assert broker.ensure_running() is True
    pid = broker.pid()
    broker.pid_path.unlink()
    assert broker.ensure_running() is False
    assert servers(broker) == [pid]
    assert broker.pid() == pid


def test_stop_stops_the_owner_even_when_its_socket_was_removed(broker):
    assert broker.ensure_running() is True
    pid = broker.pid()
    with broker.client() as client:
        client.lpush("celery", "queued-run")
    broker.socket_path.unlink()

    gone = rf"^Embedded broker \(pid {pid}\) is running but its socket .* is gone"
    with pytest.raises(EmbeddedBrokerError, match=gone):
        broker.ensure_running()
    assert servers(broker) == [pid]

    assert broker.stop() is True
    assert servers(broker) == [] and not broker.pid_path.exists()
    assert broker.ensure_running() is True
    with broker.client() as client:
        assert client.lrange("celery", 0, -1) == [b"queued-run"]


def test_stop_signals_the_owner_when_shutdown_does_not_answer(broker):
    assert broker.ensure_running() is True
    pid = broker.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        assert broker.stop() is True
        assert time.monotonic() - started < SHUTDOWN_ANSWER_SECONDS + EXIT_TIMEOUT_SECONDS
        assert servers(broker) == []
    finally:
        if pid in servers(broker):
            os.kill(pid, signal.SIGCONT)


def test_broker_status_reports_an_owner_that_does_not_answer_as_running(broker):
    assert broker.ensure_running() is True
    pid = broker.pid()
    os.kill(pid, signal.SIGSTOP)
    try:
        [(code, out, err)] = finish([manage_broker(broker, "status")])
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (code, out) == (0, f"running: {broker.socket_path} (pid {pid}, not answering)\n"), err
    [(code, out, err)] = finish([manage_broker(broker, "status")])
    assert (code, out) == (0, f"running: {broker.socket_path} (pid {pid})\n"), err
