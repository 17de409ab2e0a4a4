"""Text and JSON views of a run, drawn from the PipelineRun record alone, and
the dry-run listing of a definition (the listings of runs and schedules are
in apps/orchestration/listings.py)."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from django.utils import timezone

from apps import jsondata
from apps.hostnames import ALL
from apps.orchestration.builtin import BUILTIN_STAGES
from apps.orchestration.exit_codes import exit_code_for
from apps.orchestration.launchrequest import ResolvedDefinition, Targets
from apps.orchestration.models import PipelineRun, RunLogLine
from apps.orchestration.nodes import node_types
from apps.orchestration.schedules import schedule_describe
from apps.secrets import scrub
from apps.text import printable

RULE = "=" * 60
TargetChoice = str | list[str] | Targets  # where a dry run goes: target_choice's answer, auto looked up


def _shown(text: str) -> str:
    """The display as printed: secrets scrubbed, and no character that could
    drive the terminal (single-line fields are escaped where they are put in)."""
    return printable(scrub(text), lines=True)


def _origin_line(kind: str, origin: str, *, dry_run: bool) -> str:
    origin = printable(origin)
    if dry_run:
        return {
            "definition": f"Pipeline Definition: {origin}",
            "config": f"Pipeline Config: {origin}",
        }.get(kind, "Pipeline: built-in (INGEST → CHECK → ANALYZE → NOTIFY)")
    return {"definition": f"Definition: {origin}", "config": f"Config: {origin}"}.get(
        kind, "Pipeline: built-in (INGEST → CHECK → ANALYZE → NOTIFY)"
    )


def _target_line(target: TargetChoice) -> str | None:
    """The dry run's line on where the run would go (targets.target_choice,
    with ``auto`` already looked up as Targets); None for any worker."""
    if isinstance(target, Targets):
        found = target.hosts[0]
        return f"Host: auto → {found}" if found else "Host: auto → the alert names none: any worker"
    if target == ALL:
        return "Hosts: all (one run per host a live worker serves)"
    if isinstance(target, list):
        return f"Hosts: {', '.join(target)} (one run each)"
    return f"Host: {target}" if target else None


def _target_dict(target: TargetChoice) -> dict:
    if isinstance(target, Targets):
        return {"host": target.hosts[0] or None, "hosts": None}
    if target == ALL or isinstance(target, list):
        return {"host": None, "hosts": target}
    return {"host": target or None, "hosts": None}


def dry_run_node_lines(nodes: list[dict], *, builtin: bool = False) -> list[str]:
    """The dry run's listing of ``nodes`` (``Nodes (N):``, then each node's
    lines and a blank line); the built-in pipeline's stages with ``builtin``."""
    if builtin:
        lines = [f"Stages ({len(nodes)}):"]
        for index, node in enumerate(nodes, start=1):
            lines.append(f"  {index}. {printable(node['id']).upper()} [{printable(node['type'])}]")
            lines.append(f"     Config: {json.dumps(node.get('config') or {})}")
            lines.append("")
        return lines
    lines = [f"Nodes ({len(nodes)}):"]
    for index, node in enumerate(nodes, start=1):
        lines.append(f"  {index}. [{printable(node['type'])}] {printable(node['id'])}")
        lines.append(f"     Config: {json.dumps(node.get('config') or {})}")
        if "when" in node:
            lines.append(f"     When: {printable(str(node['when']))}")
        if node.get("required") is False:
            lines.append("     Required: no (a failure does not stop the run)")
        nxt = node.get("next")
        lines.append(f"     → next: {printable(nxt)}" if nxt else "     → end")
        lines.append("")
    return lines


def render_dry_run(
    *, resolved: ResolvedDefinition, payload: dict, source: str, environment: str, target: TargetChoice = ""
) -> str:
    """The dry-run listing: where the definition came from, where the run
    would go (``target``), its nodes, and the payload."""
    nodes = resolved.config["nodes"]
    where = _target_line(target)
    lines = [
        "=== DRY RUN ===",
        "",
        _origin_line(resolved.kind, resolved.origin, dry_run=True),
        f"Source: {printable(source)}",
        f"Environment: {printable(environment)}",
        *([where] if where else []),
        "",
    ]
    lines += dry_run_node_lines(nodes, builtin=resolved.kind == "builtin")
    if resolved.config.get("schedule"):
        lines += [f"Schedule: {schedule_describe(resolved.config['schedule'])}", ""]
    lines += ["Payload:", json.dumps(payload, indent=2), "", "Use without --dry-run to execute"]
    return _shown("\n".join(lines))


def dry_run_as_dict(
    *, resolved: ResolvedDefinition, payload: dict, source: str, environment: str, target: TargetChoice = ""
) -> dict:
    """The dry-run plan as a JSON-serialisable dict (``--dry-run --json``)."""
    config = resolved.config
    return scrub({
        "dry_run": True,
        "definition": resolved.origin if resolved.kind == "definition" else None,
        "config": resolved.origin if resolved.kind == "config" else None,
        "origin": resolved.origin,
        "origin_kind": resolved.kind,
        "source": source,
        "environment": environment,
        **_target_dict(target),
        "nodes": [
            {
                "id": node["id"],
                "type": node["type"],
                "config": node.get("config") or {},
                "required": node.get("required", True),
                **({"when": node["when"]} if "when" in node else {}),
                "next": node.get("next"),
            }
            for node in config["nodes"]
        ],
        "defaults": config.get("defaults") or {},
        "schedule": config.get("schedule"),
        "max_concurrent": config.get("max_concurrent"),
        "payload": payload,
    })


def _section_header(run: PipelineRun, node_id: str, node_type: str) -> str:
    if run.origin_kind == "builtin" and node_id in BUILTIN_STAGES:
        return f"--- {node_id.upper()} ---"
    return f"--- {printable(node_type)} ({printable(node_id)}) ---"


def _node_lines(entry: dict) -> list[str]:
    return [f"  {line}" for line in node_display_lines(entry)]


def node_display_lines(entry: dict) -> list[str]:
    """What the result display says of one node (its node_results ``entry``):
    its type's display lines, its status and error when it did not succeed,
    its duration; each line printable (the console shows the same lines)."""
    if entry["status"] == "skipped":  # its `when` was false: it never started
        return [f"Skipped: {printable(str(entry.get('reason') or 'skipped'))}"]
    node_type = entry["type"]
    output = entry.get("output") or {}
    lines: list[str] = []
    if jsondata.is_cut(output):
        lines.append(f"Output cut: {output['bytes']} bytes (NODE_MAX_OUTPUT_BYTES)")
    elif node_type in node_types and output:
        lines += node_types.get(node_type)().display_lines(output)
    if entry["status"] != "succeeded":
        lines.insert(0, f"Status: {entry['status'].upper()}")
        note = "" if entry.get("required", True) else " (not required; the run went on)"
        lines.append(f"Error: {entry.get('error') or 'unknown error'}{note}")
    if entry.get("duration_ms") is not None:
        lines.append(f"Duration: {entry['duration_ms']:.2f}ms")
    # Outputs hold text from alerts and remote services: one display line each.
    return [printable(line) for line in lines]


def render_result(run: PipelineRun) -> str:
    """The result display of ``run``, as a person reads it."""
    result = run.result or {}
    lines = [
        RULE,
        "PIPELINE RESULT",
        RULE,
        "",
        f"Status: {run.status.upper()}",
        _origin_line(run.origin_kind, run.origin, dry_run=False),
        f"Trace ID: {printable(run.trace_id)}",
        f"Run ID: {run.pk}",
    ]
    if run.retry_of_id is not None:
        lines.append(f"Retry of: run {run.retry_of_id}")
    if run.target_host:
        lines.append(f"Host: {run.target_host}")
    if run.group_id:
        lines.append(f"Group: {run.group_id}")
    if run.duration_ms is not None:
        lines.append(f"Duration: {run.duration_ms:.2f}ms")
    if run.error:
        lines.append(f"Error: {printable(run.error)}")
    lines.append("")
    node_results = result.get("node_results", {})
    for node_id in result.get("executed_nodes", []):
        entry = node_results[node_id]
        lines.append(_section_header(run, node_id, entry["type"]))
        lines += _node_lines(entry)
        lines.append("")
    skipped = result.get("skipped_nodes", [])
    if skipped:
        lines += [f"Skipped: {printable(', '.join(skipped))}", ""]
    lines.append(final_line(run))
    return _shown("\n".join(lines))


def render_unfinished(run: PipelineRun) -> str:
    """The display of a queued or running run: the result display as far as
    it goes (the nodes ended so far), the node being executed, and how to
    follow the run to its end."""
    head, last = render_result(run).rsplit("\n", 1)
    lines = [head]
    if run.status == PipelineRun.Status.RUNNING and run.current_node:
        node_type = next(
            (n.get("type") for n in run.config_snapshot.get("nodes") or [] if n.get("id") == run.current_node), None
        )
        lines += [f"Current node: {printable(run.current_node)} ({printable(str(node_type or '?'))})", ""]
    lines += [last, f"Not finished yet: show_run {run.pk} --wait follows it to its end."]
    return _shown("\n".join(lines))


def final_line(run: PipelineRun) -> str:
    lines: dict[str, str] = {
        PipelineRun.Status.COMPLETED: "✓ Pipeline completed successfully",
        PipelineRun.Status.FAILED: "✗ Pipeline failed",
        PipelineRun.Status.CANCELLED: "✗ Pipeline cancelled",
    }
    return lines.get(run.status, f"… Pipeline {run.status}")


def iso(value) -> str | None:
    return value.isoformat() if value else None


def run_as_dict(run: PipelineRun) -> dict:
    """The run record as a JSON-serialisable dict (``--json`` shows it with the exit code)."""
    result = run.result or {}
    return scrub({
        "run_id": run.pk,
        "trace_id": run.trace_id,
        "definition": run.definition_name or None,
        "config": run.origin if run.origin_kind == "config" else None,
        "origin": run.origin,
        "trigger": run.trigger,
        "retry_of": run.retry_of_id,
        "idempotency_key": run.idempotency_key,
        "target_host": run.target_host or None,
        "group_id": str(run.group_id) if run.group_id else None,
        "source": run.source,
        "environment": run.environment,
        "status": run.status,
        "current_node": run.current_node or None,
        "duration_ms": run.duration_ms,
        "error": run.error or None,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "executed_nodes": result.get("executed_nodes", []),
        "skipped_nodes": result.get("skipped_nodes", []),
        "node_results": result.get("node_results", {}),
    })


def run_json(run: PipelineRun) -> dict:
    """The run record of ``--json`` (and of the API): the run as rendered, and
    the exit code it stands for."""
    return run_as_dict(run) | {"exit_code": exit_code_for(run)}


_MARKS = {"succeeded": "✓", "failed": "✗", "skipped": "⤼"}


def render_progress(event: dict) -> str:
    """One ``--follow`` line for a progress event: the time (UTC), then what
    happened, with the node's id, type, status, attempt and duration."""
    stamp = timezone.now().strftime("%H:%M:%S")
    phase = event.get("phase")
    if phase == "takeover":
        return f"{stamp} ↻ run taken over by worker {printable(str(event.get('worker') or 'unknown'))}"
    if phase == "cancel":
        if event.get("stop_node"):
            return f"{stamp} ■ cancellation requested: the node being executed is stopped and no later node starts"
        return f"{stamp} ■ cancellation requested: the node being executed finishes and no later node starts"
    node = f"{printable(str(event.get('node')))} ({printable(str(event.get('type') or '?'))})"
    attempt = f", attempt {event['attempt']}" if event.get("attempt") else ""
    if phase == "start":
        return f"{stamp} ▶ {node} started{attempt}"
    status = str(event.get("status") or "ended")
    if event.get("reused"):
        return f"{stamp} {_MARKS.get(status, '•')} {node} {status} earlier, reused{attempt}"
    took = f" in {event['duration_ms']:.2f}ms" if isinstance(event.get("duration_ms"), (int, float)) else ""
    error = f": {printable(scrub(str(event['error'])))}" if event.get("error") and status != "succeeded" else ""
    return f"{stamp} {_MARKS.get(status, '•')} {node} {status}{took}{attempt}{error}"


def render_log_line(line: RunLogLine) -> str:
    """One kept log line of a run on one line of printable text: the time
    (seconds and zone), level, logger, ``[node]`` (``[-]`` outside a node)
    and the message, every control character escaped (a multi-line message
    shows its newlines as ``\\n``)."""
    when = timezone.localtime(line.logged_at).strftime("%Y-%m-%d %H:%M:%S %Z")
    node = printable(line.node_id) if line.node_id else "-"
    return f"{when} {line.level} {printable(line.logger)} [{node}] {printable(line.message)}"


def render_log_lines(lines: list[RunLogLine]) -> str:
    """The ``--logs`` block printed after a run's display: a heading, then one line each."""
    if not lines:
        return "Logs: none kept"
    return "\n".join([f"Logs ({len(lines)} line{'s' if len(lines) != 1 else ''}):",
                      *(render_log_line(line) for line in lines)])


def log_line_as_dict(line: RunLogLine) -> dict:
    """A kept log line in ``--json`` (``logs``): its text as stored (scrubbed when kept)."""
    return {
        "seq": line.seq,
        "time": iso(line.logged_at),
        "level": line.level,
        "logger": line.logger,
        "node": line.node_id or None,
        "message": line.message,
    }


def worker_log_path() -> str | None:
    """Where the workers' log is, when known: WORKER_LOG_PATH, else var/worker.log
    if it exists; relative to the working directory when it lies below it."""
    from django.conf import settings

    path = settings.WORKER_LOG_PATH or (settings.VAR_DIR / "worker.log")
    if not settings.WORKER_LOG_PATH and not Path(path).exists():
        return None
    path = Path(path).absolute()
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def trace_grep_pattern(trace_id: str) -> str:
    """A shell-quoted grep pattern and options matching the worker log lines of the
    run with ``trace_id`` and of no other run, in the LOG_FORMAT the workers use."""
    from django.conf import settings

    if settings.LOG_FORMAT == "json":
        # The closing quote ends the value: a trace id that merely starts with this one does not match.
        return "-F " + shlex.quote(f'"trace_id": {json.dumps(trace_id)}')
    # In text lines the field is preceded by a space and followed by one (or ends the line).
    return "-E " + shlex.quote(f" trace_id={_ere_escape(trace_id)}( |$)")


def _ere_escape(text: str) -> str:
    return "".join("\\" + char if char in "\\.^$*+?()[]{}|" else char for char in text)


def follow_hint(run: PipelineRun) -> str:
    return (
        f"Follow it:  python manage.py show_run {run.pk} --wait\n"
        f"Worker log: grep {printable(trace_grep_pattern(run.trace_id))} "
        f"{printable(worker_log_path() or '<worker log>')}"
    )


def queued_as_dict(run: PipelineRun) -> dict:
    """What a fire-and-forget launch prints with ``--json``."""
    return {
        "run_id": run.pk,
        "trace_id": run.trace_id,
        "status": run.status,
        "target_host": run.target_host or None,
        "group_id": str(run.group_id) if run.group_id else None,
    }


def render_queued(run: PipelineRun) -> str:
    """What a fire-and-forget launch prints."""
    host = f" for host {run.target_host}" if run.target_host else ""
    return f"Run {run.pk} queued{host} (trace id {printable(run.trace_id)}).\n{follow_hint(run)}"


def start_hint(host: str) -> str:
    """How to start a worker serving ``host``, on that host."""
    return f"Start one on that host with:  MONITOR_HOST={host} celery -A workers worker -l info"


def render_unserved(host: str) -> str:
    """The warning of a launch for a host no live worker serves."""
    return (
        f"Warning: no live worker serves host '{host}' right now; its run stays queued until one does.\n"
        f"{start_hint(host)}"
    )


def render_gave_up(run: PipelineRun, *, reason: str, timeout: float | None) -> str:
    """Why --wait stopped waiting, and how to follow the run that goes on."""
    if reason == "no_worker":
        from django.conf import settings

        from apps.orchestration import dispatch

        if run.target_host:
            queue = dispatch.run_queue(run.target_host)
            what = (
                f"The worker holding run {run.pk} stopped renewing its lease"
                if run.status == PipelineRun.Status.RUNNING
                else f"No worker has picked up run {run.pk} within {settings.RUN_PICKUP_TIMEOUT_SECONDS:g}s"
            )
            return (
                f"{what}, and no live worker serves its host '{run.target_host}' (queue '{queue}').\n"
                f"{start_hint(run.target_host)}\n"
                f"The run stays {run.status} and goes on when a worker for that host starts.\n{follow_hint(run)}"
            )
        return (
            f"No worker has picked up run {run.pk} within {settings.RUN_PICKUP_TIMEOUT_SECONDS:g}s, "
            f"and no live worker consumes its queue '{dispatch.run_queue()}'.\n"
            "Start one with:  celery -A workers worker -l info\n"
            f"The run stays queued and runs when a worker starts.\n{follow_hint(run)}"
        )
    return (
        f"Gave up waiting for run {run.pk} after {timeout:g}s (status: {run.status}).\n"
        f"The run goes on in the background.\n{follow_hint(run)}"
    )


def render_cancelled(run: PipelineRun) -> str:
    """What a cancel says of the run it was asked for (pipeline_run_cancel's answer)."""
    if run.status == PipelineRun.Status.CANCELLED:
        return f"Run {run.pk} is already cancelled." if run.already_cancelled else f"Run {run.pk} cancelled."
    node = printable(run.current_node)
    if run.cancel_stop_node:
        return f"Cancellation of run {run.pk} requested: node '{node}' is being stopped, and no node after it starts."
    return f"Cancellation of run {run.pk} requested: node '{node}' is not interrupted, and no node after it starts."


def render_detached(run_id: int) -> str:
    return (
        f"Detached from run {run_id}; it goes on in the background.\n"
        f"Follow it:  python manage.py show_run {run_id} --wait"
    )
