"""The Celery app, configured from Django settings (the CELERY_ namespace),
and the worker-side housekeeping: the recovery sweep and the pool check."""
import logging
import os
import sys
import threading

from celery import Celery, bootsteps
from celery.signals import beat_init, worker_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("workers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["workers"])

logger = logging.getLogger("workers.celery")

# Pools whose tasks run in the main thread of a process, where a node's time
# limit can interrupt it (a SIGALRM timer). Threads and green pools cannot.
POOLS_WITH_NODE_TIME_LIMITS = ("prefork", "solo")


@worker_init.connect
@beat_init.connect
def _start_embedded_broker(**kwargs):
    """A worker (or beat) on the embedded broker starts it when nobody has yet; when it
    cannot be used, the worker stops at once with one line (exit 1) instead of
    retrying a connection that cannot succeed."""
    from workers.embedded import EmbeddedBrokerError, ensure_broker

    try:
        ensure_broker()
    except EmbeddedBrokerError as exc:
        sys.stderr.write(f"Refusing to start: {exc}\n")
        sys.stderr.flush()
        os._exit(1)


class PoolCheck(bootsteps.Step):
    """Refuses to start a worker on a pool where node time limits cannot hold."""

    def __init__(self, worker, **kwargs):
        pool = worker.pool_cls if isinstance(worker.pool_cls, str) else worker.pool_cls.__module__
        # The module celery.concurrency.thread implements `-P threads`.
        name = {"thread": "threads"}.get(pool.rsplit(".", 1)[-1], pool.rsplit(".", 1)[-1])
        if name not in POOLS_WITH_NODE_TIME_LIMITS:
            sys.stderr.write(
                f"Refusing to start: node time limits cannot hold on the '{name}' pool "
                f"(a node there cannot be interrupted). Use -P prefork (the default) or -P solo.\n"
            )
            sys.stderr.flush()
            os._exit(2)
        super().__init__(worker, **kwargs)


class _Sweeper:
    """Runs the recovery sweep in a thread of its own, one at a time, so a slow
    database never blocks the worker's event loop."""

    def __init__(self):
        self._thread = None
        self._lock = threading.Lock()

    def kick(self, why: str) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._sweep, args=(why,), name="recovery-sweep", daemon=True)
            self._thread.start()

    @staticmethod
    def _sweep(why: str) -> None:
        from django.db import DatabaseError, connection

        from apps.orchestration.recovery import runs_recover

        try:
            runs_recover()
        except DatabaseError as exc:
            logger.warning("event=sweep.error when=%s error=%s", why, f"{type(exc).__name__}: {exc}".strip())
        except Exception:  # the next sweep tries again; the worker must not die of this
            logger.exception("recovery sweep failed")
        finally:
            connection.close()


sweeper = _Sweeper()


class RecoverySweep(bootsteps.StartStopStep):
    """Sweeps for runs to recover every RUN_RECOVERY_INTERVAL_SECONDS on the
    worker's own timer, so a deployment without beat still recovers."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs):
        self.tref = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer):
        from django.conf import settings

        self.tref = consumer.timer.call_repeatedly(
            settings.RUN_RECOVERY_INTERVAL_SECONDS, sweeper.kick, ("timer",), priority=10
        )

    def stop(self, consumer):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


app.steps["worker"].add(PoolCheck)
app.steps["consumer"].add(RecoverySweep)


@worker_ready.connect
def _sweep_at_start(**kwargs):
    """Every worker start looks for runs left behind (lost messages, dead holders)."""
    sweeper.kick("start")
