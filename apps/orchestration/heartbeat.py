"""The heartbeat of a held run: renews its lease from a background thread
while a node takes longer than the lease's renewal interval, and hears
cancel requests on the run's wake-up channel (one that asks to stop the
node being executed interrupts it: apps/orchestration/interrupt.py).

One starter thread per process starts each run's heartbeat thread only once
the run has gone on for a while: most runs end sooner, renewing their lease
through their own writes, and cost no thread and no subscription.
"""
from __future__ import annotations

import contextvars
import logging
import math
import os
import signal
import threading
import time
from contextlib import ExitStack

from django.conf import settings
from django.db import DatabaseError, connection
from django.db.models.functions import Now

from apps.orchestration import events
from apps.orchestration.lease import CANCEL_EVENTS, Lease, lease_end
from apps.orchestration.models import PipelineRun

logger = logging.getLogger("apps.orchestration.heartbeat")


class Heartbeat:
    """Renews a lease from a background thread while its run executes (when no
    write has renewed it for an interval), and listens on the run's wake-up
    channel for cancel requests; one that asks to stop the node being
    executed (``cancel_stop_node``) interrupts it (``lease.node_interrupt``).

    The thread starts once the run has gone on for ``start_after`` seconds
    (a second, or half an interval when that is shorter): a run that ends
    sooner renews its lease and sees cancel requests through its own writes,
    and costs no thread and no subscription. A thread started late reads
    the run's row once for a cancel request it could not hear.

    Database errors do not end it: it reconnects and tries again at the next
    beat. A renewal that matches nothing sets ``lease.lost``.
    """

    def __init__(self, lease: Lease):
        self.lease = lease
        self.interval = settings.RUN_LEASE_SECONDS / 3
        self.start_after = min(1.0, self.interval / 2)
        self._stop = threading.Event()
        self._started = threading.Event()  # set once the starter has started the thread
        self._events = ExitStack()
        # The thread runs in a copy of this context, so its log lines carry the run's ids (apps/logcontext.py).
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._run,), name=f"heartbeat-{lease.run_id}", daemon=True
        )

    @property
    def _ids(self) -> dict:
        """The ``extra`` of a line about this lease's run."""
        return {"run_id": self.lease.run_id, "trace_id": self.lease.trace_id}

    def __enter__(self) -> Heartbeat:
        _starter.add(self, time.monotonic() + self.start_after)
        return self

    def __exit__(self, *exc) -> None:
        if _starter.remove(self):
            return  # the run ended before its heartbeat was needed
        self._started.wait(5)  # being started right now
        # The thread ends at once on the run's final status, or within a second of this (a
        # run lost midway, or a final status sent before it subscribed); it renews nothing
        # once stopped, so the run's process goes on without waiting for it (a run that frees
        # a max_concurrent slot wakes the next one now, not a second later).
        self._stop.set()

    def _start(self) -> None:
        """Start the thread (called by the starter)."""
        try:
            self._thread.start()
        finally:
            self._started.set()

    def _run(self) -> None:
        _leave_timer_signal_to_main_thread()
        try:
            # Subscribed before the row is read, so a cancel request is either in the row or heard;
            # the run's final status, published as it ends, reaches the thread and ends it at once.
            subscription = self._events.enter_context(events.run_events(run_id=self.lease.run_id))
            if not self._stop.is_set():
                self._cancel_check()
            next_beat = self.lease.renewed_at + self.interval
            while not self._stop.is_set():
                remaining = next_beat - time.monotonic()
                if remaining <= 0:
                    if self.lease.renewed_at + self.interval > time.monotonic():
                        next_beat = self.lease.renewed_at + self.interval  # a write renewed it meanwhile
                        continue
                    next_beat = time.monotonic() + (self.interval if self._renew() else min(self.interval, 1.0))
                    continue
                message = subscription.wait(remaining, stop=self._stop)
                if message in PipelineRun.TERMINAL:
                    return  # the run ended
                if message in CANCEL_EVENTS:
                    self._cancel_check()
        finally:
            self._events.close()
            connection.close()

    def _cancel_check(self) -> None:
        """Act on a cancel request the run's row holds: a wake-up is only a hint."""
        stop_node = self._cancel_stored()
        if stop_node is not None:
            self._cancel_seen(stop_node=stop_node)

    def _cancel_stored(self) -> bool | None:
        """The run's cancel request as stored: None when there is none, else
        whether it asks to stop the node being executed too."""
        try:
            return (
                PipelineRun.objects.filter(pk=self.lease.run_id, cancel_requested_at__isnull=False)
                .values_list("cancel_stop_node", flat=True).first()
            )
        except DatabaseError:
            connection.close()
            return None  # the next renewal, or the next node boundary, reads it again

    def _cancel_seen(self, *, stop_node: bool) -> None:
        if not self.lease.cancel_requested.is_set():
            self.lease.cancel_requested.set()
            logger.info(
                "event=run.cancel_requested run_id=%s trace_id=%s", self.lease.run_id, self.lease.trace_id,
                extra=self._ids,
            )
        if stop_node and not self.lease.node_interrupt.requested.is_set():
            signalled = self.lease.node_interrupt.request()
            logger.info(
                "event=run.stop_node_requested run_id=%s trace_id=%s node_signalled=%s",
                self.lease.run_id, self.lease.trace_id, signalled, extra=self._ids,
            )

    def _renew(self) -> bool:
        """One renewal; False when the database could not be reached."""
        renew = {"heartbeat_at": Now(), "lease_expires_at": lease_end()}
        try:
            if self.lease.held(unless_cancelled=True).update(**renew):
                return True
            if self.lease.held(unless_cancelled=False).update(**renew):
                # A request whose wake-up was not heard: does it stop the node being executed too?
                self._cancel_seen(stop_node=bool(self._cancel_stored()))
                return True
        except DatabaseError as exc:
            logger.warning(
                "event=heartbeat.error run_id=%s trace_id=%s error=%s",
                self.lease.run_id, self.lease.trace_id, f"{type(exc).__name__}: {exc}".strip(),
                extra=self._ids,
            )
            connection.close()
            return False
        if not (self._stop.is_set() or self.lease.ending.is_set()):
            self.lease.lost.set()
            logger.warning(
                "event=heartbeat.lease_lost run_id=%s trace_id=%s worker=%s",
                self.lease.run_id, self.lease.trace_id, self.lease.token,
                extra=self._ids,
            )
        return True


def _leave_timer_signal_to_main_thread() -> None:
    """Block SIGALRM in this thread. A node's time limit (timelimit.node_time_limit)
    is a SIGALRM timer whose handler must interrupt the node's blocking call
    in the main thread; a signal the kernel hands to another thread would
    only be handled once that call returns on its own."""
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})


class _Starter:
    """Starts each heartbeat's thread when it is due, from one thread per
    process (started when first needed, and again in a forked child)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._due: dict[Heartbeat, float] = {}
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = None
        self._sleeping_until = math.inf  # woken only for a heartbeat due earlier (a wake-up costs a thread switch)

    def add(self, beat: Heartbeat, at: float) -> None:
        with self._lock:
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid, self._sleeping_until = os.getpid(), math.inf
                self._thread = threading.Thread(target=self._loop, name="heartbeat-starter", daemon=True)
                self._thread.start()
            self._due[beat] = at
            wake = at < self._sleeping_until
        if wake:
            self._wake.set()

    def remove(self, beat: Heartbeat) -> bool:
        """Forget ``beat``; True when its thread was not started (and now never will be)."""
        with self._lock:
            return self._due.pop(beat, None) is not None

    def _loop(self) -> None:
        _leave_timer_signal_to_main_thread()
        while True:
            with self._lock:
                now = time.monotonic()
                due = [beat for beat, at in self._due.items() if at <= now]
                for beat in due:
                    del self._due[beat]
                self._sleeping_until = min(self._due.values(), default=math.inf)
                wait = min(self._sleeping_until - now, 60)
            for beat in due:
                try:
                    beat._start()
                except Exception:  # a thread that cannot start: the run's writes still renew and fence it
                    logger.exception("event=heartbeat.start_failed run_id=%s", beat.lease.run_id)
            self._wake.wait(max(wait, 0))
            self._wake.clear()


_starter = _Starter()
