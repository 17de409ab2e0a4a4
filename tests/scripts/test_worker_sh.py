"""scripts/worker.sh runs a background worker, one beat and the web service beside them.

The script runs for real, on the test database and a private embedded broker,
with its pid files and logs in a temporary folder (WORKER_STATE_DIR), never
the checkout's var/, and the web service (real gunicorn) on a free port of
127.0.0.1. Every process it started is killed at the end even when a test fails.
"""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from apps.orchestration.models import PipelineRun
from tests.support import PROCESS_TIMEOUT, ROOT, CommandResult, free_port, wait_for

pytestmark = pytest.mark.subprocess

SCRIPT_TIMEOUT = 180  # seconds for one `worker.sh` call (its own waits are bounded: 30 s each, 70 s for web's stop)
RUNS_TIMEOUT = PROCESS_TIMEOUT  # seconds for an every-1-second schedule to complete its first runs


class WorkerScript:
    """Calls `bash scripts/worker.sh ...` and remembers every process it started."""

    def __init__(self, env: dict, state: Path, url: str):
        self.env, self.state, self.url = env, state, url
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
        for name in ("worker", "beat", "web"):
            try:
                main = psutil.Process(self.pid(name))
                for proc in (main, *main.children(recursive=True)):
                    self.started.setdefault(proc.pid, proc)
            except (OSError, ValueError, psutil.Error):
                continue

    def kill_leftovers(self) -> None:
        """SIGKILL whatever the script started and is still alive (psutil checks each is the same
        process): those it wrote pid files for, and any other process given this test's state
        directory (one whose pid file the script removed while it still ran)."""
        self._remember()
        for proc in psutil.process_iter():
            try:
                if proc.environ().get("WORKER_STATE_DIR") == str(self.state):
                    self.started.setdefault(proc.pid, proc)
            except psutil.Error:
                continue
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
    port = free_port()
    # One gunicorn worker process with two threads: what the tests ask of it, at the least cost.
    # COLUMNS as narrow as a terminal can be: the script must know its processes by their whole
    # command line, however deep the checkout (ps cuts its columns to COLUMNS, which pytest-xdist sets).
    env = {**subprocess_env, "CELERY_BROKER_URL": "", "EMBEDDED_BROKER_DIR": str(broker_dir),
           "WORKER_STATE_DIR": str(state), "LOG_FORMAT": "text", "COLUMNS": "20",
           "WEB_BIND": f"127.0.0.1:{port}", "WEB_CONCURRENCY": "1", "WEB_THREADS": "2"}
    script = WorkerScript(env, state, f"http://127.0.0.1:{port}/")
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


def get(url: str) -> tuple[int, str]:
    """The status and body of GET ``url`` (an HTTP error status too), within 30 s."""
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_start_runs_a_worker_a_beat_that_fire_a_loaded_schedule_and_the_web_service(worker_sh, manage, tmp_path):
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
    worker_pid, beat_pid, web_pid = worker_sh.pid("worker"), worker_sh.pid("beat"), worker_sh.pid("web")
    state, url = worker_sh.state, worker_sh.url
    assert started.stdout == (f"worker started (pid {worker_pid}), log: {state}/worker.log\n"
                              f"beat started (pid {beat_pid}), log: {state}/beat.log\n"
                              f"web started (pid {web_pid}), {url}, log: {state}/web.log\n")
    assert "beat: Starting..." in (state / "beat.log").read_text()

    # The web service is gunicorn with config/gunicorn.py: threaded workers (WEB_CONCURRENCY of
    # them), serving the project's Django application, with its access log in web.log.
    web = psutil.Process(web_pid)
    assert "config/gunicorn.py" in web.cmdline() and "config.wsgi:application" in web.cmdline()
    assert len(web.children()) == 1
    status, body = get(url + "admin/login/")
    assert status == 200 and "Pipeline launcher admin" in body
    log = (state / "web.log").read_text()
    assert f"Listening at: {url.rstrip('/')}" in log and "Using worker: gthread" in log
    wait_for(lambda: '"GET /admin/login/ HTTP/1.1" 200' in (state / "web.log").read_text(),
             timeout=10, what="the request in the access log")

    status = worker_sh("status")
    assert status.exit_code == 0
    assert status.stdout == (f"worker running (pid {worker_pid}), log: {state}/worker.log\n"
                             f"beat running (pid {beat_pid}), log: {state}/beat.log\n"
                             f"web running (pid {web_pid}), {url}, log: {state}/web.log\n")

    # Nothing more is needed for the schedule to launch runs that a worker completes.
    runs = wait_for_completed_scheduled_runs("every-second", 2)
    assert all(run.idempotency_key.startswith("schedule:every-second:") for run in runs)

    again = worker_sh("start")
    assert again.exit_code == 0
    assert again.stdout == (f"worker already running (pid {worker_pid}), log: {state}/worker.log\n"
                            f"beat already running (pid {beat_pid}), log: {state}/beat.log\n"
                            f"web already running (pid {web_pid}), {url}, log: {state}/web.log\n")
    assert [proc.pid for proc in beats_of(state)] == [beat_pid]

    stopped = worker_sh("stop")
    assert stopped.exit_code == 0
    assert stopped.stdout == "web stopped\nbeat stopped\nworker stopped\n"
    assert worker_sh.alive() == []
    assert not any((state / f"{name}.pid").exists() for name in ("worker", "beat", "web"))
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "admin/login/", timeout=10)

    after = worker_sh("status")
    assert after.exit_code == 3
    assert after.stdout == "worker not running\nbeat not running\nweb not running\n"
    assert worker_sh("stop").stdout == "web not running\nbeat not running\nworker not running\n"


def test_status_says_which_one_is_down_and_start_brings_back_only_that_one(worker_sh):
    assert worker_sh("start").exit_code == 0
    worker_pid, beat_pid, web_pid = worker_sh.pid("worker"), worker_sh.pid("beat"), worker_sh.pid("web")
    state, url = worker_sh.state, worker_sh.url
    for pid in (beat_pid, web_pid):
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(90)

    status = worker_sh("status")
    assert status.exit_code == 3
    assert status.stdout == (f"worker running (pid {worker_pid}), log: {state}/worker.log\n"
                             "beat not running\nweb not running\n")

    # The pid files still name the beat and web service that are gone: start replaces them, the worker stays.
    restarted = worker_sh("start")
    assert restarted.exit_code == 0, restarted.stdout + restarted.stderr
    new_beat, new_web = worker_sh.pid("beat"), worker_sh.pid("web")
    assert new_beat != beat_pid and new_web != web_pid
    assert restarted.stdout == (f"worker already running (pid {worker_pid}), log: {state}/worker.log\n"
                                f"beat started (pid {new_beat}), log: {state}/beat.log\n"
                                f"web started (pid {new_web}), {url}, log: {state}/web.log\n")
    assert [proc.pid for proc in beats_of(state)] == [new_beat]
    assert get(url + "admin/login/")[0] == 200

    assert worker_sh("stop").exit_code == 0
    assert worker_sh.alive() == []


def test_web_address_in_use_is_a_clear_error_not_a_hang(worker_sh):
    host, port = worker_sh.env["WEB_BIND"].split(":")
    with socket.socket() as taken:
        taken.bind((host, int(port)))
        taken.listen()
        began = time.monotonic()
        started = worker_sh("start")
        took = time.monotonic() - began

    assert started.exit_code == 1
    assert started.stderr == (f"web cannot listen on 127.0.0.1:{port}: the address is in use "
                              f"(set WEB_BIND to another); see {worker_sh.state}/web.log\n")
    assert "web started" not in started.stdout
    assert not (worker_sh.state / "web.pid").exists()
    # Stopped at gunicorn's first refusal, not after its 5 s of retries (the worker and beat start first).
    assert "Can't connect to" not in (worker_sh.state / "web.log").read_text(), took
    status = worker_sh("status")
    assert status.exit_code == 3 and status.stdout.endswith("web not running\n")
    assert worker_sh("stop").exit_code == 0
    assert worker_sh.alive() == []


def test_web_that_refuses_its_own_address_is_stopped_with_the_reason(worker_sh):
    # Django answers 400 to a Host it does not serve: the service would be useless at that URL.
    worker_sh.env["DJANGO_ALLOWED_HOSTS"] = "ops.example.com"
    started = worker_sh("start")
    assert started.exit_code == 1
    assert started.stderr == (f"web answered GET {worker_sh.url}healthz with HTTP 400, so it was stopped "
                              f"(400: is the host in DJANGO_ALLOWED_HOSTS?); see {worker_sh.state}/web.log\n")
    assert not (worker_sh.state / "web.pid").exists()
    with pytest.raises(OSError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", int(worker_sh.url.rsplit(":", 1)[1].strip("/"))), timeout=10)
    assert worker_sh("stop").exit_code == 0
    assert worker_sh.alive() == []


def test_restart_stops_all_three_and_starts_them_with_what_env_file_says_now(worker_sh, tmp_path):
    assert worker_sh("start").exit_code == 0
    before = {name: worker_sh.pid(name) for name in ("worker", "beat", "web")}
    old = [psutil.Process(pid) for pid in before.values()]
    # The web service moves to the address .env names (the environment no longer sets one), and the
    # worker gets a variable from it: a .env edited, then a restart.
    port = free_port()
    env_file = tmp_path / "deploy.env"
    env_file.write_text(f"WEB_BIND=127.0.0.1:{port}\nWORKER_SH_ENV_PROBE=from-the-file\n")
    del worker_sh.env["WEB_BIND"]
    worker_sh.env["ENV_FILE"] = str(env_file)

    restarted = worker_sh("restart")
    assert restarted.exit_code == 0, restarted.stdout + restarted.stderr
    after = {name: worker_sh.pid(name) for name in ("worker", "beat", "web")}
    state, url = worker_sh.state, f"http://127.0.0.1:{port}/"
    assert restarted.stdout == (
        "web stopped\nbeat stopped\nworker stopped\n"
        f"worker started (pid {after['worker']}), log: {state}/worker.log\n"
        f"beat started (pid {after['beat']}), log: {state}/beat.log\n"
        f"web started (pid {after['web']}), {url}, log: {state}/web.log\n"
    )
    assert not any(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE for proc in old)
    assert set(after.values()).isdisjoint(before.values())
    assert get(url + "healthz")[0] == 200
    assert [proc.pid for proc in beats_of(state)] == [after["beat"]]
    # The worker read the file itself: asked over the broker, by a process that reads no .env.
    asked = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "inspect", "env_missing",
         "WORKER_SH_ENV_PROBE", "WORKER_SH_NOT_SET", "-j", "-t", "10"],
        cwd=ROOT, env={**worker_sh.env, "ENV_FILE": ""}, capture_output=True, text=True, timeout=SCRIPT_TIMEOUT,
    )
    assert asked.returncode == 0, asked.stdout + asked.stderr
    answers = list(json.loads(asked.stdout).values())
    assert [answer["missing"] for answer in answers] == [["WORKER_SH_NOT_SET"]]

    assert worker_sh("stop").exit_code == 0
    assert worker_sh.alive() == []


@pytest.mark.parametrize(("bind", "url"), [
    ("", "http://127.0.0.1:8000/"),
    ("127.0.0.1:8123", "http://127.0.0.1:8123/"),
    ("0.0.0.0:8000", "http://127.0.0.1:8000/"),
    ("[::]:9000", "http://[::1]:9000/"),
    ("[::1]:9000", "http://[::1]:9000/"),
    ("localhost", "http://localhost:8000/"),
    ("unix:/run/pipelines/web.sock", "unix:/run/pipelines/web.sock"),
])
def test_url_says_where_the_web_service_answers(tmp_path, bind, url):
    env = {"PATH": "/usr/bin:/bin", "ENV_FILE": "", "WORKER_STATE_DIR": str(tmp_path / "state"), "WEB_BIND": bind}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "worker.sh"), "url"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{url}\n", "")


@pytest.mark.parametrize(("name", "value"), [("WEB_CONCURRENCY", "two"), ("WEB_CONCURRENCY", "1.5"), ("WEB_THREADS", "0")])
def test_a_bad_web_process_or_thread_count_starts_nothing(tmp_path, name, value):
    state = tmp_path / "state"
    env = {"PATH": "/usr/bin:/bin", "ENV_FILE": "", "WORKER_STATE_DIR": str(state), name: value}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "worker.sh"), "start"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=SCRIPT_TIMEOUT)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"{name} must be a whole number of at least 1, not '{value}'\n"
    assert list(state.iterdir()) == []
