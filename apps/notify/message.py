"""Building the notification message from what a run found."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from django.conf import settings

from apps.notify.base import NOTICES, Message

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


def format_since(since: object) -> str:
    """An ISO-8601 time as ``2026-12-07 10:00:00 UTC`` (seconds and its zone: ``UTC``
    or an offset such as ``+02:00``, none for a time without one); a string that
    is not ISO-8601 is returned as it is."""
    if isinstance(since, datetime):
        moment = since
    else:
        try:
            moment = datetime.fromisoformat(str(since))
        except ValueError:
            return str(since)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    offset = moment.utcoffset()
    if offset is None:
        return text
    if offset == timedelta(0):
        return f"{text} UTC"
    zone = moment.strftime("%z")  # +0200
    return f"{text} {zone[:3]}:{zone[3:5]}"


def notice_line(*, notice: str, severity: str, previous: dict | None) -> str:
    """The body's first line for a notice, relative to ``previous`` (the severity
    receivers last heard of and since when): "" for a plain notification."""
    before = str((previous or {}).get("severity") or "").upper()
    since = (previous or {}).get("since")
    since_text = f" since {format_since(since)}" if since else ""
    now = severity.upper()
    if notice == "resolved":
        return f"Resolved: {before}{since_text} is over; now {now}." if before else f"Resolved: now {now}."
    if notice == "reminder":
        return f"Still {now}{since_text} (reminder)"
    if notice == "problem":
        return f"Changed: {before} → {now}" if before and before != now else f"New: {now}"
    return ""


def message_build(
    *,
    run_info: dict,
    incident: dict | None,
    checks: list[dict],
    analysis: dict | None,
    host: str | None = None,
    key: str = "",
    notice: str = "",
    previous: dict | None = None,
) -> Message:
    """A Message summarising a run: a title with the worst severity and what it
    is about, a body with the incident, each check and the analysis, and the
    same facts as structured ``data``. ``host`` is the host the checks measured
    (this one when None); ``key`` becomes the message's key.

    ``notice`` (one of apps.notify.base.NOTICES) says what kind of notice the
    message is, relative to ``previous`` ({"severity", "since"}: what receivers
    last heard and since when, an ISO-8601 time or None): the body then starts
    with a line saying so, ``data`` carries both, and a "resolved" notice has
    severity "ok" and the label RESOLVED. A plain notification ("") is built as
    it always was. Raises ValueError for an unknown notice."""
    if notice not in NOTICES:
        raise ValueError(f"unknown notice: {notice!r}")
    open_incident = incident if incident and incident.get("status") != "resolved" else None
    severity = "ok" if notice == "resolved" else _worst(
        [c.get("status") for c in checks]
        + ([open_incident.get("severity")] if open_incident else [])
        + ([analysis.get("severity")] if analysis else [])
    )
    pipeline = run_info.get("pipeline") or "pipeline"
    resolved = notice == "resolved" or bool(incident and not open_incident)
    label = "RESOLVED" if resolved else severity.upper()
    if incident:
        title = f"[{label}] {incident.get('title', '')}"
    else:
        # The measuring host, not this one: a run taken over by another worker keeps its checks.
        title = f"[{label}] {pipeline} on {host or settings.MONITOR_HOST}"

    lines = [notice_line(notice=notice, severity=severity, previous=previous)] if notice else []
    lines += [
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

    data = {"run": run_info, "host": host, "incident": incident, "checks": checks, "analysis": analysis}
    if notice:
        data["notice"] = notice
        data["previous"] = _json_previous(previous)
    return Message(title=title, body="\n".join(lines), severity=severity, data=data, key=key, notice=notice)


def _json_previous(previous: dict | None) -> dict | None:
    """``previous`` with a datetime ``since`` written as ISO-8601, so ``data`` stays JSON."""
    if previous and isinstance(previous.get("since"), datetime):
        return {**previous, "since": previous["since"].isoformat()}
    return previous
