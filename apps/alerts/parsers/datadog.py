"""Datadog monitor webhooks: the default JSON template plus the common $ALERT_* variables."""
from __future__ import annotations

import re

from apps.alerts.parsers.base import ParsedAlert, Parser, PayloadError, fingerprint_for, parsers
from apps.alerts.parsers.common import (
    CRITICAL,
    FIRING,
    INFO,
    RESOLVED,
    WARNING,
    normalise_severity,
    source_fingerprint,
    text,
)

# $ALERT_TYPE: the kind of monitor event. "success" is the recovery notice.
ALERT_TYPE_SEVERITY = {"error": CRITICAL, "warning": WARNING, "info": INFO}
# $ALERT_TRANSITION, when the alert type does not say (Re-Triggered, Re-Warn... share a stem).
TRANSITION_SEVERITY = {"triggered": CRITICAL, "warn": WARNING, "no data": WARNING}
# Leading "[P1] [Triggered on {host:web-01}] " groups of an event title.
_TITLE_PREFIX = re.compile(r"^(?:\s*\[[^\]]*\])+\s*")
_BRACKET = re.compile(r"\[([^\]]*)\]")
_HOST_IN_SCOPE = re.compile(r"(?:^|[\s,{])host:([^\s,}]+)")
_PRIORITY = re.compile(r"^p[1-5]$", re.IGNORECASE)
# Datadog wraps markdown bodies in %%% lines and ends them with a "- - -" footer of links.
_FOOTER = re.compile(r"\n\s*-\s-\s-\s*\n.*", re.DOTALL)
# A line of notification handles only ("@slack-ops @webhook-pipeline") tells nothing about the alert.
_HANDLES_LINE = re.compile(r"^[ \t]*@\S+(?:[ \t]+@\S+)*[ \t]*$\n?", re.MULTILINE)


@parsers.register("datadog")
class DatadogParser(Parser):
    name = "datadog"

    def detect(self, payload: dict) -> bool:
        if not isinstance(payload, dict):
            return False
        if "alert_transition" in payload:
            return True
        # The default template: $ID, $LAST_UPDATED, $EVENT_TYPE, $EVENT_TITLE, $DATE, $ORG_*, $EVENT_MSG.
        return (
            isinstance(payload.get("org"), dict)
            and "event_type" in payload
            and any(key in payload for key in ("last_updated", "date", "body"))
        )

    def parse(self, payload: dict) -> list[ParsedAlert]:
        """The monitor event of a Datadog webhook as one alert.

        Raises PayloadError when the payload is not an object or names no alert."""
        if not isinstance(payload, dict):
            raise PayloadError("Not a Datadog payload: not an object")
        title = text(payload.get("title"))
        alert_id = text(payload.get("alert_id"))
        name = (
            text(payload.get("alert_title"))
            or _TITLE_PREFIX.sub("", title)
            or title
            or (f"Datadog monitor {alert_id}" if alert_id else "")
        )
        if not name:
            raise PayloadError("Datadog payload has no title or alert_id")
        labels = _tags(payload.get("tags"))
        scope = text(payload.get("alert_scope"))
        host = (
            text(payload.get("hostname"))
            or labels.get("host", "").split(",")[0]
            or _host_in(scope)
            or _host_in(_title_prefix(title))
        )
        transition = text(payload.get("alert_transition")) or _transition_in(title)
        alert_type = text(payload.get("alert_type")).lower()
        resolved = transition.lower() == "recovered" or alert_type == "success"
        for key in ("alert_id", "alert_metric", "alert_priority", "alert_scope", "event_type"):
            if text(payload.get(key)):
                labels.setdefault(key, text(payload.get(key)))
        if transition:
            labels.setdefault("alert_transition", transition)
        return [
            ParsedAlert(
                fingerprint=self._fingerprint(payload, name=name, host=host, scope=scope),
                name=name,
                severity=_severity(payload, alert_type, transition),
                status=RESOLVED if resolved else FIRING,
                host=host,
                description=_body(payload.get("body")) or text(payload.get("alert_status")),
                labels=labels,
            )
        ]

    def _fingerprint(self, payload: dict, *, name: str, host: str, scope: str) -> str:
        """The same for a monitor group's trigger and its recovery: the aggregation
        key, else the monitor id with the host, else the name with the host."""
        aggregate = text(payload.get("aggregate"))
        if aggregate:
            return source_fingerprint(self.name, aggregate)
        alert_id = text(payload.get("alert_id"))
        if alert_id:
            return fingerprint_for(self.name, alert_id, {"host": host, "scope": scope})
        return fingerprint_for(self.name, name, {"host": host, "scope": scope})

    def sample(self) -> dict:
        return {
            "id": "7295830385027391423",
            "last_updated": "1736937000000",
            "event_type": "query_alert_monitor",
            "title": "[Triggered on {host:web-01}] High CPU usage",
            "date": "1736937000000",
            "org": {"id": "412345", "name": "Example Corp"},
            "body": "%%%\nCPU usage on web-01 has been above 90% for 5 minutes (current: 96.4%).\n\n"
            "@webhook-ops-pipeline\n\n"
            "Query: avg(last_5m):avg:system.cpu.user{role:web} by {host} > 90\n\n"
            "- - -\n\n"
            "[[Monitor Status](https://app.datadoghq.com/monitors/12345678?group=host%3Aweb-01)] "
            "· [[Edit Monitor](https://app.datadoghq.com/monitors/12345678/edit)]\n%%%",
            "alert_id": "12345678",
            "alert_transition": "Triggered",
            "alert_type": "error",
            "alert_priority": "P1",
            "alert_metric": "system.cpu.user",
            "alert_status": "system.cpu.user over host:web-01 was > 90.0 on average during the last 5m.",
            "alert_scope": "host:web-01",
            "hostname": "web-01",
            "tags": "env:production,host:web-01,role:web,team:ops",
            "aggregate": "9bd4ac313a4d1e8fe2c43f7c3e5a4f2c",
            "priority": "normal",
            "link": "https://app.datadoghq.com/event/event?id=7295830385027391423",
        }


def _tags(tags: object) -> dict:
    """Datadog tags (``"env:prod,role:web,canary"`` or a list) as labels: key:value
    pairs by key, a repeated key's values comma-joined, a bare tag with value ''."""
    if isinstance(tags, str):
        items = tags.split(",")
    elif isinstance(tags, list):
        items = [t for t in tags if isinstance(t, str)]
    elif tags is None:
        items = []
    else:
        raise PayloadError("Datadog tags must be a comma-separated string or a list")
    labels: dict[str, str] = {}
    for item in items:
        key, _, value = item.strip().partition(":")
        key, value = key.strip(), value.strip()
        if not key:
            continue
        if labels.get(key) and value and value not in labels[key].split(","):
            labels[key] = f"{labels[key]},{value}"
        else:
            labels[key] = labels.get(key) or value
    return labels


def _title_prefix(title: str) -> str:
    match = _TITLE_PREFIX.match(title)
    return match.group(0) if match else ""


def _transition_in(title: str) -> str:
    """The transition word of a title's "[Recovered on {...}]" group ('' when none)."""
    for group in _BRACKET.findall(_title_prefix(title)):
        word = group.split(" on ")[0].strip()
        stem = word.lower().removeprefix("re-")
        if stem in TRANSITION_SEVERITY or stem == "recovered":
            return word
    return ""


def _host_in(scope: str) -> str:
    match = _HOST_IN_SCOPE.search(scope)
    return match.group(1) if match else ""


def _severity(payload: dict, alert_type: str, transition: str) -> str:
    """critical / warning / info from the alert type, else the transition, else
    the monitor's P1-P5 priority; warning when nothing says."""
    if alert_type in ALERT_TYPE_SEVERITY:
        return ALERT_TYPE_SEVERITY[alert_type]
    stem = transition.lower().removeprefix("re-")
    if stem in TRANSITION_SEVERITY:
        return TRANSITION_SEVERITY[stem]
    for key in ("alert_priority", "priority"):
        # $PRIORITY is often the event priority (normal/low), which says nothing about severity.
        priority = text(payload.get(key))
        if _PRIORITY.match(priority):
            return normalise_severity(priority)
    return WARNING


def _body(body: object) -> str:
    """The message of a Datadog event body without its %%% markers and link footer."""
    body = text(body)
    if not body:
        return ""
    body = _FOOTER.sub("", "\n" + body.replace("%%%", "").strip() + "\n")
    return re.sub(r"\n{3,}", "\n\n", _HANDLES_LINE.sub("", body)).strip()
