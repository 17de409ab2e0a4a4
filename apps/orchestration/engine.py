"""The one execution engine.

Walks a run's definition snapshot from the first node along ``next``,
records a StageExecution per attempt, and keeps the PipelineRun's status,
current node, result and timings current. Execution is idempotent: a run
that is already finished is left alone, and nodes that already succeeded
(a task delivered twice) are not executed again.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta

import psutil
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.orchestration import events
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.nodes import NodeContext, NodeError, node_types
from apps.secrets import scrub

logger = logging.getLogger("apps.orchestration.engine")

DEFAULT_TIMEOUT_SECONDS = 60


def _log(event: str, run: PipelineRun, **fields) -> None:
    """One log line per event, carrying the run's identity so `grep <trace id>` finds it."""
    data = {
        "event": event,
        "run_id": run.pk,
        "trace_id": run.trace_id,
        "definition": run.origin,
        **fields,
    }
    text = " ".join(f"{key}={value}" for key, value in data.items() if value is not None)
    logger.info(text, extra=data)


def _path(nodes: list[dict]) -> list[dict]:
    """The nodes in execution order: the first one, then along ``next``."""
    by_id = {node["id"]: node for node in nodes}
    ordered, current = [], nodes[0]["id"] if nodes else None
    while current is not None and current in by_id and by_id[current] not in ordered:
        ordered.append(by_id[current])
        current = by_id[current].get("next")
    return ordered


@contextmanager
def _progress_transaction():
    """A transaction for a record of progress within a run.

    On PostgreSQL its commit does not wait for the disk flush: a database
    crash could lose the last such records, but the run's final state is
    written with a normal, durable commit, and a run whose progress was lost
    is taken over and its missing nodes executed again.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        yield


class NodeTimeout(BaseException):
    """Raised inside a node that ran past its time limit. A BaseException so
    that a handler's broad ``except Exception`` cannot swallow it."""


@contextmanager
def _time_limit(seconds: float):
    """Interrupt the node after ``seconds`` with NodeTimeout.

    Works where signals can be used: the main thread of a worker's pool
    process or of the CLI. Elsewhere the node's own per-call timeouts apply.
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


class RunBusy(Exception):
    """Another live process is executing the run; try again after its lease."""


def _new_token() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _lease_lost(run: PipelineRun, now) -> bool:
    """Whether the process holding ``run`` is gone: it died on this host, or its
    heartbeat is older than the lease."""
    host, _, rest = run.claimed_by.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit() and not psutil.pid_exists(int(pid)):
        return True
    lease = timedelta(seconds=settings.RUN_LEASE_SECONDS)
    return run.heartbeat_at is None or now - run.heartbeat_at > lease


def _claim(run_id: int, token: str) -> tuple[PipelineRun, bool] | None:
    """Take the run for this process: returns it and whether it had been
    started before (a takeover); None when it is already finished.

    The run's row is locked while it is examined, so of two deliveries only
    one takes a queued run. A running run is taken over only when its holder
    is gone (its interrupted node is then recorded as failed); otherwise
    RunBusy is raised. Raises PipelineRun.DoesNotExist for an unknown id.
    """
    now = timezone.now()
    # Losing this commit in a database crash only leaves the run queued, and
    # its unacknowledged message is delivered again: no need to wait for the flush.
    with _progress_transaction():
        run = PipelineRun.objects.select_for_update().get(pk=run_id)
        if run.is_terminal:
            return None
        if run.status == PipelineRun.Status.RUNNING:
            if not _lease_lost(run, now):
                raise RunBusy(f"run {run_id} is being executed by {run.claimed_by}")
            logger.warning("run %s taken over from %s", run_id, run.claimed_by or "an unknown process")
            # Nodes the lost process was executing never finished: say so in their records.
            run.stages.filter(status=StageExecution.Status.RUNNING).update(
                status=StageExecution.Status.FAILED,
                errors=[f"interrupted: the process executing it ({run.claimed_by}) was lost"],
                finished_at=now,
            )
        nodes = run.config_snapshot.get("nodes") or []
        resumed = run.status == PipelineRun.Status.RUNNING
        run.status = PipelineRun.Status.RUNNING
        run.claimed_by, run.heartbeat_at = token, now
        run.started_at = run.started_at or now
        run.current_node = run.current_node or (nodes[0]["id"] if nodes else "")
        run.save(update_fields=["status", "claimed_by", "heartbeat_at", "started_at", "current_node"])
    return run, resumed


class _Heartbeat:
    """Refreshes the run's lease from a background thread while the run executes."""

    def __init__(self, run_id: int, token: str):
        self.run_id, self.token = run_id, token
        self.interval = settings.RUN_LEASE_SECONDS / 3
        self._stop = threading.Event()
        # Set when someone asks to cancel the run; the engine stops before its next node.
        self.cancelled = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{run_id}", daemon=True)

    def _beat(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                mine = PipelineRun.objects.filter(pk=self.run_id, claimed_by=self.token)
                mine.update(heartbeat_at=timezone.now())
                if mine.filter(cancel_requested_at__isnull=False).exists():
                    self.cancelled.set()
        except Exception:  # a missed beat only risks a takeover, never the run itself
            logger.exception("heartbeat of run %s failed", self.run_id)
        finally:
            connection.close()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_execute(*, run_id: int) -> PipelineRun | None:
    """Execute run ``run_id`` to a terminal status and return it.

    Returns None when the run does not exist, and the run unchanged when it
    is already terminal; raises RunBusy when another live process holds it.
    Never raises for a node's failure: failures are recorded on the run.
    """
    token = _new_token()
    try:
        claimed = _claim(run_id, token)
    except PipelineRun.DoesNotExist:
        return None
    if claimed is None:
        return PipelineRun.objects.get(pk=run_id)
    run, resumed = claimed
    _log("run.start", run, status=run.status, worker=token)
    events.run_event_publish(run_id=run.pk, status=run.status)
    with _Heartbeat(run.pk, token) as heartbeat:
        try:
            _walk(run, resumed=resumed, cancelled=heartbeat.cancelled)
        except Exception as exc:  # anything unexpected still ends the run as failed
            logger.exception("run %s crashed", run.pk)
            run.status = PipelineRun.Status.FAILED
            run.error = scrub(f"Internal error: {type(exc).__name__}: {exc}")
        _finish(run)
    events.run_event_publish(run_id=run.pk, status=run.status)
    return run


def _walk(run: PipelineRun, *, resumed: bool, cancelled: threading.Event) -> None:
    snapshot = run.config_snapshot
    defaults = snapshot.get("defaults") or {}
    max_retries = defaults.get("max_retries", 0)
    timeout = defaults.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS)
    path = _path(snapshot["nodes"])

    ctx = NodeContext(
        run_id=run.pk,
        trace_id=run.trace_id,
        pipeline=run.origin,
        source=run.source,
        environment=run.environment,
        payload=run.payload,
        timeout_seconds=timeout,
    )
    result = {"executed_nodes": [], "skipped_nodes": [], "node_results": {}}
    # One read of what earlier deliveries did: their successes and attempt numbers.
    succeeded: dict[str, StageExecution] = {}
    last_attempt: dict[str, int] = {}
    # A run taken straight from the queue has never been executed: nothing to read back.
    for stage in run.stages.all() if resumed else ():
        last_attempt[stage.node_id] = max(last_attempt.get(stage.node_id, 0), stage.attempt)
        if stage.status == StageExecution.Status.SUCCEEDED:
            succeeded[stage.node_id] = stage

    failed_required = stopped = False
    for index, node in enumerate(path):
        node_id, node_type = node["id"], node["type"]
        if not (failed_required or stopped) and (cancelled.is_set() or run.cancel_requested_at):
            stopped = True
            run.error = f"Cancelled on request before node '{node_id}'"
            _log("run.cancel", run, node=node_id)
        if failed_required or stopped:
            result["skipped_nodes"].append(node_id)
            continue
        required = node.get("required", True)
        following = path[index + 1]["id"] if index + 1 < len(path) else ""

        def record(stage: StageExecution, reused: bool = False) -> None:
            """Store the node's outcome on the run, with the node that comes next."""
            nonlocal failed_required
            entry = _entry(node_type, required, stage, reused=reused)
            result["executed_nodes"].append(node_id)
            result["node_results"][node_id] = entry
            if stage.status == StageExecution.Status.SUCCEEDED:
                ctx.results[node_id] = {"type": node_type, "output": stage.output}
            elif required:
                failed_required = True
                run.error = f"Node '{node_id}' failed: {entry['error']}"
            run.result = result
            run.current_node = "" if failed_required else following
            run.save(update_fields=["result", "error", "current_node"])

        if node_id in succeeded:
            # Delivered again: reuse what the earlier delivery produced.
            record(succeeded[node_id], reused=True)
        else:
            _execute_node(run, node, ctx, max_retries, last_attempt.get(node_id, 0), record)

    if stopped:
        run.status = PipelineRun.Status.CANCELLED
    elif failed_required:
        run.status = PipelineRun.Status.FAILED
    else:
        run.status = PipelineRun.Status.COMPLETED
    run.result = result
    run.current_node = ""


def _entry(node_type: str, required: bool, stage: StageExecution, reused: bool = False) -> dict:
    entry = {
        "type": node_type,
        "status": stage.status,
        "required": required,
        "attempts": stage.attempt,
        "duration_ms": stage.duration_ms,
        "output": stage.output,
        "error": stage.errors[-1] if stage.errors else None,
    }
    if reused:
        entry["reused"] = True
    return entry


def _execute_node(run, node: dict, ctx: NodeContext, max_retries: int, previous: int, record) -> None:
    """Run one node, retrying up to ``max_retries`` times. Each attempt is a
    StageExecution row; the last one is saved together with ``record``'s
    update of the run, in one transaction."""
    node_id, node_type = node["id"], node["type"]
    handler = node_types.get(node_type)()
    config = node.get("config") or {}
    last = previous + max_retries + 1
    for attempt in range(previous + 1, last + 1):
        with _progress_transaction():
            stage = StageExecution.objects.create(
                run=run, node_id=node_id, node_type=node_type, attempt=attempt
            )
        _log("node.start", run, node=node_id, type=node_type, attempt=attempt)
        started = time.perf_counter()
        try:
            with _time_limit(ctx.timeout_seconds):
                stage.output = handler.run(config, ctx)
            stage.status = StageExecution.Status.SUCCEEDED
        except NodeTimeout as exc:
            stage.output, stage.errors = {}, [str(exc)]
            stage.status = StageExecution.Status.FAILED
        except NodeError as exc:
            stage.output, stage.errors = exc.output, [str(exc)]
            stage.status = StageExecution.Status.FAILED
        except Exception as exc:  # a handler bug must not take the run down unrecorded
            logger.exception("node %s of run %s raised", node_id, run.pk)
            stage.errors = [f"{type(exc).__name__}: {exc}"]
            stage.status = StageExecution.Status.FAILED
        stage.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        stage.finished_at = timezone.now()
        # Secrets a node read must not reach the database or the logs.
        stage.output, stage.errors = scrub(stage.output), scrub(stage.errors)
        done = stage.status == StageExecution.Status.SUCCEEDED or attempt == last
        with _progress_transaction():
            stage.save(update_fields=["output", "errors", "status", "duration_ms", "finished_at"])
            if done:
                record(stage)
        _log(
            "node.end",
            run,
            node=node_id,
            type=node_type,
            attempt=attempt,
            status=stage.status,
            duration_ms=stage.duration_ms,
            error=stage.errors[-1] if stage.errors else None,
        )
        if done:
            return


def _finish(run: PipelineRun) -> None:
    run.finished_at = timezone.now()
    started = run.started_at or run.created_at
    run.duration_ms = round((run.finished_at - started).total_seconds() * 1000, 2)
    run.save(
        update_fields=["status", "current_node", "result", "error", "finished_at", "duration_ms"]
    )
    _log("run.end", run, status=run.status, duration_ms=run.duration_ms, error=run.error or None)
