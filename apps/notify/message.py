"""Building the notification message from what a run found."""
from __future__ import annotations

import re

from django.conf import settings

from apps.notify.base import Message

# "ok" sits below "info" so a run with only informational findings is not reported as OK.
SEVERITY_RANK = {"ok": 0, "info": 1, "warning": 2, "critical": 3}


def _worst(severities: list) -> str:
    known = [s.lower() for s in severities if isinstance(s, str) and s.lower() in SEVERITY_RANK]
    return max(known, key=SEVERITY_RANK.__getitem__, default="ok")


def _key_part(text: str) -> str:
    """``text`` with every character but ASCII letters, digits, ``-`` and ``_``
    percent-encoded (UTF-8), so distinct texts stay distinct."""
    return re.sub(r"[^A-Za-z0-9_-]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), text)


def notification_key(*, run_id: int | None, node_id: str) -> str:
    """The key of what node ``node_id`` of run ``run_id`` sends: ``<run id>-<node id>``,
    the same on every attempt and every redelivery of the node in the run. A retry's
    nodes pass the first run of its retry chain as ``run_id``, so they repeat its keys.

    The node id is percent-encoded beyond ASCII letters, digits, ``-`` and ``_``,
    so the key is valid in an HTTP header and in a Message-ID. "" without a run
    id or a node id: no key is better than one that collides."""
    if not run_id or not node_id:
        return ""
    return f"{run_id}-{_key_part(node_id)}"


def channel_key(key: str, channel: str) -> str:
    """``key`` for the delivery through named channel ``channel``: ``<key>.<channel>``
    ("" when ``key`` is). Encoded node ids hold no ``.``, so no node's key
    equals another's channel key."""
    return f"{key}.{_key_part(channel)}" if key else ""


def message_build(
    *,
    run_info: dict,
    incident: dict | None,
    checks: list[dict],
    analysis: dict | None,
    host: str | None = None,
    key: str = "",
) -> Message:
    """A Message summarising a run: a title with the worst severity and what it
    is about, a body with the incident, each check and the analysis, and the
    same facts as structured ``data``. ``host`` is the host the checks measured
    (this one when None); ``key`` becomes the message's key."""
    open_incident = incident if incident and incident.get("status") != "resolved" else None
    severity = _worst(
        [c.get("status") for c in checks]
        + ([open_incident.get("severity")] if open_incident else [])
        + ([analysis.get("severity")] if analysis else [])
    )
    pipeline = run_info.get("pipeline") or "pipeline"
    if incident:
        label = severity.upper() if open_incident else "RESOLVED"
        title = f"[{label}] {incident.get('title', '')}"
    else:
        # The measuring host, not this one: a run taken over by another worker keeps its checks.
        title = f"[{severity.upper()}] {pipeline} on {host or settings.MONITOR_HOST}"

    lines = [
        f"Pipeline: {pipeline} (run {run_info.get('run_id')}, trace {run_info.get('trace_id')}, "
        f"environment {run_info.get('environment')})"
    ]
    if incident:
        lines.append(
            f"Incident #{incident.get('id')}: {incident.get('title', '')} "
            f"({incident.get('severity', '')}, {incident.get('status', '')}, "
            f"{incident.get('alert_count', 0)} alert(s))"
        )
    if checks:
        lines.append("Checks:")
        for check in checks:
            text = check.get("message") or f"{check.get('value')}{check.get('unit') or ''}"
            lines.append(
                f"  - [{str(check.get('status', '')).upper()}] {check.get('name', '')}: {text}"
            )
    if analysis:
        provider = analysis.get("provider")
        lines.append(
            f"Analysis{f' ({provider})' if provider else ''}: {analysis.get('summary', '')}"
        )
        if analysis.get("probable_cause"):
            lines.append(f"Probable cause: {analysis['probable_cause']}")
        recommendations = analysis.get("recommendations") or []
        if recommendations:
            lines.append("Recommendations:")
            lines.extend(f"  - {r}" for r in recommendations)

    return Message(
        title=title,
        body="\n".join(lines),
        severity=severity,
        data={"run": run_info, "host": host, "incident": incident, "checks": checks, "analysis": analysis},
        key=key,
    )
