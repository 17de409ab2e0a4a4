"""The listings of runs and schedules (``list_runs``, ``list_schedules``) as
aligned text tables and as JSON, and durations as people read them."""
from __future__ import annotations

from django.utils import timezone

from apps.orchestration.rendering import iso
from apps.secrets import scrub
from apps.text import display_width, printable, shorten

# How much of a listed run's error and config path a table row shows.
ERROR_COLUMN_WIDTH = 60
ORIGIN_COLUMN_WIDTH = 40


def render_table(headers: list[str], rows: list[list[str]], *, right: tuple[int, ...] = ()) -> str:
    """An aligned table: each column padded to its widest cell (as a terminal
    shows it), columns ``right`` aligned right, the last one not padded.
    Cells must already be printable single lines."""
    table = [headers, *rows]
    widths = [max(display_width(row[col]) for row in table) for col in range(len(headers))]
    lines = []
    for row in table:
        cells = []
        for col, cell in enumerate(row):
            pad = " " * (widths[col] - display_width(cell))
            if col == len(row) - 1 and col not in right:
                cells.append(cell)
            else:
                cells.append(pad + cell if col in right else cell + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _local(value) -> str:
    return timezone.localtime(value).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _zone_header(name: str) -> str:
    return f"{name} ({timezone.get_current_timezone_name()})"


def format_duration(ms: float | None) -> str:
    """``231ms``, ``12.3s``, ``5m02s`` or ``1h02m03s``; ``-`` when there is none."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    minutes, seconds = divmod(int(ms // 1000), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _listed_origin(row: dict) -> str:
    if row["origin_kind"] == "builtin":
        return "built-in"
    if row["origin_kind"] == "config":
        return shorten(printable(row["origin"]), ORIGIN_COLUMN_WIDTH, keep_end=True)
    return shorten(printable(row["definition_name"] or row["origin"]), ORIGIN_COLUMN_WIDTH)


def render_runs_table(rows: list[dict]) -> str:
    """Listed runs (selectors.pipeline_runs_list) as an aligned table, one line
    each, the error cut short; text from input or remote services escaped."""
    if not rows:
        return "No runs."
    body = [
        [
            str(row["id"]),
            _listed_origin(row),
            row["target_host"] or "-",
            row["trigger"],
            row["status"],
            _local(row["created_at"]),
            format_duration(row["duration_ms"]),
            shorten(printable(scrub(row["error"] or "")), ERROR_COLUMN_WIDTH),
        ]
        for row in rows
    ]
    headers = ["ID", "DEFINITION", "HOST", "TRIGGER", "STATUS", _zone_header("CREATED"), "DURATION", "ERROR"]
    return render_table(headers, body, right=(0,))


def run_listing_dict(row: dict) -> dict:
    """A listed run (selectors.pipeline_runs_list) as a JSON-serialisable dict."""
    return scrub({
        "run_id": row["id"],
        "trace_id": row["trace_id"],
        "definition": row["definition_name"] or None,
        "config": row["origin"] if row["origin_kind"] == "config" else None,
        "origin": row["origin"],
        "origin_kind": row["origin_kind"],
        "target_host": row["target_host"] or None,
        "group_id": str(row["group_id"]) if row["group_id"] else None,
        "trigger": row["trigger"],
        "retry_of": row["retry_of"],
        "idempotency_key": row["idempotency_key"],
        "status": row["status"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "finished_at": iso(row["finished_at"]),
        "duration_ms": row["duration_ms"],
        "error": row["error"] or None,
    })


def render_schedules_table(listings: list, *, now) -> str:
    """Pipeline schedules (selectors.pipeline_schedules_list) as an aligned
    table; a next due time already past is marked overdue."""
    if not listings:
        return "No pipeline schedules."
    body = []
    for item in listings:
        schedule = printable(item.schedule) + (f" ({printable(item.cron)})" if item.cron else "")
        last = item.last_run
        body.append([
            printable(item.definition),
            schedule,
            printable(item.timezone or "-"),
            printable(item.overlap or "-"),
            "yes" if item.enabled else "no (paused)" if item.paused else "no",
            f"{last['run_id']} {last['status']} {_local(last['created_at'])}" if last else "-",
            "-" if item.next_due_at is None
            else _local(item.next_due_at) + (" (overdue)" if item.next_due_at < now else ""),
        ])
    headers = ["DEFINITION", "SCHEDULE", "TIMEZONE", "OVERLAP", "ENABLED", _zone_header("LAST RUN"),
               _zone_header("NEXT DUE")]
    return render_table(headers, body)


def schedule_listing_dict(item) -> dict:
    """A pipeline schedule (selectors.pipeline_schedules_list) as a JSON-serialisable dict."""
    last = item.last_run
    return {
        "definition": item.definition,
        "task": item.task,
        "kind": item.kind,
        "schedule": item.schedule,
        "every_seconds": item.every_seconds,
        "cron": item.cron,
        "timezone": item.timezone,
        "overlap": item.overlap,
        "enabled": item.enabled,
        "paused": item.paused,
        "last_run": {**last, "created_at": iso(last["created_at"])} if last else None,
        "next_due_at": iso(item.next_due_at),
    }


def _ago(since, now) -> str:
    """How long ago ``since`` was, whole seconds at least (``0s`` for now)."""
    seconds = max(int((now - since).total_seconds()), 0)
    return f"{seconds}s" if seconds < 60 else format_duration(seconds * 1000)


def render_states_table(states: list, *, now) -> str:
    """The monitoring state board (selectors.monitor_states_list) as an aligned table."""
    if not states:
        return "No monitoring state yet: it is written as runs that find a severity end."
    body = [
        [
            state.severity.upper(),
            printable(state.definition),
            printable(state.host or "-"),
            f"{_local(state.since)} ({_ago(state.since, now)})",
            f"{state.last_run_id} {_local(state.last_run_at)}",
            _local(state.last_notified_at),
        ]
        for state in states
    ]
    headers = ["SEVERITY", "DEFINITION", "HOST", _zone_header("SINCE"), _zone_header("LAST RUN"),
               _zone_header("LAST NOTIFIED")]
    return render_table(headers, body)


def state_listing_dict(state) -> dict:
    """A monitoring state row as a JSON-serialisable dict."""
    return {
        "definition": state.definition,
        "host": state.host or None,
        "severity": state.severity,
        "since": iso(state.since),
        "last_run_id": state.last_run_id,
        "last_run_at": iso(state.last_run_at),
        "last_notified_at": iso(state.last_notified_at),
    }
