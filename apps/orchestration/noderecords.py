"""A node's record in its run: the ``node_results`` entry of its last attempt,
the stage that stands for a node reused from an earlier run, and the progress
event of its end. Plain data for the engine (apps/orchestration/engine.py)."""
from __future__ import annotations

from apps.orchestration import events
from apps.orchestration.models import PipelineRun, StageExecution


def progress_end(
    run_events: events.RunEvents, node: dict, stage: StageExecution, *, reused: bool = False
) -> None:
    """Queue the event telling followers a node's attempt ended (errors are scrubbed already; cut short here)."""
    error = stage.errors[-1] if stage.errors else None
    run_events.progress({
        "phase": "end", "node": node["id"], "type": node["type"], "attempt": stage.attempt,
        "status": stage.status, "duration_ms": stage.duration_ms, "reused": reused,
        "error": error[:300] if isinstance(error, str) else None,
    })


def reused_stage(run: PipelineRun, node: dict, entry: dict) -> StageExecution:
    """An unsaved stage standing for a node another run executed and succeeded
    at (``entry``: that run's node_results entry), for the walk to reuse."""
    return StageExecution(
        run_id=run.pk,
        node_id=node["id"],
        node_type=node["type"],
        status=StageExecution.Status.SUCCEEDED,
        attempt=entry.get("attempts") or 1,
        output=entry.get("output") or {},
        duration_ms=entry.get("duration_ms"),
    )


def node_entry(node_type: str, required: bool, stage: StageExecution, reused: bool = False) -> dict:
    """The run result's ``node_results`` entry of a node's last attempt ``stage``."""
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
