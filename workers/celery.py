"""The worker's side of the project's Celery app (apps/broker/app.py): its
tasks, and the worker-side housekeeping: the recovery sweep, the pool
check, the host queue, the timer compaction, the per-run log context of
the tasks that execute runs, the presence each worker renews per queue it
consumes, and the fold of the metrics' rollup. Its remote-control commands
are in workers/control.py."""
import heapq
import logging
import os
import sys
import threading

from celery import bootsteps
from celery.signals import beat_init, celeryd_init, task_postrun, task_prerun, worker_init, worker_ready

import workers.control  # noqa: F401 - registers the worker's remote-control commands
from apps.broker.app import app
from apps.broker.names import EXECUTE_RUN_TASK

app.autodiscover_tasks(["workers"])

logger = logging.getLogger("workers.celery")

# Pools whose tasks run in the main thread of a process, where a node's time
# limit can interrupt it (a SIGALRM timer), and so can cancel_run --force (a
# SIGUSR2 to that thread). Threads and green pools cannot.
POOLS_WITH_NODE_TIME_LIMITS = ("prefork", "solo")


@worker_init.connect
@beat_init.connect
def _start_embedded_broker(**kwargs):
    """A worker (or beat) on the embedded broker starts it when nobody has yet; when it
    cannot be used, the worker stops at once with one line (exit 1) instead of
    retrying a connection that cannot succeed."""
    from apps.broker.embedded import EmbeddedBrokerError, ensure_broker

    try:
        ensure_broker()
    except EmbeddedBrokerError as exc:
        sys.stderr.write(f"Refusing to start: {exc}\n")
        sys.stderr.flush()
        os._exit(1)


@celeryd_init.connect
def _warnings_through_logging(**kwargs):
    """Warnings the worker gives while starting (Celery's SecurityWarning for a worker
    run as root among them) are written as log lines, in LOG_FORMAT, not raw on stderr."""
    logging.captureWarnings(True)


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


class HostQueue(bootsteps.Step):
    """Adds the queue of the host this worker serves (``host.<MONITOR_HOST>``)
    to the queues it consumes, whatever -Q chose: a run sent to a host is
    only taken by workers that measure that host."""

    def __init__(self, worker, **kwargs):
        from django.conf import settings

        from apps.hostnames import host_queue

        worker.app.amqp.queues.select_add(host_queue(settings.MONITOR_HOST))
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


def timer_drop_cancelled(timer) -> tuple[int, int]:
    """Removes the cancelled entries from ``timer`` (a kombu timer, the one the
    worker's event loop fires); returns how many it dropped and kept.

    The prefork pool sets an entry per task for its time limits and cancels it
    when the task ends, and kombu leaves a cancelled entry in its heap until the
    entry's time comes: with an hour's limit, an hour of runs' entries. Must run
    in the event loop's thread (a timer entry does), the one that adds entries.
    """
    queue = timer._queue  # the event loop holds this list itself: it is changed in place
    kept = [item for item in queue if not item.entry.canceled]
    dropped = len(queue) - len(kept)
    if dropped:
        heapq.heapify(kept)
        queue[:] = kept
    return dropped, len(kept)


class TimerCompaction(bootsteps.StartStopStep):
    """Drops the cancelled entries of the worker's timer every
    WORKER_TIMER_COMPACT_SECONDS, so the time limits of finished tasks do not
    hold memory in the main process for as long as the limit."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs):
        self.tref = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer):
        from django.conf import settings

        self.tref = consumer.timer.call_repeatedly(
            settings.WORKER_TIMER_COMPACT_SECONDS, self.compact, (consumer.timer,), priority=10
        )

    @staticmethod
    def compact(timer) -> None:
        dropped, kept = timer_drop_cancelled(timer)
        logger.debug(
            "event=worker.timer_compacted dropped=%d kept=%d", dropped, kept,
            extra={"event": "worker.timer_compacted", "dropped": dropped, "kept": kept},
        )

    def stop(self, consumer):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


class _Presence:
    """Renews this worker's presence (apps.orchestration.presence) in a thread of its
    own, one renewal at a time, so a slow database never blocks the event loop."""

    def __init__(self):
        self._thread = None
        self._lock = threading.Lock()

    def kick(self, worker: str, consumer) -> None:
        queues = sorted(queue.name for queue in consumer.task_consumer.queues)
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._renew, args=(worker, queues), name="worker-presence",
                                            daemon=True)
            self._thread.start()

    def wait(self, timeout: float) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    @staticmethod
    def _renew(worker: str, queues: list[str]) -> None:
        from django.conf import settings
        from django.db import DatabaseError, connection

        from apps.orchestration.presence import worker_presence_renew

        try:
            worker_presence_renew(worker=worker, queues=queues, interval=settings.WORKER_PRESENCE_SECONDS)
        except DatabaseError as exc:
            logger.warning("event=presence.error error=%s", f"{type(exc).__name__}: {exc}".strip())
        except Exception:  # the next renewal tries again; the worker must not die of this
            logger.exception("worker presence renewal failed")
        finally:
            connection.close()


presence = _Presence()


class _Folder:
    """Folds the metrics' rollup (apps.orchestration.rollup.rollup_fold) in a thread of
    its own, one fold at a time, so a slow database never blocks the event loop."""

    def __init__(self):
        self._thread = None
        self._lock = threading.Lock()

    def kick(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._fold, name="rollup-fold", daemon=True)
            self._thread.start()

    @staticmethod
    def _fold() -> None:
        from django.db import DatabaseError, connection

        from apps.orchestration.rollup import rollup_fold

        try:
            rollup_fold()
        except DatabaseError as exc:
            logger.warning("event=rollup_fold.error error=%s", f"{type(exc).__name__}: {exc}".strip())
        except Exception:  # the next fold tries again; the worker must not die of this
            logger.exception("metrics rollup fold failed")
        finally:
            connection.close()


folder = _Folder()


class RollupFold(bootsteps.StartStopStep):
    """Folds the metrics' rollup every METRICS_ROLLUP_FOLD_SECONDS on the worker's own
    timer: every deployment that ends runs has workers, with or without beat."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs):
        self.tref = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer):
        from django.conf import settings

        self.tref = consumer.timer.call_repeatedly(settings.METRICS_ROLLUP_FOLD_SECONDS, folder.kick, (), priority=10)

    def stop(self, consumer):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    shutdown = stop


class WorkerPresence(bootsteps.StartStopStep):
    """Records the queues this worker consumes every WORKER_PRESENCE_SECONDS on the
    worker's own timer (from the moment it consumes), and expires them when it stops
    consuming (a warm shutdown, a lost broker connection)."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, consumer, **kwargs):
        self.tref = None
        super().__init__(consumer, **kwargs)

    def start(self, consumer):
        from django.conf import settings

        presence.kick(consumer.hostname, consumer)
        self.tref = consumer.timer.call_repeatedly(
            settings.WORKER_PRESENCE_SECONDS, presence.kick, (consumer.hostname, consumer), priority=10
        )

    def stop(self, consumer):
        from django.db import DatabaseError

        from apps.orchestration.presence import worker_presence_end

        if self.tref is None:
            return
        self.tref.cancel()
        self.tref = None
        presence.wait(5.0)  # a renewal under way must not land after the end
        try:
            worker_presence_end(worker=consumer.hostname)
        except DatabaseError as exc:
            logger.warning("event=presence.error error=%s", f"{type(exc).__name__}: {exc}".strip())

    shutdown = stop


app.steps["worker"].add(PoolCheck)
app.steps["worker"].add(HostQueue)
app.steps["consumer"].add(RecoverySweep)
app.steps["consumer"].add(TimerCompaction)
app.steps["consumer"].add(WorkerPresence)
app.steps["consumer"].add(RollupFold)


@worker_ready.connect
def _sweep_at_start(**kwargs):
    """Every worker start looks for runs left behind (lost messages, dead holders)."""
    sweeper.kick("start")


@worker_ready.connect
def _say_what_is_served(sender=None, **kwargs):
    """One line at start saying which host this worker measures and which queues it consumes."""
    from django.conf import settings

    queues = ",".join(sorted(app.amqp.queues.consume_from))
    logger.info(
        "event=worker.serving host=%s queues=%s", settings.MONITOR_HOST, queues,
        extra={"event": "worker.serving", "host": settings.MONITOR_HOST, "queues": queues},
    )


# The log context each running execute_run task bound, by task id, for task_postrun to undo.
_task_log_tokens: dict = {}


def _trace_id_of(run_id: int) -> str | None:
    """Run ``run_id``'s trace id: one indexed read by primary key; None when the
    run or the database is not there (the engine reports that itself)."""
    from django.db import DatabaseError, connection

    from apps.orchestration.models import PipelineRun

    try:
        return PipelineRun.objects.filter(pk=run_id).values_list("trace_id", flat=True).first()
    except DatabaseError:
        connection.close()
        return None


@task_prerun.connect
def _bind_run_log_context(sender=None, task_id=None, task=None, args=None, kwargs=None, **_):
    """While an execute_run task runs, every line its process writes (Celery's
    "Task ... succeeded" and failure lines included) carries the run's ids:
    from the task's arguments, the trace id read from the run's row when the
    message does not carry it."""
    from apps.logcontext import bind, ids_from_task_arguments

    if task is None or task.name != EXECUTE_RUN_TASK:
        return
    ids = ids_from_task_arguments(args, kwargs)
    if ids is None:
        return
    _task_log_tokens[task_id] = bind(ids.run_id, ids.trace_id or _trace_id_of(ids.run_id))


@task_postrun.connect
def _unbind_run_log_context(sender=None, task_id=None, **_):
    """The task is over: lines written from now on are about no run."""
    from apps.logcontext import unbind

    token = _task_log_tokens.pop(task_id, None)
    if token is not None:
        unbind(token)
