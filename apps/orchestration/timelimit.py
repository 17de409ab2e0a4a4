"""A node's time limit: SIGALRM interrupts the node that runs past it."""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class NodeTimeout(BaseException):
    """Raised inside a node that ran past its time limit. A BaseException so
    that a handler's broad ``except Exception`` cannot swallow it."""


@contextmanager
def node_time_limit(seconds: float):
    """Interrupt the node after ``seconds`` with NodeTimeout.

    Works in the main thread of a process: a prefork or solo worker's pool
    process, or the CLI. Workers refuse pools where it cannot (workers/celery.py).
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise NodeTimeout(f"timed out after {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
