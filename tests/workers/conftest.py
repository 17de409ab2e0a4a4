"""Real worker processes and brokers for end-to-end tests.

Each test module gets a broker namespace of its own (a private embedded
broker directory, or a free database of TEST_REDIS_URL's range,
see tests/support.py) and a real Celery worker on it;
both are stopped at the end, even when a test fails.
"""
from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis

from tests.support import (  # noqa: F401  (the Redis names: importable from here as before)
    CLAIM_KEY,
    PROCESS_TIMEOUT,
    REDIS_URL,
    ROOT,
    TEST_REDIS_DBS,
    CommandResult,
    Gate,
    amqp_bindings,
    amqp_vhost_create,
    amqp_vhost_delete,
    claim_redis_db,
    database_url,
    manage_py,
    manage_py_popen,
    require_rabbitmq,
    require_redis,
    wait_for,
)


class BrokerNamespace:
    """Environment variables that put processes on one broker, and its cleanup."""

    def __init__(self, kind: str):
        self.kind = kind
        self.env: dict[str, str] = {}
        self._dir = None
        if kind == "embedded":
            # Short path: unix socket paths are limited to ~107 bytes.
            self._dir = tempfile.mkdtemp(prefix="eb", dir="/tmp")
            self.env["EMBEDDED_BROKER_DIR"] = self._dir
            self.env["CELERY_BROKER_URL"] = ""
        elif kind == "rabbitmq":
            require_rabbitmq()
            self.vhost, self.url = amqp_vhost_create()
            self.env["CELERY_BROKER_URL"] = self.url
        else:
            require_redis()
            self.url = claim_redis_db()
            self.env["CELERY_BROKER_URL"] = self.url

    def client(self):
        """A Redis client on this broker (a context manager that closes it)."""
        assert self.kind != "rabbitmq", "a RabbitMQ broker has no Redis client"
        if self.kind == "embedded":
            from apps.broker.embedded import EmbeddedBroker

            return EmbeddedBroker(Path(self._dir)).client()
        return redis.Redis.from_url(self.url)

    def subscribers(self, run_id: int) -> int:
        """How many processes listen to the run's events (a --wait or --follow waiting on it)."""
        from apps.orchestration.events import channel_name

        if self.kind == "rabbitmq":
            return amqp_bindings(self.vhost, channel_name(run_id, db=0))
        with self.client() as client:
            channel = channel_name(run_id, db=client.connection_pool.connection_kwargs.get("db", 0))
            return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)

    def purge(self, queue: str = "celery") -> int:
        """Lose every message waiting in ``queue``, as a purge, a broker restarted without its
        data or a lost message would; how many there were."""
        if self.kind == "rabbitmq":
            import kombu

            with kombu.Connection(self.url) as connection:
                return connection.channel().queue_purge(queue) or 0
        from apps.broker.redis_adapter import queue_keys

        keys = queue_keys(queue)
        with self.client() as client, client.pipeline() as pipe:
            for key in keys:
                pipe.llen(key)
            pipe.delete(*keys)
            return sum(pipe.execute()[:-1])

    def close(self) -> None:
        if self.kind == "embedded":
            from apps.broker.embedded import EmbeddedBroker

            EmbeddedBroker(Path(self._dir)).stop()
            shutil.rmtree(self._dir, ignore_errors=True)
        elif self.kind == "rabbitmq":
            amqp_vhost_delete(self.vhost)
        else:
            redis.Redis.from_url(self.url).flushdb()


class CollectedProcess:
    """A real child process (in a session of its own) whose output is collected."""

    def __init__(self, command: list[str], env: dict):
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            self.seen(line)

    def seen(self, line: str) -> None:
        """Called with each line of output as it arrives."""

    def log(self) -> str:
        return "".join(self.lines)

    def wait_for_log(self, text: str, timeout: float = PROCESS_TIMEOUT) -> bool:
        """Whether a line with ``text`` came within ``timeout`` seconds."""
        try:
            return wait_for(lambda: text in self.log(), timeout=timeout, what=repr(text))
        except AssertionError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            # The whole process group: the main process and its children (a worker's pool).
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._reader.join(5)


class WebServer(CollectedProcess):
    """A real gunicorn serving the project (threaded, as deployments run it), on a free port."""

    def __init__(self, env: dict):
        super().__init__(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application", "--bind", "127.0.0.1:0",
             "--workers", "1", "--worker-class", "gthread", "--threads", "4", "--timeout", "90"],
            env,
        )
        try:
            line = wait_for(lambda: re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log()),
                            what="gunicorn to listen")
        except AssertionError:
            self.stop()
            raise AssertionError("gunicorn did not start:\n" + self.log()) from None
        self.port = int(line[1])

    def call(self, method: str, path: str, key: str, body: dict | None = None, timeout: float = PROCESS_TIMEOUT):
        """``method path`` with the API key (and ``body`` as JSON); returns (status, parsed JSON)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            connection.request(method, path, json.dumps(body) if body is not None else None, headers)
            response = connection.getresponse()
            return response.status, json.loads(response.read())
        finally:
            connection.close()


class Worker(CollectedProcess):
    """A real `celery -A workers worker` process."""

    def __init__(self, env: dict, concurrency: int = 2):
        self._ready = threading.Event()
        super().__init__(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-l", "info",
             "-c", str(concurrency), "-P", "prefork", "--without-gossip", "--without-mingle",
             "--without-heartbeat", "-n", f"test{os.getpid()}-{id(self)}@%h"],
            env,
        )
        if not self._ready.wait(PROCESS_TIMEOUT):
            self.stop()
            raise RuntimeError("worker did not become ready:\n" + self.log())

    def seen(self, line: str) -> None:
        if " ready." in line:
            self._ready.set()

    def freeze(self) -> None:
        """Stop the worker's whole process group (SIGSTOP) at a moment none of its
        processes holds SQLite's write lock: a worker frozen inside a write (its
        start-up sweep, its presence rows) would hold every other writer, the
        command under test included, until it is thawed. On PostgreSQL the first
        stop is kept."""
        deadline = time.monotonic() + PROCESS_TIMEOUT
        while True:
            os.killpg(self.proc.pid, signal.SIGSTOP)
            if _sqlite_writable() or time.monotonic() > deadline:
                return
            os.killpg(self.proc.pid, signal.SIGCONT)
            time.sleep(0.05)

    def thaw(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)


def _sqlite_writable() -> bool:
    """Whether a write transaction can start on the tests' database now (always, off SQLite)."""
    import sqlite3

    from django.db import connection

    if connection.vendor != "sqlite":
        return True
    probe = sqlite3.connect(connection.settings_dict["NAME"], timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.rollback()
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


# The brokers worker tests run on (TEST_BROKERS, comma-separated: embedded, redis, rabbitmq;
# embedded and redis by default). scripts/test.sh pairs them with the databases as deployments
# do: the embedded broker with SQLite, Redis and RabbitMQ with PostgreSQL, which halves the
# suite's time. On RabbitMQ only the tests marked ``rabbitmq`` run (what differs between brokers:
# runs, waits, cancel, host queues, recovery, doctor), unless TEST_RABBITMQ_ALL=1.
TEST_BROKERS = [kind.strip() for kind in os.environ.get("TEST_BROKERS", "embedded,redis").split(",") if kind.strip()]


def pytest_collection_modifyitems(config, items):
    if "rabbitmq" not in TEST_BROKERS or os.environ.get("TEST_RABBITMQ_ALL") == "1":
        return
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_rabbitmq = callspec is not None and callspec.params.get("broker") == "rabbitmq"
        (dropped if on_rabbitmq and item.get_closest_marker("rabbitmq") is None else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="module", params=TEST_BROKERS)
def broker(request, django_db_setup, django_db_blocker):
    namespace = BrokerNamespace(request.param)
    try:
        yield namespace
    finally:
        namespace.close()


@pytest.fixture(scope="module")
def base_env(broker, django_db_setup) -> dict:
    env = dict(os.environ)
    env.update(broker.env)
    env["DATABASE_URL"] = database_url()
    env["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    env["RUN_PICKUP_TIMEOUT_SECONDS"] = "20"
    return env


@pytest.fixture(scope="module")
def worker(base_env):
    """One worker shared by a module's tests, stopped at the module's end."""
    shared = Worker(base_env)
    try:
        yield shared
    finally:
        shared.stop()


@pytest.fixture
def start_worker(base_env):
    """Start workers for one test; each is stopped when the test ends."""
    started: list[Worker] = []

    def _start(concurrency: int = 2, **extra_env) -> Worker:
        worker = Worker({**base_env, **extra_env}, concurrency=concurrency)
        started.append(worker)
        return worker

    try:
        yield _start
    finally:
        for worker in started:
            worker.stop()


@pytest.fixture
def gate():
    """A gate (tests.support.Gate) for a node of this test's runs; workers reach it with ``gate.env``."""
    started = Gate()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def module_gate():
    """One gate for a module whose shared worker must reach it: such a module takes
    ``module_gate_fixtures()``, which add ``module_gate.env`` to its ``base_env`` and make its
    ``gate`` this one, reset for each test."""
    started = Gate()
    try:
        yield started
    finally:
        started.stop()


def module_gate_fixtures():
    """The ``base_env`` and ``gate`` fixtures of a module whose shared worker waits at
    ``module_gate``; assign both to module names (``gated_env, gate_per_test = ...``)."""

    @pytest.fixture(scope="module", name="base_env")
    def gated_base_env(base_env, module_gate):
        return {**base_env, **module_gate.env}

    @pytest.fixture(name="gate")
    def gate_per_test(module_gate):
        module_gate.reset()  # closed at the start of each test, opened at its end
        try:
            yield module_gate
        finally:
            module_gate.open()

    return gated_base_env, gate_per_test


def _ctrl_c_as_in_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def cli(base_env, transactional_db):
    """Run manage.py in a child process on this module's broker and database."""

    def _run(*args: str, timeout: float = 120, **extra_env) -> CommandResult:
        return manage_py(*args, env={**base_env, **extra_env}, timeout=timeout)

    def _popen(*args: str, **extra_env) -> subprocess.Popen:
        # As from a terminal, even when the suite itself runs in the background (where a shell ignores Ctrl-C).
        return manage_py_popen(*args, env={**base_env, **extra_env}, preexec_fn=_ctrl_c_as_in_a_terminal)

    _run.popen = _popen
    return _run
