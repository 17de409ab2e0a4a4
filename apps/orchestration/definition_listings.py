"""Stored definitions as ``list_pipelines`` and ``show_pipeline`` print them:
aligned text and JSON, rendered from selectors' rows (never the live config's
other parts)."""
from __future__ import annotations

import json

from django.utils import timezone

from apps.orchestration.listings import (
    _local,
    _zone_header,
    render_runs_table,
    render_table,
    run_listing_dict,
)
from apps.orchestration.rendering import iso
from apps.orchestration.schedules import schedule_describe
from apps.secrets import scrub
from apps.text import printable, shorten

DESCRIPTION_COLUMN_WIDTH = 60
TRIGGERS_COLUMN_WIDTH = 40


def schedule_words(schedule: object) -> str | None:
    """A definition's ``schedule`` in words (``every 300s``), None without one."""
    if not schedule:
        return None
    try:
        return schedule_describe(schedule)  # type: ignore[arg-type]
    except (TypeError, KeyError, AttributeError, ValueError):  # a row changed behind validation's back
        return json.dumps(schedule)


def trigger_words(triggers: object) -> list[str]:
    """A definition's ``triggers`` as ``alert:<source>`` each."""
    if not isinstance(triggers, list):
        return []
    words = []
    for trigger in triggers:
        alert = trigger.get("alert") if isinstance(trigger, dict) else None
        words.append(f"alert:{alert.get('source')}" if isinstance(alert, dict) else json.dumps(trigger))
    return words


def _node_count(row: dict) -> int:
    return len(row["nodes"]) if isinstance(row["nodes"], list) else 0


def _schedule_cell(row: dict) -> str:
    words = schedule_words(row["schedule"])
    if words is None:
        return "-"
    return printable(words) + (" (paused)" if row["schedule_paused"] else "")


def _last_run_cell(last: dict | None) -> str:
    return f"{last['run_id']} {last['status']} {_local(last['created_at'])}" if last else "-"


def render_pipelines_table(rows: list[dict]) -> str:
    """Definitions (selectors.pipeline_definitions_overview) as an aligned table."""
    if not rows:
        return "No pipeline definitions. Load them with: python manage.py load_pipelines"
    body = [
        [
            printable(row["name"]),
            "yes" if row["is_active"] else "no",
            str(_node_count(row)),
            _schedule_cell(row),
            shorten(printable(", ".join(trigger_words(row["triggers"])) or "-"), TRIGGERS_COLUMN_WIDTH),
            _last_run_cell(row["last_run"]),
            shorten(printable(row["description"] or ""), DESCRIPTION_COLUMN_WIDTH),
        ]
        for row in rows
    ]
    headers = ["NAME", "ACTIVE", "NODES", "SCHEDULE", "TRIGGERS", _zone_header("LAST RUN"), "DESCRIPTION"]
    return render_table(headers, body, right=(2,))


def pipeline_listing_dict(row: dict) -> dict:
    """A definition (selectors.pipeline_definitions_overview) as a JSON-serialisable dict."""
    last = row["last_run"]
    return {
        "name": row["name"],
        "description": row["description"],
        "is_active": row["is_active"],
        "node_count": _node_count(row),
        "schedule": schedule_words(row["schedule"]),
        "schedule_paused": bool(row["schedule"]) and row["schedule_paused"],
        "triggers": trigger_words(row["triggers"]),
        "last_run": {**last, "created_at": iso(last["created_at"])} if last else None,
    }


def pipeline_detail_dict(row: dict, *, schedule, runs: list[dict]) -> dict:
    """One definition for ``show_pipeline --json``: its listing, its nodes (id,
    type, config, next, when, required), its schedule as beat has it
    (``schedule``: a selectors.ScheduleListing or None) and its newest runs."""
    nodes = row["nodes"] if isinstance(row["nodes"], list) else []
    return scrub({
        **pipeline_listing_dict(row),
        "nodes": [
            {key: node[key] for key in ("id", "type", "config", "next", "when", "required") if key in node}
            for node in nodes if isinstance(node, dict)
        ],
        "schedule_enabled": schedule.enabled if schedule is not None else None,
        "next_due_at": iso(schedule.next_due_at) if schedule is not None else None,
        "runs": [run_listing_dict(run) for run in runs],
    })


def render_pipeline(row: dict, *, node_lines: list[str], schedule, runs: list[dict]) -> str:
    """One definition for ``show_pipeline``: its description, its nodes (the
    dry run's node lines, ``node_lines``), its schedule (enabled or paused,
    next due), its triggers and its newest runs."""
    lines = [f"Definition: {printable(row['name'])}" + ("" if row["is_active"] else " (inactive)")]
    if row["description"]:
        lines.append(f"Description: {printable(row['description'])}")
    lines += ["", *node_lines]
    words = schedule_words(row["schedule"])
    if words is None:
        lines.append("Schedule: none")
    else:
        if schedule is None:
            state = "not in beat's table (run load_pipelines)"
        elif not schedule.enabled:
            state = "paused" if row["schedule_paused"] else "disabled"
        else:
            due = _local(schedule.next_due_at)
            state = f"enabled, next due {due} ({timezone.get_current_timezone_name()})"
        lines.append(f"Schedule: {printable(words)} — {state}")
    lines.append(f"Triggers: {printable(', '.join(trigger_words(row['triggers'])) or 'none')}")
    lines += ["", f"Last runs ({len(runs)}):" if runs else "Last runs: none"]
    if runs:
        lines.append(render_runs_table(runs))
    return printable(scrub("\n".join(lines)), lines=True)
