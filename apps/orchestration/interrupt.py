"""Stopping the node being executed on request (``cancel_run --force``): the
thread that hears the request (the run's heartbeat) sends a signal to the
main thread, whose handler, installed only while a node runs there, raises
NodeInterrupted inside the node.

The process goes on: only the node's own code is interrupted, and the engine
records it and ends the run as cancelled. A request that comes while no node
runs sends nothing: the next node stops as soon as it starts, and the engine's
check at the node boundary ends the run before that anyway.
"""
from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Not SIGUSR1: the prefork pool's processes get their soft time limit on it (billiard).
# Celery uses SIGUSR2 only for its remote debugger (CELERY_RDBSIG), restored after each node.
INTERRUPT_SIGNAL: signal.Signals | None = getattr(signal, "SIGUSR2", None)

INTERRUPTED_ERROR = "Interrupted: cancelled on request"


class NodeInterrupted(BaseException):
    """Raised inside a node that was stopped on request. A BaseException so
    that a handler's broad ``except Exception`` cannot swallow it."""


def interruptible_here() -> bool:
    """Whether a node executed by this thread can be interrupted: only the
    main thread of a process can handle a signal (a prefork or solo worker's
    pool process, or the CLI); workers refuse other pools (workers/celery.py)."""
    return (
        INTERRUPT_SIGNAL is not None
        and hasattr(signal, "pthread_kill")
        and threading.current_thread() is threading.main_thread()
    )


class NodeInterrupt:
    """One run's link between the thread that hears a request to stop its
    node (``request``, any thread) and the thread executing its nodes
    (``node``, around each node).

    The signal is sent at most once, and only while a node runs with the
    handler installed: both sides decide under one lock, so a signal never
    reaches a thread without the handler (its default action would end the
    process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requested = threading.Event()
        self._running = False  # written by the executing thread only; read under the lock by the others
        self._thread_id: int | None = None
        self._sent = False
        self._closed = False

    def request(self) -> bool:
        """Ask for the node being executed to be stopped, now when one runs,
        else as soon as the next one starts. Returns whether a node was
        signalled now. Has no effect once ``close`` was called."""
        with self._lock:
            self.requested.set()
            if self._closed or not self._running or self._sent or self._thread_id is None or INTERRUPT_SIGNAL is None:
                return False
            self._sent = True
            signal.pthread_kill(self._thread_id, INTERRUPT_SIGNAL)
            return True

    def close(self) -> None:
        """No node of this run runs any more: from now on ``request`` sends nothing."""
        self._running = False
        with self._lock:
            self._closed = True

    @contextmanager
    def node(self) -> Iterator[None]:
        """Around one node: NodeInterrupted is raised inside it when a stop is
        requested while it runs, and at once when one was requested before.
        Where a signal cannot reach the node (not the main thread), a stop
        waits for the node's end (the engine's boundary check ends the run)."""
        if not interruptible_here():
            yield
            return
        assert INTERRUPT_SIGNAL is not None

        def interrupt(signum, frame):
            # Only within the node, and once: a signal handled late (at the node's end) does nothing.
            if self._running:
                self._running = False
                raise NodeInterrupted(INTERRUPTED_ERROR)

        previous = signal.signal(INTERRUPT_SIGNAL, interrupt)
        try:
            with self._lock:
                if self.requested.is_set():
                    raise NodeInterrupted(INTERRUPTED_ERROR)
                self._thread_id = threading.get_ident()
                self._running = True
            yield
        finally:
            self._running = False  # from here the handler raises nothing
            # A request that saw the node running holds the lock until its signal is sent:
            # once the lock is free, no signal is on its way.
            with self._lock:
                pass
            # A signal already received runs the handler before the handler is replaced
            # (signal.signal handles pending signals first), and that handler does nothing now.
            signal.signal(INTERRUPT_SIGNAL, previous if previous is not None else signal.SIG_DFL)
