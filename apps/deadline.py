"""A deadline for one HTTP exchange made with httpx: connect, send, and read
the answer to its last byte.

httpx's timeouts bound each step alone (one read, one write), so a server
sending one byte a second would hold a call for as long as it likes. Here a
timer shuts the connection's socket down when the deadline passes, which ends
whatever read or write waits on it; the socket is learnt through httpcore's
documented ``trace`` request extension.
"""
from __future__ import annotations

import socket
import threading
import time

import httpx


class DeadlineExceeded(httpx.TimeoutException):
    """The exchange (connect, send, read the whole answer) went past the call's timeout."""


class ExchangeDeadline:
    """A deadline for one exchange: ``seconds`` after it is entered, the
    connection's socket (learnt through httpcore's trace extension) is shut
    down, which wakes a read or write blocked on it. A timer thread does it;
    leaving the context stops the timer, and the lock keeps the two from
    crossing."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._at = 0.0
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> ExchangeDeadline:
        self._at = time.monotonic() + self.seconds
        self._timer.start()
        return self

    def __exit__(self, *exc_info) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def remaining(self) -> float:
        """Seconds left; raises DeadlineExceeded when none are."""
        left = self._at - time.monotonic()
        if left <= 0 or self.expired:
            raise self.error()
        return left

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"the exchange took longer than {self.seconds:g}s")

    def trace(self, event: str, info: dict) -> None:
        """httpcore's trace callback: remembers the socket of each new connection (and of its TLS layer)."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        with self._lock:
            self._socket = sock
            if self.expired:
                self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._socket is None:
            return
        try:
            # The plain socket's own shutdown, also under TLS: SSLSocket.shutdown would drop its TLS state
            # while the other thread still reads through it.
            socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: the exchange ended meanwhile
