"""The one execution engine.

Walks a run's definition snapshot from the first node along ``next``,
records a StageExecution per attempt, and keeps the PipelineRun's status,
current node, result and timings current. Execution is idempotent: a run
that is already finished is left alone, and nodes that already succeeded
(a task delivered twice, a run taken over) are not executed again. A
retry from the failed node reuses the original run's outputs of the nodes
before it (``PipelineRun.reused_results``) the same way.

Who may write is decided in ``lease``: every write here is fenced by the
claim's token, and a run whose lease was lost is left at once.
"""
from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any, TypedDict

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from apps import jsondata
from apps.logcontext import run_context
from apps.orchestration import dispatch, events, store
from apps.orchestration.conditions import SKIPPED, RefusedNode, node_condition, skipped_entry
from apps.orchestration.heartbeat import Heartbeat
from apps.orchestration.interrupt import INTERRUPTED_ERROR, NodeInterrupted
from apps.orchestration.lease import (
    CancelRequested,
    Claim,
    DatabaseUnavailable,
    LeaseLost,
    new_token,
    run_claim,
    same_origin,
)
from apps.orchestration.models import PipelineRun, StageExecution
from apps.orchestration.monitoring import state_end_write
from apps.orchestration.noderecords import node_entry, progress_end, reused_stage
from apps.orchestration.nodes import NodeContext, NodeError, node_types
from apps.orchestration.runlogs import RunLogBuffer, run_logs_captured
from apps.orchestration.timelimit import NodeTimeout, node_time_limit
from apps.orchestration.validation import node_path
from apps.secrets import scrub

logger = logging.getLogger("apps.orchestration.engine")

DEFAULT_TIMEOUT_SECONDS = 60


def _log(event: str, run: PipelineRun, *, emit: bool = True, **fields) -> logging.LogRecord | None:
    """One log line per event, carrying the run's identity so `grep <trace id>` finds it; returns
    its record (None when the engine's logger is off at INFO), written only with ``emit``."""
    if not logger.isEnabledFor(logging.INFO):
        return None
    data = {"event": event, "run_id": run.pk, "trace_id": run.trace_id, "definition": run.origin, **fields}
    text = " ".join(f"{key}={value}" for key, value in data.items() if value is not None)
    record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, text, (), None, extra=data)
    if emit:
        logger.handle(record)
    return record


class RunOutOfTime(Exception):
    """The run reached RUN_TIME_LIMIT_SECONDS (counted from its start, across takeovers)."""


def run_execute(*, run_id: int) -> PipelineRun | None:
    """Execute run ``run_id`` to a terminal status and return it.

    Returns None when the run does not exist or the database cannot be
    reached, and the run as read when it is finished or held by another live
    process. When this process loses the run midway (another took it over,
    or the database stayed away) it stops at once, writes nothing more, and
    returns the run as it last knew it: the row, not this process, says how
    it ends. Never raises for a node's failure: failures are recorded.
    A run this call executed carries ``ended_here``: True when this call
    recorded its end, False when it lost the run on the way; on a run it did
    not execute it stays None.
    """
    token = new_token()
    try:
        claim = run_claim(run_id=run_id, token=token)
    except PipelineRun.DoesNotExist:
        return None
    except DatabaseUnavailable as exc:
        logger.error("event=run.claim_failed run_id=%s error=%s", run_id, exc, extra={"run_id": run_id})
        return None
    if claim.lease is None:
        if claim.reason == "held":
            _log("run.busy", claim.run, holder=claim.run.claimed_by)
        elif claim.reason == "at_limit":
            # It stays queued: the run that frees a slot sends it again (and the sweep, should that be lost).
            _log("run.waiting", claim.run, reason="max_concurrent", limit=claim.run.config_snapshot["max_concurrent"])
        return claim.run
    run = claim.run
    # Every line written while this process executes the run carries its ids (apps/logcontext.py)
    # and is kept with the run (apps/orchestration/runlogs.py).
    with run_context(run.pk, run.trace_id), run_logs_captured(
        run_id=run.pk, resumed=claim.resumed, now=claim.lease.clock.now
    ) as run_logs:
        _log("run.start", run, status=run.status, worker=token, takeover=claim.resumed or None)
        # Events wait for the write that follows them and go out with the events after it
        # (see _Execution): one round trip per node boundary instead of two.
        run_events = events.RunEvents(run_id=run.pk)
        run_events.status(run.status)
        if claim.resumed:
            run_events.progress({"phase": "takeover", "worker": token})
        with Heartbeat(claim.lease):
            try:
                ended = _Execution(claim, run_events, run_logs).execute()
                if ended:  # its end is durable: now watchers may read it
                    run_events.status(run.status)
            finally:
                # Within the heartbeat: the final status is what ends its thread at once.
                run_events.send()
        # The task tells a run this call ended from one it only found (finished, held, lost).
        run.ended_here = ended
        if ended and run.config_snapshot.get("max_concurrent"):
            _next_waiting_wake(run)
    return run


def _next_waiting_wake(run: PipelineRun) -> None:
    """A slot under ``run``'s max_concurrent has just freed: send the oldest
    queued runs of its definition again, as many as the limit, since runs
    ending at the same moment would otherwise all wake the same one (the
    claim lets only as many start as there are free slots)."""
    limit = run.config_snapshot["max_concurrent"]
    waiting = (
        same_origin(run).filter(status=PipelineRun.Status.QUEUED).order_by("pk")
        .values_list("pk", "trace_id", "target_host")
    )
    for next_id, next_trace_id, next_host in waiting[:limit]:
        try:
            dispatch.run_publish(run_id=next_id, definition=run.origin, trace_id=next_trace_id, host=next_host)
        except Exception as exc:  # noqa: BLE001 - the broker is away: the recovery sweep sends it later
            logger.warning(
                "event=run.wake_failed run_id=%s trace_id=%s error=%s", next_id, next_trace_id, type(exc).__name__,
                extra={"run_id": next_id, "trace_id": next_trace_id},  # the next run's line, not the current one's
            )
            return


class _RunResult(TypedDict):
    """The run's ``result`` as the walk builds it."""

    executed_nodes: list[str]
    skipped_nodes: list[str]
    node_results: dict[str, dict[str, Any]]


class _Execution:
    """One process's execution of a claimed run: the walk along the nodes and
    the run's outcome, recorded through the claim's lease."""

    def __init__(self, claim: Claim, run_events: events.RunEvents, logs: RunLogBuffer):
        if claim.lease is None:
            raise ValueError(f"run {claim.run.pk} is not this process's to execute ({claim.reason})")
        self.run, self.lease = claim.run, claim.lease
        # The run's log lines go with its writes (each, where that costs no statement: see runlogs).
        self.logs, self.lines_each_write = logs, store.writes_in_one_statement()
        # Queued events go out after the next fenced write, with the node start it allows,
        # and at the latest when run_execute ends, whatever stopped the run.
        self.events = run_events
        self.resumed = claim.resumed
        # The run time limit holds on every pool: nodes are stopped at it (Celery's soft
        # time limit, where the pool has one, is only a backstop).
        started = self.run.started_at or store.run_db_now(self.run)
        self.deadline = started + timedelta(seconds=settings.RUN_TIME_LIMIT_SECONDS)
        snapshot = self.run.config_snapshot
        defaults = snapshot.get("defaults") or {}
        self.max_retries = defaults.get("max_retries", 0)
        self.path = node_path(snapshot.get("nodes") or [])
        self.reused_results = self.run.reused_results or {}
        self.ctx = NodeContext(
            run_id=self.run.pk,
            trace_id=self.run.trace_id,
            pipeline=self.run.origin,
            source=self.run.source,
            environment=self.run.environment,
            payload=self.run.payload,
            timeout_seconds=defaults.get("timeout_seconds", DEFAULT_TIMEOUT_SECONDS),
            trigger=self.run.trigger,
            origin_kind=self.run.origin_kind,
            target_host=self.run.target_host,
            now=self.lease.clock.now,
            key_run_id=self.run.retry_root or self.run.pk,
        )
        self.result: _RunResult = {"executed_nodes": [], "skipped_nodes": [], "node_results": {}}
        self.status: str = PipelineRun.Status.COMPLETED
        self.error = ""
        self.open_stage: StageExecution | None = None  # written as running, outcome not yet recorded
        self.interrupted = False  # the open stage's node was stopped on request (cancel_run --force)
        # An attempt that has ended and whose outcome goes with the next write: the one that
        # opens the next attempt (with the run's current node), or the run's end.
        self.ended_stage: StageExecution | None = None
        # What the run's row holds of the walk (current node, and the result as of which
        # _record call), so a write carries only what changed.
        self.written_node, self.recorded, self.written_recorded = self.run.current_node, 0, 0
        # A run taken from the queue: its claim, just made, holds the lease and made the first
        # node its current one, so that node's first attempt needs no write of its own (see _write).
        self.claim_opens = not self.resumed

    def execute(self) -> bool:
        """Walk the run and record its end; False when this process lost the
        run on the way (nothing more is written then)."""
        try:
            try:
                self._walk()
            except (RunOutOfTime, SoftTimeLimitExceeded):
                self._stop(PipelineRun.Status.FAILED, self._time_limit_error())
            except NodeInterrupted:
                # A cancel that stops the node being executed (cancel_run --force): it ends here.
                self.interrupted = True
                node = self.open_stage.node_id if self.open_stage is not None else None
                self._stop(
                    PipelineRun.Status.CANCELLED,
                    f"Cancelled on request: node '{node}' was interrupted" if node else "Cancelled on request",
                )
            except (LeaseLost, DatabaseUnavailable):
                raise
            except Exception as exc:  # anything unexpected still ends the run as failed
                logger.exception("run %s crashed", self.run.pk)
                self._stop(PipelineRun.Status.FAILED, scrub(f"Internal error: {type(exc).__name__}: {exc}"))
            self.lease.node_interrupt.close()  # no node runs any more: a stop request now sends nothing
            self._finish()
            return True
        except LeaseLost:
            _log("run.lease_lost", self.run, worker=self.lease.token, node=self.open_stage and self.open_stage.node_id)
        except DatabaseUnavailable as exc:
            # Not a failure of the run: its lease runs out and the recovery sweep hands it on.
            _log("run.abandoned", self.run, reason="database_unavailable", error=str(exc))
        return False

    def _time_limit_error(self) -> str:
        return f"Run stopped: it ran past the run time limit of {settings.RUN_TIME_LIMIT_SECONDS:g}s"

    def _stop(self, status: str, error: str) -> None:
        """End the walk here: the nodes not executed yet are skipped."""
        self.status, self.error = status, error
        done = set(self.result["executed_nodes"]) | set(self.result["skipped_nodes"])
        if self.open_stage is not None:
            done.add(self.open_stage.node_id)
        self.result["skipped_nodes"] += [node["id"] for node in self.path if node["id"] not in done]
        _log("run.stop", self.run, status=status, error=error)

    def _walk(self) -> None:
        succeeded, last_attempt = self._earlier_stages()
        for node in self.path:
            node_id = node["id"]
            self.logs.node_id = node_id
            if self.status != PipelineRun.Status.COMPLETED:
                self.result["skipped_nodes"].append(node_id)
                continue
            if self.lease.lost.is_set():
                raise LeaseLost(f"run {self.run.pk}: lease lost")
            self._time_left()
            if self.lease.cancel_requested.is_set():
                self._cancelled_before(node_id)
            elif node_id in succeeded:
                # Executed by an earlier delivery: reuse what it produced.
                self._record(node, succeeded[node_id], reused=True)
                progress_end(self.events, node, succeeded[node_id], reused=True)
            elif node_id in self.reused_results:
                # A retry from the failed node: the original run executed it.
                stage = reused_stage(self.run, node, self.reused_results[node_id])
                self._record(node, stage, reused=True)
                progress_end(self.events, node, stage, reused=True)
            else:
                self._run_node(node, previous_attempts=last_attempt.get(node_id, 0))
            if self.status == PipelineRun.Status.CANCELLED:
                self.result["skipped_nodes"].append(node_id)
        self.logs.node_id = ""

    def _earlier_stages(self) -> tuple[dict[str, StageExecution], dict[str, int]]:
        """What earlier deliveries did: their successes and attempt numbers per node."""
        succeeded: dict[str, StageExecution] = {}
        last_attempt: dict[str, int] = {}
        if not self.resumed:  # a run taken straight from the queue has no history
            return succeeded, last_attempt
        for stage in self.run.stages.all():
            last_attempt[stage.node_id] = max(last_attempt.get(stage.node_id, 0), stage.attempt)
            if stage.status == StageExecution.Status.SUCCEEDED:
                succeeded[stage.node_id] = stage
        return succeeded, last_attempt

    def _cancelled_before(self, node_id: str) -> None:
        self.status = PipelineRun.Status.CANCELLED
        self.error = f"Cancelled on request before node '{node_id}'"
        _log("run.cancel", self.run, node=node_id)

    def _run_node(self, node: dict, *, previous_attempts: int) -> None:
        """Run one node, retrying up to ``max_retries`` times; each attempt is a StageExecution.

        One fenced write per attempt, before it starts: it opens the attempt's
        stage, makes the node the run's current one, and carries what ended
        since the last write (the previous attempt's stage, the run's result).
        The first node of a run taken from the queue has its claim for that
        write instead (see _write).
        """
        node_id, node_type = node["id"], node["type"]
        handler = node_types.get(node_type)()
        config = node.get("config") or {}
        last = previous_attempts + self.max_retries + 1
        condition = node_condition(node, self.ctx)
        if condition.reason:
            self._skip(node, condition.reason)
            return
        if condition.error:  # the node fails with it, once: evaluating again would give the same
            handler, last = RefusedNode(condition.error), previous_attempts + 1
        for attempt in range(previous_attempts + 1, last + 1):
            stage = StageExecution(
                run_id=self.run.pk, node_id=node_id, node_type=node_type, attempt=attempt,
                started_at=self.lease.clock.now(),
            )
            try:
                self._write(current_node=node_id, opening=stage)
            except CancelRequested:
                self._cancelled_before(node_id)
                return
            self.open_stage = stage
            _log("node.start", self.run, node=node_id, type=node_type, attempt=attempt)
            self.events.progress({"phase": "start", "node": node_id, "type": node_type, "attempt": attempt})
            self.events.send()  # with what ended before the write
            self._attempt(handler, config, stage)
            # Sent with the next write's outcome, whatever it is: the node has ended either way.
            progress_end(self.events, node, stage)
            done = stage.status == StageExecution.Status.SUCCEEDED or attempt == last
            if done:
                self._record(node, stage)
            self.open_stage, self.ended_stage = None, stage
            _log(
                "node.end",
                self.run,
                node=node_id,
                type=node_type,
                attempt=attempt,
                status=stage.status,
                duration_ms=stage.duration_ms,
                error=stage.errors[-1] if stage.errors else None,
            )
            if done:
                return

    def _skip(self, node: dict, reason: str) -> None:
        """Record ``node`` as skipped by its ``when`` (no stage row: it never started)."""
        node_id, node_type = node["id"], node["type"]
        self.result["executed_nodes"].append(node_id)
        self.result["node_results"][node_id] = skipped_entry(node, reason)
        self.recorded += 1
        _log("node.skip", self.run, node=node_id, type=node_type, reason=reason)
        self.events.progress({
            "phase": "end", "node": node_id, "type": node_type, "attempt": 0, "status": SKIPPED,
            "duration_ms": None, "reused": False, "error": reason[:300],
        })

    def _write(self, *, current_node: str, opening: StageExecution) -> None:
        """The write before an attempt starts (see _run_node), none right
        after a claim from the queue; raises CancelRequested (nothing
        written), LeaseLost, DatabaseUnavailable."""
        fields: dict[str, Any] = {}
        if current_node != self.written_node:
            fields["current_node"] = current_node
        if self.recorded != self.written_recorded:
            fields.update(result=self.result, error=self.error)
        claim_opens, self.claim_opens = self.claim_opens, False
        if claim_opens and not fields and self.ended_stage is None and opening.attempt == 1:
            # The claim's node, right after the claim: the claim stands for its start (a takeover
            # records the current node as interrupted when it has no stage), and its stage is
            # written with its outcome by the next write. One statement per run fewer.
            return
        stages = [opening] if self.ended_stage is None else [self.ended_stage, opening]
        lines = self.logs.batch() if self.lines_each_write or self.logs.due() else []
        self.lease.write(run_fields=fields, stages=stages, before_node=True, log_lines=lines)
        self.logs.written(lines)
        self.ended_stage = None
        self.written_node, self.written_recorded = current_node, self.recorded

    def _time_left(self) -> float:
        """Seconds until the run time limit; raises RunOutOfTime when none are left."""
        left = (self.deadline - self.lease.clock.now()).total_seconds()
        if left <= 0:
            raise RunOutOfTime()
        return left

    def _attempt(self, handler, config: dict, stage: StageExecution) -> None:
        """Execute the node once and put its outcome on ``stage`` (not saved).
        Raises RunOutOfTime when the run time limit stopped it, NodeInterrupted
        when a cancel request stopped it."""
        self.ctx.node_id = stage.node_id
        run_left = self._time_left()
        started = time.perf_counter()
        try:
            # A stop request is heard inside the time limit: once the node has returned it raises
            # nothing, so it can never cut short the disarming of the node's timer.
            with node_time_limit(min(self.ctx.timeout_seconds, run_left)), self.lease.node_interrupt.node():
                stage.output = handler.run(config, self.ctx)
            stage.status = StageExecution.Status.SUCCEEDED
        except NodeTimeout as exc:
            if run_left < self.ctx.timeout_seconds:
                raise RunOutOfTime() from None
            stage.output, stage.errors = {}, [str(exc)]
            stage.status = StageExecution.Status.FAILED
        except NodeError as exc:
            stage.output, stage.errors = exc.output, [str(exc)]
            stage.status = StageExecution.Status.FAILED
        except SoftTimeLimitExceeded:
            raise  # the whole run is out of time, not just this node
        except Exception as exc:  # a handler bug must not take the run down unrecorded
            logger.exception("node %s of run %s raised", stage.node_id, self.run.pk)
            stage.errors = [f"{type(exc).__name__}: {exc}"]
            stage.status = StageExecution.Status.FAILED
        finally:
            stage.duration_ms = round((time.perf_counter() - started) * 1000, 2)
        stage.finished_at = self.lease.clock.now()
        # Secrets a node read must not reach the database or the logs; an output too large to store is cut.
        stage.output = jsondata.cut_to(scrub(stage.output), settings.NODE_MAX_OUTPUT_BYTES)
        stage.errors = scrub(stage.errors)

    def _record(self, node: dict, stage: StageExecution, *, reused: bool = False) -> None:
        """Add the node's outcome to the run's result (written with the next
        write: the next attempt's, or the run's end)."""
        node_id, required = node["id"], node.get("required", True)
        entry = node_entry(node["type"], required, stage, reused=reused)
        self.result["executed_nodes"].append(node_id)
        self.result["node_results"][node_id] = entry
        self.recorded += 1
        if stage.status == StageExecution.Status.SUCCEEDED:
            self.ctx.results[node_id] = {"type": node["type"], "output": stage.output}
        elif required:
            self.status = PipelineRun.Status.FAILED
            self.error = f"Node '{node_id}' failed: {entry['error']}"

    def _finish(self) -> None:
        """Write the run's end, with the last attempt's stage: one durable fenced commit."""
        finished = self.lease.clock.now()
        started = self.run.started_at or self.run.created_at
        duration_ms = round((finished - started).total_seconds() * 1000, 2)
        stages = [self.ended_stage] if self.ended_stage is not None else []
        stage = self.open_stage
        if stage is not None:  # stopped inside a node (the run time limit, a cancel that stops the node)
            stages.append(stage)
            stage.status = StageExecution.Status.FAILED
            stage.errors = [INTERRUPTED_ERROR if self.interrupted else self.error]
            stage.finished_at, stage.output = finished, stage.output or {}
            node = next(node for node in self.path if node["id"] == stage.node_id)
            self.result["executed_nodes"].append(stage.node_id)
            self.result["node_results"][stage.node_id] = node_entry(node["type"], node.get("required", True), stage)
            progress_end(self.events, node, stage)  # followers see the node end, sent with the run's end
        fields = {
            "status": self.status,
            "current_node": "",
            "result": self.result,
            "error": self.error,
            "finished_at": finished,
            "duration_ms": duration_ms,
        }
        self.logs.node_id = ""
        # The end's line is kept with the end it reports, and written to the log once that is durable.
        end = _log("run.end", self.run, emit=False, status=self.status, duration_ms=duration_ms,
                   error=self.error or None)
        self.logs.keep(end)
        lines = self.logs.batch(final=True)
        self.lease.write(
            run_fields=fields, stages=stages, durable=True, on_end=state_end_write(self.ctx, now=finished),
            log_lines=lines,
        )
        self.logs.written(lines)
        self.open_stage = self.ended_stage = None
        for key, value in fields.items():
            setattr(self.run, key, value)
        if end is not None:
            logger.handle(end)
