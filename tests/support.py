"""Helpers every test shares: waiting on a condition, running ``manage.py`` as a
child process, making a run, the health-check definition, and the Redis
databases tests may use.

Fixtures built on these live in ``tests/conftest.py`` (``manage``,
``health_check``) and ``tests/workers/conftest.py`` (``cli``, workers, brokers).
Nothing here imports Django models at import time: conftest files import this
module before Django is set up.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent

# Deadline for waits on another process (a worker's log line, a run's state, a child exiting):
# generous for a 2-core machine at load 10, where starting Python and Django takes seconds.
PROCESS_TIMEOUT = 90


# --- waiting ---------------------------------------------------------------------------------


def wait_for(condition, timeout: float = PROCESS_TIMEOUT, what: str = "the condition", interval: float = 0.05):
    """Call ``condition`` until it returns something true, and return that.

    Raises AssertionError naming ``what`` when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (the caller binds it soon after; the
    kernel does not hand a just-released ephemeral port out again at once)."""
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# --- manage.py in a child process --------------------------------------------------------------


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def manage_py(*args: str, env: dict, timeout: float = 120) -> CommandResult:
    """Run ``manage.py args`` in a child process with ``env`` and wait (bounded) for it to exit.

    Raises subprocess.TimeoutExpired (after killing the child) when it runs past ``timeout``."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def manage_py_popen(*args: str, env: dict, **popen_options) -> subprocess.Popen:
    """Start ``manage.py args`` in a child process with ``env`` (stdout and stderr piped, as text);
    the caller waits for it and stops it."""
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, **popen_options}
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env=env, **options)


class StderrLines:
    """A running child process whose stderr lines are collected as they come, each with the time it arrived."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def wait_for(self, text: str, timeout: float = PROCESS_TIMEOUT) -> float:
        """The time the first line containing ``text`` arrived; AssertionError when none comes in time."""
        found = wait_for(
            lambda: next((at for at, line in list(self.lines) if text in line), None),
            timeout=timeout, what=f"a line with {text!r}; so far:\n{self.text()}",
        )
        return found

    def finish(self, timeout: float = 150) -> tuple[int, str, float]:
        """Wait for the process to exit (killing it past ``timeout``): exit code, stdout, the time it ended."""
        try:
            stdout = _read_all(self.proc.stdout, timeout)
            code = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)
        ended = time.monotonic()
        self._reader.join(10)
        return code, stdout, ended

    def stop(self) -> None:
        """Kill the process if it still runs (by its pid)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def text(self) -> str:
        return "\n".join(line for _, line in list(self.lines))


def _read_all(stream, timeout: float) -> str:
    """All of ``stream`` until it closes, waiting at most ``timeout`` seconds."""
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(stream.read()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        raise AssertionError(f"the process kept its output open for more than {timeout:g}s")
    return "".join(chunks)


# --- runs and definitions ------------------------------------------------------------------------

# The spec's health-check definition (spec/run-pipeline-definitions.txt), for the `health_check` fixture.
HEALTH_CHECK_NODES = [
    {"id": "metrics", "type": "context", "config": {"include": ["cpu", "memory", "disk"]}, "next": "analyze"},
    {"id": "analyze", "type": "intelligence", "config": {"provider": "local"}, "next": "notify"},
    {"id": "notify", "type": "notify", "config": {"driver": "console"}},
]

# A definition that runs in a blink and needs nothing: what a run is made of when its nodes do not matter.
TINY_NODES = [{"id": "shape", "type": "transform", "config": {"mapping": {"x": "payload.x"}, "defaults": {"x": 0}}}]


def make_run(nodes: list[dict] | None = None, *, name: str = "p", payload: dict | None = None,
             defaults: dict | None = None, **fields):
    """A queued run made by the launcher from the stored definition ``name`` (created with ``nodes``
    and ``defaults`` when no definition has that name yet) and ``payload``, with ``fields`` then
    written over its row (status, times, origin...) as a worker or the years would have.

    Writes the definition and the run; raises what the launcher raises for an invalid one."""
    from apps.orchestration.inputs import definition_resolve
    from apps.orchestration.launch import pipeline_run_create
    from apps.orchestration.launchrequest import LaunchRequest
    from apps.orchestration.models import PipelineDefinition, PipelineRun

    config = {"version": "1.0", "nodes": nodes or TINY_NODES, **({"defaults": defaults} if defaults else {})}
    PipelineDefinition.objects.get_or_create(name=name, defaults={"config": config})
    run = pipeline_run_create(request=LaunchRequest(resolved=definition_resolve(name=name), payload=payload or {}))
    if fields:
        PipelineRun.objects.filter(pk=run.pk).update(**fields)
        run.refresh_from_db()
    return run


def database_url() -> str:
    """A DATABASE_URL naming the database the tests are using right now."""
    from django.db import connection

    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = s["USER"] or ""
    if s["PASSWORD"]:
        auth += f":{s['PASSWORD']}"
    host = f"{auth}@" if auth else ""
    return f"postgres://{host}{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


# --- Redis -------------------------------------------------------------------------------------

# TEST_REDIS_URL: the Redis server and the range of its databases tests may use, as
#     redis://[user:password@]HOST:PORT/FIRST-LAST     e.g. redis://127.0.0.1:6379/4-9
# (one database: /N; no path at all means /10-15). Default: redis://127.0.0.1:6379/10-15.
# Each broker namespace claims one free database of the range (CLAIM_KEY), so two test runs
# sharing a server never flush each other's queues; give concurrent checkouts disjoint ranges.
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/10-15"
CLAIM_KEY = "pipelines-test-claim"
CLAIM_SECONDS = 3600


def parse_test_redis_url(spec: str) -> tuple[str, range]:
    """The server URL (without a database) and the databases of a TEST_REDIS_URL value.

    Raises ValueError for a path that is not /N or /FIRST-LAST with FIRST <= LAST."""
    parts = urlsplit(spec)
    path = parts.path.strip("/") or "10-15"
    first, _, last = path.partition("-")
    try:
        dbs = range(int(first), int(last or first) + 1)
    except ValueError:
        raise ValueError(f"TEST_REDIS_URL must end in /N or /FIRST-LAST, not {spec!r}") from None
    if not dbs:
        raise ValueError(f"TEST_REDIS_URL names no database: {spec!r}")
    return urlunsplit((parts.scheme, parts.netloc, "", parts.query, "")), dbs


REDIS_URL, TEST_REDIS_DBS = parse_test_redis_url(os.environ.get("TEST_REDIS_URL") or DEFAULT_TEST_REDIS_URL)


def redis_db_url(db: int) -> str:
    """The URL of database ``db`` on the test Redis server."""
    parts = urlsplit(REDIS_URL)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, ""))


def require_redis() -> None:
    """Skip the test when the test Redis server does not answer (fail it when REQUIRE_SERVICES=1)."""
    import pytest
    import redis

    try:
        redis.Redis.from_url(redis_db_url(TEST_REDIS_DBS.start), socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        message = f"Redis not reachable at {REDIS_URL}: {exc}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def claim_redis_db() -> str:
    """The URL of a free test database of the Redis server, claimed for this process (and emptied
    of anything a run that died left behind); fails the test when every one is claimed."""
    import pytest
    import redis

    for db in TEST_REDIS_DBS:
        url = redis_db_url(db)
        client = redis.Redis.from_url(url)
        if client.set(CLAIM_KEY, os.getpid(), nx=True, ex=CLAIM_SECONDS):
            for key in client.scan_iter():
                if key != CLAIM_KEY.encode():
                    client.delete(key)
            return url
    pytest.fail(f"every test database {TEST_REDIS_DBS.start}-{TEST_REDIS_DBS.stop - 1} of {REDIS_URL} is claimed")


# --- RabbitMQ ----------------------------------------------------------------------------------

# TEST_AMQP_URL: the RabbitMQ server worker tests on RabbitMQ use (default the local one, as the
# guest user). Each broker namespace is a virtual host of its own, made with rabbitmqctl (on the
# same machine) and deleted at its end, so concurrent test runs never share a queue.
DEFAULT_TEST_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
AMQP_URL = os.environ.get("TEST_AMQP_URL") or DEFAULT_TEST_AMQP_URL
RABBITMQCTL = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"


def _rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([RABBITMQCTL, *args], capture_output=True, text=True, timeout=PROCESS_TIMEOUT)


def require_rabbitmq() -> None:
    """Skip the test when RabbitMQ does not answer or rabbitmqctl cannot be run here (fail it
    when REQUIRE_SERVICES=1)."""
    import kombu
    import pytest

    try:
        with kombu.Connection(AMQP_URL, connect_timeout=3) as connection:
            connection.connect()
        if _rabbitmqctl("list_vhosts").returncode != 0:
            raise OSError("rabbitmqctl list_vhosts failed")
    except (OSError, *kombu.Connection(AMQP_URL).connection_errors) as exc:
        message = f"RabbitMQ not usable at {AMQP_URL}: {exc}"
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)


def amqp_vhost_create() -> tuple[str, str]:
    """A new, empty virtual host of the test RabbitMQ server the test URL's user may use: its name
    and the broker URL that opens it."""
    parts = urlsplit(AMQP_URL)
    vhost = f"pipelines-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    user = unquote(parts.username or "guest")
    for args in (("add_vhost", vhost), ("set_permissions", "-p", vhost, user, ".*", ".*", ".*")):
        done = _rabbitmqctl(*args)
        assert done.returncode == 0, f"rabbitmqctl {' '.join(args)}: {done.stdout}{done.stderr}"
    return vhost, urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def amqp_vhost_delete(vhost: str) -> None:
    _rabbitmqctl("delete_vhost", vhost)


def amqp_bindings(vhost: str, routing_key: str) -> int:
    """How many queues of ``vhost`` are bound with ``routing_key`` (to any exchange)."""
    done = _rabbitmqctl("list_bindings", "-p", vhost, "-q", "--no-table-headers", "routing_key")
    return sum(1 for line in done.stdout.splitlines() if line.strip() == routing_key)


# --- holding a run at a node --------------------------------------------------------------------


class Gate:
    """A node that holds a run until the test opens the gate: a webhook ``notify`` node posting to a
    local HTTP server (tests.httpserver) that answers only once opened. What a test asserts about
    "while the node runs" then holds however slowly a loaded machine starts the processes involved.

    Processes that execute the node need ``env``; ``stop()`` opens the gate and stops the server."""

    URL_ENV = "TEST_GATE_URL"
    HOLD_SECONDS = 600  # far beyond any wait of a test: the gate opens when the test says so

    def __init__(self):
        from tests.httpserver import start_server

        self.server, self._stop = start_server()
        self.server.slow = True
        self.server.hold_seconds = self.HOLD_SECONDS
        self.env = {self.URL_ENV: self.server.url("/gate"), "OUTBOUND_ALLOW_HOSTS": "127.0.0.1"}

    def node(self, node_id: str, next_id: str | None = None) -> dict:
        """A node definition that waits at this gate (with time limits beyond the hold)."""
        config = {"driver": "webhook", "url_env": self.URL_ENV, "timeout_seconds": self.HOLD_SECONDS}
        return {"id": node_id, "type": "notify", "config": config, **({"next": next_id} if next_id else {})}

    # A definition's `defaults` that let a node wait at the gate (the engine's node limit is 60 s otherwise).
    DEFAULTS = {"timeout_seconds": HOLD_SECONDS}

    def reached(self, count: int = 1) -> bool:
        """Whether ``count`` requests (node attempts) have arrived at the gate."""
        return len(self.server.requests) >= count

    def open(self) -> None:
        self.server.release.set()

    def reset(self) -> None:
        """Closed again, with no request recorded (for the next test sharing it)."""
        self.server.release.clear()
        self.server.requests.clear()

    def stop(self) -> None:
        self._stop()
